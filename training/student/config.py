"""Typed settings of the student stages: reference distillation, the DAgger -> PPO schedule,
student training and the side-by-side evaluation.

Upstream hard-codes the schedule (epochs 500/5000/5500/6000/7000, EV 0.6, streak 3, beta 4000,
floor 0.1; spec 9.3, 13.4). Here every number is a field, upstream's values are the defaults,
and smoke runs shrink them in YAML. This module imports nothing from ``training.config`` so
that ``training.config`` can embed these classes in ``PipelineConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from intermimic_policy.errors import IntermimicError

# what distillation does with a teacher rollout that terminates before the clip ends
EARLY_TERMINATION_POLICIES = ("keep_prefix", "drop")
STUDENT_NETWORKS = ("transformer", "mlp")


class StudentConfigError(IntermimicError, ValueError):
    """A student/distillation setting that cannot work (names the field)."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise StudentConfigError(msg)


@dataclass
class DistillConfig:
    """Reference distillation (spec 9.1): each teacher tracks its clips from frame 0, mean action."""

    early_termination: str = "keep_prefix"  # keep_prefix | drop (spec 9.1: upstream's data has none)
    min_frames: int = 16  # a kept prefix shorter than this is dropped as well
    write_pt: bool = True  # also write InterMimic's OMOMO_retarget .pt layout
    plots: bool = True
    max_worlds: int = 64  # worlds per batched rollout

    def __post_init__(self) -> None:
        _check(self.early_termination in EARLY_TERMINATION_POLICIES,
               f"distill.early_termination must be one of {EARLY_TERMINATION_POLICIES}, got {self.early_termination!r}")
        _check(self.min_frames >= 2, f"distill.min_frames must be >= 2, got {self.min_frames}")
        _check(self.max_worlds >= 1, f"distill.max_worlds must be >= 1, got {self.max_worlds}")


@dataclass
class ScheduleConfig:
    """The DAgger -> PPO schedule (spec 9.3), in PPO iterations ("epochs") and actor-update steps.

    * executed action: the teacher's sampled action with probability ``beta(it)`` =
      1 until ``beta_hold``, then linear to 0 over ``beta_decay`` iterations;
    * loss: ``expert_coef * L_E`` (sum over DOFs of (mu_student - mu_teacher)^2, batch mean);
      after ``critic_warmup_start`` plus a value term ramped in over ``critic_warmup_ramp``;
    * PPO: from ``ppo_min_iteration`` on, once the critic's explained variance (EMA ``ev_ema``,
      tracked from ``ev_track_from``) stayed >= ``ev_threshold`` for ``ev_streak`` minibatches:
      ``min(n/ppo_ramp_steps, 1) L_PPO + value_coef L_V + bounds_coef L_B +
      max(1 - n/ppo_ramp_steps, expert_floor) L_E`` (n = PPO actor steps so far; it persists).
      When the EV streak breaks, the loss falls back to the warm-up loss.
    """

    beta_hold: int = 500
    beta_decay: int = 5000
    critic_warmup_start: int = 5000
    critic_warmup_ramp: int = 1000
    ppo_min_iteration: int = 6000
    ev_track_from: int = 7000
    ev_threshold: float = 0.6
    ev_ema: float = 0.99  # ev_ma <- ev_ema * ev_ma + (1 - ev_ema) * EV
    ev_streak: int = 3
    ppo_ramp_steps: int = 4000
    expert_floor: float = 0.1
    expert_coef: float = 1.0
    value_coef: float = 5.0
    bounds_coef: float = 10.0
    # upstream stores the STUDENT's log-prob of its own sample even when the teacher's action was
    # executed (spec 9.3 quirk). "executed" stores the student's log-prob of the executed action.
    log_prob_of: str = "executed"  # executed | student_sample

    def __post_init__(self) -> None:
        for name in ("beta_hold", "beta_decay", "critic_warmup_start", "critic_warmup_ramp", "ppo_min_iteration",
                     "ev_track_from", "ev_streak", "ppo_ramp_steps"):
            _check(getattr(self, name) >= 0, f"schedule.{name} must be >= 0, got {getattr(self, name)}")
        _check(0.0 <= self.ev_ema < 1.0, f"schedule.ev_ema must be in [0, 1), got {self.ev_ema}")
        _check(0.0 <= self.expert_floor <= 1.0, f"schedule.expert_floor must be in [0, 1], got {self.expert_floor}")
        _check(self.log_prob_of in ("executed", "student_sample"),
               f"schedule.log_prob_of must be 'executed' or 'student_sample', got {self.log_prob_of!r}")


@dataclass
class StudentPPOConfig:
    """PPO numbers of the student (spec 8.3, ``omomo_all*.yaml``)."""

    num_steps_per_env: int = 16
    num_learning_epochs: int = 6
    minibatch_size: int = 8192
    clip_param: float = 0.2
    gamma: float = 0.99
    lam: float = 0.95
    learning_rate: float = 2e-5
    adam_eps: float = 1e-8
    soft_bound: float = 1.0
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_steps_per_env", "num_learning_epochs", "minibatch_size", "learning_rate"):
            _check(getattr(self, name) > 0, f"student.ppo.{name} must be positive, got {getattr(self, name)}")


@dataclass
class StudentNetConfig:
    """``transformer`` (spec 8.2: 3 layers, 4 heads, width 256, one token per reference frame) or an
    ``mlp`` over the same flat input."""

    type: str = "transformer"
    d_model: int = 256
    layers: int = 3
    heads: int = 4
    ff: int = 512
    critic_hidden: tuple[int, ...] = (256,)
    mlp_hidden: tuple[int, ...] = (1024, 1024, 512)
    init_log_std: float = -2.9

    def __post_init__(self) -> None:
        _check(self.type in STUDENT_NETWORKS, f"student.network.type must be one of {STUDENT_NETWORKS}, got {self.type!r}")


@dataclass
class StudentEnvSettings:
    num_envs: int = 4096
    backend: str = "mujoco"
    overrides: dict[str, Any] = field(default_factory=dict)  # HOIEnvConfig field -> value

    def __post_init__(self) -> None:
        _check(self.num_envs >= 1, f"student.env.num_envs must be >= 1, got {self.num_envs}")


@dataclass
class StudentConfig:
    """Everything the student stage needs besides refined clips and teacher checkpoints."""

    iterations: int = 100_000
    seed: int = 0
    save_interval: int = 500
    keep_checkpoints: int = 2
    device: str = "cpu"
    torch_threads: int | None = None
    nproc: int = 1  # > 1: the stage launches torchrun with this many processes (gloo on CPU, NCCL on GPU)
    network: StudentNetConfig = field(default_factory=StudentNetConfig)
    ppo: StudentPPOConfig = field(default_factory=StudentPPOConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    env: StudentEnvSettings = field(default_factory=StudentEnvSettings)

    def __post_init__(self) -> None:
        _check(self.iterations >= 1 and self.save_interval >= 1 and self.keep_checkpoints >= 1,
               "student.iterations, save_interval and keep_checkpoints must be >= 1")
        _check(self.nproc >= 1, f"student.nproc must be >= 1, got {self.nproc}")


@dataclass
class EvaluateConfig:
    """The evaluation stage: student, its teachers and PD replay on MoCap and refined references."""

    max_clips: int | None = None
    max_worlds: int = 64
