"""The node's tick path of :mod:`.numpy_obs` as compiled loops (numba): kinematics and the observation.

Why: for ONE world the numpy path is ~150 small array operations. Back to back they take ~0.3 ms,
but a node wakes once a control period, and then the interpreter's and numpy's code and data are
cold: the same work measured 0.45-0.65 ms per tick (benchmarks/results/latency). A compiled loop
does the same arithmetic in a few kB of machine code with no temporaries. The numpy classes stay
the reference (tests compare them with training's builder); the classes here take the same inputs,
fill the same outputs and are compared with them on real clips (tests/test_compiled_obs.py).

Compilation happens once per machine (``cache=True`` keeps the machine code beside this file, or
in ``NUMBA_CACHE_DIR``); :func:`available` is False when numba is missing, and the node then uses
the numpy path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, PARENTS
from intermimic_policy.observation.numpy_obs import (
    IG_DECAY,
    IG_EPS,
    Kinematics,
    NumpyObservation,
    ObjectCloud,
    RefSample,
    WorldState,
)

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency of the deploy and full installs
    numba = None  # type: ignore[assignment]


def available() -> bool:
    """Whether the compiled path can run here (numba importable)."""
    return numba is not None


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True, fastmath=False, nogil=True)(fn) if numba is not None else fn


# -- kinematics -----------------------------------------------------------------------------------------
@_jit
def _kinematics(parents: np.ndarray, offsets: np.ndarray, root_pos: np.ndarray, root_rot: np.ndarray,
                root_lin: np.ndarray, root_ang: np.ndarray, angles: np.ndarray, rates: np.ndarray,
                pos: np.ndarray, mat: np.ndarray, lin: np.ndarray, ang: np.ndarray) -> None:  # pragma: no cover
    """Forward pass over the tree (parents before children): world pose, angular velocity
    w_b = w_p + R_b w_joint and origin velocity v_b = v_p + w_p x (p_b - p_p)."""
    x, y, z, w = root_rot[0], root_rot[1], root_rot[2], root_rot[3]
    mat[0, 0, 0] = 1 - 2 * (y * y + z * z)
    mat[0, 0, 1] = 2 * (x * y - z * w)
    mat[0, 0, 2] = 2 * (x * z + y * w)
    mat[0, 1, 0] = 2 * (x * y + z * w)
    mat[0, 1, 1] = 1 - 2 * (x * x + z * z)
    mat[0, 1, 2] = 2 * (y * z - x * w)
    mat[0, 2, 0] = 2 * (x * z - y * w)
    mat[0, 2, 1] = 2 * (y * z + x * w)
    mat[0, 2, 2] = 1 - 2 * (x * x + y * y)
    for i in range(3):
        pos[0, i] = root_pos[i]
        lin[0, i] = root_lin[i]
        ang[0, i] = root_ang[i]
    loc = np.empty((3, 3))
    om = np.empty(3)
    for b in range(1, parents.shape[0]):
        p = parents[b]
        j = b - 1
        a, bb, c = angles[3 * j], angles[3 * j + 1], angles[3 * j + 2]
        ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(bb), np.sin(bb), np.cos(c), np.sin(c)
        loc[0, 0] = cb * cc
        loc[0, 1] = -cb * sc
        loc[0, 2] = sb
        loc[1, 0] = ca * sc + sa * sb * cc
        loc[1, 1] = ca * cc - sa * sb * sc
        loc[1, 2] = -sa * cb
        loc[2, 0] = sa * sc - ca * sb * cc
        loc[2, 1] = sa * cc + ca * sb * sc
        loc[2, 2] = ca * cb
        da, db, dc = rates[3 * j], rates[3 * j + 1], rates[3 * j + 2]
        om[0] = da * cb * cc + db * sc
        om[1] = db * cc - da * cb * sc
        om[2] = da * sb + dc
        for r in range(3):
            acc = 0.0
            for k in range(3):
                acc += mat[p, r, k] * offsets[b, k]
            pos[b, r] = pos[p, r] + acc
            for col in range(3):
                m = 0.0
                for k in range(3):
                    m += mat[p, r, k] * loc[k, col]
                mat[b, r, col] = m
        for r in range(3):
            ang[b, r] = ang[p, r] + mat[b, r, 0] * om[0] + mat[b, r, 1] * om[1] + mat[b, r, 2] * om[2]
        dx, dy, dz = pos[b, 0] - pos[p, 0], pos[b, 1] - pos[p, 1], pos[b, 2] - pos[p, 2]
        wx, wy, wz = ang[p, 0], ang[p, 1], ang[p, 2]
        lin[b, 0] = lin[p, 0] + wy * dz - wz * dy
        lin[b, 1] = lin[p, 1] + wz * dx - wx * dz
        lin[b, 2] = lin[p, 2] + wx * dy - wy * dx


class CompiledKinematics(Kinematics):
    """:class:`numpy_obs.Kinematics` as one compiled pass (same outputs)."""

    def __init__(self, offsets: np.ndarray) -> None:
        super().__init__(offsets)
        parents = np.asarray(PARENTS, dtype=np.int64)
        if parents.shape[0] != NUM_BODIES or np.any(parents[1:] >= np.arange(1, NUM_BODIES)):
            raise ValueError("compiled kinematics needs every parent before its child")
        self._parent_table = parents
        z = np.zeros(3)
        # compile (or load the cached machine code) now, not in the first control tick
        self.compute(WorldState.empty(), z, np.array([0.0, 0.0, 0.0, 1.0]), z, z, np.zeros(3 * (NUM_BODIES - 1)),
                     np.zeros(3 * (NUM_BODIES - 1)))

    def compute(self, out: WorldState, root_pos: np.ndarray, root_rot: np.ndarray, root_lin_vel: np.ndarray,
                root_ang_vel: np.ndarray, angles: np.ndarray, rates: np.ndarray) -> None:
        f64 = np.float64
        _kinematics(self._parent_table, self.offsets, np.asarray(root_pos, f64), np.asarray(root_rot, f64),
                    np.asarray(root_lin_vel, f64), np.asarray(root_ang_vel, f64), np.asarray(angles, f64),
                    np.asarray(rates, f64), out.body_pos, out.body_mat, out.body_lin_vel, out.body_ang_vel)


# -- the observation ------------------------------------------------------------------------------------
# per-reference-frame values packed into one float64 row, in this order (sizes in rows of 3 unless said)
def _ref_layout(nk: int, nr: int, nc: int) -> dict[str, tuple[int, int]]:
    sizes = (("key_pos", 3 * nk), ("rot_nh", 9 * nr), ("omat", 9), ("tan", 6 * nr), ("key_lin", 3 * nk),
             ("ang_nh", 3 * nr), ("opos", 3), ("olin", 3), ("oang", 3), ("extra", 6 * nk), ("label", nc))
    at, n = {}, 0
    for name, size in sizes:
        at[name] = (n, n + size)
        n += size
    return at


@_jit
def _reference_minus_state(x: np.ndarray, row: int, ref: np.ndarray, o: int, bodies: np.ndarray,
                           state: np.ndarray) -> None:  # pragma: no cover
    """Rows ``row + j`` of ``x``: the reference's vector j (at ``ref[o + 3 j:]``) minus ``state[bodies[j]]``."""
    for j in range(bodies.shape[0]):
        b = bodies[j]
        for i in range(3):
            x[row + j, i] = ref[o + 3 * j + i] - state[b, i]


@_jit
def _rotation_error_rows(x: np.ndarray, row: int, ref: np.ndarray, m: int, rot: np.ndarray, h0x: float,
                         h0y: float) -> None:  # pragma: no cover
    """Rows ``row``, ``row + 1`` of ``x``: R_ref M^T h_e for e = x, z (R_ref: the 3x3 at ``ref[m:]``,
    M: ``rot``; h's heading row (h0x, h0y, 0), its row 2 e_z)."""
    gx0 = rot[0, 0] * h0x + rot[1, 0] * h0y
    gx1 = rot[0, 1] * h0x + rot[1, 1] * h0y
    gx2 = rot[0, 2] * h0x + rot[1, 2] * h0y
    gz0, gz1, gz2 = rot[2, 0], rot[2, 1], rot[2, 2]
    for i in range(3):
        x[row, i] = ref[m + 3 * i] * gx0 + ref[m + 3 * i + 1] * gx1 + ref[m + 3 * i + 2] * gx2
        x[row + 1, i] = ref[m + 3 * i] * gz0 + ref[m + 3 * i + 1] * gz1 + ref[m + 3 * i + 2] * gz2


@_jit
def _nearest_index(lx: float, ly: float, lz: float, table: np.ndarray, dist: np.ndarray) -> int:  # pragma: no cover
    """The first index of the smallest |p|^2 - 2 x.p over the cloud's [4, P] table (the nearest
    point to x): the distances in one vectorised pass, their minimum in four independent chains
    (one chain is a serial dependency: ~2x slower), then the first point at that minimum."""
    n = table.shape[1]
    for q in range(n):
        dist[q] = lx * table[0, q] + ly * table[1, q] + lz * table[2, q] + table[3, q]
    a0 = a1 = a2 = a3 = np.inf
    full = n - n % 4
    for q in range(0, full, 4):
        v0, v1, v2, v3 = dist[q], dist[q + 1], dist[q + 2], dist[q + 3]
        a0 = v0 if v0 < a0 else a0
        a1 = v1 if v1 < a1 else a1
        a2 = v2 if v2 < a2 else a2
        a3 = v3 if v3 < a3 else a3
    best = min(min(a0, a1), min(a2, a3))
    for q in range(full, n):
        if dist[q] < best:
            best = dist[q]
    for q in range(n):
        if dist[q] == best:
            return q
    return 0


@_jit
def _build(pos: np.ndarray, mat: np.ndarray, lin: np.ndarray, ang: np.ndarray, contact_b: np.ndarray,
           opos: np.ndarray, omat: np.ndarray, olin: np.ndarray, oang: np.ndarray,
           cloud_pts: np.ndarray, cloud_table: np.ndarray, refs: np.ndarray,
           key: np.ndarray, nh: np.ndarray, cidx: np.ndarray, lay: np.ndarray, sim_at: np.ndarray,
           blk_at: np.ndarray, blk_size: int, ig_at: int, blk_extra: int, tail: int,
           x: np.ndarray, work: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    _simulated_ig_rows(pos, opos, omat, cloud_pts, cloud_table, sim_at[6], x)
    _build_given_ig(pos, mat, lin, ang, contact_b, opos, omat, olin, oang, refs, key, nh, cidx, lay, sim_at, blk_at,
                    blk_size, ig_at, blk_extra, tail, x, work, index, out)


@_jit
def in_object_frame(p: np.ndarray, opos: np.ndarray, omat: np.ndarray) -> tuple[float, float, float]:  # pragma: no cover
    """Point ``p`` [3] in the object frame (``omat``'s columns are the object's axes)."""
    dx, dy, dz = p[0] - opos[0], p[1] - opos[1], p[2] - opos[2]
    return (dx * omat[0, 0] + dy * omat[1, 0] + dz * omat[2, 0], dx * omat[0, 1] + dy * omat[1, 1] + dz * omat[2, 1],
            dx * omat[0, 2] + dy * omat[1, 2] + dz * omat[2, 2])


@_jit
def write_world_vector(omat: np.ndarray, vx: float, vy: float, vz: float, row: np.ndarray) -> None:  # pragma: no cover
    """``row[:3]`` = the object-frame vector (vx, vy, vz) in the world frame."""
    for i in range(3):
        row[i] = omat[i, 0] * vx + omat[i, 1] * vy + omat[i, 2] * vz


@_jit
def _simulated_ig_rows(pos: np.ndarray, opos: np.ndarray, omat: np.ndarray, cloud_pts: np.ndarray,
                       cloud_table: np.ndarray, r0: int, x: np.ndarray) -> None:  # pragma: no cover
    """Rows ``r0 + b`` of ``x``: the simulated interaction graph, body minus its nearest object
    point, found in the object frame."""
    dist = np.empty(cloud_pts.shape[0])
    for b in range(pos.shape[0]):
        lx, ly, lz = in_object_frame(pos[b], opos, omat)
        arg = _nearest_index(lx, ly, lz, cloud_table, dist)
        write_world_vector(omat, lx - cloud_pts[arg, 0], ly - cloud_pts[arg, 1], lz - cloud_pts[arg, 2], x[r0 + b])


@_jit
def _build_given_ig(pos: np.ndarray, mat: np.ndarray, lin: np.ndarray, ang: np.ndarray, contact_b: np.ndarray,
                    opos: np.ndarray, omat: np.ndarray, olin: np.ndarray, oang: np.ndarray, refs: np.ndarray,
                    key: np.ndarray, nh: np.ndarray, cidx: np.ndarray, lay: np.ndarray, sim_at: np.ndarray,
                    blk_at: np.ndarray, blk_size: int, ig_at: int, blk_extra: int, tail: int,
                    x: np.ndarray, work: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """:func:`_build` with the simulated interaction-graph rows of ``x`` already written."""
    nb = pos.shape[0]
    nk, nr, nc = key.shape[0], nh.shape[0], cidx.shape[0]
    k_blocks = refs.shape[0]
    # heading h (world -> heading) of the root
    fx, fy = mat[0, 0, 0], mat[0, 1, 0]
    n = (fx * fx + fy * fy) ** 0.5
    c, s = (1.0, 0.0) if n < 1e-12 else (fx / n, fy / n)
    # sim rows
    r0 = sim_at[0]
    for b in range(1, nb):
        for i in range(3):
            x[r0 + b - 1, i] = pos[b, i] - pos[0, i]
    r0 = sim_at[1]
    for b in range(nb):
        for i in range(3):
            x[r0 + 2 * b, i] = mat[b, i, 0]
            x[r0 + 2 * b + 1, i] = mat[b, i, 2]
    r0, r1, r2, r3 = sim_at[2], sim_at[3], sim_at[4], sim_at[5]
    for b in range(nb):
        for i in range(3):
            x[r0 + b, i] = lin[b, i]
            x[r1 + b, i] = ang[b, i]
    for i in range(3):
        x[r2, i] = olin[i]
        x[r3, i] = oang[i]
    # per block: the rows that a reference frame and the state give together
    h0x, h0y = c, s  # the heading row of h (its z is 0)
    for blk in range(k_blocks):
        ref = refs[blk]
        base = sim_at[7] + blk * blk_size
        _reference_minus_state(x, base + blk_at[0], ref, lay[0, 0], key, pos)
        # body rotation error rows R_ref M^T h_e (e = x, z)
        rr = base + blk_at[1]
        o = lay[1, 0]
        for j in range(nr):
            _rotation_error_rows(x, rr + 2 * j, ref, o + 9 * j, mat[nh[j]], h0x, h0y)
        _rotation_error_rows(x, base + blk_at[2], ref, lay[2, 0], omat, h0x, h0y)
        rr = base + blk_at[3]
        o = lay[3, 0]
        for j in range(2 * nr):
            for i in range(3):
                x[rr + j, i] = ref[o + 3 * j + i]
        _reference_minus_state(x, base + blk_at[4], ref, lay[4, 0], key, lin)
        _reference_minus_state(x, base + blk_at[5], ref, lay[5, 0], nh, ang)
        o6, o7, o8 = lay[6, 0], lay[7, 0], lay[8, 0]
        for i in range(3):
            x[base + blk_at[6], i] = ref[o6 + i] - opos[i]
            x[base + blk_at[7], i] = ref[o7 + i] - olin[i]
            x[base + blk_at[8], i] = ref[o8 + i] - oang[i]
    # rotate every row by h into the workspace: y = h x
    rows = x.shape[0]
    for r in range(rows):
        a0, a1, a2 = x[r, 0], x[r, 1], x[r, 2]
        work[3 * r] = c * a0 + s * a1
        work[3 * r + 1] = -s * a0 + c * a1
        work[3 * r + 2] = a2
    # f(ig_sim)
    r0 = sim_at[6]
    for b in range(nb):
        v0, v1, v2 = work[3 * (r0 + b)], work[3 * (r0 + b) + 1], work[3 * (r0 + b) + 2]
        norm = (v0 * v0 + v1 * v1 + v2 * v2) ** 0.5
        f = np.exp(-IG_DECAY * norm) / (norm + IG_EPS)
        work[ig_at + 3 * b] = v0 * f
        work[ig_at + 3 * b + 1] = v1 * f
        work[ig_at + 3 * b + 2] = v2 * f
    extra_n = 6 * nk
    for blk in range(k_blocks):
        ref = refs[blk]
        o = lay[9, 0]
        e0 = blk_extra + blk * extra_n
        for q in range(3 * nk):
            work[e0 + q] = ref[o + q]
        for j in range(nk):
            b = key[j]
            for i in range(3):
                work[e0 + 3 * nk + 3 * j + i] = ref[o + 3 * nk + 3 * j + i] - work[ig_at + 3 * b + i]
    work[tail] = pos[0, 2]
    for q in range(nc):
        work[tail + 1 + q] = 1.0 if contact_b[cidx[q]] else 0.0
    for blk in range(k_blocks):
        ref = refs[blk]
        o = lay[10, 0]
        for q in range(nc):
            label = ref[o + q]
            work[tail + 1 + nc + blk * nc + q] = label * ((label + 1.0) * 0.5 - work[tail + 1 + q])
    for q in range(index.shape[0]):
        out[q] = work[index[q]]


# the observation kernel under a public name (and its form for a caller that wrote the simulated
# interaction-graph rows itself): the environment's fused CPU step calls it per world
observation_kernel = _build
observation_kernel_given_ig = _build_given_ig


class CompiledObservation(NumpyObservation):
    """:class:`numpy_obs.NumpyObservation` as one compiled pass (same layout, same values)."""

    _ORDER = ("key_pos", "rot_nh", "omat", "tan", "key_lin", "ang_nh", "opos", "olin", "oang", "extra", "label")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        nk, nr, nc = self.key.size, self.no_hand.size, self.contact.size
        layout = _ref_layout(nk, nr, nc)
        self._lay = np.array([layout[name] for name in self._ORDER], dtype=np.int64)
        self._ref_len = int(self._lay[-1, 1])
        sa, ba = self._sim.at, self._blk.at
        self._sim_at = np.array([sa[n].start for n in ("local_body_pos", "local_body_rot", "local_body_vel",
                                                       "local_body_ang_vel", "object_vel", "object_ang_vel", "ig")]
                                + [self._sim.size], dtype=np.int64)
        self._blk_at = np.array([ba[n].start for n in ("key_pos_error", "body_rot_error", "object_rot_error",
                                                       "ref_local_body_rot", "key_vel_error", "body_ang_vel_error",
                                                       "object_pos_error", "object_vel_error",
                                                       "object_ang_vel_error")], dtype=np.int64)
        self._refs = np.zeros((self.k, self._ref_len))
        self._index64 = self._index.astype(np.int64)
        self._key64, self._nh64, self._c64 = (a.astype(np.int64) for a in (self.key, self.no_hand, self.contact))
        self._pack_key = ("compiled", self._cache_key)
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile (or load the cached machine code) now, not in the first control tick."""
        s = WorldState.empty(self.nb)
        cloud = ObjectCloud(np.zeros((1, 3)))
        _build(s.body_pos, s.body_mat, s.body_lin_vel, s.body_ang_vel, s.body_contact, s.object_pos, s.object_mat,
               s.object_lin_vel, s.object_ang_vel, cloud.points, cloud.distance_table, self._refs, self._key64,
               self._nh64, self._c64, self._lay, self._sim_at, self._blk_at, self._blk.size, self._ig_at,
               self._blk_extra, self._tail, self._x, self.work, self._index64, self.out)

    def prepare_reference(self, r: RefSample) -> None:
        self.packed(r)

    def packed(self, r: RefSample) -> np.ndarray:
        """The reference-only values of frame ``r`` as one row (cached on the frame)."""
        hit = r.cache.get(self._pack_key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        extra, tan, label, _ = self.reference_terms(r)
        parts = {"key_pos": r.body_pos[self.key], "rot_nh": r.body_mat[self.no_hand], "omat": r.object_mat,
                 "tan": tan, "key_lin": r.body_lin_vel[self.key], "ang_nh": r.body_ang_vel[self.no_hand],
                 "opos": r.object_pos, "olin": r.object_lin_vel, "oang": r.object_ang_vel, "extra": extra,
                 "label": label}
        row = np.concatenate([np.asarray(parts[n], np.float64).ravel() for n in self._ORDER])
        r.cache[self._pack_key] = row
        return row

    def build(self, state: WorldState, refs: Sequence[RefSample], cloud: ObjectCloud,
              ig_sim: np.ndarray | None = None) -> np.ndarray:
        if ig_sim is not None or len(refs) != self.k:
            return super().build(state, refs, cloud, ig_sim)  # (the checks and the given-ig form)
        packed = self._refs
        for i, r in enumerate(refs):
            packed[i] = self.packed(r)
        s = state
        _build(s.body_pos, s.body_mat, s.body_lin_vel, s.body_ang_vel, s.body_contact, s.object_pos, s.object_mat,
               s.object_lin_vel, s.object_ang_vel, cloud.points, cloud.distance_table, packed, self._key64, self._nh64,
               self._c64, self._lay, self._sim_at, self._blk_at, self._blk.size, self._ig_at, self._blk_extra,
               self._tail, self._x, self.work, self._index64, self.out)
        return self.out


# -- the policy output -> hinge-angle targets -----------------------------------------------------------
@_jit
def _hinge_targets(actions: np.ndarray, offset: np.ndarray, scale: np.ndarray, clip: np.float32,
                   out: np.ndarray) -> None:  # pragma: no cover
    """``numpy_obs.hinge_angles_from_rotvec(offset + scale * clip(actions))``: the rotation vector in
    float32 as the numpy path forms it, then Rodrigues' five entries and the x->y->z angles."""
    for j in range(actions.shape[0] // 3):
        r = np.empty(3)
        for i in range(3):
            a = actions[3 * j + i]
            if a < -clip:
                a = -clip
            elif a > clip:
                a = clip
            r[i] = np.float32(offset[3 * j + i] + np.float32(scale[3 * j + i] * a))
        x, y, z = r[0], r[1], r[2]
        t2 = x * x + y * y + z * z
        t = np.sqrt(t2)
        if t < 1e-6:
            s, c2 = 1.0 - t2 / 6.0, 0.5 - t2 / 24.0
        else:
            half = np.sin(0.5 * t) / t
            s, c2 = np.sin(t) / t, 2.0 * half * half
        m02 = s * y + c2 * x * z
        m12 = c2 * y * z - s * x
        m22 = 1.0 + c2 * (z * z - t2)
        m01 = c2 * x * y - s * z
        m00 = 1.0 + c2 * (x * x - t2)
        out[3 * j] = np.arctan2(-m12, m22)
        out[3 * j + 1] = np.arcsin(min(1.0, max(-1.0, m02)))
        out[3 * j + 2] = np.arctan2(-m01, m00)


# the action map kernel under a public name (one row): the environment's fused CPU step calls it per world
hinge_targets_kernel = _hinge_targets


class CompiledTargets:
    """The policy output [1, 153] -> hinge-angle targets [153] (float64) as one compiled pass."""

    def __init__(self, offset: np.ndarray, scale: np.ndarray, clip: float) -> None:
        self.offset = np.ascontiguousarray(offset, dtype=np.float32)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.clip = np.float32(clip)
        self(np.zeros((1, self.offset.size), np.float32))  # compile now, not in the first tick

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        out = np.empty(self.offset.size)  # a new array: the caller keeps it as the last command
        _hinge_targets(np.ascontiguousarray(actions[0], dtype=np.float32), self.offset, self.scale, self.clip, out)
        return out
