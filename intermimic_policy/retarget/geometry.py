"""Object geometry for retargeting: exact closest surface points and penetration depth.

* Surface (contact targets, contact error): the object's visual mesh. Closest points are exact
  point-triangle distances over candidate triangles picked by a KD-tree on triangle centres
  (trimesh's own query needs ``rtree``, which we do not depend on).
* Volume (penetration): the convex collision parts the simulator uses (``ObjectAsset.parts``), as
  half-space sets, so "no penetration" means what MuJoCo will see. Depth of a point = max over parts
  of its distance to the nearest face plane of a part that contains it (exact for convex parts).

Everything here works in the object frame; callers transform with the object's pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, cKDTree

from intermimic_policy.motion.objects import ObjectAsset


@dataclass(frozen=True, eq=False)
class HullSet:
    normals: np.ndarray  # [P, F, 3] outward unit normals (padded with zeros)
    offsets: np.ndarray  # [P, F] inside: n . x + offset <= 0 (padding: -inf, never the max)
    lo: np.ndarray  # [3] bounding box of all parts
    hi: np.ndarray
    part_lo: np.ndarray  # [P, 3] bounding box of each part
    part_hi: np.ndarray
    face_counts: np.ndarray  # [P] planes per part (the rest is padding)

    @property
    def flat_normals(self) -> np.ndarray:
        return self.normals.reshape(-1, 3)

    @property
    def flat_offsets(self) -> np.ndarray:
        return self.offsets.reshape(-1)

    @cached_property
    def planes(self) -> np.ndarray:
        """[P, 4, F] each part's face planes as columns (n_f; o_f): [p, 1] @ planes[k] gives every
        n_f . p + o_f in one product."""
        return np.concatenate([self.normals.transpose(0, 2, 1), self.offsets[:, None, :]], axis=1)


def hull_set(parts: tuple[tuple[np.ndarray, np.ndarray], ...]) -> HullSet:
    eqs = [ConvexHull(v).equations for v, _ in parts]
    f = max(len(e) for e in eqs)
    normals = np.zeros((len(eqs), f, 3))
    offsets = np.full((len(eqs), f), -np.inf)
    for i, e in enumerate(eqs):
        normals[i, : len(e)] = e[:, :3]
        offsets[i, : len(e)] = e[:, 3]
    allv = np.concatenate([v for v, _ in parts])
    part_lo = np.stack([v.min(0) for v, _ in parts])
    part_hi = np.stack([v.max(0) for v, _ in parts])
    counts = np.array([len(e) for e in eqs])
    return HullSet(normals, offsets, allv.min(0), allv.max(0), part_lo, part_hi, counts)


def part_depths(hulls: HullSet, points: np.ndarray, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (point, part) pair whose point lies within ``margin`` of the part's bounding box:
    (point index, part index, depth, outward normal of the part's nearest face), object frame.

    depth > 0: inside the part by that much (exact for a convex part); otherwise minus the distance
    to the farthest face plane the point is outside of, a lower bound of the gap. That face's plane
    separates the point from the part, so "stay outside it" is a sufficient, linear non-penetration
    condition (what the IK's constraints use).
    """
    near = np.flatnonzero(np.all((points > hulls.lo - margin) & (points < hulls.hi + margin), axis=1))
    if not len(near):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros((0, 3))
    p = points[near]
    inside_box = np.all((p[:, None] > hulls.part_lo[None] - margin) & (p[:, None] < hulls.part_hi[None] + margin), axis=2)
    pi, pk = np.nonzero(inside_box)  # (point, part) pairs, all parts at once
    depth, normal = pair_depths(hulls, p[pi], pk)
    return near[pi], pk, depth, normal


def run_bounds(keys: np.ndarray) -> np.ndarray:
    """[0, ..., len] starts of the runs of equal values in ``keys`` (sorted), and the end."""
    if not len(keys):
        return np.zeros(2, np.int64)
    edge = np.empty(len(keys) + 1, bool)  # edge[i]: a run starts (or the keys end) at i
    edge[0] = edge[-1] = True
    np.not_equal(keys[1:], keys[:-1], out=edge[1:-1])
    return np.flatnonzero(edge)


def pair_depths(hulls: HullSet, points: np.ndarray, parts: np.ndarray,
                ref: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(depth, outward normal of the nearest face) of ``points[i]`` against part ``parts[i]``; with
    ``ref``, the face is the one nearest to ``ref[i]`` instead (where the point was before: the face
    it entered through, which is the way out, where the nearest face of a thin part may be across)."""
    return face_depths(hulls, points, parts, nearest_faces(hulls, points if ref is None else ref, parts))


def group_faces(hulls: HullSet, points: np.ndarray, parts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One face per group of (point, part) pairs (``groups[i]``: a key, e.g. the link; all pairs of a
    group and part share the face): the face of the part whose plane leaves the group's points least
    deep, argmax_f min_i (n_f . p_i + o_f). It is the way out for the group as a whole (a link leaves a
    part rigidly), where each point's own nearest face may be across a thin part from its neighbours'
    and their rows would push the link both ways at once. Outside the part it is the plane that
    separates the group from it with the widest margin, when one does."""
    faces = np.zeros(len(parts), np.int64)
    if not len(parts):
        return faces
    order = np.lexsort((groups, parts))  # by part, then group
    sorted_parts, sorted_groups = parts[order], groups[order]
    part_runs = run_bounds(sorted_parts)
    for a, b in zip(part_runs[:-1], part_runs[1:], strict=True):  # per part: one product over its faces
        k = sorted_parts[a]
        s = _homogeneous(points.take(order[a:b], axis=0)) @ hulls.planes[k]  # [m, F] (padding: -inf)
        runs = run_bounds(sorted_groups[a:b])
        best = np.argmax(np.minimum.reduceat(s, runs[:-1], axis=0), axis=1)  # [groups]
        faces[order[a:b]] = np.repeat(best, np.diff(runs))
    return faces


def nearest_faces(hulls: HullSet, points: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Index of the face of part ``parts[i]`` nearest to ``points[i]`` inside it (the farthest plane
    outside): argmax_f (n_f . p + o_f), one product per part."""
    faces = np.zeros(len(parts), np.int64)
    if not len(parts):
        return faces
    order = np.argsort(parts, kind="stable")
    sorted_parts = parts[order]
    runs = run_bounds(sorted_parts).tolist()
    homogeneous = _homogeneous(points)
    for a, b in zip(runs[:-1], runs[1:], strict=True):
        rows = order[a:b]
        faces[rows] = (homogeneous.take(rows, axis=0) @ hulls.planes[sorted_parts[a]]).argmax(axis=1)
    return faces


def _homogeneous(points: np.ndarray) -> np.ndarray:
    """[N, 4] points with a fourth coordinate 1 (see ``HullSet.planes``)."""
    out = np.empty((len(points), 4))
    out[:, :3] = points
    out[:, 3] = 1.0
    return out


def face_depths(hulls: HullSet, points: np.ndarray, parts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth below the plane of face ``faces[i]`` of part ``parts[i]``, its outward normal) of each
    point: positive behind the plane; the linear non-penetration condition is depth <= allowance."""
    flat = parts * hulls.normals.shape[1] + faces  # one index into the flattened faces: a cheap gather
    normal = hulls.flat_normals.take(flat, axis=0)
    return -(np.einsum("ij,ij->i", points, normal) + hulls.flat_offsets.take(flat)), normal


def hull_depth(hulls: HullSet, points: np.ndarray, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(depth [N], outward normal of the nearest face [N, 3]) for points in the object frame.

    depth > 0: inside a part by that much; depth in (-margin, 0]: outside but within ``margin`` of a
    face plane of the part (a lower bound of the gap). Points not within ``margin`` of any part's
    bounding box get depth -inf. Each part only sees the points inside its own box (+ margin).
    """
    n = len(points)
    depth = np.full(n, -np.inf)
    normal = np.zeros((n, 3))
    idx, _, d, nrm = part_depths(hulls, points, margin)
    if len(idx):
        order = np.lexsort((d, idx))  # per point, its deepest part last
        last = order[np.r_[idx[order][1:] != idx[order][:-1], True]]
        depth[idx[last]] = d[last]
        normal[idx[last]] = nrm[last]
    return depth, normal


class Surface:
    """Closest points on a triangle mesh (object frame)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, candidates: int = 24) -> None:
        self.mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
        self.triangles = np.asarray(self.mesh.triangles, dtype=np.float64)  # [F, 3, 3]
        self.tree = cKDTree(self.triangles.mean(axis=1))
        self.k = min(candidates, len(faces))
        self.face_normals = np.asarray(self.mesh.face_normals, dtype=np.float64)

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(closest point [N, 3], distance [N], unit normal of the closest face [N, 3])."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        _, idx = self.tree.query(pts, k=self.k)
        idx = idx.reshape(len(pts), -1)
        tri = self.triangles[idx.reshape(-1)]  # [N*k, 3, 3]
        cand = trimesh.triangles.closest_point(tri, np.repeat(pts, idx.shape[1], axis=0)).reshape(len(pts), -1, 3)
        d = np.linalg.norm(cand - pts[:, None], axis=2)
        best = np.argmin(d, axis=1)
        rows = np.arange(len(pts))
        return cand[rows, best], d[rows, best], self.face_normals[idx[rows, best]]


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    asset: ObjectAsset
    surface: Surface
    hulls: HullSet


def object_geometry(asset: ObjectAsset) -> ObjectGeometry:
    return ObjectGeometry(asset, Surface(asset.vertices, asset.faces), hull_set(asset.parts))
