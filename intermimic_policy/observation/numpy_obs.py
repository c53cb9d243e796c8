"""One world's observation in numpy: the deployment path (no torch, no MuJoCo, no allocation storm).

Why a second implementation: the torch builder (:mod:`.builder`, :mod:`.fused`) is batched for
thousands of worlds; for ONE world each torch op costs microseconds of dispatch whatever its
size, and a deployment machine should not need torch at all. This module computes exactly the
terms of ``spec.HOI_BLOCK_TERMS`` (same names, sizes, order and formulas as ``terms.py``) for one
world in float64 numpy, with rotation matrices instead of quaternion chains, and writes them into a
preallocated output. Tests compare it with the training builder on real OMOMO clips.

Pieces (all one world, float64, xyzw quaternions, world frame z-up):

* quaternion helpers and the hinge-angle joint map (``joint_map``'s formulas);
* :class:`Kinematics`: forward kinematics and body velocities of a skeleton from root pose/twist
  and hinge angles/rates (what MuJoCo's ``mj_kinematics``/``mj_comVel`` give for the same model);
* :func:`reference_frame`: a reference frame with velocities by finite differences of its
  neighbours (``HOIMotion``'s formulas) and its interaction-graph vectors;
* :class:`NumpyObservation`: the observation of a spec from a :class:`WorldState` and one
  :class:`RefSample` per reference offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_DOFS, NUM_JOINTS, PARENTS
from intermimic_policy.observation.spec import ObservationSpec, ObservationSpecError

# the interaction-graph feature f(v) = v / (|v| + eps) exp(-decay |v|) (``sim.interaction_graph``)
IG_EPS = 1e-6
IG_DECAY = 5.0

# terms this module computes: every term of the canonical block
NUMPY_TERMS: frozenset[str] = frozenset({
    "root_height", "local_body_pos", "local_body_rot", "local_body_vel", "local_body_ang_vel",
    "body_contact", "object_vel", "object_ang_vel", "interaction_graph",
    "key_pos_error", "body_rot_error", "contact_error", "ref_local_key_pos", "ref_local_body_rot",
    "key_vel_error", "body_ang_vel_error", "object_pos_error", "object_rot_error", "object_vel_error",
    "object_ang_vel_error", "interaction_graph_error",
})


# -- quaternions (xyzw, Hamilton, active) ------------------------------------------------------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] of unit quaternions [..., 4] (``quaternion.to_matrix``)."""
    x, y, z, w = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    m = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                  2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                  2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1)
    return m.reshape(*m.shape[:-1], 3, 3)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Logarithm map with the angle in [0, pi] (``quaternion.to_rotvec``)."""
    q = np.where(q[..., 3:4] < 0, -q, q)
    xyz, w = q[..., :3], q[..., 3:4]
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    scale = np.where(s < 1e-6, 2.0 / np.maximum(w, 1e-9), angle / np.maximum(s, 1e-12))
    return xyz * scale


def quat_from_rotvec(r: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * angle
    scale = np.where(angle < 1e-6, 0.5 - angle * angle / 48.0, np.sin(half) / np.maximum(angle, 1e-12))
    return np.concatenate([r * scale, np.cos(half)], axis=-1)


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (xyzw, w >= 0) of rotation matrices [..., 3, 3]."""
    m = np.asarray(m, dtype=np.float64)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cand = np.stack([
        np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + tr], -1),
        np.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
        np.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                  m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
    ], axis=-2)  # [..., 4, 4]: the four classic forms, each proportional to q
    best = np.argmax(np.linalg.norm(cand, axis=-1), axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


# -- the hinge-angle joint map (``embodiment.joint_map``) -----------------------------------------------
def euler_xyz_matrices(angles: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """R = Rx(a) Ry(b) Rz(c) [J, 3, 3] of intrinsic x->y->z angles [J, 3] (into ``out`` if given)."""
    c, s = np.cos(angles), np.sin(angles)
    ca, cb, cc = c[:, 0], c[:, 1], c[:, 2]
    sa, sb, sc = s[:, 0], s[:, 1], s[:, 2]
    m = np.empty((angles.shape[0], 3, 3)) if out is None else out
    sa_sb, ca_sb = sa * sb, ca * sb
    m[:, 0, 0] = cb * cc
    m[:, 0, 1] = -cb * sc
    m[:, 0, 2] = sb
    m[:, 1, 0] = ca * sc + sa_sb * cc
    m[:, 1, 1] = ca * cc - sa_sb * sc
    m[:, 1, 2] = -sa * cb
    m[:, 2, 0] = sa * sc - ca_sb * cc
    m[:, 2, 1] = sa * cc + ca_sb * sc
    m[:, 2, 2] = ca * cb
    return m


def quat_matrix_one(q: np.ndarray) -> np.ndarray:
    """The 3x3 matrix of ONE quaternion (scalar arithmetic: ~10x faster than the batched form)."""
    x, y, z, w = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of [M, 3] arrays (``np.cross`` costs ~10x more for small M)."""
    a0, a1, a2 = a[:, 0], a[:, 1], a[:, 2]
    b0, b1, b2 = b[:, 0], b[:, 1], b[:, 2]
    out = np.empty_like(a)
    out[:, 0] = a1 * b2 - a2 * b1
    out[:, 1] = a2 * b0 - a0 * b2
    out[:, 2] = a0 * b1 - a1 * b0
    return out


def hinge_angles_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Joint rotation vectors [..., 51, 3] -> hinge angles [..., 153] (``joint_map.hinge_angles_from_rotvec``).

    Only the five matrix entries the x->y->z angles read are formed, by Rodrigues' formula
    R = I + s [r]x + c2 [r]x^2 with s = sin(t)/t and c2 = (1 - cos t)/t^2 = 2 sin^2(t/2)/t^2 (no
    cancellation at small angles): the same rotation as the quaternion route, a fifth of the work.
    """
    r = np.asarray(rotvec, dtype=np.float64)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    t2 = x * x + y * y + z * z
    t = np.sqrt(t2)
    small = t < 1e-6
    safe = np.where(small, 1.0, t)
    half = np.sin(0.5 * safe) / safe
    s = np.where(small, 1.0 - t2 / 6.0, np.sin(safe) / safe)
    c2 = np.where(small, 0.5 - t2 / 24.0, 2.0 * half * half)
    m02 = s * y + c2 * x * z
    m12 = c2 * y * z - s * x
    m22 = 1.0 + c2 * (z * z - t2)
    m01 = c2 * x * y - s * z
    m00 = 1.0 + c2 * (x * x - t2)
    out = np.empty(r.shape)
    np.arctan2(-m12, m22, out=out[..., 0])
    np.arcsin(np.clip(m02, -1.0, 1.0), out=out[..., 1])
    np.arctan2(-m01, m00, out=out[..., 2])
    return out.reshape(*r.shape[:-2], NUM_DOFS)


def angular_velocity_from_hinge_rates(angles: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Child-frame angular velocity [51, 3] of each joint (``joint_map``'s formula)."""
    e = angles.reshape(NUM_JOINTS, 3)
    r = rates.reshape(NUM_JOINTS, 3)
    sb, cb, sc, cc = np.sin(e[:, 1]), np.cos(e[:, 1]), np.sin(e[:, 2]), np.cos(e[:, 2])
    da, db = r[:, 0], r[:, 1]
    da_cb = da * cb
    out = np.empty((NUM_JOINTS, 3))
    out[:, 0] = da_cb * cc + db * sc
    out[:, 1] = db * cc - da_cb * sc
    out[:, 2] = da * sb + r[:, 2]
    return out


# -- kinematics ---------------------------------------------------------------------------------------
def _ancestor_tables() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(pointer-jumping rounds, path matrix A [52, 51]).

    Round r maps each body to its 2^r-th ancestor (the root's parent is a sentinel index 52 that
    maps to itself); A[b, c - 1] = 1 when body c >= 1 lies on the path from the root to b.
    """
    anc = np.array([NUM_BODIES, *PARENTS[1:], NUM_BODIES], dtype=np.intp)
    rounds = []
    while np.any(anc[:NUM_BODIES] != NUM_BODIES):
        rounds.append(anc.copy())
        anc = anc[anc]
    path = np.zeros((NUM_BODIES, NUM_JOINTS))
    for b in range(1, NUM_BODIES):
        c = b
        while c != 0:
            path[b, c - 1] = 1.0
            c = PARENTS[c]
    return tuple(rounds), path


_ROUNDS, _PATH = _ancestor_tables()


@dataclass
class WorldState:
    """One world's simulated state as the observation reads it (float64 arrays, reused per tick)."""

    body_pos: np.ndarray  # [52, 3]
    body_mat: np.ndarray  # [52, 3, 3] world rotation matrices
    body_lin_vel: np.ndarray  # [52, 3] linear velocity of each body origin
    body_ang_vel: np.ndarray  # [52, 3] world angular velocity
    body_contact: np.ndarray  # [52] bool
    object_pos: np.ndarray  # [3]
    object_mat: np.ndarray  # [3, 3]
    object_lin_vel: np.ndarray  # [3]
    object_ang_vel: np.ndarray  # [3]

    @classmethod
    def empty(cls, num_bodies: int = NUM_BODIES) -> WorldState:
        """Zeros for a body of ``num_bodies`` bodies (default: the SMPL-X humanoid's)."""
        z, nb = np.zeros, num_bodies
        return cls(z((nb, 3)), np.tile(np.eye(3), (nb, 1, 1)), z((nb, 3)), z((nb, 3)), z(nb, bool), z(3), np.eye(3),
                   z(3), z(3))


class Kinematics:
    """Body poses and velocities of a skeleton (bone offsets [52, 3]) from the robot state.

    Poses: 4x4 transforms body -> parent, composed by pointer jumping (each round composes every
    body with its 2^r-th ancestor: 4 batched matmuls for the 11-level tree instead of a Python
    loop over levels). Velocities: w_b = w_root + sum over the path of R_c w_c (w_c the joint's
    child-frame rate) and, the body origin moving with its parent, v_b = v_root + sum over the
    path of w_parent(c) x (p_c - p_parent(c)): one matmul each with the path matrix.
    Equal to MuJoCo's ``mj_kinematics``/``mj_comVel`` for the generated model (tests).
    """

    def __init__(self, offsets: np.ndarray) -> None:
        off = np.asarray(offsets, dtype=np.float64)
        if off.shape != (NUM_BODIES, 3):
            raise ValueError(f"skeleton offsets have shape {off.shape}, expected ({NUM_BODIES}, 3)")
        self.offsets = off
        self._t = np.tile(np.eye(4), (NUM_BODIES + 1, 1, 1))  # + the sentinel (identity)
        self._t[1:NUM_BODIES, :3, 3] = off[1:]
        self._t2 = self._t.copy()
        self._parents = np.asarray(PARENTS[1:], dtype=np.intp)
        self._local = np.empty((NUM_JOINTS, 3, 3))

    def compute(self, out: WorldState, root_pos: np.ndarray, root_rot: np.ndarray, root_lin_vel: np.ndarray,
                root_ang_vel: np.ndarray, angles: np.ndarray, rates: np.ndarray) -> None:
        """Fill ``out``'s body fields; root velocities in the world frame, hinge data [153]."""
        t, t2 = self._t, self._t2
        t[1:NUM_BODIES, :3, :3] = euler_xyz_matrices(angles.reshape(NUM_JOINTS, 3), self._local)
        t[1:NUM_BODIES, :3, 3] = self.offsets[1:]  # (the buffers hold last call's world poses)
        t[0, :3, :3] = quat_matrix_one(root_rot)
        t[0, :3, 3] = root_pos
        for anc in _ROUNDS:
            np.matmul(t[anc], t, out=t2)
            t, t2 = t2, t
        out.body_mat[:] = t[:NUM_BODIES, :3, :3]
        pos = out.body_pos
        pos[:] = t[:NUM_BODIES, :3, 3]
        omega = angular_velocity_from_hinge_rates(angles, rates)
        wj = np.matmul(out.body_mat[1:], omega[:, :, None])[:, :, 0]
        ang = out.body_ang_vel
        np.matmul(_PATH, wj, out=ang)
        ang += root_ang_vel
        p = self._parents
        lin = out.body_lin_vel
        np.matmul(_PATH, cross_rows(ang[p], pos[1:] - pos[p]), out=lin)
        lin += root_lin_vel


# -- interaction graph ----------------------------------------------------------------------------------
def ig_feature(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / (norm + IG_EPS) * np.exp(-IG_DECAY * norm)


def nearest_point_vectors(body_pos: np.ndarray, points_world: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """body - its nearest surface point [B, 3]; distances taken relative to ``centre`` (the object),
    as ``sim.interaction_graph.nearest_point_vectors`` does."""
    a = body_pos - centre
    b = points_world - centre
    d = (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return body_pos - points_world[np.argmin(d, axis=-1)]


class ObjectCloud:
    """An object's surface points [P, 3] (object frame) with what every nearest-point query reuses.

    A query is ONE matmul of the points [B, 4] = (x, y, z, 1) with the precomputed [4, P] table
    (-2 p, |p|^2), i.e. |p|^2 - 2 x.p (|x - p|^2 less the per-row constant |x|^2), into a reused
    buffer, and one argmin: no [B, P] temporaries per tick.
    """

    def __init__(self, points: np.ndarray) -> None:
        p = np.ascontiguousarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
            raise ValueError(f"object points must be [P, 3], got {list(p.shape)}")
        self.points = p
        self._table = np.ascontiguousarray(np.vstack([-2.0 * p.T, (p * p).sum(-1)[None]]))
        self._rows = 0
        self._resize(NUM_BODIES)

    def _resize(self, rows: int) -> None:
        self._rows = rows
        self._query = np.ones((rows, 4))
        self._dist = np.empty((rows, self.points.shape[0]))
        self._nearest = np.empty(rows, dtype=np.intp)

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def distance_table(self) -> np.ndarray:
        """The [4, P] table (-2 p, |p|^2) of a query (read-only use)."""
        return self._table

    def nearest_local(self, local: np.ndarray) -> np.ndarray:
        """Object-frame vectors from each point's nearest surface point to it, [B, 3]."""
        if local.shape[0] != self._rows:
            self._resize(local.shape[0])
        self._query[:, :3] = local
        np.matmul(self._query, self._table, out=self._dist)
        np.argmin(self._dist, axis=1, out=self._nearest)
        return local - self.points[self._nearest]


def simulated_ig(state: WorldState, cloud: ObjectCloud) -> np.ndarray:
    """The simulated interaction-graph vectors [52, 3] (world frame): body minus its nearest object
    point, found in the object frame (the distances are the same; |p|^2 is precomputed)."""
    r = state.object_mat
    local = (state.body_pos - state.object_pos) @ r
    return cloud.nearest_local(local) @ r.T


# -- reference frames -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RefSample:
    """One reference frame as the observation reads it (float64; velocities already derived)."""

    body_pos: np.ndarray  # [52, 3]
    body_mat: np.ndarray  # [52, 3, 3]
    body_lin_vel: np.ndarray
    body_ang_vel: np.ndarray
    object_pos: np.ndarray  # [3]
    object_mat: np.ndarray  # [3, 3]
    object_lin_vel: np.ndarray
    object_ang_vel: np.ndarray
    body_contact: np.ndarray  # [52] float labels in {-1, 0, 1}
    ig: np.ndarray  # [52, 3] reference body minus nearest object point (world frame)
    cache: dict = field(default_factory=dict)  # reference-only terms, per observation spec


def _central(values: np.ndarray, k: int, fps: float) -> np.ndarray:
    """``torch.gradient`` along axis 0 at index k (one-sided at the ends) of a short sequence."""
    n = values.shape[0]
    if n < 2:
        return np.zeros_like(values[0])
    if k == 0:
        return (values[1] - values[0]) * fps
    if k == n - 1:
        return (values[-1] - values[-2]) * fps
    return (values[k + 1] - values[k - 1]) * (0.5 * fps)


def _angular(rots: np.ndarray, k: int, fps: float) -> np.ndarray:
    """``quaternion.finite_difference_angular_velocity`` (world frame) at index k."""
    n = rots.shape[0]
    if n < 2:
        return np.zeros(rots.shape[1:-1] + (3,))
    nxt, prv = rots[min(k + 1, n - 1)], rots[max(k - 1, 0)]
    steps = 1.0 if k in (0, n - 1) else 2.0
    return quat_to_rotvec(quat_multiply(nxt, quat_conjugate(prv))) * (fps / steps)


def reference_frame(body_pos: np.ndarray, body_rot: np.ndarray, object_pos: np.ndarray, object_rot: np.ndarray,
                    body_contact: np.ndarray, k: int, fps: float, points: np.ndarray) -> RefSample:
    """Frame ``k`` of the short sequences [T, ...] (its neighbours, as ``HOIMotion`` differences
    them: central inside, one-sided at the clip ends), quaternions xyzw; ``points`` [P, 3] the
    object-frame surface points. Values are rounded through float32 as the training table is."""
    f32 = np.float32

    def r32(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, f32).astype(np.float64)

    bp, br = r32(body_pos), r32(body_rot)
    op, orot = r32(object_pos), r32(object_rot)
    lin = r32(_central(bp, k, fps))
    ang = r32(_angular(br, k, fps))
    olin = r32(_central(op, k, fps))
    oang = r32(_angular(orot, k, fps))
    omat = quat_to_matrix(orot[k])
    world = r32(points) @ omat.T + op[k]
    ig = r32(nearest_point_vectors(bp[k], world, op[k]))
    return RefSample(body_pos=bp[k], body_mat=quat_to_matrix(br[k]), body_lin_vel=lin, body_ang_vel=ang,
                     object_pos=op[k], object_mat=omat, object_lin_vel=olin, object_ang_vel=oang,
                     body_contact=np.asarray(body_contact, np.float64), ig=ig)


# -- the observation --------------------------------------------------------------------------------------
def heading_matrix(m: np.ndarray) -> np.ndarray:
    """World -> heading frame of a rotation matrix (yaw of its forward axis; identity if vertical)."""
    fx, fy = float(m[0, 0]), float(m[1, 0])
    n = (fx * fx + fy * fy) ** 0.5
    c, s = (1.0, 0.0) if n < 1e-12 else (fx / n, fy / n)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _tan_rows(m: np.ndarray) -> np.ndarray:
    """The tan-norm vectors (R e_x, R e_z) of matrices [..., 3, 3] as rows [..., 2, 3]."""
    return np.swapaxes(m[..., :, ::2], -1, -2)


class _Rows:
    """Named row ranges of a [rows, 3] workspace, laid out in the order they are added."""

    def __init__(self) -> None:
        self.size = 0
        self.at: dict[str, slice] = {}

    def add(self, name: str, rows: int) -> None:
        self.at[name] = slice(self.size, self.size + rows)
        self.size += rows


class NumpyObservation:
    """The flat observation of ``spec`` for one world (float32 [spec.dim], a reused buffer).

    Layout of the work (the ``fused`` scheme for one world): every vector a term expresses in the
    simulated heading frame h goes into ONE [rows, 3] array (sim-only rows once, each block's
    reference/difference rows after them) and is rotated by ONE matmul; reference-only quantities
    (in the reference heading frame) are computed once per reference frame and cached on it; the
    scalars go to a small tail. A precomputed index then gathers the spec's layout from that
    workspace in one ``np.take``. Construction checks the spec's terms and sizes
    (``ObservationSpecError``).
    """

    def __init__(self, spec: ObservationSpec) -> None:
        self.spec = spec
        unknown = [t.name for t in spec.terms if t.name not in NUMPY_TERMS]
        if unknown:
            raise ObservationSpecError(f"the numpy observation path has no terms {unknown}")
        self.key = np.asarray(spec.key_bodies, dtype=np.intp)
        self.contact = np.asarray(spec.contact_bodies, dtype=np.intp)
        self.no_hand = np.asarray(spec.no_hand_bodies, dtype=np.intp)
        for name, ids in (("key_bodies", self.key), ("contact_bodies", self.contact), ("no_hand_bodies", self.no_hand)):
            if ids.size == 0 or ids.min() < 0 or ids.max() >= spec.num_bodies:
                raise ObservationSpecError(f"observation spec {name} must be body ids in [0, {spec.num_bodies})")
        self.nb = spec.num_bodies  # the embodiment's body count (the SMPL-X humanoid: 52)
        nb, nk, nc, nr, k = self.nb, self.key.size, self.contact.size, self.no_hand.size, spec.num_tokens
        self.k = k
        sim = _Rows()  # rotated by h, shared by the blocks
        for name, rows in (("local_body_pos", nb - 1), ("local_body_rot", 2 * nb), ("local_body_vel", nb),
                           ("local_body_ang_vel", nb), ("object_vel", 1), ("object_ang_vel", 1), ("ig", nb)):
            sim.add(name, rows)
        blk = _Rows()  # rotated by h, one set per block
        for name, rows in (("key_pos_error", nk), ("body_rot_error", 2 * nr), ("object_rot_error", 2),
                           ("ref_local_body_rot", 2 * nr), ("key_vel_error", nk), ("body_ang_vel_error", nr),
                           ("object_pos_error", 1), ("object_vel_error", 1), ("object_ang_vel_error", 1)):
            blk.add(name, rows)
        self._sim, self._blk = sim, blk
        rows = sim.size + k * blk.size
        # flat workspace: rotated rows | f(ig_sim) | per block: ref_local_key_pos, ig error | root
        # height | sim contacts | per block: contact error
        n_vec = 3 * rows
        self._ig_at = n_vec
        self._blk_extra = n_vec + 3 * nb
        extra = 6 * nk
        self._tail = self._blk_extra + k * extra
        total = self._tail + 1 + nc + k * nc
        self.work = np.zeros(total)
        self._x = np.zeros((rows, 3))  # unrotated vectors
        self._y = self.work[:n_vec].reshape(rows, 3)  # rotated (a view of the workspace)
        self._igf = self.work[self._ig_at:self._ig_at + 3 * nb].reshape(nb, 3)
        self._extra = self.work[self._blk_extra:self._tail].reshape(k, extra)
        self._contact_sim = self.work[self._tail + 1:self._tail + 1 + nc]
        self._contact_err = self.work[self._tail + 1 + nc:].reshape(k, nc)

        def vec(start_row: int, sl: slice) -> np.ndarray:
            return np.arange(3 * (start_row + sl.start), 3 * (start_row + sl.stop))

        sizes: dict[str, int] = {}
        index: list[np.ndarray] = []
        for i in range(k):
            b0 = sim.size + i * blk.size
            e0 = self._blk_extra + i * extra
            where = {
                "root_height": np.array([self._tail]),
                "local_body_pos": vec(0, sim.at["local_body_pos"]),
                "local_body_rot": vec(0, sim.at["local_body_rot"]),
                "local_body_vel": vec(0, sim.at["local_body_vel"]),
                "local_body_ang_vel": vec(0, sim.at["local_body_ang_vel"]),
                "body_contact": self._tail + 1 + np.arange(nc),
                "object_vel": vec(0, sim.at["object_vel"]),
                "object_ang_vel": vec(0, sim.at["object_ang_vel"]),
                "interaction_graph": self._ig_at + np.arange(3 * nb),
                "contact_error": self._tail + 1 + nc + i * nc + np.arange(nc),
                "ref_local_key_pos": e0 + np.arange(3 * nk),
                "interaction_graph_error": e0 + 3 * nk + np.arange(3 * nk),
            }
            for name, sl in blk.at.items():
                where[name] = vec(b0, sl)
            for t in spec.terms:
                sizes[t.name] = where[t.name].size
                index.append(where[t.name])
        wrong = [f"{t.name}: spec says {t.dim}, numpy path gives {sizes[t.name]}"
                 for t in spec.terms if sizes[t.name] != t.dim]
        if wrong:
            raise ObservationSpecError("observation spec term dims do not match: " + "; ".join(wrong))
        self._index = np.concatenate(index)
        self._gathered = np.zeros(spec.dim)
        self.out = np.zeros(spec.dim, dtype=np.float32)
        self._cache_key = spec.digest()

    @property
    def dim(self) -> int:
        return self.spec.dim

    def prepare_reference(self, r: RefSample) -> None:
        """Do (and cache on the frame) the work of ``r`` that needs no state: off the tick's path."""
        self.reference_terms(r)

    def reference_terms(self, r: RefSample) -> np.ndarray:
        """What a block reads from the reference alone (in the reference heading frame), cached on
        the frame: [ref_local_key_pos (3 nk), f(ig_ref key) (3 nk)], then the tan rows of the
        error bodies [2 nr, 3] and the contact labels of the contact bodies."""
        hit = r.cache.get(self._cache_key)
        if hit is not None:
            return hit
        k = self.key
        hr_t = heading_matrix(r.body_mat[0]).T
        extra = np.concatenate([((r.body_pos[k] - r.body_pos[0]) @ hr_t).ravel(),
                                ig_feature(r.ig[k] @ hr_t).ravel()])
        tan = _tan_rows(r.body_mat[self.no_hand]).reshape(-1, 3)
        label = r.body_contact[self.contact]
        r.cache[self._cache_key] = (extra, tan, label, ig_feature(r.ig[k] @ hr_t))
        return r.cache[self._cache_key]

    def build(self, state: WorldState, refs: Sequence[RefSample], cloud: ObjectCloud,
              ig_sim: np.ndarray | None = None) -> np.ndarray:
        """The observation [spec.dim] (float32, the same buffer every call: copy to keep it).

        ``refs[i]`` is the reference at t + ``spec.ref_offsets[i]``; ``cloud`` the object's surface
        points (unused when ``ig_sim`` is given).
        """
        if len(refs) != self.k:
            raise ObservationSpecError(f"observation needs {self.k} reference frames "
                                       f"(offsets {list(self.spec.ref_offsets)}), got {len(refs)}")
        s = state
        if ig_sim is None:
            ig_sim = simulated_ig(s, cloud)
        h = heading_matrix(s.body_mat[0])
        x, sa, ba = self._x, self._sim.at, self._blk.at
        nb, key, nh = self.nb, self.key, self.no_hand
        pos, mat, lin, ang = s.body_pos, s.body_mat, s.body_lin_vel, s.body_ang_vel
        np.subtract(pos[1:], pos[0], out=x[sa["local_body_pos"]])
        x[sa["local_body_rot"]].reshape(nb, 2, 3)[:] = _tan_rows(mat)
        x[sa["local_body_vel"]] = lin
        x[sa["local_body_ang_vel"]] = ang
        x[sa["object_vel"]] = s.object_lin_vel
        x[sa["object_ang_vel"]] = s.object_ang_vel
        x[sa["ig"]] = ig_sim
        # error rotations h R_ref R^T h^T e: vectors R_ref (R^T h^T e) for e = e_x, e_z, rotated by h
        g = np.swapaxes(mat[nh], -1, -2) @ h[::2].T  # [nr, 3, 2]
        go = s.object_mat.T @ h[::2].T  # [3, 2]
        pk, lk, an = pos[key], lin[key], ang[nh]
        base, size = self._sim.size, self._blk.size
        for i, r in enumerate(refs):
            extra, tan, label, _ = self.reference_terms(r)
            xb = x[base + i * size: base + (i + 1) * size]
            np.subtract(r.body_pos[key], pk, out=xb[ba["key_pos_error"]])
            xb[ba["body_rot_error"]] = np.swapaxes(r.body_mat[nh] @ g, -1, -2).reshape(-1, 3)
            xb[ba["object_rot_error"]] = (r.object_mat @ go).T
            xb[ba["ref_local_body_rot"]] = tan
            np.subtract(r.body_lin_vel[key], lk, out=xb[ba["key_vel_error"]])
            np.subtract(r.body_ang_vel[nh], an, out=xb[ba["body_ang_vel_error"]])
            xb[ba["object_pos_error"]] = r.object_pos - s.object_pos
            xb[ba["object_vel_error"]] = r.object_lin_vel - s.object_lin_vel
            xb[ba["object_ang_vel_error"]] = r.object_ang_vel - s.object_ang_vel
            self._contact_err[i] = label
        np.matmul(x, h.T, out=self._y)
        self._igf[:] = ig_feature(self._y[sa["ig"]])
        sim_key = self._igf[key].ravel()
        nk3 = 3 * key.size
        for i, r in enumerate(refs):
            extra = self.reference_terms(r)[0]
            row = self._extra[i]
            row[:nk3] = extra[:nk3]
            np.subtract(extra[nk3:], sim_key, out=row[nk3:])
        self.work[self._tail] = pos[0, 2]
        contact = self._contact_sim
        contact[:] = s.body_contact[self.contact]
        # c_ref ((c_ref + 1) / 2 - c), the labels already in place
        self._contact_err *= (self._contact_err + 1.0) * 0.5 - contact
        np.take(self.work, self._index, out=self._gathered)
        self.out[:] = self._gathered
        return self.out
