"""Map between the data's joint rotation vectors and the MJCF's three hinges per joint.

Our MJCF gives each joint three nested hinges about local x, then y, then z (intrinsic x->y->z
Euler angles, ``quaternion.from_euler_xyz``). Why hinges and not a ball joint: MuJoCo's native
``position`` actuators then do the PD inside the physics step (implicit in kv), so batched
rollouts need no Python callback. The rotation a joint makes is identical either way (FK parity
tests prove it); only the PD error metric differs for large errors.

qpos layout of the humanoid: [root pos 3, root quat 4 (MuJoCo wxyz), 153 hinge angles in DOF
order]; qvel: [root lin vel 3 (world), root ang vel 3 (body frame), 153 hinge rates].
"""

from __future__ import annotations

import torch
from torch import Tensor

from intermimic_policy.embodiment.fk import KinematicsInputError
from intermimic_policy.embodiment.smplx_body import NUM_DOFS, NUM_JOINTS
from intermimic_policy.geometry import quaternion as quat

NQ = 7 + NUM_DOFS
NV = 6 + NUM_DOFS


def _check(t: Tensor, tail: tuple[int, ...], what: str) -> None:
    if tuple(t.shape[-len(tail):]) != tail:
        raise KinematicsInputError(f"{what} has shape {tuple(t.shape)}, expected [..., {', '.join(map(str, tail))}]")


def hinge_angles_from_rotvec(rotvec: Tensor) -> Tensor:
    """Joint rotation vectors [..., 51, 3] -> hinge angles [..., 153] (x, y, z per joint, radians)."""
    _check(rotvec, (NUM_JOINTS, 3), "rotvec")
    return quat.to_euler_xyz(quat.from_rotvec(rotvec)).reshape(*rotvec.shape[:-2], NUM_DOFS)


def rotvec_from_hinge_angles(angles: Tensor) -> Tensor:
    """Hinge angles [..., 153] -> joint rotation vectors [..., 51, 3]."""
    _check(angles, (NUM_DOFS,), "angles")
    e = angles.reshape(*angles.shape[:-1], NUM_JOINTS, 3)
    return quat.to_rotvec(quat.from_euler_xyz(e))


def hinge_rates_from_angular_velocity(angles: Tensor, omega_local: Tensor) -> Tensor:
    """Hinge rates [..., 153] that give each joint the child-frame angular velocity [..., 51, 3].

    For R = Rx(a) Ry(b) Rz(c): omega_child = (a' cb cc + b' sc, -a' cb sc + b' cc, a' sb + c').
    Near b = +-90 deg (gimbal lock) the rates are bounded by clamping cos(b).
    """
    _check(angles, (NUM_DOFS,), "angles")
    _check(omega_local, (NUM_JOINTS, 3), "omega_local")
    e = angles.reshape(*angles.shape[:-1], NUM_JOINTS, 3)
    sb, cb = torch.sin(e[..., 1]), torch.cos(e[..., 1])
    sc, cc = torch.sin(e[..., 2]), torch.cos(e[..., 2])
    cb = torch.where(cb.abs() < 1e-4, torch.full_like(cb, 1e-4).copysign(cb), cb)
    wx, wy, wz = omega_local.unbind(-1)
    da = (wx * cc - wy * sc) / cb
    db = wx * sc + wy * cc
    dc = wz - da * sb
    return torch.stack([da, db, dc], dim=-1).reshape(*angles.shape)


def angular_velocity_from_hinge_rates(angles: Tensor, rates: Tensor) -> Tensor:
    """Inverse of :func:`hinge_rates_from_angular_velocity`: child-frame omega [..., 51, 3]."""
    _check(angles, (NUM_DOFS,), "angles")
    _check(rates, (NUM_DOFS,), "rates")
    e = angles.reshape(*angles.shape[:-1], NUM_JOINTS, 3)
    r = rates.reshape(*rates.shape[:-1], NUM_JOINTS, 3)
    sb, cb = torch.sin(e[..., 1]), torch.cos(e[..., 1])
    sc, cc = torch.sin(e[..., 2]), torch.cos(e[..., 2])
    da, db, dc = r.unbind(-1)
    return torch.stack([da * cb * cc + db * sc, -da * cb * sc + db * cc, da * sb + dc], dim=-1)


def qpos_from_pose(root_pos: Tensor, root_rot: Tensor, joint_rotvec: Tensor) -> Tensor:
    """MuJoCo qpos [..., 160] from root position, root quaternion (xyzw) and joint rotation vectors."""
    _check(root_pos, (3,), "root_pos")
    _check(root_rot, (4,), "root_rot")
    return torch.cat(
        [root_pos, quat.xyzw_to_wxyz(root_rot), hinge_angles_from_rotvec(joint_rotvec)], dim=-1
    )


def pose_from_qpos(qpos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(root_pos [..., 3], root_rot xyzw [..., 4], joint_rotvec [..., 51, 3]) from qpos [..., 160]."""
    _check(qpos, (NQ,), "qpos")
    root_rot = quat.normalize(quat.wxyz_to_xyzw(qpos[..., 3:7]))
    return qpos[..., :3], root_rot, rotvec_from_hinge_angles(qpos[..., 7:])
