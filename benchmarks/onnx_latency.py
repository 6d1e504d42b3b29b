"""Encoder latency at full size: PyTorch eager vs onnxruntime fp32 vs onnxruntime INT8, in one run.

    python benchmarks/onnx_latency.py --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt

Exports the deploy-form graphs (fp32, then INT8 with each recipe given) into a temp folder
(or --keep DIR), times ``Runner.encode`` on the same image (one untimed warm-up, then
--repeats timed runs) and prints a Markdown table with medians, minimums and ratios against
PyTorch eager, plus the decoder's median. Latency does not depend on what the calibration
images show, so by default crops of the bundled photo calibrate; pass --calibration for real data.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.timing import time_calls
from edge_sam.targets import TorchRunner, get_target, load_runner
from edge_sam.targets.core.calibration import open_source, photo_crops
from edge_sam.transforms import read_image

SAMPLE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--image", default=str(SAMPLE))
    parser.add_argument("--calibration", default=None, help="calibration images (default: crops of the image)")
    parser.add_argument("--recipes", default="static-conv-linear,dynamic-linear")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("--keep", default=None, help="write the artifacts here instead of a temp folder")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    image = read_image(args.image)
    model = edge_sam.load_model(args.checkpoint)
    target = get_target("onnx")
    runtime = {"threads": args.threads} if args.threads else {}
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as work:
        root = Path(args.keep or work)
        calibration = open_source(args.calibration) if args.calibration else photo_crops(image, root / "calibration")
        plans = [("onnxruntime fp32", "fp32", None)] + [(f"onnxruntime int8 {r}", "int8", r) for r in args.recipes.split(",") if r]
        runners = [("pytorch eager fp32", TorchRunner(model, args.img_size))]
        export_s = {}
        for label, precision, recipe in plans:
            start = time.perf_counter()
            artifact = target.export(model, precision, recipe, root / label.replace(" ", "-"), calibration=calibration,
                                      img_size=args.img_size, overwrite=True)
            export_s[label] = time.perf_counter() - start
            runners.append((label, load_runner(artifact, **runtime)))

        h, w = image.shape[:2]
        points, labels = np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32)
        rows = []
        for label, runner in runners:
            encoder = time_calls(lambda: runner.encode(image), args.repeats)
            embedding = runner.encode(image)
            decoder = time_calls(lambda: runner.decode(embedding, points, labels, (h, w)), args.repeats)
            rows.append({"runner": label, "encoder_median_s": statistics.median(encoder), "encoder_min_s": min(encoder),
                         "decoder_median_s": statistics.median(decoder), "export_s": export_s.get(label),
                         "bytes": runner.describe().get("bytes")})
    eager = rows[0]["encoder_median_s"]
    print(f"img_size {args.img_size}, {args.repeats} timed runs after one warm-up; torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("| runner | encoder median s | encoder min s | vs PyTorch eager | decoder median ms | size MB | export s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        export = f"{row['export_s']:.0f}" if row["export_s"] else "-"
        print(f"| {row['runner']} | {row['encoder_median_s']:.2f} | {row['encoder_min_s']:.2f} | "
              f"{eager / row['encoder_median_s']:.2f}x | {row['decoder_median_s'] * 1e3:.0f} | {row['bytes'] / 1e6:.1f} | {export} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
