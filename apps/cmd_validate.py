"""``edge-sam validate``: artifacts vs the fp32 PyTorch model on the same images and prompts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import edge_sam
from edge_sam.errors import EdgeSamError
from edge_sam.runner import TorchRunner
from edge_sam.targets.core.target import check_source, verify_artifact
from edge_sam.targets.core.calibration import dataset_source, image_folder
from edge_sam.targets.validation.drift import measure_drift
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.validation.report import markdown_table, write_report

from .common import add_checkpoint_argument
from .target_flags import add_target_flags, given_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate", help="drift of exported artifacts vs the fp32 model: mask IoU, SQNR, latency, size, memory"
    )
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT_DIR", help="artifact folders written by export")
    add_checkpoint_argument(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images (grid-point and box prompts are generated)")
    source.add_argument("--dataset", metavar="PATH", help="dataset with masks (box + centre click per object, GT mIoU)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--max-objects", type=int, default=8, metavar="N", help="objects prompted per dataset image")
    parser.add_argument("--report", required=True, metavar="DIR", help="folder for report.json/.md/.html")
    parser.add_argument("--fail-under-mask-iou", type=float, default=None, metavar="X",
                        help="exit 1 when any artifact's mean mask IoU vs fp32 is below X")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocess probes")
    parser.add_argument("--no-layers", action="store_true", help="skip per-layer drift")
    add_target_flags(parser, "runtime")
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    if args.max_images is not None and args.max_images < 1:
        raise EdgeSamError(f"--max-images must be at least 1, got {args.max_images}")
    model = edge_sam.load_model(args.checkpoint)
    manifests = [verify_artifact(path) for path in args.artifacts]
    sizes = sorted({m.img_size for m in manifests})
    if len(sizes) > 1:
        raise EdgeSamError(f"validate artifacts of one img_size per run (got {', '.join(map(str, sizes))})")
    for path, manifest in zip(args.artifacts, manifests):
        check_source(manifest, model, path)
    targets = [get_target(m.target) for m in manifests]
    options = given_options(args, "runtime", [m.target for m in manifests])
    runners = [t.load(path, **options[t.name]) for t, path in zip(targets, args.artifacts)]
    source = image_folder(args.images, args.max_images) if args.images else dataset_source(args.dataset, args.max_images)

    def layer_drift(index: int, images):
        return targets[index].layer_drift(Path(args.artifacts[index]), runners[index], model, images)

    report = measure_drift(
        TorchRunner(model, sizes[0]), runners, source, artifact_dirs=list(args.artifacts),
        max_objects=args.max_objects, measure_memory=not args.no_memory, checkpoint=args.checkpoint,
        layer_drift=None if args.no_layers else layer_drift,
    )
    out = write_report(report, args.report)
    print(markdown_table(report))
    print(f"report: {out / 'report.html'}")
    if args.fail_under_mask_iou is not None:
        failing = report.below(args.fail_under_mask_iou)
        if failing:
            names = ", ".join(f"{r.info['label']} ({r.summary()['mask_iou_mean']:.4f})" for r in failing)
            print(f"edge-sam: mask IoU vs fp32 below {args.fail_under_mask_iou}: {names}", file=sys.stderr)
            return 1
    return 0
