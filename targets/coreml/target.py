"""Core ML target: ``encoder.mlpackage`` + ``decoder.mlpackage`` (ML programs) and two runners.

Export converts the deploy-form graphs with coremltools (see :mod:`.coreml_convert` for the
precisions: fp32, fp16, int8 weight-only (linear or palettized) and W8A8). Export options
(Python API): ``deployment_target`` ("iOS17" default, "iOS18", "macOS14", "macOS15") and
``image_input=True`` to give the encoder a Core ML image input (0-255 RGB at the model size,
ImageNet normalization inside the program) for Swift/Vision callers.

Runners (``engine=``):

- ``"mlmodel"``: ``MLModel.predict`` through Core ML, with ``compute_units`` one of ALL,
  CPU_ONLY, CPU_AND_GPU, CPU_AND_NE. Needs macOS; the default there.
- ``"host"``: :mod:`.coreml_executor` runs the saved program with NumPy, so the drift a Core ML
  artifact carries is measured on Linux too. Its rows are labelled "CoreML program executed on
  the host (fp16 semantics), not on a device". The default everywhere but macOS.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_sam.deploy import DecoderGraph, EncoderGraph
from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipes import QuantRecipe, RecipeError
from edge_sam.quantize.weight_only import WEIGHT_ONLY_RECIPES, WeightOnlyRecipe
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.targets.coreml import convert
from edge_sam.targets.core.contract import IO_NAMES, decoder_calibration_batches
from edge_sam.runner import Runner
from edge_sam.targets.core.runner import DeployFormRunner
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption
from edge_sam.targets.coreml.program import import_coremltools, quiet_toolchain
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, TensorSpec, artifact_label

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
ENGINES = ("mlmodel", "host")
PACKAGE_SUFFIX = ".mlpackage"
IMAGE_DTYPE = "image:RGB"  # manifest dtype of an image input (0-255 RGB, normalized in the program)


def default_engine() -> str:
    """Core ML itself where it exists (macOS), the host executor elsewhere."""
    return "mlmodel" if sys.platform == "darwin" else "host"


# -- engines: run one package ---------------------------------------------------------------------
class HostEngine:
    """The saved ML program executed with NumPy (:class:`~.coreml_executor.MilExecutor`)."""

    def __init__(self, package: Path) -> None:
        from edge_sam.targets.coreml.host_executor.executor import MilExecutor, host_label

        self.executor = MilExecutor.from_package(package)
        self.inputs = self.executor.program.inputs
        self.outputs = self.executor.output_names
        self.backend = host_label(self.executor.program)

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.run(feeds)


class MLModelEngine:
    """Core ML's own ``MLModel.predict`` (macOS only) on the chosen compute units."""

    def __init__(self, package: Path, compute_units: str) -> None:
        from edge_sam.targets.coreml.program import read_io

        ct = import_coremltools()
        self.inputs, outputs = read_io(package)
        self.outputs = [o.name for o in outputs]
        try:
            self.model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:  # Core ML's compile errors come as generic exceptions
            raise ArtifactError(f"Core ML cannot load {package}: {str(exc).splitlines()[0]}") from None
        self.backend = f"Core ML MLModel.predict ({compute_units})"

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kinds = {spec.name: spec.kind for spec in self.inputs}
        prepared = {name: _pil_image(value) if kinds[name] == "image" else value for name, value in feeds.items()}
        return {name: np.asarray(value, np.float32) for name, value in self.model.predict(prepared).items()}


def _pil_image(pixels: np.ndarray):
    """[1, 3, H, W] 0..255 -> the PIL image coremltools' predict takes for an image input."""
    try:
        from PIL import Image
    except ImportError:
        raise EdgeSamError("Core ML image inputs are fed as PIL images on macOS: pip install pillow") from None
    return Image.fromarray(pixels[0].transpose(1, 2, 0).astype(np.uint8))


# -- the runner -----------------------------------------------------------------------------------
class CoreMLRunner(DeployFormRunner):
    """Deploy-form runner over two engines; an image-input encoder gets 0-255 RGB at the model size."""

    def __init__(self, manifest: Manifest, encoder, decoder, label: str) -> None:
        super().__init__(manifest, label)
        self.encoder, self.decoder = encoder, decoder
        self.backend = encoder.backend
        self.image_input = encoder.inputs[0].kind == "image"

    def encode(self, image: np.ndarray) -> np.ndarray:
        if not self.image_input:
            return super().encode(image)
        pixels = convert.image_input_pixels(preprocess(image_to_tensor(image), self.img_size))
        return self.run_encoder(pixels.numpy().astype(np.float32))

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        (name,) = [spec.name for spec in self.encoder.inputs]
        return np.asarray(self.encoder.predict({name: image})[self.encoder.outputs[0]], np.float32)

    def run_decoder(self, embedding, coords, labels):
        names = [spec.name for spec in self.decoder.inputs]
        outputs = self.decoder.predict(dict(zip(names, (embedding, coords, labels))))
        low_res, iou = (np.asarray(outputs[name], np.float32) for name in self.decoder.outputs)
        return low_res, iou

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": self.backend}


# -- the target -----------------------------------------------------------------------------------
class CoreMLTarget(Target):
    name = "coreml"
    backend = "coreml"
    extra = "coreml"
    distributions = ("coremltools", "executorch", "torchao")

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

    def export(self, model, precision, recipe, out_dir, calibration=None, img_size=None, **kwargs):
        """As :meth:`Target.export`; int8 recipes may also name a weight-only recipe
        (``w8-conv-linear``, ``palettize-6bit``, ``palettize-4bit``)."""
        if isinstance(recipe, str) and recipe in WEIGHT_ONLY_RECIPES:
            recipe = WEIGHT_ONLY_RECIPES[recipe]
        return super().export(model, precision, recipe, out_dir, calibration, img_size, **kwargs)

    # -- export -------------------------------------------------------------------------------
    def write_graphs(
        self, model: EfficientSam, request: ExportRequest, out_dir: Path,
        deployment_target: str = convert.DEFAULT_DEPLOYMENT_TARGET, image_input: bool = False, **opts: Any,
    ) -> list[GraphSpec]:
        if opts:
            raise EdgeSamError(f"unknown Core ML export option(s): {', '.join(sorted(opts))}")
        convert.deployment_target(deployment_target)  # fail on a bad name before any work
        _check_recipe(request.recipe)
        encoder = EncoderGraph(model, request.img_size)
        jobs = [
            ("encoder", convert.ImageInputEncoder(encoder) if image_input else encoder, IO_NAMES["encoder"]),
            ("decoder", DecoderGraph(model, request.img_size), IO_NAMES["decoder"]),
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
        if recipe is None or not recipe.quantizes(graph.role):
            return convert.convert_module(graph, "fp16")
        if isinstance(recipe, WeightOnlyRecipe):
            return convert.convert_module(graph, "fp16", compression=convert.weight_compression(recipe))
        batches, total = self._calibration_batches(model, request, graph)
        quantized = convert.quantize_activations(graph, recipe, batches, total)
        return convert.convert_module(graph, "fp16", module=quantized)

    def _calibration_batches(self, model: EfficientSam, request: ExportRequest, graph: "convert.GraphJob"):
        """Encoder: the calibration images as the graph takes them. Decoder: fp32 embeddings of
        each image with the validation grid prompts (what the decoder sees in the report)."""
        source, size = request.calibration, request.img_size
        if graph.role == "encoder":
            batches = convert.encoder_batches(source.images(), size)
            if graph.image_input:
                batches = ((convert.image_input_pixels(x),) for (x,) in batches)
            return batches, len(source)
        return decoder_calibration_batches(model, source, size)

    # -- load ---------------------------------------------------------------------------------
    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, engine: str | None = None,
        compute_units: str | None = None, label: str | None = None, **unknown: Any,
    ) -> Runner:
        if unknown:
            raise EdgeSamError(f"Core ML runner options are engine and compute_units; got {', '.join(sorted(unknown))}")
        engine = engine or default_engine()
        if engine not in ENGINES:
            raise EdgeSamError(f"unknown Core ML engine '{engine}' (choose from {', '.join(ENGINES)})")
        if engine == "mlmodel" and sys.platform != "darwin":
            raise EdgeSamError("engine 'mlmodel' runs Core ML's MLModel.predict, which needs macOS; use engine='host' here")
        if compute_units is not None and engine != "mlmodel":
            raise EdgeSamError("compute_units choose Core ML hardware for MLModel.predict (engine 'mlmodel', macOS only)")
        if compute_units is not None and compute_units not in COMPUTE_UNITS:
            raise EdgeSamError(f"unknown compute units '{compute_units}' (choose from {', '.join(COMPUTE_UNITS)})")
        engines = {}
        for role in ("encoder", "decoder"):
            spec = manifest.graph(role)
            path = artifact_dir / spec.file
            engines[role] = HostEngine(path) if engine == "host" else MLModelEngine(path, compute_units or "ALL")
            _check_io(path, spec, engines[role])
        runner_label = label or f"{artifact_label(artifact_dir, manifest, manifest.interface)} [{engines['encoder'].backend}]"
        return CoreMLRunner(manifest, engines["encoder"], engines["decoder"], runner_label)


def _check_recipe(recipe: QuantRecipe | None) -> None:
    if recipe is not None and recipe.scheme == "dynamic":
        raise RecipeError(
            f"recipe '{recipe.name}' quantizes activations per run, which Core ML cannot do; use a weight-only "
            f"recipe ({', '.join(WEIGHT_ONLY_RECIPES)}) or a static one"
        )


def graph_spec(role: str, package: Path) -> GraphSpec:
    """The I/O a saved package declares, as the manifest records it."""
    from edge_sam.targets.coreml.program import read_io

    model_inputs, model_outputs = read_io(package)
    inputs = tuple(TensorSpec(i.name, i.shape, IMAGE_DTYPE if i.kind == "image" else i.dtype.name) for i in model_inputs)
    outputs = tuple(TensorSpec(o.name, o.shape, o.dtype.name) for o in model_outputs)
    return GraphSpec(role, package.name, inputs, outputs)


def _check_io(path: Path, spec: GraphSpec, engine) -> None:
    actual = ([i.name for i in engine.inputs], list(engine.outputs))
    recorded = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
    if actual != recorded:
        raise ArtifactError(f"{path} has inputs/outputs {actual}, but its manifest records {recorded}")

