"""ExecuTorch: lowering to XNNPACK or Core ML (lowering.py), the XNNPACK quantizer adapter
(quantize.py), the target and runtime runner (target.py), ETDump profiles (profile.py) and the
native C++ runner from Python (native.py)."""
