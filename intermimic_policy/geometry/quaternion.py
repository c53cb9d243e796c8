"""Rotation helpers: the project's one quaternion convention.

**Convention: quaternions are (x, y, z, w), scalar last, unit norm, Hamilton product,
active rotations.** This is the layout of InterMimic's data files and of scipy's
``Rotation.as_quat()``. MuJoCo stores (w, x, y, z): convert with :func:`wxyz_to_xyzw` /
:func:`xyzw_to_wxyz` at the simulator boundary and nowhere else.

Rotation vectors ("exp maps", axis * angle in radians) are how the data stores joint
rotations. Every function is batched over leading dimensions and works on torch tensors;
numpy callers wrap with ``torch.from_numpy``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-9


def xyzw_to_wxyz(q: Tensor) -> Tensor:
    return torch.cat([q[..., 3:4], q[..., :3]], dim=-1)


def wxyz_to_xyzw(q: Tensor) -> Tensor:
    return torch.cat([q[..., 1:4], q[..., 0:1]], dim=-1)


def identity_like(v: Tensor) -> Tensor:
    """Identity quaternions with the leading shape of ``v[..., 0]``."""
    q = torch.zeros(*v.shape[:-1], 4, dtype=v.dtype, device=v.device)
    q[..., 3] = 1.0
    return q


def normalize(q: Tensor) -> Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def canonical(q: Tensor) -> Tensor:
    """The representative with w >= 0 (q and -q are the same rotation)."""
    return torch.where(q[..., 3:4] < 0, -q, q)


def conjugate(q: Tensor) -> Tensor:
    return torch.cat([-q[..., :3], q[..., 3:4]], dim=-1)


def multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b (apply b first, then a)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v by unit quaternions q."""
    xyz, w = q[..., :3], q[..., 3:4]
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v + w * t + torch.cross(xyz, t, dim=-1)


def rotate_inverse(q: Tensor, v: Tensor) -> Tensor:
    return rotate(conjugate(q), v)


def from_rotvec(r: Tensor) -> Tensor:
    """Exponential map: rotation vector (axis * angle) to unit quaternion."""
    angle = r.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(half)/angle, with its Taylor series near zero
    small = angle < 1e-6
    scale = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / angle.clamp_min(1e-12))
    return torch.cat([r * scale, torch.cos(half)], dim=-1)


def to_rotvec(q: Tensor) -> Tensor:
    """Logarithm map: unit quaternion to rotation vector with angle in [0, pi]."""
    q = canonical(q)
    xyz, w = q[..., :3], q[..., 3:4]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, w)
    small = sin_half < 1e-6
    scale = torch.where(small, 2.0 / w.clamp_min(_EPS), angle / sin_half.clamp_min(1e-12))
    return xyz * scale


def angle(q: Tensor) -> Tensor:
    """Rotation angle in [0, pi] of each quaternion."""
    q = canonical(q)
    return 2.0 * torch.atan2(q[..., :3].norm(dim=-1), q[..., 3])


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    return angle(multiply(conjugate(a), b))


def to_matrix(q: Tensor) -> Tensor:
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def to_tan_norm(q: Tensor) -> Tensor:
    """6-D continuous rotation feature: the rotated x axis and the rotated z axis."""
    x_axis = torch.zeros(*q.shape[:-1], 3, dtype=q.dtype, device=q.device)
    z_axis = torch.zeros_like(x_axis)
    x_axis[..., 0] = 1.0
    z_axis[..., 2] = 1.0
    return torch.cat([rotate(q, x_axis), rotate(q, z_axis)], dim=-1)


def heading_angle(q: Tensor) -> Tensor:
    """Yaw of the rotated x axis about world +z (z is up)."""
    x_axis = torch.zeros(*q.shape[:-1], 3, dtype=q.dtype, device=q.device)
    x_axis[..., 0] = 1.0
    fwd = rotate(q, x_axis)
    return torch.atan2(fwd[..., 1], fwd[..., 0])


def from_yaw(yaw: Tensor) -> Tensor:
    zeros = torch.zeros_like(yaw)
    return torch.stack([zeros, zeros, torch.sin(0.5 * yaw), torch.cos(0.5 * yaw)], dim=-1)


def heading(q: Tensor) -> Tensor:
    """The yaw-only part of q."""
    return from_yaw(heading_angle(q))


def heading_inverse(q: Tensor) -> Tensor:
    """Rotation by minus the yaw of q: maps world vectors into q's heading frame."""
    return from_yaw(-heading_angle(q))


def from_euler_xyz(e: Tensor) -> Tensor:
    """Intrinsic x -> y -> z Euler angles (three nested hinges about x, then y, then z)."""
    half = 0.5 * e
    c, s = torch.cos(half), torch.sin(half)
    zero = torch.zeros_like(e[..., 0])
    qx = torch.stack([s[..., 0], zero, zero, c[..., 0]], dim=-1)
    qy = torch.stack([zero, s[..., 1], zero, c[..., 1]], dim=-1)
    qz = torch.stack([zero, zero, s[..., 2], c[..., 2]], dim=-1)
    return multiply(multiply(qx, qy), qz)


def to_euler_xyz(q: Tensor) -> Tensor:
    """Inverse of :func:`from_euler_xyz`, with the middle angle in [-pi/2, pi/2]."""
    m = to_matrix(q)
    # R = Rx(a) Ry(b) Rz(c): m[0,2] = sin(b)
    b = torch.asin(m[..., 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-m[..., 1, 2], m[..., 2, 2])
    c = torch.atan2(-m[..., 0, 1], m[..., 0, 0])
    return torch.stack([a, b, c], dim=-1)


def finite_difference_angular_velocity(q: Tensor, fps: float, frame: str = "world") -> Tensor:
    """Angular velocity of a sampled rotation sequence (time on dim -2).

    Uses the relative rotation between neighbouring samples (central differences inside, one-sided
    at the ends), never differences of rotation vectors, so it is right across the +-pi wrap.
    ``frame="world"`` gives world-frame velocity (log(q_{t+1} q_t^-1)); ``"local"`` the body-frame one.
    """
    if q.shape[-2] < 2:
        return torch.zeros(*q.shape[:-1], 3, dtype=q.dtype, device=q.device)
    nxt = torch.cat([q[..., 1:, :], q[..., -1:, :]], dim=-2)
    prv = torch.cat([q[..., :1, :], q[..., :-1, :]], dim=-2)
    if frame == "world":
        rel = multiply(nxt, conjugate(prv))
    elif frame == "local":
        rel = multiply(conjugate(prv), nxt)
    else:
        raise ValueError(f"frame must be 'world' or 'local', got {frame!r}")
    steps = torch.full(q.shape[:-1], 2.0, dtype=q.dtype, device=q.device)
    steps[..., 0] = 1.0
    steps[..., -1] = 1.0
    return to_rotvec(rel) * (fps / steps).unsqueeze(-1)


def finite_difference_velocity(x: Tensor, fps: float) -> Tensor:
    """Linear velocity of a sampled sequence (time on dim -2), central differences inside."""
    if x.shape[-2] < 2:
        return torch.zeros_like(x)
    return torch.gradient(x, spacing=1.0 / fps, dim=-2)[0]
