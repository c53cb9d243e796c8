"""Interaction-graph geometry: vectors between human bodies and the object's surface points.

InterMimic describes the human-object relation by vectors from each body to the object's surface
(observations, reward, early termination). These helpers compute them batched over worlds, in
chunks, so that 4096 worlds x 52 bodies x 1024 points never sit in memory at once. All inputs are
world-frame torch tensors; nothing here touches a simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from intermimic_policy.geometry import fast

# entries of the largest [n, B, P] intermediate per chunk: ~4 MB of float32, so a chunk's matrices
# stay in cache between the ops that read them (measured fastest: 1 << 20 beats 1 << 22 by ~25%)
CHUNK_ELEMENTS = 1 << 20
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
    # p_world = R p + x, as row vectors p R^T (contiguous: the batched GEMM runs ~1.5x faster)
    rot_t = fast.to_matrix(object_rot).transpose(1, 2).contiguous()
    return torch.baddbmm(object_pos.unsqueeze(1), points, rot_t)


def nearest_point_vectors(body_pos: Tensor, points: Tensor, centre: Tensor | None = None) -> Tensor:
    """For each body, the vector from its nearest point to the body: body - nearest, [N,B,3].

    ``body_pos`` [N,B,3], ``points`` [N,P,3], both world frame. The nearest point is picked from
    squared distances taken relative to ``centre`` [N,3] (default: the first point), the object,
    so that float32 keeps millimetres when the scene is metres from the origin (``torch.cdist``
    on world coordinates does not); the vector is then taken exactly from the coordinates.
    """
    n, b = body_pos.shape[:2]
    p = points.shape[1]
    centre = points[:, 0] if centre is None else centre
    out = torch.empty_like(body_pos)
    for sl in _chunks(n, b * p):
        c = centre[sl]
        out[sl] = _nearest(body_pos[sl], points[sl], _partial_sq(_centred(body_pos[sl], c), _centred(points[sl], c)))
    return out


def _nearest(body_pos: Tensor, points: Tensor, dist_sq: Tensor) -> Tensor:
    """body - its nearest point, from squared distances [n,B,P]."""
    idx = _argmin_last(dist_sq)  # [n,B]
    return body_pos - torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, 3))


# points per group of the two-stage argmin
_ARGMIN_GROUP = 32


def _argmin_last(x: Tensor) -> Tensor:
    """``x.argmin(-1)`` (first index of the minimum) in two stages: the minimum of every group of
    32 (``amin`` is vectorised, ``argmin`` is not: ~13x slower on CPU), the first group holding
    the overall minimum, then the first index of it inside that group. Same indices, ~2x faster."""
    p, g = x.shape[-1], _ARGMIN_GROUP
    if p % g or p < 4 * g:
        return x.argmin(dim=-1)
    groups = x.reshape(*x.shape[:-1], p // g, g)
    first = groups.amin(dim=-1).argmin(dim=-1)  # [...]
    index = first.unsqueeze(-1).unsqueeze(-1).expand(*first.shape, 1, g)
    return first * g + torch.gather(groups, -2, index).squeeze(-2).argmin(dim=-1)


def ig_feature(v: Tensor) -> Tensor:
    """f(v) = v/(|v|+1e-6) exp(-5|v|): direction, fading with distance (observation encoding)."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / (norm + IG_EPS) * torch.exp(-IG_DECAY * norm)


def interaction_graph(key_pos: Tensor, points: Tensor) -> Tensor:
    """The full graph G[n,k,p] = key_pos[n,k] - points[n,p], [N,K,P,3] (small batches only)."""
    return key_pos.unsqueeze(2) - points.unsqueeze(1)


def _partial_sq(a: Tensor, b: Tensor) -> Tensor:
    """|b_p|^2 - 2 a_k.b_p for all pairs, [n,K,P] (one batched matmul): |a_k - b_p|^2 without the
    per-row constant |a_k|^2, all an argmin over p needs."""
    b2 = b.square().sum(-1).unsqueeze(1)
    return torch.baddbmm(b2, a, b.transpose(1, 2), alpha=-2.0)


def _pair_sq(a: Tensor, b: Tensor) -> Tensor:
    """|a_k - b_p|^2 for all pairs, [n,K,P], as |a|^2 + |b|^2 - 2 a.b (no [n,K,P,3] tensor).
    Callers centre the coordinates near the object to keep float32 precise."""
    return _complete(_partial_sq(a, b), a)


def _complete(partial: Tensor, a: Tensor) -> Tensor:
    """Squared distances from :func:`_partial_sq` rows of ``a``: add |a_k|^2, clamp rounding below 0."""
    return partial.add_(a.square().sum(-1).unsqueeze(2)).clamp_min_(0.0)


def _centred(x: Tensor, centre: Tensor) -> Tensor:
    return x - centre.unsqueeze(1)


def _edge_sq(key_pos: Tensor, points: Tensor, centre: Tensor) -> Tensor:
    """|G_kp|^2 [n,K,P], coordinates taken relative to ``centre`` (the object)."""
    return _pair_sq(_centred(key_pos, centre), _centred(points, centre))


def _reward_error(edge_sq: Tensor, ref_edge_sq: Tensor, dev_sq: Tensor) -> Tensor:
    """sum_kp dev (W1 + W2) per world [n] (overwrites ``edge_sq`` and ``ref_edge_sq`` with weights).

    sum dev W1 = sum(dev w1) / sum w1 with w1 = 1/max(|G|^2, 0.01): no normalised-weight matrix.
    """
    out = torch.zeros(dev_sq.shape[0], dtype=dev_sq.dtype, device=dev_sq.device)
    for edge in (edge_sq, ref_edge_sq):
        w = edge.clamp_min_(0.01).reciprocal_()
        out += (dev_sq * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2))
    return out


def _deviation_ratio(edge_sq: Tensor, ref_edge_sq: Tensor, dev_sq: Tensor, floor: float) -> Tensor:
    """max_kp |G - G_ref| / max(min(|G|, |G_ref|), floor) per world [n]."""
    length_sq = torch.minimum(edge_sq, ref_edge_sq).clamp_min_(floor * floor)
    return torch.div(dev_sq, length_sq, out=length_sq).amax(dim=(1, 2)).sqrt()


def _graph_reduce(reduce: Callable[[Tensor, Tensor, Tensor], Tensor], key_pos: Tensor, points: Tensor,
                  ref_key_pos: Tensor, ref_points: Tensor, centre: Tensor | None,
                  ref_centre: Tensor | None) -> Tensor:
    """``reduce(|G|^2, |G_ref|^2, |G - G_ref|^2)`` per world [N], chunked over worlds."""
    n, k = key_pos.shape[:2]
    p = points.shape[1]
    centre = points[:, 0] if centre is None else centre
    ref_centre = ref_points[:, 0] if ref_centre is None else ref_centre
    out = torch.empty(n, dtype=key_pos.dtype, device=key_pos.device)
    for sl in _chunks(n, 3 * k * p):
        out[sl] = reduce(_edge_sq(key_pos[sl], points[sl], centre[sl]),
                         _edge_sq(ref_key_pos[sl], ref_points[sl], ref_centre[sl]),
                         _pair_sq(key_pos[sl] - ref_key_pos[sl], points[sl] - ref_points[sl]))
    return out


def ig_reward_error(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
                    centre: Tensor | None = None, ref_centre: Tensor | None = None) -> Tensor:
    """Upstream's weighted graph error, [N]: sum_kp |G - G_ref|^2 (W1 + W2).

    G_kp = key_k - point_p. W1 = 1/max(|G|^2, 0.01) normalised to sum 1 over all (k, p); W2 the
    same from G_ref, so edges that are short in either the simulation or the reference dominate.
    G - G_ref = (key - key_ref)_k - (point - point_ref)_p, so no [N,K,P,3] graph is built.
    ``centre``/``ref_centre`` [N,3] (default: the first point) only improve float precision.
    """
    return _graph_reduce(_reward_error, key_pos, points, ref_key_pos, ref_points, centre, ref_centre)


def ig_deviation_ratio(key_pos: Tensor, points: Tensor, ref_key_pos: Tensor, ref_points: Tensor,
                       floor: float, centre: Tensor | None = None,
                       ref_centre: Tensor | None = None) -> Tensor:
    """Largest relative graph deviation, [N]: max_kp |G - G_ref| / max(min(|G|, |G_ref|), floor).

    This is upstream's pair of ratio tests (against |G_ref| and against |G|) in one number: an edge
    fails when it moved by more than the ratio times the shorter of its two lengths (floored).
    """
    return _graph_reduce(lambda e, r, d: _deviation_ratio(e, r, d, floor), key_pos, points, ref_key_pos,
                         ref_points, centre, ref_centre)


@dataclass(frozen=True)
class ReferenceGeometry:
    """The reference side of one step's interaction graph: it depends only on the clip and frame,
    so the environment computes it before (or while) the physics runs.

    Holds two [N,K,P] matrices (about 170 KB per world with 21 key bodies and 1024 points).
    """

    points: Tensor  # [N,P,3] reference object surface points, world frame
    key_pos: Tensor  # [N,K,3] reference key bodies
    weights: Tensor  # [N,K,P] reward weights 1/max(|G_ref|^2, 0.01), not normalised
    weight_sum: Tensor  # [N] their sum over (k, p)
    length_sq: Tensor  # [N,K,P] max(|G_ref|^2, floor^2), the deviation test's reference lengths
    floor: float

    @property
    def num_worlds(self) -> int:
        return int(self.key_pos.shape[0])


def reference_geometry(ref_key_pos: Tensor, ref_points: Tensor, ref_centre: Tensor,
                       floor: float) -> ReferenceGeometry:
    """:class:`ReferenceGeometry` of reference key bodies [N,K,3] and world points [N,P,3];
    ``ref_centre`` [N,3] the reference object position (coordinates are taken relative to it)."""
    n, k = ref_key_pos.shape[:2]
    p = ref_points.shape[1]
    weights = torch.empty(n, k, p, dtype=ref_points.dtype, device=ref_points.device)
    length = torch.empty_like(weights)
    for sl in _chunks(n, k * p):
        edge = _edge_sq(ref_key_pos[sl], ref_points[sl], ref_centre[sl])
        torch.clamp_min(edge, floor * floor, out=length[sl])
        weights[sl] = edge.clamp_min_(0.01).reciprocal_()
    return ReferenceGeometry(ref_points, ref_key_pos, weights, weights.sum(dim=(1, 2)), length, float(floor))


@dataclass(frozen=True)
class InteractionGeometry:
    """The body-object geometry of one step, computed once and read by every consumer.

    The observation needs the simulated nearest-point vectors, the reward the graph error, the
    interaction early termination the deviation ratio, the metrics and the object-deviation test
    the world-frame surface points. All three graph quantities come from the same pairwise
    squared distances (simulated and reference key-body/point edges and their difference), so one
    chunked pass computes them and no simulated [N,K,P] matrix outlives its chunk.
    """

    points: Tensor  # [N,P,3] simulated object surface points, world frame
    ref_points: Tensor  # [N,P,3] reference object surface points, world frame
    nearest: Tensor  # [N,B,3] every simulated body minus its nearest object point (the sim ig)
    reward_error: Tensor  # [N] :func:`ig_reward_error`
    deviation_ratio: Tensor  # [N] :func:`ig_deviation_ratio` with ``floor``
    floor: float


def interaction_geometry(body_pos: Tensor, points: Tensor, centre: Tensor, key_bodies: Sequence[int],
                         ref: ReferenceGeometry) -> InteractionGeometry:
    """:class:`InteractionGeometry` of simulated bodies [N,B,3] and object points [N,P,3] (world
    frame; ``centre`` [N,3] the object position) against the reference side ``ref``, whose key
    bodies are ``key_bodies``. Equal (up to float rounding) to :func:`nearest_point_vectors`,
    :func:`ig_reward_error` and :func:`ig_deviation_ratio` called separately.
    """
    n, b = body_pos.shape[:2]
    p, k = points.shape[1], len(key_bodies)
    keys = list(key_bodies)
    rest = [i for i in range(b) if i not in set(keys)]
    order = torch.tensor(keys + rest, dtype=torch.long, device=body_pos.device)
    bodies = body_pos.index_select(1, order)  # key bodies first: their edges are rows [:K]
    nearest = torch.empty_like(bodies)
    reward = torch.empty(n, dtype=body_pos.dtype, device=body_pos.device)
    ratio = torch.empty_like(reward)
    floor_sq = ref.floor * ref.floor
    for sl in _chunks(n, (b + k) * p):
        pts, c = points[sl], centre[sl]
        body_c = _centred(bodies[sl], c)
        partial = _partial_sq(body_c, _centred(pts, c))  # [n,B,P]: |p|^2 - 2 b.p
        nearest[sl] = _nearest(bodies[sl], pts, partial)
        edge = _complete(partial[:, :k], body_c[:, :k])  # key-body edges |G|^2, in place
        dev = _pair_sq(bodies[sl, :k] - ref.key_pos[sl], pts - ref.points[sl])
        # max(min(|G|^2, |G_ref|^2), f^2) = min(max(|G|^2, f^2), max(|G_ref|^2, f^2))
        length = torch.minimum(edge.clamp_min(floor_sq), ref.length_sq[sl])
        ratio[sl] = torch.div(dev, length, out=length).amax(dim=(1, 2)).sqrt()
        w = edge.clamp_min_(0.01).reciprocal_()
        reward[sl] = ((dev * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2))
                      + (dev * ref.weights[sl]).sum(dim=(1, 2)) / ref.weight_sum[sl])
    return InteractionGeometry(points, ref.points, nearest.index_select(1, torch.argsort(order)), reward, ratio,
                               ref.floor)
