"""HOIEnv: fresh observations after resets, auto-reset of a subset, PD replay, config errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.smplx_body import NUM_DOFS
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.spec import ObservationSpecError, student_spec
from intermimic_policy.sim.env import EnvError, HOIEnv
from intermimic_policy.sim.env_config import EnvConfigError, HOIEnvConfig, eval_config
from intermimic_policy.sim.psi import PSIConfig
from intermimic_policy.sim.rewards import RewardWeights

CLIP = "OMOMO_new/sub2_largetable_000.pt"


@pytest.fixture(scope="module")
def clip(motions_root: Path) -> HOIMotion:
    return load_motion(motions_root / CLIP).slice(0, 60)


@pytest.fixture(scope="module")
def env(clip: HOIMotion) -> HOIEnv:
    return HOIEnv(HOIEnvConfig(num_worlds=3, state_init="start", episode_cap=None), [clip])


def test_sizes_and_identity(env: HOIEnv, clip: HOIMotion) -> None:
    assert env.num_obs == 3198 and env.num_actions == NUM_DOFS
    assert env.obs_spec.ref_offsets == (1, 16)
    assert env.model_hash == env.groups[0].scene.content_hash and len(env.model_hash) == 64
    assert env.motion_library.num_clips == 1 and int(env.motion_library.num_frames[0]) == clip.num_frames


def test_observation_after_reset_is_fresh(env: HOIEnv) -> None:
    env.reset()
    for _ in range(6):
        before, *_ = env.step(env.pd_replay_actions())
    obs = env.reset()
    assert obs.shape == (3, env.num_obs) and torch.isfinite(obs).all()
    # the returned observation is the one of the state the backend now holds ...
    assert torch.equal(obs, env.compute_observation())
    # ... at the reset frame: block 0 sees the simulated root height = the reference's at frame 0
    assert torch.allclose(obs[:, 0], env.motion_library.frames(env.clip, env.t).root_pos[:, 2], atol=1e-4)
    assert bool((env.t == 0).all()) and bool((env.steps == 0).all())
    # ... and not the stale pre-reset one
    assert (obs - before).abs().amax(dim=-1).min() > 1e-2


def test_step_outputs(env: HOIEnv) -> None:
    env.reset()
    obs, reward, terminated, truncated, info = env.step(env.pd_replay_actions())
    assert obs.shape == (3, env.num_obs) and torch.isfinite(obs).all()
    assert reward.shape == (3,) and bool(((reward > 0) & (reward <= 1)).all())
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert set(info["reward_terms"]) == set(RewardWeights().to_dict()) - {"contact_source"}
    prod = torch.ones(3)
    for v in info["reward_terms"].values():
        prod = prod * v
    assert torch.allclose(prod, reward)
    assert bool((info["E_h"] < 0.2).all()) and bool((info["E_o"] < 0.05).all())  # one step in: still on track
    assert bool((env.t == 1).all())


def test_pd_replay_targets_are_the_next_reference_frame(env: HOIEnv, clip: HOIMotion) -> None:
    env.reset(start_frames=torch.tensor([0, 5, 10]))
    targets = env.action_to_targets(env.pd_replay_actions())
    want = joint_map.hinge_angles_from_rotvec(torch.from_numpy(clip.joint_rotvec[[1, 6, 11]]).float())
    body = slice(0, 17 * 3)  # hips..left wrist: +-180 deg joints, never clamped
    assert torch.allclose(targets[:, body], want[:, body], atol=1e-4)
    assert bool((targets - want).abs().max() < 0.2)  # fingers: clamped to their ranges at most


def test_auto_reset_touches_only_the_ended_world(clip: HOIMotion) -> None:
    env = HOIEnv(HOIEnvConfig(num_worlds=3, state_init="start", episode_cap=None), [clip])
    last = clip.num_frames - 1
    env.reset(start_frames=torch.tensor([0, last - 2, 10]))
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(env.pd_replay_actions())
    # world 1 reached the clip's last frame: a time-out (truncated), reset to frame 0 in the same call
    assert truncated.tolist() == [False, True, False] and not bool(terminated.any())
    assert info["done_ids"].tolist() == [1] and info["reasons"]["clip_end"].tolist() == [False, True, False]
    assert env.t.tolist() == [2, 0, 12] and env.steps.tolist() == [2, 0, 2]
    # the reset world's row is its fresh observation; the others are the step's (the compiled CPU
    # step here: equal to the torch terms to float32 rounding, tests/test_env_fused_step.py)
    fresh = env.compute_observation()
    assert torch.equal(obs[1], fresh[1])
    torch.testing.assert_close(obs, fresh, rtol=1e-5, atol=2e-5)
    assert not torch.equal(info["terminal_obs"][0], obs[1])
    s = env.metrics.summary()
    assert s["attempts"] == 1 and s["successes"] == 1


def test_nonfinite_observation_resets_the_world_instead_of_crashing(clip: HOIMotion,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the torch path (its builder is poisoned below); the fused step's form is in test_env_fused_step
    env = HOIEnv(HOIEnvConfig(num_worlds=2, state_init="start", episode_cap=None, fused_cpu_step=False), [clip])
    env.reset()
    env.step(env.pd_replay_actions())
    real_build = env.obs_builder.build
    calls = {"n": 0}

    def poisoned(sim, refs, points, **kwargs):  # type: ignore[no-untyped-def]
        out = real_build(sim, refs, points, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # the step's observation of world 0 goes bad once
            out[0, 5] = float("nan")
        return out

    monkeypatch.setattr(env.obs_builder, "build", poisoned)
    obs, reward, terminated, truncated, info = env.step(env.pd_replay_actions())
    assert env.nonfinite_resets == 1
    assert terminated.tolist() == [True, False] and info["reasons"]["nonfinite_obs"].tolist() == [True, False]
    assert torch.isfinite(obs).all() and float(reward[0]) == 0.0
    assert env.t.tolist() == [0, 2]  # world 0 restarted, world 1 went on


def test_psi_mode_restarts_from_the_buffer(clip: HOIMotion) -> None:
    cfg = HOIEnvConfig(num_worlds=2, state_init="psi", hybrid_init_prob=0.0, episode_cap=None, seed=3,
                       psi=PSIConfig(slots=3, min_rollout=1, margin_start=0, margin_end=0, horizon=5))
    env = HOIEnv(cfg, [clip])
    env.reset(start_frames=torch.tensor([0, 0]))
    for _ in range(12):
        env.step(env.pd_replay_actions())
    env.reset(torch.tensor([0, 1]))  # cuts both episodes short: truncated, so PSI scores them
    assert env.psi.fill_fraction() > 0.0
    assert torch.isfinite(env.obs).all()
    frame = int(torch.nonzero(env.psi.scores[0, :, 1] > 0).flatten()[-1])
    stored_root = env.psi.states[0, frame, 0, :3]
    ref_root = env.motion_library.initial_state(torch.tensor([0]), torch.tensor([frame])).root_pos[0]
    assert float((stored_root - ref_root).norm()) > 1e-3  # a simulated state, not the MoCap one
    roots = []
    for _ in range(4):  # slots are drawn by score: the stored state comes up
        env.reset(torch.tensor([0, 1]), start_frames=torch.tensor([frame, frame]))
        roots.append(env.sim_state().root_pos)
    roots_t = torch.cat(roots)
    assert bool(((roots_t - stored_root).norm(dim=-1) < 1e-4).any())
    assert bool(((roots_t - ref_root).norm(dim=-1) < 1e-4).any() | ((roots_t - stored_root).norm(dim=-1) < 1e-4).all())


def test_bad_configs_fail_at_build_naming_the_problem(clip: HOIMotion) -> None:
    with pytest.raises(EnvConfigError, match="backend 'physx'"):
        HOIEnvConfig(backend="physx")
    with pytest.raises(EnvConfigError, match="unknown reward weight name.*'rot'"):
        HOIEnvConfig.from_dict({"reward": {"p": 30.0, "rot": 1.0}})
    with pytest.raises(EnvConfigError, match="unknown setting.*'worlds'"):
        HOIEnvConfig.from_dict({"worlds": 4})
    with pytest.raises(EnvConfigError, match="3198 dims.*expected 6396"):
        HOIEnvConfig(expected_obs_dim=6396)
    assert HOIEnvConfig.from_dict({"obs_spec": "student", "expected_obs_dim": 6396}).obs_spec == student_spec()
    with pytest.raises(EnvConfigError, match="psi.slots"):
        HOIEnvConfig(state_init="psi")
    with pytest.raises(EnvConfigError, match="whole multiple"):
        HOIEnvConfig(physics_hz=100.0)
    broken = dataclasses.replace(student_spec(), terms=(dataclasses.replace(student_spec().terms[0], dim=2),)
                                 + student_spec().terms[1:])
    with pytest.raises(ObservationSpecError, match="root_height"):
        HOIEnv(HOIEnvConfig(num_worlds=1, obs_spec=broken), [clip])
    ghost = dataclasses.replace(clip, object_name="no_such_object", name="ghost_clip")
    with pytest.raises(EnvError, match="no_such_object.*ghost_clip"):
        HOIEnv(HOIEnvConfig(num_worlds=1), [ghost])


def test_mixed_objects_get_one_block_of_worlds_each(clip: HOIMotion) -> None:
    boxed = dataclasses.replace(clip, object_name="box", name="box_clip")  # the built-in primitive
    env = HOIEnv(eval_config(num_worlds=3), [clip, boxed])
    assert [(g.object_name, g.start, g.stop) for g in env.groups] == [("box", 0, 2), ("largetable", 2, 3)]
    assert env.model_hash not in {g.scene.content_hash for g in env.groups}
    obs = env.reset(clip_ids=torch.tensor([1, 1, 0]), start_frames=torch.zeros(3, dtype=torch.long))
    assert torch.isfinite(obs).all()
    with pytest.raises(EnvError, match="box_clip.*'box'.*world 2.*'largetable'"):
        env.reset(torch.tensor([2]), clip_ids=torch.tensor([1]))
    obs, *_ = env.step(env.pd_replay_actions())
    assert torch.isfinite(obs).all()
