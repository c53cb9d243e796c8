"""The action -> PD-target map, written once for numpy (deployment) and torch (training).

target = offset + scale * clip(a, -action_clip, action_clip), per DOF. The environment, the
contract (``PolicyContract.pd_targets``) and the nodes all call :func:`pd_targets`, so training and
deployment cannot map actions differently. The shapes must match exactly: an action row of the
wrong width (e.g. a graph whose output is [B, 1]) is refused, never broadcast to every joint.
"""

from __future__ import annotations

from typing import Any, TypeVar

from intermimic_policy.errors import IntermimicError

Array = TypeVar("Array", bound=Any)  # numpy.ndarray or torch.Tensor, offset/scale of the same kind


class ActionShapeError(IntermimicError, ValueError):
    """Actions whose shape does not match the action map (one action per DOF, no broadcasting)."""


def _check(actions: Any, offset: Any, what: str) -> None:
    shape, dofs = tuple(actions.shape), int(offset.shape[-1])
    if len(shape) not in (1, 2) or shape[-1] != dofs or tuple(offset.shape) != (dofs,):
        raise ActionShapeError(f"{what} have shape {list(shape)}, expected [{dofs}] or [batch, {dofs}] "
                               "(one per DOF; nothing is broadcast)")


def pd_targets(actions: Array, offset: Array, scale: Array, action_clip: float = 1.0) -> Array:
    """PD targets (rad) for ``actions`` [A] or [B, A]: ``offset + scale * clip(a)``."""
    _check(actions, offset, "actions")
    return offset + scale * actions.clip(-action_clip, action_clip)


def actions_for_targets(targets: Array, offset: Array, scale: Array, action_clip: float = 1.0) -> Array:
    """The inverse map: the actions (clipped) whose PD targets are ``targets``."""
    _check(targets, offset, "targets")
    return ((targets - offset) / scale).clip(-action_clip, action_clip)
