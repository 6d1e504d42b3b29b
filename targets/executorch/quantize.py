"""A :class:`~edge_sam.quantize.recipes.QuantRecipe` as ExecuTorch's ``XNNPACKQuantizer``.

The quantizer is configured per operator type, never globally, so only the recipe's op classes
get annotated: ``static-conv-linear`` quantizes conv and linear (per-channel int8 weights,
per-tensor int8 activations) and leaves the attention matmuls, softmax, LayerNorm, GELU and
the residual adds float, which XNNPACK then runs in fp32 inside the same delegate.
XNNPACK's quantizer has no int8 pattern for matmuls of two activations, softmax, norms or GELU;
a recipe asking for those is refused rather than silently left float. A per-layer recipe's float
layers are kept out by the quantizer's node filter (``set_filter_function``; its
``set_module_name`` takes no "leave float" config).
"""

from __future__ import annotations

import torch

from edge_sam.modeling import EfficientSam
from edge_sam.quantize.layers import float_layer_filter
from edge_sam.quantize.pt2e import calibrated_pt2e, with_recipe_activations
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError

from edge_sam.image_sources import ImageSource

# The aten ops whose XNNPACKQuantizer patterns quantize each op class.
_XNNPACK_OPS: dict[OpClass, tuple] = {
    OpClass.CONV: (torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input),
    OpClass.LINEAR: (torch.ops.aten.linear.default,),
    OpClass.ELEMENTWISE: (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.cat.default),
}
_DYNAMIC_OP_CLASSES = frozenset({OpClass.CONV, OpClass.LINEAR})  # XNNPACK's dynamic patterns


def _check_supported(recipe: QuantRecipe) -> None:
    supported = _DYNAMIC_OP_CLASSES if recipe.scheme == "dynamic" else frozenset(_XNNPACK_OPS)
    unsupported = sorted(op.value for op in recipe.quantized_ops - supported)
    if unsupported:
        raise RecipeError(
            f"recipe '{recipe.name}' quantizes {', '.join(unsupported)}, which ExecuTorch's XNNPACK {recipe.scheme} "
            "quantizer cannot make INT8"
        )


def _quantization_config(recipe: QuantRecipe, qat: bool = False):
    """XNNPACK's symmetric config (per-channel weights if the recipe says so), with the recipe's
    calibration observer and activation symmetry for static schemes; ``qat``: fake quantizers
    (quantization-aware training, :mod:`edge_sam.quantize.studies.qat`) instead of observers."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(
        is_per_channel=recipe.per_channel_weights, is_dynamic=recipe.scheme == "dynamic", is_qat=qat
    )
    if recipe.scheme == "dynamic":
        return config
    if qat:
        from edge_sam.quantize.qat_graph import qat_quantization_config

        return qat_quantization_config(config, recipe)
    return with_recipe_activations(config, recipe)


def recipe_quantizer(recipe: QuantRecipe, qat: bool = False):
    """An ``XNNPACKQuantizer`` that annotates exactly the recipe's op classes, outside its float layers."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    _check_supported(recipe)
    config = _quantization_config(recipe, qat)
    quantizer = XNNPACKQuantizer()
    for op_class in recipe.quantized_ops:
        for op in _XNNPACK_OPS[op_class]:
            quantizer.set_operator_type(op, config)
    keep = float_layer_filter(recipe)
    if keep is not None:
        quantizer.set_filter_function(keep)
    return quantizer


def quantized_graph(
    model: EfficientSam, graph: torch.nn.Module, recipe: QuantRecipe, calibration: ImageSource | None, img_size: int, role: str
) -> torch.fx.GraphModule:
    """``graph`` PT2E-quantized with the recipe's XNNPACK quantizer (calibrated when static): what
    export lowers, and what the per-layer drift compares with the float graph."""
    return calibrated_pt2e(model, graph, recipe_quantizer(recipe), recipe.needs_calibration, calibration, img_size, role)
