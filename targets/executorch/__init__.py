"""ExecuTorch: the target (target.py), what a device needs to run it (runtime.py: the delegates,
executorch.runtime, the runner), lowering to XNNPACK or Core ML (lowering.py), the XNNPACK
quantizer adapter (quantize.py), per-layer drift of INT8 encoders (layers.py), ETDump profiles
(profile.py) and the native C++ runner from Python (native.py)."""
