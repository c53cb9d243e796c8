"""The trained object: observation normaliser + actor-critic network, as one module.

PPO, checkpoints, evaluation and export all see this pair; the normaliser is applied inside,
so every caller hands raw observations (exactly what the exported policy will receive).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from intermimic_policy.observation.spec import ObservationSpec
from training.config import PPOConfig
from training.networks import PolicyNetwork, TeacherActorCritic
from training.normalizer import RunningNormalizer
from training.reference_prior import build_prior


class TeacherPolicy(nn.Module):
    """``net(normalizer(obs))``; the network's std is fixed (a buffer), never trained."""

    def __init__(self, net: PolicyNetwork, normalizer: RunningNormalizer, prior: nn.Module | None = None) -> None:
        super().__init__()
        if normalizer.dim != net.obs_dim:
            raise ValueError(f"normaliser dim {normalizer.dim} != network obs_dim {net.obs_dim}")
        self.net = net
        self.normalizer = normalizer
        self.prior = prior  # training.reference_prior: actions relative to the reference pose

    @classmethod
    def build(cls, obs_dim: int, action_dim: int, cfg: PPOConfig, spec: ObservationSpec | None = None,
              upstream_action_scale: bool = False) -> TeacherPolicy:
        net = TeacherActorCritic(obs_dim, action_dim, cfg.hidden_dims, cfg.init_log_std)
        prior = None
        if cfg.action_prior != "none":
            if spec is None:
                raise ValueError(f"action prior {cfg.action_prior!r} needs the observation spec")
            prior = build_prior(cfg.action_prior, spec, upstream_action_scale)
        return cls(net, RunningNormalizer(obs_dim), prior)

    @property
    def obs_dim(self) -> int:
        return int(self.net.obs_dim)

    @property
    def action_dim(self) -> int:
        return int(self.net.action_dim)

    @property
    def action_std(self) -> torch.Tensor:
        return self.net.std

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.net.actor_mean(self.normalizer(obs))
        return mean if self.prior is None else mean + self.prior(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """Critic value [B]."""
        return self.net.value(self.normalizer(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_mean(obs)

    def actor_parameters(self) -> Iterator[nn.Parameter]:
        return self.net.actor_parameters()

    def critic_parameters(self) -> Iterator[nn.Parameter]:
        return self.net.critic_parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    @torch.no_grad()
    def update_normalizer(self, obs: torch.Tensor) -> None:
        self.normalizer.update(obs.reshape(-1, self.obs_dim))
