"""Pinned feet and exit faces of the retargeting IK: a planted sole is a hard constraint (it does not
move however hard a hand pulls), a foot is re-planted where it lands (and after creeping), and the
points of one link inside a thin part all leave through the same face."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import pytest
import trimesh

from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.retarget.geometry import face_depths, group_faces, hull_set, pair_depths
from intermimic_policy.retarget.ik import Collision, FrameSolver, IKConfig, Task
from intermimic_policy.retarget.retarget import RetargetConfig, _foot_tasks
from intermimic_policy.retarget.targets import split_creeping


@pytest.fixture(scope="module")
def g1(data_root):  # noqa: ARG001 - the G1 URDF lives in the shared data
    return load_robot("g1")


def _slab(thickness: float = 0.06):
    box = trimesh.creation.box(extents=(1.0, 1.0, thickness))
    return hull_set(((np.asarray(box.vertices), np.asarray(box.faces)),))


def test_one_exit_face_per_link_in_a_thin_part() -> None:
    """Points of one link spread across the middle of a 6 cm slab: each point's nearest face is
    the top or the bottom (opposite pushes on one rigid link); the group face is one face for all,
    the one its points came in through; another link in the same part gets its own."""
    hulls = _slab()
    a = np.array([[0.0, 0.0, 0.01], [0.02, 0.0, -0.005], [0.04, 0.0, -0.01]])  # link 0, inside
    b = np.array([[0.3, 0.0, -0.02], [0.32, 0.0, -0.025]])  # link 1, inside near the bottom
    pts = np.vstack([a, b])
    parts = np.zeros(len(pts), np.int64)
    links = np.array([0, 0, 0, 1, 1])
    _, own = pair_depths(hulls, pts, parts)
    assert own[0, 2] > 0.5 and own[2, 2] < -0.5  # the per-point choice: opposite faces in one link
    came_from = pts + np.array([0.0, 0.0, 0.04]) * (links == 0)[:, None]  # link 0 entered from above
    faces = group_faces(hulls, came_from, parts, links)
    assert len(set(faces[links == 0].tolist())) == 1 and len(set(faces[links == 1].tolist())) == 1
    depth, normal = face_depths(hulls, pts, parts, faces)
    assert np.allclose(normal[links == 0], [0.0, 0.0, 1.0])  # out through the top, the way it came
    assert np.allclose(depth[links == 0], 0.03 - a[:, 2])  # depth below the top plane
    assert np.allclose(normal[links == 1], [0.0, 0.0, -1.0])  # nearer the bottom: out underneath
    assert np.allclose(depth[links == 1], 0.03 + b[:, 2])


def test_solver_rows_give_each_link_one_exit_face(g1) -> None:
    """The IK's own rows: a thin slab through the right hand's fingers; every inside point of a
    link gets the same face normal, while the per-point nearest faces of some link disagree."""
    solver = FrameSolver(g1)
    q = g1.neutral_q()
    pin.framesForwardKinematics(solver.model, solver.data, q)
    pts = solver._points()
    link_names = np.array([solver.model.frames[int(f)].name for f in solver.link_frames])[solver.point_link]
    hand = np.flatnonzero(np.char.find(link_names, "right_hand") >= 0)
    centre = np.median(pts[hand], axis=0)
    collision = Collision(_slab(0.03), np.eye(3), centre)
    solver._group_tasks([], set())
    solver._pins = ()
    solver._floor_w = np.zeros(0, np.int64)
    solver._exclude = None
    solver._prev_local = None
    solver._faces = np.full((len(solver.link_frames), 1), -1)
    _, _, ev = solver._evaluate(collision, q)
    idx, part, depth, normal, _ = solver._exit_faces(collision, ev, (np.zeros(0, np.int64),) * 2)
    inside = depth > 0
    assert inside.sum() >= 10
    links = solver.point_link[idx[inside]]
    own = ev["obj"][3][inside]  # per-point nearest faces (the evaluation's)
    mixed = [li for li in np.unique(links) if len({tuple(n) for n in own[links == li].round(6)}) > 1]
    assert mixed, "the slab should cut through some link (per-point faces disagree)"
    for li in np.unique(links):
        assert len({tuple(n) for n in normal[inside][links == li].round(6)}) == 1


def test_pinned_sole_holds_against_a_pulling_hand(g1) -> None:
    """A hand target 60 cm out of reach pulls the body: a pinned sole stays within a millimetre
    horizontally; held by the stiff task alone (no pin) it slides."""
    solver = FrameSolver(g1, IKConfig(max_iterations=6))
    q0 = g1.neutral_q()
    sole, palm = g1.frame_id("left_sole"), g1.frame_id("right_palm")
    start = g1.frame_positions(q0, ["left_sole", "right_sole", "right_palm"])
    far = start[2] + np.array([0.6, -0.3, 0.0])
    tasks = [Task(palm, "pos", far, 1e4), Task(sole, "pos", start[0], 1.0),
             Task(g1.frame_id("right_sole"), "pos", start[1], 1.0)]
    moved = {}
    for pinned in (False, True):
        q = q0.copy()
        for _ in range(5):  # five frames of the same pull
            q = solver.solve(q, tasks, g1.lower, g1.upper, None, iterations=6,
                             pins=((sole, start[0]),) if pinned else ())
        moved[pinned] = float(np.linalg.norm((g1.frame_positions(q, ["left_sole"])[0] - start[0])[:2]))
    assert moved[True] < 1e-3, moved
    assert moved[False] > 1e-2, moved  # the pull is real: without the pin the sole goes


def test_foot_is_released_while_lifted_and_replanted_where_it_lands(g1) -> None:
    """planted 1, 1, 0, 1, 1: it lands (onto the floor, no pin yet), is pinned where it landed, is
    released while lifted, lands again and is pinned at the new place."""
    solver = FrameSolver(g1)
    fid = [g1.frame_id("left_sole")]
    locks: list = [None]
    q = g1.neutral_q()
    seen = []
    for t, planted in enumerate([True, True, False, True, True]):
        tasks: list[Task] = []
        new, pins = _foot_tasks(np.array([planted]), locks, fid, solver, q, RetargetConfig(), tasks, [])
        seen.append((new, [p.tolist() for _, p in pins], [t.axes for t in tasks if t.kind == "pos"]))
        if new:  # the caller pins the sole where this frame's solve left it
            locks[0] = (np.array([float(t), 0.0, 0.0]), np.eye(3))
    assert seen == [([0], [], [(2,)]),  # landing: the sole's height only
                    ([], [[0.0, 0.0, 0.0]], [(0, 1, 2)]),
                    ([], [], []),  # lifted: free
                    ([0], [], [(2,)]),  # lands again
                    ([], [[3.0, 0.0, 0.0]], [(0, 1, 2)])]  # pinned where it landed the second time


def test_creeping_foot_is_replanted() -> None:
    """A planted source foot creeping 1 cm a frame is unplanted for ``gap`` frames each time it is
    5 cm from where its run began; a still foot keeps one run."""
    t_n = 30
    mask = np.ones(t_n, bool)
    still = np.zeros((t_n, 2))
    assert split_creeping(mask, still, 0.05, 2).all()
    creep = np.stack([np.arange(t_n) * 0.01, np.zeros(t_n)], axis=1)
    out = split_creeping(mask, creep, 0.05, 2)
    assert list(np.flatnonzero(~out)) == [6, 7, 14, 15, 22, 23]  # 6 cm from 0 at t=6, from 8 at t=14...
    for run_start in (0, 8, 16, 24):  # within each run the foot stays within 5 cm of its start
        run = slice(run_start, run_start + 6)
        assert np.abs(creep[run, 0] - creep[run_start, 0]).max() <= 0.05 + 1e-12


def test_pair_depths_of_no_pairs_is_empty() -> None:
    """A frame with no point near the object asks for no pairs: empty answers, not an index error."""
    depth, normal = pair_depths(_slab(), np.zeros((0, 3)), np.zeros(0, np.int64))
    assert depth.shape == (0,) and normal.shape == (0, 3)


def test_frame_left_deep_is_projected_out_the_nearest_way(g1) -> None:
    """The top of a floating robot 2 cm into the underside of a thick slab, the points remembered
    above it (they came in through the top, then the slab moved): the rows push them out through
    the far face, up through the slab, which every step check refuses, so the frame ends 2 cm deep.
    The fallback projection, with the faces nearest to the points now, takes them out underneath;
    without it (``exit_fallback_excess`` inf) the frame stays deep."""
    q0 = g1.neutral_q()
    q0[2] += 0.5  # off the floor: no floor rows, the root is free to move
    ends = {}
    for excess in (0.003, np.inf):
        cfg = IKConfig(exit_fallback_excess=excess)
        solver = FrameSolver(g1, cfg)
        pin.framesForwardKinematics(solver.model, solver.data, q0)
        pts = solver._points()
        thickness = 0.4
        centre = np.array([0.0, 0.0, pts[:, 2].max() - 0.02 + thickness / 2])  # underside 2 cm below the top
        collision = Collision(_slab(thickness), np.eye(3), centre)
        solver._prev_local = pts - centre + np.array([0.0, 0.0, thickness])  # above the slab: came in from the top
        q = solver.solve(q0, [], g1.lower, g1.upper, collision, iterations=2)
        ends[excess] = solver.residuals(q, collision)[1]
    assert ends[np.inf] > 0.01, ends  # stale faces: still deep (the fallback is what gets it out)
    cfg = IKConfig()
    assert ends[0.003] <= cfg.object_allowance + cfg.penetration_tolerance + 1e-6, ends
