"""The robot in MuJoCo: the same URDF as :mod:`intermimic_policy.embodiment.robot`, loaded through
``MjSpec`` with a free root, position actuators carrying the robot's gains and effort limits, and the
floor / camera / object exactly as the humanoid scene does (it lives in ``sim`` because it uses
:mod:`intermimic_policy.sim.scene`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.embodiment.robot import RobotDescription, RobotError


@dataclass(frozen=True, eq=False)
class RobotScene:
    model: Any  # mujoco.MjModel
    xml: str
    joint_qpos_adr: np.ndarray  # [num_dofs] in the description's joint order
    actuator_ids: np.ndarray  # [num_dofs]
    root_qpos_adr: int
    object_qpos_adr: int | None


def robot_spec(desc: RobotDescription) -> Any:
    """MuJoCo spec of the robot from the same URDF: free root, position actuators (kp, kd, effort)."""
    import mujoco

    src = desc.config.urdf.read_text()
    src = re.sub(r"<mujoco>.*?</mujoco>", "", src, flags=re.S)
    compiler = (f'<mujoco><compiler meshdir="{desc.config.urdf.parent}" strippath="false" '
                'discardvisual="false" fusestatic="false" balanceinertia="true"/></mujoco>')
    src = re.sub(r"(<robot[^>]*>)", r"\1" + compiler, src, count=1)
    try:
        spec = mujoco.MjSpec.from_string(src)
    except ValueError as exc:
        raise RobotError(f"{desc.config.urdf}: MuJoCo cannot read it: {exc}") from exc
    root = spec.body(desc.config.root_link)
    if root is None:
        raise RobotError(f"{desc.config.urdf}: MuJoCo model has no root body {desc.config.root_link!r}")
    root.add_freejoint(name="root")
    for jnt in spec.joints:  # reflected rotor inertia: keeps stiff PD on light finger links stable
        if jnt.name in desc.joint_names:
            jnt.armature = desc.config.armature
    for i, j in enumerate(desc.joint_names):
        act = spec.add_actuator(name=j, target=j, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=float(desc.gains_kp[i]), kv=float(desc.gains_kd[i]))
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-float(desc.effort_limit[i]), float(desc.effort_limit[i])]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = [float(desc.lower[i]), float(desc.upper[i])]
    for g in spec.geoms:  # URDF geoms: visual ones (group 1) do not collide
        if g.contype != 0 or g.conaffinity != 0:
            g.contype, g.conaffinity = 2, 1  # robot touches the world (floor/object), not itself
    return spec


def build_robot_scene(desc: RobotDescription, obj: Any = None, timestep: float | None = None,
                      config: Any = None) -> RobotScene:
    """The robot with floor, light, tracking camera and (optionally) a free object, compiled
    (``config``: a ``sim.scene.SceneConfig``, default settings when None)."""
    import mujoco

    from intermimic_policy.sim import scene as hs  # noqa: I001

    cfg = config if config is not None else hs.SceneConfig()
    spec = robot_spec(desc)
    spec.modelname = f"{desc.name}_scene"
    spec.option.timestep = timestep or 1.0 / smplx_body.PHYSICS_HZ
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST  # PD damping stays stable
    spec.visual.global_.offwidth = int(cfg.offscreen_width)
    spec.visual.global_.offheight = int(cfg.offscreen_height)
    hs._add_world(spec, cfg)
    offset, quat = hs.camera_offset(cfg.camera)
    spec.body(desc.config.root_link).add_camera(
        name=hs.TRACK_CAMERA, mode=mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM, pos=list(offset * 0.8),
        quat=list(quat), fovy=cfg.camera.fovy)
    if obj is not None:
        hs._add_object(spec, obj, cfg)
    try:
        model = spec.compile()
    except ValueError as exc:
        raise RobotError(f"robot scene for {desc.name} does not compile: {exc}") from exc
    jadr = np.array([model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]
                     for j in desc.joint_names])
    aid = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, j) for j in desc.joint_names])
    root_adr = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "root")])
    obj_adr = None
    if obj is not None:
        obj_adr = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, hs.OBJECT_BODY)])
    return RobotScene(model, spec.to_xml(), jadr, aid, root_adr, obj_adr)

