"""Simulator backends behind one protocol (:class:`~.base.Backend`); pick one by name.

``"mujoco"`` (default): MuJoCo on CPU threads. ``"warp"``: MuJoCo Warp (GPU, or slowly on CPU).
``"isaacgym"``: a placeholder that says what an Isaac Gym adapter still needs. Heavy modules are
imported only when their backend is asked for.
"""

from __future__ import annotations

from typing import Any

from intermimic_policy.sim.backends.base import Backend, BackendConfig, BackendError

BACKENDS: tuple[str, ...] = ("mujoco", "warp", "isaacgym")


def make_backend(name: str, scene: Any, config: BackendConfig) -> Backend:
    """A backend of kind ``name`` running ``config.num_worlds`` copies of ``scene``."""
    if name == "mujoco":
        from intermimic_policy.sim.backends.mujoco_cpu import MujocoCPUBackend

        return MujocoCPUBackend(scene, config)
    if name == "warp":
        from intermimic_policy.sim.backends.mujoco_warp import MujocoWarpBackend

        return MujocoWarpBackend(scene, config)
    if name == "isaacgym":
        from intermimic_policy.sim.backends.isaacgym import build_isaacgym_backend

        build_isaacgym_backend(scene, config)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendConfig", "BackendError", "make_backend"]
