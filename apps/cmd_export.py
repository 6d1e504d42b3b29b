"""``edge-sam export``: a checkpoint -> an artifact folder for one target (files + manifest.json)."""

from __future__ import annotations

import argparse

import edge_sam
from edge_sam.quantize.recipes import RECIPES
from edge_sam.quantize.weight_only import WEIGHT_ONLY_RECIPES
from edge_sam.errors import EdgeSamError
from edge_sam.targets.base import INTERFACES, PRECISIONS
from edge_sam.targets.executorch_lowering import DELEGATES
from edge_sam.targets.calibration import open_source
from edge_sam.targets.manifest import read_manifest
from edge_sam.targets.registry import get_target, target_names

from .common import add_checkpoint_argument


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
    parser.add_argument("--delegate", choices=sorted(DELEGATES),
                        help="executorch only: the backend the .pte is lowered to (default xnnpack; coreml "
                             "artifacts run on Apple devices and macOS only)")
    parser.add_argument("--int8-io", action="store_true",
                        help="tflite static int8 only: keep the int8 graph inputs/outputs (scales in the manifest)")
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, help="artifact folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    parser.set_defaults(run=run_export)


# CLI options that only one target takes: export keyword (= argparse dest) -> target name.
TARGET_OPTIONS = {"delegate": "executorch", "int8_io": "tflite"}


def _target_options(args: argparse.Namespace) -> dict[str, object]:
    """The target-specific options that were given; one error if one was given to another target."""
    given = {name: getattr(args, name) for name in TARGET_OPTIONS if getattr(args, name)}
    for name, target in TARGET_OPTIONS.items():
        if name in given and args.target != target:
            raise EdgeSamError(f"--{name.replace('_', '-')} applies to --target {target} only")
    return given


def run_export(args: argparse.Namespace) -> int:
    options = _target_options(args)
    target = get_target(args.target)
    target.check_toolchain()
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
