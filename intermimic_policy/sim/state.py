"""Batched simulator state: what every backend hands to observation, reward and termination terms.

Terms never touch a simulator API; they read this. All tensors have a leading world dimension N,
are float32 unless stated, world frame, z-up; quaternions are xyzw
(``intermimic_policy.geometry.quaternion``). Velocities are those of the body frame origin
(linear) and world angular velocity.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class SimState:
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

    @property
    def num_worlds(self) -> int:
        return int(self.body_pos.shape[0])

    @property
    def root_pos(self) -> Tensor:
        return self.body_pos[:, 0]

    @property
    def root_rot(self) -> Tensor:
        return self.body_rot[:, 0]

    def index(self, ids: Tensor | slice) -> SimState:
        """The state of a subset of worlds."""
        return SimState(**{f.name: getattr(self, f.name)[ids] for f in fields(self)})

    def to(self, device: torch.device | str) -> SimState:
        return SimState(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def clone(self) -> SimState:
        return SimState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})
