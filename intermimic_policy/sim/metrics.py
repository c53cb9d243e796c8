"""Evaluation metrics: per-step tracking errors and per-attempt episode statistics (spec 10).

E_h is the mean distance of the 21 key bodies to the reference, E_o the mean distance of the
object's surface points to their reference places (metres per step, reported in cm). An attempt
succeeds when it reaches its clip's last frame without a failure.

Deviation from upstream (``print_final_eval_summary``): every attempt counts (mean and standard
deviation over attempts), instead of the best of many parallel attempts per clip written into
shared per-step tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import KEY_BODIES
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import InteractionGeometry, object_points_world


def human_error(body_pos: Tensor, ref_body_pos: Tensor, key_bodies: Sequence[int] = KEY_BODIES) -> Tensor:
    """E_h [N]: mean over key bodies of |p_ref - p| (m)."""
    k = torch.as_tensor(list(key_bodies), dtype=torch.long, device=body_pos.device)
    return (ref_body_pos[:, k] - body_pos[:, k]).norm(dim=-1).mean(-1)


def object_error(points: Tensor, ref_points: Tensor) -> Tensor:
    """E_o [N]: mean over the object's surface points of |P_ref - P| (m), world-frame points."""
    return (ref_points - points).norm(dim=-1).mean(-1)


def step_errors(sim: SimState, ref: RefFrame, object_points: Tensor, *,
                geometry: InteractionGeometry | None = None,
                key_bodies: Sequence[int] = KEY_BODIES) -> tuple[Tensor, Tensor]:
    """(E_h, E_o) [N] of each world against the reference at the same frame (``geometry``: the
    step's shared world-frame object points, when the caller has them)."""
    if geometry is not None:
        pts, ref_pts = geometry.points, geometry.ref_points
    else:
        pts = object_points_world(object_points, sim.object_pos, sim.object_rot)
        ref_pts = object_points_world(object_points, ref.object_pos, ref.object_rot)
    return human_error(sim.body_pos, ref.body_pos, key_bodies), object_error(pts, ref_pts)


class EpisodeMetrics:
    """Accumulates per-attempt results over any number of episodes of ``num_envs`` worlds.

    Call ``begin`` when worlds start an episode, ``step`` after every control step with that
    step's errors, ``end`` when episodes end, and ``summary`` at any time.
    """

    def __init__(self, num_frames: Tensor, num_envs: int, fps: float = 30.0,
                 clip_names: Sequence[str] | None = None) -> None:
        self.num_frames = num_frames.detach().cpu().long()
        self.fps = float(fps)
        m = int(self.num_frames.shape[0])
        self.clip_names = list(clip_names) if clip_names is not None else [f"clip{i}" for i in range(m)]
        if len(self.clip_names) != m:
            raise ValueError(f"{len(self.clip_names)} clip names for {m} clips")
        self._clip = torch.zeros(num_envs, dtype=torch.long)
        self._start = torch.zeros(num_envs, dtype=torch.long)
        self._active = torch.zeros(num_envs, dtype=torch.bool)
        self._sum_h = torch.zeros(num_envs, dtype=torch.float64)
        self._sum_o = torch.zeros(num_envs, dtype=torch.float64)
        self._count = torch.zeros(num_envs, dtype=torch.long)
        self._records: list[Tensor] = []  # rows: clip, steps, success, mean E_h (m), mean E_o (m)

    def begin(self, env_ids: Tensor, clip_ids: Tensor, start_frames: Tensor) -> None:
        env_ids = env_ids.cpu().long()
        self._clip[env_ids] = clip_ids.cpu().long()
        self._start[env_ids] = start_frames.cpu().long()
        self._active[env_ids] = True
        self._sum_h[env_ids] = 0.0
        self._sum_o[env_ids] = 0.0
        self._count[env_ids] = 0

    def accumulators(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(active [N] bool, sum E_h, sum E_o [N] float64, count [N] long): the per-world sums
        :meth:`step` adds to, for a caller that adds them itself (``sim.fused_step``, in place)."""
        return self._active, self._sum_h, self._sum_o, self._count

    def step(self, e_h: Tensor, e_o: Tensor, env_ids: Tensor | None = None) -> None:
        """Add one step's errors [n] (of ``env_ids``, default all worlds); inactive worlds are skipped."""
        ids = torch.arange(self._clip.shape[0]) if env_ids is None else env_ids.cpu().long()
        live = self._active[ids]
        ids = ids[live]
        self._sum_h[ids] += e_h.detach().cpu().double()[live]
        self._sum_o[ids] += e_o.detach().cpu().double()[live]
        self._count[ids] += 1

    def end(self, env_ids: Tensor, end_frames: Tensor, terminated: Tensor) -> None:
        """Close the episodes of ``env_ids`` that reached ``end_frames``; ``terminated`` = failed."""
        env_ids = env_ids.cpu().long()
        live = self._active[env_ids]
        env_ids = env_ids[live]
        if env_ids.numel() == 0:
            return
        end = end_frames.cpu().long()[live]
        clip = self._clip[env_ids]
        steps = end - self._start[env_ids]
        success = (~terminated.cpu().bool()[live]) & (end >= self.num_frames[clip] - 1)
        count = self._count[env_ids].double()
        nan = torch.full_like(count, float("nan"))
        mean_h = torch.where(count > 0, self._sum_h[env_ids] / count.clamp_min(1), nan)
        mean_o = torch.where(count > 0, self._sum_o[env_ids] / count.clamp_min(1), nan)
        self._records.append(torch.stack([clip.double(), steps.double(), success.double(), mean_h, mean_o], -1))
        self._active[env_ids] = False

    @property
    def num_attempts(self) -> int:
        return sum(int(r.shape[0]) for r in self._records)

    def summary(self) -> dict[str, Any]:
        """Overall and per-clip statistics over all closed attempts (errors in cm, durations in s)."""
        rec = torch.cat(self._records) if self._records else torch.zeros(0, 5, dtype=torch.float64)
        clips = []
        for m in rec[:, 0].long().unique().tolist():
            clips.append({"clip": self.clip_names[m], "frames": int(self.num_frames[m]),
                          **_stats(rec[rec[:, 0] == m], self.fps)})
        return {**_stats(rec, self.fps), "clips": clips}


def _mean_std(x: Tensor) -> tuple[float, float]:
    x = x[~torch.isnan(x)]
    if x.numel() == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(unbiased=False))


def _stats(rec: Tensor, fps: float) -> dict[str, Any]:
    succ, succ_std = _mean_std(rec[:, 2])
    dur, dur_std = _mean_std(rec[:, 1] / fps)
    e_h, e_h_std = _mean_std(rec[:, 3] * 100.0)
    e_o, e_o_std = _mean_std(rec[:, 4] * 100.0)
    return {"attempts": int(rec.shape[0]), "successes": int(rec[:, 2].sum()), "success_rate": succ,
            "mean_duration_s": dur, "duration_s_std": dur_std, "E_h_cm": e_h, "E_h_cm_std": e_h_std,
            "E_o_cm": e_o, "E_o_cm_std": e_o_std}
