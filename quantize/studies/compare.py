"""PTQ vs mixed precision vs QAT vs QAT + mixed, per INT8 target, measured on each runtime.

For every target and every row, the artifact is exported as ``edge-sam export`` would
(:meth:`Target.export`, static recipes calibrated on the calibration split) and run by its own
runtime next to the fp32 PyTorch model with :func:`~edge_sam.targets.validation.drift.measure_drift`
(what ``edge-sam validate`` runs), on:

- the held-out split of ``images`` (for a dataset also GT mIoU, box and 1-click, per row);
- with ``with_photo_crops``, 8 crops of the bundled real photo ``dogs.jpg``
  (:func:`~edge_sam.image_sources.photo_crops`): outside the synthetic domain, never
  calibrated on;
- every ``extra_held_out`` folder or dataset (none of it calibrates).

Each image set gets its own table; a row meets the budget on a set when its mean and p5 mask IoU
are at or above it (the budget the mixed recipe file was chosen for, else 0.98 / 0.95).

Rows: ``PTQ`` (the registry recipe, default static-conv-linear), ``mixed`` (a recipe file from
``edge-sam quantize mixed``), ``QAT`` (a checkpoint from ``edge-sam quantize qat`` exported with
the PTQ recipe) and ``QAT+mixed``; a row whose input is not given is left out. Mask IoU is
always against the fp32 model of ``checkpoint`` (the QAT rows included: that is the model they
stand in for). Core ML artifacts run on edge_sam's host executor (the saved ML program executed
with NumPy, fp16 between the INT8 ops), not on Apple hardware. Encoder latency is the median of
one run per held-out image with every runner loaded in one process on whatever else the CPU is
doing: a hint, not a benchmark (benchmarks/mixed_precision_latency.py times them properly).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edge_sam
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.studies.heldout import split_images
from edge_sam.quantize.layers import check_layers, quantizable_layers
from edge_sam.quantize.studies.mixed import Budget
from edge_sam.quantize.recipe_file import load_recipe_file, recipe_from_manifest
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.runner import TorchRunner, model_at_size
from edge_sam.staging import staged_dir
from edge_sam.transforms import read_image

from edge_sam.image_sources import open_source, photo_crops
from edge_sam.targets.core.registry import get_target, load_runner
from edge_sam.machine import machine_info
from edge_sam.targets.validation.drift import DriftReport, measure_drift

JSON_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
PHOTO = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"
PHOTO_CROPS = 8
PHOTO_SET = "dogs.jpg crops"
RUNS_ON = {"onnx": "onnxruntime CPU", "executorch": "ExecuTorch XNNPACK", "tflite": "LiteRT XNNPACK",
           "coreml": "Core ML program on the host executor"}


@dataclass(frozen=True)
class CompareRows:
    """What each row is made from: the PTQ recipe, a mixed recipe file, a QAT checkpoint."""

    ptq: str
    mixed: str | None = None
    qat: str | None = None

    def plans(self) -> list[tuple[str, str | None, str]]:
        """(row, checkpoint override or None, recipe) for every row whose inputs are given."""
        plans = [("PTQ", None, self.ptq)]
        if self.mixed:
            plans.append(("mixed", None, self.mixed))
        if self.qat:
            plans.append(("QAT", self.qat, self.ptq))
            if self.mixed:
                plans.append(("QAT+mixed", self.qat, self.mixed))
        return plans


@dataclass
class CompareReport:
    setup: dict[str, Any]
    reference: dict[str, Any]  # the fp32 row: size, encoder latency, GT mIoU per set
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.setup, "reference": self.reference, "rows": self.rows}

    def markdown(self) -> str:
        setup = self.setup
        budget = setup["budget"]
        calibration = setup["calibration"]
        lines = [
            f"# INT8 variants compared: {setup['checkpoint']} at {setup['img_size']} px",
            "",
            f"Calibration: the first {calibration['count']} images of {calibration['path']}. Mask IoU is against the "
            f"fp32 model; budget: mean >= {budget['min_mask_iou']}, p5 >= {budget['min_mask_iou_p5']}. "
            f"Machine: {setup['machine']['processor']}, {setup['machine']['cpu_count']} CPUs; encoder latency is the "
            "median of one run per held-out image with all runners in one process (a hint, not a benchmark).",
        ]
        for name, image_set in setup["sets"].items():
            lines += ["", f"## {name}: {image_set['count']} images of {image_set['path']}, {image_set['prompts']} prompts", ""]
            header = ["target", "row", "recipe", "float layers", "16-bit layers", "size MB", "enc p50 s", "IoU mean", "p5",
                      "worst", "emb SQNR dB", "GT box", "GT 1-click", "budget"]
            lines += ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 3 + ["---:"] * 10 + ["---"]) + " |"]
            fp32 = self.reference
            gt = fp32["gt_miou"].get(name) or {}
            lines.append("| " + " | ".join(["pytorch", "fp32", "-", "all", "-", _num(fp32["size_mb"], 1),
                                            _num(fp32["encoder_p50_s"], 3), "-", "-", "-", "-", _num(gt.get("box")),
                                            _num(gt.get("1-click")), "-"]) + " |")
            for row in self.rows:
                measured = row["sets"][name]
                gt = measured.get("gt_miou") or {}
                cells = [row["target"], row["row"], row["recipe"], str(row["float_layers"]), str(row["a16_layers"]),
                         _num(row["size_mb"], 1),
                         _num(row["encoder_p50_s"], 3), _num(measured["mask_iou_mean"]), _num(measured["mask_iou_p5"]),
                         _num(measured["mask_iou_worst"]), _num(measured["embedding_sqnr_db_mean"], 1),
                         _num(gt.get("box")), _num(gt.get("1-click")), "met" if row["budget_met"][name] else "missed"]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(report: DriftReport, index: int) -> dict[str, Any]:
    keys = ("mask_iou_mean", "mask_iou_p5", "mask_iou_worst", "embedding_sqnr_db_mean", "encoder_p50_s", "gt_miou",
            "n_prompts")
    summary = report.runners[index].summary()
    return {key: summary[key] for key in keys}


def compare(
    out_dir: str | os.PathLike,
    *,
    checkpoint: str,
    images: str | os.PathLike,
    targets: list[str],
    rows: CompareRows,
    calibration_images: int = 8,
    held_out_images: int | None = None,
    with_photo_crops: bool = False,
    extra_held_out: list[str] | None = None,
    img_size: int | None = None,
    overwrite: bool = False,
    keep_artifacts: bool = False,
    min_mask_iou: float | None = None,
    min_mask_iou_p5: float | None = None,
) -> CompareReport:
    """Export every (target, row), measure each on the held-out split of ``images``, on crops of
    dogs.jpg (``with_photo_crops``) and on every ``extra_held_out`` folder or dataset, and write
    ``compare.json`` + ``compare.md`` (and the artifacts, if kept) into ``out_dir``. Rows are held
    to the budget the mixed recipe file was chosen for (else 0.98 / 0.95), each part replaced by
    ``min_mask_iou`` / ``min_mask_iou_p5`` when given: a search may choose under a stricter
    budget than the gate the table is read against."""
    model = edge_sam.load_model(checkpoint)
    size = img_size or model.image_encoder.img_size
    model = model_at_size(model, size)
    source = open_source(images)
    calibration, held_out = split_images(source, calibration_images, held_out_images)
    sets = {"held-out": held_out}
    for extra in extra_held_out or []:
        if Path(extra).resolve() == source.path.resolve():
            raise EdgeSamError(f"{extra} is the --images folder, whose first images calibrate")
        sets[Path(extra).name] = open_source(extra)
    get_recipe(rows.ptq)
    mixed, provenance = load_recipe_file(rows.mixed) if rows.mixed else (None, {})
    if mixed is not None:
        check_layers(mixed, model)
    chosen_for = chosen_budget(provenance)
    given = {"min_mask_iou": min_mask_iou, "min_mask_iou_p5": min_mask_iou_p5}
    budget = Budget(**{**chosen_for, **{key: value for key, value in given.items() if value is not None}})
    models = {None: model}
    if rows.qat:
        models[rows.qat] = model_at_size(edge_sam.load_model(rows.qat), size)
    for target in targets:
        get_target(target).check_toolchain("export")
    with staged_dir(out_dir, overwrite) as tmp:
        plans, folders = [], []
        for target in targets:
            for row, qat, recipe in rows.plans():
                folder = tmp / "artifacts" / f"{target}-{row.lower().replace('+', '-')}"
                get_target(target).export(models[qat], "int8", recipe, folder, calibration=calibration,
                                          checkpoint=qat or checkpoint)
                plans.append((target, row))
                folders.append(str(folder))
        if with_photo_crops:
            sets[PHOTO_SET] = photo_crops(read_image(PHOTO), tmp / "photo_crops", PHOTO_CROPS)
        runners = [load_runner(folder) for folder in folders]
        reference = TorchRunner(model, size)
        reports = {name: measure_drift(reference, runners, image_set, folders, measure_memory=False)
                   for name, image_set in sets.items()}
        first = reports["held-out"]
        report_rows = []
        for index, (target, row) in enumerate(plans):
            manifest_recipe = runners[index].manifest.recipe
            recipe = recipe_from_manifest(manifest_recipe)
            measured = {name: _summary(report, index) for name, report in reports.items()}
            report_rows.append({
                "target": target, "runs_on": RUNS_ON.get(target, target), "row": row, "recipe": recipe.name,
                "float_layers": len(recipe.float_layers),
                "a16_layers": len(recipe.a16_of(quantizable_layers(model.config))),
                "size_mb": runners[index].describe()["bytes"] / 1e6, "artifact": Path(folders[index]).name,
                # QAT rows: whether the target used QAT's learned ranges or re-calibrated (the manifest's note)
                "activation_ranges": (manifest_recipe.get("qat") or {}).get("activation_ranges"),
                "encoder_p50_s": measured["held-out"]["encoder_p50_s"], "sets": measured,
                "budget_met": {name: m["mask_iou_mean"] >= budget.min_mask_iou and m["mask_iou_p5"] >= budget.min_mask_iou_p5
                               for name, m in measured.items()},
            })
        fp32 = first.reference.summary()
        report = CompareReport(
            setup={
                "checkpoint": str(checkpoint), "img_size": size, "targets": targets, "qat": rows.qat, "mixed": rows.mixed,
                "budget": {"min_mask_iou": budget.min_mask_iou, "min_mask_iou_p5": budget.min_mask_iou_p5},
                "calibration": calibration.describe(),
                "sets": {name: {**image_set.describe(), "prompts": reports[name].n_prompts,
                                **({"path": f"crops of the bundled {PHOTO.name}"} if name == PHOTO_SET else {})}
                         for name, image_set in sets.items()},
                "machine": machine_info(),
            },
            reference={"size_mb": fp32["bytes"] / 1e6, "encoder_p50_s": fp32["encoder_p50_s"],
                       "gt_miou": {name: report.reference.summary()["gt_miou"] for name, report in reports.items()}},
            rows=report_rows,
        )
        (tmp / JSON_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / MARKDOWN_NAME).write_text(report.markdown())
        if with_photo_crops:
            shutil.rmtree(tmp / "photo_crops")
        if not keep_artifacts:
            shutil.rmtree(tmp / "artifacts")
    return report


def chosen_budget(provenance: dict[str, Any]) -> dict[str, float]:
    """The budget a recipe file was chosen for (its provenance), else none (the defaults apply)."""
    budget = provenance.get("budget") or {}
    try:
        return {"min_mask_iou": float(budget["min_mask_iou"]), "min_mask_iou_p5": float(budget["min_mask_iou_p5"])}
    except (KeyError, TypeError, ValueError):
        return {}

