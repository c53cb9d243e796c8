"""Actions relative to the reference pose: the prior is PD replay's action, inside the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.observation.spec import student_spec
from intermimic_policy.runtime.loader import load_policy
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from training.config import ConfigError, PPOConfig
from training.export import export_policy
from training.ppo.policy import TeacherPolicy
from training.reference_prior import PriorError, build_prior


@pytest.fixture(scope="module")
def observed() -> tuple[torch.Tensor, torch.Tensor, HOIEnv]:
    env = HOIEnv(eval_config(num_worlds=3, threads=1), [make_example_motion().slice(0, 120)])
    obs = env.reset(torch.arange(3), clip_ids=torch.zeros(3, dtype=torch.long), start_frames=torch.tensor([0, 50, 90]))
    for _ in range(3):
        obs, *_ = env.step(env.pd_replay_actions())
    return obs, env.pd_replay_actions(), env


def test_prior_is_pd_replay_for_every_body_joint(observed) -> None:
    obs, expert, env = observed
    prior = build_prior("reference", env.obs_spec)
    out = prior(obs)
    body = prior.cols
    torch.testing.assert_close(out[:, body], expert[:, body], atol=1e-5, rtol=0)
    fingers = torch.ones(153, dtype=torch.bool)
    fingers[body] = False
    assert int(fingers.sum()) == 153 - 21 * 3 and float(out[:, fingers].abs().max()) == 0.0


def test_policy_adds_the_network_to_the_prior_and_export_keeps_it(observed, tmp_path: Path) -> None:
    obs, expert, env = observed
    policy = TeacherPolicy.build(env.num_obs, 153, PPOConfig(hidden_dims=(16,), action_prior="reference"), env.obs_spec)
    with torch.no_grad():
        policy.net.mu.weight.zero_()
        policy.net.mu.bias.zero_()
    body = policy.prior.cols
    torch.testing.assert_close(policy.action_mean(obs)[:, body], expert[:, body], atol=1e-5, rtol=0)
    out = tmp_path / "prior.onnx"
    export_policy(policy.net, policy.normalizer, out, spec=env.obs_spec, model_hash=default_skeleton().content_hash(),
                  prior=policy.prior)
    runtime = load_policy(out, backend="onnxruntime")  # also checks the golden pairs
    actions = runtime(obs.numpy())
    np.testing.assert_allclose(actions[:, body.numpy()], expert[:, body].numpy(), atol=1e-4)


def test_unknown_prior_and_missing_term_are_refused() -> None:
    with pytest.raises(ConfigError, match="action_prior"):
        PPOConfig(action_prior="pose")
    with pytest.raises(PriorError, match="unknown action prior"):
        build_prior("pose", student_spec())
