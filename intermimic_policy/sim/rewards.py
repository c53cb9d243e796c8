"""InterMimic's tracking reward: a product of factors, each exp(-weight * error) in (0, 1].

One pure function per factor (spec 5), and :func:`compute_reward` that multiplies them:

    r = r_body * r_obj * r_ig * r_contact
    r_body    = p * r * pv * rv * eg1      (positions weighted by closeness to the object)
    r_obj     = op * or * opv * orv * eg2
    r_contact = cg_hand * cg_other * cg_all * eg3

Every factor is exactly 1 at zero error (and whenever its weight is 0) and falls with the error
(it can underflow to 0 for huge errors). Deviations from upstream, each a fixed bug:

* the forced position weight 1 goes to the ankles AND toes (upstream hits knees and ankles: it
  used key-body list positions as body ids);
* "other bodies" contact promotion covers every non-hand contact body (upstream drops R_Thorax,
  R_Shoulder, R_Elbow);
* the +1/-1 contact-label terms read true human-object contact (``contact_source="object"``);
  upstream's net-force "any contact" cannot tell the floor from the object (``"any"`` restores it);
* angular velocities are true ones on both sides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import (
    KEY_BODIES,
    LEFT_HAND_BODIES,
    NON_HAND_CONTACT_BODIES,
    RIGHT_HAND_BODIES,
    body_index,
)
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.sim.interaction_graph import ig_reward_error, object_points_world
from intermimic_policy.sim.reference import RefFrame
from intermimic_policy.sim.state import SimState

# a reference label counts as +1 above this and as -1 below its negative (upstream's threshold)
LABEL_THRESHOLD = 0.1
# accelerations are not penalised in the first steps of an episode (upstream: t - t_start <= 2),
# because the velocity before a reset is not the one the episode started from
ENERGY_WARMUP_STEPS = 2
# decay per metre of the closeness weight exp(-5 d) of a body to the object
PROXIMITY_DECAY = 5.0
# bodies whose position is always tracked, whatever their distance to the object (feet on the ground)
FOOT_BODIES: tuple[int, ...] = tuple(body_index(n) for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"))
CONTACT_SOURCES = ("object", "any")


class RewardConfigError(IntermimicError, ValueError):
    """A reward configuration with unknown names or invalid values."""


@dataclass(frozen=True)
class RewardWeights:
    """Factor weights; defaults are upstream's ``omomo_train_new`` (spec 5.5).

    ``or_`` is the object-rotation weight (``or`` in config dicts). ``contact_source`` is not a
    weight: it picks which simulated contact the +1/-1 label terms read.
    """

    p: float = 30.0
    r: float = 1.5
    pv: float = 0.0
    rv: float = 0.0
    op: float = 5.0
    or_: float = 0.1
    opv: float = 0.1
    orv: float = 0.0
    ig: float = 5.0
    cg_hand: float = 5.0
    cg_other: float = 5.0
    cg_all: float = 3.0
    eg1: float = 2e-5
    eg2: float = 2e-5
    eg3: float = 1e-11
    contact_source: str = "object"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "contact_source":
                continue
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not (v >= 0.0) or v == float("inf"):
                raise RewardConfigError(
                    f"reward weight {_key(f.name)!r} must be a finite number >= 0, got {v!r}")
        if self.contact_source not in CONTACT_SOURCES:
            raise RewardConfigError(f"reward contact_source must be one of {CONTACT_SOURCES}, "
                                    f"got {self.contact_source!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardWeights:
        """From a config mapping with upstream's keys (``or`` accepted); unknown keys are an error."""
        known = {_key(f.name): f.name for f in fields(cls)} | {f.name: f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            names = sorted(_key(f.name) for f in fields(cls))
            raise RewardConfigError(f"unknown reward weight name(s) {unknown}; known: {names}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            name = known[k]
            if name == "contact_source":
                kwargs[name] = v
                continue
            try:
                kwargs[name] = float(v)
            except (TypeError, ValueError):
                raise RewardConfigError(f"reward weight {k!r} must be a number, got {v!r}") from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {_key(k): v for k, v in asdict(self).items()}


def _key(field_name: str) -> str:
    return "or" if field_name == "or_" else field_name


@dataclass
class PrevVelocities:
    """The previous control step's velocities, for the acceleration (energy) factors."""

    joint_ang_vel: Tensor  # [N, 51, 3]
    object_lin_vel: Tensor  # [N, 3]
    object_ang_vel: Tensor  # [N, 3]

    @classmethod
    def from_sim(cls, sim: SimState) -> PrevVelocities:
        return cls(sim.joint_ang_vel.clone(), sim.object_lin_vel.clone(), sim.object_ang_vel.clone())


def _exp(weight: float, err: Tensor) -> Tensor:
    return torch.exp(-weight * err)


def _ids(ids: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.tensor(ids, dtype=torch.long, device=like.device)


# -- body ------------------------------------------------------------------------------------------
def proximity_weights(ref_ig: Tensor) -> Tensor:
    """exp(-5 d_b), d_b = reference distance of each body to the object, [N, 52]."""
    return torch.exp(-PROXIMITY_DECAY * ref_ig.norm(dim=-1))


def body_pos_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Key-body positions, each squared error weighted by closeness to the object (feet: 1)."""
    w = proximity_weights(ref.ig)
    w[:, _ids(FOOT_BODIES, w)] = 1.0
    k = _ids(KEY_BODIES, w)
    err = ((ref.body_pos[:, k] - sim.body_pos[:, k]) ** 2).sum(-1) * w[:, k]
    return _exp(weight, err.mean(-1))


def body_rot_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Body orientations, each angle weighted by (1 - closeness): far bodies track rotation."""
    w = proximity_weights(ref.ig)
    ang = quat.angle_between(ref.body_rot, sim.body_rot)
    return _exp(weight, (ang * (1.0 - w)).mean(-1))


def body_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, ((ref.body_lin_vel - sim.body_lin_vel) ** 2).mean(dim=(1, 2)))


def body_ang_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, ((ref.body_ang_vel - sim.body_ang_vel) ** 2).mean(dim=(1, 2)))


def joint_energy_reward(joint_ang_vel: Tensor, prev_joint_ang_vel: Tensor, active: Tensor,
                        weight: float, dt: float) -> Tensor:
    """Joint angular acceleration penalty; ``active`` [N] bool masks the first steps of an episode."""
    acc = (joint_ang_vel - prev_joint_ang_vel) / dt
    err = (acc ** 2).flatten(1).mean(-1) * active.to(acc.dtype)
    return _exp(weight, err)


# -- object ----------------------------------------------------------------------------------------
def _local_object_pos(root_pos: Tensor, root_rot: Tensor, obj_pos: Tensor) -> Tensor:
    """Object position in the root's heading frame, with the absolute object height as z."""
    local = quat.rotate(quat.heading_inverse(root_rot), obj_pos - root_pos)
    return torch.cat([local[:, :2], obj_pos[:, 2:3]], dim=-1)


def object_pos_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    x = _local_object_pos(sim.root_pos, sim.root_rot, sim.object_pos)
    x_ref = _local_object_pos(ref.root_pos, ref.root_rot, ref.object_pos)
    return _exp(weight, ((x_ref - x) ** 2).mean(-1))


def object_rot_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Object orientation relative to each root's heading."""
    local = quat.multiply(quat.heading_inverse(sim.root_rot), sim.object_rot)
    local_ref = quat.multiply(quat.heading_inverse(ref.root_rot), ref.object_rot)
    return _exp(weight, quat.angle_between(local_ref, local))


def object_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, ((ref.object_lin_vel - sim.object_lin_vel) ** 2).mean(-1))


def object_ang_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, ((ref.object_ang_vel - sim.object_ang_vel) ** 2).mean(-1))


def object_energy_reward(lin_vel: Tensor, ang_vel: Tensor, prev_lin_vel: Tensor, prev_ang_vel: Tensor,
                         active: Tensor, weight: float, dt: float) -> Tensor:
    a = ((lin_vel - prev_lin_vel) / dt) ** 2
    alpha = ((ang_vel - prev_ang_vel) / dt) ** 2
    m = active.to(a.dtype)
    return _exp(weight, a.mean(-1) * m) * _exp(weight, alpha.mean(-1) * m)


# -- interaction graph -----------------------------------------------------------------------------
def ig_reward(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
              weight: float, centre: Tensor | None = None, ref_centre: Tensor | None = None) -> Tensor:
    """Key-body x object-point graph agreement (world-frame points of sim and reference;
    ``centre``/``ref_centre``: the object positions, for precision)."""
    return _exp(0.5 * weight, ig_reward_error(key_pos, points, ref_key_pos, ref_points, centre, ref_centre))


# -- contacts --------------------------------------------------------------------------------------
def hand_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Per hand: if the reference has any +1 label on it, reward the fraction of its bodies in
    contact, bounded to [0.5, 1]; a hand without +1 labels gives 1. Both hands multiply."""
    out = torch.ones(contact.shape[0], dtype=labels.dtype, device=labels.device)
    c = contact.to(labels.dtype)
    for hand in (LEFT_HAND_BODIES, RIGHT_HAND_BODIES):
        ids = _ids(hand, labels)
        wanted = (labels[:, ids] > LABEL_THRESHOLD).any(-1)
        err = (1.0 - c[:, ids]).mean(-1)
        out = out * torch.where(wanted, 0.5 * (1.0 + _exp(weight, err)), torch.ones_like(err))
    return out


def other_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Non-hand contact bodies labelled +1 that are not in contact, as a fraction of those bodies."""
    ids = _ids(NON_HAND_CONTACT_BODIES, labels)
    lab = labels[:, ids]
    missing = (1.0 - contact[:, ids].to(lab.dtype)) * (lab > LABEL_THRESHOLD).to(lab.dtype)
    return _exp(weight, missing.mean(-1))


def penalty_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Bodies labelled -1 (must not touch) that are in contact, as a fraction of all 52 bodies."""
    unwanted = contact.to(labels.dtype) * (labels < -LABEL_THRESHOLD).to(labels.dtype)
    return _exp(weight, unwanted.mean(-1))


def contact_force_reward(force: Tensor, weight: float) -> Tensor:
    """Penalty on the total absolute contact force (mostly impacts): exp(-w F^2)."""
    total = force.abs().flatten(1).sum(-1)
    return _exp(weight, total * total)


# -- total -----------------------------------------------------------------------------------------
def compute_reward(sim: SimState, prev: PrevVelocities, ref: RefFrame, object_points: Tensor,
                   weights: RewardWeights, steps_since_start: Tensor,
                   dt: float = 1.0 / 30.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Reward [N] of each world against the reference at the same frame, and every factor.

    ``object_points`` [N,P,3] object frame; ``steps_since_start`` [N] control steps since the
    episode's reset; ``dt`` the control period (the acceleration's denominator).
    """
    w = weights
    active = steps_since_start > ENERGY_WARMUP_STEPS
    contact = sim.body_object_contact if w.contact_source == "object" else sim.body_contact
    labels = ref.body_contact.to(sim.body_pos.dtype)
    k = _ids(KEY_BODIES, labels)
    pts = object_points_world(object_points, sim.object_pos, sim.object_rot)
    ref_pts = object_points_world(object_points, ref.object_pos, ref.object_rot)
    terms = {
        "p": body_pos_reward(sim, ref, w.p),
        "r": body_rot_reward(sim, ref, w.r),
        "pv": body_vel_reward(sim, ref, w.pv),
        "rv": body_ang_vel_reward(sim, ref, w.rv),
        "eg1": joint_energy_reward(sim.joint_ang_vel, prev.joint_ang_vel, active, w.eg1, dt),
        "op": object_pos_reward(sim, ref, w.op),
        "or": object_rot_reward(sim, ref, w.or_),
        "opv": object_vel_reward(sim, ref, w.opv),
        "orv": object_ang_vel_reward(sim, ref, w.orv),
        "eg2": object_energy_reward(sim.object_lin_vel, sim.object_ang_vel, prev.object_lin_vel,
                                    prev.object_ang_vel, active, w.eg2, dt),
        "ig": ig_reward(sim.body_pos[:, k], pts, ref.body_pos[:, k], ref_pts, w.ig,
                        sim.object_pos, ref.object_pos),
        "cg_hand": hand_contact_reward(contact, labels, w.cg_hand),
        "cg_other": other_contact_reward(contact, labels, w.cg_other),
        "cg_all": penalty_contact_reward(contact, labels, w.cg_all),
        "eg3": contact_force_reward(sim.body_contact_force, w.eg3),
    }
    reward = torch.ones_like(labels[:, 0])
    for v in terms.values():
        reward = reward * v
    return reward, terms
