"""A state-feedback expert for the behaviour-cloning warm start: PD replay plus balance feedback.

Why: PD replay (targets = the reference joints at t+1) is open loop. The root is not actuated,
so the humanoid drifts off its feet within a second or two (measured on the example clip: the
pelvis 40 cm ahead of the reference at 1.5 s, a fall at 2.6 s). Cloning an expert that falls
teaches the policy to fall. This expert adds the two textbook balance strategies as residuals
on the reference targets, computed from the simulated state, so it is a function of the state
and DAgger can label any state the student visits:

* ankle strategy: the centre-of-mass error (position and velocity, in the reference's heading
  frame) tilts both ankles so the feet push the body back over its reference place;
* hip strategy: the pelvis orientation error (and its rate) turns both hips against it.

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
from training.gravity_compensation import gravity_target_offsets

_ANKLES = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Ankle", "R_Ankle"))
_HIPS = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Hip", "R_Hip"))
_WRISTS = tuple(sb.JOINT_NAMES.index(n) for n in ("L_Wrist", "R_Wrist"))
_FOREARM_BODIES = tuple(sb.body_index(n) for n in ("L_Elbow", "R_Elbow"))  # the wrists' parents


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

    def vector(self) -> Tensor:
        return torch.tensor([self.ankle_p, self.ankle_d, self.hip_p, self.hip_d, self.grip_p, self.grip_d],
                            dtype=torch.float32)

    @staticmethod
    def from_vector(v: Tensor) -> BalanceGains:
        return BalanceGains(*(float(x) for x in v.reshape(NUM_GAINS)))


NUM_GAINS = 6


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


def expert_targets(env: HOIEnv, gains: Tensor, mass: Tensor, feedforward: bool = True) -> Tensor:
    """Joint rotation-vector targets [N, 51, 3]: the reference at t+1 plus the balance residuals
    (and, with ``feedforward``, the gravity offsets of :func:`gravity_feedforward`).

    ``gains`` is [G] (all worlds) or [N, G] (per world), in :class:`BalanceGains` order."""
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
    return target


def expert_actions(env: HOIEnv, gains: Tensor, mass: Tensor, feedforward: bool = True) -> Tensor:
    """The expert's actions [N, 153] in the env's action space."""
    return env.targets_to_action(expert_targets(env, gains, mass, feedforward))


@dataclass
class TuneResult:
    gains: BalanceGains
    score: float  # mean frames survived by the elite (ties broken by E_h)
    history: list[dict[str, float]]
    wall_s: float

    def to_dict(self) -> dict[str, object]:
        return {"gains": asdict(self.gains), "score": self.score, "history": self.history, "wall_s": self.wall_s}


def rollout_scores(env: HOIEnv, gains: Tensor, clip: int = 0,
                   feedforward: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Run every world from frame 0 of ``clip`` with its own gains [N, 4] until it ends;
    (frames reached [N], mean E_h per world [N], mean E_o per world [N]). ``env`` must not auto-reset."""
    n = env.num_worlds
    mass = body_masses(env)
    env.reset(torch.arange(n), clip_ids=torch.full((n,), clip, dtype=torch.long),
              start_frames=torch.zeros(n, dtype=torch.long))
    reached = torch.zeros(n)
    eh_sum, eo_sum, eh_n = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    while bool(env.active.any()):
        live = env.active.clone()
        _, _, _, _, info = env.step(expert_actions(env, gains, mass, feedforward))
        eh_sum += torch.where(live, info["E_h"].cpu(), torch.zeros(n))
        eo_sum += torch.where(live, info["E_o"].cpu(), torch.zeros(n))
        eh_n += live.float()
        reached = torch.where(live, env.t.cpu().float(), reached)
    return reached, eh_sum / eh_n.clamp_min(1.0), eo_sum / eh_n.clamp_min(1.0)


def tune_gains(env: HOIEnv, iterations: int = 6, init: BalanceGains | None = None, seed: int = 0,
               elite_frac: float = 0.25, log: bool = True) -> TuneResult:
    """Cross-entropy search of the four gains: each iteration samples one gain vector per world
    (log-normal around the mean), runs the clip, keeps the best quarter (most frames, then the
    lowest E_h) and refits the mean and spread to them."""
    t0 = time.perf_counter()
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
        reached, e_h, e_o = rollout_scores(env, gains)
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
    return TuneResult(BalanceGains.from_vector(best_g), best_s, history, time.perf_counter() - t0)


def make_expert(name: str, gains: dict[str, float] | None = None,
                feedforward: bool = True) -> Callable[[HOIEnv], Tensor] | None:
    """The warm start's expert by name: None for "pd-replay" (the env's own), else a function
    env -> actions for "balance" with :class:`BalanceGains` (defaults overridden by ``gains``),
    with or without the gravity ``feedforward``."""
    if name == "pd-replay":
        return None
    if name != "balance":
        raise ValueError(f"unknown expert {name!r}; choose pd-replay or balance")
    vector = BalanceGains(**(gains or {})).vector()
    masses: dict[int, Tensor] = {}

    def act(env: HOIEnv) -> Tensor:
        mass = masses.get(id(env))
        if mass is None:
            mass = masses[id(env)] = body_masses(env)
        return expert_actions(env, vector, mass, feedforward)

    return act
