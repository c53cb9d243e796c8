"""Compiled (numba) kernels of the fused CPU step: one loop over worlds for all the per-world work
after the physics (state extraction, reward factors, terminations, E_h/E_o, hand counters and the
observation).

Why: at a few worlds the torch step is ~700 small tensor ops, whose dispatch costs milliseconds
whatever the tensor size. Here each world is a few loops over its own numbers. The torch terms
(``sim.rewards``, ``sim.terminations``, ``sim.metrics``, ``state.interaction_graph``,
``observation.terms``) stay the definition; every formula below names the function it mirrors,
and ``tests/test_env_fused_step.py`` checks the two paths equal on real clips.

Precision: simulator values are rounded to float32 where ``backends.base.extract_state`` rounds
them (so both paths read the same state); the arithmetic is float64 except the interaction-graph
pair sums, which are float32 as the torch path's; results are float32. The observation is
``observation.compiled_obs``'s kernel, fed here with each world's state and its reference frames
packed from the motion library's table. The constants are the torch terms' own (imported).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from intermimic_policy.observation.compiled_obs import (
    hinge_targets_kernel,
    in_object_frame,
    observation_kernel_given_ig,
    write_world_vector,
)
from intermimic_policy.sim.rewards import ENERGY_WARMUP_STEPS, LABEL_THRESHOLD, PROXIMITY_DECAY
from intermimic_policy.state.interaction_graph import IG_DECAY, IG_EPS


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True, nogil=True, fastmath=False)(fn)


def _jit_reorder(fn: Any) -> Any:
    """For the graph's sums: reordered (vectorised) they are ~4x faster, equal to rounding."""
    return numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(fn)


# rows of the reward-factor output, in ``compute_reward``'s term order
# rows of the reasons output, in the torch step's dict order
REASON_NAMES = ("nonfinite", "fall", "human_deviation", "object_deviation", "ig_deviation", "hand_contact_lost",
                "clip_end", "episode_cap", "physics_failure", "nonfinite_obs")
# the error rows of the reward, as ``rewards._ROWS`` (their weights come in this order)
ERROR_ROWS = ("p", "r", "pv", "rv", "eg1", "op", "or", "opv", "orv", "eg2", "eg2", "ig", "cg_hand", "cg_hand",
              "cg_other", "cg_all", "eg3")
# the reward factors (the torch terms' dict keys): each error row's name once, in order
TERM_NAMES = tuple(dict.fromkeys(ERROR_ROWS))


@_jit
def _r32(x: float) -> float:  # pragma: no cover - compiled
    return float(np.float32(x))


@_jit
def _quat_matrix(x: float, y: float, z: float, w: float, m: np.ndarray) -> None:  # pragma: no cover
    m[0, 0] = 1 - 2 * (y * y + z * z)
    m[0, 1] = 2 * (x * y - z * w)
    m[0, 2] = 2 * (x * z + y * w)
    m[1, 0] = 2 * (x * y + z * w)
    m[1, 1] = 1 - 2 * (x * x + z * z)
    m[1, 2] = 2 * (y * z - x * w)
    m[2, 0] = 2 * (x * z - y * w)
    m[2, 1] = 2 * (y * z + x * w)
    m[2, 2] = 1 - 2 * (x * x + y * y)


@_jit
def _angle_between(a: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover
    """``fast.angle_between``: 2 atan2(|xyz|, |w|) of conj(a) b, quaternions xyzw."""
    w = a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
    x = a[3] * b[0] - b[3] * a[0] - (a[1] * b[2] - a[2] * b[1])
    y = a[3] * b[1] - b[3] * a[1] - (a[2] * b[0] - a[0] * b[2])
    z = a[3] * b[2] - b[3] * a[2] - (a[0] * b[1] - a[1] * b[0])
    return 2.0 * np.arctan2(np.sqrt(x * x + y * y + z * z), abs(w))


@_jit
def _heading_cos_sin(q: np.ndarray) -> tuple[float, float]:  # pragma: no cover
    """``fast.heading_cos_sin``: the normalised xy of the quaternion's forward axis."""
    x, y, z, w = q[0], q[1], q[2], q[3]
    fx, fy = 1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + z * w)
    n = np.hypot(fx, fy)
    if n < 1e-12:
        return 1.0, 0.0
    return fx / n, fy / n


@_jit
def _extract_world(w: int, xpos: np.ndarray, xquat: np.ndarray, cvel: np.ndarray, com: np.ndarray,
                   qpos: np.ndarray, qvel: np.ndarray, sens: np.ndarray, body: np.ndarray, body_root: np.ndarray,
                   jq: np.ndarray, jv: np.ndarray, any_found: np.ndarray, obj_found: np.ndarray, obj_body: int,
                   obj_root: int, threshold: float, pos: np.ndarray, quat: np.ndarray, mat: np.ndarray,
                   lin: np.ndarray, ang: np.ndarray, jav: np.ndarray, any_c: np.ndarray, obj_c: np.ndarray,
                   force: np.ndarray, opos: np.ndarray, oquat: np.ndarray, omat: np.ndarray, olin: np.ndarray,
                   oang: np.ndarray) -> bool:  # pragma: no cover
    """World ``w``'s ``SimState`` rows as ``backends.base.extract_state`` forms them (float32-rounded
    values in float64 arrays); True when every pose and velocity is finite (``nonfinite_state``)."""
    finite = True
    for i in range(body.shape[0]):
        b = body[i]
        r = body_root[i]
        px, py, pz = xpos[w, b, 0], xpos[w, b, 1], xpos[w, b, 2]
        qw, qx, qy, qz = xquat[w, b, 0], xquat[w, b, 1], xquat[w, b, 2], xquat[w, b, 3]
        n = max(np.sqrt(qx * qx + qy * qy + qz * qz + qw * qw), 1e-9)
        quat[i, 0], quat[i, 1], quat[i, 2], quat[i, 3] = _r32(qx / n), _r32(qy / n), _r32(qz / n), _r32(qw / n)
        _quat_matrix(quat[i, 0], quat[i, 1], quat[i, 2], quat[i, 3], mat[i])
        ax, ay, az = cvel[w, b, 0], cvel[w, b, 1], cvel[w, b, 2]
        dx, dy, dz = px - com[w, r, 0], py - com[w, r, 1], pz - com[w, r, 2]
        lin[i, 0] = _r32(cvel[w, b, 3] + (ay * dz - az * dy))
        lin[i, 1] = _r32(cvel[w, b, 4] + (az * dx - ax * dz))
        lin[i, 2] = _r32(cvel[w, b, 5] + (ax * dy - ay * dx))
        ang[i, 0], ang[i, 1], ang[i, 2] = _r32(ax), _r32(ay), _r32(az)
        pos[i, 0], pos[i, 1], pos[i, 2] = _r32(px), _r32(py), _r32(pz)
        for k in range(3):
            if not (np.isfinite(pos[i, k]) and np.isfinite(lin[i, k]) and np.isfinite(ang[i, k])):
                finite = False
        for k in range(4):
            if not np.isfinite(quat[i, k]):
                finite = False
        a = any_found[i]
        hit = False
        for k in range(3):
            f = -sens[w, a + 1 + k]
            force[i, k] = _r32(f)
            if abs(f) > threshold:
                hit = True
        any_c[i] = sens[w, a] > 0 and hit
        o = obj_found[i]
        hit = False
        for k in range(3):
            if abs(sens[w, o + 1 + k]) > threshold:
                hit = True
        obj_c[i] = sens[w, o] > 0 and hit
    # joint angular velocity from hinge angles and rates (joint_map.angular_velocity_from_hinge_rates)
    for j in range(jav.shape[0]):
        b_, c_ = qpos[w, jq[3 * j + 1]], qpos[w, jq[3 * j + 2]]
        da, db, dc = qvel[w, jv[3 * j]], qvel[w, jv[3 * j + 1]], qvel[w, jv[3 * j + 2]]
        sb, cb, sc, cc = np.sin(b_), np.cos(b_), np.sin(c_), np.cos(c_)
        jav[j, 0] = _r32(da * cb * cc + db * sc)
        jav[j, 1] = _r32(-da * cb * sc + db * cc)
        jav[j, 2] = _r32(da * sb + dc)
    ob, orr = obj_body, obj_root
    px, py, pz = xpos[w, ob, 0], xpos[w, ob, 1], xpos[w, ob, 2]
    qw, qx, qy, qz = xquat[w, ob, 0], xquat[w, ob, 1], xquat[w, ob, 2], xquat[w, ob, 3]
    n = max(np.sqrt(qx * qx + qy * qy + qz * qz + qw * qw), 1e-9)
    oquat[0], oquat[1], oquat[2], oquat[3] = _r32(qx / n), _r32(qy / n), _r32(qz / n), _r32(qw / n)
    _quat_matrix(oquat[0], oquat[1], oquat[2], oquat[3], omat)
    ax, ay, az = cvel[w, ob, 0], cvel[w, ob, 1], cvel[w, ob, 2]
    dx, dy, dz = px - com[w, orr, 0], py - com[w, orr, 1], pz - com[w, orr, 2]
    olin[0] = _r32(cvel[w, ob, 3] + (ay * dz - az * dy))
    olin[1] = _r32(cvel[w, ob, 4] + (az * dx - ax * dz))
    olin[2] = _r32(cvel[w, ob, 5] + (ax * dy - ay * dx))
    oang[0], oang[1], oang[2] = _r32(ax), _r32(ay), _r32(az)
    opos[0], opos[1], opos[2] = _r32(px), _r32(py), _r32(pz)
    for k in range(3):
        if not (np.isfinite(opos[k]) and np.isfinite(olin[k]) and np.isfinite(oang[k])):
            finite = False
    for k in range(4):
        if not np.isfinite(oquat[k]):
            finite = False
    return finite


@_jit_reorder
def _sim_edges(ax: float, ay: float, az: float, kx: float, ky: float, kz: float, scratch: np.ndarray,
               edge: np.ndarray, dev: np.ndarray) -> tuple[float, float]:  # pragma: no cover
    """One key body's simulated edges |G|^2 and deviations |G - G_ref|^2 to every point (stored),
    and (sum dev w, sum w) with w = 1 / max(|G|^2, 0.01) (``interaction_graph._reward_error``);
    float32, one vectorised pass. ``a``: the key body, ``k``: its move, rows 0-2 / 6-8 of
    ``scratch``: the points and their moves."""
    lo, one = np.float32(0.01), np.float32(1.0)
    s, w = np.float32(0.0), np.float32(0.0)
    cx, cy, cz, dx, dy, dz = scratch[0], scratch[1], scratch[2], scratch[6], scratch[7], scratch[8]
    for p in range(cx.shape[0]):
        ex, ey, ez = ax - cx[p], ay - cy[p], az - cz[p]
        e = ex * ex + ey * ey + ez * ez
        gx, gy, gz = kx - dx[p], ky - dy[p], kz - dz[p]
        d = gx * gx + gy * gy + gz * gz
        edge[p] = e
        dev[p] = d
        a = one / (e if e > lo else lo)
        s += d * a
        w += a
    return float(s), float(w)


@_jit_reorder
def _ref_edges(bx: float, by: float, bz: float, scratch: np.ndarray, edge: np.ndarray, dev: np.ndarray,
               floor_sq: float, ratio_sq: float) -> tuple[float, float, float]:  # pragma: no cover
    """The same key body's reference edges |G_ref|^2 (rows 3-5 of ``scratch``): (sum dev w_ref,
    sum w_ref, how many edges moved more than ratio x max(min(|G|, |G_ref|), floor)); squared, no
    division, and a count, not a maximum, so it vectorises (``_deviation_ratio`` > ratio)."""
    lo, one, zero = np.float32(0.01), np.float32(1.0), np.float32(0.0)
    f, r2 = np.float32(floor_sq), np.float32(ratio_sq)
    s, w, count = zero, zero, zero
    rx, ry, rz = scratch[3], scratch[4], scratch[5]
    for p in range(rx.shape[0]):
        fx, fy, fz = bx - rx[p], by - ry[p], bz - rz[p]
        er = fx * fx + fy * fy + fz * fz
        b = one / (er if er > lo else lo)
        d = dev[p]
        s += d * b
        w += b
        e = edge[p]
        m = e if e < er else er
        m = m if m > f else f
        count += one if d > r2 * m else zero
    return float(s), float(w), float(count)


@_jit
def _graph(key_pos: np.ndarray, ref_key: np.ndarray, points: np.ndarray, q: np.ndarray, centre: np.ndarray,
           ref_q: np.ndarray, ref_centre: np.ndarray, floor: float, ratio: float,
           scratch: np.ndarray) -> tuple[float, bool, float]:  # pragma: no cover
    """(ig reward error, graph deviation, E_o) of one world: ``state.interaction_graph``'s
    ``ig_reward_error``, ``ig_deviation_ratio(...) > ratio`` and ``metrics.object_error``.

    ``points`` [P, 3] object frame, placed at (``q``, ``centre``) and (``ref_q``, ``ref_centre``)
    (``object_points_world``); edges are taken relative to each side's object position as the
    torch path does, in float32 as it does. ``scratch`` [11, P] float32.
    """
    npts = points.shape[0]
    f32 = np.float32
    m, r = np.empty((3, 3)), np.empty((3, 3))
    _quat_matrix(q[0], q[1], q[2], q[3], m)
    _quat_matrix(ref_q[0], ref_q[1], ref_q[2], ref_q[3], r)
    e_o = 0.0
    for p in range(npts):
        a, b, c = points[p, 0], points[p, 1], points[p, 2]
        d2 = 0.0
        for i in range(3):
            sim = m[i, 0] * a + m[i, 1] * b + m[i, 2] * c  # the point relative to the object
            ref = r[i, 0] * a + r[i, 1] * b + r[i, 2] * c
            d = (sim + centre[i]) - (ref + ref_centre[i])
            scratch[i, p], scratch[3 + i, p], scratch[6 + i, p] = f32(sim), f32(ref), f32(d)
            d2 += d * d
        e_o += np.sqrt(d2)
    edge, dev = scratch[9], scratch[10]
    s1 = w1 = s2 = w2 = 0.0
    over = 0.0
    for k in range(key_pos.shape[0]):
        a, b = _sim_edges(f32(key_pos[k, 0] - centre[0]), f32(key_pos[k, 1] - centre[1]),
                          f32(key_pos[k, 2] - centre[2]), f32(key_pos[k, 0] - ref_key[k, 0]),
                          f32(key_pos[k, 1] - ref_key[k, 1]), f32(key_pos[k, 2] - ref_key[k, 2]), scratch, edge, dev)
        s1 += a
        w1 += b
        a, b, c = _ref_edges(f32(ref_key[k, 0] - ref_centre[0]), f32(ref_key[k, 1] - ref_centre[1]),
                             f32(ref_key[k, 2] - ref_centre[2]), scratch, edge, dev, floor * floor, ratio * ratio)
        s2 += a
        w2 += b
        over += c
    return s1 / w1 + s2 / w2, over > 0.0, e_o / npts


def cloud_leaves(points: np.ndarray, leaf: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An object cloud [P, 3] cut into leaves of at most ``leaf`` points by median splits along the
    widest axis: (point order [P], leaf starts [L + 1] in that order, leaf box lows, highs [L, 3])."""
    order: list[int] = []
    starts: list[int] = [0]
    boxes: list[tuple[np.ndarray, np.ndarray]] = []

    def cut(ids: np.ndarray) -> None:
        pts = points[ids]
        if len(ids) <= leaf:
            order.extend(int(i) for i in ids)
            starts.append(len(order))
            boxes.append((pts.min(0), pts.max(0)))
            return
        axis = int(np.argmax(np.ptp(pts, axis=0)))
        ids = ids[np.argsort(pts[:, axis], kind="stable")]
        cut(ids[: len(ids) // 2])
        cut(ids[len(ids) // 2:])

    cut(np.arange(points.shape[0]))
    lo, hi = (np.array([b[i] for b in boxes], dtype=np.float64) for i in (0, 1))
    return np.array(order, dtype=np.int64), np.array(starts, dtype=np.int64), lo, hi


@_jit
def _nearest_point(lx: float, ly: float, lz: float, pts: np.ndarray, order: np.ndarray, starts: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray, bound: np.ndarray) -> int:  # pragma: no cover
    """The index of the cloud point nearest to (lx, ly, lz) (the first of equals), exactly: the
    points of the nearest leaf box (``cloud_leaves``; ``pts`` [P, 3] in leaf order) first, then
    only the leaves whose box is not farther than the best point so far. A box's squared distance
    is formed from the same differences as its points', so it never exceeds theirs in floats."""
    nl = lo.shape[0]
    first, first_d = 0, np.inf
    for leaf in range(nl):
        d = 0.0
        for i, v in enumerate((lx, ly, lz)):
            if v < lo[leaf, i]:
                d += (v - lo[leaf, i]) * (v - lo[leaf, i])
            elif v > hi[leaf, i]:
                d += (v - hi[leaf, i]) * (v - hi[leaf, i])
        bound[leaf] = d
        if d < first_d:
            first, first_d = leaf, d
    best, best_i = np.inf, -1
    for k in range(-1, nl):
        leaf = first if k < 0 else k
        if (k >= 0 and leaf == first) or bound[leaf] > best:
            continue
        for q in range(starts[leaf], starts[leaf + 1]):
            dx, dy, dz = lx - pts[q, 0], ly - pts[q, 1], lz - pts[q, 2]
            d = dx * dx + dy * dy + dz * dz
            i = order[q]
            if d < best or (d == best and i < best_i):
                best, best_i = d, i
    return max(best_i, 0)


@_jit
def _simulated_ig(pos: np.ndarray, opos: np.ndarray, omat: np.ndarray, cloud: np.ndarray, leaf_pts: np.ndarray,
                  order: np.ndarray, starts: np.ndarray, lo: np.ndarray, hi: np.ndarray, r0: int,
                  x: np.ndarray) -> None:  # pragma: no cover
    """Rows ``r0 + b`` of ``x``: each body minus its nearest object point, world frame (found in the
    object frame, as ``compiled_obs`` does; ``sim.interaction_graph.nearest_point_vectors``)."""
    bound = np.empty(lo.shape[0])
    for b in range(pos.shape[0]):
        lx, ly, lz = in_object_frame(pos[b], opos, omat)
        q = _nearest_point(lx, ly, lz, leaf_pts, order, starts, lo, hi, bound)
        write_world_vector(omat, lx - cloud[q, 0], ly - cloud[q, 1], lz - cloud[q, 2], x[r0 + b])


@_jit
def _pack_reference(table: np.ndarray, row: int, fo: np.ndarray, key: np.ndarray, nh: np.ndarray,
                    cidx: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """One reference frame (a motion-library table row) packed as ``CompiledObservation.packed``
    packs a ``RefSample``: key positions, no-hand matrices, object matrix, tan rows, key
    velocities, no-hand angular velocities, object pos/vel/ang vel, the reference-heading extras
    (local key positions, f(ig) of the key bodies) and the contact labels.

    ``fo``: table offsets of body_pos, body_rot, body_lin_vel, body_ang_vel, object_pos, object_rot,
    object_lin_vel, object_ang_vel, body_contact, ig.
    """
    t = table[row]
    nk, nr, nc = key.shape[0], nh.shape[0], cidx.shape[0]
    m = np.empty((3, 3))
    at = 0
    for j in range(nk):
        for i in range(3):
            out[at + 3 * j + i] = t[fo[0] + 3 * key[j] + i]
    at += 3 * nk
    tan_at = at + 9 * nr + 9
    for j in range(nr):
        o = fo[1] + 4 * nh[j]
        _quat_matrix(t[o], t[o + 1], t[o + 2], t[o + 3], m)
        for r in range(3):
            for col in range(3):
                out[at + 9 * j + 3 * r + col] = m[r, col]
            out[tan_at + 6 * j + r] = m[r, 0]
            out[tan_at + 6 * j + 3 + r] = m[r, 2]
    at += 9 * nr
    o = fo[5]
    _quat_matrix(t[o], t[o + 1], t[o + 2], t[o + 3], m)
    for r in range(3):
        for col in range(3):
            out[at + 3 * r + col] = m[r, col]
    at += 9 + 6 * nr
    for j in range(nk):
        for i in range(3):
            out[at + 3 * j + i] = t[fo[2] + 3 * key[j] + i]
    at += 3 * nk
    for j in range(nr):
        for i in range(3):
            out[at + 3 * j + i] = t[fo[3] + 3 * nh[j] + i]
    at += 3 * nr
    for f in (4, 6, 7):
        for i in range(3):
            out[at + i] = t[fo[f] + i]
        at += 3
    # the reference heading (numpy_obs.heading_matrix of the root's matrix)
    o = fo[1]
    _quat_matrix(t[o], t[o + 1], t[o + 2], t[o + 3], m)
    fx, fy = m[0, 0], m[1, 0]
    n = (fx * fx + fy * fy) ** 0.5
    c, s = (1.0, 0.0) if n < 1e-12 else (fx / n, fy / n)
    r0x, r0y, r0z = t[fo[0]], t[fo[0] + 1], t[fo[0] + 2]
    for j in range(nk):
        b = key[j]
        vx, vy, vz = t[fo[0] + 3 * b] - r0x, t[fo[0] + 3 * b + 1] - r0y, t[fo[0] + 3 * b + 2] - r0z
        out[at + 3 * j] = c * vx + s * vy
        out[at + 3 * j + 1] = -s * vx + c * vy
        out[at + 3 * j + 2] = vz
        gx, gy, gz = t[fo[9] + 3 * b], t[fo[9] + 3 * b + 1], t[fo[9] + 3 * b + 2]
        hx, hy, hz = c * gx + s * gy, -s * gx + c * gy, gz
        norm = np.sqrt(hx * hx + hy * hy + hz * hz)
        f = np.exp(-IG_DECAY * norm) / (norm + IG_EPS)
        out[at + 3 * nk + 3 * j] = hx * f
        out[at + 3 * nk + 3 * j + 1] = hy * f
        out[at + 3 * nk + 3 * j + 2] = hz * f
    at += 6 * nk
    for q in range(nc):
        out[at + q] = t[fo[8] + cidx[q]]


@_jit
def step_worlds(
    # simulator arrays [N, ...] (float64, live views) and the layout's index arrays
    xpos: np.ndarray, xquat: np.ndarray, cvel: np.ndarray, com: np.ndarray, qpos: np.ndarray, qvel: np.ndarray,
    sens: np.ndarray, body: np.ndarray, body_root: np.ndarray, jq: np.ndarray, jv: np.ndarray,
    any_found: np.ndarray, obj_found: np.ndarray, obj_body: int, obj_root: int, threshold: float,
    # per world: world ids of this backend's rows, clip, new frame, steps, counters, previous velocities
    worlds: np.ndarray, clip: np.ndarray, t: np.ndarray, steps: np.ndarray, num_frames: np.ndarray,
    hand_lost_in: np.ndarray, prev_jav: np.ndarray, prev_olin: np.ndarray, prev_oang: np.ndarray,
    failed: np.ndarray, world_object: np.ndarray,
    # reference table and the object clouds
    table: np.ndarray, max_frames: int, fo: np.ndarray, obs_offsets: np.ndarray, points: np.ndarray,
    cloud_pts: np.ndarray, leaf_pts: np.ndarray, leaf_order: np.ndarray, leaf_starts: np.ndarray, leaf_lo: np.ndarray,
    leaf_hi: np.ndarray,
    # body subsets and settings
    key: np.ndarray, foot: np.ndarray, hands: np.ndarray, non_hand: np.ndarray, neg_weights: np.ndarray,
    object_contact: bool, dt: float, fall_height: float, key_body_dev: float, object_dev: float, ig_ratio: float,
    ig_floor: float, lost_frames: int, grace: int, early: bool, cap: int,
    # the observation (CompiledObservation's constants)
    o_key: np.ndarray, o_nh: np.ndarray, o_c: np.ndarray, o_lay: np.ndarray, o_sim_at: np.ndarray,
    o_blk_at: np.ndarray, o_blk_size: int, o_ig_at: int, o_blk_extra: int, o_tail: int, o_x: np.ndarray,
    o_work: np.ndarray, o_index: np.ndarray, o_refs: np.ndarray,
    # the env's bookkeeping: running episodes, EpisodeMetrics' accumulators (updated in place)
    live_in: np.ndarray, m_active: np.ndarray, m_sum_h: np.ndarray, m_sum_o: np.ndarray, m_count: np.ndarray,
    # outputs, rows indexed by world id
    obs: np.ndarray, reward: np.ndarray, terms: np.ndarray, reasons: np.ndarray, done: np.ndarray,
    terminated: np.ndarray, truncated: np.ndarray, hand_lost: np.ndarray, e_h: np.ndarray, e_o: np.ndarray,
    jav_out: np.ndarray, olin_out: np.ndarray, oang_out: np.ndarray,
) -> tuple[int, int, int]:  # pragma: no cover
    """Everything ``env_step.simulated_side`` returns for the worlds of one backend, and the
    per-world part of ``HOIEnv._step``'s bookkeeping: the reward masked to running worlds that did
    not fail, ``terminated``/``truncated``/``done`` of running worlds, the metrics' sums.

    Returns (worlds done, running worlds with a non-finite observation, non-finite observations).
    """
    n_done = 0
    n_bad_live = 0
    n_bad = 0
    nb = body.shape[0]
    nj = jq.shape[0] // 3
    npts = points.shape[1]
    pos, quat, mat = np.empty((nb, 3)), np.empty((nb, 4)), np.empty((nb, 3, 3))
    lin, ang, jav = np.empty((nb, 3)), np.empty((nb, 3)), np.empty((nj, 3))
    any_c, obj_c = np.empty(nb, np.bool_), np.empty(nb, np.bool_)
    force = np.empty((nb, 3))
    opos, oquat, omat, olin, oang = np.empty(3), np.empty(4), np.empty((3, 3)), np.empty(3), np.empty(3)
    rq = np.empty(4)
    scratch = np.empty((11, npts), np.float32)
    key_pos, ref_key = np.empty((key.shape[0], 3)), np.empty((key.shape[0], 3))
    err = np.empty(neg_weights.shape[0])
    nk = key.shape[0]
    nh = hands.shape[1]
    for r in range(worlds.shape[0]):
        w = worlds[r]
        finite = _extract_world(r, xpos, xquat, cvel, com, qpos, qvel, sens, body, body_root, jq, jv, any_found,
                                obj_found, obj_body, obj_root, threshold, pos, quat, mat, lin, ang, jav, any_c,
                                obj_c, force, opos, oquat, omat, olin, oang)
        contact = obj_c if object_contact else any_c
        last = num_frames[clip[w]] - 1
        row = clip[w] * max_frames + min(max(t[w], 0), last)
        ref = table[row]
        rb, rr, rl, ra = fo[0], fo[1], fo[2], fo[3]
        rop, ror, rol, roa, rc, rig = fo[4], fo[5], fo[6], fo[7], fo[8], fo[9]
        active = steps[w] > ENERGY_WARMUP_STEPS
        # -- reward errors (rewards.compute_reward's rows) -----------------------------------------------
        p_err = 0.0
        for j in range(nk):
            b = key[j]
            gx, gy, gz = ref[rig + 3 * b], ref[rig + 3 * b + 1], ref[rig + 3 * b + 2]
            prox = 1.0 if foot[b] else np.exp(-PROXIMITY_DECAY * np.sqrt(gx * gx + gy * gy + gz * gz))
            d = 0.0
            for i in range(3):
                key_pos[j, i] = pos[b, i]
                ref_key[j, i] = ref[rb + 3 * b + i]
                dd = ref_key[j, i] - pos[b, i]
                d += dd * dd
            p_err += d * prox
        err[0] = p_err / nk
        r_err = 0.0
        pv = 0.0
        rv = 0.0
        for b in range(nb):
            gx, gy, gz = ref[rig + 3 * b], ref[rig + 3 * b + 1], ref[rig + 3 * b + 2]
            prox = np.exp(-PROXIMITY_DECAY * np.sqrt(gx * gx + gy * gy + gz * gz))
            for i in range(4):
                rq[i] = ref[rr + 4 * b + i]
            r_err += _angle_between(rq, quat[b]) * (1.0 - prox)
            for i in range(3):
                dv = ref[rl + 3 * b + i] - lin[b, i]
                da = ref[ra + 3 * b + i] - ang[b, i]
                pv += dv * dv
                rv += da * da
        err[1] = r_err / nb
        err[2] = pv / (3 * nb)
        err[3] = rv / (3 * nb)
        acc = 0.0
        for j in range(nj):
            for i in range(3):
                a = (jav[j, i] - prev_jav[w, j, i]) / dt
                acc += a * a
        err[4] = acc / (3 * nj) if active else 0.0
        # object in each root's heading frame (rewards.object_frame_errors)
        for i in range(4):
            rq[i] = ref[rr + i]
        c0, s0 = _heading_cos_sin(quat[0])
        c1, s1 = _heading_cos_sin(rq)
        dx0, dy0 = opos[0] - pos[0, 0], opos[1] - pos[0, 1]
        dx1, dy1 = ref[rop] - ref[rb], ref[rop + 1] - ref[rb + 1]
        e0 = (c1 * dx1 + s1 * dy1) - (c0 * dx0 + s0 * dy0)
        e1 = (c1 * dy1 - s1 * dx1) - (c0 * dy0 - s0 * dx0)
        e2 = ref[rop + 2] - opos[2]
        err[5] = (e0 * e0 + e1 * e1 + e2 * e2) / 3.0
        h0 = -0.5 * np.arctan2(s0, c0)
        h1 = -0.5 * np.arctan2(s1, c1)
        hz0, hw0, hz1, hw1 = np.sin(h0), np.cos(h0), np.sin(h1), np.cos(h1)
        ox, oy, oz, ow = oquat[0], oquat[1], oquat[2], oquat[3]
        sim_q = np.array([hw0 * ox - hz0 * oy, hw0 * oy + hz0 * ox, hw0 * oz + hz0 * ow, hw0 * ow - hz0 * oz])
        qx, qy, qz, qw = ref[ror], ref[ror + 1], ref[ror + 2], ref[ror + 3]
        ref_q = np.array([hw1 * qx - hz1 * qy, hw1 * qy + hz1 * qx, hw1 * qz + hz1 * qw, hw1 * qw - hz1 * qz])
        err[6] = _angle_between(ref_q, sim_q)
        opv = 0.0
        orv = 0.0
        ea = 0.0
        eb = 0.0
        for i in range(3):
            d1 = ref[rol + i] - olin[i]
            d2 = ref[roa + i] - oang[i]
            opv += d1 * d1
            orv += d2 * d2
            a1 = (olin[i] - prev_olin[w, i]) / dt
            a2 = (oang[i] - prev_oang[w, i]) / dt
            ea += a1 * a1
            eb += a2 * a2
        err[7] = opv / 3.0
        err[8] = orv / 3.0
        err[9] = ea / 3.0 if active else 0.0
        err[10] = eb / 3.0 if active else 0.0
        # the interaction graph, E_o (state.interaction_graph, metrics.object_error)
        rq[0], rq[1], rq[2], rq[3] = ref[ror], ref[ror + 1], ref[ror + 2], ref[ror + 3]
        ref_centre = ref[rop:rop + 3].astype(np.float64)
        ig_err, ig_dev, eo = _graph(key_pos, ref_key, points[world_object[w]], oquat, opos, rq, ref_centre, ig_floor,
                                    ig_ratio, scratch)
        err[11] = ig_err
        # contacts (rewards.hand_contact_errors, other_contact_error, penalty_contact_error)
        wanted = np.zeros(2, np.bool_)
        touching = np.zeros(2, np.bool_)
        for hand in range(2):
            miss = 0.0
            for j in range(nh):
                b = hands[hand, j]
                if ref[rc + b] > LABEL_THRESHOLD:
                    wanted[hand] = True
                if contact[b]:
                    touching[hand] = True
                else:
                    miss += 1.0
            err[12 + hand] = miss / nh
        other = 0.0
        for j in range(non_hand.shape[0]):
            b = non_hand[j]
            if ref[rc + b] > LABEL_THRESHOLD and not contact[b]:
                other += 1.0
        err[14] = other / non_hand.shape[0]
        pen = 0.0
        total = 0.0
        for b in range(nb):
            if contact[b] and ref[rc + b] < -LABEL_THRESHOLD:
                pen += 1.0
            total += abs(force[b, 0]) + abs(force[b, 1]) + abs(force[b, 2])
        err[15] = pen / nb
        err[16] = total * total
        # factors (exp(-w err), float32) and their product
        f = np.empty(err.shape[0], np.float32)
        for i in range(err.shape[0]):
            f[i] = np.float32(np.exp(np.float32(err[i]) * neg_weights[i]))
        for i in range(9):
            terms[i, w] = f[i]
        terms[9, w] = f[9] * f[10]
        terms[10, w] = f[11]
        left = np.float32(0.5) * (np.float32(1.0) + f[12]) if wanted[0] else np.float32(1.0)
        right = np.float32(0.5) * (np.float32(1.0) + f[13]) if wanted[1] else np.float32(1.0)
        terms[11, w] = left * right
        terms[12, w] = f[14]
        terms[13, w] = f[15]
        terms[14, w] = f[16]
        prod = np.float32(1.0)
        for i in range(15):
            prod = prod * terms[i, w]
        reward[w] = prod
        # hand counters (terminations.update_hand_contact_lost)
        lost = False
        for hand in range(2):
            m = 1.0 if (wanted[hand] and not touching[hand]) else 0.0
            hand_lost[w, hand] = (hand_lost_in[w, hand] + m) * m
            if hand_lost[w, hand] > lost_frames:
                lost = True
        # errors (metrics.step_errors)
        eh = 0.0
        for j in range(nk):
            d0, d1, d2 = ref_key[j, 0] - key_pos[j, 0], ref_key[j, 1] - key_pos[j, 1], ref_key[j, 2] - key_pos[j, 2]
            eh += np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
        e_h[w] = eh / nk
        e_o[w] = eo
        # terminations (terminations.check_terminations), checked on the float32 values
        checked = steps[w] > grace
        reasons[0, w] = not finite
        reasons[1, w] = checked and pos[0, 2] < np.float32(fall_height)
        reasons[2, w] = early and checked and e_h[w] > np.float32(key_body_dev)
        reasons[3, w] = early and checked and e_o[w] > np.float32(object_dev)
        reasons[4, w] = early and checked and ig_dev
        reasons[5, w] = early and checked and lost
        reasons[6, w] = t[w] >= num_frames[clip[w]] - 1
        reasons[7, w] = cap >= 0 and steps[w] >= cap
        reasons[8, w] = failed[r]
        fail = False
        for i in range(6):
            fail = fail or reasons[i, w]
        ends = fail or reasons[6, w] or reasons[7, w]
        # velocities for the next step's energy factors
        for j in range(nj):
            for i in range(3):
                jav_out[w, j, i] = jav[j, i]
        for i in range(3):
            olin_out[w, i] = olin[i]
            oang_out[w, i] = oang[i]
        # the observation (observation.compiled_obs), references at t + each offset
        for k in range(obs_offsets.shape[0]):
            frame = min(max(t[w] + obs_offsets[k], 0), last)
            _pack_reference(table, clip[w] * max_frames + frame, fo, o_key, o_nh, o_c, o_refs[k])
        ob = world_object[w]
        _simulated_ig(pos, opos, omat, cloud_pts[ob], leaf_pts[ob], leaf_order[ob], leaf_starts[ob], leaf_lo[ob],
                      leaf_hi[ob], o_sim_at[6], o_x)
        observation_kernel_given_ig(pos, mat, lin, ang, any_c, opos, omat, olin, oang, o_refs, o_key, o_nh, o_c, o_lay,
                                    o_sim_at, o_blk_at, o_blk_size, o_ig_at, o_blk_extra, o_tail, o_x, o_work, o_index,
                                    obs[w])
        ok = True
        for i in range(obs.shape[1]):
            if not np.isfinite(obs[w, i]):
                ok = False
        reasons[9, w] = not ok
        # HOIEnv._step: failures end the episode; only running worlds report (and earn) anything
        broken = reasons[8, w] or not ok
        live = live_in[w]
        if not live or broken or np.isnan(reward[w]):
            reward[w] = np.float32(0.0)
        terminated[w] = (fail or broken) and live
        done[w] = (ends or broken) and live
        truncated[w] = done[w] and not terminated[w]
        if m_active[w]:
            m_sum_h[w] += np.float64(e_h[w])
            m_sum_o[w] += np.float64(e_o[w])
            m_count[w] += 1
        n_done += done[w]
        n_bad_live += (not ok) and live
        n_bad += not ok
    return n_done, n_bad_live, n_bad


@_jit
def hinge_targets(actions: np.ndarray, offset: np.ndarray, scale: np.ndarray, clip: np.float32,
                  out: np.ndarray) -> None:  # pragma: no cover
    """Hinge-angle PD targets [N, 153] (float64) of actions [N, 153] (float32): per world
    ``compiled_obs``'s action map, the rotation vectors formed in float32 as ``pd_targets`` forms them."""
    for w in range(actions.shape[0]):
        hinge_targets_kernel(actions[w], offset, scale, clip, out[w])


@_jit
def replay_actions(joint_rotvec: np.ndarray, clip: np.ndarray, t: np.ndarray, num_frames: np.ndarray,
                   offset: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``HOIEnv.pd_replay_actions``: per world, the actions ((r - offset) / scale, clipped to [-1, 1],
    float32 as ``action_map.actions_for_targets``) whose targets are the reference joints at t + 1."""
    one = np.float32(1.0)
    for w in range(clip.shape[0]):
        c = clip[w]
        frame = min(max(t[w] + 1, 0), num_frames[c] - 1)
        r = joint_rotvec[c, frame].ravel()
        for i in range(out.shape[1]):
            a = (r[i] - offset[i]) / scale[i]
            out[w, i] = -one if a < -one else (one if a > one else a)
