"""ONNX target: export (deploy form or official interface; fp32, fp16, INT8) and load back.

Export writes ``encoder.onnx`` and ``decoder.onnx``, and for the deploy interface
``context.onnx`` (the decoder's per-image part; ``decoder.onnx`` then takes its outputs and any
number of prompts). Every file passes ``onnx.checker`` with
full shape inference before the artifact is committed. Loading needs only onnxruntime
(:mod:`.runtime`: sessions, provider choice, runners).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.quantize.recipe_file import recipe_from_manifest
from edge_sam.quantize.recipes import QuantRecipe
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import image_to_tensor

from edge_sam.runner import Runner
from edge_sam.graph_contract import COMPONENTS, encoder_input
from edge_sam.targets.core.manifest import GraphSpec, Manifest, TensorSpec, artifact_label, first_line
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption
from edge_sam.targets.onnx import graphs as onnx_graphs
from edge_sam.targets.onnx import tensorrt
from edge_sam.targets.onnx.attention import ATTENTION_FORMS, fuse_attention_file
from edge_sam.targets.onnx.runtime import (
    OnnxDeployRunner,
    OnnxOfficialRunner,
    SHRINK_ARENA_ROLES,
    SessionGraph,
    disabled_optimizers,
    open_session,
    select_providers,
)

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
CONTEXT_FILE = "context.onnx"
# Each interface's graphs: role -> (file, exporter), in the order an image goes through them.
_EXPORTERS = {
    "deploy": {
        "encoder": (ENCODER_FILE, onnx_graphs.export_deploy_encoder),
        "context": (CONTEXT_FILE, onnx_graphs.export_deploy_context),
        "decoder": (DECODER_FILE, onnx_graphs.export_deploy_decoder),
    },
    "official": {
        "encoder": (ENCODER_FILE, onnx_graphs.export_official_encoder),
        "decoder": (DECODER_FILE, onnx_graphs.export_official_decoder),
    },
}


def tensor_specs(values) -> tuple[TensorSpec, ...]:
    """Names, shapes (symbolic axes by name) and dtypes of ONNX graph inputs or outputs."""
    from onnx import helper

    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        shape = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        specs.append(TensorSpec(value.name, shape, dtype))
    return tuple(specs)


def check_graph(path: Path, role: str) -> GraphSpec:
    """onnx.checker with full shape inference, then the file's I/O contract."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgeSamError(f"exported {path.name} fails onnx.checker: {first_line(exc)}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    return GraphSpec(role, path.name, tensor_specs(graph.input), tensor_specs(graph.output))


class OnnxTarget(Target):
    name = "onnx"
    backend = "onnxruntime"
    extra = "onnx"
    distributions = ("onnx", "onnxscript", "onnxruntime")
    schemes = ("static", "dynamic")
    activation_bits = (8, 16)
    int8_rungs = ("static", "mixed", "a16", "dynamic")
    # ONNX Runtime's CPU provider on this host is what laptops and servers run.
    host_latency_stands_for_devices = True
    layer_time_source = "onnxruntime's profile"
    interfaces = ("deploy", "official")
    export_modules = ("onnx", "onnxscript", "onnxruntime")
    runtime_modules = ("onnxruntime",)
    export_options = (
        TargetOption("for_runtime", "the runtime the files are written for (default onnxruntime; tensorrt: static "
                     "shapes, shape arithmetic folded, fp16 with norms/softmax/sin-cos kept fp32, INT8 as symmetric "
                     "Q/DQ on weighted-op inputs; see docs/jetson.md)", choices=tensorrt.RUNTIMES),
        TargetOption("upsample", "interface official: how output_masks are upsampled to orig_im_size (default bilinear, "
                     "as the official ONNX files; bicubic, as EfficientSam.predict_masks)", choices=onnx_graphs.UPSAMPLE),
        TargetOption("attention", "matmul: attention as MatMul + Softmax + MatMul (default; every runtime); fused: one "
                     "com.microsoft.MultiHeadAttention per attention (ONNX Runtime's fused kernel, onnxruntime only; "
                     "see docs/performance.md)", choices=ATTENTION_FORMS),
    )
    runtime_options = (
        TargetOption("providers", "onnxruntime execution providers in order, comma-separated (e.g. CUDA,CPU; 'auto' = "
                     "every installed one)", separator=","),
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("spinning", "let idle onnxruntime worker threads spin (lower latency on an idle CPU)", bool),
    )

    # -- export -------------------------------------------------------------------------------
    def resolve_export_options(self, request: ExportRequest, opts: dict[str, Any]) -> dict[str, Any]:
        """``upsample`` belongs to the official interface, whose output_masks it shapes; there it
        defaults to the official files' bilinear. ``for_runtime="tensorrt"`` takes what TensorRT takes."""
        if opts.get("for_runtime") == "tensorrt":
            tensorrt.check_request(request.interface, request.precision, request.recipe)
            if opts.get("attention") == "fused":
                raise EdgeSamError("--attention fused writes an onnxruntime contrib op, which TensorRT does not take")
        if request.interface != "official":
            if "upsample" in opts:
                raise EdgeSamError("--upsample applies to --interface official only (the deploy interface returns "
                                   "low-res logits; the caller upsamples)")
            return dict(opts)
        return {"upsample": onnx_graphs.UPSAMPLE[0], **opts}

    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path, upsample: str | None = None,
                     for_runtime: str | None = None, attention: str | None = None) -> list[GraphSpec]:
        for_tensorrt = for_runtime == "tensorrt"
        graphs = _EXPORTERS[request.interface]
        with tempfile.TemporaryDirectory(prefix="onnx-fp32-", dir=out_dir) as work:
            work = Path(work)
            for role, (name, export_graph) in graphs.items():
                fp32 = work / name
                options = {}
                if role == "decoder" and upsample is not None:  # the official decoder's
                    options["upsample"] = upsample
                if role == "decoder" and for_tensorrt:  # static shapes: one prompt per call
                    options["prompt_batch"] = 1
                export_graph(model, request.img_size, fp32, **options)
                if for_tensorrt:
                    tensorrt.prepare_fp32(fp32)
                if attention == "fused":
                    fuse_attention_file(fp32)
                self._convert(model, request, role, fp32, out_dir / name, work, for_tensorrt)
                if for_tensorrt:
                    tensorrt.check_written(out_dir / name)
        return [check_graph(out_dir / name, role) for role, (name, _) in graphs.items()]

    def _convert(self, model, request: ExportRequest, role: str, src: Path, dst: Path, work: Path,
                 for_tensorrt: bool = False) -> None:
        """fp32 -> the requested precision (a component a recipe leaves float is copied as fp32);
        ``for_tensorrt``: TensorRT's fp16 and Q/DQ rules (:mod:`.tensorrt`)."""
        from edge_sam.targets.onnx.quantize import convert_fp16, quantize_int8

        if request.precision == "fp16":
            (tensorrt.convert_fp16 if for_tensorrt else convert_fp16)(src, dst)
        elif request.precision == "int8" and request.recipe.quantizes(COMPONENTS[role]):
            feeds = None
            if request.recipe.needs_calibration:
                feeds = lambda: self._calibration_feeds(model, request, role)  # noqa: E731
            if for_tensorrt:  # inputs of weighted ops only, symmetric, float biases
                recipe = dataclasses.replace(request.recipe, int8_outputs=False)
                quantize_int8(src, dst, recipe, feeds, work, tensorrt.QDQ_OPTIONS)
            else:
                quantize_int8(src, dst, request.recipe, feeds, work)
        else:
            shutil.copyfile(src, dst)

    def _calibration_feeds(self, model: EfficientSam, request: ExportRequest, role: str):
        from edge_sam.targets.onnx.quantize import FeedReader

        if role != "encoder":
            raise EdgeSamError(f"recipe {request.recipe.name}: static calibration of the {role} is not supported")
        source = request.calibration
        feeds = (_encoder_feed(image, request.img_size, request.interface == "official") for image in source.images())
        return FeedReader(feeds, len(source), "calibrating encoder", "img")

    # -- load ---------------------------------------------------------------------------------
    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, label: str | None = None,
        providers: str | list[str] | None = None, threads: int | None = None, spinning: bool = False,
    ) -> Runner:
        """``providers``: None (CPU), "auto", or names; ``threads``: intra-op threads (default: all
        cores); ``spinning``: let idle worker threads spin (lower latency on an otherwise idle CPU)."""
        return open_runner(artifact_dir, manifest, label, providers, threads, spinning)

    def profiled_layer_ms(self, artifact_dir, layers, image):
        from edge_sam.targets.onnx.profile import profiled_layer_ms

        return profiled_layer_ms(artifact_dir, layers, image)

    def compare_layers(self, artifact_dir, runner, model, images):
        """Per-node SQNR of the artifact's encoder against a fresh fp32 export of the same graph."""
        from edge_sam.targets.onnx.layers import compare_layers

        manifest = runner.manifest
        _, export_encoder = _EXPORTERS[manifest.interface]["encoder"]
        with tempfile.TemporaryDirectory(prefix="onnx-layer-drift-") as work:
            reference = Path(work) / ENCODER_FILE
            export_encoder(model, manifest.img_size, reference)
            feeds = [_encoder_feed(image, manifest.img_size, manifest.interface == "official") for image in images]
            return compare_layers(reference, artifact_dir / manifest.graph("encoder").file, feeds)


def open_runner(
    artifact_dir: Path, manifest: Manifest, label: str | None = None, providers: str | list[str] | None = None,
    threads: int | None = None, spinning: bool = False,
    disabled: Callable[[QuantRecipe | None, str], list[str]] = disabled_optimizers,
) -> Runner:
    """The runner :meth:`OnnxTarget.make_runner` returns; ``disabled`` says which graph optimizers
    each graph runs without (not a runtime option: a benchmark passes another rule to measure what
    the default one avoids)."""
    chosen = select_providers(providers)
    recipe = recipe_from_manifest(manifest.recipe) if manifest.recipe else None
    graphs = [
        SessionGraph(open_session(artifact_dir / manifest.graph(role).file, manifest.graph(role), chosen, threads, spinning,
                                  disabled(recipe, COMPONENTS[role])), shrink_arena=role in SHRINK_ARENA_ROLES)
        for role in _EXPORTERS[manifest.interface]
    ]
    variant = "tensorrt" if manifest.export_options.get("for_runtime") == "tensorrt" else manifest.interface
    label = label or artifact_label(artifact_dir, manifest, variant)
    runner_class = OnnxOfficialRunner if manifest.interface == "official" else OnnxDeployRunner
    return runner_class(manifest, *graphs, label)


def _encoder_feed(image: np.ndarray, img_size: int, official: bool) -> dict[str, np.ndarray]:
    if official:
        return {"batched_images": image_to_tensor(image).numpy()}
    return {"image": encoder_input(image, img_size).numpy()}
