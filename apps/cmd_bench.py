"""``edge-sam bench``: encoder and decoder latency of one artifact on this machine, and for an
ExecuTorch artifact (``--profile``) the per-operator times from its ETDump."""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.timing import time_calls
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import load_runner
from edge_sam.transforms import read_image

from .common import add_image_argument, image_path
from .target_flags import add_target_flags, given_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="latency of an exported artifact (ExecuTorch: per-operator profile)")
    parser.add_argument("artifact", metavar="ARTIFACT_DIR", help="artifact folder written by export")
    add_image_argument(parser)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each graph (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    add_target_flags(parser, "runtime")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.warmup < 0:
        raise EdgeSamError("--runs must be at least 1 and --warmup at least 0")
    target = read_manifest(args.artifact).target
    options = given_options(args, "runtime", [target])[target]
    runner = load_runner(args.artifact, **options)
    image = read_image(image_path(args.image))
    h, w = image.shape[:2]
    embedding = runner.encode(image)
    points, labels = np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32)
    timings = {
        "encoder": time_calls(lambda: runner.encode(image), args.runs, args.warmup),
        "decoder": time_calls(lambda: runner.decode(embedding, points, labels, (h, w)), args.runs, args.warmup),
    }
    print(f"{runner.label}: image {w}x{h}, model input {runner.img_size}, {args.runs} runs after {args.warmup} warm-up")
    for role, seconds in timings.items():
        print(f"  {role}: median {1e3 * statistics.median(seconds):.2f} ms, min {1e3 * min(seconds):.2f} ms")
    if options.get("profile"):
        from edge_sam.targets.executorch.profile import format_table

        for role in ("encoder", "decoder"):
            print(f"\n{role} operators (mean per run over {args.runs + args.warmup + (role == 'encoder')} runs):")
            print(format_table(runner.operator_profile(role)))
    return 0
