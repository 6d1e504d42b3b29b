"""Segment-everything on each runtime: time, peak memory and the same masks as PyTorch.

    python benchmarks/everything_latency.py --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt \\
        --artifact out/tflite-fp32 --artifact out/onnx-fp32 [--grid 32] [--threads 2]

Every path (the PyTorch model of --checkpoint, then each --artifact, or --export SPEC made into
--out first) runs alone in a fresh process, so its peak RSS is the whole job's and no other
runtime's threads compete with it. Per path the child measures, on the same photo:

- the encoder (``Predictor.set_image``, after one warm-up);
- one prompt through the decoder (``decode_low_res`` of one click, median of 10);
- everything-mode end to end (``EverythingGenerator.generate``, encoder included), and the
  budget it is held to: 1.3 x (grid^2 x one-prompt decode) + encoder;
- peak RSS of the process (VmHWM), against the 1 GB budget.

Masks are compared with the PyTorch path's: each artifact mask is matched to the PyTorch mask
it overlaps most; the table gives the mask count against PyTorch's (within 2%), the worst and
mean matched IoU and the share of masks with IoU >= 0.99. Random weights (the parity
checkpoint) keep few or no masks at SAM's thresholds: time with it, and compare masks with
the reference model (``--checkpoint reference --pred-iou-thresh 0.2 --stability-thresh 0.3``,
the thresholds ``edge-sam demo`` uses for it). ``--profile`` prints where each path's
everything-mode spends its time. ``--record FILE`` writes the rows as a JSON record with the
command, commit and machine (:mod:`records`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "edge_sam" / "assets" / "dogs.jpg"
TIME_BUDGET = 1.3  # x (grid^2 one-prompt decodes + the encoder)
RSS_BUDGET_MB = 1024


def child(job: dict) -> dict:
    """Runs in a fresh process: one path's everything-mode, timed, its masks saved."""
    import torch

    import edge_sam
    from edge_sam.everything import EverythingConfig, EverythingGenerator
    from edge_sam.memory import peak_rss_mb
    from edge_sam.predictor import Predictor, Prompt
    from edge_sam.transforms import read_image

    torch.set_num_threads(job["threads"])
    image = read_image(job["image"])
    if job["artifact"]:
        from edge_sam.targets import load_runner
        from edge_sam.targets.core.manifest import read_manifest
        from edge_sam.targets.core.registry import threads_option

        options = threads_option(read_manifest(job["artifact"]).target, job["threads"])
        predictor = Predictor(load_runner(job["artifact"], **options))
    else:
        predictor = Predictor(edge_sam.load_model(job["checkpoint"]))
    predictor.set_image(image)  # warm-up
    start = time.perf_counter()
    predictor.set_image(image)
    encoder_s = time.perf_counter() - start
    h, w = image.shape[:2]
    click = [Prompt(np.array([[w * 0.55, h * 0.45]], np.float32), np.array([1.0], np.float32))]
    predictor.decode_low_res(click)
    decodes = []
    for _ in range(10):
        start = time.perf_counter()
        predictor.decode_low_res(click)
        decodes.append(time.perf_counter() - start)
    config = EverythingConfig(points_per_side=job["grid"], pred_iou_thresh=job["pred_iou_thresh"],
                              stability_score_thresh=job["stability_thresh"])
    generator = EverythingGenerator(predictor, config)
    profiler = cProfile.Profile() if job["profile"] else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    records = generator.generate(image, progress=False)
    if profiler:
        profiler.disable()
    total_s = time.perf_counter() - start
    peak_mb = peak_rss_mb()  # before saving: a stack of the masks here is not the generator's memory
    packed = [np.packbits(r["segmentation"], axis=-1) for r in records]
    masks = np.stack(packed) if packed else np.zeros((0, h, (w + 7) // 8), np.uint8)
    np.savez_compressed(job["masks"], masks=masks, shape=np.array((len(records), h, w)))
    return {"encoder_s": encoder_s, "decode_s": statistics.median(decodes), "total_s": total_s, "masks": len(records),
            "peak_rss_mb": peak_mb, "label": predictor.runner.label, "profile": _top_functions(profiler)}


def _top_functions(profiler: "cProfile.Profile | None", count: int = 8) -> str | None:
    """The functions everything-mode spent the most time in (their own time, not their callees')."""
    if profiler is None:
        return None
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(count)
    return text.getvalue()


def load_masks(path: str) -> np.ndarray:
    with np.load(path) as data:
        shape = tuple(data["shape"])
        return np.unpackbits(data["masks"], axis=-1)[..., : shape[-1]].astype(bool).reshape(shape)


def matched_ious(masks: np.ndarray, reference: np.ndarray) -> list[float]:
    """For each mask, its IoU with the reference mask it overlaps most."""
    if len(masks) == 0 or len(reference) == 0:
        return []
    flat, ref = masks.reshape(len(masks), -1).astype(np.float32), reference.reshape(len(reference), -1).astype(np.float32)
    inter = flat @ ref.T
    union = flat.sum(1)[:, None] + ref.sum(1)[None, :] - inter
    return (inter / np.maximum(union, 1)).max(1).tolist()


def run_path(job: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{job['artifact'] or 'pytorch'} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"))
    parser.add_argument("--artifact", action="append", default=[], help="an exported artifact folder; repeat for several")
    parser.add_argument("--export", action="append", default=[], metavar="TARGET:PRECISION[:RECIPE][:KEY=VALUE]",
                        help="export this first into --out (as edge-sam bench --table --export)")
    parser.add_argument("--out", default=None, help="folder for --export artifacts and the JSON result")
    parser.add_argument("--image", default=str(SAMPLE))
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-thresh", type=float, default=0.95)
    parser.add_argument("--profile", action="store_true",
                        help="print where each path's everything-mode spends its time (cProfile; slows it a little)")
    parser.add_argument("--record", default=None, help="write the JSON record here (e.g. docs/results/everything.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    header = record_header()
    artifacts = list(args.artifact)
    if args.export:
        from edge_sam.targets.benchmarking.specs import ExportSpec, export_artifacts

        if not args.out:
            parser.error("--export needs --out")
        specs = [ExportSpec.parse(s) for s in args.export]
        artifacts += [str(p) for p in export_artifacts(specs, args.checkpoint, Path(args.out) / "artifacts", None, None, True)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="everything-bench-") as work:
        for index, artifact in enumerate([None, *artifacts]):
            job = {"checkpoint": args.checkpoint, "artifact": artifact, "image": args.image, "grid": args.grid,
                   "threads": args.threads, "pred_iou_thresh": args.pred_iou_thresh,
                   "stability_thresh": args.stability_thresh, "masks": str(Path(work) / f"masks_{index}.npz"),
                   "profile": args.profile}
            load = os.getloadavg()[0]
            result = run_path(job)
            result["loadavg"] = load
            result["masks_file"] = job["masks"]
            rows.append(result)
            print(f"  {result['label']}: {result['total_s']:.1f} s, {result['masks']} masks", file=sys.stderr, flush=True)
            if result["profile"]:
                print(result.pop("profile"), file=sys.stderr, flush=True)
        reference = load_masks(rows[0]["masks_file"])
        for row in rows:
            ious = matched_ious(load_masks(row["masks_file"]), reference)
            row["iou_min"] = min(ious, default=None)
            row["iou_mean"] = float(np.mean(ious)) if ious else None
            row["iou_share_099"] = float(np.mean(np.array(ious) >= 0.99)) if ious else None
            row["budget_s"] = TIME_BUDGET * (args.grid**2 * row["decode_s"]) + row["encoder_s"]
            del row["masks_file"]
    n = args.grid**2
    print(f"# everything {args.grid}x{args.grid} ({n} prompts) on {Path(args.image).name}, {args.threads} threads, "
          f"checkpoint {args.checkpoint}; each path alone in a fresh process")
    print("| path | encoder s | decode ms/prompt | everything s | budget s (1.3 x n x decode + enc) | within | "
          "peak RSS MB | masks (vs PyTorch) | matched IoU min / mean | IoU >= 0.99 | load |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0]["masks"]
    for row in rows:
        count = f"{row['masks']} ({(row['masks'] - base) / base * 100:+.1f}%)" if base else str(row["masks"])
        iou = f"{row['iou_min']:.4f} / {row['iou_mean']:.4f}" if row["iou_min"] is not None else "-"
        share = f"{row['iou_share_099'] * 100:.1f}%" if row["iou_share_099"] is not None else "-"
        print(f"| {row['label']} | {row['encoder_s']:.2f} | {row['decode_s'] * 1e3:.1f} | {row['total_s']:.1f} | "
              f"{row['budget_s']:.1f} | {'yes' if row['total_s'] <= row['budget_s'] else 'NO'} | {row['peak_rss_mb']:.0f}"
              f"{'' if row['peak_rss_mb'] <= RSS_BUDGET_MB else ' (over 1 GB)'} | {count} | {iou} | {share} | "
              f"{row['loadavg']:.1f} |")
    for row in rows:
        row["within_time_budget"] = row["total_s"] <= row["budget_s"]
        row["within_rss_budget"] = row["peak_rss_mb"] <= RSS_BUDGET_MB
    record = {**header, "args": vars(args), "rows": rows}
    if args.out:
        write_record(Path(args.out) / "everything.json", record)
    if args.record:
        write_record(args.record, record)


if __name__ == "__main__":
    main()
