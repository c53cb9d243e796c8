"""Moved to :mod:`intermimic_policy.state.frames`; kept so older imports still work."""

from intermimic_policy.state.frames import SimState

__all__ = ["SimState"]
