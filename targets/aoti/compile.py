"""From a deploy-form graph to an AOTInductor package (``.pt2``): ``torch.export`` then
``torch._inductor.aoti_compile_and_package``.

What this adds to the plain calls, and why:

- **Freezing, under no_grad.** Inductor folds the weights into the package and rewrites conv and
  linear into oneDNN kernels only when freezing is on and autograd is off; without it an INT8
  graph of the x86 inductor quantizer compiles to dequantize + fp32 matmul (checked on the
  generated code: no ``qlinear_pointwise`` at all) and fp32 linear layers stay plain GEMMs.
- **bf16 as autocast inside the graph** (:class:`Bf16Graph`): matmuls and convolutions in bf16,
  norms, softmax and reductions in fp32 as torch's CPU autocast lists decide (what
  ``TorchRunner(precision="bf16")`` computes); inputs and outputs stay float32, so a runner feeds
  every precision alike.
- **Threads are compiled in.** Inductor's generated loops carry ``#pragma omp parallel
  num_threads(N)`` with N fixed at compile time (``cpp.threads``); the export option records it.
- **The I/O contract inside the package** (``aot_inductor.metadata``): the runtime and the C++
  runner check the manifest against what the package itself says it takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edge_sam.graph_contract import IO_NAMES
from edge_sam.targets.core.manifest import GraphSpec, TensorSpec
from edge_sam.targets.aoti.runtime import INPUTS_KEY, OUTPUTS_KEY
from edge_sam.targets.core.toolchain_log import capture


class Bf16Graph(torch.nn.Module):
    """A float32 graph computed under bf16 autocast, float32 in and out."""

    def __init__(self, graph: torch.nn.Module) -> None:
        super().__init__()
        self.inner = graph

    def forward(self, *inputs: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = self.inner(*inputs)
        if isinstance(outputs, torch.Tensor):
            return outputs.float()
        return tuple(output.float() for output in outputs)


def _specs(names: tuple[str, ...], tensors) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in zip(names, tensors))


def io_metadata(specs: tuple[TensorSpec, ...]) -> str:
    """The I/O list as the package's metadata stores it (and the C++ runner reads it)."""
    return json.dumps([[s.name, list(s.shape), s.dtype] for s in specs])


def compile_package(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], role: str, path: Path,
                    threads: int) -> GraphSpec:
    """Export ``module``, compile it for this CPU with ``threads`` OpenMP threads, write ``path``."""
    input_names, output_names = IO_NAMES[role]
    with capture("aotinductor compile"), torch.no_grad():
        program = torch.export.export(module, example_inputs)
        outputs = [node.meta["val"] for node in program.graph.output_node().args[0]]
        spec = GraphSpec(role, path.name, _specs(input_names, example_inputs), _specs(output_names, outputs))
        metadata = {INPUTS_KEY: io_metadata(spec.inputs), OUTPUTS_KEY: io_metadata(spec.outputs)}
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path),
            inductor_configs={"freezing": True, "cpp.threads": threads, "aot_inductor.metadata": metadata},
        )
    return spec
