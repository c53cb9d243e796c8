"""Typed training configuration and its YAML form.

Every knob of a teacher run lives in one dataclass tree so a run is fully described by one
file (and its digest names the run's outputs). YAML is read strictly: an unknown key or a value
of the wrong type is an error that names the file and the key, instead of being ignored the way
upstream ignores ``terminationHeight`` or ``grad_norm`` (spec 13.3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from intermimic_policy import config_io
from intermimic_policy.config_io import ConfigError
from training.student.config import DistillConfig, EvaluateConfig, StudentConfig

T = TypeVar("T")


@dataclass
class PPOConfig:
    """PPO hyper-parameters of the InterMimic teachers (spec 8.3, ``omomo.yaml``)."""

    num_steps_per_env: int = 32  # horizon_length
    num_learning_epochs: int = 6  # mini_epochs
    minibatch_size: int = 16384  # samples per gradient step (capped by the batch)
    clip_param: float = 0.2  # e_clip
    gamma: float = 0.99
    lam: float = 0.95  # tau
    learning_rate: float = 2e-5  # constant
    adam_eps: float = 1e-8
    value_loss_coef: float = 5.0  # critic_coef, unclipped MSE
    bounds_loss_coef: float = 10.0
    soft_bound: float = 1.0
    entropy_coef: float = 0.0
    max_grad_norm: float | None = None  # upstream: no clipping (truncate_grads False)
    normalize_advantage: bool = True  # over the whole batch
    hidden_dims: tuple[int, ...] = (1024, 1024, 512)
    init_log_std: float = -2.9  # fixed sigma = exp(-2.9) = 0.055
    # "none": absolute PD targets (upstream); "reference": the action is a residual added to the
    # reference pose's action, computed from the observation inside the policy graph
    # (training.reference_prior), so the deployment contract is unchanged
    action_prior: str = "none"

    def __post_init__(self) -> None:
        _positive(self, "num_steps_per_env", "num_learning_epochs", "minibatch_size", "learning_rate")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"ppo: gamma must be in (0, 1] and lam in [0, 1], got {self.gamma}, {self.lam}")
        if self.clip_param <= 0 or self.soft_bound <= 0:
            raise ConfigError("ppo: clip_param and soft_bound must be positive")
        if not self.hidden_dims or any(h <= 0 for h in self.hidden_dims):
            raise ConfigError(f"ppo: hidden_dims must be positive sizes, got {self.hidden_dims}")
        if self.action_prior not in ("none", "reference"):
            raise ConfigError(f"ppo: action_prior must be 'none' or 'reference', got {self.action_prior!r}")

    def num_mini_batches(self, num_envs: int) -> int:
        """Minibatches per epoch: ``batch // minibatch_size`` (at least one)."""
        return max(1, (num_envs * self.num_steps_per_env) // self.minibatch_size)


EXPERTS: tuple[str, ...] = ("pd-replay", "balance")


@dataclass
class BCWarmStartConfig:
    """Behaviour cloning of the PD-replay expert before PPO, DAgger-style (off when ``iterations`` is 0).

    Why: the teacher's actions are absolute PD targets, so a freshly initialised actor starts far
    from the reference pose and PPO needs millions of samples just to find it. Cloning the
    PD-replay expert (targets = the reference joints at t+1) first puts the actor on the
    reference in seconds; PPO then only learns the corrections. InterMimic's own student stage
    does the same with a teacher as the expert (spec 9.3). What the policy outputs and the
    deployment contract do not change.
    """

    iterations: int = 0  # DAgger rounds; each is one rollout of ppo.num_steps_per_env steps in every world
    epochs: int = 4  # gradient passes per round, counted in the round's size, drawn from ALL rounds' data
    expert_mix: float = 0.5  # P(execute the expert's action) in the last round; 1 in the first, linear between
    lr: float = 1e-3  # Adam learning rate of the fit (its own optimizer, dropped afterwards)
    minibatch_size: int = 512
    noise_std: float | None = None  # exploration noise on executed actions; None = the policy's fixed sigma
    fit_critic: bool = True  # also fit the critic to the rollouts' lambda-returns (PPO starts with a useful V)
    # The expert whose actions are cloned: "pd-replay" (targets = the reference joints at t+1) or
    # "balance" (PD replay plus centre-of-mass, pelvis and grip feedback: training.expert, which
    # completes the example clip where PD replay falls at 1.8 s). Its gains: BalanceGains fields.
    expert: str = "pd-replay"
    expert_gains: dict[str, float] = field(default_factory=dict)
    # the balance expert adds the gravity feed-forward of the upper body to its targets
    # (training.gravity_compensation): without it the arms sag 8-12 cm at the example's grasp
    expert_feedforward: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"bc_warmstart.iterations must be >= 0, got {self.iterations}")
        _positive(self, "epochs", "lr", "minibatch_size")
        if not 0.0 <= self.expert_mix <= 1.0:
            raise ConfigError(f"bc_warmstart.expert_mix must be in [0, 1], got {self.expert_mix}")
        if self.noise_std is not None and not self.noise_std >= 0.0:
            raise ConfigError(f"bc_warmstart.noise_std must be >= 0, got {self.noise_std}")
        if self.expert not in EXPERTS:
            raise ConfigError(f"bc_warmstart.expert must be one of {', '.join(EXPERTS)}, got {self.expert!r}")
        known = {"ankle_p", "ankle_d", "hip_p", "hip_d", "grip_p", "grip_d", "squeeze_p", "squeeze_d", "squeeze_max"}
        unknown = sorted(set(self.expert_gains) - known)
        if unknown:
            raise ConfigError(f"bc_warmstart.expert_gains: unknown gain(s) {unknown}; known: {sorted(known)}")

    @property
    def enabled(self) -> bool:
        return self.iterations > 0

    def expert_probability(self, round_index: int) -> float:
        """P(expert action) in round ``round_index`` (0-based): 1 in the first, ``expert_mix`` in the last."""
        if self.iterations <= 1:
            return 1.0
        frac = min(max(round_index / (self.iterations - 1), 0.0), 1.0)
        return 1.0 + (self.expert_mix - 1.0) * frac


@dataclass
class EnvSettings:
    """How the teacher's environment is built: batch size, backend, and HOIEnvConfig overrides."""

    num_envs: int = 4096
    backend: str = "mujoco"
    overrides: dict[str, Any] = field(default_factory=dict)  # HOIEnvConfig field -> value

    def __post_init__(self) -> None:
        _positive(self, "num_envs")


@dataclass
class EvalSettings:
    """Evaluation of a trained teacher: deterministic (mean) actions from the clip start."""

    enabled: bool = True
    max_clips: int | None = None  # evaluate at most this many clips of the subset (None = all)


@dataclass
class TeacherTrainConfig:
    """Everything one teacher run needs besides its clips."""

    iterations: int = 100_000  # PPO iterations (rl_games "epochs")
    seed: int = 0
    save_interval: int = 500  # iterations between checkpoints (each one is a full env reset)
    keep_checkpoints: int = 3
    device: str = "cpu"
    torch_threads: int | None = None  # None = leave torch's default
    ppo: PPOConfig = field(default_factory=PPOConfig)
    env: EnvSettings = field(default_factory=EnvSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    bc_warmstart: BCWarmStartConfig = field(default_factory=BCWarmStartConfig)

    def __post_init__(self) -> None:
        _positive(self, "save_interval", "keep_checkpoints")
        # 0 PPO iterations: the warm start alone (a cloned expert, no fine-tuning)
        if self.iterations < 0 or (self.iterations == 0 and not self.bc_warmstart.enabled):
            raise ConfigError(f"TeacherTrainConfig.iterations must be positive (or 0 with bc_warmstart), "
                              f"got {self.iterations!r}")

    @property
    def samples_per_iteration(self) -> int:
        return self.env.num_envs * self.ppo.num_steps_per_env

    @property
    def bc_samples(self) -> int:
        """Environment samples the warm start collects (0 when it is off)."""
        return self.bc_warmstart.iterations * self.samples_per_iteration


@dataclass
class TeacherSpec:
    """One teacher of the pipeline: a name and the subset of clips it learns."""

    name: str
    subject: str | None = None
    object: str | None = None
    paths: tuple[str, ...] = ()
    iterations: int | None = None  # overrides the pipeline's teacher.iterations
    seed: int | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ConfigError(f"teacher name {self.name!r}: use letters, digits, '_', '.', '-' only")


@dataclass
class JobsConfig:
    """How independent teacher jobs run: one after another, in local processes, or on Ray."""

    mode: str = "sequential"  # sequential | processes | ray
    workers: int = 1
    ray_address: str | None = None  # e.g. "auto" or "ray://host:10001"; None = local Ray
    cpus_per_job: float = 1.0  # Ray resources of one teacher task
    gpus_per_job: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("sequential", "processes", "ray"):
            raise ConfigError(f"jobs.mode must be sequential, processes or ray, got {self.mode!r}")
        _positive(self, "workers", "cpus_per_job")
        if self.gpus_per_job < 0:
            raise ConfigError(f"jobs.gpus_per_job must be >= 0, got {self.gpus_per_job}")


@dataclass
class PipelineConfig:
    """The whole pipeline: clips, stages, the teachers and how to run them."""

    clips: tuple[str, ...] = ()  # paths or globs ($VARS expanded); empty = the bundled example clip
    clip_frames: int | None = None  # keep only the first N frames of every clip (smoke runs)
    stages: tuple[str, ...] = ("teachers",)
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    teachers: tuple[TeacherSpec, ...] = (TeacherSpec(name="all"),)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)  # stage distill (training.distill)
    student: StudentConfig = field(default_factory=StudentConfig)  # stage student (training.student)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # stage evaluate

    def __post_init__(self) -> None:
        names = [t.name for t in self.teachers]
        if not names:
            raise ConfigError("teachers: at least one teacher is needed")
        if len(set(names)) != len(names):
            raise ConfigError(f"teachers: names must be unique, got {names}")
        if self.clip_frames is not None and self.clip_frames < 2:
            raise ConfigError(f"clip_frames must be at least 2, got {self.clip_frames}")

    def teacher_config(self, spec: TeacherSpec) -> TeacherTrainConfig:
        """The shared teacher settings with this teacher's own overrides applied."""
        cfg = dataclasses.replace(self.teacher)
        if spec.iterations is not None:
            cfg.iterations = spec.iterations
        if spec.seed is not None:
            cfg.seed = spec.seed
        cfg.__post_init__()
        return cfg


# -- generic dict <-> dataclass ----------------------------------------------------------------


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be positive, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types (``config_io``)."""
    return config_io.from_dict(cls, data, where)


def to_dict(obj: Any) -> Any:
    """A plain (YAML/JSON-safe) form of a config dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def digest(obj: Any) -> str:
    """A short stable hash of a config tree (names run outputs, detects changed configs)."""
    text = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Read a YAML file into ``cls``; errors name the file and the dotted key (``config_io``)."""
    return config_io.load(path, cls)


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    return load_yaml(path, PipelineConfig)


def expand_path(pattern: str) -> str:
    """Expand ``~`` and ``$VARS``; an unset variable is an error rather than a literal ``$X``."""
    expanded = os.path.expanduser(os.path.expandvars(pattern))
    left = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if left:
        raise ConfigError(f"clip path {pattern!r}: environment variable {left.group(1)} is not set")
    return expanded
