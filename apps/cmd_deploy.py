"""``edge-sam deploy``: the main job in one command (the logic is :mod:`edge_sam.targets.deploy`)."""

from __future__ import annotations

import argparse

from edge_sam.targets.core.registry import target_names
from edge_sam.targets.core.target import PRECISIONS
from edge_sam.targets.deploy import deploy
from edge_sam.targets.deploy.plan import parse_list
from edge_sam.quantize.ladder import RUNG_NAMES
from edge_sam.targets.deploy.ladder import SEARCH_MARGIN
from edge_sam.targets.deploy.run import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_GATE,
    DEFAULT_GATE_P5,
    DEFAULT_HELD_OUT_IMAGES,
    DEFAULT_PRECISIONS,
    DEFAULT_SEARCH_IMAGES,
)
from edge_sam.targets.deploy.summary import ship_table

from .common import add_checkpoint_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="export every installed target, validate on held-out images, say what to ship",
        description="Export the checkpoint to every requested (target, precision) whose toolchain is installed; for "
        "int8, climb each target's INT8 ladder (full static, a mixed-precision recipe searched for this checkpoint, "
        "16-bit activations, dynamic, weight-only) on search images until a form holds the gate; validate every "
        "artifact against the fp32 model on held-out images (never calibrated or chosen on), and write "
        "OUT/<target>-<precision>[-<rung>]/, OUT/report/ and OUT/summary.md (which artifact to ship per target and "
        "why). Artifacts whose manifest still matches are reused. Exit 1 when a target has no artifact that passes.",
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--images", metavar="DIR", default=None,
                        help="image folder, split into calibration and held-out images (default: the bundled "
                             "synthetic scenes and photo crops)")
    parser.add_argument("--out", default="deploy_out", metavar="OUT", help="output folder (default: deploy_out)")
    parser.add_argument("--targets", metavar="LIST", default=None,
                        help=f"comma-separated, from {', '.join(target_names())} (default: every installed one)")
    parser.add_argument("--precisions", metavar="LIST", default=",".join(DEFAULT_PRECISIONS),
                        help=f"comma-separated, from {', '.join(PRECISIONS)} (default: all)")
    parser.add_argument("--int8", default="any", metavar="LADDER",
                        help=f"which INT8 forms to climb: any (default: every rung a target takes), full-integer (the "
                             f"rungs an NPU or the Neural Engine runs: static, mixed, a16), or one rung "
                             f"({', '.join(RUNG_NAMES)})")
    parser.add_argument("--recipe", metavar="NAME|FILE", default=None,
                        help="skip the ladder: one int8 quantization recipe name or recipe file for every target")
    parser.add_argument("--min-mask-iou", type=float, default=DEFAULT_GATE, metavar="X",
                        help=f"gate: mean mask IoU vs fp32 an artifact must reach (default {DEFAULT_GATE})")
    parser.add_argument("--min-mask-iou-p5", type=float, default=DEFAULT_GATE_P5, metavar="X",
                        help=f"gate: 5th-percentile mask IoU vs fp32 (default {DEFAULT_GATE_P5})")
    parser.add_argument("--search-margin", type=_margin, default=SEARCH_MARGIN, metavar="MEAN,P5",
                        help=f"how much more than the gate an INT8 form must hold on the search images to be chosen "
                             f"(default {SEARCH_MARGIN[0]},{SEARCH_MARGIN[1]})")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                        help=f"images to calibrate int8 on (default {DEFAULT_CALIBRATION_IMAGES})")
    parser.add_argument("--search-images", type=int, default=DEFAULT_SEARCH_IMAGES, metavar="N",
                        help=f"images each INT8 form is chosen on (default {DEFAULT_SEARCH_IMAGES})")
    parser.add_argument("--held-out-images", type=int, default=DEFAULT_HELD_OUT_IMAGES, metavar="N",
                        help=f"images every shipped number is measured on, none of them calibrated or chosen on "
                             f"(default {DEFAULT_HELD_OUT_IMAGES})")
    parser.add_argument("--force", action="store_true", help="rebuild artifacts even when their manifest matches")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each runner's peak RSS (a subprocess per artifact; slower)")
    parser.add_argument("--no-layers", action="store_true", help="skip per-layer drift")
    parser.set_defaults(run=run_deploy)


def _margin(text: str) -> tuple[float, float]:
    try:
        mean, p5 = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"two numbers, mean and p5 (e.g. 0.01,0.03), not {text!r}") from None
    return mean, p5


def run_deploy(args: argparse.Namespace) -> int:
    result = deploy(
        args.out,
        checkpoint=args.checkpoint,
        images=args.images,
        targets=parse_list(args.targets, target_names(), "target"),
        precisions=parse_list(args.precisions, PRECISIONS, "precision"),
        recipe=args.recipe,
        int8=args.int8,
        min_mask_iou=args.min_mask_iou,
        min_mask_iou_p5=args.min_mask_iou_p5,
        search_margin=args.search_margin,
        force=args.force,
        calibration_images=args.calibration_images,
        search_images=args.search_images,
        held_out_images=args.held_out_images,
        measure_memory=args.memory,
        layers=not args.no_layers,
    )
    print(ship_table(result.choices))
    for ladder in result.ladders.values():
        if not ladder.passed:
            print(f"{ladder.target}: {ladder.verdict()}")
    print(f"summary: {result.summary_path}")
    print(f"report: {result.report_dir / 'report.html'}")
    return 0 if result.ok else 1
