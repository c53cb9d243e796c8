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
    assert list(back.__dict__.values()) == pytest.approx(list(TUNED.values()))


def test_example_recipe_uses_the_expert_and_the_reference_prior() -> None:
    from pathlib import Path

    from training.config import load_pipeline_config

    repo = Path(__file__).resolve().parent.parent
    for name in ("example.yaml", "smoke.yaml"):
        cfg = load_pipeline_config(repo / "config" / "pipeline" / name)
        assert cfg.clips == () and cfg.clip_frames is None  # the whole bundled clip, as the closed loop runs it
        bc = cfg.teacher.bc_warmstart
        assert bc.enabled and bc.expert == "balance" and set(bc.expert_gains) == set(TUNED)
    example = load_pipeline_config(repo / "config" / "pipeline" / "example.yaml").teacher
    assert example.ppo.action_prior == "reference" and example.ppo.hidden_dims == (512, 256)


def test_zero_ppo_iterations_only_with_a_warm_start() -> None:
    from training.config import TeacherTrainConfig

    assert TeacherTrainConfig(iterations=0, bc_warmstart=BCWarmStartConfig(iterations=2)).iterations == 0
    with pytest.raises(ConfigError, match="iterations must be positive"):
        TeacherTrainConfig(iterations=0)
