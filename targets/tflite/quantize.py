"""A :class:`~edge_sam.quantize.recipes.QuantRecipe` as LiteRT quantization.

Static recipes: litert-torch's PT2E ``PT2EQuantizer`` annotates a fixed list of op patterns
(linear, conv, add, mul, cat, ...). Here the list comes from the recipe: each op class maps to
the annotators that quantize it, so ``static-conv-linear`` annotates conv and linear only and
attention matmuls, softmax, LayerNorm and residual adds stay float in the .tflite. (A GELU
between two int8 linear layers comes out as LiteRT's int8 GELU, a lookup table over the int8
input: the same values as float GELU between the two quantizations that happen anyway.)

litert-torch has no annotator for matmuls of two activations or for ``aten.softmax.int`` (the
form ``torch.export`` leaves softmax in), so the two are written here: they exist to build the
naive all-INT8 variant (the registry's ``naive-all-int8``), whose drift shows why the recipes
keep attention float. LiteRT's int8
SOFTMAX kernel needs its output on a fixed 1/256 grid; with N tokens the typical attention
weight is 1/N, so from about 512 tokens up most weights round to zero.

A per-layer recipe's float layers are kept out of every annotator by a node filter on the
module each op was traced in (the same filter the other PT2E targets use).

Dynamic-range recipes: ai-edge-quantizer on the fp32 .tflite, by TFLite op type (whole graph:
per-layer choices are refused there). Recipes with 16-bit activations (LiteRT's 16x8 kernels), for
the whole graph or per layer, take the same route, calibrated there, one rule per layer: through
PT2E the converter turns the GELU between two int16 linear layers into an int16 GELU, which LiteRT
does not have. (litert-torch's
own dynamic PT2E mode also quantizes every conv's weights whatever the quantizer annotated, so
it cannot honour a linear-only recipe.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from edge_sam.quantize.layers import combine_filters, per_width_quantizer
from edge_sam.quantize.pt2e import with_recipe_activations
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError
from edge_sam.targets.core.toolchain_log import capture
from edge_sam.targets.tflite.runtime import SIGNATURE

# litert-torch annotator names per op class (run in this order: producers before consumers).
_LITERT_ANNOTATORS: dict[OpClass, tuple[str, ...]] = {
    OpClass.CONV: ("conv_relu", "conv"),
    OpClass.LINEAR: ("linear", "addmm"),
    OpClass.ELEMENTWISE: ("add_relu", "add", "mul_relu", "mul", "cat"),
}
# TFLite ops with a constant weight per op class: what dynamic-range and 16x8 kernels take.
WEIGHT_TFL_OPS: dict[OpClass, tuple[str, ...]] = {
    OpClass.CONV: ("CONV_2D", "CONV_2D_TRANSPOSE"),
    OpClass.LINEAR: ("FULLY_CONNECTED",),
}
_SOFTMAX_TARGETS = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)
_MATMUL_TARGETS = (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default)

def _annotate_activation_matmul(gm: torch.fx.GraphModule, config, filter_fn=None) -> None:
    """int8 x int8 -> int8 for matmuls of two activations (q @ k^T, attn @ v).

    An operand that is a softmax output shares the softmax's fixed scale: a requantize between
    them would sit across the reshape the converter inserts, which LiteRT forbids.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _MATMUL_TARGETS or (filter_fn and not filter_fn(node)):
            continue
        operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        specs = {
            a: SharedQuantizationSpec(a) if a.target in _SOFTMAX_TARGETS else config.input_activation for a in operands
        }
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=specs, output_qspec=config.output_activation, _annotated=True
        )


def _annotate_softmax(gm: torch.fx.GraphModule, config, filter_fn=None) -> None:
    """int8 softmax with the fixed output grid (scale 1/256, zero point -128) LiteRT requires."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _SOFTMAX_TARGETS or (filter_fn and not filter_fn(node)):
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={node.args[0]: config.input_activation}, output_qspec=config.fixed_qparams, _annotated=True
        )


def _check_supported(recipe: QuantRecipe, supported) -> None:
    unsupported = sorted(op.value for op in recipe.quantized_ops - frozenset(supported))
    if unsupported:
        raise RecipeError(
            f"recipe '{recipe.name}' quantizes {', '.join(unsupported)}, which LiteRT's {recipe.scheme} "
            f"quantization cannot make INT8"
        )


def annotators_for(recipe: QuantRecipe) -> list[Callable]:
    """The PT2E annotator functions that quantize exactly the static recipe's op classes, in graph order."""
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR

    _check_supported(recipe, {*_LITERT_ANNOTATORS, OpClass.ATTENTION_MATMUL, OpClass.SOFTMAX})
    annotators: list[Callable] = []
    for op_class in (OpClass.CONV, OpClass.LINEAR):
        if op_class in recipe.quantized_ops:
            annotators += [OP_TO_ANNOTATOR[name] for name in _LITERT_ANNOTATORS[op_class]]
    if OpClass.ATTENTION_MATMUL in recipe.quantized_ops:
        annotators.append(_annotate_activation_matmul)
    if OpClass.ELEMENTWISE in recipe.quantized_ops:
        annotators += [OP_TO_ANNOTATOR[name] for name in _LITERT_ANNOTATORS[OpClass.ELEMENTWISE]]
    if OpClass.SOFTMAX in recipe.quantized_ops:
        annotators.append(_annotate_softmax)
    return annotators


def _quantization_config(recipe: QuantRecipe):
    """litert-torch's symmetric static config, with the recipe's calibration observer for activations."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel_weights)
    return with_recipe_activations(config, recipe)


def recipe_quantizer(recipe: QuantRecipe):
    """A litert-torch ``PT2EQuantizer`` that annotates what the static ``recipe`` quantizes (outside
    its float layers) and nothing else.

    The converter reads only the quantizer's global config (static vs dynamic) back, so the
    subclass just swaps the pattern list for the recipe's annotators.
    """
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    annotators = annotators_for(recipe)

    def quantizer_for(width_recipe: QuantRecipe, keep):
        class RecipeQuantizer(PT2EQuantizer):
            def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
                if quantization_config is not None:
                    for annotate in annotators:
                        annotate(model, quantization_config, combine_filters(filter_fn, keep))
                return model

        return RecipeQuantizer().set_global(_quantization_config(width_recipe))

    # With a16 layers the composition only simulates: the export goes through ai-edge-quantizer.
    return per_width_quantizer(recipe, quantizer_for)


def dynamic_range(content: bytes, recipe: QuantRecipe) -> bytes:
    """int8 weights for the TFLite ops of the recipe's op classes; activations quantized per run."""
    from ai_edge_quantizer import qtyping

    _check_supported(recipe, WEIGHT_TFL_OPS)
    if recipe.float_layers:
        raise RecipeError(f"recipe '{recipe.name}': LiteRT's dynamic-range quantization here is by op type for the "
                          "whole graph; it cannot keep single layers float")
    tool = _quantizer(content)
    for op_name, granularity in _weight_ops(recipe):
        tool.add_dynamic_config(".*", qtyping.TFLOperationName(op_name), 8, granularity)
    return bytes(tool.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


def static_by_op_type(content: bytes, recipe: QuantRecipe, feeds: Iterable[dict[str, np.ndarray]], total: int) -> bytes:
    """Static int8 weights with 8- or 16-bit activations (LiteRT's 16x8 kernels) for the TFLite ops
    of the recipe's op classes, per layer as the recipe says (a16 layers 16 bits, float layers
    left alone, found by their module scope in the op names), activation ranges calibrated on
    ``feeds`` (signature input name -> array)."""
    from ai_edge_quantizer import calibrator, qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    _check_supported(recipe, WEIGHT_TFL_OPS)
    tool = _quantizer(content)
    # the latest matching rule wins: the whole graph first, then the layers that differ
    rules = [(".*", recipe.activation_bits, AlgorithmName.MIN_MAX_UNIFORM_QUANT)]
    rules += [(layer_scope_regex(layer), 16, AlgorithmName.MIN_MAX_UNIFORM_QUANT) for layer in recipe.a16_layers]
    rules += [(layer_scope_regex(layer), recipe.activation_bits, AlgorithmName.NO_QUANTIZE) for layer in recipe.float_layers]
    for regex, bits, algorithm in rules:
        for op_name, granularity in _weight_ops(recipe):
            tool.add_static_config(regex, qtyping.TFLOperationName(op_name), activation_num_bits=bits, weight_num_bits=8,
                                   weight_granularity=granularity, algorithm_key=algorithm)
    ranges: dict = {}
    with capture("ai-edge-quantizer static"):
        for sample in tqdm(feeds, total=total, desc="calibrating", unit="batch", leave=False):
            # One sample per call, ranges merged here: over several samples its calibrator keeps a
            # moving average (smoothing 0.95), i.e. about the first sample's range, which clipped
            # later samples' activations (30 dB on the encoder where min/max ranges give 45).
            # The profiler mode keeps only the tensors it needs, not every attention map at once.
            ranges = _widest(ranges, tool.calibrate({SIGNATURE: [sample]}, num_threads=1,
                                                    mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED))
        if not ranges:
            raise ValueError("LiteRT static quantization needs at least one calibration batch")
        return bytes(tool.quantize(ranges, enable_progress_bar=False, enable_progress_report=False).quantized_model)


def layer_scope_regex(layer: str) -> str:
    """A regex for the TFLite ops of one encoder layer (``image_encoder.blocks.0.attn.qkv``) by the
    module path litert-torch writes into their output names
    (``...EncoderGraph/...Block_0/...Attention_attn/...Linear_qkv;1``: each module as
    ``Class_attribute``, a list item as ``Class_index``)."""
    parts = layer.split(".")[1:]
    keys = [part for i, part in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].isdigit())]
    return "EncoderGraph" + "".join(rf"/(?:\w+\.)*[A-Za-z0-9]+_{re.escape(key)}" for key in keys) + r"(?:[/;]|$)"


def _widest(ranges: dict, new: dict) -> dict:
    """Per tensor, the min of the mins and the max of the maxes of two calibration results."""
    merged = dict(new)
    for name, old in ranges.items():
        if name in new:
            merged[name] = {**new[name], "min": np.minimum(old["min"], new[name]["min"]),
                            "max": np.maximum(old["max"], new[name]["max"])}
        else:
            merged[name] = old
    return merged


def _quantizer(content: bytes):
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(bytearray(content))


def _weight_ops(recipe: QuantRecipe):
    """(TFLite op name, weight granularity) for every op of the recipe's op classes."""
    from ai_edge_quantizer import qtyping

    granularity = qtyping.QuantGranularity.CHANNELWISE if recipe.per_channel_weights else qtyping.QuantGranularity.TENSORWISE
    return [(op_name, granularity) for op_class in sorted(recipe.quantized_ops) for op_name in WEIGHT_TFL_OPS[op_class]]
