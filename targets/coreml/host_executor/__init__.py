"""Executes a saved Core ML ML program op by op with NumPy, so its drift can be measured where
Core ML itself does not run (Linux CI)."""
