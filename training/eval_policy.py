"""Checkpoints as evaluation policies: ``intermimic eval --policy CHECKPOINT.pt CLIP...``.

Registers a loader in ``sim.policy_loaders`` when imported (``training.cli`` registers the same
loader lazily, so the CLI imports torch only for an evaluation). The loaded policy is the checkpoint's
normaliser + network acting with its mean (deterministic, clamped to [-1, 1], as upstream's
player), in an environment built with the checkpoint's observation spec and the physics
settings it was trained with, so the evaluation sees what training saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.policy_loaders import register_policy_loader
from training.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from training.cli import checkpoint_loader
from training.networks import NetworkError, build_network, default_arch
from training.normalizer import RunningNormalizer
from training.ppo.policy import TeacherPolicy
from training.reference_prior import PriorError, build_prior

# HOIEnvConfig fields a policy was trained with that change what it sees or what its actions do.
TRAINED_ENV_FIELDS = ("upstream_action_map", "physics_hz", "control_hz", "object_density",
                      "contact_threshold", "num_object_points", "skeleton", "robot")


@dataclass
class CheckpointPolicy:
    """A trained policy acting with its action mean."""

    name: str
    policy: TeacherPolicy
    config_overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    def reset(self, env: HOIEnv, seed: int) -> None:
        pass

    def act(self, env: HOIEnv, obs: Tensor) -> Tensor:
        with torch.inference_mode():
            mean = self.policy.action_mean(obs.to(self.device, torch.float32))
        return mean.clamp(-1.0, 1.0).to(env.device)


def policy_from_checkpoint(ckpt: Checkpoint, device: str = "cpu") -> TeacherPolicy:
    """Rebuild normaliser + network from a loaded checkpoint (any kind: teacher or student)."""
    try:
        net = build_network(ckpt.extra.get("network") or default_arch(ckpt.kind), ckpt.obs_spec)
        net.load_state_dict(ckpt.model_state)
        normalizer = RunningNormalizer(ckpt.obs_spec.dim)
        normalizer.load_state_dict(ckpt.normalizer_state)
        env_cfg = ckpt.config.get("env_config") or {}
        prior = build_prior(str(ckpt.extra.get("action_prior", "none")), ckpt.obs_spec,
                            bool(env_cfg.get("upstream_action_map", env_cfg.get("upstream_action_scale", False))))
    except (NetworkError, RuntimeError, KeyError, PriorError) as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the network it names: {exc}") from exc
    return TeacherPolicy(net, normalizer, prior).to(device).eval()


def load_checkpoint_policy(path: str | os.PathLike[str], device: str = "cpu") -> CheckpointPolicy:
    ckpt = load_checkpoint(path, map_location=device)
    env_cfg = ckpt.config.get("env_config") or {}
    overrides: dict[str, Any] = {k: env_cfg[k] for k in TRAINED_ENV_FIELDS if k in env_cfg}
    overrides["obs_spec"] = ckpt.obs_spec
    name = f"{ckpt.kind}:{Path(path).name}@{ckpt.iteration}"
    return CheckpointPolicy(name, policy_from_checkpoint(ckpt, device), overrides, device)


register_policy_loader("checkpoint", checkpoint_loader)
