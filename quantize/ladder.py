"""The INT8 ladder: the forms of INT8 ``edge-sam deploy`` tries, cheapest loss of speed first.

Full static INT8 loses the masks of many models (the activation grid, not the weights: see
docs/qat.md); the forms below each keep more of the model out of that grid, at a cost in speed or
in what hardware runs them. Deploy climbs them in this order per target and stops at the first
that holds the gate on its search images, so what ships is the least-float INT8 that keeps the
masks:

1. ``static``: every conv and linear layer of the encoder W8A8 (``static-conv-linear``);
2. ``mixed``: the same with the fewest layers float that hold the gate, searched for this
   checkpoint on the search images (:mod:`edge_sam.quantize.studies.mixed`);
3. ``a16``: every such layer static with 16-bit activations (``static-a16-conv-linear``: NPUs with
   int16 activations);
4. ``dynamic``: int8 weights, activation ranges per run (``dynamic-linear``: CPUs, not NPUs);
5. ``w8``: int8 weights only, activations float (``w8-conv-linear``);
6. ``palette6``: 6-bit palettized weights, activations float (``palettize-6bit``).

Each target declares the rungs its export takes (``Target.int8_rungs``); ``full_integer`` marks
the rungs an NPU or the Neural Engine runs as integer kernels (``deploy --int8 full-integer``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_sam.quantize.recipes import DEFAULT_RECIPE, QuantRecipe, RecipeError


@dataclass(frozen=True)
class Rung:
    """One form of INT8: a registry recipe, or (``recipe`` None) a mixed recipe searched per checkpoint."""

    name: str
    recipe: str | None
    full_integer: bool
    what: str

    @property
    def searched(self) -> bool:
        return self.recipe is None


RUNGS: tuple[Rung, ...] = (
    Rung("static", DEFAULT_RECIPE, True, "full static INT8 (W8A8 on every conv and linear layer)"),
    Rung("mixed", None, True, "static INT8 with the fewest layers float that hold the gate, searched for this checkpoint"),
    Rung("a16", "static-a16-conv-linear", True, "int8 weights, 16-bit activations (NPUs with int16 activations)"),
    Rung("dynamic", "dynamic-linear", False, "int8 weights, activation ranges computed per run (CPU kernels)"),
    Rung("w8", "w8-conv-linear", False, "int8 weights only, float activations"),
    Rung("palette6", "palettize-6bit", False, "6-bit palettized weights, float activations"),
)
RUNG_NAMES: tuple[str, ...] = tuple(rung.name for rung in RUNGS)
CUSTOM_RUNG = "recipe"  # the name of the one rung a fixed recipe makes
# What ``--int8`` takes besides one rung's name.
LADDERS = ("any", "full-integer")


def custom_rung(recipe: QuantRecipe) -> Rung:
    """The one rung of a run whose recipe is fixed (``--recipe``, or a QAT checkpoint's own)."""
    return Rung(CUSTOM_RUNG, recipe.name, recipe.scheme == "static", f"the recipe given: {recipe.name}")


def get_rung(name: str) -> Rung:
    for rung in RUNGS:
        if rung.name == name:
            return rung
    raise RecipeError(f"unknown INT8 rung '{name}' (known: {', '.join(RUNG_NAMES)})")


def check_int8_mode(mode: str) -> None:
    """``--int8`` is ``any``, ``full-integer`` or one rung's name; anything else is one error."""
    if mode not in LADDERS and mode not in RUNG_NAMES:
        raise RecipeError(f"--int8 takes {', '.join(LADDERS)} or one rung ({', '.join(RUNG_NAMES)}), not '{mode}'")


def ladder_for(declared: tuple[str, ...], mode: str) -> tuple[Rung, ...]:
    """The rungs a target that declares ``declared`` climbs under ``--int8 mode``, in ladder order
    (empty when it takes none of them: the caller says why)."""
    check_int8_mode(mode)
    rungs = tuple(rung for rung in RUNGS if rung.name in declared)
    if mode == "any":
        return rungs
    if mode == "full-integer":
        return tuple(rung for rung in rungs if rung.full_integer)
    return tuple(rung for rung in rungs if rung.name == mode)
