"""The step loop both trainers run: forward the objective, clip, step, log, checkpoint.

The objective is an ``nn.Module`` whose forward takes a batch and returns a dict with
``loss`` and detached scalar statistics; wrapping that one module in DDP is what keeps the
gradient all-reduce correct (DDP hooks only calls that go through its forward).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .config import RunConfig
from .distributed import DistContext, any_rank, mean_across_ranks

LOG_FILE = "log.jsonl"


@dataclass
class TrainOutcome:
    """What a training call leaves behind; ``saved`` is set on rank 0 once the last step is done."""

    model: nn.Module
    step: int
    rank: int
    saved: Path | None


class RunLog:
    """Append-only JSON lines (one per step, one per validation); rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.path = Path(out_dir) / LOG_FILE
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


# Batch entries the objective reads on the host (seeds, which queries are valid): moving them to
# the device would make every read of them wait for the device to finish its queued work.
HOST_KEYS = frozenset({"valid", "seed", "step_seed"})


@contextmanager
def training_session(config: RunConfig) -> Iterator[tuple[DistContext, Path]]:
    """How every training-style run (finetune, SAMI, QAT) starts and ends: the process group (DDP
    under torchrun), the thread count, the run folder and the seed; the group is torn down
    however the run ends."""
    ctx = distributed.setup(config.device)
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        out_dir = Path(config.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        yield ctx, out_dir
    finally:
        distributed.teardown(ctx)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy without making the host wait (pinned staging on CUDA)."""
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v if k in HOST_KEYS else to_device(v, device) for k, v in batch.items()}


def _window_means(window: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of each statistic over the steps of one log window (one host sync for all of them)."""
    keys = sorted({k for entry in window for k in entry})
    means = torch.stack([torch.stack([e[k].float() for e in window if k in e]).mean() for k in keys])
    return dict(zip(keys, means.tolist()))


def run_steps(
    *,
    objective: nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: RunConfig,
    ctx: DistContext,
    start_step: int,
    save: Callable[[int], None],
    log: RunLog,
    validate: Callable[[int], None] | None = None,
    val_every: int = 0,
    desc: str = "train",
    after_step: Callable[[int], None] | None = None,
) -> int:
    """Train from ``start_step`` to ``config.steps`` (or ``stop_after_steps`` / ``stop_after_minutes``);
    returns the step reached.

    ``save(step)`` runs on rank 0 every ``checkpoint_minutes`` and when the loop ends;
    ``validate(step)`` runs on every rank every ``val_every`` steps (it decides who works);
    ``after_step(step)`` runs on every rank after each optimizer step (schedules beyond the lr,
    such as QAT freezing its quantization ranges). Rank 0 prints one throughput line at the end.
    """
    end = min(config.steps, config.stop_after_steps or config.steps)
    deadline = time.monotonic() + config.stop_after_minutes * 60 if config.stop_after_minutes else None
    params = [p for p in objective.parameters() if p.requires_grad]
    images_per_step = config.batch_size * ctx.world_size
    bar = tqdm(total=config.steps, initial=start_step, desc=desc, disable=not ctx.is_main, dynamic_ncols=True)
    last_save = time.monotonic()
    objective.train()
    step = start_step
    # Statistics stay on the device until a log step, so the host runs ahead of the device
    # between log steps (``log_every`` 1 writes every step, as on a CPU nothing is lost).
    window: list[dict[str, torch.Tensor]] = []
    window_started = time.perf_counter()
    session_started, steps_timed = time.perf_counter(), 0
    while step < end:
        batch = batch_to_device(next(batches), ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            outputs = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        steps_timed += 1
        if after_step is not None:
            after_step(step)
        window.append({**{k: v.detach() for k, v in outputs.items()}, "grad_norm": grad_norm.detach()})
        at_log_step = step % config.log_every == 0 or step == end
        # The clock is read at log steps only: deciding costs a host sync (and, with DDP, a collective).
        out_of_time = at_log_step and deadline is not None and any_rank(time.monotonic() >= deadline, ctx)
        if at_log_step:
            stats = mean_across_ranks(_window_means(window), ctx)
            seconds = (time.perf_counter() - window_started) / len(window)
            record = {"step": step, "time": time.time(), "lr": scheduler.get_last_lr()[0], **stats,
                      "images_per_s": images_per_step / seconds, "step_s": seconds}
            if config.log_every > 1:
                record["steps_in_record"] = len(window)
            log.write(record)
            bar.update(len(window))
            bar.set_postfix(loss=f"{stats['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}")
            window, window_started = [], time.perf_counter()
        if validate is not None and val_every and step % val_every == 0 and step < config.steps:
            paused = time.perf_counter()
            validate(step)
            objective.train()
            window_started += time.perf_counter() - paused  # validation time is not step time
            session_started += time.perf_counter() - paused
        if ctx.is_main and time.monotonic() - last_save >= config.checkpoint_minutes * 60:
            save(step)
            last_save = time.monotonic()
        if out_of_time:
            break
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)  # queued steps count toward the throughput line
    seconds = time.perf_counter() - session_started
    if ctx.is_main:
        save(step)
    bar.close()
    if ctx.is_main and steps_timed:
        tqdm.write(f"{desc}: {steps_timed} steps x {images_per_step} images in {seconds:.1f} s: "
                   f"{steps_timed * images_per_step / seconds:.2f} images/s ({ctx.device.type}, {config.precision}, "
                   f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''}, batch {config.batch_size} per process)")
    return step
