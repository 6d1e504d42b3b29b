"""``edge-sam bench --table``: one benchmark table over artifacts, exports made first, the
PyTorch model and the reference eager encoder (:mod:`edge_sam.targets.benchmarking`).

    edge-sam bench --table out/onnx-fp32 out/tflite-int8 --checkpoint CKPT --out bench/
    edge-sam bench --table --checkpoint CKPT --export onnx:fp32 --export onnx:fp32:attention=fused \\
        --export tflite:int8:dynamic-linear --images val/ --out bench/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sam.errors import EdgeSamError


def add_table_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("one table over many paths (--table)")
    group.add_argument("--table", nargs="*", metavar="ARTIFACT_DIR", default=None,
                       help="time these artifact folders, the --export artifacts, the PyTorch model (--checkpoint) and "
                            "the reference eager encoder in interleaved rounds, one process per runtime")
    group.add_argument("--export", action="append", default=[], metavar="TARGET:PRECISION[:RECIPE][:KEY=VALUE]",
                       help="export this first (into --out/artifacts), e.g. onnx:int8:dynamic-linear, "
                            "onnx:fp32:attention=fused; repeat for several")
    group.add_argument("--torch", action="append", default=None, metavar="PRECISION[:compile[=BACKEND]]",
                       help="PyTorch rows (default: fp32 eager); e.g. bf16, fp32:compile; repeat for several; "
                            "'none' for no PyTorch row besides the reference")
    group.add_argument("--no-reference", action="store_true", help="leave out the reference eager encoder row")
    group.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    group.add_argument("--decoder-runs", type=int, default=5, help="single-prompt decodes per path per round (default 5)")
    group.add_argument("--batch", type=int, default=16, help="prompts in the batch timing (default 16)")
    group.add_argument("--bench-threads", type=int, default=2, help="threads of every runtime and of PyTorch (default 2)")
    group.add_argument("--images", metavar="PATH", default=None,
                       help="also measure mask IoU vs the fp32 model on these images (a folder or a dataset)")
    group.add_argument("--images-limit", type=int, default=None, metavar="N", help="use the first N of --images")
    group.add_argument("--calibration", metavar="PATH", default=None,
                       help="calibration images for static --export recipes (default: crops of the timing image)")
    group.add_argument("--img-size", type=int, default=None, help="input size of the --export artifacts (default: the model's)")
    group.add_argument("--reuse-exports", action="store_true",
                       help="keep an artifact already in --out/artifacts instead of exporting it again")
    group.add_argument("--out", metavar="DIR", default=None,
                       help="write bench.json, bench.md and bench.html here (and the --export artifacts)")


def table_mode(args: argparse.Namespace) -> bool:
    return args.table is not None


def torch_paths(specs: list[str] | None):
    """``--torch`` values as bench paths (default: PyTorch fp32 eager)."""
    from edge_sam.runner import TORCH_PRECISIONS
    from edge_sam.targets.benchmarking.specs import BenchPath

    paths = []
    for spec in specs if specs is not None else ["fp32"]:
        if spec == "none":
            continue
        precision, _, rest = spec.partition(":")
        if precision not in TORCH_PRECISIONS or (rest and not rest.startswith("compile")):
            raise EdgeSamError(f"bad --torch {spec!r}: PRECISION[:compile[=BACKEND]] with PRECISION one of "
                               f"{', '.join(TORCH_PRECISIONS)}")
        backend = rest.partition("=")[2] or True if rest else False
        paths.append(BenchPath.pytorch(precision, backend))
    return paths


def run_table(args: argparse.Namespace) -> int:
    import edge_sam
    from edge_sam.image_sources import photo_crops
    from edge_sam.targets.core.manifest import read_manifest
    from edge_sam.targets.core.target import check_source
    from edge_sam.targets.benchmarking.render import markdown_table, summary_lines, table_rows, write_bench
    from edge_sam.targets.benchmarking.run import run_bench
    from edge_sam.targets.benchmarking.specs import BenchPath, ExportSpec, export_artifacts
    from edge_sam.transforms import read_image

    from .common import image_path

    if args.artifact is not None:
        raise EdgeSamError("with --table, list the artifact folders after --table (the timing image is the bundled photo)")
    specs = [ExportSpec.parse(text) for text in args.export]
    if specs and not args.out:
        raise EdgeSamError("--export needs --out DIR: the exported artifacts are written to DIR/artifacts")
    image = image_path(None)
    out = Path(args.out) if args.out else None
    artifacts = [Path(a) for a in args.table]
    if specs:
        calibration = args.calibration
        if calibration is None and any(_needs_calibration(s) for s in specs):
            calibration = str(photo_crops(read_image(image), out / "calibration").path)
        artifacts += export_artifacts(specs, args.checkpoint, out / "artifacts", args.img_size, calibration,
                                      args.reuse_exports)
    model = edge_sam.load_model(args.checkpoint)
    for artifact in artifacts:  # the reference rows and the drift reference are this model
        check_source(read_manifest(artifact), model, artifact)
    paths = ([] if args.no_reference else [BenchPath.reference()]) + torch_paths(args.torch)
    paths += [BenchPath.for_artifact(a, args.bench_threads) for a in artifacts]
    if not paths:
        raise EdgeSamError("nothing to time: give artifact folders, --export or --torch")
    result = run_bench(paths, args.checkpoint, image, rounds=args.rounds, threads=args.bench_threads, batch=args.batch,
                       decoder_runs=args.decoder_runs, drift_images=args.images, drift_limit=args.images_limit,
                       log_dir=out / "logs" if out else None)
    print("\n".join(summary_lines(result)) + "\n")
    print(markdown_table(table_rows(result)))
    if out:
        written = write_bench(result, out)
        print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def _needs_calibration(spec) -> bool:
    """Whether a static recipe is asked (int8 without --recipe is the default static one)."""
    from edge_sam.quantize.recipe_file import get_recipe

    if spec.precision != "int8":
        return False
    if spec.recipe is None:
        return True
    try:
        return get_recipe(spec.recipe).needs_calibration
    except EdgeSamError:  # a target's own recipe (Core ML weight-only): no calibration set
        return False
