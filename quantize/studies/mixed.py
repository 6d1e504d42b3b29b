"""Automatic mixed precision: the fewest float layers that keep the masks within a budget.

The budget is stated in what users see: mask IoU vs the fp32 model on held-out images, mean
and 5th percentile (the p5 catches the few prompts whose mask falls apart, which a mean hides).

1. Greedy: starting from every layer INT8, make layers float in sensitivity order (most
   sensitive first, :mod:`.sensitivity`) until the budget holds.
2. Prune: try putting each float layer back to INT8, the one with the most FLOPs first, and
   keep it INT8 if the budget still holds. The greedy step can overshoot (a layer made float
   early may be unneeded once later ones are float too); pruning in that order gives INT8 back
   where it can buy the most speed. Where deploy has the target runtime's own profile
   (``int8_savings``: onnxruntime's, ExecuTorch's ETDump), a layer whose INT8 form it measured
   no faster is tried last. The measured savings do not order the rest: layers whose savings
   differ by profile noise swapped places between runs, and the recipe changed with them.
3. Verify: quantize the encoder afresh with each target's own per-layer quantizer (the
   recipe as export will apply it) and score it on the same held-out images.

With several targets, a layer set passes only if it passes on every target's simulation, so one
recipe file serves them all. The result is a recipe file (:mod:`edge_sam.quantize.recipe_file`) that
``edge-sam export --recipe FILE`` takes for every INT8 target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

import edge_sam
from edge_sam.checkpoint import state_dict_sha256
from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.studies.heldout import Fidelity, worst_of
from edge_sam.quantize.pt2e import quantize_pt2e
from edge_sam.quantize.recipes import FLOAT, QuantRecipe
from edge_sam.quantize.studies.sensitivity import LayerStudy, sqnr_ranking
from edge_sam.quantize.studies.simulate import target_quantizer

from edge_sam.graph_contract import calibration_batches, deploy_graph


class BudgetError(EdgeSamError):
    """No set of float layers (within the allowed count) meets the mask-IoU budget."""


@dataclass(frozen=True)
class Budget:
    min_mask_iou: float = 0.98
    min_mask_iou_p5: float = 0.95

    def __post_init__(self) -> None:
        for name, value in (("--min-mask-iou", self.min_mask_iou), ("--min-mask-iou-p5", self.min_mask_iou_p5)):
            if not 0.0 < value <= 1.0:
                raise EdgeSamError(f"{name} must be in (0, 1], got {value}")

    def met(self, fidelity: Fidelity) -> bool:
        return fidelity.meets(self.min_mask_iou, self.min_mask_iou_p5)

    def plus(self, mean: float, p5: float) -> "Budget":
        """This budget raised by ``mean`` and ``p5``, each capped at 1."""
        return Budget(min(1.0, self.min_mask_iou + mean), min(1.0, self.min_mask_iou_p5 + p5))

    def margin_row(self, row: dict[str, Any]) -> float:
        """How far a drift report row (mean and p5 mask IoU vs fp32) is above the budget: the
        smaller of its two margins (negative: under it; -inf: not measured)."""
        mean, p5 = row.get("mask_iou_mean"), row.get("mask_iou_p5")
        if mean is None or p5 is None:
            return float("-inf")
        return min(mean - self.min_mask_iou, p5 - self.min_mask_iou_p5)

    def met_row(self, row: dict[str, Any]) -> bool:
        """Whether a drift report row holds the budget."""
        return self.margin_row(row) >= 0.0

    def describe(self) -> str:
        return f"mask IoU vs fp32 mean >= {self.min_mask_iou}, p5 >= {self.min_mask_iou_p5}"


@dataclass
class MixedResult:
    float_layers: list[str]
    fidelity: Fidelity  # simulated, worst over targets
    full_int8: Fidelity
    int8_flop_share: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    verified: dict[str, Fidelity] = field(default_factory=dict)  # target -> its per-layer quantizer's score


def _fidelity_text(fidelity: Fidelity) -> str:
    return f"mean {fidelity.mask_iou_mean:.4f}, p5 {fidelity.mask_iou_p5:.4f}"


def search(studies: Sequence[LayerStudy], ranking: Sequence[str], budget: Budget, max_float: int | None = None,
           int8_savings: Mapping[str, float] | None = None) -> MixedResult:
    """Greedy then prune over ``ranking`` (most sensitive first), scored on every study; the
    prune tries the layers in order of FLOPs, those where ``int8_savings`` (time INT8 saves per
    layer, from the runtime's profile) is not positive last."""
    layers = studies[0].layers
    unknown = [layer for layer in ranking if layer not in layers]
    if unknown or sorted(ranking) != sorted(layers):
        raise EdgeSamError(f"the sensitivity ranking does not match this model's layers ({', '.join(unknown[:3]) or 'missing layers'})")
    limit = len(layers) if max_float is None else max_float

    def score(float_layers: Sequence[str]) -> Fidelity:
        return worst_of([study.score(float_layers) for study in studies])

    steps: list[dict[str, Any]] = []

    def record(action: str, layer: str | None, floats: Sequence[str], fidelity: Fidelity) -> None:
        steps.append({"action": action, "layer": layer, "float_layers": len(floats), **fidelity.to_dict()})

    full = score([])
    record("all INT8", None, [], full)
    floats: list[str] = []
    fidelity = full
    bar = tqdm(ranking[:limit], desc="mixed: greedy", unit="layer")
    for layer in bar:
        if budget.met(fidelity):
            break
        floats.append(layer)
        fidelity = score(floats)
        record("float", layer, floats, fidelity)
        bar.set_postfix_str(_fidelity_text(fidelity))
    bar.close()
    if not budget.met(fidelity):
        tried = f"{len(floats)} layers {studies[0].fallback}" if floats else "every layer INT8"
        cap = "" if limit >= len(layers) else f" with at most {limit} layers float"
        raise BudgetError(
            f"no recipe{cap} meets {budget.describe()} on the {fidelity.n_prompts} held-out prompts: with {tried} "
            f"it measures {_fidelity_text(fidelity)}; the limit was the layers "
            f"{', '.join(floats) if floats else 'it could not make float'}"
            + (f" (next in line: {', '.join(ranking[len(floats):len(floats) + 3])})" if len(floats) < len(ranking) else "")
        )
    def gain(layer: str) -> tuple[bool, int, int]:
        # The profile says where INT8 buys no time (tried last); FLOPs order the rest. Ordered by the
        # measured savings themselves, layers whose savings differ by profile noise swapped places
        # between runs and the recipe changed with them.
        buys_nothing = int8_savings is not None and int8_savings.get(layer, 0.0) <= 0.0
        return (buys_nothing, -studies[0].flops[layer], -ranking.index(layer))

    for layer in tqdm(sorted(floats, key=gain), desc="mixed: prune", unit="layer"):
        trial = [f for f in floats if f != layer]
        trial_fidelity = score(trial)
        kept_int8 = budget.met(trial_fidelity)
        record("INT8 again" if kept_int8 else "stays float", layer, trial, trial_fidelity)
        if kept_int8:
            floats, fidelity = trial, trial_fidelity
    floats = [layer for layer in layers if layer in floats]  # model order
    return MixedResult(floats, fidelity, full, studies[0].int8_flop_share(floats), steps)


def mixed_recipe(base: QuantRecipe, layers: Sequence[str], float_layers: Sequence[str], name: str, budget: Budget,
                 fallback: str = FLOAT) -> QuantRecipe:
    """The per-layer recipe: every layer named, INT8 (the base's scheme) or ``fallback`` (float, or
    a16: 16-bit activations) for the layers the search took out of INT8."""
    floats = set(float_layers)
    choices = {layer: fallback if layer in floats else base.scheme for layer in layers}
    kind = "float" if fallback == FLOAT else "with 16-bit activations"
    summary = (f"{base.name} with {len(floats)} of {len(layers)} encoder layers {kind}, chosen for {budget.describe()} "
               "on held-out images")
    return base.with_layers(choices, name=name, summary=summary)


def verify(model: EfficientSam, recipe: QuantRecipe, studies: Sequence[LayerStudy],
           progress: Callable[[str], None] | None = None) -> dict[str, Fidelity]:
    """Each study's target quantizes the encoder with the per-layer recipe itself (the export's
    quantizer, calibrated afresh on the same images) and is scored on the same held-out set."""
    scores = {}
    for study in studies:
        graph = deploy_graph(model, study.img_size, "encoder")
        batches, total = calibration_batches(model, study.calibration, study.img_size, "encoder")
        quantized = quantize_pt2e(graph, graph.example_inputs(), target_quantizer(study.target, recipe), batches,
                                  fold_quantize=False, total=total, description=f"verifying ({study.target})")
        scores[study.target] = worst_of(held_out.score(quantized) for held_out in study.held_out)
        if progress:
            progress(f"{study.target}: {_fidelity_text(scores[study.target])} with the target's per-layer quantizer")
    return scores


def find_mixed_recipe(
    model: EfficientSam,
    base: QuantRecipe,
    studies: Sequence[LayerStudy],
    budget: Budget,
    name: str,
    *,
    command: str,
    ranking: Sequence[str] | None = None,
    max_float: int | None = None,
    fallback: str = FLOAT,
    progress: Callable[[str], None] | None = None,
    verify_recipe: bool = True,
    int8_savings: Mapping[str, float] | None = None,
    savings_source: str | None = None,
) -> tuple[QuantRecipe, MixedResult, dict[str, Any]]:
    """Rank the layers (unless ``ranking`` is given), search, and (``verify_recipe``) verify with
    each target's own per-layer quantizer (a caller that exports and measures the recipe on the
    runtime next may skip that): the recipe, the search's record, and the provenance a recipe
    file carries (how it was chosen, and on which weights and images: what a cache of it must match).
    ``int8_savings`` (ms per layer, measured by ``savings_source``) orders the prune step."""
    if ranking is None:
        ranking = sqnr_ranking(studies)
    result = search(studies, ranking, budget, max_float, int8_savings)
    mixed = mixed_recipe(base, studies[0].layers, result.float_layers, name, budget, fallback)
    if verify_recipe:
        result.verified = verify(model, mixed, studies, progress=progress)
    provenance = {
        "command": command,
        "checkpoint_state_dict_sha256": state_dict_sha256(model),
        "img_size": studies[0].img_size,
        "targets": [study.target for study in studies],
        "budget": dataclasses.asdict(budget),
        "max_float": max_float,
        "calibration": studies[0].calibration.describe(),
        "held_out": [held_out.source.describe() for held_out in studies[0].held_out],
        "n_prompts": [held_out.n_prompts for held_out in studies[0].held_out],
        "ranking": list(ranking),
        "fallback": fallback,
        "float_layers": result.float_layers,  # the layers out of INT8 (float, or a16 with fallback a16)
        "int8_flop_share": result.int8_flop_share,
        "prune_order": (f"FLOPs per layer, those INT8 made no faster last ({savings_source})" if int8_savings is not None
                        else "FLOPs per layer"),
        "int8_savings_ms": dict(int8_savings) if int8_savings is not None else None,
        "full_int8": result.full_int8.to_dict(),
        "simulated": result.fidelity.to_dict(),
        "verified": {target: fidelity.to_dict() for target, fidelity in result.verified.items()},
        "steps": result.steps,
        "edge_sam": edge_sam.__version__,
    }
    return mixed, result, provenance
