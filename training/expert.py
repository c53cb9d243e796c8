"""A state-feedback expert for the behaviour-cloning warm start: PD replay plus balance feedback.

Why: PD replay (targets = the reference joints at t+1) is open loop. The root is not actuated,
so the humanoid drifts off its feet within a second or two (measured on the example clip: the
pelvis 40 cm ahead of the reference at 1.5 s, a fall at 2.6 s). Cloning an expert that falls
teaches the policy to fall. This expert adds the two textbook balance strategies as residuals
on the reference targets, computed from the simulated state, so it is a function of the state
and DAgger can label any state the student visits:

* ankle strategy: the centre-of-mass error (position and velocity, in the reference's heading
  frame) tilts both ankles so the feet push the body back over its reference place;
* hip strategy: the pelvis orientation error (and its rate) turns both hips against it;
* grip: while the reference holds the object, the wrists turn against its rotation error, and
  (``squeeze_*`` gains, off by default) the palms press inward into the box in proportion to how
  far it slips down between them (:func:`slip_depth`, :func:`press_offsets`). Friction is what
  holds the box, so a heavier or slipperier box needs a harder squeeze only while it slips.

Four gains (:class:`BalanceGains`); :func:`tune_gains` picks them by the cross-entropy method
on batched rollouts of the clip (each world tries other gains), which takes a minute or two on
CPU. The residuals are added to rotation-vector targets of the joints (local frames; the legs'
frames are close to the world's for an upright humanoid, which is all the feedback needs).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from intermimic_policy.embodiment import smplx_body as sb
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.state.frames import RefFrame, SimState
from training.gravity_compensation import gravity_target_offsets

_ANKLES = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Ankle", "R_Ankle"))
_HIPS = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Hip", "R_Hip"))
_WRISTS = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Wrist", "R_Wrist"))
_FOREARM_BODIES = tuple(sb.body_index(n) for n in ("L_Elbow", "R_Elbow"))  # the wrists' parents
_WRIST_BODIES = tuple(sb.body_index(n) for n in ("L_Wrist", "R_Wrist"))
# the joints that move each palm for the squeeze: shoulder and elbow (the wrist only turns the palm)
_ARM_CHAINS = tuple(tuple(sb.body_index(f"{s}_{n}") for n in ("Shoulder", "Elbow")) for s in "LR")
SQUEEZE_DAMPING = 0.05  # m: the damped least squares' lambda; keeps the press small near a straight arm


@dataclass(frozen=True)
class BalanceGains:
    """Residual gains: ankle rad per m of CoM error (and per m/s), hip rad per rad of pelvis
    tilt (and per rad/s). All zero = PD replay."""

    ankle_p: float = 4.0
    ankle_d: float = 0.15
    hip_p: float = 1.0
    hip_d: float = 0.05
    grip_p: float = 1.0  # wrist rad per rad of object rotation error, while the hands hold it
    grip_d: float = 0.05
    # slip-adaptive squeeze (0 = off): the palms press inward by squeeze_p m per m of box slip
    # (plus squeeze_d m per m/s of slip rate), capped at squeeze_max m
    squeeze_p: float = 0.0
    squeeze_d: float = 0.0
    squeeze_max: float = 0.0

    def vector(self) -> Tensor:
        """The six feedback gains :func:`tune_gains` searches (the squeeze is set by hand)."""
        return torch.tensor([self.ankle_p, self.ankle_d, self.hip_p, self.hip_d, self.grip_p, self.grip_d],
                            dtype=torch.float32)

    def squeeze_vector(self) -> Tensor:
        """(squeeze_p, squeeze_d, squeeze_max) [3], as :func:`expert_targets` takes them."""
        return torch.tensor([self.squeeze_p, self.squeeze_d, self.squeeze_max], dtype=torch.float32)

    @staticmethod
    def from_vector(v: Tensor, squeeze: Tensor | None = None) -> BalanceGains:
        """Inverse of :meth:`vector` (and of :meth:`squeeze_vector`, if given; else no squeeze)."""
        s = [] if squeeze is None else [float(x) for x in squeeze.reshape(NUM_SQUEEZE)]
        return BalanceGains(*(float(x) for x in v.reshape(NUM_GAINS)), *s)


NUM_GAINS = 6
NUM_SQUEEZE = 3


def body_masses(env: HOIEnv) -> Tensor:
    """Mass of each of the 52 bodies of the env's humanoid [52] (its geoms')."""
    skel = env.skeleton or default_skeleton()
    return torch.tensor([g.mass() for g in skel.geoms], dtype=torch.float32, device=env.device)


def _com(pos: Tensor, vel: Tensor, mass: Tensor) -> tuple[Tensor, Tensor]:
    w = (mass / mass.sum())[None, :, None]
    return (pos * w).sum(1), (vel * w).sum(1)


def balance_features(env: HOIEnv, mass: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(CoM error [N, 2], CoM velocity error [N, 2], pelvis tilt error [N, 2], its rate [N, 2]),
    simulated minus reference at the current frame, in the reference's heading frame (x forward)."""
    sim = env.sim_state()
    ref = env.reference(0)
    c_sim, v_sim = _com(sim.body_pos, sim.body_lin_vel, mass)
    c_ref, v_ref = _com(ref.body_pos, ref.body_lin_vel, mass)
    h = quat.heading(ref.root_rot)

    def local(v: Tensor) -> Tensor:
        return quat.rotate_inverse(h, v)[:, :2]

    tilt = quat.to_rotvec(quat.normalize(quat.multiply(sim.root_rot, quat.conjugate(ref.root_rot))))
    rate = sim.body_ang_vel[:, 0] - ref.body_ang_vel[:, 0]
    return local(c_sim - c_ref), local(v_sim - v_ref), local(tilt), local(rate)


def gravity_feedforward(env: HOIEnv) -> Tensor:
    """Per reference frame target offsets [clips, frames, 51, 3] that hold the upper body up
    against gravity (:mod:`training.gravity_compensation`); computed once per env."""
    ff = _FEEDFORWARD.get(env)
    if ff is None:
        lib = env.motion_library
        ff = torch.zeros(lib.num_clips, lib.max_frames, sb.NUM_JOINTS, 3)
        for c in range(lib.num_clips):
            frames = torch.arange(int(lib.num_frames[c]), device=env.device)
            ref = lib.initial_state(torch.full_like(frames, c), frames)
            ff[c, : len(frames)] = gravity_target_offsets(
                env.skeleton, ref.root_pos.cpu(), ref.root_rot.cpu(), ref.joint_rotvec.cpu())
        ff = _FEEDFORWARD[env] = ff.to(env.device)
    return ff


_FEEDFORWARD: weakref.WeakKeyDictionary[HOIEnv, Tensor] = weakref.WeakKeyDictionary()


def palm_offsets(env: HOIEnv) -> Tensor:
    """Each palm's centre in its wrist body's frame [2, 3] (left, right): the hand geom's inner
    face, the point the example clip lays on the box's side faces; computed once per env (the
    expert runs every step)."""
    offsets = _PALM_OFFSETS.get(env)
    if offsets is None:
        geoms = (env.skeleton or default_skeleton()).geoms
        offsets = _PALM_OFFSETS[env] = torch.tensor(
            [[*(g.pos[:2]), g.pos[2] - g.size[2]] for g in (geoms[b] for b in _WRIST_BODIES)],
            dtype=torch.float32, device=env.device)
    return offsets


_PALM_OFFSETS: weakref.WeakKeyDictionary[HOIEnv, Tensor] = weakref.WeakKeyDictionary()


def palm_points(body_pos: Tensor, body_rot: Tensor, offsets: Tensor) -> Tensor:
    """World positions of both palms [N, 2, 3] from body poses [N, 52, 3/4]."""
    w = list(_WRIST_BODIES)
    n = body_pos.shape[0]
    return body_pos[:, w] + quat.rotate(body_rot[:, w].reshape(-1, 4), offsets.expand(n, 2, 3).reshape(-1, 3)
                                        ).reshape(n, 2, 3)


def slip_depth(sim: SimState, ref: RefFrame, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """How far the object has sagged below where the hands carry it (m, [N]) and its rate (m/s).

    Where the hands carry it: the simulated palms' midpoint plus the reference's object-to-palms
    offset. The arms sagging under the load move both together (no slip, no squeeze); only the
    box sliding down between the palms counts, which is what a firmer grip fixes."""
    mid_sim = palm_points(sim.body_pos, sim.body_rot, offsets).mean(1)
    mid_ref = palm_points(ref.body_pos, ref.body_rot, offsets).mean(1)
    depth = (mid_sim + ref.object_pos - mid_ref - sim.object_pos)[:, 2]
    w = list(_WRIST_BODIES)
    v_sim, v_ref = sim.body_lin_vel[:, w].mean(1), ref.body_lin_vel[:, w].mean(1)
    rate = (v_sim + ref.object_lin_vel - v_ref - sim.object_lin_vel)[:, 2]
    return depth, rate


def _skew(r: Tensor) -> Tensor:
    """[N, 3] -> the cross-product matrices [N, 3, 3] (skew(r) @ x = r x x)."""
    z = torch.zeros_like(r[:, 0])
    return torch.stack([torch.stack([z, -r[:, 2], r[:, 1]], -1), torch.stack([r[:, 2], z, -r[:, 0]], -1),
                        torch.stack([-r[:, 1], r[:, 0], z], -1)], -2)


def press_offsets(sim: SimState, offsets: Tensor, press: Tensor,
                  damping: float = SQUEEZE_DAMPING) -> Tensor:
    """Joint target offsets [N, 51, 3] that move each palm ``press`` m ([N]) inward, horizontally
    toward the other palm: the shoulder and elbow rotations from the arm's positional Jacobian by
    damped least squares (dq = J^T (J J^T + lambda^2 I)^-1 dx), in the joints' parent frames.

    Why targets and not forces: the PD error between the target inside the box and the palm
    held at its face is what squeezes, so a deeper target is a harder squeeze."""
    n = sim.body_pos.shape[0]
    out = torch.zeros(n, sb.NUM_JOINTS, 3, dtype=sim.body_pos.dtype, device=sim.body_pos.device)
    palms = palm_points(sim.body_pos, sim.body_rot, offsets)
    eye = torch.eye(3, dtype=out.dtype, device=out.device)
    for side, chain in enumerate(_ARM_CHAINS):
        inward = palms[:, 1 - side] - palms[:, side]
        inward = inward * torch.tensor([1.0, 1.0, 0.0], dtype=out.dtype, device=out.device)
        dx = press[:, None] * inward / inward.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        # d palm / d (world rotation vector of the joint) = -skew(palm - joint centre)
        jac = torch.cat([-_skew(palms[:, side] - sim.body_pos[:, b]) for b in chain], -1)  # [N, 3, 3k]
        gram = jac @ jac.transpose(1, 2) + damping**2 * eye
        dq = (jac.transpose(1, 2) @ torch.linalg.solve(gram, dx[..., None]))[..., 0]  # [N, 3k]
        for i, b in enumerate(chain):
            parent = sb.PARENTS[b]
            out[:, b - 1] += quat.rotate_inverse(sim.body_rot[:, parent], dq[:, 3 * i: 3 * i + 3])
    return out


def expert_targets(env: HOIEnv, gains: Tensor, mass: Tensor, feedforward: bool = True,
                   squeeze: Tensor | None = None) -> Tensor:
    """Joint rotation-vector targets [N, 51, 3]: the reference at t+1 plus the balance residuals
    (and, with ``feedforward``, the gravity offsets of :func:`gravity_feedforward`).

    ``gains`` is [G] (all worlds) or [N, G] (per world), in :class:`BalanceGains` order;
    ``squeeze`` likewise [3] or [N, 3] (squeeze_p, squeeze_d, squeeze_max), None = no squeeze."""
    n = env.num_worlds
    g = gains.to(env.device, torch.float32).expand(n, NUM_GAINS)
    target = env.motion_library.joint_rotvec(env.clip, env.t + 1).reshape(n, sb.NUM_JOINTS, 3).clone()
    if feedforward:
        lib = env.motion_library
        target += gravity_feedforward(env)[env.clip, lib.clamp_frames(env.clip, env.t + 1)]
    e, v, tilt, rate = balance_features(env, mass)
    ankle = g[:, :1] * e + g[:, 1:2] * v  # [N, 2] (forward, left)
    hip = g[:, 2:3] * tilt + g[:, 3:4] * rate  # [N, 2] (roll, pitch)
    for j in _ANKLES:
        target[:, j, 1] += ankle[:, 0]  # foot plantar-flexes: the shin (and body) tips back
        target[:, j, 0] -= ankle[:, 1]
    for j in _HIPS:
        target[:, j, 0] += hip[:, 0]
        target[:, j, 1] += hip[:, 1]
    # grip: while the reference holds the object, both hands turn against its rotation error
    sim, ref = env.sim_state(), env.reference(0)
    held = ref.object_contact.float()[:, None]
    err = quat.to_rotvec(quat.normalize(quat.multiply(sim.object_rot, quat.conjugate(ref.object_rot))))
    turn = -(g[:, 4:5] * err + g[:, 5:6] * (sim.object_ang_vel - ref.object_ang_vel)) * held  # world frame
    for j, b in zip(_WRISTS, _FOREARM_BODIES):
        target[:, j] += quat.rotate_inverse(sim.body_rot[:, b], turn)
    if squeeze is not None:
        sq = squeeze.to(env.device, torch.float32).expand(n, NUM_SQUEEZE)
        offsets = palm_offsets(env)
        depth, rate = slip_depth(sim, ref, offsets)
        press = torch.minimum((sq[:, 0] * depth + sq[:, 1] * rate).clamp_min(0.0), sq[:, 2]) * held[:, 0]
        target += press_offsets(sim, offsets, press)
    return target


def expert_actions(env: HOIEnv, gains: Tensor, mass: Tensor, feedforward: bool = True,
                   squeeze: Tensor | None = None) -> Tensor:
    """The expert's actions [N, 153] in the env's action space."""
    return env.targets_to_action(expert_targets(env, gains, mass, feedforward, squeeze))


@dataclass
class TuneResult:
    gains: BalanceGains
    score: float  # mean frames survived by the elite (ties broken by E_h)
    history: list[dict[str, float]]
    wall_s: float

    def to_dict(self) -> dict[str, object]:
        return {"gains": asdict(self.gains), "score": self.score, "history": self.history, "wall_s": self.wall_s}


def rollout_scores(env: HOIEnv, gains: Tensor, clip: int = 0, feedforward: bool = True,
                   squeeze: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Run every world from frame 0 of ``clip`` with its own gains [N, 6] (and squeeze [3] or
    [N, 3]) until it ends; (frames reached [N], mean E_h per world [N], mean E_o per world [N]).
    ``env`` must not auto-reset."""
    n = env.num_worlds
    mass = body_masses(env)
    env.reset(torch.arange(n), clip_ids=torch.full((n,), clip, dtype=torch.long),
              start_frames=torch.zeros(n, dtype=torch.long))
    reached = torch.zeros(n)
    eh_sum, eo_sum, eh_n = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    while bool(env.active.any()):
        live = env.active.clone()
        _, _, _, _, info = env.step(expert_actions(env, gains, mass, feedforward, squeeze))
        eh_sum += torch.where(live, info["E_h"].cpu(), torch.zeros(n))
        eo_sum += torch.where(live, info["E_o"].cpu(), torch.zeros(n))
        eh_n += live.float()
        reached = torch.where(live, env.t.cpu().float(), reached)
    return reached, eh_sum / eh_n.clamp_min(1.0), eo_sum / eh_n.clamp_min(1.0)


def tune_gains(env: HOIEnv, iterations: int = 6, init: BalanceGains | None = None, seed: int = 0,
               elite_frac: float = 0.25, log: bool = True) -> TuneResult:
    """Cross-entropy search of the six feedback gains: each iteration samples one gain vector per
    world (log-normal around the mean), runs the clip, keeps the best quarter (most frames, then
    the lowest E_h) and refits the mean and spread to them. The squeeze gains are not searched:
    ``init``'s (zero by default) run in every world and are kept in the result."""
    t0 = time.perf_counter()
    squeeze = (init or BalanceGains()).squeeze_vector()
    squeeze_on = squeeze if bool(squeeze.any()) else None
    gen = torch.Generator().manual_seed(seed)
    n = env.num_worlds
    mean = torch.log((init or BalanceGains()).vector().clamp_min(1e-3))
    std = torch.full((NUM_GAINS,), 0.7)
    best_g, best_s = torch.exp(mean), -math.inf
    history: list[dict[str, float]] = []
    frames = float(env.motion_library.num_frames.max())
    for it in range(iterations):
        logs = mean + std * torch.randn(n, NUM_GAINS, generator=gen)
        logs[0] = mean
        gains = torch.exp(logs)
        reached, e_h, e_o = rollout_scores(env, gains, squeeze=squeeze_on)
        score = reached - 10.0 * (e_h + e_o)  # a frame is worth 10 cm of mean error
        order = torch.argsort(score, descending=True)
        elite = order[: max(2, int(elite_frac * n))]
        mean = logs[elite].mean(0)
        std = logs[elite].std(0).clamp_min(0.05)
        if float(score[order[0]]) > best_s:
            best_s, best_g = float(score[order[0]]), gains[order[0]].clone()
        row = {"iteration": it, "best_frames": float(reached[order[0]]), "best_E_h_cm": 100 * float(e_h[order[0]]),
               "best_E_o_cm": 100 * float(e_o[order[0]]),
               "elite_frames": float(reached[elite].mean()), "clip_frames": frames}
        history.append(row)
        if log:
            print(f"tune {it}: best {row['best_frames']:.0f}/{frames:.0f} frames, E_h {row['best_E_h_cm']:.1f} cm, "
                  f"E_o {row['best_E_o_cm']:.1f} cm, "
                  f"elite mean {row['elite_frames']:.1f}; gains {[round(float(x), 3) for x in gains[order[0]]]}",
                  flush=True)
    return TuneResult(BalanceGains.from_vector(best_g, squeeze), best_s, history, time.perf_counter() - t0)


def make_expert(name: str, gains: dict[str, float] | None = None,
                feedforward: bool = True) -> Callable[[HOIEnv], Tensor] | None:
    """The warm start's expert by name: None for "pd-replay" (the env's own), else a function
    env -> actions for "balance" with :class:`BalanceGains` (defaults overridden by ``gains``),
    with or without the gravity ``feedforward``."""
    if name == "pd-replay":
        return None
    if name != "balance":
        raise ValueError(f"unknown expert {name!r}; choose pd-replay or balance")
    chosen = BalanceGains(**(gains or {}))
    vector = chosen.vector()
    squeeze = chosen.squeeze_vector() if chosen.squeeze_max > 0.0 else None  # zero: the targets stay bit-identical
    masses: dict[int, Tensor] = {}

    def act(env: HOIEnv) -> Tensor:
        mass = masses.get(id(env))
        if mass is None:
            mass = masses[id(env)] = body_masses(env)
        return expert_actions(env, vector, mass, feedforward, squeeze)

    return act
