"""The Drift tables of the target pages (docs/onnx.md, tflite.md, executorch.md, coreml.md, and the
TensorRT-form ONNX of docs/jetson.md), one record per table.

    python benchmarks/target_drift_tables.py --target onnx --record docs/results/drift_onnx.json

Exports the table's model at the precisions and recipes the page lists (``TABLES``), then runs
:func:`edge_sam.targets.validate` (what ``edge-sam validate`` runs) on the table's images:

- the reference model (256 px) on the first ``--test-images`` of the held-out synthetic test
  split (``edge-sam data synth``, seed 0: the model never trained on them), a box and a centre
  click per object; static INT8 calibrated on the first ``--calibration-images`` of the *val*
  split. ``tensorrt`` validates on dogs.jpg too and adds a PyTorch bf16 autocast row;
- ``onnx-1024`` and ``executorch-1024``: the parity checkpoint (EfficientSAM-Ti at 1024 with
  random weights: indicative only) on dogs.jpg and a 700x500 crop of it (grid clicks and boxes),
  static INT8 calibrated on crops of the same photo.

Accuracy only (mask IoU, embedding error, GT mIoU, sizes, per-layer SQNR, and the runners' peak
RSS where the page shows it): every artifact runs in one process on a machine that may be shared,
so its timings are not a device's and are left out of the record; ``edge-sam bench --table``
(docs/performance.md) is the speed measurement. Writes a JSON record (``--record``) with the
command, commit, machine and date (benchmarks/records.py); benchmarks/docs_views.py renders it.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edge_sam
from edge_sam.data.synthetic import generate_synthetic
from edge_sam.image_sources import dataset_source, photo_crops
from edge_sam.targets import validate
from edge_sam.targets.validation.drift import DriftReport
from edge_sam.targets.validation.report import LAYER_ROWS, markdown_table
from edge_sam.transforms import read_image, write_image

from cross_target_drift import SAMPLE, Plan, export_all, without_timings
from records import record_header, write_record

TENSORRT = (("for_runtime", "tensorrt"),)
PARITY = "tests/data/parity/efficient_sam_vitt_random_seed1234.pt"  # EfficientSAM-Ti at 1024, random weights


@dataclass(frozen=True)
class Table:
    """One page's Drift table: the model, the artifacts, and what validate measures besides the masks."""

    doc: str
    plans: tuple[Plan, ...]
    memory: bool = False  # peak RSS probes (a subprocess per runner)
    layers: bool = True  # per-layer drift (the pages that quote it)
    sources: tuple[str, ...] = ("synthetic",)  # one validation each: synthetic, photo, photo-and-crop (sources())
    torch_runs: tuple[tuple[str, dict[str, Any]], ...] = ()  # (label, TorchRunner keyword arguments)
    checkpoint: str = "reference"
    calibration: str = "synthetic"  # or "photo-crops": overlapping crops of dogs.jpg (a model with random weights)


TABLES = {
    "onnx": Table("docs/onnx.md", (
        Plan("ONNX deploy fp32", "onnx", "fp32"),
        Plan("ONNX official fp32", "onnx", "fp32", interface="official"),
        Plan("ONNX fp16", "onnx", "fp16"),
        Plan("ONNX int8 static-conv-linear", "onnx", "int8", "static-conv-linear"),
        Plan("ONNX int8 dynamic-linear", "onnx", "int8", "dynamic-linear"),
    ), memory=True),
    "tflite": Table("docs/tflite.md", (
        Plan("LiteRT fp32", "tflite", "fp32"),
        Plan("LiteRT fp16", "tflite", "fp16"),
        Plan("LiteRT INT8 dynamic-linear", "tflite", "int8", "dynamic-linear"),
        Plan("LiteRT INT8 static-conv-linear", "tflite", "int8", "static-conv-linear"),
        Plan("LiteRT INT8 naive-all-int8", "tflite", "int8", "naive-all-int8"),
    )),
    "executorch": Table("docs/executorch.md", (
        Plan("fp32 .pte", "executorch", "fp32"),
        Plan("int8 `static-conv-linear`", "executorch", "int8", "static-conv-linear"),
        Plan("int8 `dynamic-linear`", "executorch", "int8", "dynamic-linear"),
    )),
    "coreml": Table("docs/coreml.md", (  # no per-layer rows: the page quotes none, and the host executor is slow
        Plan("fp32", "coreml", "fp32"),
        Plan("fp16", "coreml", "fp16"),
        Plan("int8 `w8-conv-linear`", "coreml", "int8", "w8-conv-linear"),
        Plan("int8 `palettize-6bit`", "coreml", "int8", "palettize-6bit"),
        Plan("int8 `palettize-4bit`", "coreml", "int8", "palettize-4bit"),
        Plan("int8 `static-conv-linear`", "coreml", "int8", "static-conv-linear"),
    ), layers=False),
    "tensorrt": Table("docs/jetson.md", (
        Plan("TensorRT form fp32", "onnx", "fp32", options=TENSORRT),
        Plan("TensorRT form fp16", "onnx", "fp16", options=TENSORRT),
        Plan("TensorRT form INT8 (symmetric Q/DQ)", "onnx", "int8", "static-conv-linear", options=TENSORRT),
        Plan("onnxruntime INT8 (asymmetric activations)", "onnx", "int8", "static-conv-linear"),
    ), layers=False, sources=("synthetic", "photo"), torch_runs=(("PyTorch bf16 autocast on the CPU", {"device": "cpu", "precision": "bf16"}),)),
    "onnx-1024": Table("docs/onnx.md", (
        Plan("fp32", "onnx", "fp32"),
        Plan("int8 static-conv-linear", "onnx", "int8", "static-conv-linear"),
        Plan("int8 dynamic-linear", "onnx", "int8", "dynamic-linear"),
    ), sources=("photo-and-crop",), checkpoint=PARITY, calibration="photo-crops"),
    "executorch-1024": Table("docs/executorch.md", (
        Plan("fp32 .pte", "executorch", "fp32"),
        Plan("int8 `static-conv-linear`", "executorch", "int8", "static-conv-linear"),
    ), sources=("photo-and-crop",), checkpoint=PARITY, calibration="photo-crops"),
}
REFERENCE_LABEL = "PyTorch fp32 (reference)"
CROP = (700, 500)  # width, height of the second photo view at 1024


def top_layers(rows: list[dict]) -> list[dict]:
    """The rows report.md shows (largest drop first), plus any whole-program row (ExecuTorch's
    .pte against its PT2E simulation)."""
    ranked = sorted(rows, key=lambda r: -r["drop_db"] if math.isfinite(r["drop_db"]) else 0.0)[:LAYER_ROWS]
    return ranked + [r for r in rows if r["op_type"] == "program" and r not in ranked]


def run_record(report: DriftReport, labels: list[str], images: str) -> dict[str, Any]:
    """One validation as the record keeps it: rows named as the page names them (``labels``, in
    the report's row order), no timings."""
    data = report.to_dict()
    rows, by_runner = [], {}
    for label, row in zip(labels, data["rows"], strict=True):
        by_runner[row["label"]] = label
        rows.append({"artifact": label, **without_timings(row), "size_mb": row["bytes"] / 1e6})
    return {"images": images, "n_images": report.n_images, "n_prompts": report.n_prompts, "rows": rows,
            "layers": {by_runner[name]: top_layers(layer_rows) for name, layer_rows in data["layers"].items()}}


def photo_folder(folder: Path, crop: bool) -> Path:
    """dogs.jpg, and with ``crop`` a centred CROP-sized view of it, in a folder of their own."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    if crop:
        image = read_image(SAMPLE)
        (h, w), (cw, ch) = image.shape[:2], CROP
        y, x = (h - ch) // 2, (w - cw) // 2
        write_image(folder / f"dogs_crop_{cw}x{ch}.png", image[y:y + ch, x:x + cw])
    return folder


def sources(table: Table, args: argparse.Namespace, data: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Per validation: validate's image arguments, and how the record describes the images."""
    known = {
        "synthetic": lambda: ({"dataset": data / "test", "max_images": args.test_images},
                              f"synthetic test split images 0-{args.test_images - 1} (seed 0), a box and a centre "
                              f"click per object, up to 8 objects per image"),
        "photo": lambda: ({"images": photo_folder(args.work / "photo", crop=False)},
                          f"{SAMPLE.name}, a 3x3 grid of clicks and three boxes"),
        "photo-and-crop": lambda: ({"images": photo_folder(args.work / "photo-and-crop", crop=True)},
                                   f"{SAMPLE.name} and a centred {CROP[0]}x{CROP[1]} crop of it, a 3x3 grid of clicks "
                                   f"and three boxes each"),
    }
    return {name: known[name]() for name in table.sources}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, choices=sorted(TABLES), help="whose page's table")
    parser.add_argument("--record", required=True, type=Path, help="the JSON record (docs/results/drift_<target>.json)")
    parser.add_argument("--work", type=Path, default=Path("drift_tables"), help="folder for data, artifacts, reports (kept)")
    parser.add_argument("--test-images", type=int, default=20, help="held-out synthetic test images")
    parser.add_argument("--calibration-images", type=int, default=8, help="images to calibrate static INT8 on")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts an earlier run left in --work")
    args = parser.parse_args(argv)
    header = record_header()
    started = time.time()
    table = TABLES[args.target]
    work = args.work / args.target

    model = edge_sam.load_model(table.checkpoint)
    img_size = model.image_encoder.img_size
    data = args.work / f"synth-{img_size}"
    wanted = {"val": args.calibration_images if table.calibration == "synthetic" else 0,
              "test": args.test_images if "synthetic" in table.sources else 0}
    missing = {split: n for split, n in wanted.items() if n and not (data / split).is_dir()}
    if missing:
        generate_synthetic(data, missing, img_size=img_size, seed=0, progress=False)
    if table.calibration == "synthetic":
        calibration = dataset_source(data / "val", args.calibration_images)
        calibrated_on = f"synthetic val split images 0-{args.calibration_images - 1} (seed 0)"
    else:
        calibration = photo_crops(read_image(SAMPLE), work / "calibration", args.calibration_images)
        calibrated_on = f"{args.calibration_images} overlapping half-size crops of {SAMPLE.name}"
    artifacts = export_all(model, table.plans, work, calibration, args.reuse)
    labels = [REFERENCE_LABEL, *(plan.label for plan in artifacts), *(label for label, _ in table.torch_runs)]  # validate's row order

    runs = {}
    for name, (where, images) in sources(table, args, data).items():
        report = validate(list(map(str, artifacts.values())), checkpoint=table.checkpoint, report_dir=work / f"report-{name}",
                          measure_memory=table.memory, layers=table.layers,
                          torch_runs=[options for _, options in table.torch_runs], **where)
        print(markdown_table(report))
        runs[name] = run_record(report, labels, images)

    record = {**header, "doc": table.doc, "checkpoint": table.checkpoint, "img_size": img_size, "calibration": calibrated_on,
              "latency": "not recorded (accuracy only): edge-sam bench --table, docs/performance.md",
              "minutes": round((time.time() - started) / 60, 1), "runs": runs}
    write_record(args.record, record)
    print(f"record: {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
