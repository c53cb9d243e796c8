"""``HOIEnv`` as an rsl_rl ``VecEnv``: the adapter between our environment and PPO.

What it maps:

* observations -> ``TensorDict({"policy": obs})`` (actor and critic see the same observation);
* ``terminated | truncated`` -> ``dones``; ``truncated`` -> ``extras["time_outs"]`` (bootstrapped);
* the pre-reset observation of worlds that ended (``info["terminal_obs"]``) -> a full
  ``extras["final_obs"]``, so time-outs bootstrap with ``V(s_{t+1})`` of the state the episode
  really ended in (upstream's ``next_value``), not of the fresh reset state;
* reward terms, E_h / E_o -> ``extras["log"]``; per-episode success and the termination reason
  -> ``extras["episode"]`` (read only where ``dones``).

``expert_actions()`` is the PD-replay expert the behaviour-cloning warm start imitates.

``reset(seed)`` re-seeds the environment's sampling generator and resets every world: the
teacher makes each checkpoint boundary such a reset, so a resumed run replays the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.metrics import EpisodeMetrics
from training.ppo.algorithm import OBS_KEY


class HOIVecEnv(VecEnv):
    def __init__(self, env: HOIEnv) -> None:
        self.env = env
        self.num_envs = env.num_worlds
        self.num_actions = env.num_actions
        self.device = env.device
        self.cfg = env.config
        lib = env.motion_library
        cap = env.config.episode_cap
        self.max_episode_length = int(cap) if cap is not None else int(lib.num_frames.max())
        self._num_frames = lib.num_frames.to(env.device)
        self._expert: Callable[[HOIEnv], torch.Tensor] | None = None

    @property
    def episode_length_buf(self) -> torch.Tensor:  # type: ignore[override]
        return self.env.steps

    @property
    def num_obs(self) -> int:
        return int(self.env.num_obs)

    def _td(self, obs: torch.Tensor) -> TensorDict:
        return TensorDict({OBS_KEY: obs}, batch_size=[obs.shape[0]], device=obs.device)

    def get_observations(self) -> TensorDict:
        return self._td(self.env.obs.clone())

    def seed(self, seed: int) -> None:
        """Re-seed the environment's episode sampling (clip, start frame, PSI slot)."""
        gen = getattr(self.env, "_gen", None)
        if not isinstance(gen, torch.Generator):
            raise TypeError("HOIEnv has no sampling generator to seed (expected HOIEnv._gen)")
        gen.manual_seed(int(seed))

    def reset(self, seed: int | None = None) -> TensorDict:
        """Full reset of every world (after re-seeding when ``seed`` is given).

        Also starts a fresh ``env.metrics``: training never reads these evaluation records, and
        over a long run (one per episode) they would grow without bound.
        """
        if seed is not None:
            self.seed(seed)
        lib = self.env.motion_library
        self.env.metrics = EpisodeMetrics(lib.num_frames, self.num_envs, lib.fps, lib.clip_names)
        return self._td(self.env.reset())

    def expert_actions(self) -> torch.Tensor:
        """The expert's actions now: BC's labels. PD replay (PD targets = the reference joints at
        t+1) unless :meth:`set_expert` gave another (e.g. ``training.expert``'s balance expert)."""
        if self._expert is not None:
            return self._expert(self.env)
        return self.env.pd_replay_actions()

    def set_expert(self, expert: Callable[[HOIEnv], torch.Tensor] | None) -> None:
        """Use ``expert(env) -> actions [N, 153]`` as the warm start's expert (None: PD replay)."""
        self._expert = expert

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        dones = terminated | truncated
        final = obs
        done_ids = info.get("done_ids")
        if done_ids is not None and done_ids.numel():
            final = obs.clone()
            final[done_ids] = info["terminal_obs"]
        log: dict[str, torch.Tensor] = {f"reward/{k}": v for k, v in info.get("reward_terms", {}).items()}
        log["metrics/E_h"] = info["E_h"]
        log["metrics/E_o"] = info["E_o"]
        success = truncated & (info["frame"] >= self._num_frames[info["clip"]] - 1)
        episode = {"success": success, "terminated": terminated}
        for reason, flags in info.get("reasons", {}).items():
            episode[f"end_{reason}"] = flags & dones
        extras = {"time_outs": truncated, "final_obs": self._td(final), "log": log, "episode": episode}
        return self._td(obs), reward, dones.float(), extras

    def close(self) -> None:
        self.env.close()
