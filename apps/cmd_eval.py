"""``edge-sam eval``: prompted-segmentation mIoU (box, 1-click, n-click) of a checkpoint on a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import edge_sam
from edge_sam.data import open_dataset
from edge_sam.data.codec import write_bytes_atomic
from edge_sam.errors import EdgeSamError
from edge_sam.eval import MODES, evaluate
from edge_sam.predictor import Predictor

from .common import add_checkpoint_argument


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {unknown or text!r}; choose from {','.join(MODES)}")
    return modes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="mIoU of box / 1-click / n-click prompts against ground truth")
    add_checkpoint_argument(parser)
    parser.add_argument("--dataset", required=True, help="SA-1B folder, COCO instances .json, or COCO root folder")
    parser.add_argument("--modes", type=_modes, default=MODES, help=f"comma-separated (default {','.join(MODES)})")
    parser.add_argument("--n-clicks", type=int, default=3, help="clicks in n-click mode, 1-6 (default 3)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--single-mask-box", action="store_true",
                        help="use the single-mask output for boxes (default: best of the 3 by predicted IoU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.max_images is not None and args.max_images < 1:
        raise EdgeSamError(f"--max-images must be at least 1, got {args.max_images}")
    dataset = open_dataset(args.dataset)
    predictor = Predictor(edge_sam.load_model(args.checkpoint, device=args.device))
    result = evaluate(
        predictor,
        dataset,
        modes=args.modes,
        n_clicks=args.n_clicks,
        max_images=args.max_images,
        box_multimask=not args.single_mask_box,
    )
    print(result.format_table())
    if args.json_out:
        report = {"checkpoint": str(args.checkpoint), "dataset": str(args.dataset), **result.to_dict()}
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(Path(args.json_out), json.dumps(report, indent=2).encode("utf-8"))
        print(f"wrote {args.json_out}")
    return 0
