"""Which artifact to ship per target, and ``summary.md``: the answer, the evidence and the time
each step took.

Only what passes the gate on the held-out images (mean and 5th-percentile mask IoU vs fp32) is
a candidate. Among candidates, a target is ranked by what was honestly measured for it:

- where this host's latency stands for the target's devices (``Target.host_latency_stands_for_devices``:
  ONNX Runtime on a laptop or server CPU), the fastest ships (encoder p50 + decoder p50, the wait
  for the first mask on a new image); latencies within :data:`LATENCY_TIE` of each other are run-to-run
  noise, a tie the smaller file wins;
- where it does not (phones, the Neural Engine, Core ML run by our NumPy executor), host latency
  says nothing about the device: the artifact whose compute precision the devices run fastest ships
  (``Target.device_precisions``: int8 kernels on NPUs, the Neural Engine and XNNPACK on Arm), then
  the smallest file; host latency only breaks a tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sam.quantize.studies.mixed import Budget

from edge_sam.targets.core.registry import get_target
from edge_sam.targets.core.target import Target
from edge_sam.targets.deploy.ladder import Ladder

# Two latencies closer than this (relative to the faster) are a tie: between two default deploy runs
# on one 2-core host, the same float artifact's encoder + decoder p50 moved by up to 5% (docs/deploy.md).
LATENCY_TIE = 0.10


@dataclass(frozen=True)
class StepRecord:
    """One step of the run as the summary lists it."""

    name: str
    outcome: str
    seconds: float
    peak_rss_gb: float | None = None  # the run's resident-set high-water mark when the step ended


@dataclass(frozen=True)
class Choice:
    """The artifact to ship for one target (``row`` is its report row), or None and why not;
    ``rule`` is the ranking applied to that target."""

    target: str
    row: dict[str, Any] | None
    why: str
    rule: str = ""

    @property
    def artifact(self) -> str | None:
        return Path(self.row["artifact_dir"]).name if self.row else None


def latency_s(row: dict[str, Any]) -> float:
    """Encoder p50 + decoder p50: what a user waits for the first mask on a new image."""
    return (row.get("encoder_p50_s") or 0.0) + (row.get("decoder_p50_s") or 0.0)


def compute_precision(row: dict[str, Any], target: Target) -> str:
    """What the artifact computes in on the device: int8 for static and dynamic INT8; weights
    compressed alone are decompressed and computed in the devices' preferred float precision."""
    if row.get("precision") == "int8" and row.get("scheme") == "weight-only":
        return next(p for p in target.device_precisions if p != "int8")
    return row.get("precision") or "fp32"


def ranking_rule(target: Target) -> str:
    if target.host_latency_stands_for_devices:
        return (f"fastest on this host (its CPU stands for {target.name}'s devices); latencies within "
                f"{LATENCY_TIE:.0%} are a tie, the smaller file wins")
    return (f"host latency does not stand for {target.name}'s devices: the precision they run fastest "
            f"({' > '.join(target.device_precisions)}), then the smallest file; host latency only breaks a tie")


def _rank(rows: list[dict[str, Any]], target: Target) -> list[dict[str, Any]]:
    """Best first, by the target's rule."""
    if not target.host_latency_stands_for_devices:
        return sorted(rows, key=lambda r: _device_rank(r, target))
    ranked = sorted(rows, key=latency_s)
    # Every row within the tie band of the fastest competes on size.
    fastest = latency_s(ranked[0]) if ranked else 0.0
    tied = [r for r in ranked if latency_s(r) <= fastest * (1 + LATENCY_TIE)]
    tied.sort(key=lambda r: (r.get("bytes") or 0, latency_s(r)))
    return tied + [r for r in ranked if r not in tied]


def _device_rank(row: dict[str, Any], target: Target) -> tuple[int, int, float]:
    """(how early the devices' order names its compute precision, size, host latency)."""
    precision, order = compute_precision(row, target), target.device_precisions
    return (order.index(precision) if precision in order else len(order), row.get("bytes") or 0, latency_s(row))


def choose(rows: list[dict[str, Any]], targets: tuple[str, ...], gate: Budget) -> list[Choice]:
    """One choice per target, from the report's artifact rows."""
    choices = []
    for name in targets:
        target = get_target(name)
        rule = ranking_rule(target)
        candidates = [row for row in rows if row.get("target") == name]
        passing = _rank([row for row in candidates if gate.met_row(row)], target)
        if passing:
            best = passing[0]
            why = f"best of {len(passing)} passing ({_name(best)}: {_evidence(best, target)}"
            if len(passing) > 1:
                why += f"; next {_name(passing[1])}: {_evidence(passing[1], target)}"
            why += f"), mask IoU {best['mask_iou_mean']:.4f} / p5 {best['mask_iou_p5']:.4f}"
            choices.append(Choice(name, best, why, rule))
        elif candidates:
            best = max(candidates, key=gate.margin_row)
            choices.append(Choice(name, None, f"none holds {gate.describe()}: closest is {_name(best)} at mask IoU "
                                              f"{best.get('mask_iou_mean') or 0.0:.4f} / p5 {best.get('mask_iou_p5') or 0.0:.4f}",
                                  rule))
        else:
            choices.append(Choice(name, None, "no artifact was built (see Steps)", rule))
    return choices


def _evidence(row: dict[str, Any], target: Target) -> str:
    size = f"{(row.get('bytes') or 0) / 1e6:.1f} MB"
    if target.host_latency_stands_for_devices:
        return f"{latency_s(row) * 1e3:.0f} ms, {size}"
    return f"{compute_precision(row, target)}, {size}"


def _name(row: dict[str, Any]) -> str:
    return Path(row["artifact_dir"]).name


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def ship_table(choices: list[Choice]) -> str:
    lines = ["| target | ship | mask IoU mean | p5 | encoder p50 s | decoder p50 ms | size MB | why |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for choice in choices:
        row = choice.row or {}
        lines.append(
            f"| {choice.target} | {choice.artifact or 'nothing'} | {_cell(row.get('mask_iou_mean'), '.4f')} | "
            f"{_cell(row.get('mask_iou_p5'), '.4f')} | {_cell(row.get('encoder_p50_s'), '.3f')} | "
            f"{_cell(_ms(row.get('decoder_p50_s')), '.1f')} | {_cell(_mb(row.get('bytes')), '.1f')} | {choice.why} |"
        )
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _mb(size: int | None) -> float | None:
    return None if not size else size / 1e6


def artifact_table(rows: list[dict[str, Any]], outcomes: dict[str, str], gate: Budget) -> str:
    lines = ["| artifact | this run | backend | recipe | mask IoU mean | mask IoU p5 | encoder p50 s | decoder p50 ms | "
             "size MB | gate |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        name = _name(row)
        lines.append(
            f"| {name} | {outcomes.get(name, '')} | {row.get('backend') or '-'} | {row.get('recipe') or '-'} | "
            f"{_cell(row.get('mask_iou_mean'), '.4f')} | "
            f"{_cell(row.get('mask_iou_p5'), '.4f')} | {_cell(row.get('encoder_p50_s'), '.3f')} | "
            f"{_cell(_ms(row.get('decoder_p50_s')), '.1f')} | {_cell(_mb(row.get('bytes')), '.1f')} | "
            f"{'pass' if gate.met_row(row) else 'FAIL'} |"
        )
    return "\n".join(lines)


def ladder_lines(ladders: dict[str, Ladder], rows: list[dict[str, Any]]) -> list[str]:
    """Per target: every rung tried with its search-image numbers, the verdict, and what the INT8
    candidate costs against the target's fp32 artifact on the held-out images."""
    by_name = {_name(row): row for row in rows}
    lines = ["| target | rung | artifact | search: mask IoU mean | p5 | result |", "| --- | --- | --- | ---: | ---: | --- |"]
    for target, ladder in ladders.items():
        for attempt in ladder.tries:
            search = attempt.search or {}
            result = ("passes" if attempt.passed else "misses" if attempt.measured
                      else attempt.outcome if attempt.outcome != "failed: no recipe" else f"no recipe: {attempt.detail}")
            lines.append(f"| {target} | {attempt.rung.name} | {attempt.artifact or '-'} | "
                         f"{_cell(search.get('mask_iou_mean'), '.4f')} | {_cell(search.get('mask_iou_p5'), '.4f')} | {result} |")
    lines.append("")
    for target, ladder in ladders.items():
        line = f"- {target}: {ladder.verdict()}"
        candidate = ladder.candidate
        row, fp32 = by_name.get(candidate.artifact) if candidate else None, by_name.get(f"{target}-fp32")
        if row and fp32 and latency_s(row) and row.get("bytes") and fp32.get("bytes"):
            line += (f"; on the held-out images {candidate.artifact} runs in {latency_s(row) / latency_s(fp32):.2f}x "
                     f"the time of {target}-fp32 on this host, at {row['bytes'] / fp32['bytes']:.2f}x its size")
        lines.append(line + ".")
    return lines


def render_summary(
    *,
    checkpoint: str,
    img_size: int,
    gate: Budget,
    images: dict[str, Any],
    prompts: int,
    reference: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    choices: list[Choice],
    outcomes: dict[str, str],
    ladders: dict[str, Ladder],
    skipped: tuple[str, ...],
    steps: list[StepRecord],
    machine: str,
    usage: dict[str, float],
) -> str:
    """summary.md: what to ship and by which rule, the INT8 ladders, every artifact's numbers,
    what was skipped, how long each step took."""
    lines = [
        "# edge-sam deploy",
        "",
        f"Checkpoint `{checkpoint}` at {img_size} px. Gate: {gate.describe()}, measured on "
        f"{len(images['held_out'])} held-out images from `{images['folder']}` ({prompts} prompts per artifact) that no "
        f"artifact was calibrated or chosen on. INT8 artifacts calibrated on {len(images['calibration'])} other images; "
        f"each target's INT8 form chosen on {len(images['search'])} more (the search images; all three sets are copied "
        f"under `images/`). Latencies: this machine ({machine}), every runner in one process.",
        "",
        "## What to ship",
        "",
        ship_table(choices),
        "",
        "Rule per target:",
        "",
        *[f"- {choice.target}: {choice.rule}" for choice in choices],
    ]
    if ladders:
        lines += ["", "## INT8 ladder", "",
                  "Each target's INT8 forms in order, each exported and run on its runtime over the search images until "
                  "one holds the gate with a margin (the budget in each step line); that one (or, when none does, the "
                  "closest) is measured on the held-out images with the rest.", ""]
        lines += ladder_lines(ladders, rows)
    lines += ["", "## Every artifact on the held-out images", "", artifact_table(rows, outcomes, gate)]
    if reference:
        lines += ["", f"fp32 PyTorch reference: encoder p50 {_cell(reference.get('encoder_p50_s'), '.3f')} s, "
                      f"decoder p50 {_cell(_ms(reference.get('decoder_p50_s')), '.1f')} ms."]
    failed = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("failed")}
    if failed:
        lines += ["", "## Failed", ""] + [f"- {name}: {outcome}" for name, outcome in failed.items()]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {line}" for line in skipped]
    total = sum(step.seconds for step in steps)
    lines += ["", "## Steps", "", "| step | result | seconds | peak RSS GB so far |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {step.name} | {step.outcome} | {step.seconds:.1f} | {_cell(step.peak_rss_gb, '.2f')} |" for step in steps]
    lines += [f"| total | | {total:.1f} | |", "",
              f"CPU time {usage['cpu_s']:.0f} s over {total:.0f} s of wall time; peak resident set "
              f"{usage['peak_rss_gb']:.2f} GB.", "",
              "Drift report: [report/report.html](report/report.html) (the table, drift vs latency, worst prompts, "
              "per-layer drift); every number in `report/report.json`."]
    return "\n".join(lines) + "\n"
