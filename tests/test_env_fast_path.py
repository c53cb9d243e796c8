"""The environment's fast step: shared per-step quantities, few-op rotations, fused observation,
the pipelined physics, and the subject skeleton. Each fast path is checked against the plain
definition it replaces (the per-term functions, ``quaternion``, separate graph functions)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch
from obs_oracle import ORACLE
from test_obs_terms import random_scene  # tests/ is on sys.path (pytest prepend import mode)

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.skeleton import SkeletonError
from intermimic_policy.embodiment.smplx_body import CONTACT_BODIES, KEY_BODIES, NO_HAND_BODIES, NUM_BODIES
from intermimic_policy.embodiment.smplx_shape import FOOT_BODIES
from intermimic_policy.geometry import fast
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.spec import HOI_BLOCK_TERMS, ObservationSpec, student_spec, teacher_spec
from intermimic_policy.observation.terms import TERM_FUNCTIONS, make_context, simulated_ig
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import EnvConfigError, HOIEnvConfig, eval_config
from intermimic_policy.sim.metrics import step_errors
from intermimic_policy.sim.psi import PSIConfig
from intermimic_policy.sim.rewards import PrevVelocities, RewardWeights, compute_reward
from intermimic_policy.sim.subject import subject_skeleton
from intermimic_policy.sim.terminations import TerminationConfig, check_terminations
from intermimic_policy.state import interaction_graph as ig
from intermimic_policy.state.frames import RefFrame

CLIP = "OMOMO_new/sub2_largetable_000.pt"


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (``torch.equal`` calls -0.0 and +0.0 equal; atan2 does not)."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def _quats(n: int, seed: int) -> torch.Tensor:
    return quat.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(seed)))


# -- few-op rotations ----------------------------------------------------------------------------
def test_fast_rotations_equal_the_quaternion_module() -> None:
    q = _quats(500, 0)
    q[0] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    q[1] = torch.tensor([0.0, -0.7071068, 0.0, 0.7071068])  # forward axis straight up: no yaw
    assert _bits_equal(fast.to_matrix(q), quat.to_matrix(q))
    assert _bits_equal(fast.to_matrix(q.reshape(5, 100, 4)), quat.to_matrix(q).reshape(5, 100, 3, 3))
    assert fast.to_matrix(q[:1]).is_contiguous() and fast.to_matrix(q[:7]).is_contiguous()
    assert _bits_equal(fast.to_euler_xyz(q), quat.to_euler_xyz(q))
    rv = torch.randn(4, 51, 3, generator=torch.Generator().manual_seed(1)) * 1.3
    assert _bits_equal(fast.to_euler_xyz(quat.from_rotvec(rv)).reshape(4, -1), joint_map.hinge_angles_from_rotvec(rv))
    torch.testing.assert_close(fast.heading_matrix(q), quat.to_matrix(quat.heading_inverse(q)), atol=1e-5, rtol=0)
    assert _bits_equal(fast.heading_matrix_of_rotation(fast.to_matrix(q)), fast.heading_matrix(q))
    b = _quats(500, 2)
    torch.testing.assert_close(fast.angle_between(q, b), quat.angle_between(q, b), atol=2e-6, rtol=0)
    tiny = quat.multiply(q, quat.from_rotvec(torch.full((500, 3), 1e-4)))  # small angles stay exact
    torch.testing.assert_close(fast.angle_between(q, tiny), quat.angle_between(q, tiny), atol=1e-6, rtol=1e-3)


def test_two_stage_argmin_is_argmin() -> None:
    g = torch.Generator().manual_seed(3)
    for shape in [(3, 52, 1024), (2, 5, 128), (1, 4, 96), (2, 3, 100)]:
        x = torch.round(torch.randn(*shape, generator=g) * 3)  # many exact ties: the first index wins
        assert torch.equal(ig._argmin_last(x), x.argmin(-1)), shape


# -- shared interaction geometry -----------------------------------------------------------------
def _graph_scene(n: int = 5, p: int = 256, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    body = torch.randn(n, NUM_BODIES, 3, generator=g) * 0.4 + torch.tensor([2.0, -1.0, 1.0])
    obj_pos = torch.tensor([2.3, -1.0, 0.7]) + 0.1 * torch.randn(n, 3, generator=g)
    pts_obj = torch.randn(p, 3, generator=g) * 0.3
    ref_key = body[:, list(KEY_BODIES)] + 0.05 * torch.randn(n, len(KEY_BODIES), 3, generator=g)
    ref_pos = obj_pos + 0.05 * torch.randn(n, 3, generator=g)
    pts = ig.object_points_world(pts_obj, obj_pos, _quats(n, seed + 1))
    ref_pts = ig.object_points_world(pts_obj, ref_pos, _quats(n, seed + 2))
    return body, pts, obj_pos, ref_key, ref_pts, ref_pos


def test_interaction_geometry_equals_the_separate_functions_and_ignores_chunking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body, pts, centre, ref_key, ref_pts, ref_centre = _graph_scene()
    ref = ig.reference_geometry(ref_key, ref_pts, ref_centre, 0.5)
    geo = ig.interaction_geometry(body, pts, centre, KEY_BODIES, ref)
    key = body[:, list(KEY_BODIES)]
    assert torch.equal(geo.nearest, ig.nearest_point_vectors(body, pts, centre))
    torch.testing.assert_close(geo.reward_error, ig.ig_reward_error(key, pts, ref_key, ref_pts, centre, ref_centre),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(geo.deviation_ratio, ig.ig_deviation_ratio(key, pts, ref_key, ref_pts, 0.5, centre,
                                                                          ref_centre), rtol=1e-6, atol=0)
    # the nearest point is the brute-force one
    brute = (body.unsqueeze(2) - pts.unsqueeze(1)).norm(dim=-1).min(dim=-1).values
    torch.testing.assert_close(geo.nearest.norm(dim=-1), brute, atol=1e-5, rtol=0)
    # a world's results do not depend on how many worlds share a chunk (bit for bit)
    monkeypatch.setattr(ig, "CHUNK_ELEMENTS", 1)
    small = ig.interaction_geometry(body, pts, centre, KEY_BODIES,
                                    ig.reference_geometry(ref_key, ref_pts, ref_centre, 0.5))
    for f in ("nearest", "reward_error", "deviation_ratio"):
        assert torch.equal(getattr(small, f), getattr(geo, f)), f


def test_reward_terminations_and_errors_with_the_shared_geometry_equal_the_plain_ones() -> None:
    sim, ref, pts = random_scene(n=4, seed=21, p=64)
    # move the reference off the simulation so every factor and test has something to see
    ref = dataclasses.replace(ref, body_pos=sim.body_pos + 0.05, object_pos=sim.object_pos + 0.03)
    world = ig.object_points_world(pts, sim.object_pos, sim.object_rot)
    ref_world = ig.object_points_world(pts, ref.object_pos, ref.object_rot)
    k = list(KEY_BODIES)
    cfg = TerminationConfig(ig_floor=0.2, ig_ratio=0.5, object_dev=0.01, key_body_dev=0.01)
    ref_geo = ig.reference_geometry(ref.body_pos[:, k], ref_world, ref.object_pos, cfg.ig_floor)
    geo = ig.interaction_geometry(sim.body_pos, world, sim.object_pos, KEY_BODIES, ref_geo)
    prev = PrevVelocities(sim.joint_ang_vel - 0.3, sim.object_lin_vel + 0.1, sim.object_ang_vel)
    steps = torch.tensor([1, 3, 10, 40])
    plain, plain_terms = compute_reward(sim, prev, ref, pts, RewardWeights(), steps)
    shared, shared_terms = compute_reward(sim, prev, ref, pts, RewardWeights(), steps, geometry=geo)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-7)
    for name in plain_terms:
        torch.testing.assert_close(shared_terms[name], plain_terms[name], rtol=1e-5, atol=1e-7, msg=name)
    e_plain = step_errors(sim, ref, pts)
    e_shared = step_errors(sim, ref, pts, geometry=geo)
    for a, b in zip(e_plain, e_shared):
        assert torch.equal(a, b)
    args = (sim, ref, pts, torch.full((4,), 5), torch.full((4,), 50), steps, torch.zeros(4, 2), cfg, 30)
    r0, t0, why0 = check_terminations(*args)
    r1, t1, why1 = check_terminations(*args, geometry=geo, errors=e_shared)
    assert torch.equal(r0, r1) and torch.equal(t0, t1)
    assert all(torch.equal(why0[k], why1[k]) for k in why0) and bool(why0["object_deviation"].any())
    with pytest.raises(ValueError, match="floor"):
        check_terminations(*args[:-2], TerminationConfig(), 30, geometry=geo)


# -- fused observation ---------------------------------------------------------------------------
def _per_term(builder: ObservationBuilder, sim, refs, pts) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ig_sim = simulated_ig(sim, pts)
    blocks = []
    for ref in refs:
        ctx = builder._context(sim, ref, ig_sim)
        blocks += [ORACLE[t.name](ctx) for t in builder.spec.terms]
    return torch.cat(blocks, dim=-1)


@pytest.mark.parametrize("spec", [
    teacher_spec(),
    student_spec(),
    # a custom spec: other order, a subset of terms, other body subsets
    ObservationSpec(terms=tuple(t for t in reversed(HOI_BLOCK_TERMS) if "key" not in t.name and "rot" not in t.name),
                    ref_offsets=(2, 0, 5), contact_bodies=CONTACT_BODIES[:7], no_hand_bodies=NO_HAND_BODIES[3:]),
])
def test_batched_observation_equals_the_term_by_term_oracle(spec: ObservationSpec) -> None:
    sim, ref, pts = random_scene(n=1, seed=3)
    ctx = make_context(sim, ref, pts, key_bodies=spec.key_bodies, contact_bodies=spec.contact_bodies,
                       no_hand_bodies=spec.no_hand_bodies)
    spec = dataclasses.replace(spec, terms=tuple(  # the dims of the spec's body subsets
        dataclasses.replace(t, dim=ORACLE[t.name](ctx).shape[-1]) for t in spec.terms))
    builder = ObservationBuilder(spec)
    sim, _, pts = random_scene(n=5, seed=4)
    refs = [random_scene(n=5, seed=30 + i)[1] for i in range(spec.num_tokens)]
    torch.testing.assert_close(builder.build(sim, refs, pts), _per_term(builder, sim, refs, pts), atol=2e-6, rtol=0)
    # one stacked RefFrame and a precomputed ig give the same observation, bit for bit
    stacked = RefFrame(**{f.name: torch.cat([getattr(r, f.name) for r in refs]) for f in dataclasses.fields(RefFrame)})
    assert torch.equal(builder.build(sim, stacked, pts, ig_sim=simulated_ig(sim, pts)), builder.build(sim, refs, pts))


def test_a_registered_term_outside_the_standard_set_is_still_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TERM_FUNCTIONS, "root_speed", lambda c: c.sim.body_lin_vel[:, 0].norm(dim=-1, keepdim=True))
    spec = ObservationSpec(terms=HOI_BLOCK_TERMS[:2] + (dataclasses.replace(HOI_BLOCK_TERMS[0], name="root_speed"),))
    sim, ref, pts = random_scene(n=3, seed=5)
    obs = ObservationBuilder(spec).build(sim, [ref, ref], pts)
    torch.testing.assert_close(obs[:, spec.block_dim - 1], sim.body_lin_vel[:, 0].norm(dim=-1))


# -- environment -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(motions_root: Path) -> list[HOIMotion]:
    clip = load_motion(motions_root / CLIP).slice(0, 50)
    return [clip, dataclasses.replace(clip.slice(5, 40), object_name="box", name="box_clip")]


def test_library_reads_every_offset_in_one_gather(clips: list[HOIMotion]) -> None:
    env = HOIEnv(eval_config(num_worlds=2), clips)
    lib = env.motion_library
    clip_ids, t = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 33])
    both = lib.frames_at_offsets(clip_ids, t, (0, 1, 16))
    for i, d in enumerate((0, 1, 16)):
        one, part = lib.frames(clip_ids, t + d), both.index(slice(3 * i, 3 * i + 3))
        for f in dataclasses.fields(RefFrame):
            assert torch.equal(getattr(part, f.name), getattr(one, f.name)), (d, f.name)
    assert torch.equal(lib.joint_rotvec(clip_ids, t), lib.initial_state(clip_ids, t).joint_rotvec)


@pytest.mark.parametrize("fused", [False, True])
def test_step_equals_the_plain_term_functions_on_its_own_state(clips: list[HOIMotion], fused: bool) -> None:
    env = HOIEnv(eval_config(num_worlds=3, fused_cpu_step=fused), clips)
    assert env.fused_step_active == fused
    env.reset(clip_ids=torch.tensor([1, 1, 0]), start_frames=torch.tensor([0, 10, 20]))  # box: worlds 0-1
    for _ in range(3):
        assert env._prev is not None
        prev = PrevVelocities(env._prev.joint_ang_vel.clone(), env._prev.object_lin_vel.clone(),
                              env._prev.object_ang_vel.clone())
        obs, reward, _, _, info = env.step(env.pd_replay_actions())
        sim, lib, pts = env.sim_state(), env.motion_library, env._world_points
        ref = lib.frames(env.clip, env.t)
        want, terms = compute_reward(sim, prev, ref, pts, env.config.reward, env.steps, env.dt)
        torch.testing.assert_close(reward, want, rtol=1e-5, atol=1e-7)
        for name, v in terms.items():
            torch.testing.assert_close(info["reward_terms"][name], v, rtol=1e-5, atol=1e-7, msg=name)
        e_h, e_o = step_errors(sim, ref, pts)
        if fused:  # the compiled step: the same terms to float32 rounding
            torch.testing.assert_close(info["E_h"], e_h, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(info["E_o"], e_o, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(info["E_h"], e_h) and torch.equal(info["E_o"], e_o)
        refs = [lib.frames(env.clip, env.t + d) for d in env.obs_spec.ref_offsets]
        torch.testing.assert_close(obs, _per_term(env.obs_builder, sim, refs, pts), atol=1e-5, rtol=0)


def test_pipelined_env_is_bit_identical_to_the_plain_one(clips: list[HOIMotion]) -> None:
    def run(pipeline: bool) -> tuple[HOIEnv, list[torch.Tensor]]:
        cfg = HOIEnvConfig(num_worlds=5, state_init="random", min_episode_frames=5, episode_cap=9, seed=7,
                           pipeline=pipeline, psi=PSIConfig(slots=2, min_rollout=2, margin_start=0, margin_end=0))
        env = HOIEnv(cfg, clips)
        out = [env.reset()]
        noise = torch.Generator().manual_seed(1)
        for _ in range(14):  # crosses several auto-resets
            a = env.pd_replay_actions() + 0.1 * torch.randn(5, env.num_actions, generator=noise)
            obs, reward, terminated, truncated, info = env.step(a)
            out += [obs, reward, terminated, truncated, info["E_h"], info["E_o"], env.t.clone(), env.clip.clone(),
                    *info["reward_terms"].values(), *info["reasons"].values()]
        out += [env.psi.scores, env.psi.states]
        return env, out

    plain, a = run(False)
    piped, b = run(True)
    assert len(piped.groups) == 3 and len(plain.groups) == 2  # the object blocks split at world 2 | 3
    assert piped.model_hash == plain.model_hash
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert plain.metrics.summary() == piped.metrics.summary()
    piped.close()


def _lowest_foot(env: HOIEnv, world: int = 0) -> float:
    """Lowest point of the foot boxes of ``world`` (m), from MuJoCo's geom poses."""
    group = next(g for g in env.groups if g.start <= world < g.stop)
    data, model = group.backend.get_data(world - group.start), group.scene.model  # type: ignore[attr-defined]
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    lows = []
    for gid in np.flatnonzero(np.isin(group.scene.geom_humanoid_body, FOOT_BODIES)):
        assert model.geom_type[gid] == mujoco.mjtGeom.mjGEOM_BOX
        rot = data.geom_xmat[gid].reshape(3, 3)
        lows.append(float((data.geom_xpos[gid] + (corners * model.geom_size[gid]) @ rot.T)[:, 2].min()))
    return min(lows)


def test_subject_skeleton_puts_the_first_frame_on_the_floor(motions_root: Path) -> None:
    clip = load_motion(motions_root / CLIP).slice(0, 60)
    plain = HOIEnv(eval_config(num_worlds=1), [clip])
    subject = HOIEnv(eval_config(num_worlds=1, skeleton="subject"), [clip])
    for env in (plain, subject):
        env.reset(start_frames=torch.tensor([0]))
    assert _lowest_foot(plain) > 0.05  # the default skeleton's feet float (the drop this option removes)
    assert abs(_lowest_foot(subject)) < 0.02
    assert subject.model_hash != plain.model_hash and subject.skeleton is not None
    assert subject.skeleton.name.startswith("subject:")
    # the subject's FK is the clip's: the simulated bodies sit on the reference ones after the reset
    sim, ref = subject.sim_state(), subject.motion_library.frames(subject.clip, subject.t)
    assert float((sim.body_pos - ref.body_pos).norm(dim=-1).max()) < 1e-3
    with pytest.raises(EnvConfigError, match="skeleton"):
        HOIEnvConfig(skeleton="tall")


def test_subject_skeleton_needs_usable_clips(clips: list[HOIMotion]) -> None:
    with pytest.raises(SkeletonError, match="no clips"):
        subject_skeleton([])
    broken = dataclasses.replace(clips[0], body_pos=np.full_like(clips[0].body_pos, np.nan), name="broken")
    with pytest.raises(SkeletonError, match="broken.*NaN"):
        subject_skeleton([clips[0], broken])
    # one skeleton for several clips: the bones of the same subject agree, so FK stays exact
    sk = subject_skeleton(clips)
    assert sk.meta["num_clips"] == "2" and np.isfinite(sk.offsets).all()
