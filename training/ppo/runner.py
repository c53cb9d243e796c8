"""Rollout + update loop of one PPO learner, with episode bookkeeping and resumable state.

Why not rsl_rl's ``OnPolicyRunner``: it builds models from class-name dicts, saves with pickle
(``weights_only=False``), keeps no RNG state, logs through its own console/TensorBoard logger
and runs a fixed loop with no place for our checkpoint boundaries. This runner keeps the same
loop (act -> env.step -> process_env_step, compute_returns, update) and leaves checkpoints,
progress bars and logging to the caller (``training.teacher``), one iteration at a time.

The environment is an rsl_rl ``VecEnv`` that also has ``reset(seed) -> TensorDict`` (a full,
seeded reset of every world), which the caller uses at checkpoint boundaries.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Protocol

import torch
from rsl_rl.env import VecEnv
from rsl_rl.storage import RolloutStorage
from tensordict import TensorDict

from training.config import PPOConfig
from training.ppo.algorithm import OBS_KEY, InterMimicPPO
from training.ppo.policy import TeacherPolicy


class ResettableVecEnv(Protocol):
    num_envs: int
    num_actions: int

    def get_observations(self) -> TensorDict: ...

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]: ...

    def reset(self, seed: int | None = None) -> TensorDict: ...


class PPORunner:
    """Owns the algorithm, the current observation and per-world episode counters."""

    def __init__(self, env: VecEnv | ResettableVecEnv, policy: TeacherPolicy, cfg: PPOConfig,
                 device: str = "cpu") -> None:
        self.env = env
        self.cfg = cfg
        self.device = device
        self.policy = policy.to(device)
        obs = env.get_observations().to(device)
        if obs[OBS_KEY].shape[-1] != policy.obs_dim:
            raise ValueError(f"environment observation has {obs[OBS_KEY].shape[-1]} dims, policy expects "
                             f"{policy.obs_dim}")
        storage = RolloutStorage("rl", env.num_envs, cfg.num_steps_per_env, obs, [env.num_actions], device)
        self.alg = InterMimicPPO(policy, storage, cfg, env.num_envs, device)
        self.obs = obs
        self.iteration = 0
        self._reset_counters()

    @property
    def samples_per_iteration(self) -> int:
        return int(self.env.num_envs * self.cfg.num_steps_per_env)

    def _reset_counters(self) -> None:
        n = self.env.num_envs
        self._ep_return = torch.zeros(n, device=self.device)
        self._ep_len = torch.zeros(n, device=self.device)

    def reset(self, seed: int | None = None) -> None:
        """Full seeded reset of every world (the state at a checkpoint boundary)."""
        self.obs = self.env.reset(seed=seed).to(self.device)  # type: ignore[union-attr]
        self._reset_counters()

    def learn_iteration(self) -> dict[str, float]:
        """One PPO iteration: a rollout of ``num_steps_per_env`` steps, then the update."""
        t0 = time.perf_counter()
        env_time = 0.0
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        rewards_sum = 0.0
        self.policy.train()
        # no_grad, not inference_mode: environments keep state tensors they update in place
        # outside the rollout too (resets), which inference tensors would forbid.
        with torch.no_grad():
            for _ in range(self.cfg.num_steps_per_env):
                actions = self.alg.act(self.obs)
                t_env = time.perf_counter()
                obs, rewards, dones, extras = self.env.step(actions)
                env_time += time.perf_counter() - t_env
                obs, rewards, dones = obs.to(self.device), rewards.to(self.device), dones.to(self.device)
                self.alg.process_env_step(obs, rewards, dones, extras)
                self.obs = obs
                rewards_sum += float(rewards.mean())
                self._book_keep(rewards, dones, extras, sums, counts)
            self.alg.compute_returns(self.obs)
        t1 = time.perf_counter()
        losses = self.alg.update()
        t2 = time.perf_counter()
        self.iteration += 1

        n = self.samples_per_iteration
        stats = {f"loss/{k}": v for k, v in losses.items()}
        stats["reward/mean"] = rewards_sum / self.cfg.num_steps_per_env
        stats.update({k: sums[k] / counts[k] for k in sums if counts[k] > 0})
        stats["perf/samples_per_s"] = n / max(t2 - t0, 1e-9)
        stats["perf/env_samples_per_s"] = n / max(env_time, 1e-9)
        stats["perf/collect_s"] = t1 - t0
        stats["perf/update_s"] = t2 - t1
        return stats

    def _book_keep(self, rewards: torch.Tensor, dones: torch.Tensor, extras: dict[str, Any],
                   sums: dict[str, float], counts: dict[str, int]) -> None:
        self._ep_return += rewards
        self._ep_len += 1
        for key, value in (extras.get("log") or {}).items():
            sums[key] += float(value.float().mean()) if isinstance(value, torch.Tensor) else float(value)
            counts[key] += 1
        done = dones.bool()
        if bool(done.any()):
            k = int(done.sum())
            sums["episode/length"] += float(self._ep_len[done].sum())
            sums["episode/return"] += float(self._ep_return[done].sum())
            counts["episode/length"] += k
            counts["episode/return"] += k
            for key, value in (extras.get("episode") or {}).items():
                sums[f"episode/{key}"] += float(value.to(self.device)[done].float().sum())
                counts[f"episode/{key}"] += k
            self._ep_return[done] = 0.0
            self._ep_len[done] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, **self.alg.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alg.load_state_dict(state)
        self.iteration = int(state["iteration"])
