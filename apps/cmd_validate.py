"""``edge-sam validate``: artifacts vs the fp32 PyTorch model on the same images and prompts
(a thin command over :func:`edge_sam.targets.validate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.validation.drift import DriftReport
from edge_sam.targets.validation.report import markdown_table
from edge_sam.targets.validation.validate import FidelityGateError, validate

from .common import add_checkpoint_argument
from .device_flags import add_device_flags, add_torch_flags, device_settings, torch_runs
from .target_flags import add_target_flags, given_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate", help="drift of exported artifacts vs the fp32 model: mask IoU, SQNR, latency, size, memory"
    )
    parser.add_argument("artifacts", nargs="*", metavar="ARTIFACT_DIR",
                        help="artifact folders written by export (none: only --torch-device rows)")
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
    add_torch_flags(parser)
    add_device_flags(parser)
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    options = given_options(args, "runtime", [read_manifest(path).target for path in args.artifacts])
    return report_and_gate(
        lambda: validate(
            args.artifacts, checkpoint=args.checkpoint, images=args.images, dataset=args.dataset,
            report_dir=args.report, runtime_options=options, max_images=args.max_images,
            max_objects=args.max_objects, measure_memory=not args.no_memory, layers=not args.no_layers,
            fail_under_mask_iou=args.fail_under_mask_iou, torch_runs=torch_runs(args), on=args.on or (),
            device_settings=device_settings(args),
        ),
        Path(args.report),
    )


def report_and_gate(run, report_dir: Path) -> int:
    """Run a validation, print its table and where the report is; exit 1 (one line on stderr)
    when the mask-IoU gate fails, the table still printed."""
    try:
        report: DriftReport = run()
        failure = None
    except FidelityGateError as exc:
        report, failure = exc.report, exc
    print(markdown_table(report))
    print(f"report: {report_dir / 'report.html'}")
    if failure is not None:
        print(f"edge-sam: {failure}", file=sys.stderr)
        return 1
    return 0
