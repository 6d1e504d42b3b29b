"""Core ML target: ``encoder.mlpackage``, ``context.mlpackage`` (the decoder's per-image part, run
once per image) and ``decoder.mlpackage`` (ML programs).

Export converts the deploy-form graphs with coremltools (:mod:`.convert`; the precisions: fp32,
fp16, int8 weight-only (linear or palettized) and W8A8, configured in :mod:`.quantize`). Export
options (Python API): ``deployment_target`` ("iOS17" default, "iOS18", "macOS14", "macOS15")
and ``image_input=True`` to give the encoder a Core ML image input (0-255 RGB at the model size,
ImageNet normalization inside the program) for Swift/Vision callers.

Loading (:mod:`.runtime`) takes ``engine="mlmodel"`` (Core ML itself, macOS) or ``"host"`` (the
saved program executed with NumPy, the default off macOS) and ``compute_units``.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from edge_sam.deploy_form import ContextDecoderGraph, DecoderContextGraph, DecoderGraph, EncoderGraph
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipes import WeightOnlyRecipe

from edge_sam.targets.coreml import convert
from edge_sam.targets.coreml.program import quiet_toolchain, read_io
from edge_sam.targets.coreml.quantize import quantize_activations, weight_compression
from edge_sam.targets.coreml.runtime import COMPUTE_UNITS, ENGINES, CoreMLRunner, image_input_pixels, open_packages
from edge_sam.graph_contract import COMPONENTS, IO_NAMES, calibration_batches
from edge_sam.targets.core.manifest import GraphSpec, Manifest, TensorSpec, artifact_label
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption

PACKAGE_SUFFIX = ".mlpackage"
IMAGE_DTYPE = "image:RGB"  # manifest dtype of an image input (0-255 RGB, normalized in the program)


# -- the target -----------------------------------------------------------------------------------
class CoreMLTarget(Target):
    name = "coreml"
    backend = "coreml"
    extra = "coreml"
    distributions = ("coremltools", "executorch", "torchao")
    # Activations quantized per run have no Core ML op: W8A8 (static) or compressed weights only.
    schemes = ("static", "weight-only")
    int8_rungs = ("static", "mixed", "w8", "palette6")
    # The Neural Engine runs fp16, and int8 x int8 (W8A8) on A17 Pro / M4; never fp32. Compressed
    # weights (w8, palettes) are decompressed and computed in fp16. Host latencies here are our NumPy
    # executor's, not a device's.
    device_precisions = ("int8", "fp16", "fp32")

    export_modules = ("coremltools",)
    runtime_modules = ("coremltools",)
    export_options = (
        TargetOption("deployment_target", "the OS the ML program is built for (default iOS17)",
                     choices=convert.DEPLOYMENT_TARGETS),
        TargetOption("image_input", "give the encoder a Core ML image input (0-255 RGB; normalization in the "
                     "program) for Swift/Vision callers", bool),
    )
    runtime_options = (
        TargetOption("engine", "mlmodel: Core ML itself (macOS); host: our NumPy executor of the saved program "
                     "(default off macOS)", choices=ENGINES),
        TargetOption("compute_units", "Core ML hardware for engine mlmodel", choices=COMPUTE_UNITS),
    )

    def require(self, module: str):
        with quiet_toolchain():  # the Linux wheel logs one line per macOS-only binding
            return super().require(module)

    # -- export -------------------------------------------------------------------------------
    def write_graphs(
        self, model: EfficientSam, request: ExportRequest, out_dir: Path,
        deployment_target: str = convert.DEFAULT_DEPLOYMENT_TARGET, image_input: bool = False,
    ) -> list[GraphSpec]:
        convert.deployment_target(deployment_target)  # fail on a bad name before any work
        encoder = EncoderGraph(model, request.img_size)
        decoder = DecoderGraph(model, request.img_size)
        jobs = [
            ("encoder", convert.ImageInputEncoder(encoder) if image_input else encoder, IO_NAMES["encoder"]),
            ("context", DecoderContextGraph(decoder), IO_NAMES["context"]),
            ("decoder", ContextDecoderGraph(decoder), IO_NAMES["decoder"]),
        ]
        specs = []
        for role, module, io_names in tqdm(jobs, desc=f"Core ML {request.precision}", unit="graph", leave=False):
            graph = convert.GraphJob(role, module.eval(), module.example_inputs(), io_names, deployment_target,
                                     image_input=image_input and role == "encoder")
            path = out_dir / f"{role}{PACKAGE_SUFFIX}"
            convert.save_package(self._convert(model, request, graph), path)
            specs.append(graph_spec(role, path))
        return specs

    def _convert(self, model: EfficientSam, request: ExportRequest, graph: "convert.GraphJob"):
        """One graph at the request's precision; components a recipe leaves float are fp16."""
        recipe = request.recipe
        if request.precision == "fp32":
            return convert.convert_module(graph, "fp32")
        if recipe is None or not recipe.quantizes(COMPONENTS[graph.role]):
            return convert.convert_module(graph, "fp16")
        if isinstance(recipe, WeightOnlyRecipe):
            return convert.convert_module(graph, "fp16", compression=weight_compression(recipe))
        batches, total = calibration_batches(model, request.calibration, request.img_size, graph.role)
        if graph.image_input:  # the encoder takes the 0..255 pixels its image input gets on a device
            batches = ((image_input_pixels(x),) for (x,) in batches)
        quantized = quantize_activations(graph.module, graph.example_inputs, recipe, batches, total, graph.role)
        return convert.convert_module(graph, "fp16", module=quantized)

    # -- load ---------------------------------------------------------------------------------
    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, label: str | None = None, engine: str | None = None,
        compute_units: str | None = None,
    ) -> CoreMLRunner:
        graphs = open_packages(artifact_dir, manifest, engine, compute_units)
        runner_label = label or f"{artifact_label(artifact_dir, manifest, manifest.interface)} [{graphs['encoder'].backend}]"
        return CoreMLRunner(manifest, graphs["encoder"], graphs["context"], graphs["decoder"], runner_label)

    def compare_layers(self, artifact_dir, runner, model, images):
        """Per-op SQNR of the artifact's encoder against an fp32 conversion of ``model``, both run
        by the host executor (so on any OS)."""
        from edge_sam.targets.coreml.layers import encoder_layer_drift

        return encoder_layer_drift(artifact_dir, runner.manifest, model, images)


def graph_spec(role: str, package: Path) -> GraphSpec:
    """The I/O a saved package declares, as the manifest records it."""
    model_inputs, model_outputs = read_io(package)
    inputs = tuple(TensorSpec(i.name, i.shape, IMAGE_DTYPE if i.kind == "image" else i.dtype.name) for i in model_inputs)
    outputs = tuple(TensorSpec(o.name, o.shape, o.dtype.name) for o in model_outputs)
    return GraphSpec(role, package.name, inputs, outputs)
