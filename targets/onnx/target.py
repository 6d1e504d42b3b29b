"""ONNX target: export (deploy form or official interface; fp32, fp16, INT8) and an onnxruntime runner.

Export writes ``encoder.onnx`` and ``decoder.onnx``. Every file passes ``onnx.checker`` with
full shape inference before the artifact is committed. The runner uses the CPU provider by
default; ``providers="auto"`` takes the best installed accelerator (TensorRT, CUDA, CoreML,
XNNPACK) with CPU as fallback, or name providers explicitly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.targets.onnx import graphs as onnx_graphs
from edge_sam.runner import Runner
from edge_sam.targets.core.runner import ArtifactRunner, DeployFormRunner
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, TensorSpec, artifact_label

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    "CPUExecutionProvider",
)
_EXPORTERS = {
    "deploy": (onnx_graphs.export_deploy_encoder, onnx_graphs.export_deploy_decoder),
    "official": (onnx_graphs.export_official_encoder, onnx_graphs.export_official_decoder),
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
        raise EdgeSamError(f"exported {path.name} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    return GraphSpec(role, path.name, tensor_specs(graph.input), tensor_specs(graph.output))


def select_providers(providers: str | list[str] | None) -> list[str]:
    """CPU by default; "auto" = every installed provider in preference order; or an explicit list."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return ["CPUExecutionProvider"]
    if providers == "auto" or providers == ["auto"]:
        return [p for p in PROVIDER_PREFERENCE if p in available]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    wanted = [p if p.endswith("ExecutionProvider") else f"{p}ExecutionProvider" for p in wanted]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise EdgeSamError(f"onnxruntime provider(s) {', '.join(missing)} not installed (available: {', '.join(available)})")
    return wanted if "CPUExecutionProvider" in wanted else [*wanted, "CPUExecutionProvider"]


def open_session(path: Path, spec: GraphSpec, providers: list[str], threads: int | None, spinning: bool):
    """An InferenceSession whose inputs and outputs must be the ones the manifest records.

    Idle worker threads do not spin unless asked: a validation run holds several sessions
    next to the PyTorch reference, and spinning pools starve each other on a shared CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ArtifactError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
    actual = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    recorded = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
    if actual != recorded:
        raise ArtifactError(f"{path} has inputs/outputs {actual}, but its manifest records {recorded}")
    return session


class OnnxDeployRunner(DeployFormRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; ORT runs the two graphs."""

    def __init__(self, manifest: Manifest, encoder, decoder, label: str) -> None:
        super().__init__(manifest, label)
        self.encoder, self.decoder = encoder, decoder
        self._encoder_input = encoder.get_inputs()[0].name
        self._decoder_inputs = [i.name for i in decoder.get_inputs()]

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {self._encoder_input: image})[0]

    def run_decoder(self, embedding, coords, labels):
        low_res, iou = self.decoder.run(None, dict(zip(self._decoder_inputs, (embedding, coords, labels))))
        return low_res, iou


class OnnxOfficialRunner(ArtifactRunner):
    """Official-interface artifact: raw [0, 1] image and image-pixel prompts go straight in."""

    def __init__(self, manifest: Manifest, encoder, decoder, label: str) -> None:
        self.manifest = manifest
        self.img_size = manifest.img_size
        self.label = label
        self.encoder, self.decoder = encoder, decoder

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"batched_images": image_to_tensor(image).numpy()})[0]

    def decode(self, embedding, points, labels, image_hw):
        feed = {
            "image_embeddings": np.asarray(embedding, np.float32),
            "batched_point_coords": np.asarray(points, np.float32).reshape(1, 1, -1, 2),
            "batched_point_labels": np.asarray(labels, np.float32).reshape(1, 1, -1),
            "orig_im_size": np.asarray(image_hw, np.int64),
        }
        _, iou, low_res = self.decoder.run(None, feed)
        return low_res[:, 0], iou[:, 0]


class OnnxTarget(Target):
    name = "onnx"
    backend = "onnxruntime"
    extra = "onnx"
    distributions = ("onnx", "onnxscript", "onnxruntime")
    interfaces = ("deploy", "official")
    export_modules = ("onnx", "onnxscript", "onnxruntime")
    runtime_modules = ("onnxruntime",)
    runtime_options = (
        TargetOption("providers", "onnxruntime execution providers in order, comma-separated (e.g. CUDA,CPU; 'auto' = "
                     "every installed one)", separator=","),
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("spinning", "let idle onnxruntime worker threads spin (lower latency on an idle CPU)", bool),
    )

    # -- export -------------------------------------------------------------------------------
    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path, **opts: Any) -> list[GraphSpec]:
        if opts:
            raise EdgeSamError(f"unknown ONNX export option(s): {', '.join(sorted(opts))}")
        export_encoder, export_decoder = _EXPORTERS[request.interface]
        with tempfile.TemporaryDirectory(prefix="onnx-fp32-", dir=out_dir) as work:
            work = Path(work)
            fp32 = {ENCODER_FILE: work / ENCODER_FILE, DECODER_FILE: work / DECODER_FILE}
            export_encoder(model, request.img_size, fp32[ENCODER_FILE])
            export_decoder(model, request.img_size, fp32[DECODER_FILE])
            for name, role in ((ENCODER_FILE, "encoder"), (DECODER_FILE, "decoder")):
                self._convert(model, request, role, fp32[name], out_dir / name, work)
        return [check_graph(out_dir / ENCODER_FILE, "encoder"), check_graph(out_dir / DECODER_FILE, "decoder")]

    def _convert(self, model, request: ExportRequest, role: str, src: Path, dst: Path, work: Path) -> None:
        """fp32 -> the requested precision (a component a recipe leaves float is copied as fp32)."""
        from edge_sam.targets.onnx.quantize import convert_fp16, quantize_int8

        if request.precision == "fp16":
            convert_fp16(src, dst)
        elif request.precision == "int8" and request.recipe.quantizes(role):
            feeds = None
            if request.recipe.needs_calibration:
                feeds = lambda: self._calibration_feeds(model, request, role)  # noqa: E731
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
        self, artifact_dir: Path, manifest: Manifest, providers: str | list[str] | None = None,
        threads: int | None = None, spinning: bool = False, label: str | None = None,
    ) -> Runner:
        """``providers``: None (CPU), "auto", or names; ``threads``: intra-op threads (default: all
        cores); ``spinning``: let idle worker threads spin (lower latency on an otherwise idle CPU)."""
        chosen = select_providers(providers)
        sessions = [
            open_session(artifact_dir / manifest.graph(role).file, manifest.graph(role), chosen, threads, spinning)
            for role in ("encoder", "decoder")
        ]
        label = label or artifact_label(artifact_dir, manifest, manifest.interface)
        runner_class = OnnxOfficialRunner if manifest.interface == "official" else OnnxDeployRunner
        return runner_class(manifest, *sessions, label)

    def layer_drift(self, artifact_dir, runner, model, images):
        """Per-node SQNR of the artifact's encoder against a fresh fp32 export of the same graph."""
        from edge_sam.targets.onnx.layers import compare_layers

        manifest = runner.manifest
        if manifest.precision == "fp32":
            return None
        export_encoder, _ = _EXPORTERS[manifest.interface]
        with tempfile.TemporaryDirectory(prefix="onnx-layer-drift-") as work:
            reference = Path(work) / ENCODER_FILE
            export_encoder(model, manifest.img_size, reference)
            feeds = [_encoder_feed(image, manifest.img_size, manifest.interface == "official") for image in images]
            return compare_layers(reference, Path(artifact_dir) / manifest.graph("encoder").file, feeds)


def _encoder_feed(image: np.ndarray, img_size: int, official: bool) -> dict[str, np.ndarray]:
    tensor = image_to_tensor(image)
    if official:
        return {"batched_images": tensor.numpy()}
    return {"image": preprocess(tensor, img_size).numpy()}
