"""``edge-sam segment``, ``edge-sam everything`` and ``edge-sam demo``: the model on an image.

``segment`` and ``everything`` run the PyTorch model of ``--checkpoint`` by default, or with
``--artifact DIR`` an exported artifact through its runtime (same prompts, same checks)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import edge_sam
from edge_sam.errors import EdgeSamError
from edge_sam.staging import staged_dir
from edge_sam.everything import EverythingConfig, EverythingGenerator
from edge_sam.predictor import Predictor, Prompt, prompt_to_points
from edge_sam.targets.core.registry import load_runner
from edge_sam.transforms import read_image, write_image
from edge_sam.visualize import draw_prompts, overlay_masks

from .common import (
    DEFAULT_CHECKPOINT,
    add_checkpoint_argument,
    add_image_argument,
    image_path,
    parse_box,
    parse_point,
    points_and_labels,
)

# The black dog in the bundled photo: the demo's box prompt.
DEMO_BOX = (575.0, 225.0, 775.0, 592.0)
# SAM's everything-mode defaults (IoU 0.88, stability 0.95) keep nothing from the reference model:
# trained briefly on synthetic data at 256, its IoU head predicts 0.1-0.4 and its logits are soft.
DEMO_EVERYTHING = EverythingConfig(points_per_side=16, pred_iou_thresh=0.2, stability_score_thresh=0.3)


def register(subparsers: argparse._SubParsersAction) -> None:
    seg = subparsers.add_parser("segment", help="segment an object from point and/or box prompts")
    add_image_argument(seg)
    add_model_arguments(seg)
    seg.add_argument("--point", action="append", type=parse_point, metavar="X,Y[,LABEL]",
                     help="prompt point in image pixels; LABEL 1 foreground (default), 0 background; repeatable")
    seg.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt in image pixels")
    seg.add_argument("--out", required=True, help="mask PNG to write (255 = object)")
    seg.add_argument("--overlay", help="also write the image with the mask and prompts drawn on it")
    seg.set_defaults(run=run_segment)

    every = subparsers.add_parser("everything", help="segment everything in an image (point-grid prompts)")
    add_image_argument(every)
    add_model_arguments(every)
    every.add_argument("--out", required=True, help="new folder for masks.json, overlay.png and one PNG per mask")
    every.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    every.add_argument("--points-per-side", type=int, default=32)
    every.add_argument("--points-per-batch", type=int, default=EverythingConfig.points_per_batch, help="prompts decoded at once (bounds memory)")
    every.add_argument("--pred-iou-thresh", type=float, default=EverythingConfig.pred_iou_thresh)
    every.add_argument("--stability-thresh", type=float, default=EverythingConfig.stability_score_thresh)
    every.set_defaults(run=run_everything)

    demo = subparsers.add_parser("demo", help="the bundled model on the bundled photo: a box prompt and everything mode")
    demo.add_argument("--out", default="demo_out", help="new folder for the results (default: demo_out)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    demo.set_defaults(run=run_demo)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--artifact", metavar="DIR",
                        help="run an exported artifact folder (edge-sam export) instead of the PyTorch model")


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The PyTorch model of --checkpoint, or the runner of --artifact (its manifest names the runtime)."""
    if args.artifact is None:
        return Predictor(edge_sam.load_model(args.checkpoint))
    if args.checkpoint != DEFAULT_CHECKPOINT:
        raise EdgeSamError("--artifact runs the weights it was exported with: give --artifact or --checkpoint, not both")
    return Predictor(load_runner(args.artifact))


def segment_to_files(
    predictor: Predictor,
    image: np.ndarray,
    points: np.ndarray | None,
    labels: np.ndarray | None,
    box: np.ndarray | None,
    out: Path,
    overlay: Path | None,
) -> tuple[np.ndarray, float]:
    """Run one prompt, keep the candidate with the best predicted IoU, write the PNGs."""
    masks, scores, _ = predictor.predict(points, labels, box)
    best = int(np.argmax(scores))
    mask = masks[best]
    write_image(out, mask.astype(np.uint8) * 255)
    if overlay is not None:
        write_image(overlay, draw_prompts(overlay_masks(image, [mask]), points, labels, box))
    return mask, float(scores[best])


def run_segment(args: argparse.Namespace) -> int:
    points, labels = points_and_labels(args.point)
    box = np.asarray(args.box, np.float32) if args.box else None
    image = read_image(image_path(args.image))
    predictor = load_predictor(args)
    # Refuse a bad prompt before spending seconds on the encoder.
    prompt_to_points(Prompt(points, labels, box), image.shape[:2], predictor.max_slots)
    predictor.set_image(image)
    mask, score = segment_to_files(
        predictor, image, points, labels, box, Path(args.out), Path(args.overlay) if args.overlay else None
    )
    print(f"mask: {args.out} ({int(mask.sum())} px, predicted IoU {score:.3f})")
    return 0


def write_everything(records: list[dict], image: np.ndarray, out_dir: Path) -> None:
    masks = []
    for i, record in enumerate(records):
        write_image(out_dir / f"mask_{i:03d}.png", record["segmentation"].astype(np.uint8) * 255)
        masks.append(record["segmentation"])
    summary = [{k: v for k, v in r.items() if k != "segmentation"} | {"file": f"mask_{i:03d}.png"} for i, r in enumerate(records)]
    (out_dir / "masks.json").write_text(json.dumps(summary, indent=1))
    write_image(out_dir / "overlay.png", overlay_masks(image, masks))


def run_everything(args: argparse.Namespace) -> int:
    image = read_image(image_path(args.image))
    config = EverythingConfig(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_thresh,
    )
    generator = EverythingGenerator(load_predictor(args), config)
    with staged_dir(args.out, args.overwrite) as tmp:
        records = generator.generate(image)
        write_everything(records, image, tmp)
    print(f"{len(records)} masks written to {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    image = read_image(image_path(None))
    model = edge_sam.load_model("reference")
    predictor = Predictor(model)
    with staged_dir(args.out, args.overwrite) as tmp:
        start = time.perf_counter()
        predictor.set_image(image)
        encode_s = time.perf_counter() - start
        box = np.asarray(DEMO_BOX, np.float32)
        mask, score = segment_to_files(predictor, image, None, None, box, tmp / "box_mask.png", tmp / "box_overlay.png")
        records = EverythingGenerator(predictor, DEMO_EVERYTHING).generate()
        every_dir = tmp / "everything"
        every_dir.mkdir()
        write_everything(records, image, every_dir)
    print(f"model: reference (EfficientSAM-Ti, {model.config.img_size}px input), encoder {encode_s:.2f} s")
    print(f"box prompt {DEMO_BOX}: {int(mask.sum())} px, predicted IoU {score:.3f} -> {args.out}/box_overlay.png")
    side = DEMO_EVERYTHING.points_per_side
    print(f"everything ({side}x{side} grid, IoU >= {DEMO_EVERYTHING.pred_iou_thresh}, stability >= "
          f"{DEMO_EVERYTHING.stability_score_thresh}): {len(records)} masks -> {args.out}/everything/")
    return 0
