"""fp16 and INT8 versions of an fp32 ONNX graph, with onnxruntime's own tools.

A :class:`~edge_sam.quantize.recipes.QuantRecipe` is mapped onto onnxruntime here: every
node is classified into a recipe op class (a MatMul with a constant operand is a linear
layer, one of two activations an attention matmul) and exactly the nodes of the quantized
classes are passed as ``nodes_to_quantize``.
A per-layer recipe's float layers are found by name: the dynamo exporter records the module
path each node was traced under (``pkg.torch.onnx.name_scopes``), and the nodes inside a float
layer are left out of ``nodes_to_quantize``.
Static recipes calibrate with QDQ, per-channel weights, S8S8 (onnxruntime's recommended
format); dynamic recipes quantize weights only and compute activation ranges per run.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_sam.errors import require
from edge_sam.quantize.layers import layers_of_scopes, per_width_quantizer
from edge_sam.quantize.pt2e import with_recipe_activations
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError
from edge_sam.targets.core.toolchain_log import capture

# What each op class is in an ONNX graph exported from edge_sam (linear layers on rank-3
# activations export as MatMul + Add; attention score matmuls are MatMuls of two activations).
_OP_CLASS_OF_TYPE: dict[str, OpClass] = {
    "Conv": OpClass.CONV,
    "ConvTranspose": OpClass.CONV,
    "Gemm": OpClass.LINEAR,
    "Softmax": OpClass.SOFTMAX,
    "LayerNormalization": OpClass.NORM,
    "InstanceNormalization": OpClass.NORM,
    "Gelu": OpClass.ACTIVATION,
    "Erf": OpClass.ACTIVATION,
    "Add": OpClass.ELEMENTWISE,
    "Mul": OpClass.ELEMENTWISE,
    "Sub": OpClass.ELEMENTWISE,
    "Div": OpClass.ELEMENTWISE,
}
_CALIBRATION_METHODS = {"minmax": "MinMax", "moving-average": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def op_class(node, constants: set[str]) -> OpClass | None:
    """The recipe op class of an ONNX node; a MatMul is LINEAR when its B operand is a constant."""
    if node.op_type == "MatMul":
        return OpClass.LINEAR if node.input[1] in constants else OpClass.ATTENTION_MATMUL
    return _OP_CLASS_OF_TYPE.get(node.op_type)


def nodes_to_quantize(model, recipe: QuantRecipe) -> tuple[list[str], list[str]]:
    """(node names, op types) the recipe quantizes in ``model``.

    Selecting nodes by name is what keeps attention matmuls float: onnxruntime's QDQ quantizer
    ignores its ``MatMulConstBOnly`` option (1.32: only the QOperator path reads it).
    """
    constants = {t.name for t in model.graph.initializer}
    constants |= {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    chosen = [n for n in model.graph.node if op_class(n, constants) in recipe.quantized_ops]
    if recipe.float_layers:
        scopes = [node_scopes(n) for n in chosen]
        if not any(scopes):
            raise RecipeError(f"recipe '{recipe.name}' keeps layers float, but this ONNX graph records no module "
                              "scopes to find them by (export it with torch.onnx's dynamo exporter)")
        chosen = [n for n, s in zip(chosen, scopes) if not layers_of_scopes(s, recipe.float_layers)]
    return [n.name for n in chosen], sorted({n.op_type for n in chosen})


def node_scopes(node) -> list[str]:
    """The module paths an ONNX node was traced under (``encoder.blocks.0.attn.qkv``, ...), as
    torch.onnx's dynamo exporter records them; [] for a node without that metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [scope for scope in ast.literal_eval(prop.value) if isinstance(scope, str)]
            except (ValueError, SyntaxError):
                return []
    return []


_SIMULATED_OPS = {OpClass.CONV: "conv2d", OpClass.LINEAR: "linear"}


def simulation_quantizer(recipe: QuantRecipe):
    """A PT2E quantizer that places quantize/dequantize where :func:`quantize_int8`'s static QDQ
    does, so the per-layer sensitivity can rank layers for ONNX in PyTorch: per-channel symmetric
    int8 weights, per-tensor int8 inputs with the recipe's observer, outputs float unless the
    recipe rounds them (``int8_outputs``), int16 inputs in the recipe's ``a16`` layers. It uses
    ExecuTorch's XNNPACK quantizer patterns."""
    import torch

    xnnpack = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "executorch")
    unsupported = sorted(op.value for op in recipe.quantized_ops if op not in _SIMULATED_OPS)
    if unsupported:
        raise RecipeError(f"recipe '{recipe.name}': the ONNX INT8 simulation covers conv and linear, not {', '.join(unsupported)}")

    def quantizer_for(width_recipe: QuantRecipe, keep):
        config = with_recipe_activations(xnnpack.get_symmetric_quantization_config(is_per_channel=recipe.per_channel_weights), width_recipe)
        if not recipe.int8_outputs:
            config = dataclasses.replace(config, output_activation=None)
        quantizer = xnnpack.XNNPACKQuantizer()
        for op_class in recipe.quantized_ops:
            quantizer.set_operator_type(getattr(torch.ops.aten, _SIMULATED_OPS[op_class]).default, config)
        if keep is not None:
            quantizer.set_filter_function(keep)
        return quantizer

    return per_width_quantizer(recipe, quantizer_for)


def ort_extra_options(recipe: QuantRecipe, op_types: list[str]) -> dict:
    wide = recipe.activation_bits == 16
    return {
        "MatMulConstBOnly": OpClass.ATTENTION_MATMUL not in recipe.quantized_ops,
        # symmetric int16 as on LiteRT; below opset 21 16-bit Q/DQ are com.microsoft ops
        "ActivationSymmetric": recipe.symmetric_activations or wide,
        "UseQDQContribOps": 16 in recipe.activation_widths,
        "WeightSymmetric": True,
        "OpTypesToExcludeOutputQuantization": [] if recipe.int8_outputs else op_types,
        "CalibMovingAverage": recipe.calibration_method == "moving-average",  # with the MinMax calibrator
    }


def a16_overrides(model, recipe: QuantRecipe, names: list[str]) -> dict:
    """onnxruntime ``TensorQuantOverrides`` that make the activation input of every quantized node
    in the recipe's ``a16`` layers symmetric int16 (each is read by that node alone: a layer norm's
    or GELU's output, the image, an attention output)."""
    from onnxruntime.quantization import QuantType

    if not recipe.a16_layers:
        return {}
    chosen = set(names)
    tensors = [node.input[0] for node in model.graph.node
               if node.name in chosen and layers_of_scopes(node_scopes(node), recipe.a16_layers)]
    return {"TensorQuantOverrides": {tensor: [{"quant_type": QuantType.QInt16, "symmetric": True}] for tensor in tensors}}


def convert_fp16(src: Path, dst: Path) -> None:
    """Weights and activations in float16, inputs and outputs kept float32 (same runner contract)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    sort_topologically(model.graph)  # the converter appends its input casts after their consumers
    onnx.save(model, str(dst))


def sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a dangling input at node {pending[0].name}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            ordered.append(node)
            available.update(node.output)
    del graph.node[:]
    graph.node.extend(ordered)


class FeedReader:
    """onnxruntime CalibrationDataReader over lazily built input feeds, with a progress bar."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]], total: int, description: str, unit: str) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(tqdm(feeds, total=total, desc=description, unit=unit))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def exposed_session(model, names: list[str]):
    """An unoptimized CPU session of the shape-inferred ``model`` whose outputs are the tensors
    ``names`` (graph optimizations off, so every node keeps its name and tensor; no memory arena)."""
    import onnxruntime as ort

    from edge_sam.targets.onnx.runtime import session_options

    infos = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    exposed = type(model)()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(infos[name] for name in names)
    options = session_options(optimize=False)
    # Without the arena a run's activations are freed when it ends: with it, each of the two
    # sessions a comparison holds kept its largest run's activations (GBs at 1024).
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])


def minmax_ranges(model, names: list[str], feeds: Iterable[dict[str, np.ndarray]]):
    """onnxruntime's MinMax calibration of the tensors the nodes ``names`` read and write, one image
    at a time, as its ``TensorsData``.

    onnxruntime's own MinMax calibrator appends a ReduceMin / ReduceMax pair after every input and
    output of every node of the chosen op types -- the attention matmuls' score maps included,
    3 x 4096 x 4096 per block at 1024 -- at the end of the graph, so each of those tensors stays
    alive to the end of the run: the 1024 export peaked at 12.5 GB. Here only the chosen nodes'
    tensors are fetched (a few hundred MB at 1024) and reduced as each image ends: the same ranges
    (min of the mins, max of the maxes), in bounded memory.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    infos = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    constants = {t.name for t in model.graph.initializer}
    chosen = set(names)
    tensors = list(dict.fromkeys(
        name for node in model.graph.node if node.name in chosen for name in [*node.input, *node.output]
        if name in infos and name not in constants and infos[name].type.tensor_type.elem_type == 1))  # float32
    session = exposed_session(model, tensors)
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed)):
            low[name] = np.minimum(low.get(name, np.inf), np.nanmin(value)).astype(np.float32)
            high[name] = np.maximum(high.get(name, -np.inf), np.nanmax(value)).astype(np.float32)
    return TensorsData(CalibrationMethod.MinMax, {name: (low[name], high[name]) for name in tensors})


def quantize_int8(
    src: Path,
    dst: Path,
    recipe: QuantRecipe,
    make_feeds: Callable[[], FeedReader] | None,
    work_dir: Path,
    extra_options: dict | None = None,
    stream_minmax: bool = True,
) -> None:
    """Quantize ``src`` into ``dst`` following ``recipe`` (static needs ``make_feeds``);
    ``extra_options`` override onnxruntime quantizer options (the TensorRT form's Q/DQ rules).
    MinMax ranges are computed by :func:`minmax_ranges` and handed to onnxruntime as its
    calibration cache (``stream_minmax=False``: by onnxruntime's calibrator, for comparison)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Pre-processing = shape inference only: graph rewrites would rename tensors and break the
    # per-layer comparison with the fp32 graph; the dynamo export is already optimized.
    prepared = work_dir / f"{src.stem}.prep.onnx"
    quant_pre_process(str(src), str(prepared), skip_optimization=True)
    graph = onnx.load(str(prepared), load_external_data=False)
    names, op_types = nodes_to_quantize(graph, recipe)
    extra = {**ort_extra_options(recipe, op_types), **a16_overrides(graph, recipe, names), **(extra_options or {})}
    feeds = None
    if recipe.scheme != "dynamic":
        if make_feeds is None:
            raise ValueError(f"static recipe {recipe.name} needs calibration feeds")
        feeds = make_feeds()  # made here, so its progress bar stays on the terminal
    cache = None
    if feeds is not None and stream_minmax and recipe.calibration_method == "minmax":
        from onnxruntime.quantization.calibrate import save_tensors_data

        cache = work_dir / f"{src.stem}.ranges.json"
        save_tensors_data(minmax_ranges(onnx.load(str(prepared)), names, feeds), cache)
    try:
        # onnxruntime logs advice at WARNING for every call and its histogram calibrators print.
        with capture("onnxruntime quantization"):
            if recipe.scheme == "dynamic":
                quantize_dynamic(
                    str(prepared), str(dst), op_types_to_quantize=op_types, nodes_to_quantize=names,
                    per_channel=recipe.per_channel_weights, weight_type=QuantType.QInt8, extra_options=extra,
                )
            else:
                quantize_static(
                    str(prepared), str(dst), feeds, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=op_types, nodes_to_quantize=names, per_channel=recipe.per_channel_weights,
                    activation_type=QuantType.QInt16 if recipe.activation_bits == 16 else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, _CALIBRATION_METHODS[recipe.calibration_method]),
                    extra_options=extra, calibration_cache_path=cache,
                )
    finally:
        prepared.unlink(missing_ok=True)
        if cache is not None:
            cache.unlink(missing_ok=True)
