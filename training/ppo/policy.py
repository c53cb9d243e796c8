"""The trained object: observation normaliser + actor-critic network, as one module.

PPO, checkpoints, evaluation and export all see this pair; the normaliser is applied inside,
so every caller hands raw observations (exactly what the exported policy will receive).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from training.config import PPOConfig
from training.networks import PolicyNetwork, TeacherActorCritic
from training.normalizer import RunningNormalizer


class TeacherPolicy(nn.Module):
    """``net(normalizer(obs))``; the network's std is fixed (a buffer), never trained."""

    def __init__(self, net: PolicyNetwork, normalizer: RunningNormalizer) -> None:
        super().__init__()
        if normalizer.dim != net.obs_dim:
            raise ValueError(f"normaliser dim {normalizer.dim} != network obs_dim {net.obs_dim}")
        self.net = net
        self.normalizer = normalizer

    @classmethod
    def build(cls, obs_dim: int, action_dim: int, cfg: PPOConfig) -> TeacherPolicy:
        net = TeacherActorCritic(obs_dim, action_dim, cfg.hidden_dims, cfg.init_log_std)
        return cls(net, RunningNormalizer(obs_dim))

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
        return self.net.actor_mean(self.normalizer(obs))

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
