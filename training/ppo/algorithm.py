"""InterMimic's PPO as an extension of rsl_rl's ``PPO``.

Taken from rsl_rl unchanged: the rollout bookkeeping (``act``), the per-step recording with
time-out bootstrapping (``process_env_step``), GAE with the chain cut at every done
(``compute_returns``), and ``RolloutStorage`` with its minibatch generator.

Written here, because rsl_rl cannot express it:

* ``update``: InterMimic's loss ``a_loss + 5 c_loss + 10 b_loss`` (spec 8.3) needs the bounds
  loss on the action mean, an unclipped value loss, optional (by default no) gradient clipping,
  a constant learning rate and no entropy term; rsl_rl's update has no hook for an extra loss.
* time-out bootstrapping from the true terminal observation: rsl_rl adds ``gamma V(s_t)`` at a
  time-out; InterMimic (rl_games) bootstraps with ``V(s_{t+1})`` of the state the episode ended
  in. When the environment reports that observation (``extras["final_obs"]``) we use it, else
  we fall back to rsl_rl's approximation.
* one shared network: the actor and critic "models" rsl_rl expects are two thin views of one
  ``TeacherPolicy`` (normaliser + ``TeacherActorCritic``), so checkpoints and export see one
  module.
* the observation normaliser is updated once per iteration with the rollout's observations,
  after the update (as rsl_rl does), so the log-probabilities of the rollout stay consistent
  during the update.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from rsl_rl.algorithms import PPO
from rsl_rl.storage import RolloutStorage
from tensordict import TensorDict
from torch import nn

from training.config import PPOConfig
from training.ppo.policy import TeacherPolicy

OBS_KEY = "policy"


def bounds_loss(mu: torch.Tensor, soft_bound: float = 1.0) -> torch.Tensor:
    """Per-sample ``sum_dims max(mu - b, 0)^2 + min(mu + b, 0)^2`` (rl_games/ASE ``_bound_loss``)."""
    high = torch.clamp_min(mu - soft_bound, 0.0).square()
    low = torch.clamp_max(mu + soft_bound, 0.0).square()
    return (high + low).sum(dim=-1)


class _ModelView:
    """The part of rsl_rl's ``MLPModel`` interface that ``PPO`` calls, over a shared policy."""

    is_recurrent = False

    def __init__(self, policy: TeacherPolicy) -> None:
        self.policy = policy

    def to(self, device: torch.device | str) -> _ModelView:
        self.policy.to(device)
        return self

    def train(self, mode: bool = True) -> _ModelView:
        self.policy.train(mode)
        return self

    def eval(self) -> _ModelView:
        return self.train(False)

    def get_hidden_state(self) -> None:
        return None

    def reset(self, dones: torch.Tensor | None = None, hidden_state: Any = None) -> None:
        pass

    def update_normalization(self, obs: TensorDict) -> None:
        pass  # done once, by InterMimicPPO.update


class _ActorView(_ModelView):
    def __init__(self, policy: TeacherPolicy) -> None:
        super().__init__(policy)
        self._dist: torch.distributions.Normal | None = None

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.policy.actor_parameters()

    def __call__(self, obs: TensorDict, masks: Any = None, hidden_state: Any = None,
                 stochastic_output: bool = False) -> torch.Tensor:
        mu = self.policy.action_mean(obs[OBS_KEY])
        if not stochastic_output:
            return mu
        self._dist = torch.distributions.Normal(mu, self.policy.action_std.expand_as(mu), validate_args=False)
        return self._dist.sample()

    def get_output_log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        assert self._dist is not None
        return self._dist.log_prob(actions).sum(dim=-1)

    @property
    def output_distribution_params(self) -> tuple[torch.Tensor, ...]:
        assert self._dist is not None
        return (self._dist.mean, self._dist.stddev)

    @property
    def output_entropy(self) -> torch.Tensor:
        assert self._dist is not None
        return self._dist.entropy().sum(dim=-1)

    @property
    def output_std(self) -> torch.Tensor:
        return self.policy.action_std


class _CriticView(_ModelView):
    def parameters(self) -> Iterator[nn.Parameter]:
        return self.policy.critic_parameters()

    def __call__(self, obs: TensorDict, masks: Any = None, hidden_state: Any = None) -> torch.Tensor:
        return self.policy.value(obs[OBS_KEY]).unsqueeze(-1)  # rsl_rl stores values as [N, 1]


class InterMimicPPO(PPO):
    """rsl_rl PPO with InterMimic's loss, constant learning rate and shared actor-critic."""

    def __init__(self, policy: TeacherPolicy, storage: RolloutStorage, cfg: PPOConfig, num_envs: int,
                 device: str = "cpu") -> None:
        self.policy = policy
        self.cfg = cfg
        super().__init__(
            _ActorView(policy),  # type: ignore[arg-type]
            _CriticView(policy),  # type: ignore[arg-type]
            storage,
            num_learning_epochs=cfg.num_learning_epochs,
            num_mini_batches=cfg.num_mini_batches(num_envs),
            clip_param=cfg.clip_param,
            gamma=cfg.gamma,
            lam=cfg.lam,
            value_loss_coef=cfg.value_loss_coef,
            entropy_coef=cfg.entropy_coef,
            learning_rate=cfg.learning_rate,
            max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf,
            use_clipped_value_loss=False,
            schedule="fixed",
            desired_kl=None,  # type: ignore[arg-type]
            normalize_advantage_per_mini_batch=False,
            device=device,
        )
        # rsl_rl's optimizer has the default eps; InterMimic's Adam: eps 1e-8, weight decay 0.
        self.optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
        self._final_obs_values: torch.Tensor | None = None

    # -- rollout --------------------------------------------------------------------------------
    def process_env_step(self, obs: TensorDict, rewards: torch.Tensor, dones: torch.Tensor,
                         extras: dict[str, Any]) -> None:
        """Record a step; at a time-out bootstrap with ``V(final_obs)`` when the env gives it."""
        final_obs = extras.get("final_obs")
        time_outs = extras.get("time_outs")
        if final_obs is not None and time_outs is not None:
            extras = {k: v for k, v in extras.items() if k != "time_outs"}
            t = time_outs.to(self.device).float()
            if bool(t.any()):
                final = final_obs[OBS_KEY] if isinstance(final_obs, TensorDict) else final_obs
                rewards = rewards + self.gamma * self.policy.value(final.to(self.device)) * t
        super().process_env_step(obs, rewards, dones, extras)

    def compute_returns(self, obs: TensorDict) -> None:
        super().compute_returns(obs)
        if not self.cfg.normalize_advantage:
            self.storage.advantages = self.storage.returns - self.storage.values

    # -- learning -------------------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        """Mini-epochs of ``a_loss + c_v * c_loss + c_b * b_loss - c_e * entropy`` (spec 8.3)."""
        cfg = self.cfg
        sums = {"surrogate": 0.0, "value": 0.0, "bounds": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        n = 0
        std = self.policy.action_std
        for batch in self.storage.mini_batch_generator(self.num_mini_batches, self.num_learning_epochs):
            obs = batch.observations[OBS_KEY]  # type: ignore[index]
            mu = self.policy.action_mean(obs)
            dist = torch.distributions.Normal(mu, std.expand_as(mu), validate_args=False)
            log_prob = dist.log_prob(batch.actions).sum(dim=-1)  # type: ignore[arg-type]
            old_log_prob = batch.old_actions_log_prob.squeeze(-1)  # type: ignore[union-attr]
            advantages = batch.advantages.squeeze(-1)  # type: ignore[union-attr]
            ratio = torch.exp(log_prob - old_log_prob)
            surrogate = torch.max(-advantages * ratio,
                                  -advantages * torch.clamp(ratio, 1.0 - cfg.clip_param, 1.0 + cfg.clip_param)).mean()
            values = self.policy.value(obs)
            value_loss = (batch.returns.squeeze(-1) - values).square().mean()  # type: ignore[union-attr]
            b_loss = bounds_loss(mu, cfg.soft_bound).mean()
            entropy = dist.entropy().sum(dim=-1).mean()
            loss = surrogate + cfg.value_loss_coef * value_loss + cfg.bounds_loss_coef * b_loss
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * entropy

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(list(self.policy.trainable_parameters()), cfg.max_grad_norm)
            self.optimizer.step()

            with torch.no_grad():
                sums["surrogate"] += surrogate.item()
                sums["value"] += value_loss.item()
                sums["bounds"] += b_loss.item()
                sums["entropy"] += entropy.item()
                sums["clip_fraction"] += ((ratio - 1.0).abs() > cfg.clip_param).float().mean().item()
                sums["kl"] += (old_log_prob - log_prob).mean().item()
            n += 1

        # Normaliser: once per iteration, with this rollout's observations.
        self.policy.update_normalizer(self.storage.observations[OBS_KEY].flatten(0, 1))
        self.storage.clear()
        return {k: v / max(n, 1) for k, v in sums.items()}

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
