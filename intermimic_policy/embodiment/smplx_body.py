"""The SMPL-X humanoid's topology, joint order, body subsets, PD gains and action map.

This module is the one source of truth for joint order and gains: the MJCF generator, the
environment, the exported policy contract and the ROS nodes all read it.

* 52 bodies in depth-first order (the data's order); body 0 (Pelvis) is the floating root.
* 51 joints, one per non-root body, each with 3 DOF. DOF index = 3 * (body_index - 1) + axis,
  axis 0/1/2 = x/y/z. The data stores each joint as a rotation vector; see
  ``intermimic_policy.sim`` for how the simulator drives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BODY_NAMES: tuple[str, ...] = (
    "Pelvis", "L_Hip", "L_Knee", "L_Ankle", "L_Toe", "R_Hip", "R_Knee", "R_Ankle", "R_Toe",
    "Torso", "Spine", "Chest", "Neck", "Head", "L_Thorax", "L_Shoulder", "L_Elbow", "L_Wrist",
    "L_Index1", "L_Index2", "L_Index3", "L_Middle1", "L_Middle2", "L_Middle3",
    "L_Pinky1", "L_Pinky2", "L_Pinky3", "L_Ring1", "L_Ring2", "L_Ring3",
    "L_Thumb1", "L_Thumb2", "L_Thumb3", "R_Thorax", "R_Shoulder", "R_Elbow", "R_Wrist",
    "R_Index1", "R_Index2", "R_Index3", "R_Middle1", "R_Middle2", "R_Middle3",
    "R_Pinky1", "R_Pinky2", "R_Pinky3", "R_Ring1", "R_Ring2", "R_Ring3",
    "R_Thumb1", "R_Thumb2", "R_Thumb3",
)
PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 12, 11, 14, 15, 16, 17, 18, 19, 17, 21, 22, 17,
    24, 25, 17, 27, 28, 17, 30, 31, 11, 33, 34, 35, 36, 37, 38, 36, 40, 41, 36, 43, 44, 36, 46,
    47, 36, 49, 50,
)
# Rates, defined once: the policy runs at the data rate (one step per frame); PD and physics at
# 240 Hz (it kept the humanoid standing under noise where 120 Hz did not).
CONTROL_HZ = 30.0
PHYSICS_HZ = 240.0

NUM_BODIES = 52
NUM_JOINTS = 51
NUM_DOFS = 153
AXES = ("x", "y", "z")

JOINT_NAMES: tuple[str, ...] = BODY_NAMES[1:]
DOF_NAMES: tuple[str, ...] = tuple(f"{j}_{a}" for j in JOINT_NAMES for a in AXES)


def body_index(name: str) -> int:
    return BODY_NAMES.index(name)


def _ids(*names: str) -> tuple[int, ...]:
    return tuple(body_index(n) for n in names)


# 21 key bodies: tracked in position (pelvis and fingers excluded).
KEY_BODIES: tuple[int, ...] = tuple(range(1, 18)) + (33, 34, 35, 36)
_FINGER_TIPS_L = _ids("L_Index3", "L_Middle3", "L_Pinky3", "L_Ring3", "L_Thumb3")
_FINGER_TIPS_R = _ids("R_Index3", "R_Middle3", "R_Pinky3", "R_Ring3", "R_Thumb3")
# 31 contact bodies, one fixed order: key bodies, then left tips, then right tips.
CONTACT_BODIES: tuple[int, ...] = KEY_BODIES + _FINGER_TIPS_L + _FINGER_TIPS_R
# Pelvis + key bodies: the bodies whose rotations and angular velocities are compared.
NO_HAND_BODIES: tuple[int, ...] = (0,) + KEY_BODIES
LEFT_HAND_BODIES: tuple[int, ...] = tuple(range(17, 33))
RIGHT_HAND_BODIES: tuple[int, ...] = tuple(range(36, 52))
HAND_BODIES: tuple[int, ...] = LEFT_HAND_BODIES + RIGHT_HAND_BODIES
# Bodies promoted by the "other" contact term: every contact body outside the hands.
# (Upstream drops R_Thorax..R_Elbow here by an indexing slip; we keep them.)
NON_HAND_CONTACT_BODIES: tuple[int, ...] = tuple(b for b in CONTACT_BODIES if b not in HAND_BODIES)


def _is_finger(name: str) -> bool:
    return any(k in name for k in ("Index", "Middle", "Pinky", "Ring", "Thumb"))


@dataclass(frozen=True)
class PDGains:
    kp: float
    kd: float


def joint_gains(joint: str) -> PDGains:
    """PD gains per joint (N*m/rad, N*m*s/rad), the upstream MJCF's stiffness/damping groups."""
    side_free = joint[2:] if joint[:2] in ("L_", "R_") else joint
    if _is_finger(joint):
        return PDGains(100.0, 10.0)
    if side_free in ("Hip", "Knee", "Ankle"):
        return PDGains(800.0, 80.0)
    if side_free == "Toe":
        return PDGains(500.0, 50.0)
    if side_free in ("Torso", "Spine", "Chest"):
        return PDGains(1000.0, 100.0)
    if side_free in ("Neck", "Head", "Thorax", "Shoulder", "Elbow"):
        return PDGains(500.0, 50.0)
    if side_free == "Wrist":
        return PDGains(300.0, 30.0)
    raise KeyError(f"no gains for joint {joint!r}")


def joint_limits_deg(joint: str) -> tuple[tuple[float, float], ...]:
    """Per-axis (lo, hi) limits in degrees, x/y/z, as the upstream humanoid defines them."""
    if not _is_finger(joint):
        return ((-180.0, 180.0),) * 3
    small = (-5.625, 5.625)
    curl = (-55.625, 55.625)
    left = joint.startswith("L_")
    distal = joint.endswith("3")
    if "Thumb" in joint:
        if joint.endswith("1"):
            return (curl, curl, curl)
        if joint.endswith("2"):
            return (small, small, small)
        return ((-90.0, 5.625) if left else (-5.625, 90.0), small, small)
    if distal:
        return ((-90.0, 5.625) if left else (-5.625, 90.0), small, small)
    return (curl, small, small)


def dof_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kp, kd, lower, upper) per DOF in DOF order; limits in radians."""
    kp, kd, lo, hi = [], [], [], []
    for joint in JOINT_NAMES:
        g = joint_gains(joint)
        for a_lo, a_hi in joint_limits_deg(joint):
            kp.append(g.kp)
            kd.append(g.kd)
            lo.append(math.radians(a_lo))
            hi.append(math.radians(a_hi))
    return (np.asarray(kp), np.asarray(kd), np.asarray(lo), np.asarray(hi))


def action_offset_scale(upstream_action_map: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Map from a policy action a in [-1, 1] to a PD target: target = offset + scale * a.

    Ours is the plain mid-range / half-range of each DOF's limits. ``upstream_action_map`` applies
    upstream's two quirks (distal fingers get +-pi, knee_z DOFs 5 and 17 get 5.0), which only
    upstream checkpoints need.
    """
    _, _, lo, hi = dof_arrays()
    offset = 0.5 * (hi + lo)
    scale = 0.5 * (hi - lo)
    if upstream_action_map:
        shifted = np.abs(offset) > 0.1
        scale[shifted] = scale[0]
        offset[shifted] = 0.0
        scale[5] = scale[17] = 5.0
    return offset.astype(np.float32), scale.astype(np.float32)
