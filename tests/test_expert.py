"""The balance expert of the warm start: it completes the example clip where PD replay falls."""

from __future__ import annotations

import pytest
import torch

from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from training.config import BCWarmStartConfig, ConfigError
from training.expert import BalanceGains, make_expert, rollout_scores

TUNED = {"ankle_p": 5.301, "ankle_d": 0.532, "hip_p": 0.92, "hip_d": 0.015, "grip_p": 0.867, "grip_d": 0.069}


def test_balance_expert_completes_the_example_clip_where_pd_replay_falls() -> None:
    motion = make_example_motion()
    env = HOIEnv(eval_config(num_worlds=2, threads=1), [motion])
    try:
        gains = torch.stack([torch.zeros(6), BalanceGains(**TUNED).vector()])
        reached, e_h, e_o = rollout_scores(env, gains)
    finally:
        env.close()
    last = motion.num_frames - 1
    assert reached[0] < 0.7 * last  # PD replay: the unactuated root drifts, the humanoid falls
    assert reached[1] == last  # the expert reaches the clip's last frame without any termination
    assert float(e_h[1]) < 0.06 and float(e_o[1]) < 0.08


def test_expert_choice_and_gains_are_validated() -> None:
    assert make_expert("pd-replay") is None
    assert callable(make_expert("balance", TUNED))
    with pytest.raises(ValueError, match="unknown expert"):
        make_expert("oracle")
    with pytest.raises(ConfigError, match="expert must be one of"):
        BCWarmStartConfig(iterations=1, expert="oracle")
    with pytest.raises(ConfigError, match="unknown gain"):
        BCWarmStartConfig(iterations=1, expert="balance", expert_gains={"knee_p": 1.0})
    back = BalanceGains.from_vector(BalanceGains(**TUNED).vector())
    assert [getattr(back, k) for k in TUNED] == pytest.approx(list(TUNED.values()))
    assert back.squeeze_max == 0.0  # the squeeze is off unless asked for
    squeezed = BalanceGains(**TUNED, squeeze_p=3.0, squeeze_d=0.03, squeeze_max=0.03)
    again = BalanceGains.from_vector(squeezed.vector(), squeezed.squeeze_vector())
    assert list(again.__dict__.values()) == pytest.approx(list(squeezed.__dict__.values()))


def test_example_recipe_uses_the_expert_and_the_reference_prior() -> None:
    from pathlib import Path

    from training.config import load_pipeline_config

    repo = Path(__file__).resolve().parent.parent
    for name in ("example.yaml", "smoke.yaml"):
        cfg = load_pipeline_config(repo / "config" / "pipeline" / name)
        assert cfg.clips == () and cfg.clip_frames is None  # the whole bundled clip, as the closed loop runs it
        bc = cfg.teacher.bc_warmstart
        assert bc.enabled and bc.expert == "balance" and set(TUNED) <= set(bc.expert_gains)
    example = load_pipeline_config(repo / "config" / "pipeline" / "example.yaml").teacher
    assert example.ppo.action_prior == "reference" and example.ppo.hidden_dims == (512, 256)


def test_zero_ppo_iterations_only_with_a_warm_start() -> None:
    from training.config import TeacherTrainConfig

    assert TeacherTrainConfig(iterations=0, bc_warmstart=BCWarmStartConfig(iterations=2)).iterations == 0
    with pytest.raises(ConfigError, match="iterations must be positive"):
        TeacherTrainConfig(iterations=0)


def _example_env_at(frame: int) -> HOIEnv:
    env = HOIEnv(eval_config(num_worlds=1, threads=1), [make_example_motion()])
    env.reset(torch.arange(1), clip_ids=torch.zeros(1, dtype=torch.long), start_frames=torch.tensor([frame]))
    return env


def test_zero_squeeze_gains_give_the_old_targets_exactly() -> None:
    from training.expert import body_masses, expert_targets

    env = _example_env_at(60)  # the hands hold the box in the reference here
    try:
        gains, mass = BalanceGains(**TUNED).vector(), body_masses(env)
        old = expert_targets(env, gains, mass)
        assert torch.equal(expert_targets(env, gains, mass, squeeze=torch.zeros(3)), old)
        assert torch.equal(expert_targets(env, gains, mass, squeeze=BalanceGains(**TUNED).squeeze_vector()), old)
        act = make_expert("balance", TUNED)
        assert act is not None and torch.equal(act(env), env.targets_to_action(old))
    finally:
        env.close()


def test_slip_presses_the_palms_inward_by_at_most_squeeze_max() -> None:
    import dataclasses

    from intermimic_policy.embodiment.fk import forward_kinematics
    from intermimic_policy.embodiment.skeleton import default_skeleton
    from training.expert import palm_offsets, palm_points, press_offsets, slip_depth

    env = _example_env_at(60)
    try:
        sim, ref, offsets = env.sim_state(), env.reference(0), palm_offsets(env)
    finally:
        env.close()
    depth0, _ = slip_depth(sim, ref, offsets)
    slipped = dataclasses.replace(sim, object_pos=sim.object_pos - torch.tensor([0.0, 0.0, 0.05]))
    depth, _ = slip_depth(slipped, ref, offsets)
    assert float(depth - depth0) == pytest.approx(0.05, abs=1e-5)  # the box 5 cm lower between the same hands
    gains = BalanceGains(squeeze_p=3.0, squeeze_d=0.03, squeeze_max=0.03)
    press = torch.clamp(gains.squeeze_p * depth, 0.0, gains.squeeze_max)
    assert float(press) == pytest.approx(0.03)
    delta = press_offsets(slipped, offsets, press)
    moved = {j for j in range(51) if bool(delta[0, j].any())}
    assert moved == {15 - 1, 16 - 1, 34 - 1, 35 - 1}  # shoulders and elbows only
    skel = default_skeleton()
    before = forward_kinematics(skel.offsets, sim.root_pos, sim.root_rot, sim.joint_rotvec)
    after = forward_kinematics(skel.offsets, sim.root_pos, sim.root_rot, sim.joint_rotvec + delta)
    p0 = palm_points(before[0], before[1], offsets)[0]
    p1 = palm_points(after[0], after[1], offsets)[0]
    for side in (0, 1):
        inward = (p0[1 - side] - p0[side]) * torch.tensor([1.0, 1.0, 0.0])
        step = p1[side] - p0[side]
        assert float(step @ inward / inward.norm()) > 0.02  # most of the 3 cm, toward the other palm
        assert float(step.norm()) < 0.033  # bounded by squeeze_max (the DLS and linearization only shorten it)


def test_press_moves_the_palms_together_in_a_mujoco_step() -> None:
    from training.expert import body_masses, expert_targets, palm_offsets, palm_points, press_offsets

    gaps = []
    for press in (0.0, 0.03):
        env = _example_env_at(40)  # the reach: the palms are free, nothing blocks them
        try:
            gains, mass, offsets = BalanceGains(**TUNED).vector(), body_masses(env), palm_offsets(env)
            for _ in range(5):
                target = expert_targets(env, gains, mass) + press_offsets(env.sim_state(), offsets,
                                                                         torch.tensor([press]))
                env.step(env.targets_to_action(target))
            sim = env.sim_state()
            palms = palm_points(sim.body_pos, sim.body_rot, offsets)[0]
            gaps.append(float((palms[0] - palms[1])[:2].norm()))
        finally:
            env.close()
    assert gaps[0] - gaps[1] > 0.02  # both palms moved inward (up to 2 x 3 cm)
