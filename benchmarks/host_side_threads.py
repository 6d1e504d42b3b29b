"""Exported encoders with their host-side torch work on one thread vs on torch's pool, one run.

    python benchmarks/host_side_threads.py --artifact out/tflite-fp32 --artifact out/onnx-fp32 [--threads 2]

Every exported runner preprocesses the image with torch right before its runtime runs the
encoder. ``Runner.host_side`` runs that on one torch thread: after a parallel op torch's idle
OpenMP workers spin for milliseconds, and on a small CPU they compete with the runtime's own
threads. This script times ``runner.encode`` (preprocessing included, as ``edge-sam validate``
and ``edge-sam bench`` time it) both ways, in interleaved rounds in one process per artifact,
with torch's pool at ``--threads``; "pool" is the runner told it runs on torch's pool, so its
preprocessing uses every torch thread, as before ``host_side`` existed. Prints the median and
minimum of each and the ratio pool / one thread of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import edge_sam

SAMPLE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


def time_artifact(artifact: str, threads: int, rounds: int, calls: int) -> dict:
    """Runs in a child process: the artifact's encode, both ways, interleaved."""
    import torch

    from edge_sam.targets import get_target
    from edge_sam.targets.core.manifest import read_manifest
    from edge_sam.targets.core.registry import threads_option
    from edge_sam.transforms import read_image

    torch.set_num_threads(threads)
    target = get_target(read_manifest(artifact).target)
    runner = target.load(artifact, **threads_option(target.name, threads))
    image = read_image(SAMPLE)
    runner.encode(image)  # warm-up
    seconds: dict[str, list[float]] = {"one thread": [], "pool": []}
    for _ in range(rounds):
        for way in seconds:
            runner.uses_torch_threads = way == "pool"
            for _ in range(calls):
                start = time.perf_counter()
                runner.encode(image)
                seconds[way].append(time.perf_counter() - start)
    return {"label": runner.label, "img_size": runner.img_size, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", action="append", required=True, help="an exported artifact folder; repeat")
    parser.add_argument("--threads", type=int, default=2, help="torch's and each runtime's threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="encodes per way per round")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_artifact(args.child, args.threads, args.rounds, args.calls)))
        return
    from edge_sam.machine import cpu_flags

    print(f"# encode with host-side torch work on one thread vs torch's pool; {args.threads} threads, "
          f"{args.rounds} rounds x {args.calls} calls, load {os.getloadavg()[0]:.1f}, cpu flags {cpu_flags() or '?'}")
    print("| artifact | size | one thread: median / min ms | torch's pool: median / min ms | pool / one thread (medians) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for artifact in args.artifact:
        command = [sys.executable, __file__, "--artifact", artifact, "--child", artifact, "--threads", str(args.threads),
                   "--rounds", str(args.rounds), "--calls", str(args.calls)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{artifact} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        one, pool = (result["seconds"][way] for way in ("one thread", "pool"))
        print(f"| {result['label']} | {result['img_size']} | {statistics.median(one) * 1e3:.2f} / {min(one) * 1e3:.2f} | "
              f"{statistics.median(pool) * 1e3:.2f} / {min(pool) * 1e3:.2f} | "
              f"{statistics.median(pool) / statistics.median(one):.2f} |", flush=True)


if __name__ == "__main__":
    main()
