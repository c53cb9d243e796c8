"""Running mean/variance observation normaliser, with upstream InterMimic's semantics.

Why not ``rsl_rl.modules.EmpiricalNormalization``: it keeps float32 statistics, divides by
``std + eps`` and does not clamp, so a policy trained with it would see different inputs than
upstream's rl_games ``RunningMeanStd`` (spec 4.1). This module reproduces the latter exactly:

* statistics in float64: ``mean`` zeros, ``var`` ones, ``count`` 1 (rl_games' initial count);
* ``update(batch)`` merges the batch mean and the *unbiased* batch variance (Chan et al.);
* ``normalize(x) = clamp((x - mean) / sqrt(var + eps), -clip, clip)`` with eps 1e-5, clip 5.

It is an ``nn.Module`` whose statistics are buffers, so the state dict goes into checkpoints and
``forward`` (= ``normalize``) is traced into the exported ONNX graph: the deployed policy takes raw
observations and can never be fed a differently normalised input.
"""

from __future__ import annotations

import torch
from torch import nn

from intermimic_policy.errors import IntermimicError


class NormalizerError(IntermimicError, ValueError):
    """Statistics or inputs that do not fit the normaliser."""


class RunningNormalizer(nn.Module):
    """Observation normaliser: float64 running statistics, float32 in and out."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-5, clip: float = 5.0) -> None:
        super().__init__()
        if dim <= 0:
            raise NormalizerError(f"normaliser dim must be positive, got {dim}")
        self.dim = int(dim)
        self.eps = float(eps)
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch [N, dim] into the running statistics (parallel-variance formula)."""
        if batch.ndim != 2 or batch.shape[1] != self.dim:
            raise NormalizerError(f"normaliser update expects [N, {self.dim}], got {list(batch.shape)}")
        n = batch.shape[0]
        if n < 2:
            # the unbiased variance of a single sample is undefined (upstream would write NaN)
            raise NormalizerError("normaliser update needs at least 2 samples")
        x = batch.detach().to(self.mean.device, torch.float64)
        if not torch.isfinite(x).all():
            raise NormalizerError("normaliser update batch contains NaN or inf")
        b_mean = x.mean(0)
        b_var = x.var(0, unbiased=True)
        delta = b_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + b_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise and clamp; the output has ``x``'s dtype (float32 in training and export)."""
        mean = self.mean.to(x.dtype)
        std = torch.sqrt(self.var + self.eps).to(x.dtype)
        return torch.clamp((x - mean) / std, -self.clip, self.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)

    def load_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """Set the statistics directly (e.g. from an upstream ``running_mean_std`` dict)."""
        if mean.shape != (self.dim,) or var.shape != (self.dim,):
            raise NormalizerError(f"normaliser stats must be [{self.dim}], got {list(mean.shape)}, "
                                  f"{list(var.shape)}")
        if (var < 0).any() or not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise NormalizerError("normaliser stats contain NaN, inf or negative variances")
        with torch.no_grad():
            self.mean.copy_(mean.to(torch.float64))
            self.var.copy_(var.to(torch.float64))
            self.count.fill_(float(count))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, clip={self.clip}"
