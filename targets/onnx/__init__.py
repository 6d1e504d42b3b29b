"""ONNX: deploy-form and official-interface graphs (graphs.py), fp16/INT8 with onnxruntime's
tools (quantize.py), the target and onnxruntime runner (target.py), per-node drift (layers.py)."""
