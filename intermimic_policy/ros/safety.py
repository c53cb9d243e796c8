"""Pure safety functions of the policy node: what may be published, and why not.

Why pure functions: each rule is unit-tested on its own, and the node only chains them, so the
safety behaviour can be read in one place. Every clamp returns a report naming the joints it
changed, because a clamp that silently rewrites a command hides the failure that caused it
(the pattern of LeRobot's clipped-command return and ros2_control's limiters).

Arrays are per-DOF float64 vectors in the policy contract's joint order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Staleness:
    """Inputs that never arrived (``missing``) and inputs older than their timeout (``stale``)."""

    missing: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append("no " + ", ".join(self.missing) + " yet")
        if self.stale:
            parts.append("stale " + ", ".join(self.stale))
        return "; ".join(parts) or "inputs fresh"


def check_staleness(last_received: Mapping[str, float | None], now: float,
                    timeouts: Mapping[str, float]) -> Staleness:
    """Which inputs are missing or stale at time ``now`` (same clock as ``last_received``).

    An input with timeout 0 (or none given) is not required and never reported.
    """
    missing, stale = [], []
    for name, timeout in timeouts.items():
        if timeout <= 0:
            continue
        t = last_received.get(name)
        if t is None:
            missing.append(name)
        elif now - t > timeout:
            stale.append(name)
    return Staleness(tuple(missing), tuple(stale))


@dataclass(frozen=True)
class HoldCommand:
    """The command that holds a pose with extra damping: zero target velocity, kd raised."""

    position: np.ndarray
    velocity: np.ndarray
    kp: np.ndarray
    kd: np.ndarray


def hold_command(position: np.ndarray, kp: np.ndarray, kd: np.ndarray, kd_scale: float) -> HoldCommand:
    """Hold ``position`` (the last good targets, or the measured pose) with kd x ``kd_scale``."""
    if kd_scale < 1.0:
        raise ValueError(f"hold kd scale must be >= 1, got {kd_scale}")
    p = np.asarray(position, dtype=np.float64).copy()
    return HoldCommand(p, np.zeros_like(p), np.asarray(kp, dtype=np.float64).copy(),
                       np.asarray(kd, dtype=np.float64) * kd_scale)


def soft_start_alpha(elapsed_s: float, duration_s: float) -> float:
    """Blend weight of the policy in [0, 1]: 0 at the start, 1 from ``duration_s`` on (linear)."""
    if duration_s <= 0:
        return 1.0
    return float(min(1.0, max(0.0, elapsed_s / duration_s)))


def soft_start_blend(start_pose: np.ndarray, policy_targets: np.ndarray, elapsed_s: float,
                     duration_s: float) -> np.ndarray:
    """(1 - alpha) * start_pose + alpha * policy_targets, alpha from :func:`soft_start_alpha`."""
    a = soft_start_alpha(elapsed_s, duration_s)
    start = np.asarray(start_pose, dtype=np.float64)
    target = np.asarray(policy_targets, dtype=np.float64)
    if a >= 1.0:
        return target.copy()
    return (1.0 - a) * start + a * target


@dataclass(frozen=True)
class ClampReport:
    """The clamped values and the joints that were changed (indices and names, in order)."""

    values: np.ndarray
    clipped: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.clipped)


def _report(original: np.ndarray, clamped: np.ndarray, names: Sequence[str]) -> ClampReport:
    idx = tuple(int(i) for i in np.flatnonzero(clamped != original))
    return ClampReport(clamped, idx, tuple(names[i] for i in idx))


def clamp_to_limits(targets: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    names: Sequence[str]) -> ClampReport:
    """Targets clamped into [lower, upper] per joint."""
    t = np.asarray(targets, dtype=np.float64)
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if not (t.shape == lo.shape == hi.shape == (len(names),)):
        raise ValueError(f"clamp_to_limits: shapes {t.shape}, {lo.shape}, {hi.shape} for {len(names)} joints")
    if np.any(lo > hi):
        raise ValueError("clamp_to_limits: a lower limit exceeds its upper limit")
    return _report(t, np.clip(t, lo, hi), names)


def clamp_slew(targets: np.ndarray, previous: np.ndarray | None, max_step: float,
               names: Sequence[str]) -> ClampReport:
    """Targets limited to ``previous`` +- ``max_step`` (rad per tick); no limit without a previous
    command or with ``max_step`` <= 0."""
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != (len(names),):
        raise ValueError(f"clamp_slew: shape {t.shape} for {len(names)} joints")
    if previous is None or max_step <= 0 or not math.isfinite(max_step):
        return ClampReport(t.copy(), (), ())
    prev = np.asarray(previous, dtype=np.float64)
    if prev.shape != t.shape:
        raise ValueError(f"clamp_slew: previous has shape {prev.shape}, targets {t.shape}")
    return _report(t, np.clip(t, prev - max_step, prev + max_step), names)


def nonfinite_fields(arrays: Mapping[str, np.ndarray | float | Sequence[float] | None]) -> tuple[str, ...]:
    """Names of the entries holding NaN or inf (None entries are skipped)."""
    bad = []
    for name, value in arrays.items():
        if value is None:
            continue
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            bad.append(name)
    return tuple(bad)
