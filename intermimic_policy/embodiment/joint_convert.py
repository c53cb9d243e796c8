"""Joint rotation vectors <-> the simulator's hinge angles, for any embodiment (torch).

The state keeps every joint as a rotation vector [.., J, 3] and a child-frame angular velocity
[.., J, 3] (``embodiment.description``). The simulator drives hinges:

* SMPL-X: three hinges (x, y, z Euler) per joint, ``joint_map``'s conversions;
* a robot: one hinge per joint about its axis a: rotvec = q a, omega = q' a, q = rotvec . a.
"""

from __future__ import annotations

import torch
from torch import Tensor

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.description import EmbodimentSpec


def _axes(emb: EmbodimentSpec, like: Tensor) -> Tensor:
    assert emb.joint_axes is not None
    return torch.as_tensor(emb.joint_axes, dtype=like.dtype, device=like.device)


def hinge_angles_from_rotvec(emb: EmbodimentSpec, rotvec: Tensor) -> Tensor:
    """[..., J, 3] -> hinge angles [..., D]."""
    if emb.joint_axes is None:
        return joint_map.hinge_angles_from_rotvec(rotvec)
    return (rotvec * _axes(emb, rotvec)).sum(-1)


def rotvec_from_hinge_angles(emb: EmbodimentSpec, angles: Tensor) -> Tensor:
    """Hinge angles [..., D] -> [..., J, 3]."""
    if emb.joint_axes is None:
        return joint_map.rotvec_from_hinge_angles(angles)
    return angles.unsqueeze(-1) * _axes(emb, angles)


def hinge_rates_from_angular_velocity(emb: EmbodimentSpec, angles: Tensor, omega: Tensor) -> Tensor:
    """Hinge rates [..., D] giving child-frame angular velocities ``omega`` [..., J, 3]."""
    if emb.joint_axes is None:
        return joint_map.hinge_rates_from_angular_velocity(angles, omega)
    return (omega * _axes(emb, omega)).sum(-1)


def angular_velocity_from_hinge_rates(emb: EmbodimentSpec, angles: Tensor, rates: Tensor) -> Tensor:
    """Child-frame angular velocities [..., J, 3] of hinge rates [..., D]."""
    if emb.joint_axes is None:
        return joint_map.angular_velocity_from_hinge_rates(angles, rates)
    return rates.unsqueeze(-1) * _axes(emb, rates)


def targets_from_action_space(emb: EmbodimentSpec, x: Tensor) -> Tensor:
    """The action map's output [N, D] (SMPL-X: joint rotation vectors, flat; a robot: hinge
    angles) as hinge-angle PD targets [N, D]."""
    if emb.joint_axes is None:
        return joint_map.hinge_angles_from_rotvec(x.reshape(x.shape[0], emb.num_joints, 3)).reshape(-1, emb.num_dofs)
    return x
