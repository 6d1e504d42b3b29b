"""Training checkpoints: everything needed to continue a run bit-for-bit.

Model, optimizer and scheduler state, the step reached, the RNG states and the run's
configuration (a resume with a different architecture or data is refused). Written to a temp
file and renamed, so a crash while saving leaves the previous checkpoint intact. Stored as
plain tensors and numbers so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import ast
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sam.errors import EdgeSamError

STATE_FILE = "state.pt"


class ResumeError(EdgeSamError, ValueError):
    """A training checkpoint that cannot continue this run."""


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    out_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    run_signature: dict[str, Any],
) -> Path:
    """Atomically write ``out_dir/state.pt``."""
    path = Path(out_dir) / STATE_FILE
    tmp = path.with_suffix(".pt.tmp")
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": _rng_state(),
        "run_signature": run_signature,
    }
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_state(
    out_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    run_signature: dict[str, Any],
) -> int:
    """Restore a run from ``out_dir/state.pt``; returns the step to continue from."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"nothing to resume: {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved = payload["run_signature"]
    changed = sorted(k for k in set(saved) | set(run_signature) if saved.get(k) != run_signature.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {run_signature.get(k)!r}" for k in changed)
        raise ResumeError(f"cannot resume {path}: the run's settings changed ({details})")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _restore_rng(payload["rng"])
    return int(payload["step"])
