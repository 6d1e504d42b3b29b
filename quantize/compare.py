"""PTQ vs mixed precision vs QAT vs QAT + mixed, per INT8 target, measured on each runtime.

For every target and every row, the artifact is exported as ``edge-sam export`` would
(:meth:`Target.export`, static recipes calibrated on the calibration split) and run by its own
runtime next to the fp32 PyTorch model with :func:`~edge_sam.targets.validation.drift.measure_drift`
(what ``edge-sam validate`` runs), on:

- the held-out split of ``images`` (for a dataset also GT mIoU, box and 1-click, per row);
- with ``photo_crops``, crops of the bundled real photo ``dogs.jpg``: outside the synthetic
  domain, never calibrated on.

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
from edge_sam.quantize.heldout import split_images
from edge_sam.quantize.layers import check_layers
from edge_sam.quantize.mixed import Budget
from edge_sam.quantize.recipe_file import read_recipe_file
from edge_sam.quantize.recipes import get_recipe
from edge_sam.runner import TorchRunner, model_at_size
from edge_sam.staging import staged_dir
from edge_sam.transforms import read_image

from edge_sam.targets.core.calibration import open_source, photo_crops
from edge_sam.targets.core.registry import get_target, load_runner
from edge_sam.targets.validation.drift import DriftReport, machine_info, measure_drift

JSON_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
PHOTO = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"
PHOTO_CROPS = 8
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
    reference: dict[str, Any]  # the fp32 row: GT mIoU, encoder latency
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.setup, "reference": self.reference, "rows": self.rows}

    def markdown(self) -> str:
        setup = self.setup
        photo = setup.get("photo") is not None
        budget = setup["budget"]
        lines = [
            f"# INT8 variants compared: {setup['checkpoint']} at {setup['img_size']} px",
            "",
            f"Calibration: the first {setup['calibration']['count']} images of {setup['calibration']['path']}; "
            f"held out: the next {setup['held_out']['count']} ({setup['held_out_prompts']} prompts)"
            + (f"; real photo: {setup['photo']['count']} crops of dogs.jpg ({setup['photo_prompts']} prompts)" if photo else "")
            + ". Mask IoU is against the fp32 model. Budget: mean >= "
            f"{budget['min_mask_iou']}, p5 >= {budget['min_mask_iou_p5']}.",
            f"Machine: {setup['machine']['processor']}, {setup['machine']['cpu_count']} CPUs; encoder latency is one run "
            "per image with all runners in one process (a hint, not a benchmark).",
            "",
        ]
        header = ["target", "row", "recipe", "float layers", "size MB", "enc p50 s", "IoU mean", "p5", "worst"]
        if photo:
            header += ["photo IoU mean", "photo p5", "photo worst"]
        header += ["GT box", "GT 1-click", "budget"]
        lines += ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + " |"]
        fp32 = self.reference
        reference_cells = ["pytorch", "fp32", "-", "all", _num(fp32["size_mb"], 1), _num(fp32["encoder_p50_s"], 3),
                           "1", "1", "1"] + (["1", "1", "1"] if photo else []) + [
            _num(fp32["gt_miou"].get("box")), _num(fp32["gt_miou"].get("1-click")), "-"]
        lines.append("| " + " | ".join(reference_cells) + " |")
        for row in self.rows:
            synth, crops = row["synthetic"], row.get("photo")
            cells = [row["target"], row["row"], row["recipe"], str(row["float_layers"]), _num(row["size_mb"], 1),
                     _num(synth["encoder_p50_s"], 3), _num(synth["mask_iou_mean"]), _num(synth["mask_iou_p5"]),
                     _num(synth["mask_iou_worst"])]
            if photo:
                cells += [_num(crops["mask_iou_mean"]), _num(crops["mask_iou_p5"]), _num(crops["mask_iou_worst"])]
            gt = synth.get("gt_miou") or {}
            cells += [_num(gt.get("box")), _num(gt.get("1-click")), "met" if row["budget_met"] else "missed"]
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
    img_size: int | None = None,
    overwrite: bool = False,
    keep_artifacts: bool = False,
) -> CompareReport:
    """Export every (target, row), measure each on the held-out images (and photo crops), and
    write ``compare.json`` + ``compare.md`` (and the artifacts, if kept) into ``out_dir``."""
    model = edge_sam.load_model(checkpoint)
    size = img_size or model.image_encoder.img_size
    model = model_at_size(model, size)
    calibration, held_out = split_images(open_source(images), calibration_images, held_out_images)
    ptq = get_recipe(rows.ptq)
    mixed = read_recipe_file(rows.mixed) if rows.mixed else None
    if mixed is not None:
        check_layers(mixed, model)
    budget = Budget(**(mixed_budget(rows.mixed) if rows.mixed else {}))
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
                get_target(target).export(models[qat], "int8", recipe, folder, calibration=calibration, checkpoint=qat or checkpoint)
                plans.append((target, row, recipe))
                folders.append(str(folder))
        runners = [load_runner(folder) for folder in folders]
        reference = TorchRunner(model, size)
        synthetic = measure_drift(reference, runners, held_out, folders, measure_memory=False)
        crops = photo_crops(read_image(PHOTO), tmp / "photo_crops", PHOTO_CROPS) if with_photo_crops else None
        photo = measure_drift(reference, runners, crops, measure_memory=False) if crops else None
        report_rows = []
        for index, (target, row, recipe) in enumerate(plans):
            manifest_recipe = runners[index].manifest.recipe
            entry = {
                "target": target, "runs_on": RUNS_ON.get(target, target), "row": row,
                "recipe": manifest_recipe["name"], "float_layers": len([1 for v in manifest_recipe["layers"].values() if v == "float"]),
                "size_mb": runners[index].describe()["bytes"] / 1e6, "artifact": Path(folders[index]).name,
                "synthetic": _summary(synthetic, index),
            }
            if photo is not None:
                entry["photo"] = _summary(photo, index)
            entry["budget_met"] = all(
                entry[key]["mask_iou_mean"] >= budget.min_mask_iou and entry[key]["mask_iou_p5"] >= budget.min_mask_iou_p5
                for key in ("synthetic", "photo") if key in entry
            )
            report_rows.append(entry)
        fp32 = synthetic.reference.summary()
        report = CompareReport(
            setup={
                "checkpoint": str(checkpoint), "img_size": size, "targets": targets, "qat": rows.qat, "mixed": rows.mixed,
                "budget": {"min_mask_iou": budget.min_mask_iou, "min_mask_iou_p5": budget.min_mask_iou_p5},
                "calibration": calibration.describe(), "held_out": held_out.describe(),
                "held_out_prompts": synthetic.n_prompts,
                "photo": crops.describe() if crops else None, "photo_prompts": photo.n_prompts if photo else None,
                "machine": machine_info(),
            },
            reference={"size_mb": fp32["bytes"] / 1e6, "encoder_p50_s": fp32["encoder_p50_s"], "gt_miou": fp32["gt_miou"]},
            rows=report_rows,
        )
        (tmp / JSON_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / MARKDOWN_NAME).write_text(report.markdown())
        if crops is not None:
            shutil.rmtree(tmp / "photo_crops")
        if not keep_artifacts:
            shutil.rmtree(tmp / "artifacts")
    return report


def mixed_budget(recipe_file: str | os.PathLike) -> dict[str, float]:
    """The budget a recipe file was chosen for (its provenance), else the defaults."""
    provenance = json.loads(Path(recipe_file).read_text()).get("provenance") or {}
    budget = provenance.get("budget") or {}
    try:
        return {"min_mask_iou": float(budget["min_mask_iou"]), "min_mask_iou_p5": float(budget["min_mask_iou_p5"])}
    except (KeyError, TypeError, ValueError):
        return {}

