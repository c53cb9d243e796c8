"""Data-parallel helpers for the student under ``torchrun`` (gloo on CPU, NCCL on GPU).

What upstream gets wrong (spec 9.4, 13.9) and this fixes: gradients are *averaged* across ranks
(not divided by the global sample count a second time), and the observation normaliser's
statistics are merged across ranks every update, so all ranks normalise alike. Parameters are
broadcast from rank 0 at the start; only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from training.normalizer import RunningNormalizer


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> DistInfo:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def all_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``x`` over ranks (a copy; ``x`` itself is unchanged)."""
    y = x.clone()
    if info.enabled:
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter], info: DistInfo) -> None:
    """Replace each gradient by its mean over ranks (one flat all-reduce)."""
    if not info.enabled:
        return
    ps = [p for p in params if p.grad is not None]
    if not ps:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in ps])  # type: ignore[union-attr]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for p in ps:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))  # type: ignore[union-attr]
        offset += n


@torch.no_grad()
def update_normalizer(normalizer: RunningNormalizer, obs: torch.Tensor, info: DistInfo) -> None:
    """Merge this update's observations of ALL ranks into the running statistics, identically on
    every rank: global batch count, mean and unbiased variance from per-rank moments, then the
    normaliser's own merge rule (``RunningNormalizer.update``'s formula)."""
    x = obs.reshape(-1, normalizer.dim).to(normalizer.mean.device, torch.float64)
    n_local = torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device)
    s1 = x.sum(0)
    n = all_sum(n_local, info)
    mean = all_sum(s1, info) / n
    m2 = all_sum((x - mean).square().sum(0), info)
    total_n = float(n.item())
    if total_n < 2:
        return
    b_var = m2 / (total_n - 1.0)
    delta = mean - normalizer.mean
    total = normalizer.count + total_n
    new_m2 = normalizer.var * normalizer.count + b_var * total_n + delta.square() * normalizer.count * total_n / total
    normalizer.mean.add_(delta * total_n / total)
    normalizer.var.copy_(new_m2 / total)
    normalizer.count.copy_(total)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
