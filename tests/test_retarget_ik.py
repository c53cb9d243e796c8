"""IK core: reaches reachable targets, respects position and velocity bounds; the box solver is exact;
the step QP keeps its box and non-penetration rows."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import pytest
from scipy.optimize import lsq_linear

from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.retarget.ik import FrameSolver, IKConfig, Task, solve_box_ls


@pytest.fixture(scope="module")
def g1(data_root):  # noqa: ARG001 - the G1 URDF lives in the shared data
    return load_robot("g1")


def test_box_solver_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        A = rng.normal(size=(30, 12))
        b = rng.normal(size=30)
        lo = -rng.uniform(0.0, 0.3, size=9)
        hi = rng.uniform(0.0, 0.3, size=9)
        x = solve_box_ls(A.T @ A, A.T @ b, lo, hi, offset=3)
        ref = lsq_linear(A, b, bounds=(np.r_[[-np.inf] * 3, lo], np.r_[[np.inf] * 3, hi])).x
        assert np.all(x[3:] >= lo - 1e-12) and np.all(x[3:] <= hi + 1e-12)
        cost = np.sum((A @ x - b) ** 2)
        assert cost <= np.sum((A @ ref - b) ** 2) + 1e-6


def test_ik_reaches_reachable_targets(g1) -> None:
    rng = np.random.default_rng(1)
    frames = ["pelvis", "left_palm", "right_palm", "left_sole", "right_sole", "left_elbow_link", "head"]
    fids = [g1.frame_id(f) for f in frames]
    solver = FrameSolver(g1, IKConfig(max_iterations=80, tolerance=1e-5, floor_margin=-10.0))  # floor out of the way
    for _ in range(3):
        q_star = g1.neutral_q(height=1.5)
        span = g1.upper - g1.lower
        q_star[7:] = np.clip(g1.default_q + rng.uniform(-0.25, 0.25, g1.num_dofs) * span, g1.lower, g1.upper)
        targets = g1.frame_positions(q_star, frames)
        tasks = [Task(f, "pos", p, 1e5) for f, p in zip(fids, targets, strict=True)]
        tasks.append(Task(fids[0], "rot", pin.Quaternion(q_star[3:7]).toRotationMatrix(), 1e5))
        q = solver.solve(g1.neutral_q(height=1.5), tasks, g1.lower, g1.upper, None, iterations=80, strict=list(range(len(tasks))))
        reached = g1.frame_positions(q, frames)
        assert np.abs(reached - targets).max() < 2e-3, np.abs(reached - targets).max(axis=1)
        assert np.all(q[7:] >= g1.lower - 1e-9) and np.all(q[7:] <= g1.upper + 1e-9)


def test_ik_respects_position_and_velocity_bounds(g1) -> None:
    solver = FrameSolver(g1, IKConfig(max_iterations=20))
    q0 = g1.neutral_q()
    far = g1.frame_positions(q0, ["left_palm"])[0] + np.array([0.0, 1.5, 1.5])  # out of reach
    tasks = [Task(g1.frame_id("left_palm"), "pos", far, 100.0),
             Task(g1.frame_id("pelvis"), "pos", q0[:3].copy(), 1000.0)]
    q = solver.solve(q0, tasks, g1.lower, g1.upper, None, iterations=20)
    assert np.all(q[7:] >= g1.lower - 1e-9) and np.all(q[7:] <= g1.upper + 1e-9)
    assert np.any(np.isclose(q[7:], g1.lower) | np.isclose(q[7:], g1.upper))  # it pushed into a limit
    step = g1.velocity_limit / 30.0 * 0.05  # a tight velocity box around the start
    lo, hi = np.maximum(g1.lower, q0[7:] - step), np.minimum(g1.upper, q0[7:] + step)
    q = solver.solve(q0, tasks, lo, hi, None, iterations=20)
    assert np.all(q[7:] >= lo - 1e-9) and np.all(q[7:] <= hi + 1e-9)


def test_hull_depth_is_exact_for_boxes() -> None:
    """Penetration depth against convex parts: two unit-ish boxes, points inside and near them."""
    import trimesh

    from intermimic_policy.retarget.geometry import hull_depth, hull_set

    a = trimesh.creation.box(extents=(0.4, 0.2, 0.2))
    b = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    b.apply_translation((0.0, 0.0, 0.3))
    hulls = hull_set(((np.asarray(a.vertices), np.asarray(a.faces)), (np.asarray(b.vertices), np.asarray(b.faces))))
    rng = np.random.default_rng(3)
    pts = rng.uniform((-0.3, -0.2, -0.2), (0.3, 0.2, 0.5), size=(2000, 3))

    def box_depth(p: np.ndarray, half: np.ndarray, centre: np.ndarray) -> np.ndarray:
        return np.min(half - np.abs(p - centre), axis=1)  # > 0 inside: distance to the nearest face

    ref = np.maximum(box_depth(pts, np.array([0.2, 0.1, 0.1]), np.zeros(3)),
                     box_depth(pts, np.array([0.1, 0.1, 0.1]), np.array([0.0, 0.0, 0.3])))
    depth, normal = hull_depth(hulls, pts, margin=0.02)
    inside = ref > 0
    assert inside.sum() > 100
    assert np.allclose(depth[inside], ref[inside], atol=1e-9)
    assert np.allclose(np.linalg.norm(normal[inside], axis=1), 1.0)
    assert np.all(depth[ref < -0.05] < 0)


def test_every_step_is_verified_and_the_floor_is_kept(g1) -> None:
    """The solver never returns a configuration costlier than its start (rejected steps are taken
    back), and the floor pass leaves no collision point deeper than its tolerance."""
    rng = np.random.default_rng(2)
    solver = FrameSolver(g1, IKConfig(floor_margin=-10.0))  # tasks only: the cost is theirs
    q0 = g1.neutral_q()
    frames = ["left_palm", "right_palm", "left_sole"]
    for _ in range(5):
        # Far, conflicting targets: full Gauss-Newton steps overshoot and must be taken back.
        targets = g1.frame_positions(q0, frames) + rng.normal(0.0, 0.4, size=(3, 3))
        tasks = [Task(g1.frame_id(f), "pos", p, 1e3) for f, p in zip(frames, targets, strict=True)]
        solver._group_tasks(tasks, set())
        solver._floor_w = np.zeros(0, np.int64)
        pin.framesForwardKinematics(solver.model, solver.data, q0)
        start = solver._evaluate(None, q0)[0]
        q = solver.solve(q0, tasks, g1.lower, g1.upper, None, iterations=3)
        solver._group_tasks(tasks, set())
        solver._floor_w = np.zeros(0, np.int64)
        pin.framesForwardKinematics(solver.model, solver.data, q)
        assert solver._evaluate(None, q)[0] <= start + 1e-9
        lifted = solver.lift_above_floor(q, 0.002)
        assert g1.lowest_point(lifted) >= -0.002 - 1e-9
        assert np.allclose(lifted[3:], q[3:]) and lifted[2] >= q[2]
    sunk = q0.copy()
    sunk[2] -= 0.05
    assert g1.lowest_point(solver.lift_above_floor(sunk, 0.002)) == pytest.approx(-0.002, abs=1e-6)


def test_step_qp_keeps_box_and_rows_and_is_optimal() -> None:
    """The IK step: box on the joints, rows ``A x >= lower`` (the non-penetration constraints) held
    exactly, and no feasible point nearby is cheaper (a first-order check of optimality)."""
    from intermimic_policy.retarget.ik import solve_qp

    rng = np.random.default_rng(4)
    for _ in range(20):
        M = rng.normal(size=(30, 12))
        H, g = M.T @ M + 1e-3 * np.eye(12), M.T @ rng.normal(size=30)
        lo, hi = -rng.uniform(0.05, 0.3, 9), rng.uniform(0.05, 0.3, 9)
        A = rng.normal(size=(6, 12))
        lower = rng.uniform(-0.2, 0.05, 6)  # x = 0 is feasible only for the rows with lower <= 0
        x, soft = solve_qp(H, g, lo, hi, 3, A, lower)
        assert not soft
        assert np.all(x[3:] >= lo - 1e-9) and np.all(x[3:] <= hi + 1e-9)
        assert np.all(A @ x >= lower - 1e-7)
        def cost(y: np.ndarray, H: np.ndarray = H, g: np.ndarray = g) -> float:
            return float(0.5 * y @ H @ y - g @ y)

        for _ in range(200):  # feasible perturbations never do better
            y = x + rng.normal(0.0, 1e-3, 12)
            y[3:] = np.clip(y[3:], lo, hi)
            if np.all(A @ y >= lower):
                assert cost(y) >= cost(x) - 1e-9


def test_pair_depth_takes_the_way_out_it_came_in() -> None:
    """A point past the middle of a thin slab is nearest to the far face; with where it was before
    as the reference, its depth and normal are those of the face it entered through."""
    import trimesh

    from intermimic_policy.retarget.geometry import hull_set, pair_depths

    slab = trimesh.creation.box(extents=(1.0, 1.0, 0.06))
    hulls = hull_set(((np.asarray(slab.vertices), np.asarray(slab.faces)),))
    p = np.array([[0.0, 0.0, -0.02]])  # 1 cm from the bottom face, 5 cm from the top
    depth, normal = pair_depths(hulls, p, np.array([0]))
    assert depth[0] == pytest.approx(0.01) and normal[0] == pytest.approx([0.0, 0.0, -1.0])
    depth, normal = pair_depths(hulls, p, np.array([0]), ref=np.array([[0.0, 0.0, 0.05]]))  # came from above
    assert depth[0] == pytest.approx(0.05) and normal[0] == pytest.approx([0.0, 0.0, 1.0])
