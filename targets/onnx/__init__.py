"""ONNX: the target (target.py), what a device needs to run it (runtime.py: onnxruntime sessions,
provider choice, runners), deploy-form and official-interface graphs (graphs.py), fp16/INT8 with
onnxruntime's tools (quantize.py), per-node drift (layers.py)."""
