"""Run settings shared by finetuning and SAMI pretraining.

A resumed run must keep every setting that changes the math (model, data, batch, learning
rate, warmup, seed); the rest (where logs go, threads, checkpoint cadence, when to stop this
session, the total length) may change between sessions. ``signature()`` is what a checkpoint
stores to check that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSamConfig

TRAINING_PRECISIONS = ("fp32", "bf16")
MODEL_PRESETS = {"vitt": EfficientSamConfig.vitt, "vits": EfficientSamConfig.vits, "tiny": EfficientSamConfig.tiny}

# Settings that may differ between the sessions of one run. ``steps`` may change so a run on a
# shared machine can be shortened or extended; the cosine then follows the new length.
SESSION_SETTINGS = frozenset(
    {"out_dir", "device", "threads", "num_workers", "checkpoint_minutes", "stop_after_steps", "stop_after_minutes",
     "resume", "val_every", "val_images", "steps", "log_every"}
)


@dataclass
class RunConfig:
    data: str
    out_dir: str
    model: str = "vitt"
    img_size: int = 256
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    flip_prob: float = 0.5
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    num_workers: int = 0
    checkpoint_minutes: float = 5.0
    stop_after_steps: int | None = None
    # End this session (checkpointed, resumable) once this much wall time has passed: for machines
    # lent for a fixed time, where a run killed from outside loses everything since its last checkpoint.
    stop_after_minutes: float | None = None
    resume: bool = False
    # "bf16": autocast the forward pass to bfloat16 (the GPU recipe); weights and optimizer stay fp32.
    precision: str = "fp32"
    log_every: int = 1

    def validate(self) -> None:
        if self.model not in MODEL_PRESETS:
            raise EdgeSamError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_PRESETS)}")
        for name in ("steps", "batch_size", "img_size"):
            if getattr(self, name) <= 0:
                raise EdgeSamError(f"{name} must be positive, got {getattr(self, name)}")
        if self.precision not in TRAINING_PRECISIONS:
            raise EdgeSamError(f"unknown precision {self.precision!r}: choose one of {', '.join(TRAINING_PRECISIONS)}")
        if self.log_every <= 0:
            raise EdgeSamError(f"log_every must be positive, got {self.log_every}")
        if self.lr <= 0:
            raise EdgeSamError(f"lr must be positive, got {self.lr}")

    def model_config(self) -> EfficientSamConfig:
        try:
            return MODEL_PRESETS[self.model](img_size=self.img_size)
        except ValueError as exc:
            raise EdgeSamError(f"invalid model settings: {exc}") from None

    def signature(self, world_size: int) -> dict[str, Any]:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in SESSION_SETTINGS}
        values["world_size"] = world_size
        return values
