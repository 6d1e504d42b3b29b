"""``edge-sam export``: a checkpoint -> an artifact folder for one target (files + manifest.json)."""

from __future__ import annotations

import argparse

import edge_sam
from edge_sam.quantize.recipes import RECIPES
from edge_sam.quantize.weight_only import WEIGHT_ONLY_RECIPES
from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.target import INTERFACES, PRECISIONS
from edge_sam.targets.core.calibration import open_source
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import get_target, target_names

from .common import add_checkpoint_argument
from .target_flags import add_target_flags, given_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export the model to a runtime (ONNX, ...) as an artifact folder")
    parser.add_argument("--target", required=True, choices=target_names())
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--interface", default="deploy", choices=INTERFACES,
                        help="deploy: fixed-size graphs, host preprocessing (default); official: the EfficientSAM "
                             "ONNX interface labelme / osam / X-AnyLabeling load (onnx only)")
    parser.add_argument("--recipe", choices=sorted(RECIPES) + sorted(WEIGHT_ONLY_RECIPES),
                        help="int8 quantization recipe (default static-conv-linear)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="calibration images for static int8: an image folder or a dataset")
    parser.add_argument("--calibration-images", type=int, default=None, metavar="N",
                        help="use the first N calibration images (default: the recipe's count)")
    parser.add_argument("--img-size", type=int, default=None, help="model input size (default: the checkpoint's)")
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, help="artifact folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    add_target_flags(parser, "export")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    options = given_options(args, "export", [args.target])[args.target]
    target = get_target(args.target)
    target.check_toolchain("export")
    model = edge_sam.load_model(args.checkpoint)
    calibration = open_source(args.calibration) if args.calibration else None
    out = target.export(
        model, args.precision, args.recipe, args.out, calibration=calibration, img_size=args.img_size,
        interface=args.interface, checkpoint=args.checkpoint, overwrite=args.overwrite,
        calibration_images=args.calibration_images, **options,
    )
    manifest = read_manifest(out)
    sizes = ", ".join(f"{name} {info['bytes'] / 1e6:.1f} MB" for name, info in manifest.files.items())
    recipe = f", recipe {manifest.recipe['name']}" if manifest.recipe else ""
    print(f"wrote {out}: {manifest.target} {manifest.interface} {manifest.precision}{recipe}, "
          f"img_size {manifest.img_size}; {sizes}")
    return 0
