"""Peak memory of one runner, measured in a fresh subprocess.

In the validating process the PyTorch reference and every other artifact are loaded too, so
``ru_maxrss`` there says nothing about one runner. Here a child process imports edge_sam,
records its resident-set high-water mark (the baseline: Python, torch, numpy, the runtime),
loads one runner, runs one encode and one decode, and records the high-water mark again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.memory import peak_rss_mb

_TIMEOUT_S = 900


def measure_peak_rss(image: np.ndarray, artifact_dir: str | os.PathLike | None = None,
                     checkpoint: str | os.PathLike | None = None, img_size: int | None = None,
                     runtime_opts: dict[str, Any] | None = None) -> dict[str, float]:
    """{"baseline_mb", "peak_mb", "runner_mb"} for an artifact, or for the PyTorch model in ``checkpoint``
    (``runtime_opts``: the artifact runner's options, or TorchRunner's device/precision/compile)."""
    if (artifact_dir is None) == (checkpoint is None):
        raise ValueError("measure one thing: an artifact_dir or a checkpoint")
    with tempfile.TemporaryDirectory(prefix="edge-sam-rss-") as work:
        image_path = Path(work) / "image.npy"
        np.save(image_path, image)
        job = {"image": str(image_path), "artifact": str(artifact_dir) if artifact_dir else None,
               "checkpoint": str(checkpoint) if checkpoint else None, "img_size": img_size,
               "runtime_opts": runtime_opts or {}}
        done = subprocess.run([sys.executable, "-m", "edge_sam.targets.validation.subprocess_rss"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=_TIMEOUT_S)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeSamError(f"memory probe for {artifact_dir or checkpoint} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _probe(job: dict[str, Any]) -> dict[str, float]:
    from edge_sam.checkpoint import load_model

    from edge_sam.runner import TorchRunner
    from edge_sam.targets.core.manifest import read_manifest
    from edge_sam.targets.core.registry import get_target, load_runner

    image = np.load(job["image"])
    if job["artifact"]:
        get_target(read_manifest(job["artifact"]).target).check_toolchain("runtime")  # runtime imports count as baseline
    baseline = peak_rss_mb()
    if job["artifact"]:
        runner = load_runner(job["artifact"], **job["runtime_opts"])
    else:
        runner = TorchRunner(load_model(job["checkpoint"]), job["img_size"], **job["runtime_opts"])
    h, w = image.shape[:2]
    embedding = runner.encode(image)
    runner.decode(embedding, np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32), (h, w))
    peak = peak_rss_mb()
    return {"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1), "runner_mb": round(peak - baseline, 1)}


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.stdin.read()))))
