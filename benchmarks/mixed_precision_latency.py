"""Encoder latency of full static INT8 vs a mixed-precision recipe, per target, in one run.

    edge-sam quantize mixed --images synth/val --out mixed.json
    python benchmarks/mixed_precision_latency.py --recipe-file mixed.json

Exports, per target, the encoder + decoder with the full static recipe (``--recipe``, default
static-conv-linear: every conv and linear layer INT8) and with the recipe file (some layers
float), then times the two encoders in interleaved rounds: each round times every artifact
once, each timing in a fresh Python process that loads only that artifact (runtimes loaded
side by side keep their worker threads spinning and slow each other), after one warm-up call.
Per target it prints the ratio mixed / full INT8 of the per-round minimums (median over
rounds: both sides of a ratio were measured minutes apart at most, so a busy machine shifts
both), whether it is within ``--max-ratio`` (default 1.15), and how many layers stayed float.

``--record PATH`` keeps the run in a JSON record (records.py's header, the settings, per target
the ratio and both encoders' best seconds, every round's timings) under its (recipe, recipe file,
size) among the runs the record already holds, so the 256-px and 1024-px runs of the
quantization table's ``latency`` stage share one record (docs/results/mixed_latency.json); its
``command`` is every kept run's command. Timings: publish them from a quiet machine only.

Latency does not depend on what the calibration images show: crops of the bundled photo
calibrate unless ``--calibration`` is given. Core ML is left out by default: off macOS its
artifacts run on edge_sam's NumPy host executor, whose speed says nothing about a device
(``--targets ...,coreml`` times it anyway). Host preprocessing is outside every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import edge_sam
from edge_sam.quantize.recipe_file import read_recipe_file
from edge_sam.machine import cpu_flags, cpu_model, load_average_text

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

SAMPLE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


def time_one(artifact: str, runs: int, threads: int) -> dict:
    """Load one artifact and time its encoder (run in a child process)."""
    import numpy as np

    from edge_sam.targets import get_target
    from edge_sam.graph_contract import encoder_input
    from edge_sam.targets.core.manifest import read_manifest
    from edge_sam.targets.core.registry import threads_option
    from edge_sam.timing import time_calls
    from edge_sam.transforms import read_image

    target = get_target(read_manifest(artifact).target)
    runner = target.load(artifact, **threads_option(target.name, threads))
    pixels = np.ascontiguousarray(encoder_input(read_image(SAMPLE), runner.img_size).numpy())
    return {"artifact": artifact, "seconds": time_calls(lambda: runner.run_encoder(pixels), runs, warmup=1)}


def timed_in_child(artifact: Path, runs: int, threads: int) -> list[float]:
    command = [sys.executable, __file__, "--time-one", str(artifact), "--runs", str(runs), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"timing {artifact} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def keep_run(path: Path, run: dict) -> None:
    """``run`` into the record at ``path``, replacing a kept run of the same (recipe, recipe file,
    size); the record's header is this run's, its command every kept run's."""
    kept = json.loads(path.read_text())["runs"] if path.is_file() else []
    same = ("recipe", "recipe_file", "img_size")
    runs = [r for r in kept if any(r[key] != run[key] for key in same)] + [run]
    runs.sort(key=lambda r: (r["recipe"], r["img_size"]))
    write_record(path, {**{key: run[key] for key in ("git_commit", "date", "machine")},
                        "command": " && ".join(r["command"] for r in runs), "runs": runs})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe-file", help="the mixed recipe (edge-sam quantize mixed --out FILE)")
    parser.add_argument("--recipe", default="static-conv-linear", help="the full static INT8 recipe compared against")
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--targets", default="onnx,executorch,tflite")
    parser.add_argument("--calibration", default=None, help="calibration images (default: crops of dogs.jpg)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="timed encoder calls per process")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads")
    parser.add_argument("--max-ratio", type=float, default=1.15)
    parser.add_argument("--work", default=None, help="keep artifacts here (default: a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="time artifacts an earlier run left in --work")
    parser.add_argument("--record", type=Path, default=None,
                        help="keep this run in a JSON record (docs/results/mixed_latency.json for the docs)")
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_one:
        print(json.dumps(time_one(args.time_one, args.runs, args.threads)))
        return 0
    if not args.recipe_file:
        parser.error("--recipe-file is required")

    from edge_sam.targets import get_target
    from edge_sam.image_sources import open_source, photo_crops
    from edge_sam.transforms import read_image

    header = record_header()
    mixed = read_recipe_file(args.recipe_file)
    targets = [t for t in args.targets.split(",") if t]
    model = edge_sam.load_model(args.checkpoint)
    load_start = load_average_text()
    img_size = args.img_size or model.image_encoder.img_size
    with tempfile.TemporaryDirectory(prefix="mixed-latency-") as temp:
        work = Path(args.work or temp)
        artifacts = {(t, kind): work / f"{t}-{kind}" for t in targets for kind in ("full", "mixed")}
        if not args.reuse:
            calibration = open_source(args.calibration) if args.calibration else photo_crops(read_image(SAMPLE), work / "crops")
            for (target, kind), folder in artifacts.items():
                start = time.perf_counter()
                recipe = args.recipe if kind == "full" else args.recipe_file
                get_target(target).export(model, "int8", recipe, folder, calibration=calibration, img_size=args.img_size,
                                          overwrite=True)
                print(f"exported {target} {kind} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        times: dict[tuple[str, str], list[list[float]]] = {key: [] for key in artifacts}
        order = list(artifacts)
        for round_index in range(args.rounds):
            rotated = order[round_index % len(order):] + order[: round_index % len(order)]
            for key in rotated:
                times[key].append(timed_in_child(artifacts[key], args.runs, args.threads))
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    floats = len(mixed.float_layers)
    print(f"Encoder latency, full static INT8 ({args.recipe}) vs mixed ({mixed.name}: {floats} of {len(mixed.layers)} "
          f"layers float), checkpoint {args.checkpoint}; {args.rounds} interleaved rounds x {args.runs} calls, each "
          f"artifact timed in its own process, {args.threads} runtime threads; {os.cpu_count()} CPUs "
          f"({cpu_model()}; {cpu_flags() or 'flags unknown'}); load average {load_start} at start, {load_average_text()} at end.")
    print("| target | full INT8 s (min) | mixed s (min) | mixed / full (median of rounds) | within "
          f"{args.max_ratio:.2f}x | float layers |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    results = []
    for target in targets:
        full, part = times[(target, "full")], times[(target, "mixed")]
        ratio = statistics.median(min(m) / min(f) for f, m in zip(full, part))
        best_full, best_mixed = min(min(r) for r in full), min(min(r) for r in part)
        within = ratio <= args.max_ratio
        results.append({"target": target, "full_min_s": best_full, "mixed_min_s": best_mixed, "ratio": ratio,
                        "within": within, "float_layers": floats})
        print(f"| {target} | {best_full:.4f} | {best_mixed:.4f} | {ratio:.3f} | {'yes' if within else 'NO'} | {floats} |")
    if args.record:
        keep_run(args.record, {
            **header, "recipe": args.recipe, "recipe_file": Path(args.recipe_file).name, "checkpoint": args.checkpoint,
            "img_size": img_size, "rounds": args.rounds, "runs": args.runs, "threads": args.threads,
            "max_ratio": args.max_ratio, "load_average_at_end": load_average_text(), "results": results,
            "times": {f"{t}-{k}": v for (t, k), v in times.items()}})
        print(f"-> {args.record}", file=sys.stderr)
    return 0 if all(r["within"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
