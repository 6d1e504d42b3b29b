"""What machine a number was measured on: the one description drift reports, benchmark tables
and benchmark scripts record (platform, CPU model and the SIMD features that decide which kernels
run, thread counts, load)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    """What a measurement ran on: the CPU by model and the SIMD features that pick its kernels
    (the same machine type differs in them between sessions), the load, and the software."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
            "load_average": load_average_text(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_flags() -> str:
    """The SIMD features that decide which kernels run (AVX-512, VNNI, bf16, fp16, AMX; Arm's
    half-precision arithmetic, dot product, i8mm and bf16)."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith(("flags", "Features"))), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
              "amx_bf16", "amx_fp16", "asimdhp", "asimddp", "i8mm", "bf16")
    return " ".join(f for f in wanted if f in flags)


# x86 int8 dot-product instructions (VNNI, AMX): without them an int8 GEMM multiplies through 16-bit
# intermediates (slower than fp32 in oneDNN; saturating in onnxruntime's u8s8 kernels).
X86_INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def has_int8_dot_products(flags: str | None = None) -> bool:
    """Whether ``flags`` (default: this CPU's, :func:`cpu_flags`) hold an x86 int8 dot-product instruction."""
    return bool(set(X86_INT8_DOT_PRODUCT_FLAGS) & set((cpu_flags() if flags is None else flags).split()))


def cpu_model() -> str:
    """The CPU's model name where the kernel reports one, else the architecture."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine()


def load_average_text() -> str:
    """The 1 / 5 / 15 minute load averages, for a benchmark's header."""
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"
