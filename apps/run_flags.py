"""The flags every training-style run shares (``train``, ``pretrain``, ``quantize qat``).

One place, so that a session flag (``--resume``, ``--stop-after-minutes``, ...) means the same in
every command and a new one reaches all of them. Defaults come from the run's own config
dataclass (a :class:`edge_sam.train.config.RunConfig` subclass), so each command shows its own.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

from edge_sam.train.config import TRAINING_PRECISIONS, RunConfig

ConfigT = TypeVar("ConfigT", bound=RunConfig)


def add_optimizer_arguments(parser: argparse.ArgumentParser, defaults: RunConfig) -> None:
    """Steps, batch, learning-rate schedule."""
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimizer steps (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"images per step per process (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"peak AdamW learning rate (default {defaults.lr})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help=f"AdamW weight decay (default {defaults.weight_decay})")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                        help=f"linear warmup before the cosine decay (default {defaults.warmup_steps})")


def add_session_arguments(parser: argparse.ArgumentParser, defaults: RunConfig) -> None:
    """Where it runs, how it checkpoints, when it stops and resumes, how often it logs."""
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help=f"cpu or cuda (default {defaults.device})")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default=defaults.precision,
                        help="bf16 autocasts the forward pass (fast on GPUs); weights stay fp32 (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--workers", dest="num_workers", type=int, default=defaults.num_workers,
                        help="DataLoader worker processes (default 0: load in the training process)")
    parser.add_argument("--checkpoint-minutes", type=float, default=defaults.checkpoint_minutes,
                        help=f"write state.pt at most this often (default {defaults.checkpoint_minutes})")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="end this session at this step (checkpointed); the schedule still spans --steps")
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="end this session after this much wall time (checkpointed; continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    parser.add_argument("--log-every", type=int, default=defaults.log_every,
                        help="write one log.jsonl record per N steps (mean statistics); >1 keeps a GPU busy "
                             f"(default {defaults.log_every})")


def config_from_args(cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """The run config from the parsed flags that name one of its fields."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in vars(args).items() if key in names})
