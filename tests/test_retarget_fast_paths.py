"""The retargeting IK's fast paths give what the plain formulas give: run bounds, the nearest face
of a part (one product with homogeneous points), and collision points / frame placements read
through live views of Pinocchio's data after every forward kinematics."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import pytest
import trimesh

from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.retarget.geometry import hull_set, nearest_faces, pair_depths, run_bounds
from intermimic_policy.retarget.ik import FrameSolver


@pytest.fixture(scope="module")
def g1(data_root):  # noqa: ARG001 - the G1 URDF lives in the shared data
    return load_robot("g1")


def test_run_bounds() -> None:
    assert run_bounds(np.zeros(0, np.int64)).tolist() == [0, 0]
    assert run_bounds(np.array([5])).tolist() == [0, 1]
    assert run_bounds(np.array([1, 1, 2, 3, 3, 3])).tolist() == [0, 2, 3, 6]


def test_nearest_faces_match_the_plain_formula() -> None:
    """Random points against three convex parts of different face counts: the face chosen and its
    depth are those of argmax_f (n_f . p + o_f) computed pair by pair."""
    rng = np.random.default_rng(0)
    meshes = [trimesh.creation.box(extents=(0.4, 0.3, 0.1)), trimesh.creation.icosphere(1, 0.2),
              trimesh.creation.cylinder(0.1, 0.5, sections=12)]
    hulls = hull_set(tuple((np.asarray(m.vertices) + rng.normal(0, 0.1, 3), np.asarray(m.faces)) for m in meshes))
    points = rng.normal(0.0, 0.25, (500, 3))
    parts = rng.integers(0, len(meshes), 500)
    faces = nearest_faces(hulls, points, parts)
    depth, normal = pair_depths(hulls, points, parts)
    for i, (p, k) in enumerate(zip(points, parts, strict=True)):
        count = hulls.face_counts[k]
        s = hulls.normals[k, :count] @ p + hulls.offsets[k, :count]
        assert faces[i] == int(np.argmax(s))
        assert depth[i] == pytest.approx(-s.max(), abs=1e-12)
        assert np.array_equal(normal[i], hulls.normals[k, faces[i]])


def test_points_and_placements_follow_the_configuration(g1) -> None:
    """After each forward kinematics the solver's collision points and frame placements (live
    views) are those of data.oMf at that configuration."""
    solver = FrameSolver(g1)
    rng = np.random.default_rng(1)
    for _ in range(3):
        q = g1.neutral_q()
        q[:3] = rng.normal(0.0, 0.5, 3)
        q[7:] = rng.uniform(g1.lower, g1.upper)
        pin.framesForwardKinematics(solver.model, solver.data, q)
        pts = solver._points()
        for li, f in enumerate(solver.link_frame_list):
            M = solver.data.oMf[f]
            ix = np.flatnonzero(solver.point_link == li)
            assert np.allclose(pts[ix], solver.points_local[ix] @ M.rotation.T + M.translation, atol=1e-12)
        f = solver.link_frame_list[0]
        assert np.array_equal(solver._frame_pos[f], solver.data.oMf[f].translation)
        assert np.array_equal(solver._frame_rot[f], solver.data.oMf[f].rotation)
