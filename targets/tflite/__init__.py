"""LiteRT (TFLite): the target (target.py), what a device needs to run it (runtime.py: the
interpreter, int8 I/O), litert-torch conversion (graphs.py), the PT2E / ai-edge-quantizer adapter
(quantize.py), per-module drift (layers.py)."""
