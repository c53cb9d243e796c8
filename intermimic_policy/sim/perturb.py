"""Perturbations for robustness evaluation and domain randomisation: what sim-to-real users try.

``--perturb KEY=VALUE`` (repeatable) on ``intermimic eval`` and ``intermimic launch sim_hoi``, or
``perturb:`` in an environment config, sets one :class:`Perturbation`:

* ``object_mass``, ``object_friction``, ``floor_friction``: scales of the object's mass (and
  inertia), of its friction coefficient and of the floor's (1 = unchanged);
* ``action_delay``: control steps between the policy's action and the PD targets it sets;
* ``obs_noise``: standard deviation of Gaussian noise added to every observation entry;
* ``push``: root velocity kicks (m/s, random horizontal direction) every ``push_interval_s``.

With ``randomize`` on (training), each world draws its own delay in [0, action_delay], noise in
[0, obs_noise] and kick in [0, push] at every reset; scales apply to the whole model (a batch of
worlds shares one MuJoCo model), so training varies them per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from intermimic_policy.errors import IntermimicError


class PerturbError(IntermimicError, ValueError):
    """A perturbation setting that cannot be used."""


@dataclass(frozen=True)
class Perturbation:
    object_mass: float = 1.0
    object_friction: float = 1.0
    floor_friction: float = 1.0
    action_delay: int = 0
    obs_noise: float = 0.0
    push: float = 0.0
    push_interval_s: float = 1.0
    randomize: bool = False

    def __post_init__(self) -> None:
        for name in ("object_mass", "object_friction", "floor_friction", "push_interval_s"):
            if not getattr(self, name) > 0:
                raise PerturbError(f"perturb {name} must be positive, got {getattr(self, name)}")
        if self.action_delay < 0:
            raise PerturbError(f"perturb action_delay must be >= 0 control steps, got {self.action_delay}")
        for name in ("obs_noise", "push"):
            if getattr(self, name) < 0:
                raise PerturbError(f"perturb {name} must be >= 0, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return self != Perturbation(randomize=self.randomize)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self) -> dict[str, Any]:
        """Only the settings that differ from no perturbation (for reports)."""
        base = Perturbation()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(base, f.name)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Perturbation:
        if isinstance(d, Perturbation):
            return d
        if not isinstance(d, dict):
            raise PerturbError(f"perturb must be a mapping, got {d!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            raise PerturbError(f"perturb: unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: _value(k, v) for k, v in d.items()})


def _value(key: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Perturbation)}[key]
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if kind == "int":
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        return float(value)
    except (TypeError, ValueError):
        raise PerturbError(f"perturb {key}: expected a {kind}, got {value!r}") from None


def parse_perturb(items: Iterable[str] | None, base: Perturbation | None = None) -> Perturbation:
    """``["object_mass=1.2", "action_delay=1"]`` -> Perturbation (later items win)."""
    out: dict[str, Any] = {}
    names = {f.name for f in fields(Perturbation)}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise PerturbError(f"--perturb {item!r}: expected KEY=VALUE, e.g. object_mass=1.2")
        if key not in names:
            raise PerturbError(f"--perturb {item!r}: unknown key {key!r}; known: {', '.join(sorted(names))}")
        out[key] = _value(key, value.strip())
    return replace(base or Perturbation(), **out)
