"""Per-layer INT8 sensitivity: which layers of the encoder move the masks when quantized.

For every layer (:func:`~edge_sam.quantize.layers.quantizable_layers`) two variants of the
statically quantized encoder are scored on held-out images against fp32
(:class:`~edge_sam.quantize.studies.heldout.HeldOutSet`):

- *alone*: only that layer INT8, everything else float: the error the layer adds by itself;
- *all but*: every layer INT8 but that one: how much keeping it float buys back.

Layers are ranked by the embedding SQNR of *alone*, lowest first. Quantization noise of
different layers is close to independent, so noise powers add up: the layer with the lowest
SQNR alone contributes most of the full-INT8 error, and making it float first is what a greedy
search wants. (Mask IoU is what the budget is stated in, but with one layer INT8 it sits at
0.99+ for most layers and is too coarse to order them.) Each row also carries the layer's share
of the encoder's FLOPs (multiply-adds counted on the deploy graph, attention matmuls included;
not a timing): what INT8 on it can speed up.

Everything is simulated in PyTorch with the target's own PT2E quantizer
(:mod:`.simulate`), so 2 x 50 variants of the Ti encoder take minutes, not 100 exports.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from edge_sam.modeling import EfficientSam
from edge_sam.quantize.studies.heldout import Fidelity, HeldOutSet, worst_of
from edge_sam.quantize.layers import layer_flops, quantizable_layers
from edge_sam.quantize.recipes import A16, FLOAT, QuantRecipe, RecipeError
from edge_sam.quantize.studies.simulate import SimulatedEncoder, target_quantizer
from edge_sam.staging import staged_dir

from edge_sam.image_sources import ImageSource

JSON_NAME = "sensitivity.json"
# What a layer the budget needs out of INT8 becomes: float, or static with 16-bit activations.
FALLBACKS = (FLOAT, A16)
MARKDOWN_NAME = "sensitivity.md"


class LayerStudy:
    """One model, recipe and target with its calibration images and held-out sets, ready to
    score any set of float layers: the worst over the sets, each metric (a budget must hold on
    every set). Scores are cached: the greedy search revisits sets."""

    def __init__(self, model: EfficientSam, recipe: QuantRecipe, target: str, calibration: ImageSource,
                 held_out: Sequence[HeldOutSet], fallback: str = FLOAT) -> None:
        self.recipe, self.target, self.img_size = recipe, target, held_out[0].img_size
        self.calibration, self.held_out = calibration, list(held_out)
        if fallback not in FALLBACKS:
            raise RecipeError(f"a layer leaves INT8 as one of {', '.join(FALLBACKS)}, not {fallback}")
        if fallback == A16:  # one line before calibrating if the target cannot take 16-bit layers
            every_layer = {layer: A16 for layer in quantizable_layers(model.config)}
            target_quantizer(target, recipe.with_layers(every_layer, name=f"{recipe.name}-a16"))
        self.fallback = fallback
        self.encoder = SimulatedEncoder(model, self.img_size, recipe, target, calibration)
        self.layers = self.encoder.layers
        self.flops, self.total_flops = layer_flops(model, self.img_size)
        self._scores: dict[frozenset[str], Fidelity] = {}

    def _variant(self, float_layers: frozenset[str]) -> torch.nn.Module:
        """The encoder with ``float_layers`` out of INT8: float, or 16-bit activations (``fallback``)."""
        return self.encoder.variant(float_layers) if self.fallback == FLOAT else self.encoder.variant(a16_layers=float_layers)

    def score(self, float_layers: Iterable[str] = ()) -> Fidelity:
        """Fidelity with ``float_layers`` out of INT8, the worst over the held-out sets."""
        key = frozenset(float_layers)
        if key not in self._scores:
            encoder = self._variant(key)
            self._scores[key] = worst_of(held_out.score(encoder) for held_out in self.held_out)
        return self._scores[key]

    def embedding_sqnr_db(self, float_layers: Iterable[str] = ()) -> float:
        """Embedding SQNR alone (no decoder pass: what the ranking needs), the worst over the sets."""
        encoder = self._variant(frozenset(float_layers))
        return min(held_out.embedding_sqnr_db(encoder) for held_out in self.held_out)

    def int8_flop_share(self, float_layers: Iterable[str]) -> float:
        """The share of the encoder's FLOPs that runs INT8 with ``float_layers`` float."""
        floats = set(float_layers)
        return sum(f for layer, f in self.flops.items() if layer not in floats) / self.total_flops

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "recipe": self.recipe.name, "img_size": self.img_size,
                "calibration": self.calibration.describe(),
                "held_out": [held_out.source.describe() for held_out in self.held_out],
                "n_prompts": [held_out.n_prompts for held_out in self.held_out]}


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    flops: int
    flop_share: float
    alone: Fidelity  # only this layer INT8
    all_but: Fidelity | None  # every layer INT8 but this one (None when not measured)


def _rank_key(row: LayerSensitivity) -> tuple[float, float]:
    sqnr = row.alone.embedding_sqnr_db
    return (sqnr if math.isfinite(sqnr) else math.inf, -(row.all_but.mask_iou_mean if row.all_but else 0.0))


@dataclass
class SensitivityReport:
    setup: dict[str, Any]
    full_int8: Fidelity
    rows: list[LayerSensitivity]  # most sensitive first

    @property
    def ranking(self) -> list[str]:
        return [row.layer for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.setup,
            "ranked_by": "embedding SQNR with only that layer INT8, lowest first",
            "flop_share": "the layer's multiply-add FLOPs / the whole encoder's (attention matmuls included), "
                          "counted by torch.utils.flop_counter on the deploy graph; not a timing",
            "full_int8": self.full_int8.to_dict(),
            "layers": [
                {"rank": rank, "layer": row.layer, "flops": row.flops, "flop_share": row.flop_share,
                 "alone": row.alone.to_dict(), "all_but": row.all_but.to_dict() if row.all_but else None}
                for rank, row in enumerate(self.rows, 1)
            ],
        }

    def markdown(self) -> str:
        setup = self.setup
        lines = [
            f"# INT8 sensitivity per layer: {setup['target']}, recipe {setup['recipe']}, {setup['img_size']} px",
            "",
            f"Calibrated on the first {setup['calibration']['count']} images of {setup['calibration']['path']}; scored on "
            + "; ".join(f"{h['count']} held-out images of {h['path']} ({n} prompts)"
                        for h, n in zip(setup['held_out'], setup['n_prompts']))
            + " (each metric the worst over these sets)."
            f" Every layer INT8: {_fidelity_text(self.full_int8)}.",
            "Ranked by the embedding SQNR with only that layer INT8 (lowest = adds the most error). "
            "FLOP share: the layer's multiply-adds / the whole encoder's (attention matmuls included), not a timing.",
            "",
            "| rank | layer | FLOP share | only this INT8: emb SQNR dB | mask IoU mean | p5 "
            "| all INT8 but this: emb SQNR dB | mask IoU mean | p5 |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for rank, row in enumerate(self.rows, 1):
            all_but = row.all_but
            left_out = (f"{_db(all_but.embedding_sqnr_db)} | {all_but.mask_iou_mean:.4f} | {all_but.mask_iou_p5:.4f}"
                        if all_but else "- | - | -")
            lines.append(
                f"| {rank} | {row.layer} | {100 * row.flop_share:.1f}% | {_db(row.alone.embedding_sqnr_db)} | "
                f"{row.alone.mask_iou_mean:.4f} | {row.alone.mask_iou_p5:.4f} | {left_out} |"
            )
        return "\n".join(lines) + "\n"


def _db(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.1f}"


def _fidelity_text(fidelity: Fidelity) -> str:
    return (f"embedding SQNR {_db(fidelity.embedding_sqnr_db)} dB, mask IoU vs fp32 mean {fidelity.mask_iou_mean:.4f}, "
            f"p5 {fidelity.mask_iou_p5:.4f}, worst {fidelity.mask_iou_worst:.4f}")


def sqnr_ranking(studies: Sequence[LayerStudy]) -> list[str]:
    """The layers, most sensitive first: by the lowest embedding SQNR with only that layer INT8 over
    ``studies`` -- the order :func:`measure_sensitivity` gives, at half its cost (no decoder passes)."""
    layers = studies[0].layers
    worst = {layer: math.inf for layer in layers}
    for study in studies:
        for layer in tqdm(layers, desc=f"sensitivity ({study.target})", unit="layer"):
            worst[layer] = min(worst[layer], study.embedding_sqnr_db(set(layers) - {layer}))
    return sorted(layers, key=lambda layer: worst[layer])


def measure_sensitivity(study: LayerStudy, both: bool = True) -> SensitivityReport:
    """Score every layer alone (and, with ``both``, every layer left out) and rank them."""
    layers = study.layers
    full = study.score()
    rows = []
    for layer in tqdm(layers, desc=f"sensitivity ({study.target})", unit="layer"):
        alone = study.score(set(layers) - {layer})
        all_but = study.score({layer}) if both else None
        rows.append(LayerSensitivity(layer, study.flops[layer], study.flops[layer] / study.total_flops, alone, all_but))
    rows.sort(key=_rank_key)
    setup = {**study.describe(), "total_flops": study.total_flops}
    return SensitivityReport(setup, full, rows)


def write_sensitivity(report: SensitivityReport, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """``sensitivity.json`` and ``sensitivity.md`` in ``out_dir``, written whole or not at all."""
    with staged_dir(out_dir, overwrite) as tmp:
        (tmp / JSON_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / MARKDOWN_NAME).write_text(report.markdown())
    return Path(out_dir)


def fidelity_from_dict(data: dict[str, Any]) -> Fidelity:
    sqnr = data.get("embedding_sqnr_db")
    return Fidelity(**{**data, "embedding_sqnr_db": math.inf if sqnr is None else sqnr})


def read_sensitivity(path: str | os.PathLike) -> SensitivityReport:
    """A report written by :func:`write_sensitivity` (its folder or its JSON file)."""
    from edge_sam.errors import EdgeSamError

    path = Path(path)
    file = path / JSON_NAME if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
        rows = [LayerSensitivity(r["layer"], r["flops"], r["flop_share"], fidelity_from_dict(r["alone"]),
                                 fidelity_from_dict(r["all_but"]) if r["all_but"] else None) for r in data["layers"]]
        full = fidelity_from_dict(data["full_int8"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeSamError(f"cannot read a sensitivity report from {file}: {exc}") from None
    setup = {k: v for k, v in data.items() if k not in ("layers", "full_int8", "ranked_by", "flop_share")}
    return SensitivityReport(setup, full, rows)

