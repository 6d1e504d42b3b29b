"""The Python program run on a device by ``validate --on``: ``python -m edge_sam.targets.devices.worker JOB``.

JOB is the folder the host pushed: ``artifact/``, ``inputs.npz`` (images, prompt points and
labels) and ``job.json`` (prompts per image, runs, warm-up runs, runtime options). The artifact's
own runner encodes every image and decodes every prompt, ``warmup`` untimed then ``runs`` timed
times each (the median is kept); ``out/outputs.npz`` and ``out/timings.json`` (with this
process's peak RSS and where the runner ran its nodes) go back to the host. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _timed(call, runs: int, warmup: int):
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def run_job(job: Path) -> None:
    from edge_sam.memory import peak_rss_mb
    from edge_sam.targets.core.registry import load_runner

    plan = json.loads((job / "job.json").read_text())
    runs, warmup = plan["runs"], plan["warmup"]
    runner = load_runner(job / "artifact", **plan["runtime_options"])
    outputs: dict[str, np.ndarray] = {}
    encoder_s, decoder_s = [], []
    with np.load(job / "inputs.npz") as inputs:
        for i, count in enumerate(plan["queries"]):
            image = inputs[f"image_{i}"]
            h, w = image.shape[:2]
            embedding, seconds = _timed(lambda: runner.encode(image), runs, warmup)
            outputs[f"embedding_{i}"] = embedding
            encoder_s.append(seconds)
            per_prompt = []
            for j in range(count):
                points, labels = inputs[f"points_{i}_{j}"], inputs[f"labels_{i}_{j}"]
                (low_res, iou), seconds = _timed(lambda: runner.decode(embedding, points, labels, (h, w)), runs, warmup)
                outputs[f"low_res_{i}_{j}"], outputs[f"iou_{i}_{j}"] = low_res, iou
                per_prompt.append(seconds)
            decoder_s.append(per_prompt)
    out = job / "out"
    out.mkdir(exist_ok=True)
    np.savez(out / "outputs.npz", **outputs)
    described = runner.describe()  # where it ran on the device (an ONNX runner's execution providers)
    timings = {"encoder_s": encoder_s, "decoder_s": decoder_s, "memory": {"peak_mb": round(peak_rss_mb(), 1)},
               "runner": {key: described[key] for key in ("device", "node_providers") if key in described}}
    (out / "timings.json").write_text(json.dumps(timings))


def main(argv: list[str] | None = None) -> int:
    from edge_sam.errors import EdgeSamError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edge_sam.targets.devices.worker JOB_DIR", file=sys.stderr)
        return 2
    try:
        run_job(Path(args[0]))
    except EdgeSamError as exc:
        print(f"edge_sam worker: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
