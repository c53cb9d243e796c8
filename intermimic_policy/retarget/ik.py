"""Per-frame inverse kinematics with Pinocchio: weighted damped least squares under joint bounds.

Each iteration linearises every task at the current configuration q (frame Jacobians in the
world-aligned frame) and solves

    min_dq  sum_k w_k |J_k dq - e_k|^2 + dq' D dq + sum_j p_j (q_j + dq_j - q0_j)^2
    s.t.    lo <= q_joints + dq_joints <= hi

where [lo, hi] is the URDF position range intersected with the velocity limit around the previous
frame (|q_t - q_{t-1}| <= v_max / fps). The box constraints are handled exactly by a small active-set
loop (clamp the violators, re-solve for the free DOF), so no QP library is needed and a frame costs
a few 49x49 solves. Penetration of the floor and of the object's convex parts enters as stiff
one-sided residuals on the robot's collision points that are inside (or within a margin).
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
    step_tolerance: float = 3e-3  # rad / m: a step this small means converged (residuals conflict)
    points_per_link: int = 10  # collision points the IK checks (the metrics check all of them)
    candidate_buffer: float = 0.05  # m: points this close to the object at a frame's start are watched
    floor_buffer: float = 0.15  # m: ... and this close to the floor (a swing foot drops fast)
    recheck_depth: float = 0.01  # m: object depth after the last step that earns extra iterations


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

    def _points_subset(self, idx: np.ndarray) -> np.ndarray:
        """World positions of points ``idx`` only (placements of their links only)."""
        links = self.point_link[idx]
        uniq, inv = np.unique(links, return_inverse=True)
        oMf = self.data.oMf
        Ms = np.array([oMf[self.link_frame_list[int(li)]].homogeneous for li in uniq])[inv]
        self._links[links] = Ms
        return np.einsum("nij,nj->ni", Ms[:, :3, :3], self.points_local[idx]) + Ms[:, :3, 3]

    def _point_rows(self, idx: np.ndarray, pts: np.ndarray, normals: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
        """Rows n . J_point dq for points ``idx`` (world positions ``pts``) along ``normals``
        (n . v_p = n . v + w . (arm x n))."""
        links = self.point_link[idx]
        uniq, inv = np.unique(links, return_inverse=True)
        Js = []
        for li in uniq:
            fid = self.link_frame_list[int(li)]
            J = cache.get(fid)
            if J is None:
                J = cache[fid] = pin.getFrameJacobian(self.model, self.data, fid, LWA)
            Js.append(J)
        J = np.stack(Js)[inv]  # [k, 6, nv]
        arm = pts - self._links[links, :3, 3]
        c = np.cross(arm, normals)
        return np.einsum("ki,kij->kj", normals, J[:, :3]) + np.einsum("ki,kij->kj", c, J[:, 3:])

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

    # -- one frame ---------------------------------------------------------------------------
    def solve(self, q: np.ndarray, tasks: list[Task], lo: np.ndarray, hi: np.ndarray,
              collision: Collision | None, iterations: int, strict: list[int] | None = None,
              holding: tuple[int, ...] = ()) -> np.ndarray:
        """Iterate from q; ``lo``/``hi`` bound the joint coordinates; ``strict`` tasks (indices)
        keep iterating (up to max_iterations) until their error is below tolerance; ``holding``
        hands (indices) are in contact: their points are left out of the object rows."""
        cfg, model, data = self.config, self.model, self.data
        q = q.copy()
        n_iter = max(iterations, 1)
        it = 0
        mu = 0.0
        best: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        while True:
            pin.computeJointJacobians(model, data, q)
            pin.updateFramePlacements(model, data)
            cache: dict[int, np.ndarray] = {}
            blocks, errs, weights = [], [], []
            worst = 0.0
            for k, t in enumerate(tasks):
                J = cache.get(t.frame)
                if J is None:
                    J = cache[t.frame] = pin.getFrameJacobian(model, data, t.frame, LWA)
                M = data.oMf[t.frame]
                if t.kind == "pos":
                    e = t.target - M.translation
                    Jr = J[:3]
                elif t.kind == "dir":
                    assert t.axis is not None
                    e = np.cross(M.rotation @ t.axis, t.target)
                    Jr = J[3:]
                else:
                    e = pin.log3(t.target @ M.rotation.T)
                    Jr = J[3:]
                if len(t.axes) < 3:
                    e, Jr = e[list(t.axes)], Jr[list(t.axes)]
                if strict is not None and k in strict:
                    worst = max(worst, float(np.abs(e).max()))
                blocks.append(Jr)
                errs.append(e)
                weights.append(np.full(len(e), t.weight))
            if it == 0:  # watch the points near the floor or the object for this frame's iterations
                pts_all = self._points()
                near_floor = pts_all[:, 2] < cfg.floor_margin + cfg.floor_buffer
                near_obj = np.zeros(len(pts_all), bool)
                if collision is not None:
                    local = (pts_all - collision.pos) @ collision.rot
                    hb, m = collision.hulls, cfg.candidate_buffer  # near a part's box: cheap and enough
                    near_obj = np.zeros(len(local), bool)
                    box = np.flatnonzero(np.all((local > hb.lo - m) & (local < hb.hi + m), axis=1))
                    if len(box):
                        inside = (local[box, None] > hb.part_lo[None] - m) & (local[box, None] < hb.part_hi[None] + m)
                        near_obj[box] = inside.all(axis=2).any(axis=1)
                    for h in holding:
                        near_obj &= ~self.hand_points[h]
                watch = np.flatnonzero(near_floor | near_obj)
                watch_obj = near_obj[watch]
                active_floor = np.zeros(len(watch), bool)
                active_obj = np.zeros(len(watch), bool)
            if len(watch):
                # A point once found penetrating keeps its row for the rest of the frame (held at the
                # margin): rows that switch on and off between iterations make Gauss-Newton oscillate.
                pts = self._points_subset(watch) if it > 0 else pts_all[watch]
                active_floor |= pts[:, 2] < cfg.floor_margin
                below = np.flatnonzero(active_floor)
                if len(below):
                    up = np.tile([0.0, 0.0, 1.0], (len(below), 1))
                    blocks.append(self._point_rows(watch[below], pts[below], up, cache))
                    depth = cfg.floor_margin - pts[below, 2]
                    errs.append(depth)
                    weights.append(np.full(len(below), cfg.floor_weight))
                    worst = max(worst, float(depth.max()) - cfg.floor_margin)
                if collision is not None and watch_obj.any():
                    sel = np.flatnonzero(watch_obj)
                    local = (pts[sel] - collision.pos) @ collision.rot
                    depth, normal = hull_depth(collision.hulls, local, cfg.candidate_buffer)
                    active_obj[sel] |= depth > -cfg.object_margin
                    keep = active_obj[sel] & np.isfinite(depth)
                    inside = np.flatnonzero(keep)
                    if len(inside):
                        nw = normal[inside] @ collision.rot.T
                        blocks.append(self._point_rows(watch[sel[inside]], pts[sel[inside]], nw, cache))
                        errs.append(depth[inside] + cfg.object_margin)
                        weights.append(np.full(len(inside), cfg.object_weight))
                        worst = max(worst, float(depth[inside].max()))
            A = np.vstack(blocks)
            b = np.concatenate(errs)
            w = np.concatenate(weights)
            post = self.desc.default_q - q[7:]
            cost = float(b @ (w * b)) + float(self.posture[6:] @ (post * post))
            if best is not None and cost > best[0]:
                # Levenberg-Marquardt: the step made things worse (a singular straight knee, a row that
                # switched on): go back and damp harder.
                mu = max(10.0 * mu, 1e-2)
                _, q, H, g = best
                q = q.copy()
            else:
                Aw = A * w[:, None]
                H = A.T @ Aw + np.diag(self.reg + self.posture)
                g = Aw.T @ b
                g[6:] += self.posture[6:] * post
                best = (cost, q.copy(), H, g)
                mu = 0.0 if mu < 1e-3 else 0.1 * mu
            Hd = H + mu * np.diag(np.diag(H)) if mu > 0 else H
            dq = solve_box_ls(Hd, g, lo - q[7:], hi - q[7:], 6)
            q = pin.integrate(model, q, dq)
            q[7:] = np.clip(q[7:], lo, hi)
            it += 1
            done = worst <= cfg.tolerance or float(np.abs(dq).max()) < cfg.step_tolerance
            if it >= max(cfg.max_iterations, n_iter) or (it >= n_iter and done):
                # The last step is unverified: if it pushed a watched point into the floor or the
                # object, take up to two more iterations (their rows are then active).
                if it < max(cfg.max_iterations, n_iter) + 2 and len(watch) and self._penetrates(q, watch, watch_obj, collision):
                    continue
                break
        return q

    def _penetrates(self, q: np.ndarray, watch: np.ndarray, watch_obj: np.ndarray, collision: Collision | None) -> bool:
        cfg = self.config
        pin.framesForwardKinematics(self.model, self.data, q)
        pts = self._points_subset(watch)
        if float(pts[:, 2].min()) < cfg.floor_margin - cfg.tolerance:
            return True
        if collision is not None and watch_obj.any():
            local = (pts[watch_obj] - collision.pos) @ collision.rot
            return bool(hull_depth(collision.hulls, local)[0].max() > cfg.recheck_depth)
        return False
