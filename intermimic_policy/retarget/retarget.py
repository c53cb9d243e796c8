"""Retarget one HOI clip to a robot: targets per frame, IK warm-started from the previous frame.

Tasks per frame (weights from the robot YAML and :class:`RetargetConfig`):

* every body pair: position (and orientation where the YAML gives a weight) of the scaled source;
* hands: the contact site goes to the object surface point nearest the source hand (stiff, must
  converge) when the hand is labelled in contact, and blends in from the free hand target around it;
* feet: a planted foot's sole is pinned where it first touched (flat, on the floor, fixed yaw): its
  horizontal position is a hard row of the IK, so it cannot skate however hard a hand pulls; a foot
  that lifts is released and re-planted where it lands (targets.py also re-plants a creeping foot);
  the floor and the object's convex parts push collision points out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pinocchio as pin
from scipy.spatial.transform import Rotation

from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.robot_motion import RobotMotion
from intermimic_policy.retarget.geometry import ObjectGeometry
from intermimic_policy.retarget.ik import Collision, FrameSolver, IKConfig, Task
from intermimic_policy.retarget.targets import ClipTargets, TargetConfig, build_targets


@dataclass(frozen=True)
class RetargetConfig:
    ik: IKConfig = field(default_factory=IKConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    hand_weight: float = 2.0  # free hand point (scaled source)
    contact_weight: float = 1000.0  # hand on the object surface
    foot_weight: float = 1e4  # planted sole position: feet first (no skating) when hands cannot reach
    foot_rot_weight: float = 5.0  # planted sole flat, fixed yaw
    # Palm normal against the surface normal while in contact: gentle, so the palm does not touch with
    # its back (the hand inside the object), yet the G1 Dex3 thumb, which stands 9.5 cm out of the
    # palm face at rest, is not driven into the surface by a palm laid flat.
    palm_weight: float = 1.0
    free_site_link: bool = False  # while holding: no object rows for the site's own link
    weight_scale: float = 1.0  # multiplies the YAML pair weights
    predict: bool = False  # each frame's IK starts from the last frame's pose moved on at its velocity
    pin_feet: bool = True  # planted soles held by hard IK rows (else only by the stiff task): no skate


@dataclass(frozen=True, eq=False)
class RetargetResult:
    motion: RobotMotion
    targets: ClipTargets
    seconds: float  # wall time of the IK loop
    cpu_seconds: float  # CPU time of the IK loop (this process; one thread = one core)
    targets_cpu_seconds: float = 0.0  # CPU time of the targets (scaling, contact points, planted feet)

    @property
    def frames_per_s(self) -> float:
        """Frames per second of one core's CPU time (unaffected by other jobs sharing the machine)."""
        return self.motion.num_frames / max(self.cpu_seconds, 1e-9)

    @property
    def frames_per_wall_s(self) -> float:
        return self.motion.num_frames / max(self.seconds, 1e-9)


def _yaw_matrix(R: np.ndarray) -> np.ndarray:
    yaw = np.arctan2(R[1, 0], R[0, 0])
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _foot_tasks(planted: np.ndarray, locks: list[tuple[np.ndarray, np.ndarray] | None], foot_fid: list[int],
                solver: FrameSolver, q: np.ndarray, cfg: RetargetConfig, tasks: list[Task],
                strict: list[int]) -> tuple[list[int], tuple[tuple[int, np.ndarray], ...]]:
    """Append the feet's tasks for one frame; return (feet landing now, pins).

    A foot that is not planted is released (``locks[f] = None``): it swings free and, when it lands
    again, is re-planted where it lands. On the landing frame the sole goes onto the floor, flat,
    keeping its heading (the caller pins it where that frame's solve put it). From the next frame on
    its sole site is a pin, hard rows of the IK on its horizontal position (``cfg.pin_feet``), besides
    a stiff task."""
    new_locks: list[int] = []
    pins: list[tuple[int, np.ndarray]] = []
    for f, fid in enumerate(foot_fid):
        if not planted[f]:
            locks[f] = None
            continue
        lock = locks[f]
        strict.append(len(tasks))
        if lock is None:  # touch-down: onto the floor, flat, keep the heading; pin after solving
            pin.framesForwardKinematics(solver.model, solver.data, q)
            tasks.append(Task(fid, "pos", np.zeros(3), cfg.foot_weight, axes=(2,)))
            tasks.append(Task(fid, "rot", _yaw_matrix(solver.data.oMf[fid].rotation), cfg.foot_rot_weight))
            new_locks.append(f)
        else:
            tasks.append(Task(fid, "pos", lock[0], cfg.foot_weight))
            tasks.append(Task(fid, "rot", lock[1], cfg.foot_rot_weight))
            if cfg.pin_feet:
                pins.append((fid, lock[0]))
    return new_locks, tuple(pins)


def retarget_clip(desc: RobotDescription, motion: HOIMotion, geom: ObjectGeometry | None,
                  config: RetargetConfig | None = None) -> RetargetResult:
    cfg = config or RetargetConfig()
    targets_start = time.process_time()
    tg = build_targets(desc, motion, geom, cfg.targets)
    targets_cpu = time.process_time() - targets_start
    solver = FrameSolver(desc, cfg.ik)
    model = desc.model
    pairs = desc.config.pairs
    pair_fid = [desc.frame_id(p.frame) for p in pairs]
    hand_fid = [desc.frame_id(h.site) for h in desc.config.hands]
    foot_fid = [desc.frame_id(f.site) for f in desc.config.feet]
    palm_normal = [None if h.normal is None else np.asarray(h.normal, dtype=np.float64) for h in desc.config.hands]
    obj_rot = Rotation.from_quat(motion.object_rot.astype(np.float64)).as_matrix()
    obj_pos = tg.object_pos
    dt = 1.0 / motion.fps
    vmax = desc.velocity_limit * dt
    t_n = motion.num_frames
    out = np.zeros((t_n, model.nq))

    # Start: default pose at the source pelvis (scaled height) with the source heading.
    q = desc.neutral_q()
    q[:2] = tg.pos[0, 0, :2]
    q[3:7] = Rotation.from_matrix(_yaw_matrix(tg.rot[0, 0])).as_quat()
    locks: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(foot_fid)
    start, cpu_start = time.perf_counter(), time.process_time()
    for t in range(t_n):
        tasks: list[Task] = []
        for k, (p, fid) in enumerate(zip(pairs, pair_fid, strict=True)):
            if p.pos_weight > 0:
                tasks.append(Task(fid, "pos", tg.pos[t, k], p.pos_weight * cfg.weight_scale))
            if p.rot_weight > 0:
                tasks.append(Task(fid, "rot", tg.rot[t, k], p.rot_weight * cfg.weight_scale))
        strict: list[int] = []
        holding: list[int] = []
        for h, fid in enumerate(hand_fid):
            a = tg.hand_blend[t, h]
            target = a * tg.hand_surface[t, h] + (1.0 - a) * tg.hand_free[t, h]
            if tg.hand_contact[t, h]:
                strict.append(len(tasks))
                holding.append(h)
            tasks.append(Task(fid, "pos", target, cfg.hand_weight + a * (cfg.contact_weight - cfg.hand_weight)))
            if a > 0 and palm_normal[h] is not None:  # palm faces the surface it touches
                tasks.append(Task(fid, "dir", -tg.hand_surface_normal[t, h], a * cfg.palm_weight, axis=palm_normal[h]))
        new_locks, pins = _foot_tasks(tg.foot_planted[t], locks, foot_fid, solver, q, cfg, tasks, strict)
        if t == 0:
            lo, hi = desc.lower, desc.upper
            iters = cfg.ik.first_frame_iterations
        else:
            lo = np.maximum(desc.lower, out[t - 1, 7:] - vmax)
            hi = np.minimum(desc.upper, out[t - 1, 7:] + vmax)
            iters = cfg.ik.iterations
        collision = Collision(geom.hulls, obj_rot[t], obj_pos[t]) if geom is not None else None
        if t >= 2 and cfg.predict:  # start where the last frame's velocity leads (a carried object
            # moves a few cm a frame: from the last pose the hand starts inside it)
            q = pin.integrate(model, q, pin.difference(model, out[t - 2], out[t - 1]))
            q[7:] = np.clip(q[7:], lo, hi)
        q = solver.solve(q, tasks, lo, hi, collision, iters, strict, tuple(holding) if cfg.free_site_link else (), pins)
        q = solver.lift_above_floor(q, cfg.ik.floor_tolerance)
        if new_locks:
            pin.framesForwardKinematics(model, solver.data, q)
            for f in new_locks:
                M = solver.data.oMf[foot_fid[f]]
                locks[f] = (M.translation.copy(), _yaw_matrix(M.rotation))
        out[t] = q
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    quat = out[:, 3:7] / np.linalg.norm(out[:, 3:7], axis=1, keepdims=True)
    robot_motion = RobotMotion(
        fps=float(motion.fps), robot=desc.name, joint_names=desc.joint_names,
        root_pos=out[:, :3].copy(), root_rot=quat,
        joint_pos=out[:, 7:].copy(),
        object_pos=tg.object_pos.astype(np.float32), object_rot=motion.object_rot.astype(np.float32),
        object_name=motion.object_name, hand_names=tuple(h.name for h in desc.config.hands),
        hand_contact=tg.hand_label.astype(np.int8), foot_names=tuple(f.name for f in desc.config.feet),
        foot_contact=tg.foot_planted.copy(), name=motion.name, source=motion.source or motion.name,
        meta={"scale": f"{tg.scale:.6f}", "robot_hash": desc.content_hash, "retargeter": "intermimic.retarget/1"},
    )
    return RetargetResult(robot_motion, tg, seconds, cpu_seconds, targets_cpu)
