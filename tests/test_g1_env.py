"""``HOIEnv`` runs the G1 on a retargeted OMOMO_new clip: sizes from its embodiment, reset, step,
observation of the declared size, finite rewards, termination at the clip end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment.description import embodiment_for
from intermimic_policy.motion.robot_motion import load_robot_motion
from intermimic_policy.sim.env import EnvError, HOIEnv
from intermimic_policy.sim.env_config import HOIEnvConfig, eval_config
from intermimic_policy.sim.terminations import TerminationConfig
from intermimic_policy.state.frames import InitialState
from tests.g1_clip import FRAMES, retargeted_g1_clip


@pytest.fixture(scope="module")
def g1_clip(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return retargeted_g1_clip(motions_root, tmp_path_factory.mktemp("g1"))


@pytest.fixture(scope="module")
def env(g1_clip: Path):  # type: ignore[no-untyped-def]
    # early termination off: PD replay (no policy) drifts and would be stopped by the deviation tests
    cfg = eval_config(num_worlds=2, robot="g1", num_object_points=256,
                      termination=TerminationConfig(early_termination=False))
    e = HOIEnv(cfg, [g1_clip])
    yield e
    e.close()


def test_g1_env_sizes_come_from_its_embodiment(env: HOIEnv) -> None:
    emb = embodiment_for("g1")
    assert env.embodiment is emb and env.num_actions == emb.num_dofs == 43
    assert env.obs_spec.num_bodies == emb.num_bodies and env.num_obs == env.obs_spec.dim
    sim = env.sim_state()
    assert sim.body_pos.shape == (2, emb.num_bodies, 3) and sim.joint_rotvec.shape == (2, 43, 3)
    contract = env.policy_contract("teacher")
    assert contract.embodiment == "robot:g1" and contract.joint_names == emb.dof_names
    assert contract.input_dim == env.num_obs and contract.output_dim == 43 and contract.skeleton is None


def test_g1_reset_matches_the_reference_and_steps_to_the_clip_end(env: HOIEnv, g1_clip: Path) -> None:
    obs = env.reset()
    obs = obs[0] if isinstance(obs, tuple) else obs
    assert obs.shape == (2, env.num_obs) and bool(torch.isfinite(obs).all())
    # the simulated links start where the reference's FK puts them (same URDF, same joint order)
    ref = env.reference()
    sim = env.sim_state()
    assert float((sim.body_pos - ref.body_pos).norm(dim=-1).max()) < 1e-4
    motion = load_robot_motion(g1_clip)
    q = env.action_to_targets(env.targets_to_action(env.motion_library.joint_rotvec(env.clip, env.t)))
    assert np.allclose(q[0].numpy(), np.clip(motion.joint_pos[0], embodiment_for("g1").lower,
                                              embodiment_for("g1").upper), atol=1e-5)
    ended_at = None
    rewards = []
    for i in range(FRAMES + 5):
        obs, reward, terminated, truncated, info = env.step(env.pd_replay_actions())
        assert obs.shape == (2, env.num_obs) and bool(torch.isfinite(obs).all())
        assert bool(torch.isfinite(reward).all()) and bool((reward >= 0).all() and (reward <= 1).all())
        rewards.append(float(reward[0]))
        if bool((terminated | truncated)[0]):
            ended_at = i + 1
            assert info["reasons"]["clip_end"][0] and not terminated[0]  # tracked to the end, no failure
            break
    assert ended_at == FRAMES - 1, f"episode ended at step {ended_at}"
    assert rewards[0] > 0.9  # PD replay starts on the reference
    assert float(info["E_h"][0]) < 0.5
    # not auto-reset (evaluation config): the ended worlds stay inactive, their reward is 0
    _, reward, terminated, truncated, _ = env.step(env.pd_replay_actions())
    assert float(reward.abs().sum()) == 0.0 and not bool((terminated | truncated).any())


def test_g1_early_termination_names_a_reason(g1_clip: Path) -> None:
    env = HOIEnv(eval_config(num_worlds=1, robot="g1", num_object_points=256,
                             termination=TerminationConfig(key_body_dev=0.02)), [g1_clip])
    try:
        env.reset()
        for _ in range(FRAMES):
            _, _, terminated, _, info = env.step(env.pd_replay_actions())
            if bool(terminated[0]):
                break
        assert bool(terminated[0]) and bool(info["reasons"]["human_deviation"][0])
    finally:
        env.close()


def test_g1_psi_state_round_trips(env: HOIEnv) -> None:
    flat = InitialState.from_sim(env.sim_state()).flatten()
    assert flat.shape[1] == embodiment_for("g1").initial_state_dim
    back = InitialState.from_flat(flat, 43)
    assert torch.equal(back.flatten(), flat)


def test_g1_env_refuses_wrong_actions_and_smplx_clips(env: HOIEnv, motions_root: Path) -> None:
    with pytest.raises(EnvError, match=r"expected \(2, 43\)"):
        env.step(torch.zeros(2, 153))
    with pytest.raises(Exception, match="not a robot motion|robot"):
        HOIEnv(HOIEnvConfig(num_worlds=1, robot="g1"), [motions_root / "OMOMO_new" / "sub2_largetable_000.pt"])
