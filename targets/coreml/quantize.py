"""A :class:`~edge_sam.quantize.recipes.QuantRecipe` as Core ML quantization.

- Weight-only recipes (:class:`~edge_sam.quantize.recipes.WeightOnlyRecipe`): coremltools'
  ``linear_quantize_weights`` (int8, per output channel, symmetric) or ``palettize_weights``
  (k-means, n bits) pass configs for the conv and linear weights of the recipe's op classes.
- Static recipes (W8A8): PT2E with ExecuTorch's ``CoreMLQuantizer`` on the conv and linear
  modules the recipe names; ``ct.convert`` then turns the quantize/dequantize pairs into Core ML
  ``quantize``/``dequantize`` ops and int8 weights (:mod:`.convert`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from edge_sam.errors import require
from edge_sam.quantize.pt2e import quantize_pt2e
from edge_sam.quantize.layers import float_layer_filter
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError, WeightOnlyRecipe

from edge_sam.targets.coreml.program import import_coremltools, quiet_toolchain

# Core ML op types each recipe op class covers (weights of these ops are compressed).
COREML_OP_TYPES = {OpClass.CONV: ("conv", "conv_transpose"), OpClass.LINEAR: ("linear",)}
# Observers the CoreMLQuantizer offers for a recipe's calibration method.
_OBSERVERS = {"minmax": "min_max", "moving-average": "moving_average_min_max"}


def weight_compression(recipe: WeightOnlyRecipe) -> tuple[str, object]:
    """(coremltools compression pass, its OptimizationConfig) for a weight-only recipe: the
    conv/linear weights of the recipe's op classes, int8 per output channel (symmetric) or
    k-means palettized with one n-bit table per tensor."""
    import_coremltools()
    import coremltools.optimize as cto

    if recipe.codec == "linear":
        if recipe.weight_bits != 8:
            raise RecipeError(f"recipe '{recipe.name}': Core ML linear weight quantization here is int8 only")
        op_config = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        pass_name = "compression::linear_quantize_weights"
    elif recipe.codec == "palette":
        op_config = cto.coreml.OpPalettizerConfig(mode="kmeans", nbits=recipe.weight_bits, granularity="per_tensor")
        pass_name = "compression::palettize_weights"
    else:
        raise RecipeError(f"recipe '{recipe.name}': unknown weight codec '{recipe.codec}'")
    op_types = [t for op_class in recipe.quantized_ops for t in COREML_OP_TYPES.get(op_class, ())]
    return pass_name, cto.coreml.OptimizationConfig(op_type_configs={op_type: op_config for op_type in op_types})


# CoreMLQuantizer pattern names (its annotation registry) for the recipe op classes it can quantize.
_QUANTIZER_PATTERNS = {OpClass.CONV: "conv", OpClass.LINEAR: "linear"}


def coreml_quantizer(recipe: QuantRecipe):
    """ExecuTorch's CoreMLQuantizer, annotating only the patterns of the recipe's op classes.

    The stock ``annotate`` tries every pattern it knows (adds, muls, matmuls, pools, each with
    every activation) and can only narrow them by module type or name; on torch 2.13 its type
    filter never matches (export records module types as strings) and one pass per module name
    re-traces every pattern per module, minutes for a tiny model. Running just the conv/linear
    annotators over the whole graph (one component per graph) is what the recipe asks for.
    """
    unsupported = sorted(op.value for op in recipe.quantized_ops if op not in _QUANTIZER_PATTERNS)
    if unsupported:
        raise RecipeError(f"recipe '{recipe.name}': the Core ML W8A8 path quantizes conv and linear only, not {', '.join(unsupported)}")
    if recipe.calibration_method not in _OBSERVERS:
        raise RecipeError(f"recipe '{recipe.name}': the Core ML quantizer has no '{recipe.calibration_method}' calibration "
                          f"(it has: {', '.join(_OBSERVERS)})")
    # The quantizer ships with ExecuTorch and is torchao-based; the coreml extra installs both.
    require("torchao.quantization.pt2e", "coreml")
    CoreMLQuantizer = require("executorch.backends.apple.coreml.quantizer", "coreml").CoreMLQuantizer
    from coremltools.optimize.torch.quantization.quantization_config import (
        LinearQuantizerConfig,
        ModuleLinearQuantizerConfig,
    )
    from executorch.backends.apple.coreml.quantizer._annotation_config import AnnotationConfig
    from executorch.backends.apple.coreml.quantizer._coreml_quantizer import _AnnotationPatternRegistry

    symmetric = recipe.symmetric_activations
    module_config = ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric" if symmetric else "affine",
        activation_dtype=torch.qint8 if symmetric else torch.quint8,
        weight_dtype=torch.qint8,
        weight_per_channel=recipe.per_channel_weights,
        activation_observer=_OBSERVERS[recipe.calibration_method],
    )
    patterns = [_QUANTIZER_PATTERNS[op] for op in sorted(recipe.quantized_ops, key=lambda o: o.value)]
    keep = float_layer_filter(recipe)  # a per-layer recipe's float layers get no annotation

    class RecipeCoreMLQuantizer(CoreMLQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotation = AnnotationConfig.from_quantization_config(module_config)
            annotators = _AnnotationPatternRegistry.get_annotators()
            for pattern in patterns:
                annotators[pattern](model, annotation, keep)
            return model

    return RecipeCoreMLQuantizer(LinearQuantizerConfig(global_config=module_config))


def quantize_activations(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    recipe: QuantRecipe,
    batches: Iterable[tuple[torch.Tensor, ...]],
    total: int,
    role: str,
) -> torch.fx.GraphModule:
    """The PT2E W8A8 GraphModule of ``module``, calibrated on ``batches``."""
    with quiet_toolchain():
        quantizer = coreml_quantizer(recipe)
    return quantize_pt2e(module, example_inputs, quantizer, batches, total=total, description=f"calibrating {role}")
