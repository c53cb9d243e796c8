"""The procedural example clip: FK-consistent, feet on the floor, hands on the box, honest labels.

Distances here are computed independently of the generator (which asks MuJoCo): geoms are
sampled densely and measured against the box with an analytic signed distance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment import smplx_body as sb
from intermimic_policy.embodiment.fk import forward_kinematics, geom_bottom_z, local_joint_rotvec
from intermimic_policy.embodiment.skeleton import Geom, default_skeleton
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.example import (
    FAR_M,
    TOUCH_M,
    ExampleConfig,
    build_example_motion,
    make_example_motion,
)
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.object_names import PRIMITIVE_BOXES

HALF = torch.tensor(PRIMITIVE_BOXES["box"], dtype=torch.float64) / 2
FEET = [sb.body_index(n) for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe")]
SAMPLING_TOL = 0.004
SQUEEZE = ExampleConfig().squeeze


@pytest.fixture(scope="module")
def motion() -> HOIMotion:
    return make_example_motion()


@pytest.fixture(scope="module")
def distances(motion: HOIMotion) -> torch.Tensor:
    return _distances(motion)


def _f64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _samples(g: Geom) -> tuple[torch.Tensor, float]:
    """Points in the body frame and the radius to subtract from their distances."""
    if g.kind == "sphere":
        return _f64(np.asarray([g.pos])), g.size[0]
    if g.kind == "capsule":
        a, b = g.points()
        s = np.linspace(0.0, 1.0, 41)[:, None]
        return _f64(a + s * (b - a)), g.size[0]
    # box: a 9 x 9 grid on each of its six faces
    u = np.linspace(-1.0, 1.0, 9)
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    faces = []
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            p = np.zeros((grid.shape[0], 3))
            p[:, axis] = sign
            p[:, others] = grid
            faces.append(p)
    return _f64(np.concatenate(faces) * np.asarray(g.size) + np.asarray(g.pos)), 0.0


def _distances(m: HOIMotion) -> torch.Tensor:
    """[T, 52] distance of each body's geom to the box (negative: penetration)."""
    pos, rot = _f64(m.body_pos), _f64(m.body_rot)
    obj_pos, obj_rot = _f64(m.object_pos), _f64(m.object_rot)
    out = []
    for b, g in enumerate(default_skeleton().geoms):
        pts, radius = _samples(g)
        n, t = pts.shape[0], pos.shape[0]
        world = pos[:, b, None, :] + quat.rotate(rot[:, b, None, :].expand(t, n, 4), pts.expand(t, n, 3))
        local = quat.rotate_inverse(obj_rot[:, None, :].expand(t, n, 4), world - obj_pos[:, None, :])
        q = local.abs() - HALF
        sd = q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
        out.append(sd.min(dim=-1).values - radius)
    return torch.stack(out, dim=-1)


def test_clip_is_our_fk_and_has_unit_quaternions(motion: HOIMotion) -> None:
    assert motion.num_frames == 150 and motion.fps == 30.0 and motion.object_name == "box"
    sk = default_skeleton()
    pos, rot = forward_kinematics(sk.offsets, _f64(motion.root_pos), _f64(motion.root_rot),
                                  _f64(motion.joint_rotvec))
    assert float((pos - _f64(motion.body_pos)).norm(dim=-1).max()) < 1e-5
    assert float(quat.angle_between(rot, _f64(motion.body_rot)).max()) < 1e-5
    back = local_joint_rotvec(_f64(motion.body_rot))
    assert float(quat.angle_between(quat.from_rotvec(back), quat.from_rotvec(_f64(motion.joint_rotvec))).max()) < 1e-4
    for name in ("root_rot", "body_rot", "object_rot"):
        norms = np.linalg.norm(getattr(motion, name).astype(np.float64), axis=-1)
        assert np.abs(norms - 1.0).max() < 1e-6, name
    for name in ("root_pos", "joint_rotvec", "body_pos", "object_pos"):
        assert np.isfinite(getattr(motion, name)).all()


def test_feet_stay_flat_on_the_floor(motion: HOIMotion) -> None:
    sk = default_skeleton()
    bottoms = geom_bottom_z(sk.geoms, _f64(motion.body_pos), _f64(motion.body_rot))
    feet = bottoms[:, FEET]
    assert float(feet.min()) > -1e-4  # never below the floor
    assert float(feet.min(dim=-1).values.abs().max()) < 1e-4  # and touching it in every frame
    assert float(bottoms.min()) > -1e-4  # no body part below the floor either
    ankles = motion.body_pos[:, [FEET[0], FEET[2]], :2]
    assert np.linalg.norm(ankles - ankles[:1], axis=-1).max() < 0.02  # feet do not slide


def test_box_rests_is_lifted_held_and_put_back_down(motion: HOIMotion) -> None:
    held = motion.object_contact
    first = int(np.argmax(held))
    last = motion.num_frames - 1 - int(np.argmax(held[::-1]))
    assert 0 < first < last < motion.num_frames - 1 and held[first:last + 1].all()  # one grasp, then release
    resting = motion.object_pos[:first]
    assert np.ptp(resting, axis=0).max() == 0.0
    assert resting[0, 2] == pytest.approx(float(HALF[2]))  # on the floor
    lift = motion.object_pos[:, 2] - motion.object_pos[0, 2]
    assert lift.max() == pytest.approx(0.25, abs=1e-4)  # >= 20 cm (issue 11)
    top = int(np.argmax(lift))
    assert first < top < last and (lift[top:top + 10] > 0.24).all()  # held up for a while
    np.testing.assert_allclose(motion.object_pos[last:], motion.object_pos[:1].repeat(motion.num_frames - last, 0),
                               atol=1e-6)  # back on the floor where it was before the release
    assert (motion.object_pos[:, 0] > motion.root_pos[:, 0] + 0.2).all()  # in front of the body
    tilt = quat.angle(_f64(motion.object_rot))
    assert float(tilt.max()) < 1e-6  # carried level
    assert motion.num_frames / motion.fps >= 4.0


def test_the_box_weighs_at_least_two_kilograms() -> None:
    from intermimic_policy.sim.objects import load_object

    box = load_object("box", num_points=16)
    assert 2.0 <= box.mass <= 3.0
    assert load_object("box", density=1000.0, num_points=16).mass == pytest.approx(1000.0 * box.volume)


def test_seeds_give_reproducible_variations() -> None:
    from intermimic_policy.motion.example import example_config

    assert example_config(0) == ExampleConfig()
    a, b = example_config(3), example_config(3)
    assert a == b and a != ExampleConfig() and a != example_config(4)
    assert 0.20 <= a.lift <= 0.35 and a.t_grasp < a.t_lifted < a.t_lower < a.t_down < a.t_release


def test_hands_are_on_the_box_side_faces_while_held(motion: HOIMotion, distances: torch.Tensor) -> None:
    d = distances
    held = torch.from_numpy(motion.object_contact)
    wl, wr = sb.body_index("L_Wrist"), sb.body_index("R_Wrist")
    # while the box is off the floor both hands carry it (at the release one may open first)
    lifted = torch.from_numpy(motion.object_pos[:, 2] > motion.object_pos[0, 2] + 0.005)
    assert bool(lifted.any()) and bool(held[lifted].all())
    for hand in (sb.LEFT_HAND_BODIES, sb.RIGHT_HAND_BODIES):
        closest = d[held][:, list(hand)].min(dim=-1).values
        assert float(d[lifted][:, list(hand)].min(dim=-1).values.max()) < 0.01  # each hand touches it ...
        assert float(closest.min()) > -(SQUEEZE + 0.015)  # ... pressing in by about the designed squeeze
    # the palms are on the faces too
    assert float(d[held][:, [wl, wr]].max()) < 0.04  # (the release opens them up to ~3 cm)
    # the left palm is on the +y face and the right one on the -y face
    rel = quat.rotate_inverse(_f64(motion.object_rot)[:, None, :].expand(-1, 2, 4),
                              _f64(motion.body_pos[:, [wl, wr]]) - _f64(motion.object_pos)[:, None, :])
    assert bool((rel[held, 0, 1] > HALF[1]).all()) and bool((rel[held, 1, 1] < -HALF[1]).all())
    # before the grasp the hands do not go into it (the squeeze starts as the palms arrive)
    before = torch.arange(motion.num_frames) < int(np.argmax(motion.object_contact)) - 3
    assert float(d[before][:, list(sb.HAND_BODIES)].min()) > -0.005


def test_body_stays_out_of_the_box(motion: HOIMotion, distances: torch.Tensor) -> None:
    d = distances
    forearms = [sb.body_index("L_Elbow"), sb.body_index("R_Elbow")]
    others = [b for b in range(52) if b not in sb.HAND_BODIES and b not in forearms]
    assert float(d[:, others].min()) > 0.0
    assert float(d[:, forearms].min()) > -0.015  # the wrist ends of the forearms touch beside the palms


def test_contact_labels_agree_with_geometry(motion: HOIMotion, distances: torch.Tensor) -> None:
    d = distances.numpy()
    labels = motion.body_contact
    held = motion.object_contact
    hands = np.zeros(52, dtype=bool)
    hands[list(sb.HAND_BODIES)] = True
    feet = np.zeros(52, dtype=bool)
    feet[FEET] = True
    assert set(np.unique(labels)) <= {-1, 0, 1}
    assert (labels[:, feet] == 0).all()
    plus = labels == 1
    assert not plus[:, ~hands].any() and not plus[~held].any()
    assert (d[plus] < TOUCH_M + SAMPLING_TOL).all()
    assert (d[labels == -1] > FAR_M - SAMPLING_TOL).all()
    # and the converse: what clearly touches is +1, what is clearly far is -1
    touching = (d < TOUCH_M - SAMPLING_TOL) & hands[None] & held[:, None]
    assert plus[touching].all()
    # both hands hold the box: each has a +1 body in every frame the box is off the floor
    lifted = motion.object_pos[:, 2] > motion.object_pos[0, 2] + 0.005
    for hand in (sb.LEFT_HAND_BODIES, sb.RIGHT_HAND_BODIES):
        assert plus[lifted][:, list(hand)].any(axis=1).all()
    far = (d > FAR_M + SAMPLING_TOL) & ~feet[None]
    assert (labels[far] == -1).all()
    np.testing.assert_array_equal(motion.object_contact, plus.any(axis=1))


def test_motion_is_smooth(motion: HOIMotion) -> None:
    assert np.abs(motion.joint_ang_vel).max() < 8.0  # rad/s
    assert np.linalg.norm(motion.body_lin_vel, axis=-1).max() < 3.0  # m/s
    assert np.linalg.norm(motion.object_lin_vel, axis=-1).max() < 2.0


def test_generation_is_deterministic_and_callers_get_copies(motion: HOIMotion) -> None:
    fresh = build_example_motion.__wrapped__(150, 30.0, ExampleConfig())  # type: ignore[attr-defined]
    for name in ("root_pos", "root_rot", "joint_rotvec", "body_pos", "body_rot", "object_pos",
                 "object_rot", "body_contact", "object_contact"):
        assert np.array_equal(getattr(fresh, name), getattr(motion, name)), name
    mine = make_example_motion()
    mine.body_pos[:] = 0.0
    assert make_example_motion().body_pos.any()


def test_round_trip_through_the_project_format(motion: HOIMotion, tmp_path: Path) -> None:
    from intermimic_policy.motion.io import load_motion, save_motion

    path = save_motion(motion, tmp_path / "example.npz")
    again = load_motion(path)
    np.testing.assert_array_equal(again.body_pos, motion.body_pos)
    np.testing.assert_array_equal(again.body_contact, motion.body_contact)
    assert again.object_name == "box"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(MotionError, match="num_frames"):
        make_example_motion(num_frames=5)
    with pytest.raises(MotionError, match="fps"):
        make_example_motion(fps=0.0)


def test_finger_joints_stay_inside_their_limits(motion: HOIMotion) -> None:
    from intermimic_policy.embodiment.joint_map import hinge_angles_from_rotvec

    _, _, lower, upper = sb.dof_arrays()
    angles = hinge_angles_from_rotvec(_f64(motion.joint_rotvec)).numpy()
    assert (angles >= lower - 1e-4).all() and (angles <= upper + 1e-4).all()
