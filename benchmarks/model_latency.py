"""PyTorch model latency on this machine: encoder (SDPA vs materialized attention), decoder per
prompt, and segment-everything time and peak RSS. Ratios are against baselines measured in the
same run.

    python benchmarks/model_latency.py [--checkpoint CKPT] [--runs 3] [--grid 32]

The default checkpoint is the parity checkpoint (EfficientSAM-Ti layout, 1024 input): latency
does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.timing import median_seconds
from edge_sam.deploy import set_attention
from edge_sam.memory import peak_rss_mb
from edge_sam.predictor import Predictor, Prompt
from edge_sam.transforms import image_to_tensor, read_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"
SAMPLE = ROOT / "edge_sam" / "assets" / "dogs.jpg"


def everything_child(checkpoint: str, grid: int) -> None:
    """Runs in a fresh process so its peak RSS (VmHWM) is the whole job's, nothing else's."""
    from edge_sam.everything import EverythingConfig, EverythingGenerator

    image = read_image(SAMPLE)
    predictor = Predictor(edge_sam.load_model(checkpoint))
    start = time.perf_counter()
    records = EverythingGenerator(predictor, EverythingConfig(points_per_side=grid)).generate(image, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "masks": len(records), "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--everything-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.everything_child:
        everything_child(args.checkpoint, args.grid)
        return

    model = edge_sam.load_model(args.checkpoint)
    image = read_image(SAMPLE)
    batch = image_to_tensor(image)
    size = model.config.img_size
    print(f"# model_latency: {args.checkpoint} ({size}px), torch {torch.__version__}, {args.threads} threads")

    rows = []
    with torch.inference_mode():
        sdpa = median_seconds(lambda: model.get_image_embeddings(batch), args.runs)
        set_attention(model, "matmul")
        materialized = median_seconds(lambda: model.get_image_embeddings(batch), args.runs)
        set_attention(model, "sdpa")
    rows.append(("encoder, SDPA attention (ours)", sdpa, "1.00x"))
    rows.append(("encoder, materialized attention", materialized, f"{materialized / sdpa:.2f}x of SDPA"))

    predictor = Predictor(model)
    predictor.set_image(image)
    point = Prompt(np.array([[580.0, 350.0]]), np.array([1.0]))
    one = median_seconds(lambda: predictor.decode_low_res([point]), args.runs * 3)
    sixteen = median_seconds(lambda: predictor.decode_low_res([point] * 16), args.runs)
    full = median_seconds(lambda: predictor.predict(point.point_coords, point.point_labels), args.runs * 3)
    rows.append(("decoder, 1 prompt (low-res logits)", one, "1.00x"))
    rows.append(("decoder, per prompt in a batch of 16", sixteen / 16, f"{sixteen / 16 / one:.2f}x of 1 prompt"))
    rows.append(("decoder + bicubic to image size, 1 prompt", full, f"{full / one:.2f}x of 1 prompt"))

    cmd = [sys.executable, __file__, "--everything-child", "--checkpoint", args.checkpoint, "--grid", str(args.grid),
           "--threads", str(args.threads)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    peak_mib = result["peak_rss_mb"]
    rows.append((f"everything {args.grid}x{args.grid} grid ({result['masks']} masks), encoder included", result["seconds"],
                 f"peak RSS {peak_mib:.0f} MiB (whole process)"))

    print("| what | seconds | note |\n| --- | --- | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.3f} | {note} |")


if __name__ == "__main__":
    main()
