"""Each target's INT8 ladder, climbed on the search images: the first form of INT8 that holds the
gate there is the one deploy measures on the held-out images and may ship.

A rung (:mod:`edge_sam.quantize.ladder`) is exported as ``OUT/<target>-int8-<rung>`` and run on
the target's own runtime over the search images; it passes when its mask IoU vs fp32 holds the
*search budget*: the gate plus a margin (:data:`SEARCH_MARGIN`), so that a form chosen on a
handful of images still holds the gate on images it was not chosen on. The ``mixed`` rung first
searches its recipe for this checkpoint and target (:func:`edge_sam.quantize.studies.mixed.find_mixed_recipe`,
simulated on the search images with the target's own quantizer, at most :data:`MAX_FLOAT_SHARE`
of the layers float) and caches it in ``OUT/int8_search/<target>.json``; a re-run with the same
weights, images, size and gate reuses it, anything else searches again and says why. The layer
ranking (which layer's INT8 error is largest) is measured once per run, on the first target
searched, and shared: it orders the greedy search, while every target's own simulation decides
where it stops. Where the runtime then measures the recipe under the budget, the search runs
again with the budget raised by the shortfall (:data:`RESEARCHES`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.ladder import CUSTOM_RUNG, Rung
from edge_sam.image_sources import ImageSource
from edge_sam.quantize.recipe_file import get_recipe, load_recipe_file, write_recipe_file
from edge_sam.quantize.recipes import QuantRecipe, RecipeError
from edge_sam.quantize.studies.mixed import Budget, BudgetError, find_mixed_recipe

from edge_sam.targets.core.manifest import MANIFEST_NAME
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.deploy.plan import Job

# Added to the gate (mean, p5) on the search images: a rung passes there only with this much to
# spare, since a form chosen on a few images fits them. With it the chosen forms held the gate on
# the held-out images and on photos from other sources (docs/deploy.md, Measured).
SEARCH_MARGIN = (0.01, 0.03)
# A mixed recipe that needs more of the encoder's layers float than this is not INT8 worth the name.
MAX_FLOAT_SHARE = 0.75
SEARCH_DIR = "int8_search"
# Where the runtime measures a mixed recipe under the budget its simulation met, it is searched
# again at most this many times, the budget raised by the shortfall.
RESEARCHES = 2

Step = Callable[[str], AbstractContextManager[dict[str, str]]]


def search_budget(gate: Budget, margin: tuple[float, float] = SEARCH_MARGIN) -> Budget:
    """The gate plus the margin, each at most 1."""
    return gate.plus(*margin)


@dataclass
class RungTry:
    """One rung as far as the climb took it."""

    rung: Rung
    artifact: str | None = None  # folder name under OUT, once exported
    outcome: str = "not reached"  # built / reused (...) / rebuilt: ... / failed: ...
    search: dict[str, Any] | None = None  # the search-image row of the drift report
    passed: bool = False
    detail: str = ""  # what the mixed search chose, or why the rung could not be built

    @property
    def measured(self) -> bool:
        return self.search is not None and self.search.get("mask_iou_mean") is not None

    def numbers(self) -> str:
        if not self.measured:
            return self.detail or self.outcome
        return f"mask IoU {self.search['mask_iou_mean']:.4f} / p5 {self.search['mask_iou_p5']:.4f}"

    def to_dict(self) -> dict[str, Any]:
        search = self.search or {}
        return {"rung": self.rung.name, "artifact": self.artifact, "outcome": self.outcome, "passed": self.passed,
                "detail": self.detail, "search_mask_iou_mean": search.get("mask_iou_mean"),
                "search_mask_iou_p5": search.get("mask_iou_p5")}


@dataclass
class Ladder:
    """A target's climb: every rung tried, in order; the last one tried passed, or none did."""

    target: str
    budget: Budget
    tries: list[RungTry] = field(default_factory=list)

    @property
    def passed(self) -> RungTry | None:
        return next((t for t in self.tries if t.passed), None)

    @property
    def closest(self) -> RungTry | None:
        """The measured rung nearest the budget (its worse margin of mean and p5 the largest)."""
        measured = [t for t in self.tries if t.measured]
        return max(measured, key=lambda t: self.budget.margin_row(t.search), default=None)

    @property
    def candidate(self) -> RungTry | None:
        """What goes on to the held-out images: the rung that passed, else the closest."""
        return self.passed or self.closest

    def verdict(self) -> str:
        """One line: which rung passed, or that none did and which came closest."""
        if self.passed:
            return f"{self.passed.rung.name} holds {self.budget.describe()} on the search images ({self.passed.numbers()})"
        closest = self.closest
        near = f"; closest: {closest.rung.name} at {closest.numbers()}" if closest else ""
        return f"no INT8 form holds {self.budget.describe()} on the search images{near}"


@dataclass(frozen=True)
class LadderContext:
    """What climbing needs from the deploy run: how to build and how to measure an artifact."""

    out: Path
    model: EfficientSam
    weights_sha256: str  # state_dict_sha256(model), computed once by the run
    calibration: ImageSource
    search: ImageSource
    budget: Budget
    # (job, recipe) -> outcome line ("built", "reused ...", "failed: ...")
    build: Callable[[Job, QuantRecipe], str]
    # artifact folder -> its row of a drift report on the search images
    measure: Callable[[Path], dict[str, Any]]
    step: Step
    fixed_recipe: QuantRecipe | None = None  # the recipe of the one "recipe" rung (--recipe, a QAT checkpoint)
    # target -> its calibrated simulation, kept for a search run again in the same deploy
    studies: dict[str, Any] = field(default_factory=dict)
    # target -> its INT8 savings per layer and their source (int8_savings), profiled once per run
    savings: dict[str, tuple[dict[str, float] | None, str | None]] = field(default_factory=dict)
    # the layer ranking of the first target searched in this run, shared with the others
    ranking: list[str] = field(default_factory=list)


def climb(target: str, rungs: tuple[Rung, ...], context: LadderContext) -> Ladder:
    """Try ``rungs`` in order, one step line each, until one holds the search budget."""
    ladder = Ladder(target, context.budget)
    for rung in rungs:
        attempt = RungTry(rung)
        ladder.tries.append(attempt)
        if rung.searched:
            _climb_searched(target, rung, context, attempt)
        else:
            _export_and_measure(target, rung, context.fixed_recipe if rung.name == CUSTOM_RUNG else get_recipe(rung.recipe),
                                context, attempt)
        if attempt.passed:
            break
    return ladder


def _climb_searched(target: str, rung: Rung, context: LadderContext, attempt: RungTry) -> None:
    """Search the mixed recipe, export it, run it on the runtime; where the runtime measures it
    under the budget the simulation promised, search again with the budget raised by the shortfall
    (the ranking is kept), at most :data:`RESEARCHES` times."""
    search_at = context.budget
    for round_ in range(RESEARCHES + 1):
        title = f"{target}-int8-mixed: search the recipe" + (f" again at {search_at.min_mask_iou:.4f} / "
                                                              f"{search_at.min_mask_iou_p5:.4f}" if round_ else "")
        with context.step(title) as result:
            try:
                recipe, search_at, result["outcome"] = cached_mixed_recipe(target, context, search_at, again=round_ > 0)
            except (BudgetError, RecipeError) as exc:
                attempt.outcome, attempt.detail = "failed: no recipe", str(exc)
                result["outcome"] = f"no recipe: {exc}"
                return
        attempt.detail = recipe.summary
        _export_and_measure(target, rung, recipe, context, attempt)
        if attempt.passed or not attempt.measured:
            return
        raised = search_at.plus(max(0.0, context.budget.min_mask_iou - attempt.search["mask_iou_mean"]),
                                max(0.0, context.budget.min_mask_iou_p5 - attempt.search["mask_iou_p5"]))
        if raised == search_at:
            return
        search_at = raised


def _export_and_measure(target: str, rung: Rung, recipe: QuantRecipe, context: LadderContext, attempt: RungTry) -> None:
    """One step: export (or reuse) the rung's artifact and run it on the search images."""
    job = rung_job(target, rung)
    with context.step(job.name) as result:
        attempt.artifact = job.name
        attempt.outcome = context.build(job, recipe)
        attempt.search, attempt.passed = None, False
        if not attempt.outcome.startswith("failed"):
            attempt.search = context.measure(context.out / job.name)
            attempt.passed = attempt.measured and context.budget.met_row(attempt.search)
        verdict = "passes" if attempt.passed else "misses"
        result["outcome"] = (f"{attempt.outcome}; on the search images {attempt.numbers()} {verdict} "
                             f"{context.budget.min_mask_iou:.3f} / {context.budget.min_mask_iou_p5:.3f}"
                             if attempt.measured else attempt.outcome)


def rung_job(target: str, rung: Rung) -> Job:
    """``OUT/<target>-int8-<rung>``; a fixed recipe's artifact is plain ``OUT/<target>-int8``."""
    return Job(target, "int8", "" if rung.name == CUSTOM_RUNG else rung.name)


def cached_mixed_recipe(target: str, context: LadderContext, search_at: Budget,
                        again: bool = False) -> tuple[QuantRecipe, Budget, str]:
    """(recipe, the budget it was searched at, the step line) for ``target`` on this run's weights,
    images and gate. The recipe cached in ``OUT/int8_search/<target>.json`` is reused when it
    matches (it may have been searched at a raised budget: it is the one last exported); else, or
    ``again``, it is searched at ``search_at`` and cached."""
    from edge_sam.quantize.recipes import DEFAULT_RECIPE, RECIPES
    from edge_sam.quantize.studies.heldout import HeldOutSet
    from edge_sam.quantize.studies.sensitivity import LayerStudy

    path = context.out / SEARCH_DIR / f"{target}.json"
    img_size = context.model.image_encoder.img_size
    key = {
        "checkpoint_state_dict_sha256": context.weights_sha256,
        "img_size": img_size,
        "calibration": context.calibration.describe()["ids_sha256"],
        "held_out": [context.search.describe()["ids_sha256"]],
        "gate": dataclasses.asdict(context.budget),
    }
    stale, ranking = _cache_state(path, key)
    if stale is None and not again:
        recipe, provenance = load_recipe_file(path)
        return recipe, Budget(**provenance["budget"]), (f"reused {SEARCH_DIR}/{path.name} ({len(provenance['float_layers'])} "
                                                        f"of {len(provenance['ranking'])} layers float)")
    if again:
        stale, ranking = "searched again: the runtime measured the last recipe under the budget", _cached_ranking(path)
    if target not in context.studies:  # calibrating the simulation and the fp32 side of the search images
        context.studies[target] = LayerStudy(context.model, RECIPES[DEFAULT_RECIPE], target, context.calibration,
                                             [HeldOutSet(context.model, context.search, img_size)])
    study = context.studies[target]
    max_float = int(MAX_FLOAT_SHARE * len(study.layers))
    savings, savings_source = int8_savings(target, context, study.layers)
    recipe, result, provenance = find_mixed_recipe(
        context.model, RECIPES[DEFAULT_RECIPE], [study], search_at, f"mixed-{target}", command="edge-sam deploy",
        ranking=ranking or context.ranking or None, max_float=max_float, verify_recipe=False,
        int8_savings=savings, savings_source=savings_source)
    if not context.ranking:
        context.ranking.extend(provenance["ranking"])
    provenance["gate"] = key["gate"]  # what the cache is keyed on; "budget" is what it was searched at
    write_recipe_file(recipe, path, provenance)
    simulated = result.fidelity
    return recipe, search_at, (f"{stale}: {len(result.float_layers)} of {len(study.layers)} layers float, simulated mask "
                               f"IoU {simulated.mask_iou_mean:.4f} / p5 {simulated.mask_iou_p5:.4f}, "
                               f"{100 * result.int8_flop_share:.0f}% of the encoder's FLOPs INT8, pruned by "
                               f"{provenance['prune_order']} -> {SEARCH_DIR}/{path.name}")


def int8_savings(target: str, context: LadderContext, layers: tuple[str, ...]) -> tuple[dict[str, float] | None, str | None]:
    """(ms a run saves per layer with it INT8, whose profile says so) for the mixed search's prune
    order, from this run's fp32 and full static INT8 artifacts of ``target``; (None, None) where the
    target's runtime has no per-layer profile or either artifact was not built (FLOPs order it then).
    Profiled once per run: a search run again uses the same two artifacts."""
    if target not in context.savings:
        context.savings[target] = _profiled_savings(target, context, layers)
    return context.savings[target]


def _profiled_savings(target: str, context: LadderContext, layers: tuple[str, ...]) -> tuple[dict[str, float] | None, str | None]:
    tool = get_target(target)
    fp32_dir, static_dir = context.out / Job(target, "fp32").name, context.out / Job(target, "int8", "static").name
    if not tool.layer_time_source or not all((d / MANIFEST_NAME).is_file() for d in (fp32_dir, static_dir)):
        return None, None
    image = next(iter(context.calibration.samples())).image
    try:
        savings = tool.int8_layer_savings(fp32_dir, static_dir, layers, image)
    except EdgeSamError as exc:  # a profile that cannot be read back to layers: say so, count FLOPs
        print(f"{target}: {exc}; the mixed search orders its prune by FLOPs instead", file=sys.stderr)
        return None, None
    return savings, f"{tool.layer_time_source} of {fp32_dir.name} and {static_dir.name}"


def _cached_ranking(path: Path) -> list[str] | None:
    try:
        return load_recipe_file(path)[1].get("ranking")
    except RecipeError:
        return None


def _cache_state(path: Path, key: dict[str, Any]) -> tuple[str | None, list[str] | None]:
    """(None, None) when the cached recipe matches ``key``; else why it is searched again ("searched"
    for a first search) and the cached layer ranking when only the gate changed (the ranking does
    not depend on it)."""
    if not path.is_file():
        return "searched", None
    try:
        _, provenance = load_recipe_file(path)
        recorded = {
            "checkpoint_state_dict_sha256": provenance.get("checkpoint_state_dict_sha256"),
            "img_size": provenance.get("img_size"),
            "calibration": (provenance.get("calibration") or {}).get("ids_sha256"),
            "held_out": [h.get("ids_sha256") for h in provenance.get("held_out") or []],
            "gate": provenance.get("gate"),
        }
    except (RecipeError, AttributeError, TypeError):
        return "searched again: the cached recipe is unreadable", None
    reasons = {"checkpoint_state_dict_sha256": "was searched for another checkpoint", "img_size": "was searched at another size",
               "calibration": "was calibrated on other images", "held_out": "was chosen on other search images",
               "gate": "was searched for another gate"}
    for field_name, reason in reasons.items():
        if recorded[field_name] != key[field_name]:
            same_ranking = field_name == "gate" and provenance.get("ranking")
            return f"searched again: the cached recipe {reason}", (provenance["ranking"] if same_ranking else None)
    return None, None
