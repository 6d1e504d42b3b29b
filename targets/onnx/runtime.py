"""What a device needs to run an .onnx artifact: onnxruntime sessions and the runners over them
(no onnx, no onnxscript, no exporter).

The CPU provider is the default; ``providers="auto"`` takes the best installed accelerator
(TensorRT, CUDA, CoreML, XNNPACK) with CPU as fallback, or name providers explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.transforms import image_to_tensor

from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, check_io_names, first_line
from edge_sam.targets.core.artifact_runner import ArtifactRunner, GraphRunner
from edge_sam.targets.onnx.placement import PlacedSession, ReportsPlacement, enable_profiling

if TYPE_CHECKING:
    from edge_sam.quantize.recipes import QuantRecipe

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    "CPUExecutionProvider",
)


def select_providers(providers: str | list[str] | None) -> list[str]:
    """CPU by default; "auto" = every installed provider in preference order; or an explicit list."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return ["CPUExecutionProvider"]
    if providers == "auto" or providers == ["auto"]:
        return [p for p in PROVIDER_PREFERENCE if p in available]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    known = {p.lower(): p for p in (*PROVIDER_PREFERENCE, *available)}
    wanted = [p if p.endswith("ExecutionProvider") else known.get(f"{p}ExecutionProvider".lower(), f"{p}ExecutionProvider")
              for p in wanted]  # "tensorrt", "cuda", "cpu" name their providers
    missing = [p for p in wanted if p not in available]
    if missing:
        raise EdgeSamError(f"onnxruntime provider(s) {', '.join(missing)} not installed (available: {', '.join(available)})")
    return wanted if "CPUExecutionProvider" in wanted else [*wanted, "CPUExecutionProvider"]


def session_options(threads: int | None = None, spinning: bool = False, optimize: bool = True):
    """onnxruntime SessionOptions: quiet, ``threads`` intra-op threads (default: the runtime's
    choice), idle threads spinning only if asked, graph optimizations unless ``optimize=False``.

    No spinning by default: a validation run holds several sessions next to the PyTorch
    reference, and spinning pools starve each other on a shared CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:  # every node keeps its name (the per-layer drift reads them)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


# onnxruntime's CPU fusion of Q/DQ node groups into its integer kernels: on 16-bit activations it
# cost the reference model's encoder 5 dB of embedding SQNR on photos (docs/onnx.md), so artifacts
# with 16-bit activations run their Q/DQ nodes as written (dequantize, float op).
QDQ_FUSION = "QDQSelectorActionTransformer"
# onnxruntime fuses each MatMul + bias Add into a Gemm before the Q/DQ fusion looks at the graph,
# and has no integer kernel for a Gemm whose output stays float: the linear layers of an 8-bit
# static graph then ran dequantize + fp32 Gemm, slower than the fp32 graph. Without this fusion
# the Q/DQ fusion turns them into MatMulIntegerToFloat (int8 GEMM, float output; docs/onnx.md).
MATMUL_ADD_FUSION = "MatMulAddFusion"


def disabled_optimizers(recipe: QuantRecipe | None, role: str) -> list[str]:
    """The onnxruntime graph optimizers the ``role`` graph of an artifact quantized with ``recipe``
    runs without (none for a float graph)."""
    if recipe is None or not recipe.quantizes(role):
        return []
    if 16 in recipe.activation_widths:
        return [QDQ_FUSION]
    return [MATMUL_ADD_FUSION] if recipe.scheme == "static" else []


def open_session(
    path: Path, spec: GraphSpec, providers: list[str], threads: int | None, spinning: bool,
    disabled: list[str] | None = None,
):
    """An InferenceSession whose inputs and outputs must be the ones the manifest records; its
    first run tells which provider ran each node (:mod:`.placement`). ``disabled``: graph
    optimizers to leave out (:func:`disabled_optimizers`)."""
    import onnxruntime as ort

    options = session_options(threads, spinning)
    enable_profiling(options, path.stem)
    disabled = list(disabled or [])
    try:
        session = PlacedSession(ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=disabled))
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ArtifactError(f"onnxruntime cannot load {path}: {first_line(exc)}") from None
    check_io_names(path, spec, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    return session


# Graphs run once per image (the encoder, the decoder's context) hand their arena's free memory
# back after each run: onnxruntime's arena otherwise keeps the encoder's activations (~300 MB at
# 1024) while the decoder's grows beside it, and segment-everything at 1024 peaked at 1.1 GB
# (/proc VmHWM: an encode, 256 prompts, an encode: 1078 MB kept, 796 MB shrunk). The price is the
# encoder's allocations again each image: about 7% of an encode at 1024 (interleaved A/B, quiet
# machine; CHANGELOG.md, 2026-12-07). Per-prompt graphs keep their arena: re-allocating it every
# prompt would cost each call.
SHRINK_ARENA_ROLES = ("encoder", "context")


class SessionGraph:
    """One session behind a call: arrays in the graph's input order -> its outputs in order;
    ``shrink_arena``: return the arena's free memory to the system after each run."""

    def __init__(self, session, shrink_arena: bool = False) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.run_options = None
        if shrink_arena:
            import onnxruntime as ort

            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.input_names, arrays)), self.run_options)


class OnnxDeployRunner(ReportsPlacement, GraphRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; onnxruntime runs the three graphs."""


class OnnxOfficialRunner(ReportsPlacement, ArtifactRunner):
    """Official-interface artifact: raw [0, 1] image and image-pixel prompts go straight in."""

    def __init__(self, manifest: Manifest, encoder: SessionGraph, decoder: SessionGraph, label: str) -> None:
        self.manifest = manifest
        self.img_size = manifest.img_size
        self.label = label
        self.encoder, self.decoder = encoder, decoder

    def encode(self, image: np.ndarray) -> np.ndarray:
        with self.host_side():
            pixels = image_to_tensor(image).numpy()
        return self.encoder(pixels)[0]

    def decode(self, embedding, points, labels, image_hw):
        _, iou, low_res = self.decoder(
            np.asarray(embedding, np.float32),
            np.asarray(points, np.float32).reshape(1, 1, -1, 2),
            np.asarray(labels, np.float32).reshape(1, 1, -1),
            np.asarray(image_hw, np.int64),
        )
        return low_res[:, 0], iou[:, 0]
