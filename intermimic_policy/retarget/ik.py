"""Per-frame inverse kinematics with Pinocchio: each step a small QP, non-penetration a hard constraint.

Each iteration linearises every task at the current configuration q (frame Jacobians in the
world-aligned frame) and solves

    min_dq  sum_k w_k |J_k dq - e_k|^2 + dq' D dq + sum_j p_j (q_j + dq_j - q0_j)^2
    s.t.    lo <= q_joints + dq_joints <= hi,  |dq| <= trust region
            n_i' J_i dq >= depth_i - allowance      (collision point i near an object part)
            J_z,i dq >= -z_i                        (collision point i near the floor)

where [lo, hi] is the URDF position range intersected with the velocity limit around the previous
frame (|q_t - q_{t-1}| <= v_max / fps), and n_i is the outward normal of the part face whose plane
separates point i from the part: to first order no point ends deeper than ``object_allowance`` in
any convex part (nor below the floor), however hard a task (the hand's contact pull) pulls. A point
already inside (the carried object moved into the hand) goes out through the face it was nearest to
at the end of the last frame, not through the nearest face now (across a thin table top). DAQP (a
dual active-set solver for small dense QPs) solves it; rows that cannot all hold at once become soft.
Planted feet are pinned by hard rows too (their sole's horizontal position, J_xy dq = e): they stay
hard when the object rows go soft, so a blocked hand cannot drag a planted foot. A point inside a
part leaves through one face per link where its points would otherwise leave through opposite
faces of a thin part (``FrameSolver._link_faces``).

Every step is verified against the real geometry: a step that leaves a point deeper than allowed
(one the rows did not cover, or a long step the linearisation misjudged) is taken back and retried
with that point as one more row, or with more damping; otherwise the cost decides
(Levenberg-Marquardt), with depth beyond the allowance charged heavily so that a frame that starts
deep trades its way out against the tasks. A frame that still ends deep gets a few more iterations,
then steps along the rows alone (the tasks' metric, no pull): the constraint wins. One still more
than ``exit_fallback_excess`` beyond the allowance gets one last such step with the exit faces nearest
to the points now (``FrameSolver._exit_fallback``): the remembered face can be the far side of a part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import daqp
import numpy as np
import pinocchio as pin

from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.retarget.geometry import (
    HullSet,
    face_depths,
    group_faces,
    hull_depth,
    nearest_faces,
    pair_depths,
    run_bounds,
)

LWA = pin.ReferenceFrame.LOCAL_WORLD_ALIGNED


@dataclass(frozen=True)
class IKConfig:
    iterations: int = 2  # per frame, warm-started from the previous frame
    max_iterations: int = 3  # while a contact or collision residual is above tolerance (more: no gain)
    first_frame_iterations: int = 60
    tolerance: float = 0.002  # m: contact / foot / penetration residual that ends the iterations
    damping: float = 1e-3
    root_damping: float = 1e-4
    # Collision points may end this deep in the object's convex parts (a hard constraint per step):
    # the parts sit 4-7 mm outside the visual surface, where the palm's contact site is placed.
    object_allowance: float = 0.007
    penetration_tolerance: float = 0.001  # m: a step may not leave a point deeper than allowance + this
    extra_iterations: int = 2  # more while a point is still deeper than allowance + tolerance
    projection_rounds: int = 2  # then steps along the rows alone (no task pull) while still deeper
    # Rows per (link, part): its deepest points (a link is rigid: they carry its way in; a point left
    # out that a step drives in is found by the step check and gets a row then). 0: every point.
    rows_per_link: int = 6
    max_push: float = 0.03  # m: a deep point need only come this far out per step (rows stay feasible)
    penetration_weight: float = 1e6  # step check, for a frame that starts deeper: cost of the excess (m^-2)
    constraint_band: float = 0.03  # m: points this close to a part get a constraint row (farther ones
    # that a step drives in are found by the step check and get one then)
    floor_margin: float = 0.0
    floor_tolerance: float = 0.002  # m: after each frame the root rises until no point is deeper
    # rad: trust region of one step per joint (the linearised collision rows hold for short steps; a
    # shoulder may turn 1.2 rad in a frame, which the rows would mispredict by centimetres)
    max_step: float = 0.2
    max_root_step: float = 0.05  # m: the same for the root's translation
    step_tolerance: float = 3e-3  # rad / m: a step this small means converged (residuals conflict)
    points_per_link: int = 24  # collision points per link the IK keeps out (24: all, as the metrics)
    floor_buffer: float = 0.15  # m: points this close to the floor at a frame's start are watched (a swing foot drops fast)
    # A link whose inside points' own exit faces (see FrameSolver._link_faces) differ from the link's
    # by more than this cosine leaves through the link's one face (-0.5: only opposite faces; 1: always)
    exit_face_cos: float = -0.5
    # Pinned feet (hard rows on the horizontal position): a step brings a pinned site back at most
    # this far, to within the band; a frame ends within the slack (0.3 mm: <= 1 cm/s of skate at 30 fps).
    max_pin_step: float = 0.02  # m (scaled by the trust region)
    pin_tolerance: float = 2e-5  # m
    pin_slack: float = 3e-4  # m: a frame that ends with a pinned site farther off is projected back
    # m: a frame that still ends a point this far beyond the object allowance gets one more projection
    # with the exit faces nearest to the points now (the remembered face can be the far side of a part
    # the object has since moved around the hand; always using the nearest face lets thin parts be crossed)
    exit_fallback_excess: float = 0.003


@dataclass
class Task:
    """Position (3 rows) or orientation (3 rows) of one Pinocchio frame; ``axes`` picks rows."""

    frame: int
    kind: str  # "pos" | "rot" | "dir" (turn the frame's ``axis`` towards the unit vector ``target``)
    target: np.ndarray
    weight: float
    axes: tuple[int, ...] = (0, 1, 2)
    axis: np.ndarray | None = None


@dataclass
class Collision:
    """The object's convex parts at this frame (pose: world = R @ local + t)."""

    hulls: HullSet
    rot: np.ndarray
    pos: np.ndarray


_NO_BOUND = 1e30  # DAQP's infinity


@dataclass(frozen=True)
class _PartBoxes:
    """Bounding boxes of an object's parts grown by a margin: [P, 3] for points, [L, P, 3] for the
    links' spheres (grown by each radius too)."""

    lo: np.ndarray
    hi: np.ndarray
    sphere_lo: np.ndarray
    sphere_hi: np.ndarray


def solve_qp(H: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, offset: int,
             A: np.ndarray | None = None, lower: np.ndarray | None = None, soft: bool = False,
             upper: np.ndarray | None = None, hard: int = 0) -> tuple[np.ndarray, bool]:
    """(argmin 0.5 x'Hx - g'x  s.t.  lo <= x[offset:] <= hi  and  lower <= A x <= upper, whether the
    rows were soft) for H positive definite (``upper`` None: no upper bound).

    The box is kept exactly; when the rows cannot all hold within it (or ``soft``: they could not at
    the last try) they are made soft (DAQP then violates them as little as it can) rather than the
    step being lost. The first ``hard`` rows (pinned feet) stay hard while the others go soft: a
    blocked hand must not drag a planted foot; only if they alone cannot hold does everything go soft."""
    n, m = len(g), 0 if A is None else len(A)
    if m == 0:
        return solve_box_ls(H, g, lo, hi, offset), False
    bu = np.full(n + m, _NO_BOUND)
    bl = np.full(n + m, -_NO_BOUND)
    bu[offset:n], bl[offset:n] = hi, lo
    bl[n:] = lower
    if upper is not None:
        bu[n:] = upper
    A = np.ascontiguousarray(A)
    sense = np.zeros(n + m, np.int32)
    flag = 0
    if not soft:
        x, _, flag, _ = daqp.solve(H, -g, A, bu, bl, sense)
    if flag < 1:
        soft = True
        sense[n + hard:] = 8  # soft rows
        x, _, flag, _ = daqp.solve(H, -g, A, bu, bl, sense)
    if flag < 1 and hard:  # the pins themselves cannot hold (the velocity box): all soft
        sense[n:] = 8
        x, _, flag, _ = daqp.solve(H, -g, A, bu, bl, sense)
    if flag < 1:  # should not happen (the box alone is feasible): the step without the rows
        return solve_box_ls(H, g, lo, hi, offset), True
    return np.asarray(x), soft


def solve_box_ls(H: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, offset: int) -> np.ndarray:
    """argmin 0.5 x'Hx - g'x with lo <= x[offset:] <= hi (H positive definite), by active set:
    clamp the variables that leave the box, re-solve for the free ones, release a clamped variable
    whose multiplier has the wrong sign (it wants back inside), until the KKT conditions hold."""
    n = len(g)
    x = np.linalg.solve(H, g)
    xs = x[offset:]
    if np.all(xs <= hi) and np.all(xs >= lo):
        return x
    fixed = np.zeros(n, bool)
    xb = np.zeros(n)
    for _ in range(3 * n):
        xs = x[offset:]
        over = ~fixed[offset:] & (xs > hi + 1e-12)
        under = ~fixed[offset:] & (xs < lo - 1e-12)
        if over.any() or under.any():
            xb[offset:][over] = hi[over]
            xb[offset:][under] = lo[under]
            fixed[offset:] |= over | under
        else:
            grad = g - H @ x  # descent direction of the free problem; at a bound it must point outwards
            at_hi = fixed[offset:] & (xb[offset:] >= hi)
            at_lo = fixed[offset:] & ~at_hi
            wrong = np.where(at_hi, -grad[offset:], 0.0) + np.where(at_lo, grad[offset:], 0.0)
            i = int(np.argmax(wrong))
            if wrong[i] <= 1e-10:
                break
            fixed[offset + i] = False
        free = ~fixed
        x = xb.copy()
        x[free] = np.linalg.solve(H[np.ix_(free, free)], g[free] - H[np.ix_(free, fixed)] @ xb[fixed])
    return x


@dataclass
class FrameSolver:
    desc: RobotDescription
    config: IKConfig = field(default_factory=IKConfig)

    def __post_init__(self) -> None:
        d = self.desc
        self.model, self.data = d.model, d.model.createData()
        self.nv = d.model.nv
        cp = d.collision_points
        keep = cp.rank < self.config.points_per_link  # ranks are farthest-point order: a spread subset
        dense = {f.link for f in d.config.feet}  # soles: every point (the floor must not miss one)
        dense |= {d.model.frames[i].name for i in range(d.model.nframes)
                  if any(re.search(p, d.model.frames[i].name) for p in d.config.dense_links)}
        keep |= np.isin(np.asarray(cp.link_names), list(dense))
        self.link_frames, self.point_link = np.unique(cp.frame_ids[keep], return_inverse=True)
        self.link_frame_list = [int(f) for f in self.link_frames]
        # Live views of every frame's placement (Pinocchio updates data.oMf in place): stacking views
        # is one copy, where each data.oMf[f] builds a Python object (about 1 us a frame).
        oMf = self.data.oMf
        self._frame_rot = [oMf[f].rotation for f in range(self.model.nframes)]
        self._frame_pos = [oMf[f].translation for f in range(self.model.nframes)]
        self._link_rot_views = [self._frame_rot[f] for f in self.link_frame_list]
        self._link_pos_views = [self._frame_pos[f] for f in self.link_frame_list]
        self.points_local = cp.local[keep]
        # Points of the link that carries each hand's contact site: while that hand holds the object
        # its site task defines the contact (on the visual surface, a few mm inside the convex
        # parts), so those points get no object rows; the fingers still do.
        names = np.asarray(cp.link_names)[keep]
        self.hand_points = [names == d.config.site(h.site).link for h in d.config.hands]
        # Broad phase: a link's points lie within a sphere (see below); the padded table lists them.
        self._link_points = [np.flatnonzero(self.point_link == li) for li in range(len(self.link_frames))]
        width = max(len(ix) for ix in self._link_points)
        self._link_pad = np.array([np.r_[ix, np.full(width - len(ix), -1)] for ix in self._link_points], np.int64)
        # Points per link padded to K (zeros), [L, 3, K]; _pad_take [N, 3] picks each real point's
        # coordinates out of the flattened [L, 3, K] in flat order (one gather).
        self._pad_local = np.zeros((len(self._link_points), 3, width))
        flat = np.zeros(len(self.points_local), np.int64)
        for li, ix in enumerate(self._link_points):
            self._pad_local[li, :, : len(ix)] = self.points_local[ix].T
            flat[ix] = li * 3 * width + np.arange(len(ix))
        self._pad_take = flat[:, None] + np.arange(3) * width
        # Broad-phase spheres about each link's points (centre: middle of their box, link frame).
        self._link_centre = np.array([(self.points_local[ix].min(0) + self.points_local[ix].max(0)) / 2 for ix in self._link_points])
        self._link_radius = np.array([np.linalg.norm(self.points_local[ix] - c, axis=1).max()
                                      for ix, c in zip(self._link_points, self._link_centre, strict=True)])
        self._box_cache: dict[tuple[HullSet, float], _PartBoxes] = {}
        self._root_step_lo = -np.r_[np.full(3, self.config.max_root_step), np.full(3, self.config.max_step)]
        self._prev_local: np.ndarray | None = None  # object-frame points at the end of the last frame
        self._faces_now = False  # exit faces from the current positions (``_exit_fallback``)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (q, its world points) of the last solve
        self._pins: tuple[tuple[int, np.ndarray], ...] = ()  # (frame id, world position) held as rows
        reg = np.full(self.nv, self.config.damping)
        reg[:6] = self.config.root_damping
        self.reg = reg
        self.posture = np.r_[np.zeros(6), d.posture_weights]
        self._H_reg = np.diag(self.reg + self.posture)  # what the normal equations add to J'WJ

    # -- geometry at the current q -----------------------------------------------------------
    def _points(self) -> np.ndarray:
        """World positions of all collision points (and the link placements, kept for Jacobians)."""
        self._link_rot = np.array(self._link_rot_views)  # [L, 3, 3]
        self._link_pos = np.array(self._link_pos_views)  # [L, 3]
        # One batched product per link over its padded points, then back to the flat order.
        world = self._link_rot @ self._pad_local + self._link_pos[:, :, None]  # [L, 3, K]
        return world.reshape(-1).take(self._pad_take)

    def residuals(self, q: np.ndarray, collision: Collision | None) -> tuple[float, float]:
        """(floor depth, object depth) in metres at q (positive = penetrating)."""
        pin.framesForwardKinematics(self.model, self.data, q)
        pts = self._points()
        floor = float(-pts[:, 2].min())
        obj = -np.inf
        if collision is not None:
            local = (pts - collision.pos) @ collision.rot
            obj = float(hull_depth(collision.hulls, local)[0].max())
        return floor, obj

    def _points_at(self, q: np.ndarray) -> np.ndarray:
        """All collision points at q (kept from the last solve when q is the configuration it returned)."""
        if self._last is not None and self._last[0] is q:
            return self._last[1]
        pin.framesForwardKinematics(self.model, self.data, q)
        return self._points()

    def lift_above_floor(self, q: np.ndarray, tolerance: float) -> np.ndarray:
        """q with the root raised so that no collision point is more than ``tolerance`` below the
        floor: what the last iterations left (a planted sole pressed in by the hands' pull) goes."""
        low = float(self._points_at(q)[:, 2].min())
        if low < -tolerance:
            q = q.copy()
            q[2] += -tolerance - low
        return q

    # -- one frame ---------------------------------------------------------------------------
    def solve(self, q: np.ndarray, tasks: list[Task], lo: np.ndarray, hi: np.ndarray,
              collision: Collision | None, iterations: int, strict: list[int] | None = None,
              holding: tuple[int, ...] = (), pins: tuple[tuple[int, np.ndarray], ...] = ()) -> np.ndarray:
        """Iterate from q; ``lo``/``hi`` bound the joint coordinates; ``strict`` tasks (indices)
        keep iterating (up to max_iterations) until their error is below tolerance; ``holding``
        hands (indices) are in contact: their points are left out of the object rows; ``pins``
        (frame id, world position) hold those frames' horizontal position as hard rows (planted
        feet: a cost task, however stiff, slides when a blocked hand pulls the body; the height is
        left to the foot task and the floor rows, which must win).

        Every step is verified: a step that leaves a point deeper in the object than the allowance
        (and than it was) is taken back and retried with that point's (point, part) pair as one more
        constraint row; one that raises the cost is retried with more damping (Levenberg-Marquardt).
        So the returned q is never deeper nor costlier than the start."""
        cfg, model, data = self.config, self.model, self.data
        self._group_tasks(tasks, set(strict or ()))
        self._pins = pins
        self._faces = np.full((len(self.link_frames), 0 if collision is None else len(collision.hulls.part_lo)), -1)
        n_iter = max(iterations, 1)
        max_it = max(cfg.max_iterations, n_iter)
        pin.framesForwardKinematics(model, data, q)
        self._floor_w = np.flatnonzero(self._points_at(q)[:, 2] < cfg.floor_margin + cfg.floor_buffer)
        self._exclude = None
        if holding:
            self._exclude = np.zeros(len(self.points_local), bool)
            for h in holding:
                self._exclude |= self.hand_points[h]
        extra = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # pairs found by rejected steps

        best_q = q.copy()
        best_cost, worst, ev = self._evaluate(collision, q)
        mu, fresh = 0.0, True
        soft = False  # rows infeasible once this frame: soft from then on (no second failed solve)
        trust = 1.0  # scales the trust region (max_step, max_root_step) after steps that went too deep
        H, g = self._linearize(best_q, ev)
        A, lower = self._constraint_rows(collision, ev, extra)
        it = 0
        while True:
            if not fresh:  # linearise at the newly accepted point
                H, g = self._linearize(best_q, ev)
                A, lower = self._constraint_rows(collision, ev, extra)
                mu = 0.0 if mu < 1e-3 else 0.1 * mu
                fresh = True
            Hd = H + mu * np.diag(np.diag(H)) if mu > 0 else H
            step_lo = np.concatenate((trust * self._root_step_lo, np.maximum(lo - best_q[7:], -trust * cfg.max_step)))
            step_hi = np.concatenate((-trust * self._root_step_lo, np.minimum(hi - best_q[7:], trust * cfg.max_step)))
            dq, soft = self._qp_step(Hd, g, step_lo, step_hi, A, lower, soft, trust)
            q = pin.integrate(model, best_q, dq)
            q[7:] = np.clip(q[7:], lo, hi)
            it += 1
            pin.framesForwardKinematics(model, data, q)
            cost, w_new, ev_new = self._evaluate(collision, q)
            small = False
            if ev_new["pen"] > max(ev["pen"], cfg.penetration_tolerance):
                # Deeper than allowed: a point the rows did not cover (it came from far), or the
                # linearisation's error over a long step. Its pair becomes a row at best_q (new pairs:
                # retry at the same damping) and the step gets shorter (known pairs: damp harder).
                idx, part, depth = ev_new["obj"][:3] if "obj" in ev_new else (np.zeros(0, np.int64),) * 2 + (np.zeros(0),)
                bad = depth - cfg.object_allowance > cfg.penetration_tolerance
                known = _pair_set(extra) | _pair_set(self._row_pairs)
                new = np.array([(i, k) not in known for i, k in zip(idx[bad].tolist(), part[bad].tolist(), strict=True)], bool)
                if new.any():
                    extra = (np.r_[extra[0], idx[bad][new]], np.r_[extra[1], part[bad][new]])
                    A, lower = self._constraint_rows(collision, ev, extra)
                else:  # the rows' linearisation misjudged a long step: a shorter one
                    trust *= 0.5
            elif cost + self._pen_cost(ev_new) <= best_cost + self._pen_cost(ev):
                best_q, best_cost, worst, ev, fresh = q, cost, w_new, ev_new, False
                small = float(np.abs(dq).max()) < cfg.step_tolerance
            else:  # worse: take it back, damp harder (a singular straight knee, a row that switched on)
                mu = max(10.0 * mu, 1e-2)
            limit = max_it + (cfg.extra_iterations if ev["pen"] > cfg.penetration_tolerance else 0)
            if it >= limit or (it >= n_iter and (worst <= cfg.tolerance or small)):
                break
        best_q, ev = self._project(collision, best_q, ev, H if fresh else None, A, lower, extra, lo, hi, soft)
        if collision is not None and _object_excess(ev, cfg.object_allowance) > cfg.exit_fallback_excess:
            best_q, ev = self._exit_fallback(collision, best_q, ev, extra, lo, hi)
        self._prev_local = ev.get("local")
        self._last = (best_q, ev["pts"])  # the next lift / frame start asks for these points again
        return best_q

    def _project(self, collision: Collision | None, best_q: np.ndarray, ev: dict, H: np.ndarray | None,
                 A: np.ndarray | None, lower: np.ndarray | None, extra: tuple[np.ndarray, np.ndarray],
                 lo: np.ndarray, hi: np.ndarray, soft: bool, rounds: int | None = None) -> tuple[np.ndarray, dict]:
        """While a point is still deeper than allowed (the object moved into the hand faster than the
        tasks let it out) or a pinned site is off its pin (a long step's curvature): the constraints
        win. Steps along the rows alone, with the smallest change to the tasks (their Gauss-Newton
        metric, no pull), whatever the tasks' cost; ``H`` None: relinearise at ``best_q`` first;
        ``rounds`` None: ``projection_rounds``."""
        cfg, model, data = self.config, self.model, self.data
        for _ in range(cfg.projection_rounds if rounds is None else rounds):
            if ev["pen"] <= cfg.penetration_tolerance and ev["pin"] <= cfg.pin_slack:
                break
            if H is None:
                H, _ = self._linearize(best_q, ev)
                A, lower = self._constraint_rows(collision, ev, extra)
            step_lo = np.concatenate((self._root_step_lo, np.maximum(lo - best_q[7:], -cfg.max_step)))
            step_hi = np.concatenate((-self._root_step_lo, np.minimum(hi - best_q[7:], cfg.max_step)))
            dq, soft = self._qp_step(H, np.zeros(self.nv), step_lo, step_hi, A, lower, soft, 1.0)
            q = pin.integrate(model, best_q, dq)
            q[7:] = np.clip(q[7:], lo, hi)
            pin.framesForwardKinematics(model, data, q)
            _, _, ev_new = self._evaluate(collision, q)
            deeper = ev_new["pen"] > max(ev["pen"], cfg.penetration_tolerance)
            if deeper or (ev_new["pen"] >= ev["pen"] and ev_new["pin"] >= ev["pin"]):
                break
            best_q, ev, H = q, ev_new, None
        return best_q, ev

    def _exit_fallback(self, collision: Collision, best_q: np.ndarray, ev: dict, extra: tuple[np.ndarray, np.ndarray],
                       lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, dict]:
        """One more projection for a frame left deep: its rows push each inside point out through
        the face nearest to it now. The faces chosen from the last frame (the way in, or the link's
        one face) can be the far side once the part has moved around the link: those rows push the
        point through the middle, which the step check refuses, and the frame stays deep. Only a
        fallback: choosing the nearest face every time lets points cross thin parts."""
        pin.framesForwardKinematics(self.model, self.data, best_q)  # the last step tried may have been refused
        self._faces_now = True
        try:
            return self._project(collision, best_q, ev, None, None, None, extra, lo, hi, False, rounds=1)
        finally:
            self._faces_now = False

    def _qp_step(self, H: np.ndarray, g: np.ndarray, step_lo: np.ndarray, step_hi: np.ndarray,
                 A: np.ndarray | None, lower: np.ndarray | None, soft: bool, trust: float) -> tuple[np.ndarray, bool]:
        """One step's QP: the object / floor rows ``A dq >= lower`` and, first and never soft while
        they alone can hold, the pinned sites' horizontal rows ``J_xy dq = e`` (within
        ``pin_tolerance``; e, the way back to the pin, clipped to what one step of this trust region
        can do)."""
        if not self._pins:
            return solve_qp(H, g, step_lo, step_hi, 0, A, lower, soft)
        cfg = self.config
        reach = trust * cfg.max_pin_step
        e = np.clip(self._pin_e, -reach, reach)
        m = 0 if A is None else len(A)
        rows = self._pin_J if A is None else np.vstack([self._pin_J, A])
        low = e - cfg.pin_tolerance if lower is None else np.concatenate((e - cfg.pin_tolerance, lower))
        up = np.concatenate((e + cfg.pin_tolerance, np.full(m, _NO_BOUND)))
        return solve_qp(H, g, step_lo, step_hi, 0, rows, low, soft, up, hard=len(e))

    def _pen_cost(self, ev: dict) -> float:
        """What depth beyond the allowance (+ tolerance) costs, so that a frame that starts deep
        (the object moved into the hand) trades the way out against the tasks."""
        excess = max(ev["pen"] - self.config.penetration_tolerance, 0.0)
        return self.config.penetration_weight * excess * excess

    def _group_tasks(self, tasks: list[Task], strict: set[int]) -> None:
        """Tasks by kind, as arrays: each evaluation is then a few vector operations."""
        pos = [(k, t) for k, t in enumerate(tasks) if t.kind == "pos"]
        rot = [(k, t) for k, t in enumerate(tasks) if t.kind == "rot"]
        dirs = [(k, t) for k, t in enumerate(tasks) if t.kind == "dir"]
        self._pos_f = [t.frame for _, t in pos]
        self._pos_views = [self._frame_pos[f] for f in self._pos_f]
        self._pos_t = np.array([t.target for _, t in pos], dtype=np.float64).reshape(-1, 3)
        wp = np.array([[t.weight if a in t.axes else 0.0 for a in range(3)] for _, t in pos], np.float64).reshape(-1, 3)
        pos_strict = np.array([k in strict for k, _ in pos], bool)
        self._strict_rows, self._strict_axes = np.flatnonzero(pos_strict), wp[pos_strict] > 0
        self._rot = [(t.frame, np.asarray(t.target), k in strict) for k, t in rot]
        self._dir = [(t.frame, np.asarray(t.axis), np.asarray(t.target), k in strict) for k, t in dirs]
        self._task_w = np.concatenate([wp.reshape(-1), np.repeat([t.weight for _, t in rot], 3),
                                       np.repeat([t.weight for _, t in dirs], 3)])

    def _evaluate(self, collision: Collision | None, q: np.ndarray) -> tuple[float, float, dict]:
        """(cost, worst strict / penetration residual, state) at the placements in ``self.data``.
        The floor enters the cost as a hinge (zero above the margin; its rows active once this frame
        stay sticky); ``state["pen"]`` is the largest object depth beyond the allowance, which the
        step check compares before the cost."""
        cfg, frame_pos, frame_rot = self.config, self._frame_pos, self._frame_rot
        worst = 0.0
        e_pos = self._pos_t - np.array(self._pos_views).reshape(-1, 3)
        if len(self._strict_rows):
            worst = float(np.abs(e_pos.take(self._strict_rows, axis=0) * self._strict_axes).max())
        parts = [e_pos.reshape(-1)]
        for f, target, st in self._rot:
            e = pin.log3(target @ frame_rot[f].T)
            parts.append(e)
            if st:
                worst = max(worst, float(np.abs(e).max()))
        for f, axis, target, st in self._dir:
            e = _cross((frame_rot[f] @ axis)[None], target[None])[0]
            parts.append(e)
            if st:
                worst = max(worst, float(np.abs(e).max()))
        e_all = np.concatenate(parts)
        post = self.desc.default_q - q[7:]
        cost = float(e_all @ (self._task_w * e_all)) + float(self.posture[6:] @ (post * post))
        pts = self._points()
        ev: dict = {"e": e_all, "pen": 0.0, "pts": pts, "link_rot": self._link_rot, "link_pos": self._link_pos, "pin": 0.0}
        if self._pins:
            ev["pin"] = max(float(np.abs(p - frame_pos[f])[:2].max()) for f, p in self._pins)
        if len(self._floor_w):
            ev["floor"] = depth = cfg.floor_margin - pts[self._floor_w, 2]
            ev["pen"] = max(float(depth.max()), 0.0)
            worst = max(worst, ev["pen"])
        if collision is not None:
            ev["local"] = local = (pts - collision.pos) @ collision.rot
            # Pairs within the band: the step check reads their depth, the rows (if this q is taken)
            # their faces, so one pass serves both.
            idx, part = self._near_pairs(collision, ev, cfg.constraint_band)
            if self._exclude is not None:
                keep = ~self._exclude[idx]
                idx, part = idx[keep], part[keep]
            depth, normal = pair_depths(collision.hulls, local.take(idx, axis=0), part)
            ev["obj"] = idx, part, depth, normal
            if len(idx):
                ev["pen"] = max(float((depth - cfg.object_allowance).max()), ev["pen"])
                worst = max(worst, ev["pen"])
        return cost, worst, ev

    def _near_pairs(self, collision: Collision, ev: dict, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """(point, part) pairs with the point within ``margin`` of the part's bounding box: links
        whose sphere reaches a part's box first (cheap), then those links' points."""
        box = self._part_boxes(collision.hulls, margin)
        centres = np.einsum("lij,lj->li", ev["link_rot"], self._link_centre) + ev["link_pos"]
        origins = (centres - collision.pos) @ collision.rot  # [L, 3] sphere centres, object frame
        lk, pk = np.nonzero(_all3((origins[:, None] > box.sphere_lo) & (origins[:, None] < box.sphere_hi)))
        if not len(lk):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        idx = self._link_pad.take(lk, axis=0).reshape(-1)  # [pairs * K] point indices (-1: padding, any point here)
        part = np.repeat(pk, self._link_pad.shape[1])
        p = ev["local"].take(idx, axis=0)
        keep = _all3((p > box.lo.take(part, axis=0)) & (p < box.hi.take(part, axis=0))) & (idx >= 0)
        return idx[keep], part[keep]

    def _part_boxes(self, hulls: HullSet, margin: float) -> _PartBoxes:
        """The parts' boxes grown by ``margin`` (and by each link's sphere radius), once per object."""
        box = self._box_cache.get((hulls, margin))
        if box is None:
            r = self._link_radius[:, None, None] + margin
            box = _PartBoxes(hulls.part_lo - margin, hulls.part_hi + margin,
                             hulls.part_lo[None] - r, hulls.part_hi[None] + r)
            self._box_cache[(hulls, margin)] = box
        return box

    def _jac(self, f: int) -> np.ndarray:
        """Frame Jacobian (world-aligned) at the last linearisation point, cached per frame id."""
        J = self._jac_cache.get(f)
        if J is None:
            J = self._jac_cache[f] = pin.getFrameJacobian(self.model, self.data, f, LWA)
        return J

    def _point_rows(self, ev: dict, sel: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """n . J_point dq for collision points ``sel`` (n . v_p = n . v + w . (arm x n))."""
        lk = self.point_link.take(sel)
        order = np.argsort(lk, kind="stable")  # by link, so that each link's rows are one slice
        lk, sel, normals = lk.take(order), sel.take(order), normals.take(order, axis=0)
        arm = ev["pts"].take(sel, axis=0) - ev["link_pos"].take(lk, axis=0)
        w = np.concatenate([normals, _cross(arm, normals)], axis=1)  # [k, 6]
        rows = np.empty((len(sel), self.nv))
        bounds = run_bounds(lk).tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # one product per link
            rows[a:b] = w[a:b] @ self._jac(self.link_frame_list[lk[a]])
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def _linearize(self, q: np.ndarray, ev: dict) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Newton normal equations at q (whose placements and residuals were just evaluated)."""
        model, data = self.model, self.data
        pin.computeJointJacobians(model, data, q)
        self._jac_cache: dict[int, np.ndarray] = {}
        jac = self._jac
        blocks = ([jac(f)[:3] for f in self._pos_f] + [jac(f)[3:] for f, _, _ in self._rot]
                  + [jac(f)[3:] for f, _, _, _ in self._dir])
        A = np.concatenate(blocks) if blocks else np.zeros((0, self.nv))
        Aw = A * self._task_w[:, None]
        H = A.T @ Aw + self._H_reg
        g = Aw.T @ ev["e"]
        g[6:] += self.posture[6:] * (self.desc.default_q - q[7:])
        if self._pins:  # pinned sites: their horizontal rows (see _qp_step) at the same point
            self._pin_J = np.vstack([jac(f)[:2] for f, _ in self._pins])
            self._pin_e = np.concatenate([(p - self._frame_pos[f])[:2] for f, p in self._pins])
        return H, g

    def _constraint_rows(self, collision: Collision | None, ev: dict,
                         extra: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Constraint rows ``A dq >= lower`` at the last linearisation point: the floor's, and the
        deepest (point, part) pairs within ``constraint_band`` of the link's exit face (see
        ``_exit_faces``) plus the ``extra`` pairs: the point stays on the face's outer side up to the
        allowance (n . dp >= depth - allowance; > 0 pushes a deep point out)."""
        self._row_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        cfg = self.config
        floor_A = floor_lo = None
        if len(self._floor_w):  # the floor: points near it stay above it (dz >= depth)
            near = np.flatnonzero(ev["floor"] > -cfg.constraint_band)
            near = near[_deepest(self.point_link[self._floor_w[near]], ev["floor"][near], cfg.rows_per_link)]
            if len(near):
                normals = np.zeros((len(near), 3))
                normals[:, 2] = 1.0
                floor_A = self._point_rows(ev, self._floor_w[near], normals)
                floor_lo = np.minimum(ev["floor"][near], cfg.max_push)
        if collision is None:
            return floor_A, floor_lo
        idx, part, depth, normal, is_extra = self._exit_faces(collision, ev, extra)
        near = np.flatnonzero(~is_extra & (depth > -cfg.constraint_band))
        key = self.point_link[idx[near]] * len(collision.hulls.part_lo) + part[near]
        # The extra pairs come last (``_exit_faces``), after every near one: the union is the concatenation.
        sel = np.concatenate((near[_deepest(key, depth[near], cfg.rows_per_link)], np.flatnonzero(is_extra)))
        idx, part, depth, normal = idx.take(sel), part.take(sel), depth.take(sel), normal.take(sel, axis=0)
        self._row_pairs = idx, part
        if not len(idx):
            return floor_A, floor_lo
        A = self._point_rows(ev, idx, normal @ collision.rot.T)
        lower = np.minimum(depth - cfg.object_allowance, cfg.max_push)
        if floor_A is not None and floor_lo is not None:
            A, lower = np.vstack([floor_A, A]), np.concatenate((floor_lo, lower))
        return A, lower

    def _exit_faces(self, collision: Collision, ev: dict, extra: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(point, part, depth, outward normal, found by a rejected step) of the near and ``extra``
        pairs. Outside the part, the face is the point's own separating plane (the farthest one);
        inside, its exit face (``_link_faces``).

        A link leaves a part through one face: each point choosing its own nearest face sent the
        points of a finger inside a thin part out through opposite faces, rows that cannot all hold
        (soft, then violated) or that turn the link over from step to step."""
        hulls, local = collision.hulls, ev["local"]
        idx, part, depth, normal = ev["obj"]
        n_near = len(idx)
        if len(extra[0]):
            d2, n2 = pair_depths(hulls, local.take(extra[0], axis=0), extra[1])
            idx, part = np.concatenate((idx, extra[0])), np.concatenate((part, extra[1]))
            depth, normal = np.concatenate((depth, d2)), np.concatenate((normal, n2))
        is_extra = np.arange(len(idx)) >= n_near
        if len(extra[0]):  # a pair both near and extra is kept once, as extra (it gets a row anyway)
            _, first = np.unique((idx * len(hulls.part_lo) + part)[::-1], return_index=True)
            keep = np.sort(len(idx) - 1 - first)
            idx, part, depth, normal, is_extra = idx[keep], part[keep], depth[keep], normal[keep], is_extra[keep]
        inside = np.flatnonzero(depth > 0)
        if not len(inside):
            return idx, part, depth, normal, is_extra
        i, k = idx[inside], part[inside]
        depth, normal = depth.copy(), normal.copy()
        depth[inside], normal[inside] = face_depths(hulls, local.take(i, axis=0), k, self._link_faces(collision, ev, i, k))
        return idx, part, depth, normal, is_extra

    def _link_faces(self, collision: Collision, ev: dict, i: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Exit faces of inside points ``i`` in parts ``k``: each point's own (the face nearest to
        where it was at the end of the last frame: the way it came in), unless two points of one
        link would leave one part through opposite faces; then the link's exit face (kept for the
        rest of the frame). At a corner the own faces differ too, but a link may leave by both."""
        hulls = collision.hulls
        if self._faces_now:  # the fallback (``_exit_fallback``): each point's nearest face at its position now
            return nearest_faces(hulls, ev["local"].take(i, axis=0), k)
        ref = (ev["local"] if self._prev_local is None else self._prev_local).take(i, axis=0)
        faces = nearest_faces(hulls, ref, k)
        link = self.point_link[i]
        known = self._faces[link, k]
        faces = np.where(known >= 0, known, faces)
        open_ = np.flatnonzero(known < 0)
        own = hulls.normals[k[open_], faces[open_]]
        if not len(open_) or (own @ own.T).min() >= self.config.exit_face_cos:
            return faces  # no two own faces oppose each other (the common case): nothing to share
        key = link[open_] * len(hulls.part_lo) + k[open_]
        # Only (link, part) keys whose points disagree can conflict (the common case is one face).
        keys = np.unique(key * hulls.normals.shape[1] + faces[open_]) // hulls.normals.shape[1]
        n_keys = len(self.link_frames) * len(hulls.part_lo)
        cand = _isin_keys(key, keys[1:][keys[1:] == keys[:-1]], n_keys)
        if cand.any():
            c = open_[cand]
            shared = group_faces(hulls, ref[c], k[c], link[c])
            dot = np.einsum("ij,ij->i", hulls.normals[k[c], faces[c]], hulls.normals[k[c], shared])
            conflict = _isin_keys(key[cand], key[cand][dot < self.config.exit_face_cos], n_keys)  # some point would go the other way
            c, shared = c[conflict], shared[conflict]
            faces[c] = shared
            self._faces[link[c], k[c]] = shared
        return faces


def _object_excess(ev: dict, allowance: float) -> float:
    """Deepest object penetration beyond the allowance in an evaluation (-inf: no pair near)."""
    depth = ev["obj"][2] if "obj" in ev else ()
    return float(np.max(depth)) - allowance if len(depth) else -np.inf


def _deepest(key: np.ndarray, depth: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` deepest entries of each key (all when k <= 0)."""
    if k <= 0 or not len(key):
        return np.arange(len(key))
    order = np.lexsort((-depth, key))
    ks = key[order]
    bounds = run_bounds(ks)
    rank = np.arange(len(ks)) - np.repeat(bounds[:-1], bounds[1:] - bounds[:-1])
    return np.sort(order[rank < k])


def _pair_set(pairs: tuple[np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
    """(point, part) index arrays as a set of pairs."""
    return set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


def _isin_keys(values: np.ndarray, members: np.ndarray, size: int) -> np.ndarray:
    """np.isin for integer keys in [0, size): a lookup table (np.isin's setup costs more here)."""
    table = np.zeros(size, bool)
    table[members] = True
    return table[values]


def _all3(c: np.ndarray) -> np.ndarray:
    """np.all over a last axis of length 3 (a generic reduction costs several times more)."""
    return c[..., 0] & c[..., 1] & c[..., 2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product (np.cross and np.stack are slow on small arrays)."""
    out = np.empty((len(a), 3))
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out
