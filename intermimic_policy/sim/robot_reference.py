"""A robot in ``HOIEnv``: its reference clip (from a retargeted ``RobotMotion``) and its scene.

The environment's reference is body poses, velocities, joint states, object state and contact
labels per frame (what ``MotionLibrary`` stacks). For the SMPL-X humanoid an ``HOIMotion`` carries
them; for a robot :func:`robot_clip` derives them from the retargeted joint trajectory with the
robot's own kinematics (Pinocchio FK of the same URDF the simulator loads), so the reference and
the simulated bodies are the same links. Labels: each hand's bodies carry that hand's source label
(+1 must touch the object, -1 must not, 0 either); other bodies 0.

:func:`build_robot_env_scene` compiles the robot scene (``sim.robot_scene``) with the env's scene
settings and indexes it like ``sim.scene.Scene``, with the ``embodiment`` the backends read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import mujoco
import numpy as np
import pinocchio as pin
import torch

from intermimic_policy.embodiment.description import EmbodimentSpec
from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.robot_motion import RobotMotion, load_robot_motion
from intermimic_policy.sim import scene as hs
from intermimic_policy.sim.objects import ObjectAsset
from intermimic_policy.sim.robot_scene import build_robot_scene


@dataclass(frozen=True, eq=False)
class RobotClip:
    """A robot reference clip with the arrays ``MotionLibrary`` reads (``HOIMotion``'s names)."""

    fps: float
    root_pos: np.ndarray  # [T, 3]
    root_rot: np.ndarray  # [T, 4] xyzw
    joint_rotvec: np.ndarray  # [T, J, 3] q a per hinge
    joint_pos: np.ndarray  # [T, J] hinge angles
    body_pos: np.ndarray  # [T, B, 3]
    body_rot: np.ndarray  # [T, B, 4] xyzw
    object_pos: np.ndarray
    object_rot: np.ndarray
    object_name: str
    body_contact: np.ndarray  # [T, B] int8
    object_contact: np.ndarray  # [T] bool
    axes: np.ndarray  # [J, 3]
    name: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])

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
        x = self._t(self.body_pos).transpose(0, 1)
        return quat.finite_difference_velocity(x, self.fps).transpose(0, 1).float().numpy()

    @cached_property
    def body_ang_vel(self) -> np.ndarray:
        q = self._t(self.body_rot).transpose(0, 1)
        return quat.finite_difference_angular_velocity(q, self.fps).transpose(0, 1).float().numpy()

    @cached_property
    def joint_ang_vel(self) -> np.ndarray:
        """Child-frame angular velocity q' a of each hinge, [T, J, 3]."""
        rates = quat.finite_difference_velocity(self._t(self.joint_pos), self.fps).numpy()
        return (rates[..., None] * self.axes[None]).astype(np.float32)

    @cached_property
    def object_lin_vel(self) -> np.ndarray:
        return quat.finite_difference_velocity(self._t(self.object_pos), self.fps).float().numpy()

    @cached_property
    def object_ang_vel(self) -> np.ndarray:
        return quat.finite_difference_angular_velocity(self._t(self.object_rot), self.fps).float().numpy()


def robot_clip(motion: RobotMotion | str | os.PathLike[str], desc: RobotDescription,
               emb: EmbodimentSpec) -> RobotClip:
    """The reference of a retargeted clip on ``desc``'s bodies (``emb.body_names``)."""
    m = motion if isinstance(motion, RobotMotion) else load_robot_motion(motion)
    label = m.name or m.source or "robot motion"
    if m.robot != desc.name:
        raise MotionError(f"{label}: retargeted to robot {m.robot!r}, the environment runs {desc.name!r}")
    if tuple(m.joint_names) != tuple(emb.dof_names):
        raise MotionError(f"{label}: joint names differ from robot {desc.name}'s ({len(m.joint_names)} vs "
                          f"{emb.num_dofs}); retarget the clip again")
    model, data = desc.model, desc.model.createData()
    fids = [model.getFrameId(n) for n in emb.body_names]
    t, nb = m.num_frames, emb.num_bodies
    pos = np.empty((t, nb, 3))
    rot = np.empty((t, nb, 4))
    q = m.qpos().astype(np.float64)
    for i in range(t):
        qi = q[i].copy()
        qi[3:7] /= np.linalg.norm(qi[3:7])
        pin.framesForwardKinematics(model, data, qi)
        for b, fid in enumerate(fids):
            om = data.oMf[fid]
            pos[i, b] = om.translation
            rot[i, b] = pin.Quaternion(om.rotation).coeffs()  # x, y, z, w
    labels = np.zeros((t, nb), dtype=np.int8)
    hands = (emb.left_hand_bodies, emb.right_hand_bodies)
    if m.hand_contact.shape[1] != len(hands):
        raise MotionError(f"{label}: {m.hand_contact.shape[1]} hand contact columns, robot has {len(hands)} hands")
    for h, ids in enumerate(hands):
        labels[:, list(ids)] = m.hand_contact[:, h:h + 1]
    axes = np.asarray(emb.joint_axes, dtype=np.float64)
    return RobotClip(
        fps=float(m.fps), root_pos=m.root_pos.astype(np.float32), root_rot=m.root_rot.astype(np.float32),
        joint_rotvec=(m.joint_pos[..., None] * axes[None]).astype(np.float32),
        joint_pos=m.joint_pos.astype(np.float64), body_pos=pos.astype(np.float32),
        body_rot=rot.astype(np.float32), object_pos=m.object_pos.astype(np.float32),
        object_rot=m.object_rot.astype(np.float32), object_name=m.object_name, body_contact=labels,
        object_contact=np.asarray((m.hand_contact > 0).any(-1)), axes=axes.astype(np.float32), name=m.name,
        source=m.source, meta=dict(m.meta),
    )


def build_robot_env_scene(desc: RobotDescription, emb: EmbodimentSpec, obj: ObjectAsset | None,
                          config: hs.SceneConfig | None = None) -> hs.Scene:
    """The robot scene indexed as a ``sim.scene.Scene`` (bodies in ``emb.body_names`` order)."""
    cfg = config or hs.SceneConfig()
    rs = build_robot_scene(desc, obj, timestep=cfg.timestep, config=cfg)
    model = rs.model

    def id_of(kind: mujoco.mjtObj, name: str) -> int:
        i = mujoco.mj_name2id(model, kind, name)
        if i < 0:
            raise IntermimicError(f"robot scene of {desc.name} lacks {kind.name} {name!r}")
        return int(i)

    body_ids = np.array([id_of(mujoco.mjtObj.mjOBJ_BODY, n) for n in emb.body_names], dtype=np.int64)
    joints = np.array([id_of(mujoco.mjtObj.mjOBJ_JOINT, n) for n in emb.dof_names], dtype=np.int64)
    actuators = np.array([id_of(mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in emb.dof_names], dtype=np.int64)
    root = id_of(mujoco.mjtObj.mjOBJ_JOINT, "root")
    body_to_index = np.full(model.nbody, -1, dtype=np.int64)
    body_to_index[body_ids] = np.arange(len(body_ids))
    object_body = object_qpos = object_qvel = None
    object_geoms = np.zeros(0, dtype=np.int64)
    if obj is not None:
        object_body = id_of(mujoco.mjtObj.mjOBJ_BODY, hs.OBJECT_BODY)
        oj = id_of(mujoco.mjtObj.mjOBJ_JOINT, hs.OBJECT_BODY)
        object_qpos, object_qvel = int(model.jnt_qposadr[oj]), int(model.jnt_dofadr[oj])
        object_geoms = np.flatnonzero((model.geom_bodyid == object_body) & (model.geom_contype != 0)).astype(np.int64)
    return hs.Scene(
        model=model, xml=rs.xml, object_name=obj.name if obj is not None else None, object=obj,
        humanoid_body_ids=body_ids, root_qpos_adr=int(model.jnt_qposadr[root]),
        root_qvel_adr=int(model.jnt_dofadr[root]),
        joint_qpos_adr=model.jnt_qposadr[joints].astype(np.int64),
        joint_qvel_adr=model.jnt_dofadr[joints].astype(np.int64), actuator_ids=actuators,
        object_body_id=object_body, object_qpos_adr=object_qpos, object_qvel_adr=object_qvel,
        geom_humanoid_body=body_to_index[model.geom_bodyid], object_geom_ids=object_geoms,
        floor_geom_id=id_of(mujoco.mjtObj.mjOBJ_GEOM, hs.FLOOR_GEOM),
        content_hash=hashlib.sha256(rs.xml.encode()).hexdigest(), embodiment=emb,
    )


def robot_clips(motions: Any, desc: RobotDescription, emb: EmbodimentSpec) -> list[RobotClip]:
    """Clips given as ``RobotClip``, ``RobotMotion`` or robot ``.npz`` paths."""
    return [m if isinstance(m, RobotClip) else robot_clip(m, desc, emb) for m in motions]
