"""Per-op drift of a Core ML encoder against an fp32 conversion of the same model: the Core ML
adapter of :mod:`edge_sam.targets.core.layer_drift`.

Both programs run in the host executor (:mod:`.host_executor`), which hands each op's output to
the comparison as it is computed. coremltools names an op after the PyTorch node it came from
and, in an fp16 program, appends ``_cast_fp16`` (``linear_3`` -> ``linear_3_cast_fp16``); the
quantize/dequantize pairs of a W8A8 program and the decompression ops of compressed weights are
ops of their own, so compute ops are matched by name without that suffix, and the upstream walk
follows the artifact's program. The op type says what each op computes on: int8 (every tensor
it reads is dequantized from int8), int8 or palettized weights only, or float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_sam.deploy_form import EncoderGraph
from edge_sam.modeling import EfficientSam

from edge_sam.graph_contract import IO_NAMES, encoder_input
from edge_sam.targets.core.manifest import Manifest
from edge_sam.targets.coreml import convert
from edge_sam.targets.coreml.host_executor.executor import MilExecutor
from edge_sam.targets.coreml.program import MilProgram, Operation
from edge_sam.targets.coreml.runtime import image_input_pixels
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, layer_rows

COMPARED_OPS = frozenset({"conv", "conv_transpose", "linear", "matmul", "layer_norm", "softmax", "add", "gelu"})
# Larger outputs are skipped: at 1024 an attention map is 3 x 4096 x 4096 (200 MB); its effect
# shows in the SQNR of the matmul that consumes it.
MAX_ELEMENTS = 1 << 22
_FP16_SUFFIX = "_cast_fp16"
_INT8_WEIGHT_SOURCES = frozenset({"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"})
_PALETTE_SOURCES = frozenset({"constexpr_lut_to_dense"})


def _compared(program: MilProgram) -> dict[str, Operation]:
    """Compared ops by their name without the fp16 suffix."""
    return {
        op.name.removesuffix(_FP16_SUFFIX): op
        for op in program.operations
        if op.type in COMPARED_OPS and int(np.prod(op.outputs[0].shape)) <= MAX_ELEMENTS
    }


def _arithmetic(op: Operation, producers: dict[str, Operation], constants: set[str]) -> str:
    """What the op computes on: "int8" where every tensor it reads comes out of a dequantize (and
    its weights, if any, are int8), "int8 weights" / "palettized weights" where only its weights
    are compressed, else "float"."""
    weights = {producers[ref.name].type for ref in op.operands() if _is_weight(ref.name, producers)}
    activations = [ref.name for ref in op.operands() if ref.name not in constants and not _is_weight(ref.name, producers)]
    if weights & _PALETTE_SOURCES:
        return "palettized weights"
    if activations and all(name in producers and producers[name].type == "dequantize" for name in activations):
        return "int8"
    return "int8 weights" if weights & _INT8_WEIGHT_SOURCES else "float"


def _is_weight(name: str, producers: dict[str, Operation]) -> bool:
    return name in producers and producers[name].type.startswith("constexpr_")


def compare_layers(reference_package: Path, artifact_package: Path, feeds: list[np.ndarray]) -> list[LayerRow]:
    """Per-op SQNR (dB) and SQNR drop of ``artifact_package`` vs ``reference_package``, in program order."""
    reference, artifact = MilExecutor.from_package(reference_package), MilExecutor.from_package(artifact_package)
    ref_ops, art_ops = _compared(reference.program), _compared(artifact.program)
    names = [name for name, op in art_ops.items() if name in ref_ops and ref_ops[name].type == op.type]
    ref_values = {ref_ops[name].outputs[0].name: name for name in names}
    art_values = {art_ops[name].outputs[0].name: name for name in names}
    sums = SqnrSums()
    for feed in tqdm(feeds, desc="per-layer drift", unit="img", leave=False):
        captured: dict[str, np.ndarray] = {}

        def capture(value: str, array: np.ndarray) -> None:
            if value in ref_values:
                captured[ref_values[value]] = array

        def accumulate(value: str, array: np.ndarray) -> None:
            if value in art_values:
                sums.add(value, captured.pop(art_values[value]), array)

        reference.run({reference.input_names[0]: feed}, capture)
        artifact.run({artifact.input_names[0]: feed}, accumulate)
    producers = {info.name: op for op in artifact.program.operations for info in op.outputs}
    layers = []
    for name in names:
        op = art_ops[name]
        arithmetic = _arithmetic(op, producers, set(artifact.program.constants))
        layers.append(Layer(name, f"{op.type} ({arithmetic})", op.outputs[0].name,
                            tuple(ref.name for ref in op.operands()), quantized=arithmetic != "float"))
    producer_inputs = {value: [ref.name for ref in op.operands()] for value, op in producers.items()}
    return layer_rows(layers, sums.sqnr_db(), producer_inputs)


def encoder_layer_drift(artifact_dir: Path, manifest: Manifest, model: EfficientSam, images: list[np.ndarray]) -> list[LayerRow]:
    """The artifact's encoder against a fresh fp32 conversion of ``model`` with the same input
    (tensor or image) and deployment target."""
    artifact = artifact_dir / manifest.graph("encoder").file
    image_input = manifest.graph("encoder").inputs[0].dtype.startswith("image")
    size = manifest.img_size
    encoder = EncoderGraph(model, size)
    module = (convert.ImageInputEncoder(encoder) if image_input else encoder).eval()
    deployment_target = manifest.export_options.get("deployment_target", convert.DEFAULT_DEPLOYMENT_TARGET)
    job = convert.GraphJob("encoder", module, module.example_inputs(), IO_NAMES["encoder"], deployment_target,
                           image_input=image_input)
    feeds = [encoder_input(image, size) for image in images]
    feeds = [(image_input_pixels(x) if image_input else x).numpy() for x in feeds]
    with tempfile.TemporaryDirectory(prefix="coreml-layer-drift-") as work:
        reference = Path(work) / f"encoder{artifact.suffix}"
        convert.save_package(convert.convert_module(job, "fp32"), reference)
        return compare_layers(reference, artifact, feeds)
