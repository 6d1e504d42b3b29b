"""``deploy()``: checkpoint -> every installed target's artifacts -> validated -> what to ship.

The steps, each timed and shown on one overall progress bar with a line when it ends:

1. check the inputs (targets and toolchains, the INT8 asked for, the image split, the output
   folder, the checkpoint) -- every bad input is one error here, before anything is written;
2. copy the calibration, search and held-out images into ``OUT/images``;
3. per (target, fp32 / fp16): reuse ``OUT/<target>-<precision>`` when its manifest still matches
   (weights, recipe, calibration set, toolchain versions, file hashes), else export it into a
   staged folder that replaces the old one only when complete (Ctrl-C leaves no half-written
   artifact); mobile artifacts get their app bundle (:mod:`.bundle`) in the same folder;
4. per target, climb its INT8 ladder (:mod:`.ladder`): export each rung the same way and run it
   on the search images, until one holds the gate with a margin;
5. validate every float artifact and each target's INT8 candidate on the held-out images against
   fp32 PyTorch and write ``OUT/report`` (:func:`edge_sam.targets.validate`);
6. choose what to ship per target (:mod:`.summary`) and write ``OUT/summary.md`` and
   ``OUT/deploy.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge_sam.checkpoint import load_model, state_dict_sha256
from edge_sam.data.codec import write_bytes_atomic
from edge_sam.errors import EdgeSamError
from edge_sam.machine import machine_info
from edge_sam.memory import peak_rss_mb, release_freed_memory
from edge_sam.quantize.ladder import check_int8_mode
from edge_sam.quantize.studies.mixed import Budget
from edge_sam.quantize.recipes import QuantRecipe
from edge_sam.staging import staged_dir

from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.deploy.bundle import write_bundle
from edge_sam.targets.deploy.images import bundled_images, split_images, stage_split
from edge_sam.targets.deploy.ladder import SEARCH_MARGIN, Ladder, LadderContext, climb, search_budget
from edge_sam.targets.deploy.plan import Job, int8_recipe, plan_jobs, stale_reason
from edge_sam.targets.deploy.summary import Choice, StepRecord, choose, render_summary
from edge_sam.targets.validation.report import write_report
from edge_sam.targets.validation.validate import validate

DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_GATE = 0.98
DEFAULT_GATE_P5 = 0.95
DEFAULT_CALIBRATION_IMAGES = 4
DEFAULT_SEARCH_IMAGES = 8
DEFAULT_HELD_OUT_IMAGES = 8
RECORD_FILE = "deploy.json"  # also marks a folder as deploy's own: it may then update it
SUMMARY_FILE = "summary.md"
REPORT_DIR = "report"
IMAGES_DIR = "images"
LOGS_DIR = "logs"


@dataclass
class DeployResult:
    out: Path
    choices: list[Choice]
    outcomes: dict[str, str]  # artifact folder name -> "built", "reused: ...", "failed: ..."
    steps: list[StepRecord] = field(default_factory=list)
    ladders: dict[str, Ladder] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every target that had something to build ships an artifact that passes the gate."""
        return all(choice.row is not None for choice in self.choices)

    @property
    def summary_path(self) -> Path:
        return self.out / SUMMARY_FILE

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_DIR


def _echo(line: str) -> None:
    """A line above the progress bar, flushed: a log piped to a file shows each step as it ends."""
    tqdm.write(line)
    sys.stdout.flush()


class _Steps:
    """One overall progress bar; a line per finished step with its outcome and seconds."""

    def __init__(self, total: int, echo: Callable[[str], None]) -> None:
        """``total`` is the steps known up front; a ladder that climbs past a rung adds its steps."""
        self.total, self.echo = total, echo
        self.records: list[StepRecord] = []
        self.bar = tqdm(total=total, desc="deploy", unit="step", position=0,
                        bar_format="{desc} {n_fmt}/{total_fmt} steps [{elapsed}]")

    def record(self, name: str, outcome: str, seconds: float) -> None:
        release_freed_memory()  # what a step freed goes back to the OS before the next one allocates
        self.records.append(StepRecord(name, outcome, seconds, round(peak_rss_mb() / 1024, 2)))
        if len(self.records) > self.total:  # a step beyond the plan (the next rung of a ladder)
            self.total = self.bar.total = len(self.records)
        self.bar.update(1)
        self.echo(f"[{len(self.records)}/{self.total}] {name}: {outcome} ({seconds:.1f} s)")

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        """Time the body; it sets ``result["outcome"]`` (default "done")."""
        self.bar.set_description(f"deploy: {name}")
        result = {"outcome": "done"}
        start = time.perf_counter()
        yield result
        self.record(name, result["outcome"], time.perf_counter() - start)

    def close(self) -> None:
        self.bar.set_description("deploy")
        self.bar.close()


def check_out_dir(out: Path) -> None:
    """``OUT`` may be new, empty, or a folder an earlier deploy wrote; anything else is refused."""
    if out.exists() and not out.is_dir():
        raise EdgeSamError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
        raise EdgeSamError(f"{out} holds files edge-sam deploy did not write (no {RECORD_FILE}); choose a new or empty folder")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def deploy(
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike = "reference",
    images: str | os.PathLike | None = None,
    targets: Sequence[str] | None = None,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    recipe: str | None = None,
    int8: str = "any",
    min_mask_iou: float = DEFAULT_GATE,
    min_mask_iou_p5: float = DEFAULT_GATE_P5,
    search_margin: tuple[float, float] = SEARCH_MARGIN,
    force: bool = False,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    search_images: int = DEFAULT_SEARCH_IMAGES,
    held_out_images: int = DEFAULT_HELD_OUT_IMAGES,
    measure_memory: bool = False,
    layers: bool = True,
    echo: Callable[[str], None] = _echo,
) -> DeployResult:
    """Export, climb the INT8 ladders, validate and choose, as in the module docstring; returns
    what to ship per target.

    ``targets=None``: every registered target whose toolchain is installed (the others are
    skipped with one line each); named targets must be installed. ``int8``: ``any`` (every rung a
    target declares), ``full-integer`` (the rungs an NPU or the Neural Engine runs) or one rung's
    name; ``recipe`` fixes the one int8 recipe instead. The gate is mean and 5th-percentile mask
    IoU vs fp32; a rung must hold it plus ``search_margin`` (mean, p5) on the search images.
    ``images``: a folder split into calibration, search and held-out images (default: the bundled
    images). ``force`` rebuilds artifacts that could be reused. ``measure_memory``
    adds the peak-RSS probes (a subprocess per artifact: off by default, it would double the
    validation time).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    machine = machine_info()  # before this run loads the machine: the load average says what else ran
    out = Path(out)
    gate = Budget(min_mask_iou, min_mask_iou_p5)  # one error for a gate outside (0, 1]
    if len(search_margin) != 2 or not all(0.0 <= margin < 1.0 for margin in search_margin):
        raise EdgeSamError(f"--search-margin is two numbers in [0, 1) (mean, p5), got {','.join(map(str, search_margin))}")
    check_int8_mode(int8)
    fixed_recipe = int8_recipe(recipe, checkpoint)  # an unknown recipe or unreadable file: one error here
    plan = plan_jobs(list(targets) if targets is not None else None, list(precisions), fixed_recipe, int8)
    split = split_images(images if images is not None else bundled_images(), calibration_images, search_images,
                         held_out_images)
    check_out_dir(out)
    model = load_model(checkpoint)
    for line in plan.skipped:
        echo(f"skipped {line}")

    steps = _Steps(len(plan.jobs) + len(plan.ladders) + 4, echo)
    try:
        steps.record("check inputs, load checkpoint", f"{len(plan.jobs)} float artifacts and {len(plan.ladders)} INT8 "
                     f"ladders planned, {len(plan.skipped)} skipped", time.perf_counter() - started)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / RECORD_FILE).is_file():
            _write_json(out / RECORD_FILE, {"written_by": "edge-sam deploy"})
        with steps.step("stage images") as result:
            calibration, search, held_out = stage_split(split, out / IMAGES_DIR)
            result["outcome"] = (f"{len(calibration)} calibration, {len(search)} search, {len(held_out)} held out "
                                 "(never the same)")
        weights = state_dict_sha256(model)
        img_size = model.image_encoder.img_size
        outcomes: dict[str, str] = {}

        def build(job: Job, job_recipe: QuantRecipe | None) -> str:
            outcomes[job.name] = _build(job, out, model, checkpoint, job_recipe, weights, img_size, calibration, force)
            return outcomes[job.name]

        for job in plan.jobs:
            with steps.step(job.name) as result:
                result["outcome"] = build(job, None)

        def measure(artifact: Path) -> dict[str, Any]:
            report = validate([artifact], checkpoint=checkpoint, images=search.path, measure_memory=False, layers=False)
            return report.rows()[1].summary()

        context = LadderContext(out, model, weights, calibration, search, search_budget(gate, search_margin), build,
                                measure, steps.step, fixed_recipe)
        ladders = {target: climb(target, rungs, context) for target, rungs in plan.ladders.items()}
        candidates = [ladder.candidate.artifact for ladder in ladders.values() if ladder.candidate]
        artifacts = [out / job.name for job in plan.jobs if not outcomes[job.name].startswith("failed")]
        artifacts += [out / name for name in candidates]
        report = None
        with steps.step("validate on held-out images") as result:
            if artifacts:
                report = validate(artifacts, checkpoint=checkpoint, images=held_out.path, measure_memory=measure_memory,
                                  layers=layers)
                result["outcome"] = f"{len(artifacts)} artifacts x {report.n_prompts} prompts -> {REPORT_DIR}/report.html"
            else:
                result["outcome"] = "nothing to validate: every export failed"
        data = report.to_dict() if report else {"rows": [None], "n_prompts": 0, "machine": {}}
        reference, rows = data["rows"][0], data["rows"][1:]
        with steps.step("choose what to ship") as result:
            choices = choose(rows, plan.targets, gate)
            result["outcome"] = ", ".join(f"{c.target}: {c.artifact or 'nothing passes'}" for c in choices)
        if report is not None:  # written once the choice is made: it marks what ships and draws the gate
            write_report(report, out / REPORT_DIR, gate=gate.min_mask_iou,
                         shipped=[c.artifact for c in choices if c.artifact])
        images_used = {"folder": str(split.folder), **{name: [p.name for p in paths] for name, paths in split.sets()}}
        summary = render_summary(
            checkpoint=str(checkpoint), img_size=img_size, gate=gate, images=images_used,
            prompts=data["n_prompts"], reference=reference, rows=rows, choices=choices, outcomes=outcomes,
            ladders=ladders, skipped=plan.skipped, steps=steps.records, usage=_usage(cpu_started),
            machine=f"{machine['cpu_model']} ({machine['cpu_flags']}), {machine['cpu_count']} CPUs, load average "
                    f"{machine['load_average']} when deploy started",
        )
        write_bytes_atomic(out / SUMMARY_FILE, summary.encode())
        _write_json(out / RECORD_FILE, {
            "written_by": "edge-sam deploy",
            "checkpoint": str(checkpoint),
            "img_size": img_size,
            "gate": {"mask_iou_mean_min": gate.min_mask_iou, "mask_iou_p5_min": gate.min_mask_iou_p5},
            "search_budget": {"mask_iou_mean_min": context.budget.min_mask_iou,
                              "mask_iou_p5_min": context.budget.min_mask_iou_p5},
            "int8": int8 if fixed_recipe is None else f"recipe {fixed_recipe.name}",
            "images": images_used,
            "artifacts": outcomes,
            "ladders": {target: [t.to_dict() for t in ladder.tries] for target, ladder in ladders.items()},
            "skipped": list(plan.skipped),
            "ship": {c.target: {"artifact": c.artifact, "why": c.why, "rule": c.rule} for c in choices},
            "steps": [{**dataclasses.asdict(s), "seconds": round(s.seconds, 3)} for s in steps.records],
            "seconds": round(sum(s.seconds for s in steps.records), 1),
            **_usage(cpu_started),
            "machine": machine,
        })
    finally:
        steps.close()
    return DeployResult(out, choices, outcomes, steps.records, ladders)


def _usage(cpu_started: float) -> dict[str, float]:
    """This run's CPU seconds (all its threads) and peak resident set so far, for the summary."""
    return {"cpu_s": round(time.process_time() - cpu_started, 1), "peak_rss_gb": round(peak_rss_mb() / 1024, 2)}


def _build(job: Job, out: Path, model, checkpoint, recipe: QuantRecipe | None, weights: str, img_size: int,
           calibration, force: bool) -> str:
    """Reuse or export one artifact; returns the outcome line. An export that fails is recorded
    (its traceback in ``OUT/logs``) and the other artifacts still get built."""
    final = out / job.name
    reason = "rebuilt: --force" if force and final.exists() else stale_reason(
        final, job, recipe, weights, img_size, calibration)
    if reason is None:
        write_bundle(final, read_manifest(final))  # refreshes a bundle an older edge_sam wrote
        return "reused (manifest matches)"
    target = get_target(job.target)
    try:
        with staged_dir(final, overwrite=True) as tmp:
            target.export(model, job.precision, recipe, tmp,
                          calibration=calibration, checkpoint=checkpoint, calibration_images=len(calibration))
            write_bundle(tmp, read_manifest(tmp))
    except EdgeSamError as exc:
        return f"failed: {exc}"
    except Exception as exc:  # a converter crash: keep building the others, keep the traceback
        log = out / LOGS_DIR / f"{job.name}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(traceback.format_exc())
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (traceback: {LOGS_DIR}/{log.name})"
    return "built" if reason == "new" else reason
