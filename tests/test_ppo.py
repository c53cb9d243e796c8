"""PPO unit tests on a tiny batched point-mass task (real dynamics, real networks, real rsl_rl)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from tensordict import TensorDict

from training.config import PPOConfig
from training.ppo import InterMimicPPO, PPORunner, TeacherPolicy, bounds_loss
from training.ppo.algorithm import OBS_KEY


class PointMassEnv:
    """2-D point masses pushed towards a goal; leaving the 3 m disc terminates, 40 steps time out."""

    num_actions = 2
    obs_dim = 6

    def __init__(self, num_envs: int = 16, max_steps: int = 40, dt: float = 0.1) -> None:
        self.num_envs, self.max_episode_length, self.dt = num_envs, max_steps, dt
        self.device = "cpu"
        self.cfg: dict = {}
        self.gen = torch.Generator().manual_seed(0)
        self.pos = torch.zeros(num_envs, 2)
        self.vel = torch.zeros(num_envs, 2)
        self.goal = torch.zeros(num_envs, 2)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.reset(seed=0)

    def _sample(self, ids: torch.Tensor) -> None:
        n = int(ids.numel())
        self.pos[ids] = torch.rand(n, 2, generator=self.gen) * 2 - 1
        self.vel[ids] = 0.0
        self.goal[ids] = torch.rand(n, 2, generator=self.gen) * 2 - 1
        self.episode_length_buf[ids] = 0

    def _obs(self) -> TensorDict:
        x = torch.cat([self.pos, self.vel, self.goal - self.pos], dim=-1)
        return TensorDict({OBS_KEY: x}, batch_size=[self.num_envs])

    def reset(self, seed: int | None = None) -> TensorDict:
        if seed is not None:
            self.gen.manual_seed(seed)
        self._sample(torch.arange(self.num_envs))
        return self._obs()

    def get_observations(self) -> TensorDict:
        return self._obs()

    def step(self, actions: torch.Tensor):
        a = actions.clamp(-1.0, 1.0)
        self.vel = 0.9 * self.vel + a * self.dt * 5.0
        self.pos = self.pos + self.vel * self.dt
        self.episode_length_buf += 1
        dist = (self.goal - self.pos).norm(dim=-1)
        reward = torch.exp(-2.0 * dist.square())
        terminated = self.pos.norm(dim=-1) > 3.0
        time_out = (self.episode_length_buf >= self.max_episode_length) & ~terminated
        done = terminated | time_out
        final = self._obs()
        ids = done.nonzero().flatten()
        if ids.numel():
            self._sample(ids)
        extras = {"time_outs": time_out, "final_obs": final, "log": {"reward/dist": dist},
                  "episode": {"success": time_out}}
        return self._obs(), reward, done.float(), extras


def _cfg(**kw: Any) -> PPOConfig:
    base: dict[str, Any] = dict(num_steps_per_env=8, num_learning_epochs=2, minibatch_size=64,
                                hidden_dims=(32, 32), learning_rate=1e-3, init_log_std=-1.0)
    base.update(kw)
    return PPOConfig(**base)


def _runner(num_envs: int = 16, seed: int = 0, **kw) -> PPORunner:
    torch.manual_seed(seed)
    env = PointMassEnv(num_envs)
    cfg = _cfg(**kw)
    return PPORunner(env, TeacherPolicy.build(env.obs_dim, env.num_actions, cfg), cfg)


def test_defaults_are_intermimic_hyper_parameters():
    cfg = PPOConfig()
    assert (cfg.num_steps_per_env, cfg.num_learning_epochs, cfg.clip_param) == (32, 6, 0.2)
    assert (cfg.gamma, cfg.lam, cfg.learning_rate) == (0.99, 0.95, 2e-5)
    assert (cfg.value_loss_coef, cfg.bounds_loss_coef, cfg.soft_bound) == (5.0, 10.0, 1.0)
    assert cfg.hidden_dims == (1024, 1024, 512) and cfg.init_log_std == -2.9
    assert cfg.entropy_coef == 0.0 and cfg.max_grad_norm is None
    assert cfg.num_mini_batches(4096) == 8  # 131072 samples / 16384 (spec 8.3)


def test_bounds_loss_values_and_zero_inside():
    mu = torch.tensor([[0.0, 0.99, -1.0], [1.5, -2.0, 0.3]])
    loss = bounds_loss(mu, 1.0)
    assert loss[0].item() == 0.0
    assert loss[1].item() == pytest.approx(0.5**2 + 1.0**2)
    assert bounds_loss(mu, 2.0)[1].item() == 0.0


def test_bounds_loss_pulls_out_of_bound_means_back():
    runner = _runner(bounds_loss_coef=10.0, value_loss_coef=0.0, learning_rate=1e-2)
    with torch.no_grad():
        runner.policy.net.mu.bias.fill_(3.0)  # every action mean far beyond the soft bound
    obs = runner.obs[OBS_KEY]
    before = runner.policy.action_mean(obs).mean().item()
    runner.learn_iteration()
    after = runner.policy.action_mean(obs).mean().item()
    assert before > 2.5 and after < before - 0.1


def _one_step_storage(runner: PPORunner, dones: torch.Tensor, time_outs: torch.Tensor,
                      final: torch.Tensor, nxt: torch.Tensor, rewards: torch.Tensor) -> InterMimicPPO:
    alg = runner.alg
    with torch.inference_mode():
        alg.act(runner.obs)
        extras = {"time_outs": time_outs, "final_obs": TensorDict({OBS_KEY: final}, batch_size=[final.shape[0]])}
        alg.process_env_step(TensorDict({OBS_KEY: nxt}, batch_size=[nxt.shape[0]]), rewards, dones, extras)
        alg.compute_returns(TensorDict({OBS_KEY: nxt}, batch_size=[nxt.shape[0]]))
    return alg


def test_gae_bootstraps_time_outs_but_not_terminations():
    runner = _runner(num_envs=3, num_steps_per_env=1, gamma=0.9, normalize_advantage=False)
    g = torch.Generator().manual_seed(1)
    nxt, final = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    rewards = torch.tensor([0.5, 0.25, 1.0])
    # world 0 continues, world 1 times out, world 2 terminates (falls)
    dones = torch.tensor([0.0, 1.0, 1.0])
    time_outs = torch.tensor([False, True, False])
    alg = _one_step_storage(runner, dones, time_outs, final, nxt, rewards)
    with torch.no_grad():
        v_next = runner.policy.value(nxt)
        v_final = runner.policy.value(final)
    returns = alg.storage.returns[0, :, 0]
    assert returns[0].item() == pytest.approx(0.5 + 0.9 * v_next[0].item(), abs=1e-5)
    assert returns[1].item() == pytest.approx(0.25 + 0.9 * v_final[1].item(), abs=1e-5)
    assert returns[2].item() == pytest.approx(1.0, abs=1e-6)
    # with every value non-trivial, the three cases really differ
    assert abs(v_next[0].item()) > 1e-4 or abs(v_final[1].item()) > 1e-4


def test_gae_chain_is_cut_at_done():
    runner = _runner(num_envs=2, num_steps_per_env=2, gamma=0.9, lam=0.95, normalize_advantage=False)
    alg = runner.alg
    obs1 = torch.randn(2, 6)
    with torch.inference_mode():
        alg.act(runner.obs)
        v0 = alg.transition.values[:, 0].clone()
        extras = {"time_outs": torch.tensor([False, False])}
        alg.process_env_step(TensorDict({OBS_KEY: obs1}, batch_size=[2]), torch.ones(2),
                             torch.tensor([0.0, 1.0]), extras)
        alg.act(TensorDict({OBS_KEY: obs1}, batch_size=[2]))
        v1 = alg.transition.values[:, 0].clone()
        alg.process_env_step(TensorDict({OBS_KEY: obs1}, batch_size=[2]), torch.zeros(2), torch.zeros(2), extras)
        alg.compute_returns(TensorDict({OBS_KEY: obs1}, batch_size=[2]))
        v2 = runner.policy.value(obs1)
    adv = alg.storage.advantages[:, :, 0]
    d1 = 0.0 + 0.9 * v2 - v1  # step-1 TD error of both worlds
    # world 0 continues: A0 = d0 + gamma*lam*d1; world 1 terminated at step 0: A0 = r - V(s0)
    assert adv[0, 0].item() == pytest.approx((1 + 0.9 * v1[0] - v0[0] + 0.9 * 0.95 * d1[0]).item(), abs=1e-5)
    assert adv[0, 1].item() == pytest.approx((1 - v0[1]).item(), abs=1e-5)


def test_fixed_std_is_not_trained_and_normaliser_is_updated():
    runner = _runner()
    policy = runner.policy
    log_std_before = policy.net.log_std.clone()
    assert all(p is not policy.net.log_std for g in runner.alg.optimizer.param_groups for p in g["params"])
    weights_before = policy.net.mu.weight.detach().clone()
    count_before = float(policy.normalizer.count)
    runner.learn_iteration()
    assert torch.equal(policy.net.log_std, log_std_before)
    assert policy.action_std[0].item() == pytest.approx(math.exp(-1.0))
    assert not torch.equal(policy.net.mu.weight, weights_before)  # the mean did learn
    n = runner.samples_per_iteration
    assert float(policy.normalizer.count) == count_before + n
    assert float(policy.normalizer.mean.abs().sum()) > 0.0


def test_ppo_learns_point_mass_reaching():
    runner = _runner(num_envs=64, num_steps_per_env=16, num_learning_epochs=4, minibatch_size=256,
                     learning_rate=3e-3, init_log_std=-1.0, hidden_dims=(64, 64))
    first = [runner.learn_iteration()["reward/mean"] for _ in range(3)]
    for _ in range(30):
        stats = runner.learn_iteration()
    last = [runner.learn_iteration()["reward/mean"] for _ in range(3)]
    assert sum(last) / 3 > sum(first) / 3 + 0.1, (first, last)
    assert math.isfinite(stats["loss/value"]) and stats["perf/samples_per_s"] > 0
    assert "episode/length" in stats or "episode/length" in runner.learn_iteration()


def test_runner_rejects_observation_size_mismatch():
    env = PointMassEnv(4)
    cfg = _cfg()
    with pytest.raises(ValueError, match="7"):
        PPORunner(env, TeacherPolicy.build(7, 2, cfg), cfg)


# -- behaviour-cloning warm start -----------------------------------------------------------------
class ExpertPointMassEnv(PointMassEnv):
    """The point-mass task with a hand-written expert: a PD controller towards the goal."""

    def expert_actions(self) -> torch.Tensor:
        return (2.0 * (self.goal - self.pos) - 1.0 * self.vel).clamp(-1.0, 1.0)


def _rollout_reward(env: ExpertPointMassEnv, act, steps: int = 40) -> float:
    env.reset(seed=123)
    total = 0.0
    for _ in range(steps):
        _, reward, _, _ = env.step(act())
        total += float(reward.mean())
    return total / steps


def test_lambda_returns_match_the_recursive_definition():
    from training.bc_warmstart import lambda_returns

    g = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(5, 3, generator=g), torch.randn(5, 3, generator=g)
    dones = torch.zeros(5, 3)
    dones[1, 0] = 1.0  # world 0's episode ends after step 1
    dones[4, 2] = 1.0  # world 2's after the last step
    last = torch.randn(3, generator=g)
    gamma, lam = 0.9, 0.8
    got = lambda_returns(rewards, values, dones, last, gamma, lam)
    # G_t = r_t + gamma (1 - d_t) [(1 - lam) V(s_{t+1}) + lam G_{t+1}], with G_T = V(s_T)
    for n in range(3):
        g_next = last[n].item()
        for t in reversed(range(5)):
            v_next = last[n].item() if t == 4 else values[t + 1, n].item()
            g_t = rewards[t, n].item() + gamma * (1 - dones[t, n].item()) * ((1 - lam) * v_next + lam * g_next)
            assert got[t, n].item() == pytest.approx(g_t, abs=1e-5), (t, n)
            g_next = g_t


def test_expert_probability_falls_from_one_to_expert_mix():
    from training.config import BCWarmStartConfig, ConfigError

    cfg = BCWarmStartConfig(iterations=5, expert_mix=0.2)
    probs = [cfg.expert_probability(r) for r in range(5)]
    assert probs[0] == 1.0 and probs[-1] == pytest.approx(0.2)
    assert all(a > b for a, b in zip(probs, probs[1:]))
    assert BCWarmStartConfig(iterations=1, expert_mix=0.0).expert_probability(0) == 1.0
    assert not BCWarmStartConfig().enabled
    with pytest.raises(ConfigError, match="expert_mix"):
        BCWarmStartConfig(iterations=2, expert_mix=1.5)


def test_bc_warmstart_clones_the_expert_and_fits_the_critic():
    from training.bc_warmstart import bc_warmstart
    from training.config import BCWarmStartConfig

    torch.manual_seed(0)
    env = ExpertPointMassEnv(32)
    cfg = _cfg(hidden_dims=(64, 64), init_log_std=-2.0)
    policy = TeacherPolicy.build(env.obs_dim, env.num_actions, cfg)

    def mean_action() -> torch.Tensor:
        with torch.no_grad():
            return policy.action_mean(env.get_observations()[OBS_KEY])

    def imitation_error() -> float:
        env.reset(seed=7)
        return float((mean_action() - env.expert_actions()).square().mean())

    before_err, before_reward = imitation_error(), _rollout_reward(env, mean_action)
    expert_reward = _rollout_reward(env, env.expert_actions)
    env.reset(seed=1)
    bc = BCWarmStartConfig(iterations=6, epochs=20, expert_mix=0.3, lr=3e-3, minibatch_size=128)
    result = bc_warmstart(env, policy, bc, horizon=16, gamma=0.9, lam=0.95, progress=False)
    assert result.samples == 6 * 16 * 32 and len(result.rounds) == 6
    assert [r.beta for r in result.rounds][0] == 1.0 and result.rounds[-1].beta == pytest.approx(0.3)
    assert 0.2 < result.rounds[-1].expert_fraction < 0.45  # the last round mostly follows the student
    after_err, after_reward = imitation_error(), _rollout_reward(env, mean_action)
    assert after_err < 0.1 * before_err, (before_err, after_err)
    # closed loop, the clone does (almost) what the expert does, far better than before
    assert after_reward > before_reward + 0.5 * (expert_reward - before_reward), (before_reward, after_reward)
    assert after_reward > 0.85 * expert_reward
    # DAgger's own measure (student vs expert on new states, before fitting them) went down
    assert result.rounds[-1].dagger_mse < 0.2 * result.rounds[0].dagger_mse
    # the critic learnt the returns' scale (rewards are in [0, 1], gamma 0.9: returns up to 10)
    assert result.rounds[-1].critic_mse < 0.5 * result.rounds[0].critic_mse
    assert float(policy.normalizer.count) == 1 + result.samples
