"""The shared state types: the simulated state, the reference frame and a reset state.

The lowest layer above ``geometry`` and ``embodiment``: ``sim`` (backends, environment, rewards),
``observation`` and the ROS nodes all read these, so none of them imports another to get them.

``SimState`` is what every backend hands to observation, reward and termination terms.

Terms never touch a simulator API; they read this. All tensors have a leading world dimension N,
are float32 unless stated, world frame, z-up; quaternions are xyzw
(``intermimic_policy.geometry.quaternion``). Velocities are those of the body frame origin
(linear) and world angular velocity.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import NUM_JOINTS

S = TypeVar("S", bound="WorldBatch")


class WorldBatch:
    """What every state type shares: dataclass fields that are tensors with a leading world dim."""

    @property
    def num_worlds(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])  # type: ignore[arg-type]

    def index(self: S, ids: Tensor | slice) -> S:
        """The state of a subset of worlds."""
        return type(self)(**{f.name: getattr(self, f.name)[ids] for f in fields(self)})  # type: ignore[arg-type]

    def to(self: S, device: torch.device | str) -> S:
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})  # type: ignore[arg-type]

    def clone(self: S) -> S:
        return type(self)(**{f.name: getattr(self, f.name).clone() for f in fields(self)})  # type: ignore[arg-type]


class _Bodies(WorldBatch):
    """A batch whose first fields are body positions and rotations (root = body 0)."""

    body_pos: Tensor
    body_rot: Tensor

    @property
    def num_worlds(self) -> int:
        return int(self.body_pos.shape[0])

    @property
    def root_pos(self) -> Tensor:
        return self.body_pos[:, 0]

    @property
    def root_rot(self) -> Tensor:
        return self.body_rot[:, 0]


@dataclass
class SimState(_Bodies):
    body_pos: Tensor  # [N, 52, 3]
    body_rot: Tensor  # [N, 52, 4]
    body_lin_vel: Tensor  # [N, 52, 3]
    body_ang_vel: Tensor  # [N, 52, 3]
    joint_rotvec: Tensor  # [N, 51, 3] local joint rotations
    joint_ang_vel: Tensor  # [N, 51, 3] local joint angular velocities (child frame)
    body_contact: Tensor  # [N, 52] bool: any contact (ground included), as upstream senses it
    body_object_contact: Tensor  # [N, 52] bool: contact with the object only
    body_contact_force: Tensor  # [N, 52, 3] net contact force on each body
    object_pos: Tensor  # [N, 3]
    object_rot: Tensor  # [N, 4]
    object_lin_vel: Tensor  # [N, 3]
    object_ang_vel: Tensor  # [N, 3]
    object_contact: Tensor  # [N] bool: human-object contact


@dataclass
class RefFrame(_Bodies):
    """The reference of N worlds, one frame each. World frame, xyzw, root = body 0."""

    body_pos: Tensor  # [N, 52, 3]
    body_rot: Tensor  # [N, 52, 4]
    body_lin_vel: Tensor  # [N, 52, 3]
    body_ang_vel: Tensor  # [N, 52, 3]
    object_pos: Tensor  # [N, 3]
    object_rot: Tensor  # [N, 4]
    object_lin_vel: Tensor  # [N, 3]
    object_ang_vel: Tensor  # [N, 3]
    body_contact: Tensor  # [N, 52] float labels in {-1, 0, +1}
    object_contact: Tensor  # [N] bool
    ig: Tensor  # [N, 52, 3] body minus its nearest object surface point, world frame


@dataclass
class InitialState(WorldBatch):
    """What a backend needs to put N worlds into a state: the reference's, or a PSI-stored one.

    ``flatten`` gives upstream's 332-D reference-state layout (spec 1.5 step 7): root state 13
    (pos, rot, lin vel, ang vel), joint rotations 153, joint angular velocities 153, object state
    13. Joint angular velocities are local (child frame); root and object ones are world frame.
    """

    root_pos: Tensor  # [N, 3]
    root_rot: Tensor  # [N, 4]
    root_lin_vel: Tensor  # [N, 3]
    root_ang_vel: Tensor  # [N, 3]
    joint_rotvec: Tensor  # [N, 51, 3]
    joint_ang_vel: Tensor  # [N, 51, 3]
    object_pos: Tensor  # [N, 3]
    object_rot: Tensor  # [N, 4]
    object_lin_vel: Tensor  # [N, 3]
    object_ang_vel: Tensor  # [N, 3]

    DIM: ClassVar[int] = 13 + 3 * NUM_JOINTS * 2 + 13  # 332

    def flatten(self) -> Tensor:
        n = self.num_worlds
        return torch.cat([
            self.root_pos, self.root_rot, self.root_lin_vel, self.root_ang_vel,
            self.joint_rotvec.reshape(n, -1), self.joint_ang_vel.reshape(n, -1),
            self.object_pos, self.object_rot, self.object_lin_vel, self.object_ang_vel,
        ], dim=-1)

    @classmethod
    def from_flat(cls, x: Tensor, num_joints: int = NUM_JOINTS) -> InitialState:
        """Inverse of :meth:`flatten` for a body with ``num_joints`` joints (default: SMPL-X's)."""
        dim = 13 + 3 * num_joints * 2 + 13
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"flat initial state must be [N, {dim}], got {list(x.shape)}")
        n, j = x.shape[0], 3 * num_joints
        parts = torch.split(x, [3, 4, 3, 3, j, j, 3, 4, 3, 3], dim=-1)
        return cls(parts[0], parts[1], parts[2], parts[3], parts[4].reshape(n, num_joints, 3),
                   parts[5].reshape(n, num_joints, 3), parts[6], parts[7], parts[8], parts[9])

    @classmethod
    def from_sim(cls, sim: SimState) -> InitialState:
        """The simulated state of each world, in the form a reset writes back (for PSI)."""
        return cls(sim.body_pos[:, 0], sim.body_rot[:, 0], sim.body_lin_vel[:, 0],
                   sim.body_ang_vel[:, 0], sim.joint_rotvec, sim.joint_ang_vel, sim.object_pos,
                   sim.object_rot, sim.object_lin_vel, sim.object_ang_vel)
