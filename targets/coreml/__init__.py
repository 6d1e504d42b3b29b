"""Core ML: the target (target.py), what running an artifact needs (runtime.py: the MLModel and
host engines, the runner), conversion to ML programs (convert.py), recipes as Core ML
quantization (quantize.py), per-op drift (layers.py), reading a saved .mlpackage (program.py),
and a NumPy executor of the saved program for machines without Core ML (host_executor/)."""
