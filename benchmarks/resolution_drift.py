"""Resolution as a deployment knob: encoder speed at a reduced input size, and how far its masks
drift from the full-size fp32 model, before and after a short distillation.

    python benchmarks/resolution_drift.py [--fractions 0.5,0.75] [--steps 60] [--rounds 3]

Two checkpoints, because random weights make mask drift meaningless:

- speed on the parity checkpoint (EfficientSAM-Ti layout, 1024 px): PyTorch eager encoders at
  1024 and at each fraction of it (512, 768), interleaved rounds, min over rounds; plus the
  analytic FLOP ratio (edge_sam.flops). For exported runtimes use the bench table, e.g.
  ``edge-sam bench --table --checkpoint CKPT --export tflite:fp32 --export tflite:fp32:img_size=512``;
- fidelity on the reference model (trained at 256 px): the same fractions of its size (128, 192).
  Mask IoU against the full-size fp32 model, compared at image size (the drift report's
  measure: the output fp32 ranks first), on held-out images: crops of the bundled photo (real,
  outside the model's synthetic domain) and a synthetic test split. Then
  :func:`edge_sam.train.resolution.distill_resolution` (teacher: the full-size model) on a
  synthetic train split (other images), and the same measure again.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.eval.metrics import mask_iou
from edge_sam.flops import encoder_flops
from edge_sam.runner import TorchRunner, model_at_size
from edge_sam.image_sources import ImageSource, open_source, photo_crops
from edge_sam.fixed_prompts import prompts_for
from edge_sam.targets.validation.drift import full_size_masks
from edge_sam.train.resolution import ResolutionDistillConfig, distill_resolution
from edge_sam.transforms import image_to_tensor, read_image

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"
SAMPLE = ROOT / "edge_sam" / "assets" / "dogs.jpg"


def encoder_speed(checkpoint: str, fractions: list[float], rounds: int) -> list[dict]:
    """PyTorch eager encoder seconds at full size and each fraction, interleaved, min of rounds."""
    model = edge_sam.load_model(checkpoint)
    full = model.image_encoder.img_size
    sizes = [full] + [_size(full, f) for f in fractions]
    models = {size: model_at_size(model, size) for size in sizes}
    image = image_to_tensor(read_image(SAMPLE))
    best = {size: float("inf") for size in sizes}
    loads = []
    with torch.inference_mode():
        for m in models.values():
            m.get_image_embeddings(image)
        for _ in range(rounds):
            loads.append(os.getloadavg()[0])
            for size, m in models.items():
                start = time.perf_counter()
                m.get_image_embeddings(image)
                best[size] = min(best[size], time.perf_counter() - start)
    return [{"img_size": size, "encoder_s": best[size], "speedup_vs_full": best[full] / best[size],
             "flop_ratio": encoder_flops(model.config).total / encoder_flops(model.config, size).total,
             "loadavg": f"{min(loads):.1f}-{max(loads):.1f}"} for size in sizes]


def _size(full: int, fraction: float, patch: int = 16) -> int:
    return max(patch, round(full * fraction / patch) * patch)


def mask_drift(teacher: TorchRunner, student: TorchRunner, source: ImageSource) -> dict:
    """Mask IoU of ``student`` vs ``teacher`` at image size, per prompt (drift report's measure)."""
    ious = []
    for sample in source.samples():
        hw = sample.image.shape[:2]
        ref_embedding, embedding = teacher.encode(sample.image), student.encode(sample.image)
        for prompt in prompts_for(sample, 3, 8):
            ref_low, ref_iou = teacher.decode(ref_embedding, prompt.points, prompt.labels, hw)
            low, _ = student.decode(embedding, prompt.points, prompt.labels, hw)
            top = int(np.argmax(ref_iou[0]))
            ious.append(mask_iou(full_size_masks(low, hw)[top], full_size_masks(ref_low, hw)[top]))
    return {"mean": float(np.mean(ious)), "p5": float(np.percentile(ious, 5)), "prompts": len(ious)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-checkpoint", default=str(PARITY))
    parser.add_argument("--fidelity-checkpoint", default="reference")
    parser.add_argument("--fractions", default="0.5,0.75", help="reduced sizes as fractions of the full size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="distillation steps (0: none)")
    parser.add_argument("--lr", type=float, default=ResolutionDistillConfig.lr)
    parser.add_argument("--embedding-weight", type=float, default=ResolutionDistillConfig.embedding_weight)
    parser.add_argument("--mask-weight", type=float, default=ResolutionDistillConfig.mask_weight)
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    parser.add_argument("--train-images", default=None, help="distillation images (default: 24 synthetic, seed 1)")
    parser.add_argument("--eval-images", default=None, help="held-out images (default: 8 photo crops + 16 synthetic, seed 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fractions = [float(f) for f in args.fractions.split(",") if f]
    results: dict = {"args": vars(args)}

    results["speed"] = [] if args.no_speed else encoder_speed(args.speed_checkpoint, fractions, args.rounds)
    print(f"# encoder speed, PyTorch eager (SDPA), {Path(args.speed_checkpoint).name}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds (min)")
    print("| input px | encoder s | speed-up vs full | FLOP ratio | load |\n| ---: | ---: | ---: | ---: | --- |")
    for row in results["speed"]:
        print(f"| {row['img_size']} | {row['encoder_s']:.3f} | {row['speedup_vs_full']:.2f}x | {row['flop_ratio']:.2f}x | "
              f"{row['loadavg']} |")

    teacher_model = edge_sam.load_model(args.fidelity_checkpoint)
    full = teacher_model.image_encoder.img_size
    with tempfile.TemporaryDirectory(prefix="resolution-drift-") as work:
        work = Path(work)
        eval_sets = _eval_sets(args.eval_images, work)
        train_images = _train_images(args.train_images, work, full)
        teacher = TorchRunner(teacher_model)
        rows = []
        for fraction in fractions:
            size = _size(full, fraction)
            before = TorchRunner(teacher_model, size)
            row = {"img_size": size, "full_size": full}
            for name, source in eval_sets.items():
                row[f"before_{name}"] = mask_drift(teacher, before, source)
            if args.steps:
                config = ResolutionDistillConfig(img_size=size, steps=args.steps, lr=args.lr,
                                                 embedding_weight=args.embedding_weight, mask_weight=args.mask_weight)
                start = time.perf_counter()
                distilled = distill_resolution(teacher_model, train_images, config)
                row["distill_s"] = time.perf_counter() - start
                after = TorchRunner(distilled)
                for name, source in eval_sets.items():
                    row[f"after_{name}"] = mask_drift(teacher, after, source)
            rows.append(row)
    results["fidelity"] = rows
    print(f"\n# mask IoU vs the fp32 model at {full} px ({args.fidelity_checkpoint}), held-out images; "
          f"distillation: {args.steps} steps on {len(train_images)} other images")
    names = list(eval_sets)
    print("| input px | " + " | ".join(f"{n} before (mean / p5) | {n} after" for n in names) + " |")
    print("| ---: | " + " | ".join("---: | ---:" for _ in names) + " |")
    for row in rows:
        cells = []
        for n in names:
            b, a = row[f"before_{n}"], row.get(f"after_{n}")
            cells.append(f"{b['mean']:.4f} / {b['p5']:.4f}")
            cells.append(f"{a['mean']:.4f} / {a['p5']:.4f}" if a else "-")
        print(f"| {row['img_size']} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _eval_sets(path: str | None, work: Path) -> dict[str, ImageSource]:
    if path:
        return {"images": open_source(path)}
    from edge_sam.data import generate_synthetic

    splits = generate_synthetic(work / "eval", {"test": 16}, seed=2, progress=False)
    return {"photo crops": photo_crops(read_image(SAMPLE), work / "crops"), "synthetic": open_source(splits["test"])}


def _train_images(path: str | None, work: Path, size: int) -> ImageSource:
    if path:
        return open_source(path)
    from edge_sam.data import generate_synthetic

    splits = generate_synthetic(work / "train", {"train": 24}, img_size=max(size, 256), seed=1, progress=False)
    return open_source(splits["train"])


if __name__ == "__main__":
    main()
