"""Quantization recipes: which parts of EfficientSAM become INT8 and which stay float.

One registry (:data:`RECIPES`) holds every named recipe, whatever its scheme:

- ``static``: weights and activations INT8, activation ranges from calibration images;
- ``dynamic``: INT8 weights, activation ranges computed per run (no calibration set);
- ``weight-only``: weights stored compressed (int8 or palettized), activations float.

A recipe is target-neutral data. Each target declares the schemes it takes (``Target.schemes``)
and maps the op classes named here onto its own quantizer (onnxruntime node lists,
XNNPACK/LiteRT/Core ML PT2E annotations, Core ML compression passes), so "static-conv-linear"
means the same thing on every runtime and drift numbers compare across them. A recipe can also
make per-layer choices (``layers``: a model module name -> the recipe's scheme, ``"float"``, or
in a static recipe ``"a16"``: that layer's activations in 16 bits),
which is what ``edge-sam quantize mixed`` writes into a recipe file (:mod:`.recipe_file`);
:func:`~edge_sam.quantize.recipe_file.get_recipe` takes a registry name or such a file.

The defaults follow what the ViT/SAM quantization literature and our own drift runs say: the
weight layers (conv, linear) quantize well; the attention score matmuls, softmax, LayerNorm,
GELU and the residual adds carry the outliers and stay float; the mask decoder is small and
sensitive, so static recipes keep it float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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


Scheme = Literal["static", "dynamic", "weight-only"]
SCHEMES: tuple[str, ...] = ("static", "dynamic", "weight-only")
ACTIVATION_BITS = (8, 16)
FLOAT = "float"  # a per-layer choice: this layer stays float whatever its op class
A16 = "a16"  # a per-layer choice in a static recipe: this layer static with 16-bit activations
Component = Literal["encoder", "decoder"]
CalibrationMethod = Literal["minmax", "moving-average", "percentile", "entropy"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "moving-average", "percentile", "entropy")
Codec = Literal["linear", "palette"]


class RecipeError(EdgeSamError, ValueError):
    """An unknown recipe, a malformed recipe file, or a recipe the chosen target cannot take."""


@dataclass(frozen=True)
class QuantRecipe:
    """One quantization recipe.

    Everything not in ``quantized_ops`` and every component not in ``components`` stays float.
    ``layers`` refines that per layer of the image encoder (names from
    :func:`edge_sam.quantize.layers.quantizable_layers`): a layer named with ``"float"`` stays
    float, one named with the recipe's scheme is INT8 as its op class says, one named ``"a16"``
    (static recipes) is static with int8 weights and int16 activations, an unnamed layer follows
    the op classes.
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
    # Static activations in 8 bits (W8A8) or 16 (W8A16: what Qualcomm's HTP and LiteRT's 16x8
    # full-integer mode run; the error of a 16-bit activation grid is 256 times smaller).
    activation_bits: int = 8
    layers: tuple[tuple[str, str], ...] = ()  # (layer, scheme, "a16" or "float"), in model order
    base: str | None = None  # the registry recipe a per-layer recipe refines

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise RecipeError(f"recipe '{self.name}': unknown scheme '{self.scheme}' (choose from {', '.join(SCHEMES)})")
        if self.activation_bits not in ACTIVATION_BITS:
            raise RecipeError(f"recipe '{self.name}': activations in {self.activation_bits} bits (choose from "
                              f"{', '.join(map(str, ACTIVATION_BITS))})")
        if self.activation_bits != 8 and self.scheme != "static":
            raise RecipeError(f"recipe '{self.name}': {self.activation_bits}-bit activations need a static recipe, "
                              f"not {self.scheme}")
        if self.layers and self.scheme == "weight-only":
            raise RecipeError(f"recipe '{self.name}': per-layer choices apply to static and dynamic recipes, not weight-only")
        allowed = {self.scheme, FLOAT} | ({A16} if self.scheme == "static" else set())
        wrong = sorted({choice for _, choice in self.layers} - allowed)
        if wrong:
            raise RecipeError(f"recipe '{self.name}': a layer is {', '.join(sorted(allowed))} in a {self.scheme} recipe, "
                              f"not {', '.join(wrong)} (one INT8 scheme per recipe)")
        names = [layer for layer, _ in self.layers]
        if len(set(names)) != len(names):
            raise RecipeError(f"recipe '{self.name}' names a layer twice")

    @property
    def needs_calibration(self) -> bool:
        return self.scheme == "static"

    @property
    def schemes(self) -> frozenset[str]:
        """Every INT8 scheme the recipe uses, its per-layer choices included (float is not one)."""
        return frozenset({self.scheme} | {choice for _, choice in self.layers if choice not in (FLOAT, A16)})

    @property
    def activation_widths(self) -> frozenset[int]:
        """Every static activation width the recipe uses, its per-layer choices included."""
        return frozenset({self.activation_bits} | ({16} if self.a16_layers else set()))

    @property
    def float_ops(self) -> tuple[OpClass, ...]:
        return tuple(op for op in OpClass if op not in self.quantized_ops)

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers this recipe keeps float by name (its per-layer choices)."""
        return tuple(layer for layer, choice in self.layers if choice == FLOAT)

    @property
    def a16_layers(self) -> tuple[str, ...]:
        """The layers this recipe quantizes with 16-bit activations by name (its per-layer choices)."""
        return tuple(layer for layer, choice in self.layers if choice == A16)

    def a16_of(self, layers: Sequence[str]) -> tuple[str, ...]:
        """Which of ``layers`` run with 16-bit activations: in a 16-bit recipe every layer it does
        not keep float, else its ``"a16"`` choices."""
        if self.activation_bits == 16:
            return tuple(layer for layer in layers if layer not in self.float_layers)
        return tuple(layer for layer in layers if layer in self.a16_layers)

    def quantizes(self, component: Component) -> bool:
        return component in self.components

    def with_layers(self, layers: Mapping[str, str], name: str, summary: str | None = None) -> "QuantRecipe":
        """This recipe with per-layer choices, under a new name (it becomes the ``base``)."""
        return dataclasses.replace(
            self, name=name, summary=summary or f"{self.name} with per-layer choices", layers=tuple(layers.items()),
            base=self.base or self.name,
        )

    def describe(self) -> dict[str, Any]:
        """The recipe as plain JSON data, for manifests and reports."""
        data = dataclasses.asdict(self)
        data["quantized_ops"] = sorted(op.value for op in self.quantized_ops)
        data["float_ops"] = [op.value for op in self.float_ops]
        data["components"] = list(self.components)
        data["layers"] = dict(self.layers)
        return data


@dataclass(frozen=True)
class WeightOnlyRecipe(QuantRecipe):
    """Weights stored compressed, activations float, no calibration set.

    A runtime that decompresses weights at load time (Core ML's ``constexpr_*`` ops) or in its
    kernels gets a smaller file for little drift, because activations keep full float range.
    ``codec`` ``linear``: int8 per output channel, symmetric; ``palette``: each weight an
    ``weight_bits``-bit index into a table of 2**n values fitted by k-means (6 bits keep the
    drift close to int8 at 3/4 of the size, 4 bits halve it again at a visible cost).
    """

    codec: Codec = "linear"
    weight_bits: int = 8


_WEIGHT_LAYERS = frozenset({OpClass.CONV, OpClass.LINEAR})
# Weight-only drift is small enough that the decoder, which static recipes keep float, is compressed too.
_BOTH = ("encoder", "decoder")

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
            name="static-a16-conv-linear",
            summary="W8A16 static on conv and linear layers of the encoder: int8 weights, int16 activations "
            "(Qualcomm HTP, LiteRT 16x8); the rest as static-conv-linear",
            scheme="static",
            quantized_ops=_WEIGHT_LAYERS,
            activation_bits=16,
        ),
        QuantRecipe(
            name="dynamic-linear",
            summary="INT8 weights with per-run activation ranges on the encoder's linear layers; "
            "no calibration set needed",
            scheme="dynamic",
            quantized_ops=frozenset({OpClass.LINEAR}),
        ),
        QuantRecipe(
            name="naive-all-int8",
            summary="everything LiteRT's PT2E quantizer can make INT8 in the encoder, attention matmuls and "
            "softmax included (a cautionary baseline: the drift report should flag it)",
            scheme="static",
            quantized_ops=frozenset(
                {OpClass.CONV, OpClass.LINEAR, OpClass.ATTENTION_MATMUL, OpClass.SOFTMAX, OpClass.ELEMENTWISE}
            ),
        ),
        WeightOnlyRecipe(
            name="w8-conv-linear",
            summary="int8 per-channel weights on every conv and linear layer (encoder and decoder); "
            "activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=_BOTH,
        ),
        WeightOnlyRecipe(
            name="palettize-6bit",
            summary="6-bit k-means palettized conv and linear weights (a 64-entry table per tensor), "
            "encoder and decoder; activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=_BOTH,
            codec="palette",
            weight_bits=6,
        ),
        WeightOnlyRecipe(
            name="palettize-4bit",
            summary="4-bit k-means palettized conv and linear weights (a 16-entry table per tensor), "
            "encoder and decoder; activations stay float; no calibration",
            scheme="weight-only",
            quantized_ops=_WEIGHT_LAYERS,
            components=_BOTH,
            codec="palette",
            weight_bits=4,
        ),
    )
}

# What ``--precision int8`` means without ``--recipe``.
DEFAULT_RECIPE = "static-conv-linear"
RECIPE_FILE_SUFFIX = ".json"


def recipe_names(scheme: str | None = None) -> list[str]:
    """Registry names, sorted; only those of ``scheme`` when given."""
    return sorted(name for name, recipe in RECIPES.items() if scheme is None or recipe.scheme == scheme)


def check_schemes(
    recipe: QuantRecipe, target: str, schemes: tuple[str, ...], activation_bits: tuple[int, ...] = (8,)
) -> None:
    """One RecipeError when ``recipe`` uses a scheme, or an activation width, ``target`` does not take."""
    fitting = ", ".join(n for n in recipe_names() if RECIPES[n].scheme in schemes and RECIPES[n].activation_widths <= set(activation_bits))
    refused = sorted(recipe.schemes - set(schemes))
    if refused:
        takes = ", ".join(schemes)
        raise RecipeError(f"target {target} takes {takes} recipes; '{recipe.name}' is {', '.join(refused)} "
                          f"(recipes it takes: {fitting})")
    wider = sorted(recipe.activation_widths - set(activation_bits))
    if wider:
        raise RecipeError(f"target {target} quantizes activations to {' or '.join(map(str, activation_bits))} bits; "
                          f"'{recipe.name}' asks {', '.join(map(str, wider))} (recipes it takes: {fitting})")
