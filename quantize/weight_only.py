"""Weight-only recipes: weights stored compressed, activations float, no calibration set.

A runtime that decompresses weights at load time (Core ML's ``constexpr_*`` ops) or in its
kernels gets a smaller file for little drift, because activations keep full float range. Two
codecs:

- ``linear``: int8 per output channel, symmetric (scale only), the same per-channel scheme the
  static recipes use for weights;
- ``palette``: each weight is an n-bit index into a table of 2**n values fitted by k-means
  (Core ML's palettization); 6 bits keep the drift close to int8 at 3/4 of the size, 4 bits
  halve it again at a visible cost.

They extend :class:`~edge_sam.quantize.recipes.QuantRecipe` with the codec and the bit width,
so a manifest records them like any other recipe (``describe()``), and quantize the same op
classes a static recipe names (conv and linear weights), on both components: weight-only drift
is small enough that the decoder, which static recipes keep float, is compressed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .recipes import OpClass, QuantRecipe

Codec = Literal["linear", "palette"]
_WEIGHT_LAYERS = frozenset({OpClass.CONV, OpClass.LINEAR})


@dataclass(frozen=True)
class WeightOnlyRecipe(QuantRecipe):
    codec: Codec = "linear"
    weight_bits: int = 8


WEIGHT_ONLY_RECIPES: dict[str, WeightOnlyRecipe] = {
    recipe.name: recipe
    for recipe in (
        WeightOnlyRecipe(
            name="w8-conv-linear",
            summary="int8 per-channel weights on every conv and linear layer (encoder and decoder); "
            "activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=("encoder", "decoder"),
        ),
        WeightOnlyRecipe(
            name="palettize-6bit",
            summary="6-bit k-means palettized conv and linear weights (a 64-entry table per tensor), "
            "encoder and decoder; activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=("encoder", "decoder"),
            codec="palette",
            weight_bits=6,
        ),
        WeightOnlyRecipe(
            name="palettize-4bit",
            summary="4-bit k-means palettized conv and linear weights (a 16-entry table per tensor), "
            "encoder and decoder; activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=("encoder", "decoder"),
            codec="palette",
            weight_bits=4,
        ),
    )
}
