"""HOIMotion: one human-object-interaction clip as typed arrays.

Every loader (InterMimic ``.pt`` variants, our ``.npz``, generators) produces this, and every
consumer (replay, environment, streamer) reads it. Quaternions follow
``intermimic_policy.geometry.quaternion`` (x, y, z, w). World frame is z-up, metres, seconds.

Velocities are derived on demand from the poses, with rotations differenced as relative
rotations (upstream differences rotation vectors, which is wrong across the +-pi wrap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat

CONTACT_MUST_TOUCH = 1
CONTACT_UNKNOWN = 0
CONTACT_MUST_NOT_TOUCH = -1


class MotionError(IntermimicError, ValueError):
    """A clip that cannot be used, with a message that names the file and the problem."""


# The per-frame arrays of a clip, in declaration order (what writers store, what equality compares).
ARRAY_FIELDS: tuple[str, ...] = (
    "root_pos", "root_rot", "joint_rotvec", "body_pos", "body_rot",
    "object_pos", "object_rot", "body_contact", "object_contact",
)


@dataclass(frozen=True, eq=False)
class HOIMotion:
    fps: float
    root_pos: np.ndarray  # [T, 3]
    root_rot: np.ndarray  # [T, 4] xyzw
    joint_rotvec: np.ndarray  # [T, 51, 3] local joint rotations as rotation vectors
    body_pos: np.ndarray  # [T, 52, 3] world
    body_rot: np.ndarray  # [T, 52, 4] world, xyzw
    object_pos: np.ndarray  # [T, 3] world, object frame origin
    object_rot: np.ndarray  # [T, 4] xyzw
    object_name: str
    body_contact: np.ndarray  # [T, 52] int8 in {-1, 0, +1}
    object_contact: np.ndarray  # [T] bool
    name: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.root_pos.shape[0]
        shapes = {
            "root_pos": (t, 3),
            "root_rot": (t, 4),
            "joint_rotvec": (t, NUM_JOINTS, 3),
            "body_pos": (t, NUM_BODIES, 3),
            "body_rot": (t, NUM_BODIES, 4),
            "object_pos": (t, 3),
            "object_rot": (t, 4),
            "body_contact": (t, NUM_BODIES),
            "object_contact": (t,),
        }
        for key, shape in shapes.items():
            got = getattr(self, key).shape
            if got != shape:
                raise MotionError(f"{self.name or 'motion'}: {key} has shape {got}, expected {shape}")
        if t < 1:
            raise MotionError(f"{self.name or 'motion'}: no frames")
        if not self.fps > 0:
            raise MotionError(f"{self.name or 'motion'}: fps must be positive, got {self.fps}")

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.num_frames - 1) / self.fps

    # -- derived velocities (world frame unless stated) ----------------------------------------
    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))

    @cached_property
    def root_lin_vel(self) -> np.ndarray:
        return quat.finite_difference_velocity(self._t(self.root_pos), self.fps).float().numpy()

    @cached_property
    def root_ang_vel(self) -> np.ndarray:
        return quat.finite_difference_angular_velocity(self._t(self.root_rot), self.fps).float().numpy()

    @cached_property
    def body_lin_vel(self) -> np.ndarray:
        x = self._t(self.body_pos).transpose(0, 1)  # [52, T, 3]: time on dim -2
        return quat.finite_difference_velocity(x, self.fps).transpose(0, 1).float().numpy()

    @cached_property
    def body_ang_vel(self) -> np.ndarray:
        q = self._t(self.body_rot).transpose(0, 1)
        return quat.finite_difference_angular_velocity(q, self.fps).transpose(0, 1).float().numpy()

    @cached_property
    def joint_ang_vel(self) -> np.ndarray:
        """Local (child-frame) angular velocity of each joint, [T, 51, 3]."""
        q = quat.from_rotvec(self._t(self.joint_rotvec)).transpose(0, 1)
        w = quat.finite_difference_angular_velocity(q, self.fps, frame="local")
        return w.transpose(0, 1).float().numpy()

    @cached_property
    def object_lin_vel(self) -> np.ndarray:
        return quat.finite_difference_velocity(self._t(self.object_pos), self.fps).float().numpy()

    @cached_property
    def object_ang_vel(self) -> np.ndarray:
        return quat.finite_difference_angular_velocity(self._t(self.object_rot), self.fps).float().numpy()

    def identical(self, other: HOIMotion) -> bool:
        """Bit-exact equality: same dtype, shape and bytes of every array, same scalars and meta.

        (``==`` stays identity: a dataclass ``__eq__`` over arrays would be ambiguous.)
        """
        for key in ARRAY_FIELDS:
            a, b = getattr(self, key), getattr(other, key)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                return False
        return (self.fps, self.object_name, self.name, self.source, self.meta) == (
            other.fps, other.object_name, other.name, other.source, other.meta
        )

    def slice(self, start: int, stop: int | None = None) -> HOIMotion:
        """Frames [start, stop) as a new motion (velocities are re-derived)."""
        sl = slice(start, stop)
        return HOIMotion(
            fps=self.fps,
            root_pos=self.root_pos[sl],
            root_rot=self.root_rot[sl],
            joint_rotvec=self.joint_rotvec[sl],
            body_pos=self.body_pos[sl],
            body_rot=self.body_rot[sl],
            object_pos=self.object_pos[sl],
            object_rot=self.object_rot[sl],
            object_name=self.object_name,
            body_contact=self.body_contact[sl],
            object_contact=self.object_contact[sl],
            name=self.name,
            source=self.source,
            meta=dict(self.meta),
        )
