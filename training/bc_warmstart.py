"""Behaviour-cloning warm start: DAgger on an expert's actions, before PPO.

Why: the teacher acts with absolute PD targets (upstream: ``target = offset + scale * a``), so a
randomly initialised actor commands a pose far from the reference and PPO spends millions of
samples just finding the reference pose. The environment has an expert for free: PD replay,
whose action puts every PD target on the reference joints at t+1. Cloning it takes seconds and
leaves PPO only the corrections (balance, contact, lag) that PD replay gets wrong. InterMimic
distils its student the same way, with a teacher as the expert (spec 9.3).

One round (``BCWarmStartConfig``): roll the environment for ``horizon`` steps; in each world and
step the EXPERT's action is executed with probability ``beta`` (1 in the first round, falling
linearly to ``expert_mix`` in the last), else the student's mean, plus Gaussian exploration
noise; every visited observation is labelled with the expert's action there (DAgger, Ross et al.
2011: the student learns to act in the states its own mistakes lead to). Then the observation
normaliser takes the round's observations, and the actor mean is fitted by MSE on minibatches
drawn from the data of ALL rounds so far (and the critic on lambda-returns recomputed with the
current critic). The fit has its own Adam, dropped afterwards: PPO starts with a fresh one.

Pure bookkeeping lives in small functions (:func:`lambda_returns`, :func:`expert_mask`) so it can
be tested on its own; :func:`bc_warmstart` drives an rsl_rl-style vector env that also offers
``expert_actions()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tensordict import TensorDict
from tqdm import tqdm

from training.config import BCWarmStartConfig
from training.ppo.algorithm import OBS_KEY
from training.ppo.policy import TeacherPolicy

_VALUE_CHUNK = 4096  # observations per critic forward when recomputing targets


class ExpertVecEnv(Protocol):
    """An rsl_rl ``VecEnv`` (step returns ``extras`` with ``time_outs``/``final_obs``) with an expert."""

    num_envs: int
    num_actions: int

    def get_observations(self) -> TensorDict: ...

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]: ...

    def expert_actions(self) -> torch.Tensor: ...


def expert_mask(num_envs: int, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which worlds execute the expert's action this step: each with probability ``beta``."""
    if beta >= 1.0:
        return torch.ones(num_envs, dtype=torch.bool)
    if beta <= 0.0:
        return torch.zeros(num_envs, dtype=torch.bool)
    return torch.rand(num_envs, generator=generator) < beta


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
                   gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) returns [T, N] of a rollout (GAE + values), the chain cut at every done.

    ``rewards`` must already include ``gamma * V(final_obs)`` at time-outs (as PPO records them);
    ``values`` [T, N] are V(s_t), ``last_values`` [N] V of the observation after the last step.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(last_values)
    out = torch.empty_like(rewards)
    for t in reversed(range(steps)):
        next_values = last_values if t == steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + not_done * gamma * next_values - values[t]
        adv = delta + not_done * gamma * lam * adv
        out[t] = adv + values[t]
    return out


@dataclass
class _Round:
    """One round's rollout: what the actor and critic fits need."""

    obs: torch.Tensor  # [T, N, D]
    expert: torch.Tensor  # [T, N, A]
    rewards: torch.Tensor  # [T, N] (without the time-out bootstrap)
    dones: torch.Tensor  # [T, N]
    last_obs: torch.Tensor  # [N, D]
    time_outs: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (t, ids, final obs)
    returns: torch.Tensor | None = None  # [T, N], recomputed with the current critic before each fit


@dataclass
class BCRoundStats:
    round: int
    beta: float
    dagger_mse: float  # student vs expert on this round's new states, BEFORE fitting them
    actor_mse: float  # mean fit loss of the round
    critic_mse: float  # mean critic loss of the round (nan when the critic is not fitted)
    reward_mean: float
    episode_length: float  # mean length of the episodes that ended in the round (nan if none)
    expert_fraction: float  # share of steps that executed the expert's action

    def scalars(self) -> dict[str, float]:
        return {"bc/beta": self.beta, "bc/dagger_mse": self.dagger_mse, "bc/actor_mse": self.actor_mse,
                "bc/critic_mse": self.critic_mse, "bc/reward_mean": self.reward_mean,
                "bc/episode_length": self.episode_length, "bc/expert_fraction": self.expert_fraction}


@dataclass
class BCResult:
    rounds: list[BCRoundStats]
    samples: int  # environment steps x worlds collected
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "wall_s": self.wall_s,
                "rounds": [dict(r.__dict__) for r in self.rounds]}


def _rollout(env: ExpertVecEnv, policy: TeacherPolicy, horizon: int, beta: float, noise_std: float,
             device: str, ep_len: torch.Tensor) -> tuple[_Round, float, list[float]]:
    obs = env.get_observations()[OBS_KEY].to(device)
    n = obs.shape[0]
    obs_buf, exp_buf, rew_buf, done_buf = [], [], [], []
    time_outs: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    used_expert = 0
    lengths: list[float] = []
    for t in range(horizon):
        expert = env.expert_actions().to(device, torch.float32)
        student = policy.action_mean(obs)
        use = expert_mask(n, beta).to(device)
        used_expert += int(use.sum())
        act = torch.where(use[:, None], expert, student)
        if noise_std > 0.0:
            act = act + noise_std * torch.randn_like(act)
        nxt, rewards, dones, extras = env.step(act.clamp(-1.0, 1.0))
        obs_buf.append(obs)
        exp_buf.append(expert)
        rew_buf.append(rewards.to(device).float())
        done_buf.append(dones.to(device).float())
        tos = extras.get("time_outs")
        final = extras.get("final_obs")
        if tos is not None and final is not None and bool(tos.any()):
            ids = torch.nonzero(tos.to(device)).flatten()
            final_obs = final[OBS_KEY] if isinstance(final, TensorDict) else final
            time_outs.append((t, ids, final_obs.to(device)[ids].clone()))
        ep_len += 1
        ended = dones.to(device).bool()
        if bool(ended.any()):
            lengths.extend(ep_len[ended].tolist())
            ep_len[ended] = 0
        obs = nxt[OBS_KEY].to(device)
    rnd = _Round(torch.stack(obs_buf), torch.stack(exp_buf), torch.stack(rew_buf), torch.stack(done_buf),
                 obs.clone(), time_outs)
    return rnd, used_expert / float(horizon * n), lengths


def _values(policy: TeacherPolicy, obs: torch.Tensor) -> torch.Tensor:
    flat = obs.reshape(-1, obs.shape[-1])
    out = [policy.value(flat[i:i + _VALUE_CHUNK]) for i in range(0, flat.shape[0], _VALUE_CHUNK)]
    return torch.cat(out).reshape(obs.shape[:-1])


@torch.no_grad()
def _recompute_returns(policy: TeacherPolicy, rounds: list[_Round], gamma: float, lam: float) -> None:
    for rnd in rounds:
        rewards = rnd.rewards.clone()
        for t, ids, final in rnd.time_outs:
            rewards[t, ids] += gamma * policy.value(final)
        rnd.returns = lambda_returns(rewards, _values(policy, rnd.obs), rnd.dones, policy.value(rnd.last_obs),
                                     gamma, lam)


def _fit(policy: TeacherPolicy, optimizer: torch.optim.Optimizer, rounds: list[_Round], steps: int,
         batch: int, fit_critic: bool) -> tuple[float, float]:
    """``steps`` Adam steps on minibatches drawn uniformly from every round; (actor, critic) mean MSE."""
    sizes = torch.tensor([r.obs.shape[0] * r.obs.shape[1] for r in rounds])
    ends = torch.cumsum(sizes, 0)
    total = int(ends[-1])
    batch = min(batch, total)
    sums = [0.0, 0.0]
    for _ in range(steps):
        idx = torch.randint(total, (batch,))
        which = torch.bucketize(idx, ends, right=True)  # round of each drawn sample
        local = idx - (ends[which] - sizes[which])
        obs = torch.empty(batch, rounds[0].obs.shape[-1], device=rounds[0].obs.device)
        expert = torch.empty(batch, rounds[0].expert.shape[-1], device=obs.device)
        target = torch.empty(batch, device=obs.device)
        for k in torch.unique(which).tolist():  # gather per round: no concatenated copy of the data set
            sel = torch.nonzero(which == k).flatten()
            rnd, loc = rounds[k], local[sel].to(obs.device)
            obs[sel] = rnd.obs.flatten(0, 1)[loc]
            expert[sel] = rnd.expert.flatten(0, 1)[loc]
            if fit_critic:
                target[sel] = rnd.returns.flatten()[loc]  # type: ignore[union-attr]
        x = policy.normalizer(obs)
        mean = policy.net.actor_mean(x)
        if policy.prior is not None:  # actions relative to the reference pose: the net fits the residual
            mean = mean + policy.prior(obs)
        actor = (mean - expert).square().mean()
        loss = actor
        if fit_critic:
            critic = (policy.net.value(x) - target).square().mean()
            loss = loss + critic
            sums[1] += float(critic.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums[0] += float(actor.detach())
    n = max(steps, 1)
    return sums[0] / n, (sums[1] / n if fit_critic else math.nan)


def bc_warmstart(env: ExpertVecEnv, policy: TeacherPolicy, cfg: BCWarmStartConfig, *, horizon: int,
                 gamma: float = 0.99, lam: float = 0.95, device: str = "cpu", progress: bool = True,
                 on_round: Callable[[BCRoundStats], None] | None = None) -> BCResult:
    """Run ``cfg.iterations`` DAgger rounds from the env's current state; trains ``policy`` in place.

    Randomness (which worlds follow the expert, exploration noise, minibatches) comes from torch's
    global generator, so a seeded run repeats exactly.
    """
    t0 = time.perf_counter()
    noise = float(policy.action_std.mean()) if cfg.noise_std is None else float(cfg.noise_std)
    optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=cfg.lr)
    rounds: list[_Round] = []
    stats: list[BCRoundStats] = []
    ep_len = torch.zeros(env.num_envs, device=device)
    bar = tqdm(total=cfg.iterations, desc="bc warm start", unit="round", disable=not progress, dynamic_ncols=True)
    was_training = policy.training
    try:
        for r in range(cfg.iterations):
            beta = cfg.expert_probability(r)
            policy.eval()
            with torch.no_grad():
                rnd, expert_fraction, lengths = _rollout(env, policy, horizon, beta, noise, device, ep_len)
                flat = rnd.obs.flatten(0, 1)
                dagger = float((policy.action_mean(flat) - rnd.expert.flatten(0, 1)).square().mean())
                policy.update_normalizer(flat)
            rounds.append(rnd)
            if cfg.fit_critic:
                _recompute_returns(policy, rounds, gamma, lam)
            policy.train()
            steps = max(1, math.ceil(cfg.epochs * flat.shape[0] / cfg.minibatch_size))
            actor_mse, critic_mse = _fit(policy, optimizer, rounds, steps, cfg.minibatch_size, cfg.fit_critic)
            s = BCRoundStats(r + 1, beta, dagger, actor_mse, critic_mse, float(rnd.rewards.mean()),
                             sum(lengths) / len(lengths) if lengths else math.nan, expert_fraction)
            stats.append(s)
            if on_round is not None:
                on_round(s)
            bar.update(1)
            bar.set_postfix(dagger_mse=f"{dagger:.4f}", fit_mse=f"{actor_mse:.4f}", beta=f"{beta:.2f}")
    finally:
        bar.close()
        policy.train(was_training)
    samples = cfg.iterations * horizon * env.num_envs
    return BCResult(stats, samples, time.perf_counter() - t0)
