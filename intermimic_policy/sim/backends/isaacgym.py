"""Isaac Gym backend: not implemented. This module says what it would take, and refuses clearly.

Untested here: Isaac Gym Preview needs Python 3.8 and an NVIDIA GPU, and this project runs on
Python >= 3.10 (spec 13.1 lists Isaac Gym's end of life among upstream's weak points). An
adapter would need:

* the scene as an Isaac Gym asset: our MJCF humanoid through ``gym.load_asset`` (Isaac Gym reads
  a subset of MJCF and would merge each body's three hinges into one spherical joint whose DOF
  coordinates are the rotation vector, spec 1.3), and the object from its convex parts (URDF);
* PD targets as rotation vectors (``DOF_MODE_POS`` drives with the MJCF gains), i.e. the inverse
  of :func:`intermimic_policy.embodiment.joint_map.hinge_angles_from_rotvec` on the way in;
* state from the root-state, rigid-body-state and DOF-state tensors, contact flags from the net
  contact force tensor (Isaac Gym cannot report human-object contact per body, so
  ``body_object_contact`` would have to be approximated), reset through indexed setters.

Until then ``backend="isaacgym"`` fails at build time with :class:`BackendError`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, NoReturn

from intermimic_policy.sim.backends.base import BackendConfig, BackendError


def isaacgym_available() -> bool:
    return importlib.util.find_spec("isaacgym") is not None


def build_isaacgym_backend(scene: Any, config: BackendConfig) -> NoReturn:
    """Refuse to build, with the reason: Isaac Gym missing, or the adapter not written yet."""
    if not isaacgym_available():
        raise BackendError("backend 'isaacgym' needs the isaacgym package (Isaac Gym Preview 4, "
                           "Python 3.8, NVIDIA GPU), which is not installed; use 'mujoco' or 'warp'")
    raise BackendError("backend 'isaacgym' is not implemented yet: isaacgym is installed, but the "
                       "adapter (asset import, rotation-vector PD targets, state tensors) is "
                       "missing; see intermimic_policy/sim/backends/isaacgym.py")
