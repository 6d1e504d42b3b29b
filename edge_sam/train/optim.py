"""AdamW with linear warmup and cosine decay, the schedule both trainers use."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on 1-D parameters (norms, biases) and embedding tables.

    Decaying a LayerNorm gain or a learned token toward zero only fights the model.
    """
    tables = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        is_table = id(param) in tables or name.endswith(("pos_embed", "mask_token"))
        (no_decay if param.ndim <= 1 or is_table else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_lr_ratio: float = 0.01
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ~0 to the base lr, then a cosine down to ``final_lr_ratio`` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
