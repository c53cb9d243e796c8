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

from dataclasses import dataclass, field

import numpy as np
import pinocchio as pin

from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.retarget.geometry import HullSet, hull_depth

LWA = pin.ReferenceFrame.LOCAL_WORLD_ALIGNED


@dataclass(frozen=True)
class IKConfig:
    iterations: int = 3  # per frame, warm-started from the previous frame
    max_iterations: int = 8  # while a contact or collision residual is above tolerance
    first_frame_iterations: int = 60
    tolerance: float = 0.002  # m: contact / foot / penetration residual that ends the iterations
    damping: float = 1e-3
    root_damping: float = 1e-4
    object_weight: float = 200.0
    floor_weight: float = 200.0
    object_margin: float = 0.003  # keep collision points this far outside the object's parts
    floor_margin: float = 0.0


@dataclass
class Task:
    """Position (3 rows) or orientation (3 rows) of one Pinocchio frame; ``axes`` picks rows."""

    frame: int
    kind: str  # "pos" | "rot"
    target: np.ndarray
    weight: float
    axes: tuple[int, ...] = (0, 1, 2)


@dataclass
class Collision:
    """The object's convex parts at this frame (pose: world = R @ local + t)."""

    hulls: HullSet
    rot: np.ndarray
    pos: np.ndarray


def solve_box_ls(H: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, offset: int) -> np.ndarray:
    """argmin 0.5 x'Hx - g'x with lo <= x[offset:] <= hi (H positive definite), by active set."""
    n = len(g)
    x = np.linalg.solve(H, g)
    fixed = np.zeros(n, bool)
    xb = np.zeros(n)
    for _ in range(n):
        xs = x[offset:]
        over, under = xs > hi + 1e-12, xs < lo - 1e-12
        if not (over.any() or under.any()):
            break
        newly = np.zeros(n, bool)
        newly[offset:] = over | under
        xb[offset:][over] = hi[over]
        xb[offset:][under] = lo[under]
        fixed |= newly
        free = ~fixed
        rhs = g[free] - H[np.ix_(free, fixed)] @ xb[fixed]
        x = xb.copy()
        x[free] = np.linalg.solve(H[np.ix_(free, free)], rhs)
    x[fixed] = xb[fixed]
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
        # Points are stored link by link: contiguous slices per frame id.
        starts = np.flatnonzero(np.r_[True, np.diff(cp.frame_ids) != 0])
        stops = np.r_[starts[1:], len(cp.frame_ids)]
        self.point_groups = [(int(cp.frame_ids[a]), a, b) for a, b in zip(starts, stops, strict=True)]
        self.points_local = cp.local
        self.point_frame = cp.frame_ids
        reg = np.full(self.nv, self.config.damping)
        reg[:6] = self.config.root_damping
        self.reg = reg
        self.posture = np.r_[np.zeros(6), d.posture_weights]

    # -- geometry at the current q -----------------------------------------------------------
    def _points(self) -> np.ndarray:
        out = np.empty_like(self.points_local)
        for fid, a, b in self.point_groups:
            M = self.data.oMf[fid]
            out[a:b] = self.points_local[a:b] @ M.rotation.T + M.translation
        return out

    def _point_rows(self, idx: np.ndarray, pts: np.ndarray, normals: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
        rows = np.empty((len(idx), self.nv))
        for r, (i, n) in enumerate(zip(idx, normals, strict=True)):
            fid = int(self.point_frame[i])
            J = cache.get(fid)
            if J is None:
                J = cache[fid] = pin.getFrameJacobian(self.model, self.data, fid, LWA)
            arm = pts[i] - self.data.oMf[fid].translation
            # velocity of the point = v + w x arm = v - arm x w
            jp = J[:3] - np.cross(arm[:, None], J[3:], axis=0)
            rows[r] = n @ jp
        return rows

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
              collision: Collision | None, iterations: int, strict: list[int] | None = None) -> np.ndarray:
        """Iterate from q; ``lo``/``hi`` bound the joint coordinates; ``strict`` tasks (indices)
        keep iterating (up to max_iterations) until their error is below tolerance."""
        cfg, model, data = self.config, self.model, self.data
        q = q.copy()
        n_iter = max(iterations, 1)
        it = 0
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
            pts = self._points()
            below = np.flatnonzero(pts[:, 2] < cfg.floor_margin)
            if len(below):
                up = np.tile([0.0, 0.0, 1.0], (len(below), 1))
                blocks.append(self._point_rows(below, pts, up, cache))
                depth = cfg.floor_margin - pts[below, 2]
                errs.append(depth)
                weights.append(np.full(len(below), cfg.floor_weight))
                worst = max(worst, float(depth.max()) - cfg.floor_margin)
            if collision is not None:
                local = (pts - collision.pos) @ collision.rot
                depth, normal = hull_depth(collision.hulls, local, cfg.object_margin)
                inside = np.flatnonzero(depth > -cfg.object_margin)
                if len(inside):
                    nw = normal[inside] @ collision.rot.T
                    blocks.append(self._point_rows(inside, pts, nw, cache))
                    errs.append(depth[inside] + cfg.object_margin)
                    weights.append(np.full(len(inside), cfg.object_weight))
                    worst = max(worst, float(depth[inside].max()))
            A = np.vstack(blocks)
            b = np.concatenate(errs)
            w = np.concatenate(weights)
            Aw = A * w[:, None]
            H = A.T @ Aw + np.diag(self.reg + self.posture)
            g = Aw.T @ b
            g[6:] += self.posture[6:] * (self.desc.default_q - q[7:])
            dq = solve_box_ls(H, g, lo - q[7:], hi - q[7:], 6)
            q = pin.integrate(model, q, dq)
            q[7:] = np.clip(q[7:], lo, hi)
            it += 1
            if it >= max(cfg.max_iterations, n_iter) or (it >= n_iter and worst <= cfg.tolerance):
                break
        return q
