"""Mask drift of every target's artifacts against fp32 PyTorch, on one held-out image set, in one run.

    python benchmarks/cross_target_drift.py --json docs/results/cross_target_drift.json

Exports the reference model (``--checkpoint``, default the bundled one) to ONNX, LiteRT,
Core ML and ExecuTorch at the precisions and recipes the README compares, then measures every
artifact against the fp32 PyTorch model with :func:`measure_drift` (what ``edge-sam validate``
runs) on the same images and prompts:

- held-out synthetic images: the first ``--test-images`` of the synthetic test split
  (``edge-sam data synth``, seed 0: the reference model never trained on them), a box and a
  centre click per object (up to 8 objects per image);
- crops of the real photo ``edge_sam/assets/dogs.jpg`` (``--photo-crops``, grid and box prompts),
  outside the model's synthetic domain.

Static INT8 artifacts calibrate on the first ``--calibration-images`` of the synthetic *val*
split, disjoint from both measured sets. Core ML artifacts are run by edge_sam's host executor
(the saved ML program executed with NumPy, fp16 semantics), not by Core ML on a device: their
rows say "host executor". Prints what the README quotes (the image sets, the machine with its CPU
flags and the load average at start and end, the table and the one-line summary), through the
views of benchmarks/docs_views.py, and ``--json`` writes the record they render from. Latency is
not reported: it is not comparable across runtimes loaded in one process on a shared CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import edge_sam
from edge_sam.data.synthetic import generate_synthetic
from edge_sam.runner import TorchRunner
from edge_sam.targets import get_target, load_runner
from edge_sam.image_sources import dataset_source, photo_crops
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.machine import load_average_text
from edge_sam.targets.validation.drift import measure_drift
from edge_sam.transforms import read_image

sys.path.insert(0, str(Path(__file__).parent))
from docs_views import VIEWS  # noqa: E402  (a sibling module: the record reads here as in the docs)
from records import record_header, write_record  # noqa: E402

SAMPLE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


@dataclass(frozen=True)
class Plan:
    """One artifact to export: ``label`` is how the README names it."""

    label: str
    target: str
    precision: str
    recipe: str | None = None
    interface: str = "deploy"
    options: tuple[tuple[str, str], ...] = ()  # export options, e.g. (("for_runtime", "tensorrt"),)

    @property
    def folder(self) -> str:
        parts = [self.target, self.precision, self.recipe, None if self.interface == "deploy" else self.interface,
                 *(value for _, value in self.options)]
        return "-".join(part for part in parts if part)

    @property
    def runs_on(self) -> str:
        return "host executor" if self.target == "coreml" else {
            "onnx": "onnxruntime CPU", "tflite": "LiteRT + XNNPACK", "executorch": "ExecuTorch + XNNPACK"}[self.target]


PLANS = (
    Plan("ONNX fp16", "onnx", "fp16"),
    Plan("ONNX INT8 static", "onnx", "int8", "static-conv-linear"),
    Plan("ONNX INT8 dynamic", "onnx", "int8", "dynamic-linear"),
    Plan("LiteRT fp16", "tflite", "fp16"),
    Plan("LiteRT INT8 static", "tflite", "int8", "static-conv-linear"),
    Plan("LiteRT INT8 dynamic", "tflite", "int8", "dynamic-linear"),
    Plan("Core ML fp16", "coreml", "fp16"),
    Plan("Core ML W8", "coreml", "int8", "w8-conv-linear"),
    Plan("Core ML W8A8", "coreml", "int8", "static-conv-linear"),
    Plan("Core ML 6-bit palettized", "coreml", "int8", "palettize-6bit"),
    Plan("Core ML 4-bit palettized", "coreml", "int8", "palettize-4bit"),
    Plan("ExecuTorch XNNPACK fp32", "executorch", "fp32"),
    Plan("ExecuTorch XNNPACK INT8 static", "executorch", "int8", "static-conv-linear"),
    Plan("ExecuTorch XNNPACK INT8 dynamic", "executorch", "int8", "dynamic-linear"),
)


def export_all(model, plans, work: Path, calibration, reuse: bool) -> dict[Plan, Path]:
    artifacts = {}
    for plan in plans:
        out = work / "artifacts" / plan.folder
        if reuse and (out / "manifest.json").is_file():
            print(f"reusing {out}")
        else:
            start = time.perf_counter()
            get_target(plan.target).export(model, plan.precision, plan.recipe, out, calibration=calibration,
                                           interface=plan.interface, overwrite=True, **dict(plan.options))
            print(f"exported {plan.label} in {time.perf_counter() - start:.0f} s -> {out}")
        artifacts[plan] = out
    return artifacts


def without_timings(summary: dict) -> dict:
    """A drift summary without its timings: they are taken with every runtime in one process, not comparable."""
    return {key: value for key, value in summary.items() if not key.endswith("_s")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--work", default="out/cross_target", help="folder for the data and artifacts (kept)")
    parser.add_argument("--test-images", type=int, default=20, help="held-out synthetic test images")
    parser.add_argument("--calibration-images", type=int, default=8, help="synthetic val images to calibrate on")
    parser.add_argument("--photo-crops", type=int, default=6, help="crops of dogs.jpg measured too (0: none)")
    parser.add_argument("--targets", default="onnx,tflite,coreml,executorch", help="comma-separated subset")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts already in --work")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as a record (docs/results/...)")
    args = parser.parse_args(argv)
    header = record_header()

    started = time.time()
    wanted = set(args.targets.split(","))
    plans = [p for p in PLANS if p.target in wanted]
    model = edge_sam.load_model(args.checkpoint)
    img_size = model.image_encoder.img_size
    work = Path(args.work)
    data = work / "synth"
    missing = {split: n for split, n in (("val", args.calibration_images), ("test", args.test_images))
               if not (data / split).is_dir()}
    if missing:
        generate_synthetic(data, missing, img_size=img_size, seed=0, progress=False)
    calibration = dataset_source(data / "val", args.calibration_images)
    held_out = dataset_source(data / "test", args.test_images)
    artifacts = export_all(model, plans, work, calibration, args.reuse)
    runners = [load_runner(path) for path in artifacts.values()]
    reference = TorchRunner(model, img_size)
    reports = {"synthetic": measure_drift(reference, runners, held_out, list(map(str, artifacts.values())),
                                          measure_memory=False)}
    if args.photo_crops:
        crops = photo_crops(read_image(SAMPLE), work / "photo_crops", args.photo_crops)
        reports["photo"] = measure_drift(reference, runners, crops, measure_memory=False)

    rows = {name: [r.summary() for r in report.runners] for name, report in reports.items()}
    record_rows = [{"artifact": plan.label, "target": plan.target, "precision": plan.precision, "recipe": plan.recipe,
                    "runs_on": plan.runs_on, "size_mb": sum(f["bytes"] for f in read_manifest(path).files.values()) / 1e6,
                    **{name: without_timings(rows[name][index]) for name in rows}}
                   for index, (plan, path) in enumerate(artifacts.items())]
    record = {**header, "checkpoint": args.checkpoint, "img_size": img_size, "test_images": args.test_images,
              "calibration_images": args.calibration_images, "photo_crops": args.photo_crops,
              "prompts": {name: report.n_prompts for name, report in reports.items()},
              "load_average_end": load_average_text(), "minutes": (time.time() - started) / 60, "rows": record_rows}
    print()
    for name in ("cross-target-sets", "cross-target-conditions", "cross-target-table", "cross-target-summary"):
        print(VIEWS[name](record), end="\n\n")
    if args.json:
        write_record(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
