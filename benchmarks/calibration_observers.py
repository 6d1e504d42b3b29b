"""Which activation observer calibrates full static INT8 so that it holds on real photos it never saw?

    python benchmarks/calibration_observers.py --out observers [--targets onnx,executorch,tflite,coreml]

Each target's static ``static-conv-linear`` export, calibrated on deploy's default calibration
images (the bundled set's first split: 4 images, 3 of them real photo crops) with every observer
the target's quantizer offers, is run on its runtime over two held-out sets: deploy's default
held-out images (synthetic scenes and photo crops) and the unseen photos of
``benchmarks/unseen_photos.py`` (grace_hopper, camera, coins: sources nothing else here uses).
Observers (the recipe's ``calibration_method``):

- ``minmax``: the range of everything seen (onnxruntime MinMax, PT2E MinMaxObserver, Core ML min_max);
- ``moving-average``: a moving average of each image's range (onnxruntime MinMax with
  CalibMovingAverage, PT2E MovingAverageMinMaxObserver, Core ML moving_average_min_max);
- ``percentile`` / ``entropy``: onnxruntime's Percentile and Entropy calibrators; on the PT2E
  targets (ExecuTorch, LiteRT) both are the HistogramObserver (an L2-optimal range), so they are
  run once there as ``histogram``. Core ML's quantizer has neither.

Prints mask IoU vs fp32 (mean / p5) per target and observer and writes ``OUT/observers.json``
(command, git commit, machine, date, every number).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import edge_sam
from edge_sam.data.codec import write_bytes_atomic
from edge_sam.quantize.recipes import DEFAULT_RECIPE, RECIPES
from edge_sam.targets import validate
from edge_sam.image_sources import image_folder
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.deploy.images import bundled_images, split_images, stage_split

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header  # noqa: E402  (sibling modules)
from unseen_photos import write_crops  # noqa: E402

# The observers each target's quantizer offers (PT2E: percentile and entropy are one histogram observer).
OBSERVERS = {
    "onnx": ("minmax", "moving-average", "percentile", "entropy"),
    "executorch": ("minmax", "moving-average", "percentile"),
    "tflite": ("minmax", "moving-average", "percentile"),
    "coreml": ("minmax", "moving-average"),
}
LABEL = {"percentile": "histogram"}  # what "percentile" runs as on the PT2E targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--targets", default="onnx,executorch,tflite,coreml")
    parser.add_argument("--checkpoint", default="reference")
    args = parser.parse_args()
    header = record_header()
    targets = args.targets.split(",")
    out = args.out
    calibration, _, held_out = stage_split(split_images(bundled_images(), 4, 8, 8), out / "images")
    unseen = image_folder(write_crops(out / "unseen_photos")[0].parent)
    model = edge_sam.load_model(args.checkpoint)
    rows = []
    for name in targets:
        target = get_target(name)
        for method in OBSERVERS[name]:
            recipe = dataclasses.replace(RECIPES[DEFAULT_RECIPE], calibration_method=method)  # the manifest records the method
            artifact = out / "artifacts" / f"{name}-{method}"
            target.export(model, "int8", recipe, artifact, calibration=calibration, checkpoint=args.checkpoint,
                          calibration_images=len(calibration), overwrite=True)
            row = {"target": name, "observer": method if name in ("onnx", "coreml") else LABEL.get(method, method)}
            for label, source in (("held_out", held_out), ("unseen_photos", unseen)):
                summary = validate([artifact], checkpoint=args.checkpoint, images=source.path, measure_memory=False,
                                   layers=False).rows()[1].summary()
                row[label] = {"mask_iou_mean": summary["mask_iou_mean"], "mask_iou_p5": summary["mask_iou_p5"]}
            rows.append(row)
            print(f"{name} {row['observer']}: held out {row['held_out']['mask_iou_mean']:.4f} / "
                  f"{row['held_out']['mask_iou_p5']:.4f}, unseen photos {row['unseen_photos']['mask_iou_mean']:.4f} / "
                  f"{row['unseen_photos']['mask_iou_p5']:.4f}", flush=True)
    print("\n| target | observer | held out: mask IoU mean / p5 | unseen photos: mean / p5 |\n| --- | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['target']} | {row['observer']} | {row['held_out']['mask_iou_mean']:.3f} / "
              f"{row['held_out']['mask_iou_p5']:.3f} | {row['unseen_photos']['mask_iou_mean']:.3f} / "
              f"{row['unseen_photos']['mask_iou_p5']:.3f} |")
    write_bytes_atomic(out / "observers.json", (json.dumps({
        **header, "checkpoint": args.checkpoint, "calibration": calibration.describe(), "held_out": held_out.describe(),
        "unseen_photos": unseen.describe(), "rows": rows}, indent=2) + "\n").encode())
    print(f"wrote {out / 'observers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
