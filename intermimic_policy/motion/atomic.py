"""Atomic writes moved to :mod:`intermimic_policy.atomic` (a base utility every layer uses)."""

from intermimic_policy.atomic import atomic_output

__all__ = ["atomic_output"]
