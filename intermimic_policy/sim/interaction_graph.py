"""Interaction-graph geometry: vectors between human bodies and the object's surface points.

InterMimic describes the human-object relation by vectors from each body to the object's surface
(observations, reward, early termination). These helpers compute them batched over worlds, in
chunks, so that 4096 worlds x 52 bodies x 1024 points never sit in memory at once. All inputs are
world-frame torch tensors; nothing here touches a simulator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from intermimic_policy.geometry import quaternion as quat

# entries of the largest [n, B, P] intermediate per chunk (~16 MB of float32)
CHUNK_ELEMENTS = 1 << 22
# |v| below which a vector counts as zero in f(v); upstream's constant
IG_EPS = 1e-6
# decay of the observation feature f(v) = v/|v| exp(-IG_DECAY |v|), per metre
IG_DECAY = 5.0


def _chunks(n: int, per_item: int) -> Iterator[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def object_points_world(points: Tensor, object_pos: Tensor, object_rot: Tensor) -> Tensor:
    """Object-frame points [N,P,3] (or one shared [P,3]) placed at poses [N,3]/[N,4] -> [N,P,3]."""
    n = object_pos.shape[0]
    if points.dim() == 2:
        points = points.unsqueeze(0).expand(n, -1, -1)
    rot_t = quat.to_matrix(object_rot).transpose(1, 2)  # p_world = R p + x, as row vectors p R^T
    return torch.baddbmm(object_pos.unsqueeze(1), points, rot_t)


def nearest_point_vectors(body_pos: Tensor, points: Tensor) -> Tensor:
    """For each body, the vector from its nearest point to the body: body - nearest, [N,B,3].

    ``body_pos`` [N,B,3], ``points`` [N,P,3], both world frame. The nearest point is picked from
    distances (``torch.cdist``) and the vector is then taken exactly from the coordinates.
    """
    n, b = body_pos.shape[:2]
    p = points.shape[1]
    out = torch.empty_like(body_pos)
    for sl in _chunks(n, b * p):
        bp, pts = body_pos[sl], points[sl]
        idx = torch.cdist(bp, pts).argmin(dim=-1)  # [n,B]
        nearest = torch.gather(pts, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
        out[sl] = bp - nearest
    return out


def ig_feature(v: Tensor) -> Tensor:
    """f(v) = v/(|v|+1e-6) exp(-5|v|): direction, fading with distance (observation encoding)."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / (norm + IG_EPS) * torch.exp(-IG_DECAY * norm)


def interaction_graph(key_pos: Tensor, points: Tensor) -> Tensor:
    """The full graph G[n,k,p] = key_pos[n,k] - points[n,p], [N,K,P,3] (small batches only)."""
    return key_pos.unsqueeze(2) - points.unsqueeze(1)


def _pair_sq(a: Tensor, b: Tensor) -> Tensor:
    """|a_k - b_p|^2 for all pairs, [n,K,P], as |a|^2 + |b|^2 - 2 a.b (one batched matmul, no
    [n,K,P,3] tensor). Callers centre the coordinates near the object to keep float32 precise."""
    a2 = a.square().sum(-1).unsqueeze(2)
    b2 = b.square().sum(-1).unsqueeze(1)
    return torch.baddbmm(a2 + b2, a, b.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


def _edge_sq(key_pos: Tensor, points: Tensor, centre: Tensor) -> Tensor:
    """|G_kp|^2 [n,K,P], coordinates taken relative to ``centre`` (the object)."""
    c = centre.unsqueeze(1)
    return _pair_sq(key_pos - c, points - c)


def ig_reward_error(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
                    centre: Tensor | None = None, ref_centre: Tensor | None = None) -> Tensor:
    """Upstream's weighted graph error, [N]: sum_kp |G - G_ref|^2 (W1 + W2).

    G_kp = key_k - point_p. W1 = 1/max(|G|^2, 0.01) normalised to sum 1 over all (k, p); W2 the
    same from G_ref, so edges that are short in either the simulation or the reference dominate.
    G - G_ref = (key - key_ref)_k - (point - point_ref)_p, so no [N,K,P,3] graph is built.
    ``centre``/``ref_centre`` [N,3] (default: the first point) only improve float precision.
    """
    n, k = key_pos.shape[:2]
    p = points.shape[1]
    centre = points[:, 0] if centre is None else centre
    ref_centre = ref_points[:, 0] if ref_centre is None else ref_centre
    out = torch.empty(n, dtype=key_pos.dtype, device=key_pos.device)
    for sl in _chunks(n, k * p):
        w = _edge_sq(key_pos[sl], points[sl], centre[sl]).clamp_min_(0.01).reciprocal_()
        w.div_(w.sum(dim=(1, 2), keepdim=True))
        w2 = _edge_sq(ref_key_pos[sl], ref_points[sl], ref_centre[sl]).clamp_min_(0.01).reciprocal_()
        w.add_(w2.div_(w2.sum(dim=(1, 2), keepdim=True)))
        err = _pair_sq(key_pos[sl] - ref_key_pos[sl], points[sl] - ref_points[sl])
        out[sl] = err.mul_(w).sum(dim=(1, 2))
    return out


def ig_deviation_ratio(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
                       floor: float, centre: Tensor | None = None,
                       ref_centre: Tensor | None = None) -> Tensor:
    """Largest relative graph deviation, [N]: max_kp |G - G_ref| / max(min(|G|, |G_ref|), floor).

    This is upstream's pair of ratio tests (against |G_ref| and against |G|) in one number: an edge
    fails when it moved by more than the ratio times the shorter of its two lengths (floored).
    """
    n, k = key_pos.shape[:2]
    p = points.shape[1]
    centre = points[:, 0] if centre is None else centre
    ref_centre = ref_points[:, 0] if ref_centre is None else ref_centre
    out = torch.empty(n, dtype=key_pos.dtype, device=key_pos.device)
    for sl in _chunks(n, k * p):
        length_sq = torch.minimum(_edge_sq(key_pos[sl], points[sl], centre[sl]),
                                  _edge_sq(ref_key_pos[sl], ref_points[sl], ref_centre[sl]))
        dev_sq = _pair_sq(key_pos[sl] - ref_key_pos[sl], points[sl] - ref_points[sl])
        out[sl] = dev_sq.div_(length_sq.clamp_min_(floor * floor)).amax(dim=(1, 2)).sqrt()
    return out
