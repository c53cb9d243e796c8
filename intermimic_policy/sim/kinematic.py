"""Kinematic playback: put a clip's pose into a MuJoCo scene, and measure hand-object distances.

The clip's quaternions are xyzw and its joints are rotation vectors; MuJoCo wants wxyz and three
hinge angles per joint. Both conversions live in ``embodiment.joint_map``, so this module only
places numbers at the scene's qpos/qvel addresses (``Scene``) and runs ``mj_kinematics``.
"""

from __future__ import annotations

import mujoco
import numpy as np
import torch

from intermimic_policy.embodiment import joint_map, smplx_body
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.sim.scene import Scene

_DIST_MAX = 10.0  # m; farther distances are reported as this value


def motion_qpos(scene: Scene, motion: HOIMotion) -> np.ndarray:
    """qpos [T, nq] of every frame of ``motion`` in ``scene`` (other joints at qpos0)."""
    t = motion.num_frames
    q = np.repeat(scene.model.qpos0[None].astype(np.float64), t, axis=0)
    r = scene.root_qpos_adr
    q[:, r:r + 3] = motion.root_pos
    q[:, r + 3:r + 7] = _wxyz(motion.root_rot)
    q[:, scene.joint_qpos_adr] = joint_map.hinge_angles_from_rotvec(_t(motion.joint_rotvec)).numpy()
    if scene.object_qpos_adr is not None:
        o = scene.object_qpos_adr
        q[:, o:o + 3] = motion.object_pos
        q[:, o + 3:o + 7] = _wxyz(motion.object_rot)
    return q


def motion_qvel(scene: Scene, motion: HOIMotion, frames: np.ndarray | None = None) -> np.ndarray:
    """qvel [len(frames), nv] (all frames by default) from the clip's finite-difference velocities,
    in MuJoCo's free-joint convention: linear velocity in world, angular velocity in the body frame."""
    idx = np.arange(motion.num_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    v = np.zeros((len(idx), scene.model.nv), dtype=np.float64)
    r = scene.root_qvel_adr
    v[:, r:r + 3] = motion.root_lin_vel[idx]
    v[:, r + 3:r + 6] = _to_local(motion.root_rot[idx], motion.root_ang_vel[idx])
    angles = joint_map.hinge_angles_from_rotvec(_t(motion.joint_rotvec[idx]))
    rates = joint_map.hinge_rates_from_angular_velocity(angles, _t(motion.joint_ang_vel[idx]))
    v[:, scene.joint_qvel_adr] = rates.numpy()
    if scene.object_qvel_adr is not None:
        o = scene.object_qvel_adr
        v[:, o:o + 3] = motion.object_lin_vel[idx]
        v[:, o + 3:o + 6] = _to_local(motion.object_rot[idx], motion.object_ang_vel[idx])
    return v


def set_kinematic_state(
    scene: Scene, data: mujoco.MjData, motion: HOIMotion, frame: int, *, velocity: bool = False
) -> None:
    """Write frame ``frame`` of ``motion`` into ``data`` (qpos, and qvel if ``velocity``), then
    run ``mj_kinematics`` so body and geom poses are current."""
    if not -motion.num_frames <= frame < motion.num_frames:
        raise IntermimicError(f"{motion.name or 'motion'}: frame {frame} outside 0..{motion.num_frames - 1}")
    f = frame % motion.num_frames
    data.qpos[:] = motion_qpos(scene, motion.slice(f, f + 1))[0]
    if velocity:
        data.qvel[:] = motion_qvel(scene, motion, np.array([f]))[0]
    else:
        data.qvel[:] = 0.0
    mujoco.mj_kinematics(scene.model, data)


def set_qpos(scene: Scene, data: mujoco.MjData, qpos: np.ndarray) -> None:
    """Write one precomputed qpos row (see :func:`motion_qpos`) and run ``mj_kinematics``."""
    data.qpos[:] = qpos
    mujoco.mj_kinematics(scene.model, data)


def hand_geom_ids(scene: Scene, side: str) -> np.ndarray:
    """Geoms of the left (``"left"``) or right hand: wrist and all finger bodies."""
    bodies = {"left": smplx_body.LEFT_HAND_BODIES, "right": smplx_body.RIGHT_HAND_BODIES}.get(side)
    if bodies is None:
        raise IntermimicError(f"hand side must be 'left' or 'right', got {side!r}")
    return np.flatnonzero(np.isin(scene.geom_humanoid_body, bodies))


def min_geom_distance(model: mujoco.MjModel, data: mujoco.MjData, geoms_a: np.ndarray,
                      geoms_b: np.ndarray, dist_max: float = _DIST_MAX) -> float:
    """Smallest signed distance between two geom sets (negative = penetration), capped at dist_max.

    Pairs are visited in order of a bounding-sphere lower bound and the search stops as soon as
    that bound exceeds the best exact distance, so most of the ~16 x 30 pairs are never run.
    """
    if len(geoms_a) == 0 or len(geoms_b) == 0:
        return float("nan")
    ca, cb = data.geom_xpos[geoms_a], data.geom_xpos[geoms_b]
    centre = np.linalg.norm(ca[:, None] - cb[None], axis=-1)
    lower = centre - model.geom_rbound[geoms_a][:, None] - model.geom_rbound[geoms_b][None]
    order = np.argsort(lower, axis=None)
    best = dist_max
    flat = lower.reshape(-1)
    nb = len(geoms_b)
    for k in order:
        if flat[k] >= best:
            break
        d = mujoco.mj_geomDistance(model, data, int(geoms_a[k // nb]), int(geoms_b[k % nb]), best, None)
        best = min(best, float(d))
    return best


def hand_object_distances(scene: Scene, data: mujoco.MjData) -> tuple[float, float]:
    """(left, right) minimum distance from each hand's geoms to the object's collision parts, m.

    Uses the current geom poses (call after ``set_kinematic_state``). NaN without an object.
    """
    if scene.object_body_id is None:
        return float("nan"), float("nan")
    return (
        min_geom_distance(scene.model, data, hand_geom_ids(scene, "left"), scene.object_geom_ids),
        min_geom_distance(scene.model, data, hand_geom_ids(scene, "right"), scene.object_geom_ids),
    )


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _wxyz(q_xyzw: np.ndarray) -> np.ndarray:
    return quat.xyzw_to_wxyz(quat.normalize(_t(q_xyzw))).numpy()


def _to_local(q_xyzw: np.ndarray, w_world: np.ndarray) -> np.ndarray:
    return quat.rotate_inverse(_t(q_xyzw), _t(w_world)).numpy()
