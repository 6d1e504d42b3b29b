"""Quantization recipes: which parts of EfficientSAM become INT8 and which stay float.

A recipe is target-neutral data. Each target maps the op classes named here onto its own
quantizer (onnxruntime op types, XNNPACK/LiteRT quantizer annotations, Core ML op configs), so
"static-conv-linear" means the same thing on every runtime and drift numbers compare across
them. The defaults follow what the ViT/SAM quantization literature and our own drift runs say:
the weight layers (conv, linear) quantize well; the attention score matmuls, softmax,
LayerNorm, GELU and the residual adds carry the outliers and stay float; the mask decoder is
small and sensitive, so it stays float unless a recipe says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from edge_sam.errors import EdgeSamError


class OpClass(str, Enum):
    """Op classes a recipe can quantize, in model terms rather than any runtime's op names."""

    CONV = "conv"  # patch embedding, neck convs, decoder transposed convs
    LINEAR = "linear"  # matmuls with a constant weight: qkv, proj, MLP, hypernetwork MLPs
    ATTENTION_MATMUL = "attention_matmul"  # q @ k^T and attn @ v (both operands activations)
    SOFTMAX = "softmax"
    NORM = "norm"  # LayerNorm, LayerNorm2d, GroupNorm
    ACTIVATION = "activation"  # GELU
    ELEMENTWISE = "elementwise"  # residual adds, scale muls, position-embedding add


Scheme = Literal["static", "dynamic"]
Component = Literal["encoder", "decoder"]
CalibrationMethod = Literal["minmax", "percentile", "entropy"]


@dataclass(frozen=True)
class QuantRecipe:
    """One named quantization recipe.

    ``static``: weights and activations INT8, activation ranges from calibration images.
    ``dynamic``: weights INT8, activation ranges computed per run (no calibration set).
    Everything not in ``quantized_ops`` and every component not in ``components`` stays float.
    """

    name: str
    summary: str
    scheme: Scheme
    quantized_ops: frozenset[OpClass]
    components: tuple[Component, ...] = ("encoder",)
    per_channel_weights: bool = True
    # Also round the outputs of quantized layers to int8 (lets runtimes chain int8 kernels, at the
    # cost of one more rounding per layer); False keeps their outputs float.
    int8_outputs: bool = False
    symmetric_activations: bool = False
    calibration_method: CalibrationMethod = "minmax"
    calibration_images: int = 8

    @property
    def needs_calibration(self) -> bool:
        return self.scheme == "static"

    @property
    def float_ops(self) -> tuple[OpClass, ...]:
        return tuple(op for op in OpClass if op not in self.quantized_ops)

    def quantizes(self, component: Component) -> bool:
        return component in self.components

    def describe(self) -> dict[str, Any]:
        """The recipe as plain JSON data, for manifests and reports."""
        data = dataclasses.asdict(self)
        data["quantized_ops"] = sorted(op.value for op in self.quantized_ops)
        data["float_ops"] = [op.value for op in self.float_ops]
        data["components"] = list(self.components)
        return data


_WEIGHT_LAYERS = frozenset({OpClass.CONV, OpClass.LINEAR})

RECIPES: dict[str, QuantRecipe] = {
    recipe.name: recipe
    for recipe in (
        QuantRecipe(
            name="static-conv-linear",
            summary="W8A8 static on conv and linear layers of the encoder; attention matmuls, softmax, "
            "norms, GELU, residual adds and the whole decoder stay float",
            scheme="static",
            quantized_ops=_WEIGHT_LAYERS,
        ),
        QuantRecipe(
            name="dynamic-linear",
            summary="INT8 weights with per-run activation ranges on the encoder's linear layers; "
            "no calibration set needed",
            scheme="dynamic",
            quantized_ops=frozenset({OpClass.LINEAR}),
        ),
    )
}

class RecipeError(EdgeSamError, ValueError):
    """An unknown recipe name, or a recipe the chosen target or precision cannot take."""


# What ``--precision int8`` means without ``--recipe``.
DEFAULT_RECIPE = "static-conv-linear"


def get_recipe(name: str) -> QuantRecipe:
    """A recipe by name, or one RecipeError listing the names that exist."""
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown quantization recipe '{name}' (known: {', '.join(sorted(RECIPES))})") from None
