"""LiteRT (TFLite): litert-torch conversion (graphs.py), the PT2E / ai-edge-quantizer adapter
(quantize.py), the target and interpreter runner (target.py), per-module drift (layers.py)."""
