"""ExecuTorch target: ``encoder.pte`` + ``context.pte`` + ``decoder.pte`` lowered to XNNPACK (fp32, INT8)
or Core ML (the context: the decoder's per-image part, run once per image).

Export (``get_target("executorch").export(..., delegate="xnnpack" | "coreml")``):

- ``xnnpack`` (default): fp32, or INT8 through PT2E with ExecuTorch's ``XNNPACKQuantizer``
  restricted to the recipe's op classes (:mod:`.quantize`); a component the recipe leaves float
  (the decoder, by default) is lowered in fp32. Attention is spelled as matmul + softmax:
  XNNPACK takes no SDPA op, and SDPA falls back to slow portable kernels.
- ``coreml``: fp32 or fp16 compute, lowered with the CoreMLPartitioner (works on Linux);
  running it needs macOS 14+ / iOS 17+. The manifest's backend says so and the runner refuses
  it, in one line, wherever the runtime has no Core ML backend.

Loading needs only ``executorch.runtime`` (:mod:`.runtime`); per-layer drift of INT8 encoders
is :mod:`.layers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam, EfficientSamConfig
from edge_sam.quantize.layers import weighted_modules_per_layer
from edge_sam.quantize.recipes import QuantRecipe

from edge_sam.graph_contract import COMPONENTS, IO_NAMES, ROLES, deploy_graph
from edge_sam.targets.core.manifest import GraphSpec, Manifest, TensorSpec, artifact_label, read_manifest
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption
from edge_sam.targets.executorch.lowering import StageBar, lower_to_pte
from edge_sam.targets.executorch.profile import encoder_layer_ms
from edge_sam.targets.executorch.quantize import quantized_graph, recipe_quantizer
from edge_sam.targets.executorch.runtime import (
    DELEGATES,
    EXTRA,
    RUNTIME,
    XNNPACK,
    ExecuTorchRunner,
    PteMethod,
    delegate_for_backend,
    get_delegate,
    runtime,
    set_threads,
)

FILES = {"encoder": "encoder.pte", "context": "context.pte", "decoder": "decoder.pte"}
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}


def graph_spec(content: bytes, role: str) -> GraphSpec:
    """The I/O contract of a program, read back from the serialized file as the runtime sees it."""
    meta = runtime().load_program(content).metadata("forward")
    input_names, output_names = IO_NAMES[role]

    def specs(get, names):
        infos = [get(i) for i in range(len(names))]
        return tuple(TensorSpec(n, tuple(info.sizes()), _SCALAR_TYPES.get(int(info.dtype()), str(info.dtype())))
                     for n, info in zip(names, infos))

    if (meta.num_inputs(), meta.num_outputs()) != (len(input_names), len(output_names)):
        raise EdgeSamError(f"lowered {role} has {meta.num_inputs()} inputs / {meta.num_outputs()} outputs, "
                           f"expected {len(input_names)} / {len(output_names)}")
    return GraphSpec(role, FILES[role], specs(meta.input_tensor_meta, input_names), specs(meta.output_tensor_meta, output_names))


class ExecuTorchTarget(Target):
    """One target, two delegates: an instance is bound to one (its manifest backend and its
    precisions); ``export(..., delegate=...)`` hands the export to an instance for that one, and
    loading reads the delegate back from the manifest."""

    name = "executorch"
    extra = EXTRA
    distributions = ("executorch", "torchao", "coremltools")
    schemes = ("static", "dynamic")
    int8_rungs = ("static", "mixed", "dynamic")
    # Phones and boards: XNNPACK's int8 kernels are its fast path on Arm; this x86 host is not one.
    device_precisions = ("int8", "fp32")
    layer_time_source = "ExecuTorch's ETDump"

    def __init__(self, delegate: str = XNNPACK.name) -> None:
        self.delegate = get_delegate(delegate)
        self.backend = self.delegate.manifest_backend
        self.precisions = self.delegate.precisions

    export_options = (
        TargetOption("delegate", "the backend the .pte is lowered to (default xnnpack; coreml artifacts run on Apple "
                     "devices and macOS only)", choices=tuple(sorted(DELEGATES))),
    )
    runtime_options = (
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("profile", "record an ETDump per run (per-operator times: edge-sam bench --profile)", bool),
    )
    runtime_modules = (RUNTIME,)

    @property
    def export_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        modules = ("executorch.exir", RUNTIME, "torchao.quantization.pt2e")
        return (*modules, "coremltools") if self.delegate.name == "coreml" else modules

    # -- export -------------------------------------------------------------------------------
    def export(self, *args: Any, delegate: str | None = None, **kwargs: Any) -> Path:
        """:meth:`Target.export`, plus ``delegate`` ("xnnpack" default, or "coreml")."""
        if delegate is not None and delegate != self.delegate.name:
            return ExecuTorchTarget(delegate).export(*args, **kwargs)
        return super().export(*args, **kwargs)

    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path) -> list[GraphSpec]:
        specs = []
        for role, file in FILES.items():
            int8 = request.precision == "int8" and request.recipe.quantizes(COMPONENTS[role])
            precision = "int8" if int8 else ("fp32" if request.precision == "int8" else request.precision)
            bar = StageBar(3 if int8 else 2, f"{role} -> {self.delegate.name} {precision}")
            try:
                graph = deploy_graph(model, request.img_size, role)
                module = graph
                if int8:
                    with bar.stage("quantize"):
                        if request.qat is not None and role == "encoder":  # the ranges QAT learned, as they are
                            from edge_sam.quantize.qat_graph import learned_encoder

                            module = learned_encoder(model, request.qat, request.recipe, request.img_size, self)
                        else:
                            module = quantized_graph(model, graph, request.recipe, request.calibration, request.img_size, role)
                content = lower_to_pte(module, graph.example_inputs(), self.delegate, precision, bar, quantized=int8)
            finally:
                bar.close()
            (out_dir / file).write_bytes(content)
            specs.append(graph_spec(content, role))
        return specs

    def takes_learned_ranges(self, recipe: QuantRecipe) -> bool:
        """XNNPACK's quantizer is the one QAT simulates, so a QAT checkpoint's ranges lower as they are."""
        return self.delegate.name == XNNPACK.name

    def qat_quantizer(self, recipe: QuantRecipe) -> Any:
        """XNNPACK's quantizer in QAT mode: the one QAT simulates, whichever delegate lowers it."""
        return recipe_quantizer(recipe, qat=True)

    # -- load ---------------------------------------------------------------------------------
    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, label: str | None = None, threads: int | None = None,
        profile: bool = False,
    ) -> ExecuTorchRunner:
        delegate = delegate_for_backend(manifest.backend)
        if threads:
            set_threads(threads)
        encoder, context, decoder = (
            PteMethod(artifact_dir / manifest.graph(role).file, manifest.graph(role), delegate, profile)
            for role in ROLES
        )
        return ExecuTorchRunner(manifest, encoder, context, decoder,
                                label or artifact_label(artifact_dir, manifest, delegate.name))

    def profiled_layer_ms(self, artifact_dir, layers, image):
        """From the ETDump of XNNPACK's operators (the Core ML delegate does not run on this host)."""
        manifest = read_manifest(artifact_dir)
        if delegate_for_backend(manifest.backend).name != XNNPACK.name:
            return None
        modules = weighted_modules_per_layer(EfficientSamConfig.from_dict(manifest.model_config))
        times = encoder_layer_ms(self.make_runner(artifact_dir, manifest, profile=True), modules, image)
        return {layer: times.get(layer, 0.0) for layer in layers}

    def compare_layers(self, artifact_dir, runner, model, images):
        """Per-op SQNR of the INT8 encoder (re-quantized exactly as exported, simulated in PyTorch)
        against the fp32 graph, plus one row for the .pte itself against that simulation."""
        from edge_sam.targets.executorch.layers import encoder_layer_drift

        return encoder_layer_drift(artifact_dir, runner, model, images)
