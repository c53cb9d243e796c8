"""Many teachers in one batched call: stacked parameters (``torch.func``), one normaliser each.

Upstream evaluates every teacher on every world and then picks (spec 9.2 quirk: cost grows with
the number of teachers). Here the worlds are grouped by their teacher, the groups padded to one
size M, and ``vmap(functional_call)`` runs teacher k on its own group only: K x M rows, about N.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from intermimic_policy.errors import IntermimicError
from training.ppo.policy import TeacherPolicy


class TeacherBankError(IntermimicError, ValueError):
    """Teachers that cannot be batched, or clips without a teacher."""


def teacher_of_clips(clip_names: Sequence[str], teacher_clips: Mapping[str, Sequence[str]]) -> list[int]:
    """Index (into ``teacher_clips``' order) of the teacher of each clip; a clip without a teacher
    is an error that lists every such clip."""
    names = list(teacher_clips)
    owner: dict[str, int] = {}
    for k, name in enumerate(names):
        for clip in teacher_clips[name]:
            owner.setdefault(clip, k)
    missing = [c for c in clip_names if c not in owner]
    if missing:
        raise TeacherBankError(f"no teacher for clip(s) {missing}; teachers: "
                               + ", ".join(f"{n} ({len(teacher_clips[n])} clips)" for n in names))
    return [owner[c] for c in clip_names]


class TeacherBank(nn.Module):
    """``means(obs, teacher_ids)``: each row's action mean from its own teacher (no grad)."""

    mean: Tensor
    std: Tensor

    def __init__(self, policies: Sequence[TeacherPolicy], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not policies:
            raise TeacherBankError("no teachers given")
        arch = [p.net.arch() for p in policies]
        if any(a != arch[0] for a in arch):
            raise TeacherBankError(f"teachers must share one architecture to be batched, got {arch}")
        self.names = list(names) if names is not None else [f"teacher{i}" for i in range(len(policies))]
        self.num_teachers = len(policies)
        self.obs_dim = policies[0].obs_dim
        nets = [p.net for p in policies]
        params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers_ = {k: v.detach() for k, v in buffers.items()}
        base = copy.deepcopy(nets[0]).to("meta")
        self._base = [base]  # not a submodule: its (meta) parameters are not the bank's
        norms = [p.normalizer for p in policies]
        self.register_buffer("mean", torch.stack([n.mean for n in norms]))  # [K, D] float64
        self.register_buffer("std", torch.stack([torch.sqrt(n.var + n.eps) for n in norms]))
        self.clip = torch.tensor([n.clip for n in norms], dtype=torch.float32)
        self.std_action = policies[0].action_std.detach()

        def one(p: dict, b: dict, mean: Tensor, std: Tensor, clip: Tensor, x: Tensor) -> Tensor:
            z = torch.clamp((x - mean.to(x.dtype)) / std.to(x.dtype), -clip, clip)
            return functional_call(self._base[0], (p, b), (z,))

        self._fn = vmap(one)

    @torch.no_grad()
    def means(self, obs: Tensor, teacher_ids: Tensor) -> Tensor:
        """Action means [N, A] for observations [N, D]; row i uses teacher ``teacher_ids[i]``."""
        n = obs.shape[0]
        ids = teacher_ids.to(obs.device).long()
        order = torch.argsort(ids, stable=True)
        counts = torch.bincount(ids, minlength=self.num_teachers)
        m = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        # slot j of teacher k = the j-th world of k (padding repeats its last world, or world 0)
        j = torch.arange(m, device=obs.device)
        pos = starts.unsqueeze(1) + torch.minimum(j.unsqueeze(0), (counts - 1).clamp_min(0).unsqueeze(1))
        rows = order[pos.clamp_max(n - 1)]  # [K, M]
        out = self._fn(self.params, self.buffers_, self.mean, self.std, self.clip.to(obs.device), obs[rows])
        result = torch.empty(n, out.shape[-1], dtype=out.dtype, device=obs.device)
        valid = j.unsqueeze(0) < counts.unsqueeze(1)
        result[rows[valid]] = out[valid]
        return result

    @torch.no_grad()
    def sample(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The teacher's sampled action, clamped to [-1, 1] (upstream's ``expert.actions``)."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + self.std_action.to(mean.device) * noise).clamp(-1.0, 1.0)

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        super().to(*args, **kwargs)
        self.params = {k: v.to(*args, **kwargs) for k, v in self.params.items()}
        self.buffers_ = {k: v.to(*args, **kwargs) for k, v in self.buffers_.items()}
        return self
