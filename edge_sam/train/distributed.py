"""Process-group setup shared by finetuning and SAMI pretraining.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK. Without them the run is a single process
with no process group at all, so the same entry point works with and without torchrun.
Only rank 0 logs, validates and writes files; every rank holds identical weights because DDP
averages gradients and all ranks start from rank 0's broadcast parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edge_sam.errors import EdgeSamError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistContext:
    """Join the torchrun process group if there is one; gloo on CPU, nccl on CUDA (with TF32 enabled)."""
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise EdgeSamError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not use_cuda:
        raise EdgeSamError(f"unsupported device {device!r}: use cpu or cuda")
    if use_cuda:
        # fp32 matmuls and convolutions on tensor cores (TF32): the usual training trade on GPUs.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(0, 1, torch.device(device))
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), torch_device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP-wrap a training objective when there is more than one process."""
    if not ctx.enabled:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def mean_across_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average logged scalars over ranks so rank 0's log describes the whole global batch."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(packed)
    packed /= ctx.world_size
    return dict(zip(keys, packed.tolist()))


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when it is True on any: decisions that end a loop must be the same
    everywhere, or the ranks still stepping wait forever in the next all-reduce."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
