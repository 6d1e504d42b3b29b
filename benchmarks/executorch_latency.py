"""Encoder and decoder latency at full size, in one run: PyTorch eager vs ExecuTorch XNNPACK fp32
vs XNNPACK INT8, each .pte through the Python runtime and through the native C++ runner.

    python benchmarks/executorch_latency.py --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt

Exports fp32 and INT8 (``--recipe``, default static-conv-linear) artifacts into a temp folder (or
--keep DIR), builds apps/cpp with CMake, and times the programs alone on the same preprocessed
image: PyTorch runs the deploy-form graphs (SDPA attention, its fastest eager form), the Python
runtime runs ``run_encoder``/``run_decoder``, the C++ runner reports its own program times.
Host preprocessing and mask upsampling are left out of every number (they are the same work
everywhere). One untimed warm-up, then --repeats timed runs; medians (C++: means) and minimums.
Latency does not depend on what the calibration images show: crops of the bundled photo
calibrate unless --calibration is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.timing import time_calls
from edge_sam.deploy_form import DecoderGraph, EncoderGraph, pad_prompts
from edge_sam.targets import get_target, load_runner
from edge_sam.image_sources import open_source, photo_crops
from edge_sam.targets.executorch.native import build_runner, run_runner, write_ppm
from edge_sam.transforms import image_to_tensor, preprocess, read_image

SAMPLE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--image", default=str(SAMPLE))
    parser.add_argument("--calibration", default=None, help="calibration images (default: crops of the image)")
    parser.add_argument("--recipe", default="static-conv-linear")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", default=None, help="write artifacts and the C++ build here instead of a temp folder")
    parser.add_argument("--reuse", action="store_true", help="time the artifacts an earlier run left in --keep (no export)")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep DIR (the folder of an earlier run)")

    image = read_image(args.image)
    h, w = image.shape[:2]
    point, label = np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32)
    model = edge_sam.load_model(args.checkpoint)
    size = args.img_size
    pixels = preprocess(image_to_tensor(image), size)
    target = get_target("executorch")
    with tempfile.TemporaryDirectory(prefix="executorch-bench-") as work:
        root = Path(args.keep or work)
        artifacts = {precision: root / f"executorch-{precision}" for precision in ("fp32", "int8")}
        export_s: dict[str, float] = {}
        if not args.reuse:
            calibration = open_source(args.calibration) if args.calibration else photo_crops(image, root / "calibration")
            for precision, recipe in (("fp32", None), ("int8", args.recipe)):
                start = time.perf_counter()
                target.export(model, precision, recipe, artifacts[precision], calibration=calibration, img_size=size,
                              overwrite=True)
                export_s[precision] = time.perf_counter() - start
        binary = build_runner(root / "cpp-build")
        image_ppm = root / "image.ppm"
        write_ppm(image_ppm, image)

        rows = []
        with torch.inference_mode():
            encoder, decoder = EncoderGraph(model, size).eval(), DecoderGraph(model, size).eval()
            embedding = encoder(pixels)
            coords, labels = (torch.from_numpy(a[None]) for a in pad_prompts(point, label, (h, w), size))
            rows.append({"runner": "pytorch eager fp32 (SDPA)", "encoder": time_calls(lambda: encoder(pixels), args.repeats),
                         "decoder": time_calls(lambda: decoder(embedding, coords, labels), args.repeats), "bytes": None})
        for precision, artifact in artifacts.items():
            runner = load_runner(artifact)
            array = pixels.numpy()
            emb = runner.run_encoder(array)
            c, l = pad_prompts(point, label, (h, w), size)
            recipe = runner.manifest.recipe
            name = f"executorch xnnpack {precision}" + (f" {recipe['name']}" if recipe else "")
            bytes_ = runner.describe()["bytes"]
            rows.append({"runner": f"{name}, Python runtime", "encoder": time_calls(lambda: runner.run_encoder(array), args.repeats),
                         "decoder": time_calls(lambda: runner.run_decoder(emb, c[None], l[None]), args.repeats),
                         "bytes": bytes_, "export_s": export_s.get(precision)})
            native = run_runner(binary, artifact, image_ppm, root / f"mask-{precision}.pgm", points=[(*point[0], 1.0)],
                                runs=args.repeats, warmup=1)
            rows.append({"runner": f"{name}, C++ runner", "encoder_ms": native.encoder_ms, "decoder_ms": native.decoder_ms,
                         "bytes": bytes_})
    eager = statistics.median(rows[0]["encoder"])
    eager_decoder = statistics.median(rows[0]["decoder"])
    print(f"img_size {size}, {args.repeats} timed runs after one warm-up; {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"checkpoint {args.checkpoint}")
    print("| runner | encoder s (median / mean C++) | encoder min s | encoder vs eager | decoder ms | decoder vs eager "
          "| size MB | export s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if "encoder" in row:
            enc, enc_min, dec = statistics.median(row["encoder"]), min(row["encoder"]), statistics.median(row["decoder"]) * 1e3
        else:
            enc, enc_min, dec = row["encoder_ms"][0] / 1e3, row["encoder_ms"][1] / 1e3, row["decoder_ms"][0]
        size_mb = f"{row['bytes'] / 1e6:.1f}" if row["bytes"] else "-"
        export = f"{row['export_s']:.0f}" if row.get("export_s") else "-"
        print(f"| {row['runner']} | {enc:.2f} | {enc_min:.2f} | {eager / enc:.2f}x | {dec:.1f} | "
              f"{eager_decoder * 1e3 / dec:.2f}x | {size_mb} | {export} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
