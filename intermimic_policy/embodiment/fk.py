"""Batched forward kinematics of the SMPL-X humanoid in torch.

The data's joint coordinates are rotation vectors (spec 1.3), so FK composes
``body_rot[b] = body_rot[parent(b)] * exp(rotvec_b)`` and
``body_pos[b] = body_pos[parent(b)] + body_rot[parent(b)] offset_b``. Bodies are processed one
tree level at a time (11 levels instead of 51 bodies) so small batches are not dominated by Python.
Any leading batch shape works; gradients flow through everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from intermimic_policy.embodiment.skeleton import Geom
from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS, PARENTS
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat


def _levels() -> tuple[tuple[Tensor, Tensor], ...]:
    depth = [0] * NUM_BODIES
    for b in range(1, NUM_BODIES):
        depth[b] = depth[PARENTS[b]] + 1
    out = []
    for d in range(1, max(depth) + 1):
        bodies = [b for b in range(NUM_BODIES) if depth[b] == d]
        out.append((torch.tensor(bodies), torch.tensor([PARENTS[b] for b in bodies])))
    return tuple(out)


class KinematicsInputError(IntermimicError, ValueError):
    """A pose tensor of the wrong shape handed to FK or the joint map."""


_LEVELS = _levels()
_PARENT_IDX = torch.tensor(PARENTS[1:])


def forward_kinematics(
    offsets: Tensor | np.ndarray,
    root_pos: Tensor,
    root_rot: Tensor,
    joint_rotvec: Tensor,
) -> tuple[Tensor, Tensor]:
    """World body positions [..., 52, 3] and rotations [..., 52, 4] (xyzw).

    offsets [..., 52, 3] (or [52, 3], broadcast), root_pos [..., 3], root_rot [..., 4] xyzw,
    joint_rotvec [..., 51, 3]. Offsets are cast to root_pos's dtype and device. (Chaining 3x3
    matrices instead was measured: 2x slower at batch 256+, barely faster at batch 1.)
    """
    if joint_rotvec.shape[-2:] != (NUM_JOINTS, 3):
        raise KinematicsInputError(f"joint_rotvec has shape {tuple(joint_rotvec.shape)}, expected [..., 51, 3]")
    if root_pos.shape[-1:] != (3,) or root_rot.shape[-1:] != (4,):
        raise KinematicsInputError(
            f"root_pos/root_rot have shapes {tuple(root_pos.shape)}/{tuple(root_rot.shape)}, "
            "expected [..., 3]/[..., 4]"
        )
    if isinstance(offsets, np.ndarray):
        offsets = torch.from_numpy(np.array(offsets, dtype=np.float64))
    dtype, device = root_pos.dtype, root_pos.device
    off = offsets.to(dtype=dtype, device=device)
    if off.shape[-2:] != (NUM_BODIES, 3):
        raise KinematicsInputError(f"offsets have shape {tuple(off.shape)}, expected [..., 52, 3]")
    batch = torch.broadcast_shapes(
        off.shape[:-2], root_pos.shape[:-1], root_rot.shape[:-1], joint_rotvec.shape[:-2]
    )
    local = quat.from_rotvec(joint_rotvec.to(dtype)).expand(*batch, NUM_JOINTS, 4)
    off = off.expand(*batch, NUM_BODIES, 3)
    rot = torch.empty(*batch, NUM_BODIES, 4, dtype=dtype, device=device)
    pos = torch.empty(*batch, NUM_BODIES, 3, dtype=dtype, device=device)
    rot[..., 0, :] = root_rot.to(dtype).expand(*batch, 4)
    pos[..., 0, :] = root_pos.expand(*batch, 3)
    for bodies, parents in _LEVELS:
        bodies = bodies.to(device)
        parents = parents.to(device)
        prot = rot[..., parents, :]
        pos[..., bodies, :] = pos[..., parents, :] + quat.rotate(prot, off[..., bodies, :])
        rot[..., bodies, :] = quat.multiply(prot, local[..., bodies - 1, :])
    return pos, rot


def local_joint_rotvec(body_rot: Tensor) -> Tensor:
    """Inverse of FK's rotation part: joint rotation vectors [..., 51, 3] from world body rotations."""
    if body_rot.shape[-2:] != (NUM_BODIES, 4):
        raise KinematicsInputError(f"body_rot has shape {tuple(body_rot.shape)}, expected [..., 52, 4]")
    parent = body_rot[..., _PARENT_IDX.to(body_rot.device), :]
    return quat.to_rotvec(quat.multiply(quat.conjugate(parent), body_rot[..., 1:, :]))


def bone_offsets_from_pose(body_pos: Tensor, body_rot: Tensor) -> Tensor:
    """Per-frame bone offsets [..., 52, 3] in the parent frame (row 0 zero): R_parent^T (p_b - p_parent)."""
    parent = _PARENT_IDX.to(body_pos.device)
    rel = quat.rotate_inverse(body_rot[..., parent, :], body_pos[..., 1:, :] - body_pos[..., parent, :])
    return torch.cat([torch.zeros_like(rel[..., :1, :]), rel], dim=-2)


def geom_bottom_z(geoms: Sequence[Geom], body_pos: Tensor, body_rot: Tensor) -> Tensor:
    """World z of the lowest point of each body's geom [..., 52], for feet-on-floor checks.

    Exact for spheres, capsules and boxes: a box's lowest point is its centre minus
    sum_i |R[2, i]| * half_i.
    """
    if len(geoms) != NUM_BODIES:
        raise KinematicsInputError(f"expected 52 geoms, got {len(geoms)}")
    out = []
    for b, g in enumerate(geoms):
        pts = torch.as_tensor(g.points(), dtype=body_pos.dtype, device=body_pos.device)
        q = body_rot[..., b : b + 1, :].expand(*body_rot.shape[:-2], pts.shape[0], 4)
        world_z = (body_pos[..., b : b + 1, :] + quat.rotate(q, pts.expand_as(q[..., :3])))[..., 2]
        low = world_z.min(dim=-1).values
        if g.kind == "box":
            half = torch.as_tensor(g.size, dtype=body_pos.dtype, device=body_pos.device)
            row_z = quat.to_matrix(body_rot[..., b, :])[..., 2, :]
            low = low - (row_z.abs() * half).sum(-1)
        else:
            low = low - g.size[0]
        out.append(low)
    return torch.stack(out, dim=-1)
