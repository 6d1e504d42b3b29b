"""Validation on the device itself: transports (local, ssh, adb) and the device runner."""
