"""Validation on the device itself: transports (local, ssh, adb), the device runner and the worker
it starts there."""
