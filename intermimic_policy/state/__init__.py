"""Shared state types and interaction-graph geometry: the layer ``sim`` and ``observation`` stand on.

Nothing here imports ``sim``, ``observation``, ``ros`` or ``training``; see docs/architecture.md.
"""

from intermimic_policy.state.frames import InitialState, RefFrame, SimState

__all__ = ["InitialState", "RefFrame", "SimState"]
