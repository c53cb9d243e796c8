"""Per-frame inverse kinematics with Pinocchio: weighted damped least squares under joint bounds.

Each iteration linearises every task at the current configuration q (frame Jacobians in the
world-aligned frame) and solves

    min_dq  sum_k w_k |J_k dq - e_k|^2 + dq' D dq + sum_j p_j (q_j + dq_j - q0_j)^2
    s.t.    lo <= q_joints + dq_joints <= hi

where [lo, hi] is the URDF position range intersected with the velocity limit around the previous
frame (|q_t - q_{t-1}| <= v_max / fps). The box constraints are handled exactly by a small active-set
loop (clamp the violators, re-solve for the free DOF), so no QP library is needed and a frame costs
a few 49x49 solves. Penetration of the floor and of the object's convex parts enters as stiff
one-sided (hinge) terms on the robot's collision points near them. Every step is verified against
the full cost (Levenberg-Marquardt): a step that makes it worse is taken back and retried with more
damping, so a frame never ends on an overshoot. Tasks are grouped by kind, so evaluating the cost is
a few vector operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pinocchio as pin

from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.retarget.geometry import HullSet, hull_depth

LWA = pin.ReferenceFrame.LOCAL_WORLD_ALIGNED


@dataclass(frozen=True)
class IKConfig:
    iterations: int = 2  # per frame, warm-started from the previous frame
    max_iterations: int = 3  # while a contact or collision residual is above tolerance (more: no gain)
    first_frame_iterations: int = 60
    tolerance: float = 0.002  # m: contact / foot / penetration residual that ends the iterations
    damping: float = 1e-3
    root_damping: float = 1e-4
    object_weight: float = 200.0
    floor_weight: float = 2000.0
    object_margin: float = 0.003  # keep collision points this far outside the object's parts
    floor_margin: float = 0.0
    floor_tolerance: float = 0.002  # m: after each frame the root rises until no point is deeper
    step_tolerance: float = 3e-3  # rad / m: a step this small means converged (residuals conflict)
    points_per_link: int = 10  # collision points the IK checks (the metrics check all of them)
    candidate_buffer: float = 0.05  # m: points this close to the object at a frame's start are watched
    depth_band: float = 0.02  # m: object depth is computed for points this close to a part's box
    floor_buffer: float = 0.15  # m: ... and this close to the floor (a swing foot drops fast)


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
        self.points_local = cp.local[keep]
        # Points of the link that carries each hand's contact site: while that hand holds the object
        # its site task defines the contact (on the visual surface, a few mm inside the convex
        # parts), so those points get no object rows; the fingers still do.
        names = np.asarray(cp.link_names)[keep]
        self.hand_points = [names == d.config.site(h.site).link for h in d.config.hands]
        reg = np.full(self.nv, self.config.damping)
        reg[:6] = self.config.root_damping
        self.reg = reg
        self.posture = np.r_[np.zeros(6), d.posture_weights]

    # -- geometry at the current q -----------------------------------------------------------
    def _points(self) -> np.ndarray:
        """World positions of all collision points (and the link placements, kept for Jacobians)."""
        oMf = self.data.oMf
        self._links = np.array([oMf[f].homogeneous for f in self.link_frame_list])  # [L, 4, 4]
        M = self._links[self.point_link]
        return np.einsum("nij,nj->ni", M[:, :3, :3], self.points_local) + M[:, :3, 3]

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

    def lift_above_floor(self, q: np.ndarray, tolerance: float) -> np.ndarray:
        """q with the root raised so that no collision point is more than ``tolerance`` below the
        floor: what the last iterations left (a planted sole pressed in by the hands' pull) goes."""
        pin.framesForwardKinematics(self.model, self.data, q)
        low = float(self._points()[:, 2].min())
        if low < -tolerance:
            q = q.copy()
            q[2] += -tolerance - low
        return q

    # -- one frame ---------------------------------------------------------------------------
    def solve(self, q: np.ndarray, tasks: list[Task], lo: np.ndarray, hi: np.ndarray,
              collision: Collision | None, iterations: int, strict: list[int] | None = None,
              holding: tuple[int, ...] = ()) -> np.ndarray:
        """Iterate from q; ``lo``/``hi`` bound the joint coordinates; ``strict`` tasks (indices)
        keep iterating (up to max_iterations) until their error is below tolerance; ``holding``
        hands (indices) are in contact: their points are left out of the object rows.

        Every step is verified (Levenberg-Marquardt): a step that raises the cost is taken back and
        retried with more damping, so the returned q is never worse than the start."""
        cfg, model, data = self.config, self.model, self.data
        self._group_tasks(tasks, set(strict or ()))
        n_iter = max(iterations, 1)
        max_it = max(cfg.max_iterations, n_iter)
        pin.framesForwardKinematics(model, data, q)
        pts_all = self._points()
        near_floor = np.flatnonzero(pts_all[:, 2] < cfg.floor_margin + cfg.floor_buffer)
        near_obj = np.zeros(0, np.int64)
        if collision is not None:  # points near a convex part's box: cheap and enough
            exclude = np.zeros(len(pts_all), bool)
            for h in holding:
                exclude |= self.hand_points[h]
            near_obj = near_parts(collision, pts_all, cfg.candidate_buffer, exclude)
        watch, inv = np.unique(np.r_[near_floor, near_obj], return_inverse=True)
        self._watch, self._floor_w, self._obj_w = watch, inv[: len(near_floor)], inv[len(near_floor):]
        self._w_links, self._w_inv = np.unique(self.point_link[watch], return_inverse=True)
        self._w_local = self.points_local[watch]
        self._active_floor = np.zeros(len(near_floor), bool)
        self._active_obj = np.zeros(len(near_obj), bool)

        best_q = q.copy()
        best_cost, worst, ev = self._evaluate(collision, q)
        mu, fresh = 0.0, True
        H, g = self._linearize(best_q, collision, ev)
        it = 0
        while True:
            if not fresh:  # linearise at the newly accepted point
                H, g = self._linearize(best_q, collision, ev)
                mu = 0.0 if mu < 1e-3 else 0.1 * mu
                fresh = True
            Hd = H + mu * np.diag(np.diag(H)) if mu > 0 else H
            dq = solve_box_ls(Hd, g, lo - best_q[7:], hi - best_q[7:], 6)
            q = pin.integrate(model, best_q, dq)
            q[7:] = np.clip(q[7:], lo, hi)
            it += 1
            pin.framesForwardKinematics(model, data, q)
            cost, w_new, ev_new = self._evaluate(collision, q)
            if cost <= best_cost:
                best_q, best_cost, worst, ev, fresh = q, cost, w_new, ev_new, False
                small = float(np.abs(dq).max()) < cfg.step_tolerance
            else:  # worse: take it back, damp harder (a singular straight knee, a row that switched on)
                mu = max(10.0 * mu, 1e-2)
                small = False
            if it >= max_it or (it >= n_iter and (worst <= cfg.tolerance or small)):
                break
        return best_q

    def _group_tasks(self, tasks: list[Task], strict: set[int]) -> None:
        """Tasks by kind, as arrays: each evaluation is then a few vector operations."""
        pos = [(k, t) for k, t in enumerate(tasks) if t.kind == "pos"]
        rot = [(k, t) for k, t in enumerate(tasks) if t.kind == "rot"]
        dirs = [(k, t) for k, t in enumerate(tasks) if t.kind == "dir"]
        self._pos_f = [t.frame for _, t in pos]
        self._pos_t = np.array([t.target for _, t in pos], dtype=np.float64).reshape(-1, 3)
        wp = np.zeros((len(pos), 3))
        for i, (_, t) in enumerate(pos):
            wp[i, list(t.axes)] = t.weight
        self._pos_strict = np.array([k in strict for k, _ in pos], bool)
        self._rot = [(t.frame, np.asarray(t.target), k in strict) for k, t in rot]
        self._dir = [(t.frame, np.asarray(t.axis), np.asarray(t.target), k in strict) for k, t in dirs]
        self._task_w = np.concatenate([wp.reshape(-1), np.repeat([t.weight for _, t in rot], 3),
                                       np.repeat([t.weight for _, t in dirs], 3)])
        self._pos_axes = wp > 0

    def _evaluate(self, collision: Collision | None, q: np.ndarray) -> tuple[float, float, dict]:
        """(cost, worst strict / penetration residual, state) at the placements in ``self.data``.
        Floor and object enter the cost as hinges (zero outside the margin), so costs of different
        configurations compare; the rows that have been active this frame stay sticky."""
        cfg, oMf = self.config, self.data.oMf
        worst = 0.0
        e_pos = self._pos_t - np.array([oMf[f].translation for f in self._pos_f]).reshape(-1, 3)
        if self._pos_strict.any():
            worst = float(np.abs(e_pos[self._pos_strict] * self._pos_axes[self._pos_strict]).max())
        parts = [e_pos.reshape(-1)]
        for f, target, st in self._rot:
            e = pin.log3(target @ oMf[f].rotation.T)
            parts.append(e)
            if st:
                worst = max(worst, float(np.abs(e).max()))
        for f, axis, target, st in self._dir:
            e = _cross((oMf[f].rotation @ axis)[None], target[None])[0]
            parts.append(e)
            if st:
                worst = max(worst, float(np.abs(e).max()))
        e_all = np.concatenate(parts)
        post = self.desc.default_q - q[7:]
        cost = float(e_all @ (self._task_w * e_all)) + float(self.posture[6:] @ (post * post))
        ev: dict = {"e": e_all}
        if len(self._watch):
            Ms = np.array([oMf[self.link_frame_list[li]].homogeneous for li in self._w_links])
            M = Ms[self._w_inv]
            pts = np.einsum("nij,nj->ni", M[:, :3, :3], self._w_local) + M[:, :3, 3]
            ev["pts"], ev["origins"] = pts, M[:, :3, 3]
            if len(self._floor_w):
                depth = cfg.floor_margin - pts[self._floor_w, 2]
                self._active_floor |= depth > 0
                ev["floor"] = depth
                pen = np.maximum(depth, 0.0)
                cost += cfg.floor_weight * float(pen @ pen)
                worst = max(worst, float(pen.max()))
            if collision is not None and len(self._obj_w):
                local = (pts[self._obj_w] - collision.pos) @ collision.rot
                depth, normal = hull_depth(collision.hulls, local, cfg.depth_band)
                depth += cfg.object_margin  # > 0: inside the margin
                self._active_obj |= depth > 0
                ev["obj"], ev["obj_n"] = depth, normal
                pen = np.maximum(depth, 0.0)
                cost += cfg.object_weight * float(pen @ pen)
                worst = max(worst, float(pen.max()))
        return cost, worst, ev

    def _linearize(self, q: np.ndarray, collision: Collision | None, ev: dict) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Newton normal equations at q (whose placements and residuals were just evaluated)."""
        cfg, model, data = self.config, self.model, self.data
        pin.computeJointJacobians(model, data, q)
        cache: dict[int, np.ndarray] = {}

        def jac(f: int) -> np.ndarray:
            J = cache.get(f)
            if J is None:
                J = cache[f] = pin.getFrameJacobian(model, data, f, LWA)
            return J

        blocks = [np.stack([jac(f)[:3] for f in self._pos_f]).reshape(-1, self.nv) if self._pos_f else np.zeros((0, self.nv))]
        blocks += [jac(f)[3:] for f, _, _ in self._rot] + [jac(f)[3:] for f, _, _, _ in self._dir]
        bs, ws = [ev["e"]], [self._task_w]
        if len(self._watch):
            pts, origins = ev["pts"], ev["origins"]
            Jw = np.stack([jac(self.link_frame_list[li]) for li in self._w_links])  # [k, 6, nv]

            def rows(sel: np.ndarray, normals: np.ndarray) -> np.ndarray:
                """n . J_point dq for watched points ``sel`` (n . v_p = n . v + w . (arm x n))."""
                J = Jw[self._w_inv[sel]]
                c = _cross(pts[sel] - origins[sel], normals)
                return np.einsum("ki,kij->kj", normals, J[:, :3]) + np.einsum("ki,kij->kj", c, J[:, 3:])

            # Rows once active stay for the frame (held at the margin): rows that switch on and off
            # between iterations make Gauss-Newton oscillate.
            act = np.flatnonzero(self._active_floor)
            if len(act):
                normals = np.zeros((len(act), 3))
                normals[:, 2] = 1.0
                blocks.append(rows(self._floor_w[act], normals))
                bs.append(ev["floor"][act])
                ws.append(np.full(len(act), cfg.floor_weight))
            act = np.flatnonzero(self._active_obj & np.isfinite(ev.get("obj", np.zeros(0))))
            if collision is not None and len(act):
                blocks.append(rows(self._obj_w[act], ev["obj_n"][act] @ collision.rot.T))
                bs.append(ev["obj"][act])
                ws.append(np.full(len(act), cfg.object_weight))
        A = np.vstack(blocks)
        b = np.concatenate(bs)
        w = np.concatenate(ws)
        Aw = A * w[:, None]
        H = A.T @ Aw + np.diag(self.reg + self.posture)
        g = Aw.T @ b
        g[6:] += self.posture[6:] * (self.desc.default_q - q[7:])
        return H, g


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product (np.cross is slow on small arrays)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
                     a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)


def near_parts(collision: Collision, pts: np.ndarray, buffer: float, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the points within ``buffer`` of some convex part's bounding box."""
    hb = collision.hulls
    local = (pts - collision.pos) @ collision.rot
    near = np.all((local > hb.lo - buffer) & (local < hb.hi + buffer), axis=1)
    if exclude is not None:
        near &= ~exclude
    idx = np.flatnonzero(near)
    if len(idx):
        inside = (local[idx, None] > hb.part_lo[None] - buffer) & (local[idx, None] < hb.part_hi[None] + buffer)
        idx = idx[inside.all(axis=2).any(axis=1)]
    return idx
