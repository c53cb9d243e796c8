"""Episode ends: falls, interaction early termination (IET), broken states and time-outs (spec 6).

"reset" means the episode ends; "terminated" means it ended in failure, so the value bootstrap is
cut. Time-outs (clip end, episode cap) reset without terminating. Every check is a pure function
of tensors; :func:`check_terminations` combines them for the environment.

Deviations from upstream (``compute_humanoid_reset``, ``compute_hoi_reset``, ``_compute_reward``):

* the fall height is configurable (upstream hard-codes 0.3 m and ignores its config key) and,
  like every failure check, waits ``grace_steps`` after the episode start (upstream: absolute t);
* ``early_termination=False`` really disables IET (upstream's flag has no effect);
* a non-finite simulated state terminates the world instead of raising and killing training;
* hand contact is human-OBJECT contact by default (``contact_source``); upstream's "any contact"
  counts touching the floor as holding the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import KEY_BODIES, LEFT_HAND_BODIES, RIGHT_HAND_BODIES
from intermimic_policy.sim.rewards import CONTACT_SOURCES, LABEL_THRESHOLD
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import (
    InteractionGeometry,
    ig_deviation_ratio,
    object_points_world,
)

FAILURE_REASONS = ("nonfinite", "fall", "human_deviation", "object_deviation", "ig_deviation",
                   "hand_contact_lost")
TIMEOUT_REASONS = ("clip_end", "episode_cap")


@dataclass(frozen=True)
class TerminationConfig:
    fall_height: float = 0.3  # root below this (m) = fallen
    key_body_dev: float = 0.5  # mean key-body distance to the reference (m)
    object_dev: float = 0.5  # mean object-point distance to the reference (m)
    ig_ratio: float = 2.0  # graph edge moved by more than this times its length ...
    ig_floor: float = 0.5  # ... with lengths floored at this (m)
    hand_contact_lost_frames: int = 10  # terminate when a hand misses its contact MORE steps than this
    grace_steps: int = 1  # failure checks start when steps since the reset exceed this
    early_termination: bool = True  # interaction early termination (the four IET checks)
    contact_source: str = "object"  # "object": human-object contact; "any": upstream's any contact

    def __post_init__(self) -> None:
        if self.contact_source not in CONTACT_SOURCES:
            raise ValueError(f"termination contact_source must be one of {CONTACT_SOURCES}, "
                             f"got {self.contact_source!r}")
        for name in ("key_body_dev", "object_dev", "ig_ratio", "ig_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"termination {name} must be positive, got {getattr(self, name)}")


@cache
def _index(ids: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)


def _ids(ids: tuple[int, ...], like: Tensor) -> Tensor:
    return _index(ids, like.device)


def fall(root_height: Tensor, fall_height: float) -> Tensor:
    return root_height < fall_height


def human_deviation(key_pos: Tensor, ref_key_pos: Tensor, threshold: float) -> Tensor:
    """Mean key-body distance to the reference above ``threshold``."""
    return (key_pos - ref_key_pos).norm(dim=-1).mean(-1) > threshold


def object_deviation(points: Tensor, ref_points: Tensor, threshold: float) -> Tensor:
    """Mean distance of the object's surface points to their reference places above ``threshold``."""
    return (points - ref_points).norm(dim=-1).mean(-1) > threshold


def ig_deviation(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
                 ratio: float, floor: float, centre: Tensor | None = None,
                 ref_centre: Tensor | None = None) -> Tensor:
    """Some key-body/object-point edge moved more than ``ratio`` times its (floored) length."""
    return ig_deviation_ratio(key_pos, points, ref_key_pos, ref_points, floor, centre, ref_centre) > ratio


def update_hand_contact_lost(counters: Tensor, contact: Tensor, labels: Tensor,
                             hands: tuple[tuple[int, ...], tuple[int, ...]] = (LEFT_HAND_BODIES, RIGHT_HAND_BODIES),
                             ) -> Tensor:
    """Consecutive steps each hand [N, 2] (left, right) missed a contact the reference wants.

    m = (reference labels any +1 on the hand) and (no body of the hand in contact); n <- (n+m) m.
    ``hands``: the (left, right) hand bodies of the embodiment (default: the SMPL-X humanoid's).
    """
    ids = _ids(hands[0] + hands[1], labels)
    shape = (-1, 2, len(hands[0]))
    wanted = (labels.index_select(1, ids).reshape(shape) > LABEL_THRESHOLD).any(-1)
    touching = contact.index_select(1, ids).bool().reshape(shape).any(-1)
    m = (wanted & ~touching).to(counters.dtype)
    return (counters + m) * m


def hand_contact_lost(counters: Tensor, max_frames: int) -> Tensor:
    return (counters > max_frames).any(-1)


def clip_end(t: Tensor, num_frames: Tensor) -> Tensor:
    """The reference has no next frame: t is the clip's last frame (or past it)."""
    return t >= num_frames - 1


def nonfinite_state(sim: SimState) -> Tensor:
    """Worlds whose pose or velocity holds NaN or inf (a blown-up simulation).

    x * 0 is 0 for every finite x and NaN for NaN or inf, so one sum per world finds them all.
    """
    values = torch.cat([x.flatten(1) for x in (sim.body_pos, sim.body_rot, sim.body_lin_vel, sim.body_ang_vel,
                                                sim.object_pos, sim.object_rot, sim.object_lin_vel,
                                                sim.object_ang_vel)], dim=1)
    return (values * 0.0).sum(-1) != 0.0


def check_terminations(sim: SimState, ref: RefFrame, object_points: Tensor, t: Tensor,
                       num_frames: Tensor, steps_since_start: Tensor, hand_lost: Tensor,
                       config: TerminationConfig, episode_cap: int | None = None, *,
                       geometry: InteractionGeometry | None = None,
                       errors: tuple[Tensor, Tensor] | None = None,
                       key_bodies: tuple[int, ...] = KEY_BODIES,
                       ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """(reset [N], terminated [N], reasons) for each world after a step.

    ``ref`` is the reference at the current frame ``t`` [N]; ``num_frames`` [N] each world's clip
    length; ``hand_lost`` [N,2] the counters already updated for this step with
    :func:`update_hand_contact_lost`; ``episode_cap`` the most control steps an episode may run.
    ``geometry``: this step's shared :class:`InteractionGeometry` (key bodies ``KEY_BODIES``,
    floor ``config.ig_floor``), else the graph quantities are computed here. ``errors``: this
    step's (E_h, E_o) from ``metrics.step_errors``, the very means the deviation tests compare.
    """
    cfg = config
    active = steps_since_start > cfg.grace_steps
    reasons: dict[str, Tensor] = {"nonfinite": nonfinite_state(sim)}
    reasons["fall"] = active & fall(sim.body_pos[:, 0, 2], cfg.fall_height)
    if cfg.early_termination:
        k = _ids(key_bodies, sim.body_pos)
        key, ref_key = sim.body_pos.index_select(1, k), ref.body_pos.index_select(1, k)
        if geometry is not None:
            if geometry.floor != cfg.ig_floor:
                raise ValueError(f"interaction geometry has floor {geometry.floor}, config ig_floor {cfg.ig_floor}")
            pts, ref_pts = geometry.points, geometry.ref_points
            ig_dev = geometry.deviation_ratio > cfg.ig_ratio
        else:
            pts = object_points_world(object_points, sim.object_pos, sim.object_rot)
            ref_pts = object_points_world(object_points, ref.object_pos, ref.object_rot)
            ig_dev = ig_deviation(key, pts, ref_key, ref_pts, cfg.ig_ratio, cfg.ig_floor, sim.object_pos,
                                  ref.object_pos)
        if errors is not None:
            human, obj = errors[0] > cfg.key_body_dev, errors[1] > cfg.object_dev
        else:
            human = human_deviation(key, ref_key, cfg.key_body_dev)
            obj = object_deviation(pts, ref_pts, cfg.object_dev)
        reasons["human_deviation"] = active & human
        reasons["object_deviation"] = active & obj
        reasons["ig_deviation"] = active & ig_dev
        reasons["hand_contact_lost"] = active & hand_contact_lost(hand_lost, cfg.hand_contact_lost_frames)
    else:
        none = torch.zeros_like(active)
        for name in ("human_deviation", "object_deviation", "ig_deviation", "hand_contact_lost"):
            reasons[name] = none
    reasons["clip_end"] = clip_end(t, num_frames)
    reasons["episode_cap"] = (steps_since_start >= episode_cap if episode_cap is not None
                              else torch.zeros_like(active))
    terminated = torch.zeros_like(active)
    for name in FAILURE_REASONS:
        terminated |= reasons[name]
    reset = terminated | reasons["clip_end"] | reasons["episode_cap"]
    return reset, terminated, reasons


def hand_contact_source(sim: SimState, config: TerminationConfig) -> Tensor:
    """The contact flags the hand counter reads, per ``config.contact_source``."""
    return sim.body_object_contact if config.contact_source == "object" else sim.body_contact
