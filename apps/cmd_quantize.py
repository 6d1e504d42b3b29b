"""``edge-sam quantize``: per-layer INT8 sensitivity, automatic mixed precision, PTQ/mixed/QAT compared.

- ``sensitivity``: rank the encoder's layers by the error INT8 adds there (table in JSON + Markdown);
- ``mixed``: the fewest float layers that keep mask IoU vs fp32 within a budget -> a recipe file
  every INT8 target's export takes (``edge-sam export --recipe FILE``);
- ``compare``: per INT8 target, PTQ / mixed / QAT / QAT+mixed artifacts measured on held-out
  images (and real-photo crops);
- ``qat``: quantization-aware finetuning (:mod:`edge_sam.apps.cmd_quantize_qat`).

Each command splits ``--images`` the same way: the first ``--calibration-images`` calibrate, the
rest are held out for every fidelity number.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import edge_sam
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.recipes import DEFAULT_RECIPE
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.quantize.studies.simulate import DEFAULT_TARGET, SIMULATION_QUANTIZERS, check_simulated
from edge_sam.runner import model_at_size

from edge_sam.image_sources import open_source

from .cmd_export import recipe_argument
from .common import add_checkpoint_argument
from .cmd_quantize_qat import add_qat_parser

INT8_TARGETS = tuple(sorted(SIMULATION_QUANTIZERS))


def register(subparsers: argparse._SubParsersAction) -> None:
    quantize = subparsers.add_parser("quantize", help="INT8 layer sensitivity, mixed precision, QAT, and how they compare")
    commands = quantize.add_subparsers(dest="quantize_command", required=True, metavar="QUANTIZE_COMMAND")

    sensitivity = commands.add_parser("sensitivity", help="rank encoder layers by the mask drift INT8 causes there")
    _add_study_arguments(sensitivity, targets_help=f"whose INT8 quantizer to simulate (default {DEFAULT_TARGET})",
                         many_targets=False)
    sensitivity.add_argument("--out", required=True, metavar="DIR", help="folder for sensitivity.json and sensitivity.md")
    sensitivity.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    sensitivity.set_defaults(run=run_sensitivity)

    mixed = commands.add_parser("mixed", help="the fewest float layers within a mask-IoU budget -> a recipe file")
    _add_study_arguments(mixed, targets_help="comma-separated targets the recipe must hold on (default "
                         f"{DEFAULT_TARGET}; e.g. onnx,executorch,tflite,coreml)", many_targets=True)
    mixed.add_argument("--min-mask-iou", type=float, default=0.98, metavar="X",
                       help="mean mask IoU vs fp32 on the held-out prompts (default 0.98)")
    mixed.add_argument("--min-mask-iou-p5", type=float, default=0.95, metavar="X",
                       help="5th-percentile mask IoU vs fp32 on the held-out prompts (default 0.95)")
    mixed.add_argument("--max-float", type=int, default=None, metavar="N", help="keep at most N layers float")
    mixed.add_argument("--fallback", choices=("float", "a16"), default="float",
                       help="what a layer the budget needs out of INT8 becomes: float (default), or a16: static with "
                            "int16 activations, so the recipe stays integer (targets with 16-bit activations: onnx, tflite)")
    mixed.add_argument("--sensitivity", metavar="DIR|FILE.json",
                       help="reuse the ranking of an earlier `quantize sensitivity` run (its folder) or of an earlier "
                            "`quantize mixed` (its recipe file), e.g. to search again under another budget")
    mixed.add_argument("--out", required=True, metavar="FILE.json", help="recipe file to write")
    mixed.add_argument("--name", default=None, help="the recipe's name in manifests (default: the file's stem)")
    mixed.add_argument("--overwrite", action="store_true", help="replace an existing recipe file")
    mixed.set_defaults(run=run_mixed)

    compare = commands.add_parser("compare", help="PTQ / mixed / QAT / QAT+mixed per INT8 target, on held-out images")
    add_checkpoint_argument(compare)
    compare.add_argument("--images", required=True, metavar="DIR", help="image folder or dataset, split into "
                         "calibration (first N) and held-out images")
    compare.add_argument("--calibration-images", type=int, default=8, metavar="N", help="images that calibrate (default 8)")
    compare.add_argument("--held-out-images", type=int, default=None, metavar="N", help="held-out images (default: the rest)")
    compare.add_argument("--photo-crops", action="store_true",
                         help="also measure on crops of the bundled real photo dogs.jpg (never calibrated on)")
    compare.add_argument("--extra-held-out", action="append", default=[], metavar="DIR",
                         help="another image folder or dataset to measure on (repeatable; never calibrated on)")
    compare.add_argument("--mixed", metavar="FILE.json", help="the mixed-precision recipe file (mixed rows need it)")
    compare.add_argument("--qat", metavar="CKPT", help="a QAT checkpoint from `quantize qat` (QAT rows need it)")
    compare.add_argument("--targets", default=",".join(INT8_TARGETS),
                         help=f"comma-separated INT8 targets (default {','.join(INT8_TARGETS)})")
    compare.add_argument("--recipe", type=recipe_argument, default=DEFAULT_RECIPE, metavar="NAME",
                         help=f"the PTQ recipe (default {DEFAULT_RECIPE})")
    compare.add_argument("--img-size", type=int, default=None, help="model input size (default: the checkpoint's)")
    compare.add_argument("--min-mask-iou", type=float, default=None, metavar="X",
                         help="the gate rows are held to, mean mask IoU (default: the --mixed file's budget, else 0.98)")
    compare.add_argument("--min-mask-iou-p5", type=float, default=None, metavar="X",
                         help="the gate's 5th percentile (default: the --mixed file's budget, else 0.95)")
    compare.add_argument("--out", required=True, metavar="DIR", help="folder for compare.json and compare.md")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    compare.add_argument("--keep-artifacts", action="store_true", help="keep the exported artifacts in OUT/artifacts")
    compare.set_defaults(run=run_compare)

    add_qat_parser(commands)


def _add_study_arguments(parser: argparse.ArgumentParser, targets_help: str, many_targets: bool) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="image folder or dataset: the first N calibrate, the rest are held out for scoring")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=targets_help)
    parser.add_argument("--recipe", type=recipe_argument, default=DEFAULT_RECIPE, metavar="NAME",
                        help=f"the static recipe whose layers are studied (default {DEFAULT_RECIPE})")
    parser.add_argument("--calibration-images", type=int, default=8, metavar="N", help="images that calibrate (default 8)")
    parser.add_argument("--held-out-images", type=int, default=16, metavar="N", help="held-out images scored (default 16)")
    parser.add_argument("--extra-held-out", action="append", default=[], metavar="DIR",
                        help="another image folder or dataset scored too, none of it calibrating (repeatable); "
                             "every metric is the worst over the held-out sets")
    parser.add_argument("--img-size", type=int, default=None, help="model input size (default: the checkpoint's)")


def _targets(text: str) -> list[str]:
    targets = [t for t in text.split(",") if t]
    unknown = [t for t in targets if t not in SIMULATION_QUANTIZERS]
    if unknown or not targets:
        raise EdgeSamError(f"unknown INT8 target(s) {', '.join(unknown) or '(none given)'} (choose from {', '.join(INT8_TARGETS)})")
    return targets


def _studies(args: argparse.Namespace, targets: list[str], fallback: str = "float"):
    """The model, recipe, split and one LayerStudy per target, after every input is checked."""
    from edge_sam.quantize.studies.heldout import HeldOutSet, split_images
    from edge_sam.quantize.studies.sensitivity import LayerStudy

    recipe = get_recipe(args.recipe)
    check_simulated(recipe)
    source = open_source(args.images)
    for extra in args.extra_held_out:
        if Path(extra).resolve() == source.path.resolve():
            raise EdgeSamError(f"--extra-held-out {extra} is the --images folder, whose first images calibrate")
    calibration, held_out = split_images(source, args.calibration_images, args.held_out_images)
    model = edge_sam.load_model(args.checkpoint)
    size = args.img_size or model.image_encoder.img_size
    model = model_at_size(model, size)
    held = [HeldOutSet(model, held_out, size)] + [HeldOutSet(model, open_source(d), size) for d in args.extra_held_out]
    return model, recipe, [LayerStudy(model, recipe, target, calibration, held, fallback) for target in targets]


def run_sensitivity(args: argparse.Namespace) -> int:
    from edge_sam.quantize.studies.sensitivity import MARKDOWN_NAME, measure_sensitivity, write_sensitivity

    targets = _targets(args.target)
    if len(targets) != 1:
        raise EdgeSamError(f"sensitivity ranks layers for one --target at a time, got {args.target}")
    _, _, (study,) = _studies(args, targets)
    report = measure_sensitivity(study)
    out = write_sensitivity(report, args.out, overwrite=args.overwrite)
    print(report.markdown())
    print(f"wrote {out / MARKDOWN_NAME} and {out / 'sensitivity.json'}")
    return 0


def run_mixed(args: argparse.Namespace) -> int:
    from edge_sam.quantize.studies.mixed import Budget, find_mixed_recipe
    from edge_sam.quantize.recipe_file import write_recipe_file

    budget = Budget(args.min_mask_iou, args.min_mask_iou_p5)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise EdgeSamError(f"{out} already exists (pass --overwrite to replace it)")
    if out.suffix != ".json":
        raise EdgeSamError(f"a recipe file ends in .json, not {out.name}")
    if args.max_float is not None and args.max_float < 0:
        raise EdgeSamError(f"--max-float must be 0 or more, got {args.max_float}")
    earlier = _earlier_ranking(args.sensitivity) if args.sensitivity else None
    model, recipe, studies = _studies(args, _targets(args.target), fallback=args.fallback)
    ranking = None
    if earlier is not None:
        setup, ranking = earlier
        _check_same_setup(setup, studies[0])
    mixed, result, provenance = find_mixed_recipe(
        model, recipe, studies, budget, args.name or out.stem, command="edge-sam quantize mixed", ranking=ranking,
        max_float=args.max_float, fallback=args.fallback, progress=print)
    provenance["checkpoint"] = str(args.checkpoint)
    write_recipe_file(mixed, out, provenance)
    print(f"every layer INT8: mask IoU mean {result.full_int8.mask_iou_mean:.4f}, p5 {result.full_int8.mask_iou_p5:.4f}")
    print(f"{len(result.float_layers)} of {len(studies[0].layers)} layers {args.fallback}: {', '.join(result.float_layers) or 'none'}")
    print(f"mixed: mask IoU mean {result.fidelity.mask_iou_mean:.4f}, p5 {result.fidelity.mask_iou_p5:.4f} "
          f"(simulated, worst of {', '.join(s.target for s in studies)}); "
          f"{100 * result.int8_flop_share:.1f}% of the encoder's FLOPs run INT8")
    print(f"wrote {out}; export with: edge-sam export --precision int8 --recipe {out} --target TARGET --calibration DIR")
    return 0


def _earlier_ranking(path: str) -> tuple[dict, list[str]]:
    """(setup, ranking) of an earlier `quantize mixed` recipe file or `quantize sensitivity` report."""
    from edge_sam.quantize.recipe_file import load_recipe_file
    from edge_sam.quantize.recipes import RecipeError
    from edge_sam.quantize.studies.sensitivity import read_sensitivity

    try:
        recipe, provenance = load_recipe_file(path)
    except RecipeError:  # not a recipe file: a sensitivity report (its folder or its JSON)
        report = read_sensitivity(path)
        return report.setup, report.ranking
    if "ranking" not in provenance:
        raise EdgeSamError(f"{path} is a recipe file without a recorded ranking (not written by `quantize mixed`)")
    return {"recipe": recipe.base, "img_size": provenance.get("img_size")}, provenance["ranking"]


def _check_same_setup(setup: dict, study) -> None:
    """An earlier sensitivity ranking applies only to the same recipe and img_size."""
    for key, now in (("recipe", study.recipe.name), ("img_size", study.img_size)):
        if setup.get(key) != now:
            raise EdgeSamError(f"--sensitivity was measured with {key} {setup.get(key)}, this run uses {now}")


def run_compare(args: argparse.Namespace) -> int:
    from edge_sam.quantize.studies.compare import MARKDOWN_NAME, CompareRows, compare

    rows = CompareRows(ptq=args.recipe, mixed=args.mixed, qat=args.qat)
    report = compare(
        args.out, checkpoint=args.checkpoint, images=args.images, targets=_targets(args.targets), rows=rows,
        calibration_images=args.calibration_images, held_out_images=args.held_out_images,
        with_photo_crops=args.photo_crops, extra_held_out=args.extra_held_out, img_size=args.img_size, overwrite=args.overwrite,
        keep_artifacts=args.keep_artifacts, min_mask_iou=args.min_mask_iou, min_mask_iou_p5=args.min_mask_iou_p5,
    )
    print(report.markdown())
    print(f"wrote {Path(args.out) / MARKDOWN_NAME} and compare.json")
    return 0
