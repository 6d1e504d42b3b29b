"""LiteRT (TFLite) target: ``encoder.tflite`` + ``decoder.tflite`` via litert-torch (no TensorFlow),
fp32 / fp16 weights / dynamic-range INT8 / static INT8, run by the LiteRT interpreter.

Export converts the deploy-form graphs (:mod:`.tflite_graphs`); static INT8 recipes go through
PT2E with litert-torch's quantizer restricted to the recipe's op classes, dynamic-range recipes
through ai-edge-quantizer on the fp32 file (:mod:`.tflite_quantize`).
Every artifact takes and returns float32 unless ``int8_io=True`` is asked for, in which case
the quantized boundary tensors stay int8 and the manifest records their scale and zero point.

The runner uses ``ai_edge_litert.interpreter.Interpreter`` (XNNPACK delegate by default) and
falls back to ``tflite_runtime.interpreter`` on a device that has only that; loading needs
only the interpreter, not the conversion toolchain.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError, require
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.targets.tflite import graphs as tflite_graphs
from edge_sam.targets.core.contract import IO_NAMES, calibration_batches
from edge_sam.runner import Runner
from edge_sam.targets.core.runner import DeployFormRunner
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption, state_dict_sha256, verify_artifact
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, TensorSpec, artifact_label

FILES = {"encoder": "encoder.tflite", "decoder": "decoder.tflite"}
DELEGATES = ("xnnpack", "none")  # "none": LiteRT's reference kernels (slow; for debugging numerics)
EXTRA = "tflite"


def interpreter_module():
    """``ai_edge_litert.interpreter``, or ``tflite_runtime.interpreter`` (same API) where only that exists."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return require("ai_edge_litert.interpreter", EXTRA)  # raises the one-line "pip install" error


def open_interpreter(source: Path | bytes, threads: int | None = None, delegate: str = "xnnpack"):
    """An allocated LiteRT interpreter, or one ArtifactError naming the file that LiteRT refuses."""
    if delegate not in DELEGATES:
        raise EdgeSamError(f"unknown LiteRT delegate '{delegate}' (choose from {', '.join(DELEGATES)})")
    module = interpreter_module()
    options: dict[str, Any] = {"num_threads": threads or os.cpu_count() or 1}
    if isinstance(source, Path):
        options["model_path"] = str(source)
    else:
        options["model_content"] = source
    if delegate == "none":
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        name = source if isinstance(source, Path) else "the model"
        raise ArtifactError(f"LiteRT cannot load {name}: {tflite_graphs.first_line(exc)}") from None
    return interpreter


def quantize_input(array: np.ndarray, detail: dict) -> np.ndarray:
    """float32 -> what the input takes: as is, or int8/uint8 with the input's scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(array, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(array: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """int8/uint8 tensor values -> float32 (per-tensor scale and zero point); floats pass through."""
    if array.dtype in (np.int8, np.uint8):
        scale, zero_point = quantization
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array.astype(np.float32, copy=False)


class SignatureGraph:
    """One .tflite behind a float32-in, float32-out call; int8 I/O is (de)quantized with the
    scale and zero point the file itself records."""

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None, delegate: str) -> None:
        interpreter = open_interpreter(path, threads, delegate)
        try:
            self.signature = interpreter.get_signature_runner(tflite_graphs.SIGNATURE)
        except ValueError:
            raise ArtifactError(f"{path} has no '{tflite_graphs.SIGNATURE}' signature") from None
        self.inputs, self.outputs = self.signature.get_input_details(), self.signature.get_output_details()
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]
        if sorted(self.inputs) != sorted(self.input_names) or sorted(self.outputs) != sorted(self.output_names):
            raise ArtifactError(
                f"{path} has inputs/outputs {(sorted(self.inputs), sorted(self.outputs))}, but its manifest records "
                f"{(self.input_names, self.output_names)}"
            )

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        feeds = {name: quantize_input(array, self.inputs[name]) for name, array in zip(self.input_names, arrays)}
        results = self.signature(**feeds)
        return [dequantize_output(results[name], self.outputs[name]["quantization"]) for name in self.output_names]


class TfliteRunner(DeployFormRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; LiteRT runs the two graphs."""

    def __init__(self, manifest: Manifest, encoder: SignatureGraph, decoder: SignatureGraph, label: str) -> None:
        super().__init__(manifest, label)
        self.encoder, self.decoder = encoder, decoder

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        return self.encoder(image)[0]

    def run_decoder(self, embedding, coords, labels):
        low_res, iou = self.decoder(embedding, coords, labels)
        return low_res, iou


def graph_spec(content: bytes, role: str) -> GraphSpec:
    """The I/O contract of a converted graph, read back from the file as LiteRT sees it."""
    signature = open_interpreter(content, threads=1).get_signature_runner(tflite_graphs.SIGNATURE)
    input_names, output_names = IO_NAMES[role]

    def specs(details: dict, names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
        result = []
        for name in names:
            detail = details[name]
            dtype = np.dtype(detail["dtype"])
            scale, zero_point = detail["quantization"]
            quantization = {"scale": float(scale), "zero_point": int(zero_point)} if dtype != np.float32 else None
            result.append(TensorSpec(name, tuple(int(d) for d in detail["shape"]), dtype.name, quantization))
        return tuple(result)

    return GraphSpec(role, FILES[role], specs(signature.get_input_details(), input_names),
                     specs(signature.get_output_details(), output_names))


class TfliteTarget(Target):
    name = "tflite"
    backend = "litert (XNNPACK delegate)"
    extra = EXTRA
    distributions = ("litert-torch", "litert-converter", "ai-edge-litert", "ai-edge-quantizer", "torchao")

    export_modules = ("litert_torch", "ai_edge_litert.interpreter", "ai_edge_quantizer", "torchao.quantization.pt2e")
    runtime_modules = ()  # the interpreter: ai_edge_litert, or tflite_runtime on a device (checked when opened)
    export_options = (
        TargetOption("int8_io", "static int8 only: keep the int8 graph inputs/outputs (scales in the manifest)", bool),
    )
    runtime_options = (
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("delegate", "LiteRT delegate (xnnpack default; none = reference kernels, for debugging numerics)",
                     choices=DELEGATES),
    )

    # -- export -------------------------------------------------------------------------------
    def write_graphs(
        self, model: EfficientSam, request: ExportRequest, out_dir: Path, *, int8_io: bool = False,
        calibration_images: int | None = None, **opts: Any,
    ) -> list[GraphSpec]:
        """``int8_io``: keep the int8 boundary the converter makes for a statically quantized graph;
        ``calibration_images``: use the first N calibration images."""
        if opts:
            raise EdgeSamError(f"unknown LiteRT export option(s): {', '.join(sorted(opts))}")
        digest = state_dict_sha256(model)
        specs = []
        for role, file in FILES.items():
            content = self._graph(model, request, role, digest, calibration_images)
            if not int8_io:
                content = tflite_graphs.float_io(content)
            (out_dir / file).write_bytes(content)
            specs.append(graph_spec(content, role))
        return specs

    def _graph(self, model: EfficientSam, request: ExportRequest, role: str, digest: str, calibration_images: int | None) -> bytes:
        from edge_sam.targets.tflite.quantize import dynamic_range, recipe_quantizer

        size = request.img_size
        float_graph = functools.partial(tflite_graphs.float_graph, model, size, role, digest)
        if request.precision == "fp16":
            return tflite_graphs.fp16_weights(float_graph())
        if request.precision == "fp32" or not request.recipe.quantizes(role):
            return float_graph()
        if request.recipe.scheme == "dynamic":
            return dynamic_range(float_graph(), request.recipe)
        quantizer = recipe_quantizer(request.recipe)
        batches, total = calibration_batches(model, request.calibration.limited(calibration_images), size, role)
        return tflite_graphs.int8_graph(model, size, role, quantizer, batches, total)

    # -- load ---------------------------------------------------------------------------------
    def load(self, artifact_dir: str | os.PathLike, **runtime_opts: Any) -> Runner:
        """Verify the artifact and open it; needs only an interpreter package (a device has no
        litert-torch), so the export toolchain is not checked here."""
        manifest = verify_artifact(artifact_dir, expected_target=self.name)
        return self.make_runner(Path(artifact_dir), manifest, **runtime_opts)

    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, threads: int | None = None, delegate: str = "xnnpack",
        label: str | None = None, **unknown: Any,
    ) -> Runner:
        if unknown:
            raise EdgeSamError(f"unknown LiteRT runtime option(s): {', '.join(sorted(unknown))} (takes threads, delegate)")
        encoder, decoder = (
            SignatureGraph(artifact_dir / manifest.graph(role).file, manifest.graph(role), threads, delegate)
            for role in ("encoder", "decoder")
        )
        return TfliteRunner(manifest, encoder, decoder, label or artifact_label(artifact_dir, manifest))

    def layer_drift(self, artifact_dir, runner, model, images):
        """Per-module SQNR of the artifact's encoder against an fp32 conversion of ``model``."""
        from edge_sam.targets.tflite.layers import compare_layers

        manifest = runner.manifest
        if manifest.precision == "fp32":
            return None
        reference = tflite_graphs.float_graph(model, manifest.img_size, "encoder", state_dict_sha256(model))
        artifact = (Path(artifact_dir) / manifest.graph("encoder").file).read_bytes()
        feeds = [preprocess(image_to_tensor(image), manifest.img_size).numpy() for image in images]
        return compare_layers(reference, artifact, feeds)
