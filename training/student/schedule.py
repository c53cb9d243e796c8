"""The DAgger -> PPO schedule as pure functions of (iteration, gate state) (spec 9.3).

``beta`` says how often the teacher's action is executed; ``LossWeights`` says how the student
loss is mixed; ``PPOGate`` tracks the critic's explained variance per minibatch and decides when
PPO is on. The gate's state is plain data, saved in every checkpoint, so a resumed run continues
the same phase with the same counters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.student.config import ScheduleConfig

PHASES = ("dagger", "critic_warmup", "ppo")


def beta(cfg: ScheduleConfig, iteration: int) -> float:
    """P(execute the teacher's action) at ``iteration``: 1, then linear to 0 (upstream: 500 + 5000)."""
    if iteration <= cfg.beta_hold:
        return 1.0
    if cfg.beta_decay == 0:
        return 0.0
    return min(max(1.0 - (iteration - cfg.beta_hold) / cfg.beta_decay, 0.0), 1.0)


@dataclass(frozen=True)
class LossWeights:
    ppo: float  # clipped surrogate
    value: float
    bounds: float
    expert: float
    phase: str


def explained_variance(returns_var: float, residual_var: float) -> float:
    """``1 - Var(R - V) / Var(R)``; 0 for a constant return (nothing to explain)."""
    if returns_var <= 0.0:
        return 0.0
    return 1.0 - residual_var / returns_var


@dataclass
class PPOGate:
    """Per-minibatch EV tracking and the PPO switch; ``ppo_steps`` (n) persists across fallbacks."""

    ev_ma: float = 0.0
    streak: int = 0
    ppo_steps: int = 0
    phase: str = "dagger"

    def observe(self, cfg: ScheduleConfig, iteration: int, ev: float) -> None:
        """Feed one minibatch's explained variance (tracked only from ``ev_track_from``)."""
        if iteration <= cfg.ev_track_from:
            return
        self.ev_ma = cfg.ev_ema * self.ev_ma + (1.0 - cfg.ev_ema) * ev
        self.streak = self.streak + 1 if self.ev_ma >= cfg.ev_threshold else 0

    def ppo_on(self, cfg: ScheduleConfig, iteration: int) -> bool:
        return iteration > cfg.ppo_min_iteration and self.streak >= cfg.ev_streak

    def weights(self, cfg: ScheduleConfig, iteration: int) -> LossWeights:
        """The loss mix for the next minibatch at ``iteration`` (does not advance ``ppo_steps``)."""
        if self.ppo_on(cfg, iteration):
            ramp = max(cfg.ppo_ramp_steps, 1)
            w = min(self.ppo_steps / ramp, 1.0)
            expert = max(1.0 - self.ppo_steps / ramp, cfg.expert_floor) * cfg.expert_coef
            return LossWeights(w, cfg.value_coef, cfg.bounds_coef, expert, "ppo")
        if iteration > cfg.critic_warmup_start:
            ramp = max(cfg.critic_warmup_ramp, 1)
            v = min((iteration - cfg.critic_warmup_start) / ramp, 1.0) * cfg.value_coef
            return LossWeights(0.0, v, 0.0, cfg.expert_coef, "critic_warmup")
        return LossWeights(0.0, 0.0, 0.0, cfg.expert_coef, "dagger")

    def step(self, weights: LossWeights) -> str | None:
        """Record that a minibatch used ``weights``; returns the new phase name on a phase change."""
        if weights.phase == "ppo":
            self.ppo_steps += 1
        if weights.phase != self.phase:
            self.phase = weights.phase
            return weights.phase
        return None

    def state_dict(self) -> dict[str, object]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.ev_ma = float(state["ev_ma"])  # type: ignore[arg-type]
        self.streak = int(state["streak"])  # type: ignore[call-overload]
        self.ppo_steps = int(state["ppo_steps"])  # type: ignore[call-overload]
        self.phase = str(state["phase"])
