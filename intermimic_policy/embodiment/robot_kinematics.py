"""Body poses and velocities of a robot from its measured state (Pinocchio, no torch, no MuJoCo).

What the policy node needs to build a robot's observation from ``JointState`` + ``Odometry``: the
world pose, origin linear velocity and world angular velocity of every body of the robot's
embodiment, the same quantities the simulator reports (``sim.backends.base.extract_state``),
from the same URDF. The SMPL-X humanoid's counterpart is ``observation.numpy_obs.Kinematics``;
both fill a ``WorldState`` through the same ``compute`` call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pinocchio as pin

from intermimic_policy.embodiment.description import EmbodimentSpec
from intermimic_policy.embodiment.robot import RobotDescription


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class RobotKinematics:
    """FK and body velocities of ``emb``'s bodies from root pose / twist and joint angles / rates."""

    def __init__(self, desc: RobotDescription, emb: EmbodimentSpec) -> None:
        if tuple(desc.joint_names) != tuple(emb.dof_names):
            raise ValueError(f"robot {desc.name}: description and embodiment joint orders differ")
        self.model = desc.model
        self.data = self.model.createData()
        self.frames = [self.model.getFrameId(n) for n in emb.body_names]
        self._q = pin.neutral(self.model)
        self._v = np.zeros(self.model.nv)
        self._frame = pin.ReferenceFrame.LOCAL_WORLD_ALIGNED

    def compute(self, out: Any, root_pos: np.ndarray, root_rot: np.ndarray, root_lin_vel: np.ndarray,
                root_ang_vel: np.ndarray, angles: np.ndarray, rates: np.ndarray) -> None:
        """Fill ``out``'s body fields (a ``WorldState``); root velocities in the world frame."""
        q, v = self._q, self._v
        rot = np.asarray(root_rot, dtype=np.float64)
        rot = rot / np.linalg.norm(rot)
        q[:3] = root_pos
        q[3:7] = rot  # Pinocchio's free flyer: x, y, z, w
        q[7:] = angles
        r = _quat_matrix(rot)
        v[:3] = r.T @ np.asarray(root_lin_vel, dtype=np.float64)  # free-flyer twist: base frame
        v[3:6] = r.T @ np.asarray(root_ang_vel, dtype=np.float64)
        v[6:] = rates
        model, data = self.model, self.data
        pin.forwardKinematics(model, data, q, v)
        for i, fid in enumerate(self.frames):
            m = pin.updateFramePlacement(model, data, fid)
            out.body_pos[i] = m.translation
            out.body_mat[i] = m.rotation
            vel = pin.getFrameVelocity(model, data, fid, self._frame)
            out.body_lin_vel[i] = vel.linear
            out.body_ang_vel[i] = vel.angular
