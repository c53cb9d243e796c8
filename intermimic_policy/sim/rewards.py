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
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import (
    KEY_BODIES,
    LEFT_HAND_BODIES,
    NON_HAND_CONTACT_BODIES,
    NUM_BODIES,
    RIGHT_HAND_BODIES,
    body_index,
)
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import fast
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import (
    InteractionGeometry,
    ig_reward_error,
    object_points_world,
)

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

if TYPE_CHECKING:
    from intermimic_policy.embodiment.description import EmbodimentSpec


@dataclass(frozen=True)
class RewardBodies:
    """The body subsets the reward reads (default: the SMPL-X humanoid's); :meth:`of` gives an
    embodiment's."""

    num_bodies: int = NUM_BODIES
    key: tuple[int, ...] = KEY_BODIES
    feet: tuple[int, ...] = FOOT_BODIES
    left_hand: tuple[int, ...] = LEFT_HAND_BODIES
    right_hand: tuple[int, ...] = RIGHT_HAND_BODIES
    non_hand_contact: tuple[int, ...] = NON_HAND_CONTACT_BODIES

    @classmethod
    def of(cls, e: EmbodimentSpec) -> RewardBodies:
        return cls(e.num_bodies, e.key_bodies, e.foot_bodies, e.left_hand_bodies, e.right_hand_bodies,
                   e.non_hand_contact_bodies)


SMPLX_BODIES = RewardBodies()


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


@cache
def _index(ids: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)


def _ids(ids: tuple[int, ...], like: Tensor) -> Tensor:
    return _index(ids, like.device)


@cache
def _foot_mask(device: torch.device, num_bodies: int = NUM_BODIES, feet: tuple[int, ...] = FOOT_BODIES) -> Tensor:
    mask = torch.zeros(num_bodies, dtype=torch.bool, device=device)
    mask[list(feet)] = True
    return mask


_HANDS = (LEFT_HAND_BODIES, RIGHT_HAND_BODIES)


# -- errors: one per factor, each [N] (the factor is exp(-weight * error)) --------------------------
def body_pos_error(sim: SimState, ref: RefFrame, proximity: Tensor, bodies: RewardBodies = SMPLX_BODIES) -> Tensor:
    """Mean over key bodies of the squared position error times the closeness weight (feet: 1)."""
    k = _ids(bodies.key, proximity)
    w = torch.where(_foot_mask(proximity.device, bodies.num_bodies, bodies.feet), 1.0, proximity).index_select(1, k)
    diff = ref.body_pos.index_select(1, k) - sim.body_pos.index_select(1, k)
    return (diff.square().sum(-1) * w).mean(-1)


def body_rot_error(sim: SimState, ref: RefFrame, proximity: Tensor) -> Tensor:
    """Mean over bodies of the rotation angle to the reference times (1 - closeness)."""
    return (fast.angle_between(ref.body_rot, sim.body_rot) * (1.0 - proximity)).mean(-1)


def joint_energy_error(joint_ang_vel: Tensor, prev_joint_ang_vel: Tensor, active: Tensor, dt: float) -> Tensor:
    acc = (joint_ang_vel - prev_joint_ang_vel) / dt
    return acc.square().flatten(1).mean(-1) * active.to(acc.dtype)


def object_frame_errors(sim: SimState, ref: RefFrame) -> tuple[Tensor, Tensor]:
    """(position, rotation) errors of the object seen from each root's heading frame.

    Position: mean squared error of (heading-frame x, y of object - root, absolute object z).
    Rotation: angle between h_ref q_ref,obj and h q_obj (h: inverse heading of the root).
    Simulation and reference are computed together, stacked on a leading dim of 2.
    """
    root_rot = torch.stack([sim.root_rot, ref.root_rot])
    obj_pos = torch.stack([sim.object_pos, ref.object_pos])
    obj_rot = torch.stack([sim.object_rot, ref.object_rot])
    c, s = fast.heading_cos_sin(root_rot)  # [2, N]
    d = obj_pos - torch.stack([sim.root_pos, ref.root_pos])
    dx, dy = d[..., 0], d[..., 1]
    local = torch.stack([c * dx + s * dy, c * dy - s * dx, obj_pos[..., 2]], dim=-1)  # [2, N, 3]
    pos_err = (local[1] - local[0]).square().mean(-1)
    half = -0.5 * torch.atan2(s, c)  # heading inverse: a turn by -yaw about z
    hz, hw = torch.sin(half).unsqueeze(-1), torch.cos(half).unsqueeze(-1)
    x, y, z, w = obj_rot.unbind(-1)
    h_q = hw * obj_rot + hz * torch.stack([-y, x, w, -z], dim=-1)  # (0, 0, hz, hw) * q
    return pos_err, fast.angle_between(h_q[1], h_q[0])


def object_energy_error(lin_vel: Tensor, ang_vel: Tensor, prev_lin_vel: Tensor, prev_ang_vel: Tensor,
                        active: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """(linear, angular) acceleration errors of the object, masked in the first steps."""
    m = active.to(lin_vel.dtype)
    a = ((lin_vel - prev_lin_vel) / dt).square().mean(-1)
    alpha = ((ang_vel - prev_ang_vel) / dt).square().mean(-1)
    return a * m, alpha * m


def hand_contact_errors(contact: Tensor, labels: Tensor, bodies: RewardBodies = SMPLX_BODIES) -> tuple[Tensor, Tensor]:
    """(wanted [N,2], error [N,2]) per hand (left, right): the reference has a +1 label on the
    hand, and the fraction of the hand's bodies not in contact."""
    ids = _index(bodies.left_hand + bodies.right_hand, labels.device)
    lab = labels.index_select(1, ids).reshape(-1, 2, len(bodies.left_hand))
    touch = contact.index_select(1, ids).to(labels.dtype).reshape(lab.shape)
    return (lab > LABEL_THRESHOLD).any(-1), (1.0 - touch).mean(-1)


def other_contact_error(contact: Tensor, labels: Tensor, bodies: RewardBodies = SMPLX_BODIES) -> Tensor:
    ids = _ids(bodies.non_hand_contact, labels)
    lab = labels.index_select(1, ids)
    return ((1.0 - contact.index_select(1, ids).to(lab.dtype)) * (lab > LABEL_THRESHOLD).to(lab.dtype)).mean(-1)


def penalty_contact_error(contact: Tensor, labels: Tensor) -> Tensor:
    return (contact.to(labels.dtype) * (labels < -LABEL_THRESHOLD).to(labels.dtype)).mean(-1)


def contact_force_error(force: Tensor) -> Tensor:
    total = force.abs().flatten(1).sum(-1)
    return total * total


# -- factors ----------------------------------------------------------------------------------------
def proximity_weights(ref_ig: Tensor) -> Tensor:
    """exp(-5 d_b), d_b = reference distance of each body to the object, [N, 52]."""
    return torch.exp(-PROXIMITY_DECAY * torch.linalg.vector_norm(ref_ig, dim=-1))


def body_pos_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Key-body positions, each squared error weighted by closeness to the object (feet: 1)."""
    return _exp(weight, body_pos_error(sim, ref, proximity_weights(ref.ig)))


def body_rot_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Body orientations, each angle weighted by (1 - closeness): far bodies track rotation."""
    return _exp(weight, body_rot_error(sim, ref, proximity_weights(ref.ig)))


def body_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, (ref.body_lin_vel - sim.body_lin_vel).square().mean(dim=(1, 2)))


def body_ang_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, (ref.body_ang_vel - sim.body_ang_vel).square().mean(dim=(1, 2)))


def joint_energy_reward(joint_ang_vel: Tensor, prev_joint_ang_vel: Tensor, active: Tensor,
                        weight: float, dt: float) -> Tensor:
    """Joint angular acceleration penalty; ``active`` [N] bool masks the first steps of an episode."""
    return _exp(weight, joint_energy_error(joint_ang_vel, prev_joint_ang_vel, active, dt))


def object_pos_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, object_frame_errors(sim, ref)[0])


def object_rot_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    """Object orientation relative to each root's heading."""
    return _exp(weight, object_frame_errors(sim, ref)[1])


def object_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, (ref.object_lin_vel - sim.object_lin_vel).square().mean(-1))


def object_ang_vel_reward(sim: SimState, ref: RefFrame, weight: float) -> Tensor:
    return _exp(weight, (ref.object_ang_vel - sim.object_ang_vel).square().mean(-1))


def object_energy_reward(lin_vel: Tensor, ang_vel: Tensor, prev_lin_vel: Tensor, prev_ang_vel: Tensor,
                         active: Tensor, weight: float, dt: float) -> Tensor:
    a, alpha = object_energy_error(lin_vel, ang_vel, prev_lin_vel, prev_ang_vel, active, dt)
    return _exp(weight, a) * _exp(weight, alpha)


def ig_reward(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
              weight: float, centre: Tensor | None = None, ref_centre: Tensor | None = None) -> Tensor:
    """Key-body x object-point graph agreement (world-frame points of sim and reference;
    ``centre``/``ref_centre``: the object positions, for precision)."""
    return _exp(0.5 * weight, ig_reward_error(key_pos, points, ref_key_pos, ref_points, centre, ref_centre))


def _hand_factor(wanted: Tensor, hand_exp: Tensor) -> Tensor:
    """Both hands' factors multiplied: 0.5 (1 + exp(-w err)) where wanted, else 1."""
    f = torch.where(wanted, 0.5 * (1.0 + hand_exp), 1.0)
    return f[..., 0] * f[..., 1]


def hand_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Per hand: if the reference has any +1 label on it, reward the fraction of its bodies in
    contact, bounded to [0.5, 1]; a hand without +1 labels gives 1. Both hands multiply."""
    wanted, err = hand_contact_errors(contact, labels)
    return _hand_factor(wanted, _exp(weight, err))


def other_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Non-hand contact bodies labelled +1 that are not in contact, as a fraction of those bodies."""
    return _exp(weight, other_contact_error(contact, labels))


def penalty_contact_reward(contact: Tensor, labels: Tensor, weight: float) -> Tensor:
    """Bodies labelled -1 (must not touch) that are in contact, as a fraction of all 52 bodies."""
    return _exp(weight, penalty_contact_error(contact, labels))


def contact_force_reward(force: Tensor, weight: float) -> Tensor:
    """Penalty on the total absolute contact force (mostly impacts): exp(-w F^2)."""
    return _exp(weight, contact_force_error(force))


# -- total -----------------------------------------------------------------------------------------
# factors in the order of ``compute_reward``'s terms; "eg2" and "cg_hand" take two error rows each
_ROWS = ("p", "r", "pv", "rv", "eg1", "op", "or", "opv", "orv", "eg2", "eg2", "ig", "cg_hand", "cg_hand",
         "cg_other", "cg_all", "eg3")


def compute_reward(sim: SimState, prev: PrevVelocities, ref: RefFrame, object_points: Tensor,
                   weights: RewardWeights, steps_since_start: Tensor,
                   dt: float = 1.0 / 30.0, *,
                   geometry: InteractionGeometry | None = None,
                   bodies: RewardBodies = SMPLX_BODIES) -> tuple[Tensor, dict[str, Tensor]]:
    """Reward [N] of each world against the reference at the same frame, and every factor.

    ``object_points`` [N,P,3] object frame; ``steps_since_start`` [N] control steps since the
    episode's reset; ``dt`` the control period (the acceleration's denominator). ``geometry``:
    this step's :class:`InteractionGeometry` (key bodies ``KEY_BODIES``) when the caller shares
    it with the observation and terminations; otherwise the graph error is computed here.

    Every factor's error is computed by the same function as its factor function above; the
    errors are then exponentiated together (one op for all factors). ``bodies``: the body subsets
    of the embodiment simulated (default the SMPL-X humanoid's).
    """
    w = weights
    active = steps_since_start > ENERGY_WARMUP_STEPS
    contact = sim.body_object_contact if w.contact_source == "object" else sim.body_contact
    labels = ref.body_contact.to(sim.body_pos.dtype)
    if geometry is not None:
        ig_err = geometry.reward_error
    else:
        k = _ids(bodies.key, labels)
        pts = object_points_world(object_points, sim.object_pos, sim.object_rot)
        ref_pts = object_points_world(object_points, ref.object_pos, ref.object_rot)
        ig_err = ig_reward_error(sim.body_pos[:, k], pts, ref.body_pos[:, k], ref_pts, sim.object_pos,
                                 ref.object_pos)
    proximity = proximity_weights(ref.ig)
    op_err, or_err = object_frame_errors(sim, ref)
    eg2_a, eg2_b = object_energy_error(sim.object_lin_vel, sim.object_ang_vel, prev.object_lin_vel,
                                       prev.object_ang_vel, active, dt)
    wanted, hand_err = hand_contact_errors(contact, labels, bodies)
    errors = torch.stack([
        body_pos_error(sim, ref, proximity, bodies),
        body_rot_error(sim, ref, proximity),
        (ref.body_lin_vel - sim.body_lin_vel).square().mean(dim=(1, 2)),
        (ref.body_ang_vel - sim.body_ang_vel).square().mean(dim=(1, 2)),
        joint_energy_error(sim.joint_ang_vel, prev.joint_ang_vel, active, dt),
        op_err, or_err,
        (ref.object_lin_vel - sim.object_lin_vel).square().mean(-1),
        (ref.object_ang_vel - sim.object_ang_vel).square().mean(-1),
        eg2_a, eg2_b, ig_err, hand_err[:, 0], hand_err[:, 1],
        other_contact_error(contact, labels, bodies),
        penalty_contact_error(contact, labels),
        contact_force_error(sim.body_contact_force),
    ])
    factors = torch.exp(errors * _row_weights(w, errors.dtype, errors.device))  # [17, N]
    terms: dict[str, Tensor] = {}
    for i, name in enumerate(_ROWS):
        if name == "eg2":
            terms.setdefault(name, factors[i] * factors[i + 1])
        elif name == "cg_hand":
            terms.setdefault(name, _hand_factor(wanted, factors[i:i + 2].t()))
        else:
            terms[name] = factors[i]
    reward = torch.stack(list(terms.values())).prod(dim=0)
    return reward, terms


def _row_weights(w: RewardWeights, dtype: torch.dtype, device: torch.device) -> Tensor:
    """-weight of every error row, [17, 1] (the graph factor is exp(-w/2 err), as upstream)."""
    per = {"p": w.p, "r": w.r, "pv": w.pv, "rv": w.rv, "eg1": w.eg1, "op": w.op, "or": w.or_, "opv": w.opv,
           "orv": w.orv, "eg2": w.eg2, "ig": 0.5 * w.ig, "cg_hand": w.cg_hand, "cg_other": w.cg_other,
           "cg_all": w.cg_all, "eg3": w.eg3}
    return _weight_column(tuple(-per[r] for r in _ROWS), dtype, device)


@cache
def _weight_column(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)
