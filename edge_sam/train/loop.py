"""The step loop both trainers run: forward the objective, clip, step, log, checkpoint.

The objective is an ``nn.Module`` whose forward takes a batch and returns a dict with
``loss`` and detached scalar statistics; wrapping that one module in DDP is what keeps the
gradient all-reduce correct (DDP hooks only calls that go through its forward).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .config import RunConfig
from .distributed import DistContext, mean_across_ranks

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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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
) -> int:
    """Train from ``start_step`` to ``config.steps`` (or ``stop_after_steps``); returns the step reached.

    ``save(step)`` runs on rank 0 every ``checkpoint_minutes`` and when the loop ends;
    ``validate(step)`` runs on every rank every ``val_every`` steps (it decides who works).
    """
    end = min(config.steps, config.stop_after_steps or config.steps)
    params = [p for p in objective.parameters() if p.requires_grad]
    images_per_step = config.batch_size * ctx.world_size
    bar = tqdm(total=config.steps, initial=start_step, desc=desc, disable=not ctx.is_main, dynamic_ncols=True)
    last_save = time.monotonic()
    objective.train()
    step = start_step
    while step < end:
        started = time.perf_counter()
        outputs = objective(to_device(next(batches), ctx.device))
        optimizer.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        stats = mean_across_ranks({k: float(v.detach()) for k, v in outputs.items()}, ctx)
        seconds = time.perf_counter() - started
        record = {"step": step, "time": time.time(), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                  **stats, "images_per_s": images_per_step / seconds, "step_s": seconds}
        log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", img_s=f"{record['images_per_s']:.2f}")
        if validate is not None and val_every and step % val_every == 0 and step < config.steps:
            validate(step)
            objective.train()
        if ctx.is_main and time.monotonic() - last_save >= config.checkpoint_minutes * 60:
            save(step)
            last_save = time.monotonic()
    if ctx.is_main:
        save(step)
    bar.close()
    return step
