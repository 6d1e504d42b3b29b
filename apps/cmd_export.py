"""``edge-sam export``: a checkpoint -> an artifact folder for one target (files + manifest.json)."""

from __future__ import annotations

import argparse

import edge_sam
from edge_sam.quantize.recipes import RECIPE_FILE_SUFFIX, RECIPES, recipe_names
from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.target import INTERFACES, PRECISIONS
from edge_sam.image_sources import image_folder, open_source
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import get_target, target_names
from edge_sam.targets.validation.validate import default_report_dir, validate

from .cmd_validate import report_and_gate
from .common import add_checkpoint_argument
from .target_flags import add_target_flags, given_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export the model to a runtime (ONNX, ...) as an artifact folder")
    parser.add_argument("--target", required=True, choices=target_names())
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--interface", default="deploy", choices=INTERFACES,
                        help="deploy: fixed-size graphs, host preprocessing (default); official: the EfficientSAM "
                             "ONNX interface labelme / osam / X-AnyLabeling load (onnx only)")
    parser.add_argument("--recipe", type=recipe_argument, metavar="NAME|FILE",
                        help=f"int8 quantization recipe: {', '.join(recipe_names())} (default static-conv-linear), "
                             f"or a recipe file (*{RECIPE_FILE_SUFFIX}, from edge-sam quantize mixed)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="calibration images for static int8: an image folder or a dataset")
    parser.add_argument("--calibration-images", type=int, default=None, metavar="N",
                        help="use the first N calibration images (default: the recipe's count)")
    parser.add_argument("--img-size", type=int, default=None, help="model input size (default: the checkpoint's)")
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, help="artifact folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    parser.add_argument("--validate", action="store_true",
                        help="validate the new artifact against the fp32 model right after export (needs --images); "
                             "the report goes to OUT-validation/ beside the artifact")
    parser.add_argument("--images", metavar="DIR",
                        help="validation images for --validate (use images the model was not calibrated on)")
    add_target_flags(parser, "export")
    parser.set_defaults(run=run_export)


def recipe_argument(text: str) -> str:
    """A registry recipe name or a recipe file path (read, and checked against the model, at export)."""
    if text in RECIPES or text.endswith(RECIPE_FILE_SUFFIX):
        return text
    raise argparse.ArgumentTypeError(f"unknown recipe '{text}' (choose from {', '.join(recipe_names())}, "
                                     f"or give a recipe file *{RECIPE_FILE_SUFFIX})")


def run_export(args: argparse.Namespace) -> int:
    if args.validate != (args.images is not None):
        raise EdgeSamError("--validate and --images go together: --validate --images DIR")
    if args.validate:
        image_folder(args.images)  # a missing or empty folder fails now, not after the export
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
    if args.validate:
        report_dir = default_report_dir(out)
        return report_and_gate(
            lambda: validate([out], checkpoint=args.checkpoint, images=args.images, report_dir=report_dir), report_dir
        )
    return 0
