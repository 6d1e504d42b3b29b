"""AOTInductor: the target (target.py), compiling deploy graphs into .pt2 packages (compile.py),
the x86 inductor INT8 quantizer adapter (quantize.py), per-layer drift of int8 and bf16 encoders
(layers.py) and what a host needs to run a package (runtime.py: torch alone)."""
