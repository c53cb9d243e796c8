"""Train one InterMimic teacher (PPO on a subset of clips), resumably, and evaluate it.

Optionally (``bc_warmstart``, off by default) the run starts with a behaviour-cloning warm start
from the PD-replay expert (``training.bc_warmstart``), so PPO starts on the reference pose.

Outputs in ``out_dir``::

    checkpoints/iter_XXXXXXXX.pt   training state every ``save_interval`` iterations (last K kept)
    teacher.pt                     the final policy (no optimizer state): what eval/export read
    tb/                            TensorBoard scalars
    learning_curve.png             reward, episode length, success, E_h/E_o, losses, samples/s
    eval.json                      the teacher's and the PD-replay baseline's metrics on its clips
    result.json                    written last: the teacher is done (the pipeline skips it)

Resume determinism. A checkpoint holds the network, normaliser, Adam state, iteration, the
python/numpy/torch RNG states and the PSI buffer. The warm start runs once, before iteration 0,
from the seeded global RNG (a resumed run finds it in its checkpoint's weights). The simulator
state is NOT saved: instead every checkpoint boundary is a deterministic full reset (every
world restarts, the episode sampler re-seeded from ``(seed, iteration)``), in the uninterrupted
run as in a resumed one.
So a run interrupted and resumed from iteration k reaches bit-equal parameters to one that
never stopped. The price is that episodes are cut (as time-outs, which PPO bootstraps) every
``save_interval`` iterations; with the default 500 iterations x 32 steps that is once per
16000 steps, against episodes of at most 300. (A run stopped off the interval, with ``until``,
also checkpoints; resuming from there is exact except for that one extra reset.)
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from intermimic_policy.errors import IntermimicError
from intermimic_policy.jsonio import dump_json
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import HOIEnvConfig
from training.bc_warmstart import BCResult, BCRoundStats, bc_warmstart
from training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from training.config import TeacherTrainConfig, digest, to_dict
from training.expert import make_expert
from training.logging_utils import TrainingLogger, save_learning_curves
from training.ppo import PPORunner, TeacherPolicy
from training.vec_env import HOIVecEnv

_CKPT_RE = re.compile(r"iter_(\d{8})\.pt$")
FINAL_NAME = "teacher.pt"
RESULT_NAME = "result.json"


class TeacherError(IntermimicError):
    """A teacher run that cannot start or resume (names the folder and the problem)."""


@dataclass
class TeacherResult:
    name: str
    checkpoint: str
    iterations: int
    samples: int
    wall_s: float
    samples_per_s: float  # training throughput of this call (rollout + update)
    env_samples_per_s: float  # the environment's own rate during the rollouts
    learning_curve: str
    clips: list[str]
    run_digest: str
    metrics: dict[str, Any] | None = None  # the teacher's evaluation summary
    baseline: dict[str, Any] | None = None  # PD replay on the same clips
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_config(cfg: TeacherTrainConfig) -> HOIEnvConfig:
    """The training environment: upstream teacher defaults + this run's size, backend, overrides."""
    base: dict[str, Any] = {"num_worlds": cfg.env.num_envs, "backend": cfg.env.backend,
                            "seed": cfg.seed, "device": cfg.device}
    try:
        return HOIEnvConfig.from_dict({**base, **cfg.env.overrides})
    except (TypeError, ValueError) as exc:
        raise TeacherError(f"env settings: {exc}") from exc


def boundary_seed(seed: int, iteration: int) -> int:
    """Episode-sampler seed of the full reset at a checkpoint boundary."""
    return (int(seed) * 1_000_003 + int(iteration) * 7_919 + 1) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (NaN/inf written as null), atomically."""
    dump_json(path, data, default=str)


def checkpoints_in(folder: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the training checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.search(p.name))]
    return sorted(found)


def resume_key(cfg: TeacherTrainConfig, clip_names: Sequence[str]) -> str:
    """What must not change for a resume to continue the same run (``iterations`` may).

    The warm start joins the key only when it is on, so runs without it keep their old keys.
    """
    key: dict[str, Any] = {"ppo": cfg.ppo, "env": cfg.env, "seed": cfg.seed, "save_interval": cfg.save_interval,
                           "device": cfg.device, "clips": list(clip_names)}
    if cfg.bc_warmstart.enabled:
        key["bc_warmstart"] = cfg.bc_warmstart
    return digest(key)


class TeacherTrainer:
    """Builds env + policy + PPO for one teacher; ``train`` runs (or resumes) to an iteration."""

    def __init__(self, name: str, motions: Sequence[HOIMotion], cfg: TeacherTrainConfig, out_dir: str | Path,
                 *, progress: bool = True) -> None:
        if not motions:
            raise TeacherError(f"teacher {name!r}: no clips")
        self.name, self.cfg, self.progress = name, cfg, progress
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._torch_threads = torch.get_num_threads()  # restored by close(): it is process-wide
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.motions = list(motions)
        self.clip_names = [m.name or f"clip{i}" for i, m in enumerate(self.motions)]
        self.key = resume_key(cfg, self.clip_names)
        seed_everything(cfg.seed)
        self.env = HOIEnv(env_config(cfg), self.motions)
        self.vec_env = HOIVecEnv(self.env)
        self.vec_env.set_expert(make_expert(cfg.bc_warmstart.expert, cfg.bc_warmstart.expert_gains,
                                            feedforward=cfg.bc_warmstart.expert_feedforward))
        policy = TeacherPolicy.build(self.env.num_obs, self.env.num_actions, cfg.ppo, self.env.obs_spec,
                                     self.env.config.upstream_action_map)
        self.runner = PPORunner(self.vec_env, policy, cfg.ppo, cfg.device)
        self.logger: TrainingLogger | None = None
        self._history: dict[str, Any] = {}
        self.bc_summary: dict[str, Any] | None = None  # the warm start's figures (kept in checkpoints)

    @property
    def policy(self) -> TeacherPolicy:
        return self.runner.policy

    # -- checkpoints ----------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        return {"teacher": self.name, "train": to_dict(self.cfg), "clips": self.clip_names,
                "env_config": self.env.config.to_dict(), "resume_key": self.key}

    def save(self, path: Path, *, with_optimizer: bool = True) -> Path:
        net = self.policy.net
        extra: dict[str, Any] = {"network": net.arch(), "resume_key": self.key,
                                 "action_prior": self.cfg.ppo.action_prior}
        if with_optimizer:
            extra["history"] = self.logger.state() if self.logger else {}
            extra["psi"] = self.env.psi.state_dict()
        if self.bc_summary is not None:
            extra["bc_warmstart"] = self.bc_summary
        # the contract names the humanoid; the scene (humanoid + objects) is kept for evaluation
        extra["scene_hash"] = self.env.model_hash
        return save_checkpoint(
            path,
            model_state=net.state_dict(),
            normalizer_state=self.policy.normalizer.state_dict(),
            optimizer_state=self.runner.alg.optimizer.state_dict() if with_optimizer else None,
            iteration=self.runner.iteration,
            rng_state=capture_rng_state() if with_optimizer else None,
            config=self._config_record(),
            obs_spec=self.env.obs_spec,
            kind="teacher",
            model_hash=self.env.humanoid_hash,
            extra=extra,
            contract=self.env.policy_contract("teacher"),
        )

    def _prune(self) -> None:
        for _, path in checkpoints_in(self.ckpt_dir)[: -self.cfg.keep_checkpoints]:
            path.unlink(missing_ok=True)

    def restore_latest(self) -> int:
        """Load the newest training checkpoint (if any); returns the iteration to continue from."""
        found = checkpoints_in(self.ckpt_dir)
        if not found:
            return 0
        it, path = found[-1]
        ckpt = load_checkpoint(path, expected_spec=self.env.obs_spec, expected_kind="teacher")
        if ckpt.extra.get("resume_key") != self.key:
            raise TeacherError(
                f"{path}: this checkpoint belongs to a run with other settings or clips (ppo, env, seed, "
                f"save_interval, device or clip list changed); use a new output folder or delete {self.ckpt_dir}")
        if ckpt.optimizer_state is None or ckpt.rng_state is None:
            raise CheckpointError(f"{path}: not a training checkpoint (no optimizer or RNG state)")
        self.policy.net.load_state_dict(ckpt.model_state)
        self.policy.normalizer.load_state_dict(ckpt.normalizer_state)
        self.runner.alg.optimizer.load_state_dict(ckpt.optimizer_state)
        self.runner.iteration = ckpt.iteration
        if "psi" in ckpt.extra:
            self.env.psi.load_state_dict(ckpt.extra["psi"])
        restore_rng_state(ckpt.rng_state)
        self._history = ckpt.extra.get("history") or {}
        self.bc_summary = ckpt.extra.get("bc_warmstart")
        return ckpt.iteration

    # -- training -------------------------------------------------------------------------------
    def warm_start(self) -> BCResult:
        """Behaviour-clone the PD-replay expert into the policy (DAgger rounds), before PPO.

        Runs only at the start of a run (a resumed run finds it in its checkpoint's weights); it
        uses the seeded global RNG, so an uninterrupted and a resumed run still end bit-equal.
        Rounds are logged at iterations ``1 - R .. 0``, just before PPO's first iteration.
        """
        cfg = self.cfg
        rounds = cfg.bc_warmstart.iterations
        self.vec_env.reset(seed=boundary_seed(cfg.seed, -1))
        logger = self.logger

        def log(stats: BCRoundStats) -> None:
            if logger is not None:
                logger.log(stats.round - rounds, stats.scalars())

        result = bc_warmstart(self.vec_env, self.policy, cfg.bc_warmstart, horizon=cfg.ppo.num_steps_per_env,
                              gamma=cfg.ppo.gamma, lam=cfg.ppo.lam, device=cfg.device, progress=self.progress,
                              on_round=log)
        last = result.rounds[-1]
        self.bc_summary = {"rounds": rounds, "samples": result.samples, "wall_s": result.wall_s,
                           "final_dagger_mse": last.dagger_mse, "final_actor_mse": last.actor_mse,
                           "final_critic_mse": last.critic_mse}
        return result

    def train(self, until: int | None = None, resume: bool = True) -> dict[str, float]:
        """Train up to iteration ``until`` (default ``cfg.iterations``); returns throughput figures."""
        cfg = self.cfg
        until = cfg.iterations if until is None else min(int(until), cfg.iterations)
        self._history = {}
        start = self.restore_latest() if resume else 0
        self.logger = TrainingLogger(self.out / "tb", start, self._history)
        samples = 0
        train_time = env_time = 0.0
        bar: tqdm | None = None
        try:
            if start == 0 and cfg.bc_warmstart.enabled and (until > 0 or cfg.iterations == 0):
                self.warm_start()
            bar = tqdm(total=until, initial=start, desc=f"teacher {self.name}", unit="it",
                       disable=not self.progress, dynamic_ncols=True)
            for it in range(start, until):
                if it == start or it % cfg.save_interval == 0:
                    self.runner.reset(seed=boundary_seed(cfg.seed, it))
                stats = self.runner.learn_iteration()
                n = self.runner.samples_per_iteration
                samples += n
                train_time += n / stats["perf/samples_per_s"]
                env_time += n / stats["perf/env_samples_per_s"]
                stats["perf/total_samples"] = float(self.runner.iteration * n)
                self.logger.log(self.runner.iteration, stats)
                bar.update(1)
                bar.set_postfix(reward=f"{stats['reward/mean']:.3f}",
                                ep_len=f"{self.logger.last('episode/length'):.0f}",
                                sps=f"{stats['perf/samples_per_s']:.0f}")
                done = self.runner.iteration
                if done % cfg.save_interval == 0 or done == until:
                    self.save(self.ckpt_dir / f"iter_{done:08d}.pt")
                    self._prune()
                    self.logger.flush()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        return {"start": float(start), "samples": float(samples), "train_s": train_time, "env_s": env_time,
                "samples_per_s": samples / train_time if train_time else math.nan,
                "env_samples_per_s": samples / env_time if env_time else math.nan}

    def finish(self) -> tuple[Path, Path]:
        """Write the final policy and the learning-curve PNG."""
        final = self.save(self.out / FINAL_NAME, with_optimizer=False)
        history = self.logger.state() if self.logger else {}
        png = save_learning_curves(history, self.out / "learning_curve.png", title=f"teacher {self.name}")
        return final, png

    def close(self) -> None:
        self.env.close()
        torch.set_num_threads(self._torch_threads)


def evaluate_teacher(checkpoint: str | Path, motions: Sequence[HOIMotion], cfg: TeacherTrainConfig,
                     progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(teacher summary, PD-replay summary) on ``motions``, from frame 0, mean actions.

    Both run the same evaluation in the same physics: the baseline gets the teacher's trained
    environment settings (rates, skeleton, object density, ...), so the comparison is fair.
    """
    from intermimic_policy.sim.evaluate import EvalSettings, PDReplayPolicy, evaluate
    from training.eval_policy import load_checkpoint_policy

    clips = list(motions)
    if cfg.eval.max_clips is not None:
        clips = clips[: cfg.eval.max_clips]
    settings = EvalSettings(backend=cfg.env.backend, device=cfg.device, seed=cfg.seed, progress=progress,
                            max_worlds=max(1, min(64, cfg.env.num_envs)))
    policy = load_checkpoint_policy(checkpoint, cfg.device)
    teacher = evaluate(clips, policy, settings)
    physics = {k: v for k, v in policy.config_overrides.items() if k != "obs_spec"}
    baseline = evaluate(clips, PDReplayPolicy(config_overrides=physics), settings)
    return teacher.to_dict(), baseline.to_dict()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("success_rate", "mean_duration_s", "E_h_cm", "E_o_cm", "clips_evaluated", "attempts")
    return {k: report.get(k) for k in keys}


def train_teacher(name: str, motions: Sequence[HOIMotion], cfg: TeacherTrainConfig, out_dir: str | Path, *,
                  clip_sources: Sequence[str] = (), resume: bool = True, progress: bool = True,
                  until: int | None = None) -> TeacherResult:
    """Train (or resume) one teacher to ``cfg.iterations``, then save, draw and evaluate it.

    With ``until`` < ``cfg.iterations`` the run stops there after a checkpoint (as if
    interrupted) and returns without the final outputs; a later call resumes it.
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    trainer = TeacherTrainer(name, motions, cfg, out, progress=progress)
    try:
        perf = trainer.train(until=until, resume=resume)
        stop = trainer.runner.iteration
        if stop >= cfg.iterations:
            final, png = trainer.finish()
        else:  # stopped early: point at the checkpoint to resume from
            found = checkpoints_in(trainer.ckpt_dir)
            final, png = (found[-1][1] if found else out / FINAL_NAME), out / "learning_curve.png"
    finally:
        trainer.close()
    result = TeacherResult(
        name=name, checkpoint=str(final), iterations=stop, samples=stop * cfg.samples_per_iteration,
        wall_s=time.perf_counter() - t0, samples_per_s=perf["samples_per_s"],
        env_samples_per_s=perf["env_samples_per_s"], learning_curve=str(png),
        clips=list(clip_sources) or trainer.clip_names, run_digest=trainer.key,
        extra={"resumed_from": int(perf["start"]), "trained_iterations": stop - int(perf["start"]),
               "bc_warmstart": trainer.bc_summary},
    )
    if stop < cfg.iterations:
        return result
    if cfg.eval.enabled:
        teacher_report, baseline_report = evaluate_teacher(final, motions, cfg, progress)
        write_json(out / "eval.json", {"teacher": teacher_report, "pd_replay": baseline_report})
        result.metrics, result.baseline = _summary(teacher_report), _summary(baseline_report)
    write_json(out / RESULT_NAME, result.to_dict())
    return result


def load_result(out_dir: str | Path, run_digest: str | None = None) -> TeacherResult | None:
    """The finished result of a teacher folder (None if unfinished or from another run)."""
    path = Path(out_dir) / RESULT_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        result = TeacherResult(**data)
    except (ValueError, TypeError) as exc:
        raise TeacherError(f"{path}: unreadable teacher result ({exc}); delete it to retrain") from exc
    if run_digest is not None and result.run_digest != run_digest:
        return None
    return result


@dataclass(frozen=True)
class TeacherJob:
    """One teacher as plain data, so it can be sent to a process or a Ray worker."""

    name: str
    config: TeacherTrainConfig
    clip_sources: tuple[str, ...]
    clip_frames: int | None
    out_dir: str
    progress: bool = True


def run_teacher_job(job: TeacherJob) -> dict[str, Any]:
    """Load the job's clips, then train/resume/evaluate its teacher; a finished one is not redone."""
    from training.subsets import load_clips

    clips = load_clips(job.clip_sources, job.clip_frames)
    motions = [c.motion for c in clips]
    names = [m.name or f"clip{i}" for i, m in enumerate(motions)]
    done = load_result(job.out_dir, resume_key(job.config, names))
    if done is not None and done.iterations >= job.config.iterations:
        return done.to_dict()
    return train_teacher(job.name, motions, job.config, job.out_dir, clip_sources=job.clip_sources,
                         progress=job.progress).to_dict()
