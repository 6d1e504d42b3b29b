"""``deploy()``: checkpoint -> every installed target's artifacts -> validated -> what to ship.

The steps, each timed and shown on one overall progress bar with a line when it ends:

1. check the inputs (targets and toolchains, the image split, the output folder, the
   checkpoint) -- every bad input is one error here, before anything is written;
2. copy the calibration and held-out images into ``OUT/images``;
3. per (target, precision): reuse ``OUT/<target>-<precision>`` when its manifest still matches
   (weights, recipe, calibration set, toolchain versions, file hashes), else export it into a
   staged folder that replaces the old one only when complete (Ctrl-C leaves no half-written
   artifact); mobile artifacts get their app bundle (:mod:`.bundle`) in the same folder;
4. validate every artifact on the held-out images against fp32 PyTorch and write ``OUT/report``
   (:func:`edge_sam.targets.validate`);
5. choose what to ship per target (:mod:`.summary`) and write ``OUT/summary.md`` and
   ``OUT/deploy.json``.
"""

from __future__ import annotations

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

from edge_sam.checkpoint import load_model
from edge_sam.data.codec import write_bytes_atomic
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.recipes import QuantRecipe
from edge_sam.staging import staged_dir

from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.core.target import state_dict_sha256
from edge_sam.targets.pipeline.bundle import write_bundle
from edge_sam.targets.pipeline.images import bundled_images, split_images, stage_split
from edge_sam.targets.pipeline.plan import Job, int8_recipe, plan_jobs, stale_reason
from edge_sam.targets.pipeline.summary import Choice, StepRecord, choose, render_summary
from edge_sam.targets.validation.validate import validate

DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_GATE = 0.98
DEFAULT_CALIBRATION_IMAGES = 4
DEFAULT_HELD_OUT_IMAGES = 6
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
        self.total, self.echo = total, echo
        self.records: list[StepRecord] = []
        self.bar = tqdm(total=total, desc="deploy", unit="step", position=0,
                        bar_format="{desc} {n_fmt}/{total_fmt} steps [{elapsed}]")

    def record(self, name: str, outcome: str, seconds: float) -> None:
        self.records.append(StepRecord(name, outcome, seconds))
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
    min_mask_iou: float = DEFAULT_GATE,
    force: bool = False,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    held_out_images: int = DEFAULT_HELD_OUT_IMAGES,
    measure_memory: bool = False,
    layers: bool = True,
    echo: Callable[[str], None] = _echo,
) -> DeployResult:
    """Export, validate and choose, as in the module docstring; returns what to ship per target.

    ``targets=None``: every registered target whose toolchain is installed (the others are
    skipped with one line each); named targets must be installed. ``images``: a folder split
    into ``calibration_images`` and ``held_out_images`` (default: the bundled images).
    ``force`` rebuilds artifacts that could be reused. ``measure_memory`` adds the peak-RSS
    probes (a subprocess per artifact: off by default, it would double the validation time).
    """
    started = time.perf_counter()
    out = Path(out)
    if not 0.0 < min_mask_iou <= 1.0:
        raise EdgeSamError(f"--min-mask-iou must be in (0, 1], got {min_mask_iou}")
    quant_recipe = int8_recipe(recipe, checkpoint)  # an unknown recipe or unreadable file: one error here
    plan = plan_jobs(list(targets) if targets is not None else None, list(precisions), quant_recipe)
    split = split_images(images if images is not None else bundled_images(), calibration_images, held_out_images)
    check_out_dir(out)
    model = load_model(checkpoint)
    for line in plan.skipped:
        echo(f"skipped {line}")

    steps = _Steps(len(plan.jobs) + 4, echo)
    try:
        steps.record("check inputs, load checkpoint", f"{len(plan.jobs)} artifacts planned, "
                     f"{len(plan.skipped)} skipped", time.perf_counter() - started)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / RECORD_FILE).is_file():
            _write_json(out / RECORD_FILE, {"written_by": "edge-sam deploy"})
        with steps.step("stage images") as result:
            calibration, held_out = stage_split(split, out / IMAGES_DIR)
            result["outcome"] = f"{len(calibration)} calibration, {len(held_out)} held out (never the same)"
        weights = state_dict_sha256(model)
        img_size = model.image_encoder.img_size
        outcomes: dict[str, str] = {}
        for job in plan.jobs:
            with steps.step(f"{job.name}") as result:
                result["outcome"] = _build(job, out, model, checkpoint, quant_recipe, weights, img_size, calibration, force)
                outcomes[job.name] = result["outcome"]
        artifacts = [out / job.name for job in plan.jobs if not outcomes[job.name].startswith("failed")]
        report = None
        with steps.step("validate on held-out images") as result:
            if artifacts:
                report = validate(artifacts, checkpoint=checkpoint, images=held_out.path, report_dir=out / REPORT_DIR,
                                  measure_memory=measure_memory, layers=layers)
                result["outcome"] = f"{len(artifacts)} artifacts x {report.n_prompts} prompts -> {REPORT_DIR}/report.html"
            else:
                result["outcome"] = "nothing to validate: every export failed"
        data = report.to_dict() if report else {"rows": [None], "n_prompts": 0, "machine": {}}
        reference, rows = data["rows"][0], data["rows"][1:]
        with steps.step("choose what to ship") as result:
            choices = choose(rows, plan.targets, min_mask_iou)
            result["outcome"] = ", ".join(f"{c.target}: {c.artifact or 'nothing passes'}" for c in choices)
        machine = data["machine"]
        images_used = {"folder": str(split.folder), "calibration": [p.name for p in split.calibration],
                       "held_out": [p.name for p in split.held_out]}
        summary = render_summary(
            checkpoint=str(checkpoint), img_size=img_size, gate=min_mask_iou, images=images_used,
            prompts=data["n_prompts"], reference=reference, rows=rows, choices=choices, outcomes=outcomes,
            skipped=plan.skipped, steps=steps.records,
            machine=f"{machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs",
        )
        write_bytes_atomic(out / SUMMARY_FILE, summary.encode())
        _write_json(out / RECORD_FILE, {
            "written_by": "edge-sam deploy",
            "checkpoint": str(checkpoint),
            "gate": {"mask_iou_mean_min": min_mask_iou},
            "int8_recipe": quant_recipe.name if any(job.precision == "int8" for job in plan.jobs) else None,
            "images": images_used,
            "artifacts": outcomes,
            "skipped": list(plan.skipped),
            "ship": {c.target: {"artifact": c.artifact, "why": c.why} for c in choices},
            "steps": [{"name": s.name, "outcome": s.outcome, "seconds": round(s.seconds, 3)} for s in steps.records],
        })
    finally:
        steps.close()
    return DeployResult(out, choices, outcomes, steps.records)


def _build(job: Job, out: Path, model, checkpoint, recipe: QuantRecipe, weights: str, img_size: int,
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
            target.export(model, job.precision, recipe if job.precision == "int8" else None, tmp,
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
