"""The training-side ``SimState`` (torch, MuJoCo kinematics) of the policy node's robot inputs.

Why separate: the policy node itself runs on :mod:`intermimic_policy.observation.numpy_obs`
(no torch, no MuJoCo). This module builds the same state the way the simulator backends do, so
tests (and tools that want a ``SimState``) can compare the node's numpy path with training's.
"""

from __future__ import annotations

import numpy as np
import torch

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES, NUM_BODIES
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.ros.node_state import JointSample, RobotInputs, RootSample
from intermimic_policy.sim.state import SimState


# -- kinematics ------------------------------------------------------------------------------------
class HumanoidKinematics:
    """Body poses and velocities of the generated humanoid by MuJoCo's kinematics (C, ~50 us).

    The model is the one the simulator steps (``mjcf.humanoid_model`` of the skeleton), so body
    frames are exactly those the training backends read. Velocities are ``mj_objectVelocity``'s:
    world angular velocity and the linear velocity of each body origin, vectorised over bodies.
    """

    def __init__(self, skeleton: Skeleton | None = None) -> None:
        import mujoco

        from intermimic_policy.embodiment.mjcf import humanoid_model

        self._mj = mujoco
        self.model = humanoid_model(skeleton)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.body_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n) for n in BODY_NAMES])
        joints = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in DOF_NAMES]
        if min(self.body_ids) < 0 or min(joints) < 0:  # pragma: no cover - generator and tables disagree
            raise IntermimicError("humanoid model lacks bodies or joints of smplx_body")
        self.qpos_adr = m.jnt_qposadr[joints]
        self.dof_adr = m.jnt_dofadr[joints]
        root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, BODY_NAMES[0])
        self.root_qpos, self.root_dof = int(m.jnt_qposadr[root]), int(m.jnt_dofadr[root])
        self.root_of_body = m.body_rootid[self.body_ids]

    def compute(self, joints: JointSample, root: RootSample) -> tuple[np.ndarray, ...]:
        """(body_pos [52,3], body_rot xyzw [52,4], lin_vel [52,3], ang_vel [52,3]), world frame."""
        mj, m, d = self._mj, self.model, self.data
        q, v = self.root_qpos, self.root_dof
        d.qpos[q:q + 3] = root.pos
        d.qpos[q + 3:q + 7] = root.rot[[3, 0, 1, 2]]
        d.qpos[self.qpos_adr] = joints.angles
        r = quat.to_matrix(torch.from_numpy(root.rot)).numpy()
        d.qvel[v:v + 3] = root.lin_vel  # free joint: linear velocity in the world frame,
        d.qvel[v + 3:v + 6] = r.T @ root.ang_vel  # angular velocity in the body frame
        d.qvel[self.dof_adr] = joints.rates
        mj.mj_kinematics(m, d)
        mj.mj_comPos(m, d)
        mj.mj_comVel(m, d)
        ids = self.body_ids
        pos = d.xpos[ids].copy()
        rot = d.xquat[ids][:, [1, 2, 3, 0]].copy()
        ang = d.cvel[ids, :3].copy()
        # cvel is about the subtree centre of mass: move the linear part to each body origin
        lin = d.cvel[ids, 3:] + np.cross(ang, pos - d.subtree_com[self.root_of_body])
        return pos, rot, lin, ang


def build_sim_state(inputs: RobotInputs, kinematics: HumanoidKinematics) -> SimState:
    """One world's ``SimState`` (float32 tensors, batch 1) from the newest robot-state samples.

    Joint rotations and local joint angular velocities come from the hinge angles and rates by
    ``joint_map`` (the conversion the simulator backends use).
    """
    angles = torch.from_numpy(inputs.joints.angles).unsqueeze(0)
    rates = torch.from_numpy(inputs.joints.rates).unsqueeze(0)
    rotvec = joint_map.rotvec_from_hinge_angles(angles)
    omega = joint_map.angular_velocity_from_hinge_rates(angles, rates)
    body_pos, body_rot, lin, ang = (a[None] for a in kinematics.compute(inputs.joints, inputs.root))
    c = inputs.contacts
    if c is None:
        touch = torch.zeros(1, NUM_BODIES, dtype=torch.bool)
        obj_touch = torch.zeros(1, NUM_BODIES, dtype=torch.bool)
        force = torch.zeros(1, NUM_BODIES, 3)
    else:
        touch = torch.from_numpy(c.in_contact).unsqueeze(0)
        obj_touch = torch.from_numpy(c.object_contact).unsqueeze(0)
        force = torch.from_numpy(c.force).float().unsqueeze(0)

    def f32(a: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
        return t.to(torch.float32)

    return SimState(
        body_pos=f32(body_pos), body_rot=f32(body_rot), body_lin_vel=f32(lin), body_ang_vel=f32(ang),
        joint_rotvec=f32(rotvec), joint_ang_vel=f32(omega),
        body_contact=touch, body_object_contact=obj_touch, body_contact_force=force,
        object_pos=f32(inputs.object_pose.pos).unsqueeze(0),
        object_rot=f32(inputs.object_pose.rot).unsqueeze(0),
        object_lin_vel=f32(inputs.object_lin_vel).unsqueeze(0),
        object_ang_vel=f32(inputs.object_ang_vel).unsqueeze(0),
        object_contact=obj_touch.any(dim=-1),
    )
