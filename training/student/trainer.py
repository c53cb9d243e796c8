"""Train the student: DAgger -> PPO (spec 9.3) against batched teachers, data-parallel, resumable.

Per iteration: a rollout of ``num_steps_per_env`` steps in every world (the executed action is the
teacher's sampled action with probability beta, else the student's), then mini-epochs of the
loss ``PPOGate.weights`` mixes (expert loss, value loss, PPO surrogate, bounds loss). Phase
changes are logged (TensorBoard ``schedule/*`` and the progress line) and the gate's state is in
every checkpoint.

Resume determinism, as the teachers: every checkpoint boundary is a full reset of every world with
seeded samplers (env, action noise, beta draws), and a checkpoint holds network, normaliser,
Adam, RNG and gate states, so a run resumed from iteration k ends bit-equal to one that never
stopped.

Data-parallel (``torchrun``): each rank simulates ``env.num_envs`` worlds (seed + rank); the update
averages gradients and merges normaliser statistics over ranks; advantage normalisation and the
explained variance use global moments, so 2 ranks of B samples equal 1 rank of 2B samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.observation.spec import ObservationSpec, student_spec
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.subject import subject_skeleton
from training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from training.config import digest, to_dict
from training.eval_policy import TRAINED_ENV_FIELDS, policy_from_checkpoint
from training.logging_utils import TrainingLogger, save_learning_curves
from training.normalizer import RunningNormalizer
from training.ppo.algorithm import bounds_loss
from training.ppo.policy import TeacherPolicy
from training.student import dist as D
from training.student.config import StudentConfig
from training.student.env import StudentEnv
from training.student.networks import build_student
from training.student.schedule import PHASES, PPOGate, beta, explained_variance
from training.student.teachers import TeacherBank, teacher_of_clips

FINAL_NAME = "student.pt"
RESULT_NAME = "result.json"


class StudentError(IntermimicError):
    """A student run that cannot start or resume."""


@dataclass
class Batch:
    """One rollout, flattened to [B, ...] (this rank's share)."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_prob: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor
    teacher_mean: torch.Tensor


def boundary_seed(seed: int, rank: int, iteration: int) -> int:
    return (int(seed) * 1_000_003 + int(rank) * 104_729 + int(iteration) * 7_919 + 3) % (2**63 - 1)


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
    """Returns [T, N] by GAE; the chain is cut at every done (time-outs are already bootstrapped)."""
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        nxt = last_value if t == steps - 1 else values[t + 1]
        notdone = 1.0 - dones[t]
        delta = rewards[t] + gamma * nxt * notdone - values[t]
        running = delta + gamma * lam * notdone * running
        adv[t] = running
    return adv + values


def update(policy: TeacherPolicy, optimizer: torch.optim.Optimizer, batch: Batch, cfg: StudentConfig,
           gate: PPOGate, iteration: int, info: D.DistInfo, generator: torch.Generator,
           on_phase: Any = None) -> dict[str, float]:
    """Mini-epochs of the scheduled loss over this rank's batch; gradients averaged over ranks.

    The global batch is split in ``max(1, B_global // minibatch_size)`` minibatches per epoch; each
    rank draws its share of every minibatch from its own data.
    """
    ppo, sched = cfg.ppo, cfg.schedule
    local_n = batch.obs.shape[0]
    global_n = int(D.all_sum(torch.tensor([float(local_n)]), info).item())
    num_mb = max(1, global_n // ppo.minibatch_size)
    # advantage normalisation over the global batch
    s = D.all_sum(torch.stack([batch.advantages.sum(), batch.advantages.square().sum()]).double(), info)
    mean = s[0] / global_n
    std = torch.sqrt(torch.clamp(s[1] / global_n - mean * mean, min=0.0) * global_n / max(global_n - 1, 1))
    adv = ((batch.advantages.double() - mean) / (std + 1e-8)).float()
    std_a = policy.action_std
    sums = {"expert": 0.0, "value": 0.0, "surrogate": 0.0, "bounds": 0.0, "explained_variance": 0.0}
    weights_sum = {"w_ppo": 0.0, "w_value": 0.0, "w_expert": 0.0}
    steps = 0
    params = policy.trainable_parameters()
    for _ in range(ppo.num_learning_epochs):
        perm = torch.randperm(local_n, generator=generator)
        for chunk in torch.tensor_split(perm, num_mb):
            w = gate.weights(sched, iteration)
            obs = batch.obs[chunk]
            mu = policy.action_mean(obs)
            values = policy.value(obs)
            ret = batch.returns[chunk]
            expert = (mu - batch.teacher_mean[chunk]).square().sum(-1).mean()
            value_loss = (ret - values).square().mean()
            log_prob = torch.distributions.Normal(mu, std_a.expand_as(mu)).log_prob(batch.actions[chunk]).sum(-1)
            # the log-ratio is capped so a teacher action far from the student (beta > 0) cannot
            # overflow exp(); beyond e^20 the clipped surrogate has no gradient from it anyway
            ratio = torch.exp(torch.clamp(log_prob - batch.log_prob[chunk], max=20.0))
            a = adv[chunk]
            surrogate = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - ppo.clip_param, 1 + ppo.clip_param)).mean()
            b_loss = bounds_loss(mu, ppo.soft_bound).mean()
            # only the terms the phase uses: 0 * (a huge surrogate) would still be NaN-prone
            terms = ((w.ppo, surrogate), (w.value, value_loss), (w.bounds, b_loss), (w.expert, expert))
            loss = sum((c * t for c, t in terms if c != 0.0), torch.zeros((), device=mu.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            D.average_gradients(params, info)
            if ppo.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
            optimizer.step()
            with torch.no_grad():  # explained variance of this (global) minibatch
                r = ret.double()
                v = values.detach().double()
                m = D.all_sum(torch.stack([torch.tensor(float(r.numel()), dtype=torch.float64), r.sum(),
                                           r.square().sum(), (r - v).sum(), (r - v).square().sum()]), info)
                cnt = max(float(m[0]), 1.0)
                var_r = float(m[2] / cnt - (m[1] / cnt) ** 2)
                var_res = float(m[4] / cnt - (m[3] / cnt) ** 2)
                ev = explained_variance(var_r, var_res)
            gate.observe(sched, iteration, ev)
            changed = gate.step(w)
            if changed is not None and on_phase is not None:
                on_phase(changed)
            sums["expert"] += expert.item()
            sums["value"] += value_loss.item()
            sums["surrogate"] += surrogate.item()
            sums["bounds"] += b_loss.item()
            sums["explained_variance"] += ev
            weights_sum["w_ppo"] += w.ppo
            weights_sum["w_value"] += w.value
            weights_sum["w_expert"] += w.expert
            steps += 1
    D.update_normalizer(policy.normalizer, batch.obs, info)
    out = {f"loss/{k}": v / steps for k, v in sums.items() if k != "explained_variance"}
    out["schedule/explained_variance"] = sums["explained_variance"] / steps
    out.update({f"schedule/{k}": v / steps for k, v in weights_sum.items()})
    return out


def trained_env_settings(checkpoints: Sequence[str | Path]) -> tuple[dict[str, Any], ObservationSpec]:
    """The env settings every teacher was trained with (they must agree) and their obs spec."""
    first: dict[str, Any] | None = None
    spec: ObservationSpec | None = None
    for path in checkpoints:
        ckpt = load_checkpoint(path, expected_kind="teacher")
        env = ckpt.config.get("env_config") or {}
        mine = {k: env[k] for k in TRAINED_ENV_FIELDS if k in env}
        if first is None:
            first, spec = mine, ckpt.obs_spec
        elif mine != first or (spec is not None and spec.differences(ckpt.obs_spec)):
            raise StudentError(f"teacher {path} was trained with other env settings or observation than "
                               f"{checkpoints[0]}: {mine} vs {first}; one student env needs one physics")
    assert first is not None and spec is not None
    return first, spec


class StudentTrainer:
    """Builds the student env, teachers and the student; ``train`` runs or resumes to an iteration."""

    def __init__(self, cfg: StudentConfig, refined: Sequence[HOIMotion], mocap: Sequence[HOIMotion],
                 teachers: Mapping[str, str], teacher_clips: Mapping[str, Sequence[str]], out_dir: str | Path,
                 *, info: D.DistInfo | None = None, progress: bool = True) -> None:
        self.cfg, self.info = cfg, info or D.DistInfo()
        self.progress = progress and self.info.is_main
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if self.info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._threads = torch.get_num_threads()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        names = list(teachers)
        clip_teacher = teacher_of_clips([m.name for m in refined], teacher_clips)
        self.teacher_names = names
        trained, tspec = trained_env_settings([teachers[n] for n in names])
        self.trained_env = trained
        skeleton = subject_skeleton(list(mocap)) if trained.get("skeleton") == "subject" else None
        base: dict[str, Any] = {"num_worlds": cfg.env.num_envs, "backend": cfg.env.backend,
                                "seed": cfg.seed + self.info.rank, "device": cfg.device, "obs_spec": student_spec(),
                                "state_init": "hybrid", "hybrid_init_prob": 0.5}
        env_cfg = HOIEnvConfig.from_dict({**base, **trained, **cfg.env.overrides})
        torch.manual_seed(cfg.seed)
        self.senv = StudentEnv(env_cfg, refined, mocap, clip_teacher, tspec, skeleton=skeleton)
        policies = [policy_from_checkpoint(load_checkpoint(teachers[n], expected_kind="teacher"), cfg.device)
                    for n in names]
        self.bank = TeacherBank(policies, names).to(cfg.device)
        self.teacher_hashes = {n: load_checkpoint(teachers[n]).model_hash for n in names}
        spec = self.senv.env.obs_spec
        net = build_student(cfg.network, spec)
        self.policy = TeacherPolicy(net, RunningNormalizer(spec.dim)).to(cfg.device)
        D.broadcast_module(self.policy, self.info)
        self.optimizer = torch.optim.Adam(self.policy.trainable_parameters(), lr=cfg.ppo.learning_rate,
                                          eps=cfg.ppo.adam_eps)
        self.gate = PPOGate()
        self.iteration = 0
        self.key = digest({"cfg": {k: v for k, v in to_dict(cfg).items() if k != "iterations"},
                           "clips": [m.name for m in refined], "teachers": self.teacher_hashes,
                           "world_size": self.info.world_size})
        self._gen = torch.Generator()
        self._update_gen = torch.Generator()
        self.obs = torch.zeros(0)
        self._history: dict[str, Any] = {}
        self.phase_log: list[dict[str, Any]] = []

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: Path, *, with_optimizer: bool = True) -> Path:
        env = self.senv.env
        extra: dict[str, Any] = {"network": self.policy.net.arch(), "resume_key": self.key,
                                 "gate": self.gate.state_dict(), "teachers": self.teacher_names,
                                 "phase_log": self.phase_log, "scene_hash": env.model_hash}
        if with_optimizer:
            extra["history"] = self.logger.state() if self.logger else {}
        return save_checkpoint(
            path, model_state=self.policy.net.state_dict(), normalizer_state=self.policy.normalizer.state_dict(),
            optimizer_state=self.optimizer.state_dict() if with_optimizer else None, iteration=self.iteration,
            rng_state=capture_rng_state() if with_optimizer else None,
            config={"student": to_dict(self.cfg), "env_config": env.config.to_dict(), "teachers": self.teacher_names,
                    "clips": list(env.motion_library.clip_names)},
            obs_spec=env.obs_spec, kind="student", model_hash=env.humanoid_hash, extra=extra)

    def restore_latest(self) -> int:
        found = sorted(self.ckpt_dir.glob("iter_*.pt")) if self.ckpt_dir.is_dir() else []
        if not found:
            return 0
        ckpt = load_checkpoint(found[-1], expected_spec=self.senv.env.obs_spec, expected_kind="student")
        if ckpt.extra.get("resume_key") != self.key or ckpt.optimizer_state is None or ckpt.rng_state is None:
            raise StudentError(f"{found[-1]}: belongs to a run with other settings, clips or teachers; use a new "
                               f"output folder or delete {self.ckpt_dir}")
        self.policy.net.load_state_dict(ckpt.model_state)
        self.policy.normalizer.load_state_dict(ckpt.normalizer_state)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.gate.load_state_dict(ckpt.extra["gate"])
        self.phase_log = list(ckpt.extra.get("phase_log") or [])
        self._history = ckpt.extra.get("history") or {}
        restore_rng_state(ckpt.rng_state)
        self.iteration = ckpt.iteration
        return ckpt.iteration

    # -- rollout ----------------------------------------------------------------------------------
    def _boundary(self, it: int) -> None:
        seed = boundary_seed(self.cfg.seed, self.info.rank, it)
        self.senv.env._gen.manual_seed(seed)
        self._gen.manual_seed(seed + 1)
        self._update_gen.manual_seed(seed + 2)
        self.obs = self.senv.env.reset()

    @torch.no_grad()
    def rollout(self) -> tuple[Batch, dict[str, float]]:
        cfg, env, sched = self.cfg, self.senv.env, self.cfg.schedule
        steps, n = cfg.ppo.num_steps_per_env, env.num_worlds
        b = beta(sched, self.iteration + 1)
        std = self.policy.action_std
        buf: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "act", "logp", "val", "rew", "done", "mu_t")}
        stats = {"reward": 0.0, "teacher_frac": 0.0, "E_h": 0.0, "E_o": 0.0, "episodes": 0.0, "successes": 0.0}
        for _ in range(steps):
            obs = self.obs
            mu_t = self.bank.means(self.senv.teacher_obs(), self.senv.world_teacher())
            a_t = self.bank.sample(mu_t, self._gen)
            mu_s = self.policy.action_mean(obs)
            value = self.policy.value(obs)
            a_s = mu_s + std * torch.randn(mu_s.shape, generator=self._gen)
            use_t = torch.rand(n, generator=self._gen) < b
            action = torch.where(use_t.unsqueeze(1), a_t, a_s)
            scored = action if sched.log_prob_of == "executed" else a_s
            logp = self.policy.net.log_prob(mu_s, scored)
            next_obs, reward, term, trunc, info = env.step(action)
            reward = reward.clone()
            if bool(trunc.any()):  # time-out: bootstrap with V of the state the episode ended in
                final = next_obs.clone()
                final[info["done_ids"]] = info["terminal_obs"]
                reward += cfg.ppo.gamma * self.policy.value(final) * trunc.float()
            for k, v in (("obs", obs), ("act", scored), ("logp", logp), ("val", value), ("rew", reward),
                         ("done", (term | trunc).float()), ("mu_t", mu_t)):
                buf[k].append(v)
            self.obs = next_obs
            stats["reward"] += float(reward.mean()) / steps
            stats["teacher_frac"] += float(use_t.float().mean()) / steps
            stats["E_h"] += float(info["E_h"].mean()) / steps
            stats["E_o"] += float(info["E_o"].mean()) / steps
            ended = term | trunc
            stats["episodes"] += float(ended.sum())
            stats["successes"] += float((trunc & (info["frame"] >= env.motion_library.num_frames[info["clip"]] - 1)).sum())
        last = self.policy.value(self.obs)
        st = {k: torch.stack(v) for k, v in buf.items()}
        returns = gae(st["rew"], st["val"], st["done"], last, cfg.ppo.gamma, cfg.ppo.lam)
        adv = returns - st["val"]
        batch = Batch(st["obs"].flatten(0, 1), st["act"].flatten(0, 1), st["logp"].flatten(0, 1),
                      returns.flatten(0, 1), adv.flatten(0, 1), st["mu_t"].flatten(0, 1))
        out = {"reward/mean": stats["reward"], "schedule/beta": b, "schedule/teacher_action_frac": stats["teacher_frac"],
               "metrics/E_h": stats["E_h"], "metrics/E_o": stats["E_o"]}
        if stats["episodes"]:
            out["episode/success"] = stats["successes"] / stats["episodes"]
        return batch, out

    # -- training ---------------------------------------------------------------------------------
    logger: TrainingLogger | None = None

    def _on_phase(self, phase: str) -> None:
        entry = {"iteration": self.iteration + 1, "phase": phase, "ppo_steps": self.gate.ppo_steps,
                 "ev_ma": self.gate.ev_ma}
        self.phase_log.append(entry)
        if self.info.is_main:
            tqdm.write(f"student: iteration {entry['iteration']}: phase -> {phase} "
                       f"(ev_ma {self.gate.ev_ma:.3f}, ppo steps {self.gate.ppo_steps})")

    def train(self, until: int | None = None, resume: bool = True) -> dict[str, float]:
        cfg = self.cfg
        until = cfg.iterations if until is None else min(int(until), cfg.iterations)
        start = self.restore_latest() if resume else 0
        self.logger = TrainingLogger(self.out / "tb" if self.info.is_main else None, start, self._history)
        bar = tqdm(total=until, initial=start, desc="student", unit="it", disable=not self.progress, dynamic_ncols=True)
        samples, t0 = 0, time.perf_counter()
        try:
            for it in range(start, until):
                if it == start or it % cfg.save_interval == 0:
                    self._boundary(it)
                batch, stats = self.rollout()
                losses = update(self.policy, self.optimizer, batch, cfg, self.gate, it + 1, self.info,
                                self._update_gen, self._on_phase)
                self.iteration = it + 1
                samples += batch.obs.shape[0] * self.info.world_size
                stats.update(losses)
                stats["schedule/phase"] = float(PHASES.index(self.gate.phase))
                stats["schedule/ev_ma"] = self.gate.ev_ma
                stats["schedule/ppo_steps"] = float(self.gate.ppo_steps)
                self.logger.log(self.iteration, stats)
                bar.update(1)
                bar.set_postfix(phase=self.gate.phase, beta=f"{stats['schedule/beta']:.2f}",
                                expert=f"{stats['loss/expert']:.3f}", ev=f"{self.gate.ev_ma:.2f}",
                                E_h=f"{100 * stats['metrics/E_h']:.1f}cm")
                if self.iteration % cfg.save_interval == 0 or self.iteration == until:
                    if self.info.is_main:
                        self.save(self.ckpt_dir / f"iter_{self.iteration:08d}.pt")
                        for old in sorted(self.ckpt_dir.glob("iter_*.pt"))[: -cfg.keep_checkpoints]:
                            old.unlink(missing_ok=True)
                        self.logger.flush()
                    D.barrier(self.info)
        finally:
            bar.close()
            self.logger.close()
        wall = time.perf_counter() - t0
        return {"start": float(start), "samples": float(samples), "wall_s": wall,
                "samples_per_s": samples / wall if wall > 0 else math.nan}

    def finish(self) -> tuple[Path, Path]:
        final = self.save(self.out / FINAL_NAME, with_optimizer=False)
        history = self.logger.state() if self.logger else {}
        png = save_learning_curves(history, self.out / "learning_curve.png", title="student")
        return final, png

    def close(self) -> None:
        self.senv.close()
        torch.set_num_threads(self._threads)
