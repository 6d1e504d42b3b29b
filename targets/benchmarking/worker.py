"""The process that times one runtime's paths for :mod:`.run`, and its parent side (:class:`WorkerProcess`).

One worker per runtime: ONNX Runtime, XNNPACK (LiteRT, ExecuTorch) and PyTorch keep thread
pools that spin or hold cores after a call, and in one process they slowed each other
(measured: every ratio against PyTorch inflated by ~25%). The worker loads its paths, warms
each up, optionally measures their drift against the fp32 model, then answers one timing
command at a time from the parent, which interleaves the workers round by round.

Protocol: the parent writes one JSON job line, then JSON commands, one per line; the worker
answers each with one JSON line on its stdout. Everything the toolchains print goes to stderr
(the worker moves file descriptor 1 there), so the protocol stream stays clean.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.targets.benchmarking.roofline import matmul_rates

# Point grid for the batch timing: 16 distinct clicks, like everything-mode's grid.
BATCH_GRID = 4
_WORKER_TIMEOUT_S = 3600


def load_paths(job: dict[str, Any]) -> list[Any]:
    """Runners for the job's paths (PyTorch rows from the checkpoint, artifacts by folder)."""
    import torch

    from edge_sam.runner import TorchRunner
    from edge_sam.targets.core.registry import load_runner

    torch.set_num_threads(job["threads"])
    runners = []
    model = None
    for path in job["paths"]:
        if path["kind"] == "artifact":
            runners.append(load_runner(path["artifact"], label=path["label"], **path["runtime_options"]))
            continue
        if model is None:
            import edge_sam

            model = edge_sam.load_model(job["checkpoint"])
        if path["kind"] == "reference":
            from edge_sam.deploy_form import set_attention

            reference = copy.deepcopy(model)
            set_attention(reference.image_encoder, "matmul")  # the reference repo's materialized attention
            runners.append(TorchRunner(reference, label=path["label"]))
        else:
            runners.append(TorchRunner(model, label=path["label"], **path["torch_options"]))
    return runners


def _is_fp32_pytorch(path: dict[str, Any]) -> bool:
    options = path.get("torch_options") or {}
    return path["kind"] == "reference" or (
        path["kind"] == "pytorch" and options.get("precision", "fp32") == "fp32" and not options.get("compile"))


def batch_prompts(image_hw: tuple[int, int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` single clicks on a grid over the image: points [Q, 1, 2], labels [Q, 1]."""
    h, w = image_hw
    side = int(np.ceil(np.sqrt(count)))
    steps = (np.arange(side) + 0.5) / side
    grid = np.array([[x * w, y * h] for y in steps for x in steps], np.float32)[:count]
    return grid[:, None, :], np.ones((count, 1), np.float32)


def timed(call) -> dict[str, float]:
    """Wall and process CPU seconds of one call (CPU time says how much work it was when the
    machine is shared; wall time is what a user waits)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


class Worker:
    def __init__(self, job: dict[str, Any]) -> None:
        from edge_sam.transforms import read_image

        self.job = job
        self.image = read_image(job["image"])
        self.hw = self.image.shape[:2]
        self.runners = load_paths(job)
        h, w = self.hw
        self.click = (np.array([[w * 0.55, h * 0.45]], np.float32), np.array([1.0], np.float32))
        self.batch = batch_prompts(self.hw, job["batch"])
        self.embeddings = [runner.encode(self.image) for runner in self.runners]  # warm-up too
        for index in range(len(self.runners)):
            self.decode(index)
            self.decode_batch(index)

    def describe(self) -> list[dict[str, Any]]:
        return [{**runner.describe(), "keeps_decoder_context": runner.keeps_decoder_context,
                 "folds_decoder_attention": runner.folds_decoder_attention} for runner in self.runners]

    def encode(self, index: int) -> None:
        """Encode and keep the embedding: decoding the one ``encode`` returned last is what lets a
        TorchRunner reuse its per-image decoder context (as the Predictor does); an older
        embedding would make each timed decode recompute it."""
        self.embeddings[index] = self.runners[index].encode(self.image)

    def decode(self, index: int):
        return self.runners[index].decode(self.embeddings[index], *self.click, self.hw)

    def decode_batch(self, index: int):
        return self.runners[index].decode_batch(self.embeddings[index], *self.batch, self.hw)

    def drift(self) -> list[dict[str, Any] | None]:
        """Mask IoU etc. of each path against the fp32 PyTorch model at the path's input size
        (targets.validation.drift, the validate command's measurements)."""
        from edge_sam.checkpoint import load_model
        from edge_sam.runner import TorchRunner
        from edge_sam.image_sources import open_source
        from edge_sam.targets.validation.drift import measure_drift

        settings = self.job["drift"]
        model = load_model(self.job["checkpoint"])
        source = open_source(settings["images"], settings.get("limit"))
        summaries: list[dict[str, Any] | None] = [None] * len(self.runners)
        # The fp32 PyTorch rows are the drift reference itself (the same arithmetic): not measured.
        measured = [i for i, path in enumerate(self.job["paths"]) if not _is_fp32_pytorch(path)]
        for size in sorted({self.runners[i].img_size for i in measured}):
            indices = [i for i in measured if self.runners[i].img_size == size]
            reference = TorchRunner(model, size, label=f"pytorch-fp32 at {size} (drift reference)")
            report = measure_drift(reference, [self.runners[i] for i in indices], source, measure_memory=False)
            for index, drift in zip(indices, report.runners):
                summaries[index] = drift.summary()
        return summaries

    def answer(self, command: dict[str, Any]) -> dict[str, Any]:
        op, index = command["op"], command.get("path")
        if op == "encoder":
            return timed(lambda: self.encode(index))
        if op == "decoder":
            return {"runs": [timed(lambda: self.decode(index)) for _ in range(command["count"])]}
        if op == "batch":
            return timed(lambda: self.decode_batch(index))
        if op == "matmul":
            return matmul_rates(self.job["threads"])
        raise ValueError(f"unknown bench command {op!r}")


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # toolchains' prints (C and Python) go to stderr
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message, default=str) + "\n")

    job = json.loads(sys.stdin.readline())
    try:
        worker = Worker(job)
        drift = worker.drift() if job.get("drift") else None
        send({"ready": True, "paths": worker.describe(), "drift": drift})
    except Exception as exc:  # reported to the parent as one line, which raises it as an EdgeSamError
        send({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"})
        raise
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        send(worker.answer(command))


class WorkerProcess:
    """A worker subprocess (this module run with -m): send a command line, read one answer line."""

    def __init__(self, job: dict[str, Any], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "edge_sam.targets.benchmarking.worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        bufsize=1)
        self.ready = self._exchange(job)

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=_WORKER_TIMEOUT_S)
            tail = [l for l in self.log_path.read_text().strip().splitlines() if l.strip()][-1:] or ["no output"]
            raise EdgeSamError(f"bench worker exited ({self.process.returncode}): {tail[0]} (log: {self.log_path})")
        answer = json.loads(line)
        if "error" in answer:
            raise EdgeSamError(f"bench worker: {answer['error']} (log: {self.log_path})")
        return answer

    def command(self, **message: Any) -> dict[str, Any]:
        return self._exchange(message)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self._log.close()


if __name__ == "__main__":
    main()
