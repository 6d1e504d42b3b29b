"""AOTInductor target: ``encoder.pt2`` + ``context.pt2`` + ``decoder.pt2``, the deploy-form graphs compiled ahead of
time by Inductor for this host's CPU (fp32, bf16, or INT8 through PT2E's x86 inductor quantizer).

The PyTorch-native deployable: the package is a shared library plus its weights, loaded with
``torch._inductor.aoti_load_package`` from Python or ``torch::inductor::AOTIModelPackageLoader``
from C++ (libtorch, which the torch wheel ships; apps/cpp). It is the route to the CPU's matrix
units from a runtime: oneDNN's bf16 and int8 kernels (AVX512-BF16, VNNI, AMX where present).
The same export compiled on a CUDA machine gives a CUDA package (docs/jetson.md); this target
compiles for the CPU it runs on, and a package runs on CPUs with the instruction set it was
compiled for.

Export needs a C++ compiler on the host; loading needs torch alone (:mod:`.runtime`); per-layer
drift of int8 and bf16 encoders is :mod:`.layers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edge_sam.errors import EdgeSamError
from edge_sam.graph_contract import ROLES, deploy_graph
from edge_sam.machine import X86_INT8_DOT_PRODUCT_FLAGS, cpu_flags, has_int8_dot_products
from edge_sam.modeling import EfficientSam
from edge_sam.targets.aoti.runtime import EXTRA, RUNTIME, AotiGraph, AotiRunner
from edge_sam.targets.core.manifest import GraphSpec, Manifest, artifact_label
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption

FILES = {"encoder": "encoder.pt2", "context": "context.pt2", "decoder": "decoder.pt2"}


class AotiTarget(Target):
    name = "aoti"
    backend = "AOTInductor (CPU)"
    extra = EXTRA
    distributions = ("torchao",)
    precisions = ("fp32", "bf16", "int8")
    schemes = ("static", "dynamic")
    int8_rungs = ("static", "mixed", "dynamic")
    deploy_only_when_named = ("Inductor compiles each package for minutes on a 2-core CPU, for this host's CPU "
                              "only")
    # A package compiled on this host runs on this host's CPU: its latency here is the device's.
    host_latency_stands_for_devices = True
    device_precisions = ("int8", "bf16", "fp32")
    export_modules = (RUNTIME, "torchao.quantization.pt2e")
    runtime_modules = (RUNTIME,)
    export_options = (
        TargetOption("compiled_threads", "OpenMP threads compiled into Inductor's generated loops (default: torch's "
                     "intra-op threads at export)", int),
    )
    runtime_options = (
        # The same flag as the other targets' (the CLI shows the first declaration's help).
        TargetOption("threads", "runtime threads (default: the runtime's own choice; aoti: torch's intra-op threads, "
                     "which its oneDNN kernels use)", int),
    )

    # -- export -------------------------------------------------------------------------------
    def resolve_export_options(self, request: ExportRequest, opts: dict[str, Any]) -> dict[str, Any]:
        """``compiled_threads`` defaults to torch's threads now; int8 is refused on a CPU without
        int8 dot-product instructions (oneDNN would run it, slower than fp32), after the recipe is
        checked: a recipe the x86 quantizer cannot take is refused the same way on every CPU."""
        if request.precision == "int8" and request.recipe is not None:
            from edge_sam.targets.aoti.quantize import check_supported

            check_supported(request.recipe)
        if request.precision == "int8" and not has_int8_dot_products(cpu_flags()):
            raise EdgeSamError(f"aoti int8 needs a CPU with {', '.join(X86_INT8_DOT_PRODUCT_FLAGS)} (this one has: "
                               f"{cpu_flags() or 'none of the listed SIMD features'}); export fp32 or bf16")
        threads = opts.get("compiled_threads") or torch.get_num_threads()
        if threads < 1:
            raise EdgeSamError(f"--compiled-threads must be at least 1, got {threads}")
        return {**opts, "compiled_threads": threads}

    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path,
                     compiled_threads: int = 1) -> list[GraphSpec]:
        from edge_sam.targets.aoti.compile import Bf16Graph, compile_package

        specs = []
        for role, file in FILES.items():
            graph = deploy_graph(model, request.img_size, role)
            module: torch.nn.Module = graph
            if request.precision == "bf16":
                module = Bf16Graph(graph)
            elif request.precision == "int8" and request.recipe.quantizes(role):
                from edge_sam.targets.aoti.quantize import quantized_graph

                module = quantized_graph(model, graph, request.recipe, request.calibration, request.img_size, role)
            specs.append(compile_package(module, graph.example_inputs(), role, out_dir / file, compiled_threads))
        return specs

    # -- load ---------------------------------------------------------------------------------
    def make_runner(self, artifact_dir: Path, manifest: Manifest, label: str | None = None,
                    threads: int | None = None) -> AotiRunner:
        if threads:
            torch.set_num_threads(threads)
        graphs = (AotiGraph(artifact_dir / manifest.graph(role).file, manifest.graph(role)) for role in ROLES)
        return AotiRunner(manifest, *graphs, label or artifact_label(artifact_dir, manifest))

    def compare_layers(self, artifact_dir, runner, model, images):
        """Per-op SQNR of the graph the encoder package was compiled from (int8: re-quantized
        exactly as exported; bf16: under autocast) against the fp32 graph, plus one row for the
        package itself against that simulation."""
        from edge_sam.targets.aoti.layers import encoder_layer_drift

        return encoder_layer_drift(artifact_dir, runner, model, images)
