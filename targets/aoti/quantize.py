"""A :class:`~edge_sam.quantize.recipes.QuantRecipe` as torchao's ``X86InductorQuantizer``.

Why this quantizer: its int8 patterns are the ones Inductor fuses into oneDNN kernels
(``qlinear_pointwise`` / ``qconv_pointwise``, VNNI or AMX int8 where the CPU has them) when the
package is compiled with freezing (:mod:`.compile`); another quantizer's graph would compile to
dequantize + fp32 matmul. It quantizes conv and linear only (activations uint8 affine, weights
int8 per channel); a recipe asking for other op classes or symmetric activations is refused
rather than silently changed (16-bit activations: the target declares 8-bit only). A per-layer recipe's float layers are named
to the quantizer as modules of the deploy graph with no config.
"""

from __future__ import annotations

import dataclasses

import torch

from edge_sam.image_sources import ImageSource
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.layers import ENCODER
from edge_sam.quantize.pt2e import calibrated_pt2e
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError

QUANTIZER_MODULE = "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"
_MODULE_TYPES = {OpClass.CONV: torch.nn.Conv2d, OpClass.LINEAR: torch.nn.Linear}
# The deploy encoder graph holds the model's image encoder as ``encoder`` (edge_sam.deploy_form.EncoderGraph).
_GRAPH_ENCODER = "encoder"


def check_supported(recipe: QuantRecipe) -> None:
    """One line for a recipe the x86 inductor quantizer cannot make INT8."""
    unsupported = sorted(op.value for op in recipe.quantized_ops - set(_MODULE_TYPES))
    if unsupported:
        raise RecipeError(f"recipe '{recipe.name}' quantizes {', '.join(unsupported)}, which the x86 inductor "
                          "quantizer cannot make INT8 (it takes conv and linear)")
    if recipe.symmetric_activations:
        raise RecipeError(f"recipe '{recipe.name}' asks for symmetric activations; the x86 inductor quantizer's "
                          "activations are uint8 affine")


def _quantization_config(recipe: QuantRecipe):
    """The quantizer's default config (static or dynamic), with the recipe's calibration observer."""
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import get_default_x86_inductor_quantization_config

    config = get_default_x86_inductor_quantization_config(is_dynamic=recipe.scheme == "dynamic")
    if recipe.scheme == "dynamic":
        return config
    observer = {"minmax": MinMaxObserver, "moving-average": MovingAverageMinMaxObserver}.get(
        recipe.calibration_method, HistogramObserver)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def recipe_quantizer(recipe: QuantRecipe):
    """An ``X86InductorQuantizer`` annotating the recipe's op classes outside its float layers."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    check_supported(recipe)
    config = _quantization_config(recipe)
    quantizer = X86InductorQuantizer()
    for op_class in recipe.quantized_ops:
        quantizer.set_module_type_qconfig(_MODULE_TYPES[op_class], config)
    for layer in recipe.float_layers:
        quantizer.set_module_name_qconfig(_GRAPH_ENCODER + layer[len(ENCODER):], None)
    return quantizer


def quantized_graph(model: EfficientSam, graph: torch.nn.Module, recipe: QuantRecipe, calibration: ImageSource | None,
                    img_size: int, role: str) -> torch.fx.GraphModule:
    """``graph`` PT2E-quantized with the recipe's x86 inductor quantizer (calibrated when static)."""
    return calibrated_pt2e(model, graph, recipe_quantizer(recipe), recipe.needs_calibration, calibration, img_size, role)
