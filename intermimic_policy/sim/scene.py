"""Scene assembly: floor + light + tracking camera + SMPL-X humanoid + one free object.

Built with ``mujoco.MjSpec`` on top of the humanoid spec (``embodiment.mjcf``), so the humanoid
stays exactly as generated and the scene only adds world things. Contact filtering (spec 2.7):
humanoid geoms are contype=2 conaffinity=1 (no self-collision, as upstream); floor and object
collision parts are contype=1 conaffinity=3, so they touch the humanoid and each other.

The object body ``object`` carries an explicit inertial (mass = density x volume of the convex
parts, from :mod:`intermimic_policy.sim.objects`), so its visual mesh (not watertight, group 1,
no contacts) never affects the dynamics. Collision parts are group 3 (hidden by default).

:class:`Scene` is the index card every backend uses: MuJoCo ids and qpos/qvel addresses in the
project's body/DOF order, so no consumer looks names up again.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from intermimic_policy.embodiment import mjcf, smplx_body
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.errors import IntermimicError
from intermimic_policy.sim.objects import ObjectAsset

OBJECT_BODY = "object"
FLOOR_GEOM = "floor"
TRACK_CAMERA = "track"
OBJECT_COLLISION_GROUP = 3
OBJECT_VISUAL_GROUP = 1


@dataclass(frozen=True)
class CameraConfig:
    """A camera that looks at the humanoid from ``distance`` m, in degrees (azimuth 0 = from +x)."""

    distance: float = 3.8
    azimuth: float = 140.0
    elevation: float = -18.0
    fovy: float = 45.0


@dataclass(frozen=True)
class SceneConfig:
    floor_friction: float = 0.9  # upstream ground friction
    object_friction: float | None = None  # None: the asset's (0.6, upstream)
    # MuJoCo takes the larger friction of a contact pair, so a lowered object or floor friction
    # does nothing against the humanoid's 0.9 unless that geom's parameters win the pair: priority 1
    # makes them govern (used by the friction perturbations, sim.perturb)
    object_friction_priority: bool = False
    floor_friction_priority: bool = False
    object_density: float | None = None  # None: the asset's; else mass and inertia are rescaled
    # Stiffer than MuJoCo's default (0.02): PhysX contacts are rigid; critically damped ~ restitution 0.05.
    object_solref: tuple[float, float] = (0.01, 1.0)
    object_solimp: tuple[float, float, float, float, float] = (0.9, 0.95, 0.001, 0.5, 2.0)
    object_margin: float = 0.002  # upstream rest_offset 0.002
    object_damping: float = 0.01  # upstream linear/angular damping
    object_start: tuple[float, float] = (0.8, 0.0)  # x, y of the object at qpos0 (resting on the floor)
    timestep: float | None = None  # None: the humanoid's (1/240 s)
    offscreen_width: int = 1280
    offscreen_height: int = 960
    camera: CameraConfig = field(default_factory=CameraConfig)
    floor_rgba: tuple[float, float, float] = (0.85, 0.87, 0.9)
    object_rgba: tuple[float, float, float, float] = (0.35, 0.55, 0.85, 1.0)


@dataclass(frozen=True, eq=False)
class Scene:
    model: mujoco.MjModel
    xml: str
    object_name: str | None
    object: ObjectAsset | None
    humanoid_body_ids: np.ndarray  # [52] MuJoCo body id per BODY_NAMES entry
    root_qpos_adr: int
    root_qvel_adr: int
    joint_qpos_adr: np.ndarray  # [153] DOF order
    joint_qvel_adr: np.ndarray  # [153]
    actuator_ids: np.ndarray  # [153]
    object_body_id: int | None
    object_qpos_adr: int | None
    object_qvel_adr: int | None
    geom_humanoid_body: np.ndarray  # [ngeom] humanoid body index 0..51, else -1
    object_geom_ids: np.ndarray  # collision parts of the object
    floor_geom_id: int
    content_hash: str  # sha256 of the xml
    # the body simulated (embodiment.description.EmbodimentSpec); None: the SMPL-X humanoid
    embodiment: Any = None


def build_scene(
    skeleton: Skeleton | None = None,
    obj: ObjectAsset | None = None,
    config: SceneConfig | None = None,
) -> Scene:
    """Compile the humanoid (``skeleton``, default skeleton if None) with a floor and ``obj``."""
    cfg = config or SceneConfig()
    spec = mjcf.humanoid_spec(skeleton)
    spec.modelname = f"intermimic_scene_{obj.name}" if obj is not None else "intermimic_scene"
    if cfg.timestep is not None:
        if not cfg.timestep > 0:
            raise IntermimicError(f"scene timestep must be positive, got {cfg.timestep}")
        spec.option.timestep = cfg.timestep
    spec.visual.global_.offwidth = int(cfg.offscreen_width)
    spec.visual.global_.offheight = int(cfg.offscreen_height)
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.6, 0.6, 0.6]
    _add_world(spec, cfg)
    _add_track_camera(spec, cfg.camera)
    if obj is not None:
        _add_object(spec, obj, cfg)
    try:
        model = spec.compile()
    except ValueError as exc:
        what = f"object {obj.name!r} ({obj.source})" if obj is not None else "the humanoid"
        raise IntermimicError(f"scene with {what} does not compile: {exc}") from exc
    xml = spec.to_xml()
    return _index(model, xml, obj)


def _add_world(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    spec.add_texture(name="skybox", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                     builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT, rgb1=[0.55, 0.7, 0.85],
                     rgb2=[0.95, 0.95, 0.97], width=256, height=256)
    grid = spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D,
                            builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                            rgb1=list(cfg.floor_rgba), rgb2=[c * 0.8 for c in cfg.floor_rgba],
                            width=512, height=512, mark=mujoco.mjtMark.mjMARK_EDGE,
                            markrgb=[0.6, 0.6, 0.65])
    mat = spec.add_material(name="grid", texrepeat=[1.0, 1.0], texuniform=True, reflectance=0.0)
    roles = [""] * mujoco.mjtTextureRole.mjNTEXROLE.value
    roles[mujoco.mjtTextureRole.mjTEXROLE_RGB.value] = grid.name
    mat.textures = roles
    spec.worldbody.add_geom(
        name=FLOOR_GEOM, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0.0, 0.0, 0.05], material="grid",
        contype=mjcf.WORLD_CONTYPE, conaffinity=mjcf.WORLD_CONAFFINITY, condim=3,
        friction=[cfg.floor_friction, 0.005, 0.0001], rgba=[1, 1, 1, 1],
        priority=1 if cfg.floor_friction_priority else 0,
    )
    spec.worldbody.add_light(name="sun", pos=[0.0, 0.0, 6.0], dir=[0.2, 0.3, -1.0],
                             type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, castshadow=True,
                             diffuse=[0.7, 0.7, 0.7], specular=[0.1, 0.1, 0.1])


def camera_offset(camera: CameraConfig) -> tuple[np.ndarray, np.ndarray]:
    """(position offset from the target [3], orientation wxyz [4]) of a camera looking at the target."""
    az, el = math.radians(camera.azimuth), math.radians(camera.elevation)
    back = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), -math.sin(el)])
    z_cam = back / np.linalg.norm(back)  # MuJoCo cameras look along -z
    x_cam = np.cross([0.0, 0.0, 1.0], z_cam)
    x_cam /= np.linalg.norm(x_cam)
    y_cam = np.cross(z_cam, x_cam)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x_cam, y_cam, z_cam], axis=1).reshape(-1))
    return camera.distance * z_cam, quat


def _add_track_camera(spec: mujoco.MjSpec, camera: CameraConfig) -> None:
    """A camera on the Pelvis in ``trackcom`` mode: it follows the humanoid's centre of mass at a
    fixed world offset and orientation, so videos stay framed while the body walks."""
    pelvis = spec.body(smplx_body.BODY_NAMES[0])
    offset, quat = camera_offset(camera)
    pelvis.add_camera(name=TRACK_CAMERA, mode=mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM,
                      pos=list(offset), quat=list(quat), fovy=camera.fovy)


def _add_object(spec: mujoco.MjSpec, obj: ObjectAsset, cfg: SceneConfig) -> None:
    scale = 1.0 if cfg.object_density is None else cfg.object_density / obj.density
    if not scale > 0:
        raise IntermimicError(f"object density must be positive, got {cfg.object_density}")
    friction = obj.friction if cfg.object_friction is None else cfg.object_friction
    bottom = min(float(v[:, 2].min()) for v, _ in obj.parts)
    body = spec.worldbody.add_body(name=OBJECT_BODY, pos=[*cfg.object_start, -bottom + 1e-3])
    joint = body.add_freejoint(name=OBJECT_BODY)
    joint.damping = [cfg.object_damping, 0.0, 0.0]  # polynomial coefficients; linear term only
    # Explicit inertial in principal axes (eigen-decomposition of the inertia about the COM).
    moments, axes = np.linalg.eigh(obj.inertia * scale)
    if np.linalg.det(axes) < 0:
        axes[:, 0] = -axes[:, 0]
    iquat = np.zeros(4)
    mujoco.mju_mat2Quat(iquat, np.ascontiguousarray(axes).reshape(-1))
    body.explicitinertial = True
    body.mass = obj.mass * scale
    body.ipos = list(obj.com)
    body.iquat = list(iquat)
    body.inertia = list(np.maximum(moments, 1e-9))
    for i, (v, f) in enumerate(obj.parts):
        spec.add_mesh(name=f"object_part{i}", uservert=v.reshape(-1).tolist(), userface=f.reshape(-1).tolist())
        body.add_geom(
            name=f"object_part{i}", type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"object_part{i}",
            contype=mjcf.WORLD_CONTYPE, conaffinity=mjcf.WORLD_CONAFFINITY, condim=3,
            friction=[friction, 0.01, 0.01], solref=list(cfg.object_solref), solimp=list(cfg.object_solimp),
            margin=cfg.object_margin, group=OBJECT_COLLISION_GROUP, rgba=[0.9, 0.4, 0.3, 0.5],
            priority=1 if cfg.object_friction_priority else 0,
        )
    spec.add_mesh(name="object_visual", uservert=obj.vertices.reshape(-1).tolist(),
                  userface=obj.faces.reshape(-1).tolist(), inertia=mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL)
    body.add_geom(name="object_visual", type=mujoco.mjtGeom.mjGEOM_MESH, meshname="object_visual",
                  contype=0, conaffinity=0, group=OBJECT_VISUAL_GROUP, rgba=list(cfg.object_rgba))


def _index(model: mujoco.MjModel, xml: str, obj: ObjectAsset | None) -> Scene:
    def id_of(kind: mujoco.mjtObj, name: str) -> int:
        i = mujoco.mj_name2id(model, kind, name)
        if i < 0:
            raise IntermimicError(f"scene model lacks {kind.name} {name!r} (humanoid MJCF out of date?)")
        return int(i)

    body_ids = np.array([id_of(mujoco.mjtObj.mjOBJ_BODY, n) for n in smplx_body.BODY_NAMES], dtype=np.int64)
    root_joint = id_of(mujoco.mjtObj.mjOBJ_JOINT, smplx_body.BODY_NAMES[0])
    joints = np.array([id_of(mujoco.mjtObj.mjOBJ_JOINT, n) for n in smplx_body.DOF_NAMES], dtype=np.int64)
    actuators = np.array([id_of(mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in smplx_body.DOF_NAMES], dtype=np.int64)
    body_to_index = np.full(model.nbody, -1, dtype=np.int64)
    body_to_index[body_ids] = np.arange(len(body_ids))
    geom_humanoid_body = body_to_index[model.geom_bodyid]
    object_body = object_qpos = object_qvel = None
    object_geoms = np.zeros(0, dtype=np.int64)
    if obj is not None:
        object_body = id_of(mujoco.mjtObj.mjOBJ_BODY, OBJECT_BODY)
        oj = id_of(mujoco.mjtObj.mjOBJ_JOINT, OBJECT_BODY)
        object_qpos, object_qvel = int(model.jnt_qposadr[oj]), int(model.jnt_dofadr[oj])
        object_geoms = np.flatnonzero((model.geom_bodyid == object_body) & (model.geom_contype != 0)).astype(np.int64)
    for a in (body_ids, joints, actuators, geom_humanoid_body, object_geoms):
        a.setflags(write=False)
    return Scene(
        model=model,
        xml=xml,
        object_name=obj.name if obj is not None else None,
        object=obj,
        humanoid_body_ids=body_ids,
        root_qpos_adr=int(model.jnt_qposadr[root_joint]),
        root_qvel_adr=int(model.jnt_dofadr[root_joint]),
        joint_qpos_adr=model.jnt_qposadr[joints].astype(np.int64),
        joint_qvel_adr=model.jnt_dofadr[joints].astype(np.int64),
        actuator_ids=actuators,
        object_body_id=object_body,
        object_qpos_adr=object_qpos,
        object_qvel_adr=object_qvel,
        geom_humanoid_body=geom_humanoid_body,
        object_geom_ids=object_geoms,
        floor_geom_id=id_of(mujoco.mjtObj.mjOBJ_GEOM, FLOOR_GEOM),
        content_hash=hashlib.sha256(xml.encode()).hexdigest(),
    )
