"""MotionLibrary: stacking, clamping, velocities, interaction-graph vectors, initial states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment.smplx_body import KEY_BODIES, NUM_BODIES, NUM_JOINTS
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.sim.reference import MotionLibrary, farthest_point_subsample
from intermimic_policy.state.frames import InitialState


def _quats(rng: np.random.Generator, *shape: int) -> np.ndarray:
    q = rng.normal(size=(*shape, 4))
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def make_motion(frames: int, obj: str, seed: int, fps: float = 30.0, name: str = "") -> HOIMotion:
    rng = np.random.default_rng(seed)
    body_pos = rng.normal(size=(frames, NUM_BODIES, 3)).astype(np.float32)
    body_rot = _quats(rng, frames, NUM_BODIES)
    return HOIMotion(
        fps=fps, root_pos=body_pos[:, 0].copy(), root_rot=body_rot[:, 0].copy(),
        joint_rotvec=(0.3 * rng.normal(size=(frames, NUM_JOINTS, 3))).astype(np.float32),
        body_pos=body_pos, body_rot=body_rot,
        object_pos=rng.normal(size=(frames, 3)).astype(np.float32), object_rot=_quats(rng, frames),
        object_name=obj, body_contact=rng.integers(-1, 2, size=(frames, NUM_BODIES)).astype(np.int8),
        object_contact=rng.random(frames) > 0.5, name=name or f"{obj}_{seed}",
    )


@pytest.fixture(scope="module")
def lib_and_motions():
    rng = np.random.default_rng(0)
    motions = [make_motion(5, "box", 1), make_motion(8, "ball", 2), make_motion(3, "box", 3)]
    points = {"box": rng.normal(size=(20, 3)), "ball": torch.randn(12, 3, generator=torch.Generator().manual_seed(0))}
    return MotionLibrary(motions, points), motions, points


def test_sizes_and_names(lib_and_motions):
    lib, motions, _ = lib_and_motions
    assert lib.num_frames.tolist() == [5, 8, 3]
    assert lib.max_frames == 8 and lib.num_clips == 3
    assert lib.object_names == ["box", "ball", "box"]
    assert lib.num_points == 12  # the box's 20 points are subsampled to the ball's 12
    assert lib.points_of(torch.tensor([0, 1, 2, 2])).shape == (4, 12, 3)


def test_frames_clamp_to_each_clips_last_frame(lib_and_motions):
    lib, motions, _ = lib_and_motions
    ref = lib.frames(torch.tensor([0, 1, 2, 1]), torch.tensor([100, 100, 2, -4]))
    for row, (m, t) in enumerate([(0, 4), (1, 7), (2, 2), (1, 0)]):
        np.testing.assert_array_equal(ref.body_pos[row].numpy(), motions[m].body_pos[t])
        np.testing.assert_array_equal(ref.object_rot[row].numpy(), motions[m].object_rot[t])
        np.testing.assert_array_equal(ref.body_contact[row].numpy(), motions[m].body_contact[t].astype(np.float32))
        assert bool(ref.object_contact[row]) == bool(motions[m].object_contact[t])
    assert ref.body_contact.dtype == torch.float32 and ref.object_contact.dtype == torch.bool


def test_velocities_are_the_motions_true_ones(lib_and_motions):
    lib, motions, _ = lib_and_motions
    ref = lib.frames(torch.tensor([1, 1]), torch.tensor([3, 0]))
    np.testing.assert_allclose(ref.body_ang_vel[0].numpy(), motions[1].body_ang_vel[3], rtol=1e-6)
    np.testing.assert_allclose(ref.body_lin_vel[1].numpy(), motions[1].body_lin_vel[0], rtol=1e-6)
    np.testing.assert_allclose(ref.object_ang_vel[0].numpy(), motions[1].object_ang_vel[3], rtol=1e-6)
    # a true angular velocity: constant spin about z across the +-pi wrap stays constant
    m = make_motion(20, "box", 4)
    yaw = np.linspace(2.5, 2.5 + 19 * 0.2, 20)
    rot = quat.from_yaw(torch.from_numpy(yaw)).float().numpy()
    m = HOIMotion(**{**{f: getattr(m, f) for f in ("fps", "root_pos", "root_rot", "joint_rotvec", "body_pos",
                                                  "body_rot", "object_pos", "object_name", "body_contact",
                                                  "object_contact", "name")}, "object_rot": rot})
    lib2 = MotionLibrary([m], {"box": np.eye(3)})
    w = lib2.frames(torch.zeros(20, dtype=torch.long), torch.arange(20)).object_ang_vel
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 6.0]).expand(20, 3), atol=1e-3, rtol=0)


def test_ig_is_body_minus_nearest_object_point(lib_and_motions):
    lib, motions, points = lib_and_motions
    ref = lib.frames(torch.tensor([0, 1]), torch.tensor([2, 6]))
    for row, (m, t) in enumerate([(0, 2), (1, 6)]):
        mo = motions[m]
        local = lib.points[lib.clip_object[m]].double().numpy()
        q = torch.from_numpy(mo.object_rot[t]).double().expand(local.shape[0], 4)
        world = quat.rotate(q, torch.from_numpy(local)).numpy() + mo.object_pos[t]
        d = np.linalg.norm(mo.body_pos[t][:, None] - world[None], axis=-1)
        expected = mo.body_pos[t] - world[d.argmin(-1)]
        np.testing.assert_allclose(ref.ig[row].numpy(), expected, atol=1e-5)


def test_ig_of_a_known_geometry():
    m = make_motion(2, "rod", 5)
    body_pos = np.zeros_like(m.body_pos)
    body_pos[:, 3] = [0.0, 1.0, 0.0]
    obj_rot = np.tile(quat.from_yaw(torch.tensor(np.pi / 2)).numpy(), (2, 1)).astype(np.float32)
    kw = {f: getattr(m, f) for f in ("fps", "root_rot", "joint_rotvec", "body_rot", "object_name",
                                     "body_contact", "object_contact", "name")}
    m = HOIMotion(**kw, root_pos=body_pos[:, 0], body_pos=body_pos, object_pos=np.zeros((2, 3), np.float32),
                  object_rot=obj_rot)
    # a rod along the object's x axis; turned 90 deg about z it lies along world y
    rod = np.stack([np.linspace(0.0, 0.6, 7), np.zeros(7), np.zeros(7)], -1)
    lib = MotionLibrary([m], {"rod": rod})
    ig = lib.frames(torch.tensor([0]), torch.tensor([0])).ig[0]
    torch.testing.assert_close(ig[3], torch.tensor([0.0, 0.4, 0.0]), atol=1e-6, rtol=0)


def test_initial_state_matches_the_clip_and_round_trips(lib_and_motions):
    lib, motions, _ = lib_and_motions
    s = lib.initial_state(torch.tensor([1, 0]), torch.tensor([5, 9]))
    np.testing.assert_array_equal(s.root_pos[0].numpy(), motions[1].root_pos[5])
    np.testing.assert_array_equal(s.joint_rotvec[1].numpy(), motions[0].joint_rotvec[4])
    np.testing.assert_allclose(s.joint_ang_vel[0].numpy(), motions[1].joint_ang_vel[5], rtol=1e-6)
    np.testing.assert_allclose(s.root_ang_vel[0].numpy(), motions[1].root_ang_vel[5], rtol=1e-6)
    flat = s.flatten()
    assert flat.shape == (2, InitialState.DIM) == (2, 332)
    back = InitialState.from_flat(flat)
    for a, b in zip(vars(s).values(), vars(back).values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="332"):
        InitialState.from_flat(flat[:, :-1])


def test_farthest_point_subsample_is_deterministic_and_spread():
    pts = torch.randn(200, 3, generator=torch.Generator().manual_seed(3))
    a, b = farthest_point_subsample(pts, 16), farthest_point_subsample(pts, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(bool((pts == p).all(-1).any()) for p in a)  # a subset of the input
    # spread: the smallest pairwise gap beats that of the first 16 points
    def min_gap(x: torch.Tensor) -> float:
        d = torch.cdist(x, x) + torch.eye(len(x)) * 1e9
        return float(d.min())
    assert min_gap(a) > min_gap(pts[:16])


def test_bad_inputs_name_the_problem():
    m = make_motion(4, "box", 6)
    with pytest.raises(MotionError, match="chair"):
        MotionLibrary([make_motion(4, "chair", 7)], {"box": np.zeros((4, 3))})
    with pytest.raises(MotionError, match="frame rates"):
        MotionLibrary([m, make_motion(4, "box", 8, fps=60.0)], {"box": np.zeros((4, 3))})
    with pytest.raises(MotionError, match=r"box.*\[P, 3\]"):
        MotionLibrary([m], {"box": np.zeros((4, 2))})
    bad = make_motion(4, "box", 9, name="broken_clip")
    bad.body_pos[2, 3, 1] = np.nan
    with pytest.raises(MotionError, match="broken_clip: body_pos"):
        MotionLibrary([bad], {"box": np.zeros((4, 3))})
    with pytest.raises(MotionError, match="no clips"):
        MotionLibrary([], {})


# -- real data -------------------------------------------------------------------------------------
def _real_library(motions_root, assets_root, clip: str) -> tuple[MotionLibrary, HOIMotion]:
    trimesh = pytest.importorskip("trimesh")
    from intermimic_policy.motion.io import load_motion

    m = load_motion(motions_root / "OMOMO_new" / f"{clip}.pt")
    folder = assets_root / "objects" / "objects" / m.object_name
    mesh = trimesh.load(folder / f"{m.object_name}.obj", force="mesh", process=False)
    # object frame = mean of the mesh vertices (spec 1.2)
    points = np.load(folder / "sample_points.npy") - np.asarray(mesh.vertices).mean(0)
    return MotionLibrary([m], {m.object_name: points}), m


def test_real_clip_ig_agrees_with_the_contact_labels(motions_root, assets_root):
    lib, m = _real_library(motions_root, assets_root, "sub2_largetable_000")
    t = torch.arange(m.num_frames)
    ref = lib.frames(torch.zeros_like(t), t)
    np.testing.assert_array_equal(ref.body_pos.numpy(), m.body_pos)
    dist, labels = ref.ig.norm(dim=-1), ref.body_contact
    # +1 = a vertex of the body within ~5 mm of the object; -1 = every vertex farther than 0.1 m.
    # Body origins are joints, a few cm inside the skin, so: touching bodies are close, others not.
    assert (labels > 0).sum() > 100 and (labels < 0).sum() > 100
    assert float(dist[labels > 0].median()) < 0.05
    assert float(dist[labels > 0].quantile(0.99)) < 0.12
    assert float(dist[labels < 0].min()) > 0.08


def test_real_clip_perfect_tracking_gives_zero_error_observation(motions_root, assets_root):
    from intermimic_policy.observation.builder import ObservationBuilder, nonfinite_envs
    from intermimic_policy.observation.spec import teacher_spec
    from intermimic_policy.state.frames import SimState

    lib, m = _real_library(motions_root, assets_root, "sub2_woodchair_003")
    clip = torch.zeros(4, dtype=torch.long)
    t = torch.tensor([0, 40, 100, m.num_frames - 1])
    ref, init = lib.frames(clip, t), lib.initial_state(clip, t)
    sim = SimState(
        body_pos=ref.body_pos, body_rot=ref.body_rot, body_lin_vel=ref.body_lin_vel,
        body_ang_vel=ref.body_ang_vel, joint_rotvec=init.joint_rotvec, joint_ang_vel=init.joint_ang_vel,
        body_contact=ref.body_contact > 0, body_object_contact=ref.body_contact > 0,
        body_contact_force=torch.zeros_like(ref.body_pos), object_pos=ref.object_pos,
        object_rot=ref.object_rot, object_lin_vel=ref.object_lin_vel, object_ang_vel=ref.object_ang_vel,
        object_contact=ref.object_contact,
    )
    spec = teacher_spec()
    obs = ObservationBuilder(spec).build(sim, [ref, ref], lib.points_of(clip))
    assert obs.shape == (4, 3198) and nonfinite_envs(obs).numel() == 0
    sl = spec.term_slices()
    for name in ("key_pos_error", "key_vel_error", "body_ang_vel_error", "object_pos_error",
                 "interaction_graph_error", "contact_error"):
        assert obs[:, sl[name]].abs().max() < 1e-5, name
    # the root of the state is the reference root, so the reference key positions equal the
    # simulated local positions of those bodies
    key = torch.tensor(KEY_BODIES)
    local = obs[:, sl["local_body_pos"]].reshape(4, NUM_BODIES - 1, 3)[:, key - 1]
    torch.testing.assert_close(obs[:, sl["ref_local_key_pos"]].reshape(4, -1, 3), local, atol=1e-5, rtol=0)
