"""One benchmark table over every way of running the model: the reference eager PyTorch model,
our PyTorch model, and exported artifacts of any target, precision and recipe.

How it times (the rules that made earlier numbers misleading are built in):

- **One process per runtime** (:mod:`.worker`): ONNX Runtime, XNNPACK and PyTorch thread
  pools in one process slowed each other and inflated every ratio by ~25%.
- **Interleaved rounds**: round r times every path once (starting from a different path each
  round), so a change in machine load hits all paths alike; ratios use the minimum over
  rounds, the run least disturbed by other work. The load average is recorded per round.
- **The reference** is the reference implementation's eager PyTorch encoder: attention with the
  4096 x 4096 score matrices materialized (``set_attention(model, "matmul")``), at the
  checkpoint's size.
- **The machine's rates** are measured in the same run, per data type (fp32, bf16 and fp16
  where the CPU has them, int8: :mod:`.roofline`), so each path's achieved GFLOP/s
  (:mod:`edge_sam.flops` over the time) is read against the roofline of the type it computes in.

Decoder times are per prompt: one prompt per call, and a batch (``decode_batch``) divided by its
size. PyTorch rows reuse the decoder's per-image context (prompt-independent work done once
per image); exported decoders recompute it per call, and the FLOP counts say which.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge_sam.errors import EdgeSamError
from edge_sam.flops import decoder_flops, encoder_flops
from edge_sam.machine import machine_info
from edge_sam.modeling.config import EfficientSamConfig
from edge_sam.targets.benchmarking.specs import PYTORCH_GROUP, BenchPath
from edge_sam.targets.benchmarking.worker import WorkerProcess

_SETTLE_S = 0.2  # pause before switching process: the last one's spinning threads go idle


@dataclass
class BenchResult:
    """Everything one bench run measured; :func:`table_rows` turns it into the table."""

    paths: list[dict[str, Any]]  # per path: label, kind, group, artifact, describe(), config, flops
    timings: list[dict[str, list]]  # per path: encoder / encoder_cpu / decoder / batch (seconds)
    matmul: dict[str, list[float]]  # per data type (roofline.RATE_KEYS: fp32_gflops, ..., int8_gops), per round
    drift: list[dict[str, Any] | None]
    rounds: list[dict[str, Any]]  # per round: start time, load average
    settings: dict[str, Any]
    machine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config_of(path: BenchPath, checkpoint_config: EfficientSamConfig | None) -> EfficientSamConfig:
    if path.artifact is None:
        return checkpoint_config
    from edge_sam.targets.core.manifest import read_manifest

    manifest = read_manifest(path.artifact)
    return EfficientSamConfig.from_dict({**manifest.model_config, "img_size": manifest.img_size})


def _export_options(path: BenchPath) -> dict[str, Any]:
    if path.artifact is None:
        return {}
    from edge_sam.targets.core.manifest import read_manifest

    return dict(read_manifest(path.artifact).export_options)


def run_bench(
    paths: list[BenchPath],
    checkpoint: str,
    image: str | os.PathLike,
    rounds: int = 5,
    threads: int = 2,
    batch: int = 16,
    decoder_runs: int = 5,
    drift_images: str | None = None,
    drift_limit: int | None = None,
    log_dir: str | os.PathLike | None = None,
) -> BenchResult:
    """Time every path in interleaved rounds, each runtime in its own worker process."""
    import edge_sam

    if rounds < 1 or decoder_runs < 1 or batch < 1:
        raise EdgeSamError("--rounds, --decoder-runs and --batch must be at least 1")
    model_config = edge_sam.load_model(checkpoint).config
    groups: dict[str, list[int]] = {}
    for index, path in enumerate(paths):
        groups.setdefault(path.group, []).append(index)
    groups.setdefault(PYTORCH_GROUP, [])  # it also measures the matmul rates
    drift = {"images": str(drift_images), "limit": drift_limit} if drift_images else None
    with ExitStack() as stack:
        logs = Path(log_dir) if log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-sam-bench-")))
        logs.mkdir(parents=True, exist_ok=True)
        workers: dict[str, WorkerProcess] = {}
        local: dict[int, tuple[str, int]] = {}  # path index -> (group, index in its worker)
        described: dict[int, dict[str, Any]] = {}
        drifts: dict[int, dict[str, Any] | None] = {}
        for group, indices in tqdm(groups.items(), desc="loading runtimes", unit="process"):
            job = {"checkpoint": str(checkpoint), "threads": threads, "image": str(image), "batch": batch,
                   "drift": drift, "paths": [asdict(paths[i]) for i in indices]}
            worker = WorkerProcess(job, logs / f"worker-{group}.log")
            stack.callback(worker.close)
            workers[group] = worker
            for position, index in enumerate(indices):
                local[index] = (group, position)
                described[index] = worker.ready["paths"][position]
                drifts[index] = (worker.ready["drift"] or [None] * len(indices))[position]

        timings = [{"encoder": [], "encoder_cpu": [], "decoder": [], "decoder_cpu": [], "batch": [], "batch_cpu": []}
                   for _ in paths]
        matmul: dict[str, list[float]] = {}
        round_info = []
        last_group = [None]

        def ask(group: str, **command: Any) -> dict[str, Any]:
            if last_group[0] not in (None, group):
                time.sleep(_SETTLE_S)
            last_group[0] = group
            return workers[group].command(**command)

        with tqdm(total=rounds * (3 * len(paths) + 1), desc="timing", unit="call") as bar:
            for r in range(rounds):
                round_info.append({"round": r, "time": time.time(), "loadavg": list(os.getloadavg())})
                order = [(r + i) % len(paths) for i in range(len(paths))] if paths else []
                for stage in ("encoder", "decoder", "batch"):
                    for index in order:
                        group, position = local[index]
                        if stage == "encoder":
                            answer = ask(group, op="encoder", path=position)
                            timings[index]["encoder"].append(answer["wall"])
                            timings[index]["encoder_cpu"].append(answer["cpu"])
                        elif stage == "decoder":
                            runs = ask(group, op="decoder", path=position, count=decoder_runs)["runs"]
                            timings[index]["decoder"].extend(run["wall"] for run in runs)
                            timings[index]["decoder_cpu"].extend(run["cpu"] for run in runs)
                        else:
                            answer = ask(group, op="batch", path=position)
                            timings[index]["batch"].append(answer["wall"] / batch)
                            timings[index]["batch_cpu"].append(answer["cpu"] / batch)
                        bar.update()
                for key, rate in ask(PYTORCH_GROUP, op="matmul").items():
                    matmul.setdefault(key, []).append(rate)
                bar.update()
        round_info.append({"round": "end", "time": time.time(), "loadavg": list(os.getloadavg())})

    path_records = []
    for index, path in enumerate(paths):
        config = _config_of(path, model_config)
        cached = described[index]["keeps_decoder_context"]
        path_records.append({
            **asdict(path), "info": described[index], "img_size": config.img_size,
            "export_options": _export_options(path),
            "encoder_flops": encoder_flops(config).total,
            "decoder_flops": decoder_flops(config, cached=cached,
                                           factored=described[index]["folds_decoder_attention"]).total,
            "decoder_context_cached": cached,
        })
    settings = {"checkpoint": str(checkpoint), "image": str(image), "rounds": rounds, "threads": threads, "batch": batch,
                "decoder_runs": decoder_runs, "drift_images": str(drift_images) if drift_images else None}
    return BenchResult(path_records, timings, matmul, [drifts[i] for i in range(len(paths))], round_info, settings,
                       machine_info())
