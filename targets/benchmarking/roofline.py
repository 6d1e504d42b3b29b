"""Each data type's roofline on this machine: the matrix-multiply rate the CPU reaches in it, and
what fraction of that rate a path achieves.

A path computing in bf16 on a CPU with AMX is held to the bf16 rate, not fp32's: on such a CPU
fp32 is a sixth of what the chip does in bf16 (issue 25), and a table against fp32 alone would
call a slow bf16 path fast. The rates are ``torch.mm`` (fp32, bf16, fp16) and ``torch._int_mm``
(int8) on square matrices, best of a few, with the bench's threads: what torch's own kernels
(oneDNN / MKL) reach, a practical roofline rather than the datasheet's peak. bf16 and fp16 are
measured only where the CPU has instructions for them (emulated rates are no roofline).
"""

from __future__ import annotations

import time

from edge_sam.machine import cpu_flags

MATMUL_SIZE = 2048
ROUNDS = 3
# The data types with a roofline, and the key of their measured rate (GFLOP/s; GOP/s for int8).
RATE_KEYS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "fp16": "fp16_gflops", "int8": "int8_gops"}
# CPU features (edge_sam.machine.cpu_flags) that give a data type its own matrix instructions.
NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "asimdhp")}


def measured_dtypes(flags: str) -> tuple[str, ...]:
    """The data types whose rate is measured on a CPU with ``flags``: fp32 and int8 always."""
    have = set(flags.split())
    return tuple(dtype for dtype in RATE_KEYS if dtype not in NATIVE_FLAGS or have & set(NATIVE_FLAGS[dtype]))


def matmul_rates(threads: int, size: int = MATMUL_SIZE, rounds: int = ROUNDS) -> dict[str, float]:
    """This machine's matrix rate now per data type ({RATE_KEYS value: rate}), ``size``^3, best of ``rounds``."""
    import torch

    torch.set_num_threads(threads)
    calls = {}
    for dtype in measured_dtypes(cpu_flags()):
        if dtype == "int8":
            a, b = (torch.randint(-128, 128, (size, size), dtype=torch.int8) for _ in range(2))
            calls[dtype] = lambda a=a, b=b: torch._int_mm(a, b)
        else:
            kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
            a, b = (torch.randn(size, size, dtype=kind) for _ in range(2))
            calls[dtype] = lambda a=a, b=b: torch.mm(a, b)
    rates = {}
    for dtype, call in calls.items():
        call()  # warm-up: kernel selection, packing buffers
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        rates[RATE_KEYS[dtype]] = 2 * size**3 / best / 1e9
    return rates


def compute_dtype(precision: str | None, scheme: str | None, rates: dict[str, float]) -> str:
    """The data type a path's matrix products run in: int8 for static or dynamic INT8 (weight-only
    INT8 computes in float), bf16 for bf16, fp16 where the CPU has fp16 instructions (else the
    runtime computes in fp32), fp32 otherwise (tf32 included: on a CPU it is fp32)."""
    if precision == "int8":
        return "int8" if scheme in ("static", "dynamic") else "fp32"
    if precision in ("bf16", "fp16") and RATE_KEYS[precision] in rates:
        return precision
    return "bf16" if precision == "bf16" else "fp32"


def roofline_columns(gflops: float | None, precision: str | None, scheme: str | None,
                     rates: dict[str, float]) -> dict[str, float | str | None]:
    """A row's roofline columns: the data type it computes in, that type's rate, and the fraction
    of it the path's achieved GFLOP/s reaches (None where the rate was not measured)."""
    dtype = compute_dtype(precision, scheme, rates)
    rate = rates.get(RATE_KEYS[dtype])
    return {"roofline_dtype": dtype, "roofline_gflops": rate,
            "roofline_fraction": gflops / rate if gflops and rate else None}
