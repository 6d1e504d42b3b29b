"""LiteRT (TFLite) target: ``encoder.tflite`` + ``context.tflite`` + ``decoder.tflite`` (the context:
the decoder's per-image part, run once per image) via litert-torch (no TensorFlow),
fp32 / fp16 weights / dynamic-range INT8 / static INT8, run by the LiteRT interpreter.

Export converts the deploy-form graphs (:mod:`.graphs`); static INT8 recipes go through PT2E
with litert-torch's quantizer restricted to the recipe's op classes, dynamic-range recipes
through ai-edge-quantizer on the fp32 file (:mod:`.quantize`).
Every artifact takes and returns float32 unless ``int8_io=True`` is asked for, in which case
the quantized boundary tensors stay int8 and the manifest records their scale and zero point.

Loading needs only an interpreter (:mod:`.runtime`: ai-edge-litert's, or tflite_runtime's on a
device that has only that), not the conversion toolchain.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipes import QuantRecipe

from edge_sam.graph_contract import COMPONENTS, IO_NAMES, ROLES, calibration_batches, encoder_input
from edge_sam.targets.core.manifest import GraphSpec, Manifest, TensorSpec, artifact_label
from edge_sam.targets.core.artifact_runner import GraphRunner
from edge_sam.checkpoint import state_dict_sha256
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption
from edge_sam.targets.tflite import graphs as tflite_graphs
from edge_sam.targets.tflite.runtime import (
    DELEGATES,
    EXTRA,
    INTERPRETER,
    SIGNATURE,
    SignatureGraph,
    interpreter_module,
    open_interpreter,
)

FILES = {"encoder": "encoder.tflite", "context": "context.tflite", "decoder": "decoder.tflite"}


def graph_spec(content: bytes, role: str) -> GraphSpec:
    """The I/O contract of a converted graph, read back from the file as LiteRT sees it."""
    signature = open_interpreter(content, threads=1).get_signature_runner(SIGNATURE)
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


def _sixteen_bit_route(recipe: QuantRecipe) -> bool:
    """Static recipes with any 16-bit activations are quantized by ai-edge-quantizer on the fp32
    file (through PT2E the converter makes an int16 GELU, which LiteRT lacks): float in, float out."""
    return recipe.scheme == "static" and 16 in recipe.activation_widths


class TfliteTarget(Target):
    name = "tflite"
    backend = "litert (XNNPACK delegate)"
    extra = EXTRA
    distributions = ("litert-torch", "litert-converter", "ai-edge-litert", "ai-edge-quantizer", "torchao")
    schemes = ("static", "dynamic")
    activation_bits = (8, 16)
    int8_rungs = ("static", "mixed", "a16", "dynamic")
    # Phones: NPU delegates take integer graphs, and XNNPACK's int8 kernels are its fast path on Arm.
    device_precisions = ("int8", "fp16", "fp32")

    export_modules = ("litert_torch", INTERPRETER, "ai_edge_quantizer", "torchao.quantization.pt2e")
    runtime_modules = (INTERPRETER,)  # or tflite_runtime's interpreter on a device: see require()
    export_options = (
        TargetOption("int8_io", "static int8 only: keep the int8 graph inputs/outputs (scales in the manifest)", bool),
    )
    runtime_options = (
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("delegate", "LiteRT delegate (xnnpack default; none = reference kernels, for debugging numerics)",
                     choices=DELEGATES),
    )

    def require(self, module: str):
        """The interpreter may be ``tflite_runtime``'s on a device without ai-edge-litert."""
        return interpreter_module() if module == INTERPRETER else super().require(module)

    # -- export -------------------------------------------------------------------------------
    def resolve_export_options(self, request: ExportRequest, opts: dict) -> dict:
        """``int8_io`` only where the converter makes an integer boundary: static 8-bit PT2E graphs
        (the 16-bit route quantizes inside a float-in, float-out graph)."""
        recipe = request.recipe
        if opts.get("int8_io") and not (recipe and recipe.scheme == "static" and not _sixteen_bit_route(recipe)):
            what = recipe.name if recipe else request.precision
            raise EdgeSamError(f"--int8-io keeps the int8 inputs and outputs of a static 8-bit graph; a {what} export "
                               "takes and returns float32")
        return dict(opts)

    def write_graphs(
        self, model: EfficientSam, request: ExportRequest, out_dir: Path, *, int8_io: bool = False
    ) -> list[GraphSpec]:
        """``int8_io``: keep the int8 boundary the converter makes for a statically quantized graph."""
        digest = state_dict_sha256(model)
        specs = []
        for role, file in FILES.items():
            content = self._graph(model, request, role, digest)
            if not int8_io:
                content = tflite_graphs.float_io(content)
            (out_dir / file).write_bytes(content)
            specs.append(graph_spec(content, role))
        return specs

    def _graph(self, model: EfficientSam, request: ExportRequest, role: str, digest: str) -> bytes:
        from edge_sam.targets.tflite.quantize import dynamic_range, recipe_quantizer, static_by_op_type

        size = request.img_size
        float_graph = functools.partial(tflite_graphs.float_graph, model, size, role, digest)
        if request.precision == "fp16":
            return tflite_graphs.fp16_weights(float_graph())
        if request.precision == "fp32" or not request.recipe.quantizes(COMPONENTS[role]):
            return float_graph()
        if request.recipe.scheme == "dynamic":
            return dynamic_range(float_graph(), request.recipe)
        batches, total = calibration_batches(model, request.calibration, size, role)
        if _sixteen_bit_route(request.recipe):
            names = IO_NAMES[role][0]
            feeds = ({name: tensor.numpy() for name, tensor in zip(names, batch)} for batch in batches)
            return static_by_op_type(float_graph(), request.recipe, feeds, total)
        return tflite_graphs.int8_graph(model, size, role, recipe_quantizer(request.recipe), batches, total)

    # -- load ---------------------------------------------------------------------------------
    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, label: str | None = None, threads: int | None = None,
        delegate: str = "xnnpack",
    ) -> GraphRunner:
        encoder, context, decoder = (
            SignatureGraph(artifact_dir / manifest.graph(role).file, manifest.graph(role), threads, delegate)
            for role in ROLES
        )
        return GraphRunner(manifest, encoder, context, decoder, label or artifact_label(artifact_dir, manifest))

    def compare_layers(self, artifact_dir, runner, model, images):
        """Per-module SQNR of the artifact's encoder against an fp32 conversion of ``model``."""
        from edge_sam.targets.tflite.layers import compare_layers

        manifest = runner.manifest
        reference = tflite_graphs.float_graph(model, manifest.img_size, "encoder", state_dict_sha256(model))
        artifact = (artifact_dir / manifest.graph("encoder").file).read_bytes()
        feeds = [encoder_input(image, manifest.img_size).numpy() for image in images]
        return compare_layers(reference, artifact, feeds)
