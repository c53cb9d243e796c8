"""Gravity feed-forward for the expert: PD targets shifted so that the upper body holds its pose.

Why: the humanoid's joints are PD servos without gravity compensation, so a pose held against
gravity sags by torque / kp. Measured on the example clip with the balance expert (before this):
at the grasp the chest sat 3-6 cm and the wrists 8-12 cm below and behind the reference, so the
forearms, not the hands, met the box. The textbook remedy is a feed-forward torque; in a PD
position interface that is a target offset of ``tau_gravity / kp`` per DOF.

Only the DOFs whose subtree is free (spine, neck, arms, hands) are compensated: for those the
floating-base gravity force of the joint (MuJoCo's ``mj_rne`` with zero velocity) is exactly the
torque that holds the subtree. The legs carry the body through the ground contact, which that
force does not include, so they are left to the balance feedback. Offsets are computed once per
reference frame (the reference pose's gravity load), so the expert stays cheap per step.
"""

from __future__ import annotations

import mujoco
import numpy as np
import torch
from torch import Tensor

from intermimic_policy.embodiment import smplx_body as sb
from intermimic_policy.embodiment.joint_map import (
    hinge_angles_from_rotvec,
    qpos_from_pose,
    rotvec_from_hinge_angles,
)
from intermimic_policy.embodiment.mjcf import humanoid_model
from intermimic_policy.embodiment.skeleton import Skeleton

LEG_JOINTS = tuple(f"{s}_{j}" for s in "LR" for j in ("Hip", "Knee", "Ankle", "Toe"))


def compensated_dofs() -> np.ndarray:
    """Mask [153] of the hinge DOFs that get the feed-forward (all but the legs')."""
    return np.repeat([name not in LEG_JOINTS for name in sb.JOINT_NAMES], 3)


def gravity_target_offsets(skeleton: Skeleton | None, root_pos: Tensor, root_rot: Tensor,
                           joint_rotvec: Tensor) -> Tensor:
    """Rotation-vector target offsets [T, 51, 3] that cancel the PD sag of poses [T] (root
    position [T, 3], root rotation xyzw [T, 4], joint rotation vectors [T, 51, 3])."""
    model = humanoid_model(skeleton)
    data = mujoco.MjData(model)
    qpos = qpos_from_pose(root_pos.double(), root_rot.double(), joint_rotvec.double()).numpy()
    kp = np.repeat([sb.joint_gains(name).kp for name in sb.JOINT_NAMES], 3)
    mask = compensated_dofs()
    torque = np.zeros((qpos.shape[0], model.nv))
    for t in range(qpos.shape[0]):
        data.qpos[:] = qpos[t]
        data.qvel[:] = 0.0
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_rne(model, data, 0, torque[t])  # gravity (zero velocity, zero acceleration)
    hinge = hinge_angles_from_rotvec(joint_rotvec.double())
    shift = torch.from_numpy(np.where(mask, torque[:, 6:] / kp, 0.0))
    return (rotvec_from_hinge_angles(hinge + shift) - joint_rotvec.double()).float()
