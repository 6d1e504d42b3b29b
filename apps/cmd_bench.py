"""``edge-sam bench``: encoder and decoder latency of one artifact on this machine (or on a device,
``--on``), or of the PyTorch model on a torch device (``bench pytorch --torch-device cuda``), and for
an ExecuTorch artifact (``--profile``) the per-operator times from its ETDump. ``--table`` times many
paths (artifacts, exports it makes first, the PyTorch model and the reference eager encoder) in
one table: :mod:`edge_sam.apps.bench_table`."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.timing import time_calls
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.registry import load_runner
from edge_sam.transforms import read_image

from .bench_table import add_table_flags, run_table, table_mode
from .common import add_checkpoint_argument, add_image_argument, image_path
from .device_flags import add_device_flags, add_torch_flags, device_settings, torch_runs
from .target_flags import add_target_flags, given_options

PYTORCH = "pytorch"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="latency of an exported artifact (ExecuTorch: per-operator profile), "
                                   "or with --table one table over many artifacts and the PyTorch model")
    parser.add_argument("artifact", metavar="ARTIFACT_DIR", nargs="?",
                        help="artifact folder written by export, or 'pytorch' for the model itself (--checkpoint)")
    add_image_argument(parser)
    add_checkpoint_argument(parser)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each graph (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    add_target_flags(parser, "runtime")
    add_torch_flags(parser)
    add_device_flags(parser, repeatable=False)
    add_table_flags(parser)
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if table_mode(args):
        return run_table(args)
    if args.artifact is None:
        raise EdgeSamError("give an ARTIFACT_DIR (or 'pytorch'), or --table for the table over many paths")
    if args.runs < 1 or args.warmup < 0:
        raise EdgeSamError("--runs must be at least 1 and --warmup at least 0")
    if args.artifact == PYTORCH:
        return _bench_pytorch(args)
    if args.torch_device is not None:
        raise EdgeSamError("--torch-device applies to 'edge-sam bench pytorch'")
    if args.on and args.on != "here":
        return _bench_on_device(args)
    target = read_manifest(args.artifact).target
    options = given_options(args, "runtime", [target])[target]
    runner = load_runner(args.artifact, **options)
    image = read_image(image_path(args.image))
    h, w = image.shape[:2]
    timings = _time_runner(runner, image, args)
    print(f"{runner.label}: image {w}x{h}, model input {runner.img_size}, {args.runs} runs after {args.warmup} warm-up")
    for role, seconds in timings.items():
        print(f"  {role}: median {1e3 * statistics.median(seconds):.2f} ms, min {1e3 * min(seconds):.2f} ms")
    if options.get("profile"):
        from edge_sam.targets.executorch.profile import format_table

        # The context runs once: at the first decode of the embedding, then it is kept.
        runs = {"encoder": args.runs + args.warmup + 1, "context": 1, "decoder": args.runs + args.warmup}
        for role, count in runs.items():
            print(f"\n{role} operators (mean per run over {count} runs):")
            print(format_table(runner.operator_profile(role)))
    return 0


def _bench_pytorch(args: argparse.Namespace) -> int:
    """The model itself, on each --torch-device precision (default: fp32 on the CPU)."""
    import edge_sam
    from edge_sam.runner import TorchRunner

    model = edge_sam.load_model(args.checkpoint)
    image = read_image(image_path(args.image))
    for options in torch_runs(args) or [{"device": "cpu", "precision": "fp32", "compile": False}]:
        runner = TorchRunner(model, **options)
        _print_timings(runner, image, _time_runner(runner, image, args))
        if runner.measured_memory():
            print(f"  peak GPU memory: {runner.measured_memory()['gpu_peak_mb']:.1f} MiB (weights + largest call)")
    return 0


def _time_runner(runner, image: np.ndarray, args: argparse.Namespace) -> dict[str, list[float]]:
    h, w = image.shape[:2]
    embedding = runner.encode(image)
    points, labels = np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32)
    return {
        "encoder": time_calls(lambda: runner.encode(image), args.runs, args.warmup),
        "decoder": time_calls(lambda: runner.decode(embedding, points, labels, (h, w)), args.runs, args.warmup),
    }


def _print_timings(runner, image: np.ndarray, timings: dict[str, list[float]]) -> None:
    h, w = image.shape[:2]
    print(f"{runner.label} on {runner.describe()['device']}: image {w}x{h}, model input {runner.img_size}")
    for role, seconds in timings.items():
        print(f"  {role}: median {1e3 * statistics.median(seconds):.2f} ms, min {1e3 * min(seconds):.2f} ms "
              f"over {len(seconds)} runs")


def _bench_on_device(args: argparse.Namespace) -> int:
    """The artifact pushed to the device and timed there (a centre click on the image)."""
    from edge_sam.targets.devices.device_runner import (DeviceRunner, ImageJob, Query, program_for, run_on_device,
                                                        settings_for)
    from edge_sam.targets.devices.places import transport_for

    manifest = read_manifest(args.artifact)
    options = given_options(args, "runtime", [manifest.target])[manifest.target]
    image = read_image(image_path(args.image))
    h, w = image.shape[:2]
    job = ImageJob(image, [Query(np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32))])
    settings = device_settings(args, runs=args.runs, warmup=args.warmup)
    transport = transport_for(args.on, settings.ssh_config)
    if transport.emulated:
        raise EdgeSamError(f"{transport.label} is emulated: its timings are the emulator's, not a device's "
                           "(validate --on measures its accuracy)")
    settings = settings_for(transport, settings)
    results = run_on_device(args.artifact, transport, [job], settings, options)
    runner = DeviceRunner(manifest, Path(args.artifact), [job], results, transport.label, program_for(manifest, settings))
    print(f"{runner.label}: {runner.describe()['device']}; image {w}x{h}, model input {manifest.img_size}")
    for role, seconds in (("encoder", results.encoder_s[0]), ("decoder", results.decoder_s[0][0])):
        print(f"  {role}: {1e3 * seconds:.2f} ms ({settings.runs} runs after {settings.warmup} warm-up, timed on the device)")
    return 0
