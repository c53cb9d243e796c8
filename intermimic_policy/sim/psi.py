"""Physical State Initialisation (PSI): restart episodes from the policy's own good states.

For every (clip, frame) the buffer keeps ``slots`` initial states with scores: slot 0 is the MoCap
reference (score 1, never stored here: the caller has it), slots 1.. hold simulated states that
previous rollouts passed through and then tracked well from. Resets sample a slot with
probability proportional to its score, so physically consistent states replace the (often
physically impossible) MoCap ones as training goes on.

Per episode the buffer records each step's state. When the episode ends, every recorded frame t
gets a survival score: the fraction of the frames the policy should have survived from t (up to
``horizon`` or the clip end) that it did survive; with ``score="reward"`` it is also multiplied
by the mean tracking reward over that window. Frames above ``score_threshold`` replace the
worst slot of their (clip, frame) if they beat it; all stored scores decay a little per update so
old states make way for new ones.

Deviations from upstream (``InterMimic._compute_reset``, spec 7.2):

* the horizon is its own setting, not the episode cap, so PSI acts on clips of any length
  (upstream needs clips longer than ``rolloutLength``, so it never fires on the shipped data);
* every per-candidate index comes from ONE mask over the ending episodes (upstream gathers
  starts/ends with one mask and states with another, mixing envs when short and long clips
  reset together);
* a truncated episode (cap reached, not failed) only scores frames whose outcome it saw;
* a slot is replaced only by a better (decayed) score; all updates are vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCORES = ("survival", "reward")


@dataclass(frozen=True)
class PSIConfig:
    slots: int = 3  # states per (clip, frame) including the MoCap slot 0; 1 = PSI off
    score_threshold: float = 0.5  # only states scoring above this are stored
    decay: float = 1e-5  # stored scores are multiplied by (1 - decay) at every update
    margin_start: int = 10  # frames after an episode's start that are not stored ...
    margin_end: int = 10  # ... nor those just before its end
    min_rollout: int = 30  # episodes shorter than this (steps) store nothing
    horizon: int = 150  # frames a stored state must let the policy survive (5 s at 30 fps)
    score: str = "survival"  # "survival" or "reward" (survival x mean tracking reward)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"PSI slots must be >= 1 (slot 0 is the reference), got {self.slots}")
        if self.score not in SCORES:
            raise ValueError(f"PSI score must be one of {SCORES}, got {self.score!r}")
        if self.horizon < 1 or self.min_rollout < 0 or self.margin_start < 0 or self.margin_end < 0:
            raise ValueError("PSI horizon must be >= 1 and margins/min_rollout >= 0")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"PSI decay must be in [0, 1), got {self.decay}")

    @property
    def enabled(self) -> bool:
        return self.slots > 1


class PSIBuffer:
    """Per (clip, frame) slots of initial states, fed by the episodes of ``num_envs`` worlds.

    ``num_frames`` [M] are the clip lengths; ``state_dim`` is the flat state size
    (``InitialState.DIM`` = 332 for the SMPL-X humanoid with one object).
    """

    def __init__(self, num_frames: Tensor, state_dim: int, num_envs: int,
                 config: PSIConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.config = config or PSIConfig()
        self.device = torch.device(device)
        self.num_frames = num_frames.to(self.device, torch.long)
        self.num_clips = int(self.num_frames.shape[0])
        self.max_frames = int(self.num_frames.max())
        self.state_dim = int(state_dim)
        self.num_envs = int(num_envs)
        m, length, k = self.num_clips, self.max_frames, self.config.slots
        frame = torch.arange(length, device=self.device)
        in_clip = frame.unsqueeze(0) < self.num_frames.unsqueeze(1)  # [M, L]
        self.scores = torch.zeros(m, length, k, device=self.device)
        self.scores[:, :, 0] = in_clip.float()
        self.states = torch.zeros(m, length, k - 1, self.state_dim, device=self.device)
        e = self.num_envs
        self._clip = torch.zeros(e, dtype=torch.long, device=self.device)
        self._start = torch.zeros(e, dtype=torch.long, device=self.device)
        self._last = torch.full((e,), -1, dtype=torch.long, device=self.device)
        self._active = torch.zeros(e, dtype=torch.bool, device=self.device)
        buf_len = length if self.config.enabled else 0
        self._ep_states = torch.zeros(e, buf_len, self.state_dim, device=self.device)
        self._ep_rewards = torch.zeros(e, buf_len, device=self.device)

    # -- recording -----------------------------------------------------------------------------
    def begin_episode(self, env_ids: Tensor, clip_ids: Tensor, start_frames: Tensor) -> None:
        """Worlds ``env_ids`` start an episode of ``clip_ids`` at ``start_frames``."""
        env_ids = env_ids.to(self.device, torch.long)
        self._clip[env_ids] = clip_ids.to(self.device, torch.long)
        self._start[env_ids] = start_frames.to(self.device, torch.long)
        self._last[env_ids] = self._start[env_ids] - 1
        self._active[env_ids] = True
        if self.config.enabled:
            self._ep_rewards[env_ids] = 0.0

    def record(self, env_ids: Tensor, clip_ids: Tensor, frames: Tensor, states: Tensor,
               rewards: Tensor | None = None) -> None:
        """Store each world's state [n, D] (and tracking reward [n]) at its current frame."""
        if not self.config.enabled:
            return
        env_ids = env_ids.to(self.device, torch.long)
        frames = frames.to(self.device, torch.long)
        if self.config.score == "reward" and rewards is None and bool((frames != self._start[env_ids]).any()):
            # only an episode's first state (recorded at its reset) has no reward yet
            raise ValueError("PSI with score='reward' needs the rewards in record()")
        if not bool((self._clip[env_ids] == clip_ids.to(self.device)).all() & self._active[env_ids].all()):
            raise ValueError("PSI record(): clip ids differ from the episodes begun with begin_episode()")
        j = frames - self._start[env_ids]
        ok = (j >= 0) & (j < self.max_frames)
        env_ok, j_ok = env_ids[ok], j[ok]
        self._ep_states[env_ok, j_ok] = states.to(self.device, torch.float32)[ok]
        if rewards is not None:
            self._ep_rewards[env_ok, j_ok] = rewards.to(self.device, torch.float32)[ok]
        self._last[env_ok] = frames[ok]

    # -- update at episode ends -----------------------------------------------------------------
    def episode_scores(self, env_ids: Tensor, end_frames: Tensor, terminated: Tensor) -> tuple[Tensor, Tensor]:
        """(scores [n, L], valid [n, L]) for offsets j = frame - start of each ending episode."""
        cfg = self.config
        clip, s = self._clip[env_ids], self._start[env_ids]
        e = end_frames.to(self.device, torch.long)
        last_frame = self.num_frames[clip] - 1
        j = torch.arange(self.max_frames, device=self.device).unsqueeze(0)
        t = s.unsqueeze(1) + j
        target = torch.minimum(last_frame.unsqueeze(1), t + cfg.horizon)
        e1 = e.unsqueeze(1)
        survival = ((e1 - t).float() / (target - t).clamp_min(1).float()).clamp(0.0, 1.0)
        determined = terminated.to(self.device).bool().unsqueeze(1) | (e1 >= target)
        valid = (
            self._active[env_ids].unsqueeze(1)
            & ((e - s) >= cfg.min_rollout).unsqueeze(1)
            & (t >= (s + cfg.margin_start).unsqueeze(1))
            & (t < e1 - cfg.margin_end)
            & (t <= self._last[env_ids].unsqueeze(1))
            & (t <= last_frame.unsqueeze(1))
            & determined
        )
        score = survival
        if cfg.score == "reward":
            r = self._ep_rewards[env_ids]
            csum = torch.cat([torch.zeros_like(r[:, :1]), r.cumsum(-1)], dim=-1)  # [n, L+1]
            j_end = (torch.minimum(e1, target) - s.unsqueeze(1)).clamp(0, self.max_frames - 1)
            j_end = torch.maximum(j_end, j)
            window = torch.gather(csum, 1, j_end + 1) - torch.gather(csum, 1, j.expand_as(j_end))
            score = survival * window / (j_end - j + 1).float()
        return score, valid

    def on_episode_end(self, env_ids: Tensor, end_frames: Tensor, terminated: Tensor) -> int:
        """Score the ending episodes' frames and store the good states; returns how many were stored.

        ``end_frames`` [n]: the frame each episode reached; ``terminated`` [n]: it ended in failure
        (a time-out is not a failure).
        """
        env_ids = env_ids.to(self.device, torch.long)
        stored = 0
        if self.config.enabled and env_ids.numel() > 0:
            self.scores[:, :, 1:] *= 1.0 - self.config.decay
            stored = self._insert(env_ids, end_frames, terminated)
        self._active[env_ids] = False
        return stored

    def _insert(self, env_ids: Tensor, end_frames: Tensor, terminated: Tensor) -> int:
        score, valid = self.episode_scores(env_ids, end_frames, terminated)
        valid &= score > self.config.score_threshold
        # ONE mask: every quantity below is gathered with these same (row, offset) pairs
        row, j = valid.nonzero(as_tuple=True)
        if row.numel() == 0:
            return 0
        clip = self._clip[env_ids][row]
        t = self._start[env_ids][row] + j
        cand_score = score[row, j]
        key = clip * self.max_frames + t
        # best candidate per (clip, frame): sort by score, then (stably) by key, keep group heads
        order = torch.argsort(cand_score, descending=True, stable=True)
        order = order[torch.argsort(key[order], stable=True)]
        k_sorted = key[order]
        head = torch.ones_like(k_sorted, dtype=torch.bool)
        head[1:] = k_sorted[1:] != k_sorted[:-1]
        win = order[head]
        clip, t, cand_score = clip[win], t[win], cand_score[win]
        worst = self.scores[clip, t, 1:].argmin(-1) + 1
        better = cand_score > self.scores[clip, t, worst]
        clip, t, worst, win = clip[better], t[better], worst[better], win[better]
        self.scores[clip, t, worst] = cand_score[better]
        self.states[clip, t, worst - 1] = self._ep_states[env_ids[row[win]], j[win]]
        return int(clip.numel())

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, clip_ids: Tensor, frames: Tensor, generator: torch.Generator | None = None,
               reference: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(slot ids [n], states [n, D]) drawn with probability proportional to slot scores.

        Rows with slot 0 mean "start from the reference": they hold ``reference`` [n, D] when
        given, else zeros. Empty slots have score 0 and are never drawn.
        """
        clip_ids = clip_ids.to(self.device, torch.long)
        frames = torch.minimum(frames.to(self.device, torch.long).clamp_min(0), self.num_frames[clip_ids] - 1)
        weights = self.scores[clip_ids, frames]
        slot = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        states = (reference.to(self.device, torch.float32).clone() if reference is not None
                  else torch.zeros(clip_ids.shape[0], self.state_dim, device=self.device))
        has = slot > 0
        states[has] = self.states[clip_ids[has], frames[has], slot[has] - 1]
        return slot, states

    def sampling_weights(self, clip_ids: Tensor) -> Tensor:
        """Start-frame probabilities [n, L] for Hybrid init: proportional to 1 / (sum of slot scores),
        so frames that already hold many good physical states are picked less often. Frames within
        ``min_rollout`` of the clip end are not offered (at least frame 0 always is)."""
        clip_ids = clip_ids.to(self.device, torch.long)
        total = self.scores[clip_ids].sum(-1)  # [n, L]
        j = torch.arange(self.max_frames, device=self.device).unsqueeze(0)
        limit = (self.num_frames[clip_ids] - self.config.min_rollout).clamp_min(1).unsqueeze(1)
        w = torch.where(j < limit, 1.0 / total.clamp_min(1e-6), torch.zeros_like(total))
        return w / w.sum(-1, keepdim=True)

    def sample_start_frames(self, clip_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.multinomial(self.sampling_weights(clip_ids), 1, generator=generator).squeeze(-1)

    def fill_fraction(self) -> float:
        """Share of the physical slots (over real frames) that hold a state."""
        if not self.config.enabled:
            return 0.0
        real = self.scores[:, :, 0] > 0
        return float((self.scores[:, :, 1:] > 0)[real].float().mean())

    def state_dict(self) -> dict[str, Tensor]:
        return {"scores": self.scores.clone(), "states": self.states.clone(),
                "num_frames": self.num_frames.clone()}

    def load_state_dict(self, d: dict[str, Tensor]) -> None:
        for key in ("scores", "states", "num_frames"):
            if key not in d or d[key].shape != getattr(self, key).shape:
                raise ValueError(f"PSI state {key!r} missing or of the wrong shape")
        if not torch.equal(d["num_frames"].to(self.device), self.num_frames):
            raise ValueError("PSI state was saved for clips of different lengths")
        self.scores.copy_(d["scores"])
        self.states.copy_(d["states"])
