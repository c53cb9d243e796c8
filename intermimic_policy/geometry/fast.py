"""Few-op forms of quaternion quantities, for the environment's per-step hot path.

On CPU a small torch op costs about a microsecond of dispatch whatever its size, so a function
built from 30 elementwise ops (``quaternion.to_matrix``) costs 30 us for one world. Here the same
arithmetic runs on component-major [components, M] tensors, so one op covers many entries.
Only elementwise ops (no matmul with a coefficient matrix): their results do not depend on the
thread count or batch size, which the environment's bit-identical pipelining relies on. Same
convention as :mod:`.quaternion` (xyzw, Hamilton, active rotations); results equal its functions
(``to_matrix`` bit for bit, the others up to float rounding; tests compare them).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

# Each rotation-matrix entry (row-major) is  coef * (A + sign * B) (+ 1 on the diagonal), A and B products of two
# quaternion components: r00 = 1 - 2 (yy + zz), r01 = 2 (xy - zw), ... (as quaternion.to_matrix).
_PRODUCTS = ("xx", "yy", "zz", "xy", "zw", "xz", "yw", "yz", "xw")
_A = ("yy", "xy", "xz", "xy", "xx", "yz", "xz", "yz", "xx")
_B = ("zz", "zw", "yw", "zw", "zz", "xw", "yw", "xw", "yy")
_SIGN = (1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0)
_COEF = (-2.0, 2.0, 2.0, 2.0, -2.0, 2.0, 2.0, 2.0, -2.0)


@cache
def _constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    def idx(names: tuple[str, ...], table: str | tuple[str, ...]) -> Tensor:
        return torch.tensor([table.index(c) for c in names], dtype=torch.long, device=device)

    def col(values: tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

    return (idx(tuple(p[0] for p in _PRODUCTS), "xyzw"), idx(tuple(p[1] for p in _PRODUCTS), "xyzw"),
            idx(_A, _PRODUCTS), idx(_B, _PRODUCTS), col(_SIGN), col(_COEF))


def to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of unit quaternions [..., 4], bit-identical to
    ``quaternion.to_matrix`` in about a third of the ops (component-major: all products in one
    op, all entries in a few more; elementwise only, so independent of thread count)."""
    i, j, a, b, sign, coef = _constants(q.dtype, q.device)
    qt = q.reshape(-1, 4).t()
    prod = qt.index_select(0, i) * qt.index_select(0, j)  # [9, M]
    r = (prod.index_select(0, a) + sign * prod.index_select(0, b)) * coef  # [9, M]
    r[0::4] += 1.0  # the diagonal only: adding 0 elsewhere would turn -0.0 into +0.0 (atan2 sees it)
    return r.t().contiguous().reshape(*q.shape[:-1], 3, 3)  # row-major whatever M: callers' kernels see one layout


def to_euler_xyz(q: Tensor) -> Tensor:
    """``quaternion.to_euler_xyz`` (intrinsic x -> y -> z) from :func:`to_matrix`: bit-identical."""
    m = to_matrix(q)
    b = torch.asin(m[..., 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-m[..., 1, 2], m[..., 2, 2])
    c = torch.atan2(-m[..., 0, 1], m[..., 0, 0])
    return torch.stack([a, b, c], dim=-1)


def heading_matrix(q: Tensor) -> Tensor:
    """[..., 3, 3] matrix of ``quaternion.heading_inverse(q)``: world vectors into q's heading frame.

    From q's forward axis (first column of its rotation): cos/sin of the yaw are its normalised
    xy components, so no atan2/sin/cos round trip. A forward axis pointing straight up has no
    yaw: identity, as ``heading_angle``'s atan2(0, 0) = 0 gives.
    """
    return _heading_matrix(*heading_cos_sin(q))


def heading_matrix_of_rotation(m: Tensor) -> Tensor:
    """:func:`heading_matrix` from rotation matrices [..., 3, 3] (bit-identical when ``m`` is
    :func:`to_matrix` of the quaternion)."""
    return _heading_matrix(*_cos_sin(m[..., 0, 0], m[..., 1, 0]))


def _heading_matrix(c: Tensor, s: Tensor) -> Tensor:
    zero = torch.zeros_like(c)
    return torch.stack([c, s, zero, -s, c, zero, zero, zero, zero + 1.0], dim=-1).reshape(*c.shape, 3, 3)


def heading_cos_sin(q: Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin) of ``quaternion.heading_angle(q)``, from the forward axis's xy components."""
    x, y, z, w = q.unbind(-1)
    return _cos_sin(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + z * w))


def _cos_sin(fx: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
    norm = torch.hypot(fx, fy)
    flat = norm < 1e-12
    inv = 1.0 / norm.masked_fill(flat, 1.0)
    return (fx * inv).masked_fill(flat, 1.0), (fy * inv).masked_fill(flat, 0.0)


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Angle in [0, pi] of the rotation from a to b (= ``quaternion.angle_between``).

    conj(a) * b has w = a . b and xyz = a_w b_xyz - b_w a_xyz - a_xyz x b_xyz; the angle is
    2 atan2(|xyz|, |w|), exact for small angles (no acos).
    """
    w = (a * b).sum(-1)
    av, bv = a[..., :3], b[..., :3]
    xyz = a[..., 3:] * bv - b[..., 3:] * av - torch.linalg.cross(av, bv)
    return 2.0 * torch.atan2(torch.linalg.vector_norm(xyz, dim=-1), w.abs())
