"""Which artifact to ship per target, and ``summary.md``: the answer, the evidence and the time
each step took.

The rule: among a target's artifacts whose mean mask IoU vs fp32 on the held-out images
reaches the gate, ship the fastest (encoder p50 + one decoder call p50, the latency of a first
tap on a new image); a tie goes to the smaller file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """One step of the run as the summary lists it."""

    name: str
    outcome: str
    seconds: float


@dataclass(frozen=True)
class Choice:
    """The artifact to ship for one target (``row`` is its report row), or None and why not."""

    target: str
    row: dict[str, Any] | None
    why: str

    @property
    def artifact(self) -> str | None:
        return Path(self.row["artifact_dir"]).name if self.row else None


def latency_s(row: dict[str, Any]) -> float:
    """Encoder p50 + decoder p50: what a user waits for the first mask on a new image."""
    return (row.get("encoder_p50_s") or 0.0) + (row.get("decoder_p50_s") or 0.0)


def passes(row: dict[str, Any], gate: float) -> bool:
    return row.get("mask_iou_mean") is not None and row["mask_iou_mean"] >= gate


def choose(rows: list[dict[str, Any]], targets: tuple[str, ...], gate: float) -> list[Choice]:
    """One choice per target, from the report's artifact rows."""
    choices = []
    for target in targets:
        candidates = [row for row in rows if row.get("target") == target]
        passing = sorted((row for row in candidates if passes(row, gate)), key=lambda r: (latency_s(r), r.get("bytes") or 0))
        if passing:
            best = passing[0]
            why = f"fastest of {len(passing)} passing ({latency_s(best) * 1e3:.0f} ms encoder + decoder"
            if len(passing) > 1:
                why += f"; next {_name(passing[1])} {latency_s(passing[1]) * 1e3:.0f} ms"
            why += f"), mask IoU {best['mask_iou_mean']:.4f} >= {gate}"
            choices.append(Choice(target, best, why))
        elif candidates:
            best = max(candidates, key=lambda r: r.get("mask_iou_mean") or 0.0)
            choices.append(Choice(target, None, f"none passes the gate {gate}: best is {_name(best)} at mask IoU "
                                                f"{best.get('mask_iou_mean') or 0.0:.4f}"))
        else:
            choices.append(Choice(target, None, "no artifact was built (see Steps)"))
    return choices


def _name(row: dict[str, Any]) -> str:
    return Path(row["artifact_dir"]).name


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def ship_table(choices: list[Choice]) -> str:
    lines = ["| target | ship | mask IoU mean | encoder p50 s | decoder p50 ms | size MB | why |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for choice in choices:
        row = choice.row or {}
        lines.append(
            f"| {choice.target} | {choice.artifact or 'nothing'} | {_cell(row.get('mask_iou_mean'), '.4f')} | "
            f"{_cell(row.get('encoder_p50_s'), '.3f')} | {_cell(_ms(row.get('decoder_p50_s')), '.1f')} | "
            f"{_cell(_mb(row.get('bytes')), '.1f')} | {choice.why} |"
        )
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _mb(size: int | None) -> float | None:
    return None if not size else size / 1e6


def artifact_table(rows: list[dict[str, Any]], outcomes: dict[str, str], gate: float) -> str:
    lines = ["| artifact | this run | backend | recipe | mask IoU mean | mask IoU p5 | encoder p50 s | decoder p50 ms | "
             "size MB | gate |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        name = _name(row)
        lines.append(
            f"| {name} | {outcomes.get(name, '')} | {row.get('backend') or '-'} | {row.get('recipe') or '-'} | "
            f"{_cell(row.get('mask_iou_mean'), '.4f')} | "
            f"{_cell(row.get('mask_iou_p5'), '.4f')} | {_cell(row.get('encoder_p50_s'), '.3f')} | "
            f"{_cell(_ms(row.get('decoder_p50_s')), '.1f')} | {_cell(_mb(row.get('bytes')), '.1f')} | "
            f"{'pass' if passes(row, gate) else 'FAIL'} |"
        )
    return "\n".join(lines)


# Registry recipes that keep the masks where full static INT8 loses them (docs/quantization.md), best first.
_INT8_ALTERNATIVES = (
    ("static-a16-conv-linear", "int8 weights, 16-bit activations, every layer integer (NPUs with 16-bit activations)"),
    ("dynamic-linear", "int8 weights, activation ranges computed per run (CPU; not full-integer)"),
    ("w8-conv-linear", "int8 weights, float activations"),
)


def int8_advice(rows: list[dict[str, Any]], gate: float, checkpoint: str) -> list[str]:
    """What to try when int8 artifacts miss the gate: a mixed recipe searched for this checkpoint,
    and the registry recipes each failing target takes (from its declared schemes and widths)."""
    from edge_sam.quantize.recipes import RECIPES
    from edge_sam.targets.core.registry import get_target
    from edge_sam.targets.pipeline.plan import refusal

    failing = [row for row in rows if row.get("precision") == "int8" and not passes(row, gate)]
    if not failing:
        return []
    targets = sorted({row["target"] for row in failing})
    recipes = sorted({row.get("recipe") or "?" for row in failing})
    lines = [f"int8 ({', '.join(recipes)}) misses the gate on {', '.join(targets)}. To try, each a `--recipe` of this "
             "command (on the bundled model these kept the masks where full static INT8 lost them: "
             "docs/quantization.md):", "",
             f"- a mixed-precision recipe searched for this checkpoint: `edge-sam quantize mixed --checkpoint {checkpoint} "
             f"--images DIR --target {','.join(targets)} --out mixed.json`, then `--recipe mixed.json`"]
    for name, what in _INT8_ALTERNATIVES:
        takers = [target for target in targets if refusal(get_target(target), "int8", RECIPES[name]) is None]
        if takers and name not in recipes:
            lines.append(f"- `{name}` ({', '.join(takers)}): {what}")
    return lines


def render_summary(
    *,
    checkpoint: str,
    img_size: int,
    gate: float,
    images: dict[str, Any],
    prompts: int,
    reference: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    choices: list[Choice],
    outcomes: dict[str, str],
    skipped: tuple[str, ...],
    steps: list[StepRecord],
    machine: str,
) -> str:
    """summary.md: what to ship, every artifact's numbers, what was skipped, how long each step took."""
    lines = [
        "# edge-sam deploy",
        "",
        f"Checkpoint `{checkpoint}` at {img_size} px. Gate: mean mask IoU vs the fp32 PyTorch model >= {gate}, "
        f"measured on {len(images['held_out'])} held-out images from `{images['folder']}` ({prompts} prompts per "
        f"artifact) that no artifact was calibrated on; int8 artifacts calibrated on {len(images['calibration'])} "
        f"other images of that folder (both sets are copied under `images/`). Latencies: this machine ({machine}), "
        "every runner in one process.",
        "",
        "## What to ship",
        "",
        ship_table(choices),
        "",
        "Rule: of a target's artifacts that pass the gate, the fastest (encoder p50 + decoder p50: the wait for the "
        "first mask on a new image); a tie goes to the smaller file.",
        "",
        "## Every artifact",
        "",
        artifact_table(rows, outcomes, gate),
    ]
    if reference:
        lines += ["", f"fp32 PyTorch reference: encoder p50 {_cell(reference.get('encoder_p50_s'), '.3f')} s, "
                      f"decoder p50 {_cell(_ms(reference.get('decoder_p50_s')), '.1f')} ms."]
    advice = int8_advice(rows, gate, checkpoint)
    if advice:
        lines += ["", "## INT8 that keeps the masks", ""] + advice
    failed = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("failed")}
    if failed:
        lines += ["", "## Failed", ""] + [f"- {name}: {outcome}" for name, outcome in failed.items()]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {line}" for line in skipped]
    total = sum(step.seconds for step in steps)
    lines += ["", "## Steps", "", "| step | result | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {step.name} | {step.outcome} | {step.seconds:.1f} |" for step in steps]
    lines += [f"| total | | {total:.1f} |", "",
              "Drift report: [report/report.html](report/report.html) (the table, drift vs latency, worst prompts, "
              "per-layer drift); every number in `report/report.json`."]
    return "\n".join(lines) + "\n"
