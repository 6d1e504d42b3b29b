"""Quantization studies that drive the targets: per-layer sensitivity, mixed precision to a
mask-IoU budget, the simulated quantization they search with, held-out fidelity, quantization-aware
finetuning (QAT) and the PTQ / mixed / QAT comparison. They sit above the targets and validation;
the quantize library (recipes, recipe files, layer names, PT2E, the QAT checkpoint and graph)
sits below the targets and imports none of this."""
