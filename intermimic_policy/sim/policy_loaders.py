"""The registry that turns an ``intermimic eval --policy ARG`` into a policy, without importing any.

Light on purpose (no torch, no simulator): an application registers its loaders at start-up
(``training.cli`` adds training checkpoints) and the library never names the modules that provide
them. ``sim.evaluate`` re-exports these functions and registers the built-in ``pd-replay``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from intermimic_policy.errors import IntermimicError

# A loader returns a policy (``sim.evaluate.Policy``) for arguments it understands, else None.
PolicyLoader = Callable[[str], Any]
_LOADERS: dict[str, PolicyLoader] = {}


class EvalError(IntermimicError, ValueError):
    """An evaluation that cannot run: unknown policy, no clips, bad settings."""


def register_policy_loader(name: str, loader: PolicyLoader) -> None:
    """Add (or replace) a loader. ``loader(arg)`` returns a Policy, or None if ``arg`` is not its kind.

    Loaders are tried in registration order; raise an ``IntermimicError`` for an argument that is
    of your kind but broken (e.g. a corrupt checkpoint), so the user sees why.
    """
    _LOADERS[name] = loader


def policy_loaders() -> tuple[str, ...]:
    return tuple(_LOADERS)


def load_policy(arg: str) -> Any:
    """The policy the first loader that understands ``arg`` returns."""
    for loader in _LOADERS.values():
        policy = loader(arg)
        if policy is not None:
            return policy
    raise EvalError(f"no policy loader understands {arg!r} (loaders: {', '.join(_LOADERS)})")
