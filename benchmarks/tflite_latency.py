"""Encoder latency on this machine: PyTorch eager vs LiteRT fp32 vs LiteRT INT8, in one run.

    python benchmarks/tflite_latency.py [--checkpoint CKPT] [--img-size 1024] [--runs 3] [--threads 2]

Every path gets the same preprocessed image (the deploy-form encoder input) and is timed as the
median of ``--runs`` calls after one warm-up; ratios are against PyTorch eager (SDPA attention,
the fastest eager path) measured in the same run. The LiteRT artifacts are exported here
(conversion time printed) and run with the XNNPACK delegate. INT8 rows: dynamic range
(``dynamic-linear``) and static (``static-conv-linear``, calibrated on views of the sample photo).
The default checkpoint is the parity checkpoint (EfficientSAM-Ti layout, 1024 input, random
weights): latency does not depend on the weights' values, accuracy does (use validate for that).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import edge_sam
from edge_sam.timing import median_seconds
from edge_sam.deploy import EncoderGraph
from edge_sam.targets import get_target, image_folder, load_runner
from edge_sam.targets.validation.drift import cosine
from edge_sam.transforms import image_to_tensor, preprocess, read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"
SAMPLE = ROOT / "edge_sam" / "assets" / "dogs.jpg"
LITERT_PATHS = (("LiteRT fp32", "fp32", None), ("LiteRT INT8 dynamic", "int8", "dynamic-linear"),
                ("LiteRT INT8 static", "int8", "static-conv-linear"))


def sample_views(image: np.ndarray, folder: Path) -> Path:
    """Four calibration images from the sample photo (halves, centre, mirror)."""
    h, w = image.shape[:2]
    views = [image[:, : w // 2], image[:, w // 2 :], image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4], image[:, ::-1]]
    for index, view in enumerate(views):
        write_image(folder / f"view_{index}.png", np.ascontiguousarray(view))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    model = edge_sam.load_model(args.checkpoint)
    image = read_image(SAMPLE)
    x = preprocess(image_to_tensor(image), args.img_size)
    print(f"# tflite_latency: {args.checkpoint} at {args.img_size}px, torch {torch.__version__}, {args.threads} threads")

    encoder = EncoderGraph(model, args.img_size, attention="sdpa").eval()
    with torch.inference_mode():
        reference = encoder(x).numpy()
        eager = median_seconds(lambda: encoder(x), args.runs)
    rows = [("PyTorch eager (SDPA)", eager, 1.0, "-", 1.0, "-")]
    target = get_target("tflite")
    with tempfile.TemporaryDirectory(prefix="tflite-latency-") as work:
        work = Path(work)
        (work / "calibration").mkdir()
        calibration = image_folder(sample_views(image, work / "calibration"))
        for label, precision, recipe in LITERT_PATHS:
            start = time.perf_counter()
            artifact = target.export(model, precision, recipe, work / label.replace(" ", "-"), calibration=calibration,
                                     img_size=args.img_size)
            export_s = time.perf_counter() - start
            runner = load_runner(artifact, threads=args.threads)
            array = x.numpy()
            seconds = median_seconds(lambda: runner.run_encoder(array), args.runs)
            size_mb = runner.manifest.files["encoder.tflite"]["bytes"] / 1e6
            rows.append((label, seconds, eager / seconds, f"{size_mb:.1f}", cosine(reference, runner.run_encoder(array)),
                         f"{export_s:.0f}"))
            print(f"  {label}: {seconds:.3f} s (export {export_s:.0f} s)", flush=True)

    print("\n| path | encoder s (median) | speed-up vs PyTorch | encoder file MB | emb cos vs PyTorch | export s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, seconds, speedup, size_mb, cos, export_s in rows:
        print(f"| {label} | {seconds:.3f} | {speedup:.2f}x | {size_mb} | {cos:.5f} | {export_s} |")


if __name__ == "__main__":
    main()
