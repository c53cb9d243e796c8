"""What every simulator backend is: batched reset / step / state over N worlds, in torch.

A backend owns N copies ("worlds") of one compiled scene (humanoid + floor + one object) and
hides its simulator API from everything else: observation, reward and termination terms only
read :class:`~intermimic_policy.sim.state.SimState`.

Shared pieces live here so that every MuJoCo-family backend (CPU threads, MuJoCo Warp) maps state
the same way:

* :func:`instrument_scene` adds the contact sensors the state needs to the scene's model. Contact
  sensors (``reduce="netforce"``) are evaluated inside the physics step, so contact flags and net
  forces come out as fixed-size arrays with no per-world or per-contact Python loop. Per body:
  one sensor against anything (ground included, what upstream's net-force flag senses) and one
  against the object only (a real human-object contact, which upstream cannot tell apart).
* :func:`reset_vectors` turns a :class:`ResetState` into qpos / qvel / ctrl rows (rotation vectors
  to hinge angles, child-frame angular velocity to hinge rates through the Euler-rate Jacobian).
* :func:`extract_state` turns the simulator's raw arrays into a ``SimState`` with batched torch
  ops (MuJoCo's wxyz quaternions become xyzw here, at the boundary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import mujoco
import numpy as np
import torch
from torch import Tensor

from intermimic_policy.embodiment import joint_convert, smplx_body
from intermimic_policy.embodiment.description import EmbodimentSpec, smplx_embodiment
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, NUM_DOFS, NUM_JOINTS
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.state.frames import InitialState, SimState

# Upstream's contact test: a body touches something when any component of its net contact force
# exceeds 0.1 N (spec 2.5).
CONTACT_FORCE_THRESHOLD = 0.1
_ANY_PREFIX = "intermimic_contact_any_"
_OBJ_PREFIX = "intermimic_contact_obj_"


class BackendError(IntermimicError, RuntimeError):
    """A backend that cannot be built or driven (bad scene, wrong shapes, unknown backend)."""


# A reset writes the reference's (or a PSI-stored) state: the motion library's InitialState.
# Angular velocities of the root and the object are world-frame, joint ones child-frame.
ResetState = InitialState

_TAILS: dict[str, tuple[int, ...]] = {
    "root_pos": (3,), "root_rot": (4,), "root_lin_vel": (3,), "root_ang_vel": (3,),
    "joint_rotvec": (NUM_JOINTS, 3), "joint_ang_vel": (NUM_JOINTS, 3), "object_pos": (3,),
    "object_rot": (4,), "object_lin_vel": (3,), "object_ang_vel": (3,),
}


def validate_reset_state(state: InitialState, n: int, num_joints: int = NUM_JOINTS) -> None:
    """Raise a :class:`BackendError` naming the first field with a wrong shape or a NaN."""
    for name, tail in _TAILS.items():
        value = getattr(state, name)
        if name.startswith("joint_"):
            tail = (num_joints, 3)
        want = (n, *tail)
        if tuple(value.shape) != want:
            raise BackendError(f"reset state: {name} has shape {tuple(value.shape)}, expected {want}")
        if not torch.isfinite(value).all():
            raise BackendError(f"reset state: {name} contains NaN or inf")


def cat_states(parts: Sequence[InitialState]) -> InitialState:
    return InitialState(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(InitialState)})


def _as_double(state: InitialState) -> InitialState:
    return InitialState(**{f.name: getattr(state, f.name).detach().to("cpu", torch.float64)
                           for f in fields(InitialState)})


@dataclass(frozen=True)
class BackendConfig:
    """What every backend needs besides the scene: world count, rates, threads, device."""

    num_worlds: int = 1
    physics_hz: float = smplx_body.PHYSICS_HZ
    control_hz: float = smplx_body.CONTROL_HZ
    threads: int = 0  # 0: one per CPU core, at most one per world
    contact_threshold: float = CONTACT_FORCE_THRESHOLD
    device: str = "cpu"  # where state tensors live (Warp also simulates there)

    def __post_init__(self) -> None:
        if self.num_worlds < 1:
            raise BackendError(f"num_worlds must be >= 1, got {self.num_worlds}")
        if self.threads < 0:
            raise BackendError(f"threads must be >= 0, got {self.threads}")
        substeps_for(self.physics_hz, self.control_hz)

    @property
    def substeps(self) -> int:
        return substeps_for(self.physics_hz, self.control_hz)


@runtime_checkable
class Backend(Protocol):
    """N worlds of one scene. PD runs inside the physics step; ``step`` is one control step."""

    num_worlds: int
    physics_dt: float
    control_dt: float
    substeps: int
    device: torch.device
    model_hash: str

    def reset(self, env_ids: Tensor, state: InitialState) -> None:
        """Write ``state`` into worlds ``env_ids`` and recompute their kinematics and contacts."""
        ...

    def step(self, pd_targets: Tensor) -> None:
        """Hold hinge-angle targets [N, 153] for ``substeps`` physics steps."""
        ...

    def state(self) -> SimState:
        """The current state of every world (torch, on ``device``)."""
        ...

    def failed(self) -> Tensor:
        """Bool [N]: worlds whose physics raised or went unstable during the last step/reset.

        Their state is not trustworthy; the environment resets them.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelLayout:
    """Where the humanoid, the object and the contact sensors sit in one compiled model."""

    humanoid_body_ids: np.ndarray  # [52]
    root_qpos_adr: int
    root_qvel_adr: int
    joint_qpos_adr: np.ndarray  # [153]
    joint_qvel_adr: np.ndarray  # [153]
    actuator_ids: np.ndarray  # [153]
    object_body_id: int  # -1: no object
    object_qpos_adr: int
    object_qvel_adr: int
    body_rootid: np.ndarray  # [nbody] MuJoCo body_rootid (cvel is expressed at subtree_com[rootid])
    any_contact_adr: np.ndarray  # [52] sensordata start of (found, fx, fy, fz), any partner
    object_contact_adr: np.ndarray  # [52] same, object partner only; -1 without an object
    nq: int
    nv: int
    nu: int
    qpos0: np.ndarray  # [nq]
    # the body driven (the scene's ``embodiment``; None: the SMPL-X humanoid)
    embodiment: EmbodimentSpec | None = None

    @property
    def body(self) -> EmbodimentSpec:
        return self.embodiment if self.embodiment is not None else smplx_embodiment()

    @property
    def has_object(self) -> bool:
        return self.object_body_id >= 0


def _attr(scene: Any, name: str) -> Any:
    if not hasattr(scene, name):
        raise BackendError(f"scene has no attribute {name!r}: not a sim.scene.Scene?")
    return getattr(scene, name)


def _spec_from_scene(scene: Any) -> mujoco.MjSpec:
    spec = getattr(scene, "spec", None)
    if isinstance(spec, mujoco.MjSpec):
        return spec.copy()
    xml = _attr(scene, "xml")
    assets = getattr(scene, "assets", None)
    try:
        return mujoco.MjSpec.from_string(xml, assets=assets) if assets else mujoco.MjSpec.from_string(xml)
    except ValueError as exc:
        raise BackendError(f"scene XML does not parse: {exc}") from exc


def instrument_scene(scene: Any, physics_dt: float | None = None) -> tuple[mujoco.MjModel, ModelLayout]:
    """Compile the scene with two netforce contact sensors per humanoid body; return its layout.

    The instrumented model must have the scene model's sizes (bodies, dofs, actuators): the
    sensors observe, they add no physics. ``physics_dt`` overrides the scene's timestep.
    """
    base = _attr(scene, "model")
    spec = _spec_from_scene(scene)
    raw_object_body = _attr(scene, "object_body_id")
    object_body = -1 if raw_object_body is None else int(raw_object_body)
    object_name = base.body(object_body).name if object_body >= 0 else None
    emb = getattr(scene, "embodiment", None)
    body_names = emb.body_names if emb is not None else BODY_NAMES
    for name in body_names:
        s = spec.add_sensor(name=_ANY_PREFIX + name, type=mujoco.mjtSensor.mjSENS_CONTACT,
                            objtype=mujoco.mjtObj.mjOBJ_BODY, objname=name)
        # intprm = (data fields bitmask: found | force, reduce: 3 = netforce, num slots)
        s.intprm[:3] = [1 | 2, 3, 1]
        if object_name is not None:
            s = spec.add_sensor(name=_OBJ_PREFIX + name, type=mujoco.mjtSensor.mjSENS_CONTACT,
                                objtype=mujoco.mjtObj.mjOBJ_BODY, objname=name,
                                reftype=mujoco.mjtObj.mjOBJ_BODY, refname=object_name)
            s.intprm[:3] = [1 | 2, 3, 1]
    try:
        model = spec.compile()
    except ValueError as exc:
        raise BackendError(f"scene with contact sensors does not compile: {exc}") from exc
    for attr in ("nq", "nv", "nu", "nbody", "ngeom"):
        if getattr(model, attr) != getattr(base, attr):
            raise BackendError(f"instrumented scene differs from the scene model in {attr}: "
                               f"{getattr(model, attr)} != {getattr(base, attr)}")
    if physics_dt is not None:
        model.opt.timestep = float(physics_dt)
    else:
        model.opt.timestep = float(base.opt.timestep)

    def adr(prefix: str) -> np.ndarray:
        return np.array([model.sensor_adr[model.sensor(prefix + n).id] for n in body_names], dtype=np.int64)

    layout = ModelLayout(
        humanoid_body_ids=np.asarray(_attr(scene, "humanoid_body_ids"), dtype=np.int64),
        root_qpos_adr=int(_attr(scene, "root_qpos_adr")),
        root_qvel_adr=int(_attr(scene, "root_qvel_adr")),
        joint_qpos_adr=np.asarray(_attr(scene, "joint_qpos_adr"), dtype=np.int64),
        joint_qvel_adr=np.asarray(_attr(scene, "joint_qvel_adr"), dtype=np.int64),
        actuator_ids=np.asarray(_attr(scene, "actuator_ids"), dtype=np.int64),
        object_body_id=object_body,
        object_qpos_adr=int(_attr(scene, "object_qpos_adr")) if object_body >= 0 else -1,
        object_qvel_adr=int(_attr(scene, "object_qvel_adr")) if object_body >= 0 else -1,
        body_rootid=np.asarray(model.body_rootid, dtype=np.int64).copy(),
        any_contact_adr=adr(_ANY_PREFIX),
        object_contact_adr=adr(_OBJ_PREFIX) if object_name is not None else np.full(len(body_names), -1),
        nq=model.nq, nv=model.nv, nu=model.nu,
        qpos0=np.array(model.qpos0, dtype=np.float64),
        embodiment=emb,
    )
    _check_layout(layout)
    return model, layout


def _check_layout(layout: ModelLayout) -> None:
    emb = layout.body
    shapes = {"humanoid_body_ids": (emb.num_bodies,), "joint_qpos_adr": (emb.num_dofs,),
              "joint_qvel_adr": (emb.num_dofs,), "actuator_ids": (emb.num_dofs,)}
    for key, shape in shapes.items():
        if getattr(layout, key).shape != shape:
            raise BackendError(f"scene {key} has shape {getattr(layout, key).shape}, expected {shape}")


def substeps_for(physics_hz: float, control_hz: float) -> int:
    ratio = physics_hz / control_hz
    if control_hz <= 0 or physics_hz <= 0 or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise BackendError(f"physics rate {physics_hz} Hz is not a whole multiple of control rate {control_hz} Hz")
    return int(round(ratio))


def reset_vectors(layout: ModelLayout, state: InitialState) -> tuple[Tensor, Tensor, Tensor]:
    """qpos [n, nq], qvel [n, nv] and ctrl [n, nu] (float64) that put worlds into ``state``.

    ctrl holds the reset pose, so PD starts by holding it rather than pulling toward zero.
    """
    n = state.num_worlds
    s = _as_double(state)
    qpos = torch.from_numpy(np.tile(layout.qpos0, (n, 1)))
    qvel = torch.zeros(n, layout.nv, dtype=torch.float64)
    ctrl = torch.zeros(n, layout.nu, dtype=torch.float64)
    root_rot = quat.normalize(s.root_rot)
    emb = layout.body
    angles = joint_convert.hinge_angles_from_rotvec(emb, s.joint_rotvec)
    rates = joint_convert.hinge_rates_from_angular_velocity(emb, angles, s.joint_ang_vel)
    r, v = layout.root_qpos_adr, layout.root_qvel_adr
    qpos[:, r:r + 3] = s.root_pos
    qpos[:, r + 3:r + 7] = quat.xyzw_to_wxyz(root_rot)
    qpos[:, torch.as_tensor(np.array(layout.joint_qpos_adr))] = angles
    # free joint qvel: linear velocity in the world frame, angular velocity in the body frame
    qvel[:, v:v + 3] = s.root_lin_vel
    qvel[:, v + 3:v + 6] = quat.rotate_inverse(root_rot, s.root_ang_vel)
    qvel[:, torch.as_tensor(np.array(layout.joint_qvel_adr))] = rates
    ctrl[:, torch.as_tensor(np.array(layout.actuator_ids))] = angles
    if layout.has_object:
        o, w = layout.object_qpos_adr, layout.object_qvel_adr
        obj_rot = quat.normalize(s.object_rot)
        qpos[:, o:o + 3] = s.object_pos
        qpos[:, o + 3:o + 7] = quat.xyzw_to_wxyz(obj_rot)
        qvel[:, w:w + 3] = s.object_lin_vel
        qvel[:, w + 3:w + 6] = quat.rotate_inverse(obj_rot, s.object_ang_vel)
    return qpos, qvel, ctrl


class StateIndex:
    """The layout's index arrays as torch tensors on one device (built once per backend)."""

    def __init__(self, layout: ModelLayout, device: torch.device) -> None:
        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.array(a, dtype=np.int64), device=device)

        self.layout = layout
        self.body = t(layout.humanoid_body_ids)
        self.body_root = t(layout.body_rootid[layout.humanoid_body_ids])
        self.joint_qpos = t(layout.joint_qpos_adr)
        self.joint_qvel = t(layout.joint_qvel_adr)
        self.actuators = t(layout.actuator_ids)
        found_any = t(layout.any_contact_adr)
        self.any_found = found_any
        self.any_force = found_any[:, None] + torch.arange(1, 4, device=device)
        if layout.has_object:
            self.obj_found = t(layout.object_contact_adr)
            self.obj_force = self.obj_found[:, None] + torch.arange(1, 4, device=device)
            self.obj_body = int(layout.object_body_id)
            self.obj_root = int(layout.body_rootid[layout.object_body_id])


def _origin_velocity(cvel: Tensor, pos: Tensor, com: Tensor) -> tuple[Tensor, Tensor]:
    """(linear velocity of the body origin, angular velocity), world frame, from MuJoCo's cvel.

    cvel is (angular, linear) expressed at the subtree centre of mass of the body's root
    (mj_objectVelocity on mjOBJ_XBODY with flg_local=0): v_origin = v_com + w x (p - com).
    """
    ang = cvel[..., :3]
    lin = cvel[..., 3:] + torch.cross(ang, pos - com, dim=-1)
    return lin, ang


def extract_state(
    index: StateIndex,
    *,
    xpos: Tensor,
    xquat: Tensor,
    cvel: Tensor,
    subtree_com: Tensor,
    qpos: Tensor,
    qvel: Tensor,
    sensordata: Tensor,
    contact_threshold: float = CONTACT_FORCE_THRESHOLD,
) -> SimState:
    """A ``SimState`` from raw batched MuJoCo arrays ([N, nbody, ...], [N, nq], ...), any device.

    Contact force is the net force the world exerts *on* each body (the sensor reports the force
    the body exerts on its partners, so it is negated).
    """
    f32 = torch.float32
    body_pos = xpos[:, index.body]
    body_rot = quat.wxyz_to_xyzw(xquat[:, index.body])
    lin, ang = _origin_velocity(cvel[:, index.body], body_pos, subtree_com[:, index.body_root])
    angles = qpos[:, index.joint_qpos]
    rates = qvel[:, index.joint_qvel]
    emb = index.layout.body
    joint_rotvec = joint_convert.rotvec_from_hinge_angles(emb, angles)
    joint_ang_vel = joint_convert.angular_velocity_from_hinge_rates(emb, angles, rates)
    any_force = -sensordata[:, index.any_force]
    contact = (sensordata[:, index.any_found] > 0) & (any_force.abs() > contact_threshold).any(-1)
    n = body_pos.shape[0]
    if index.layout.has_object:
        obj_force = sensordata[:, index.obj_force]
        obj_contact = (sensordata[:, index.obj_found] > 0) & (obj_force.abs() > contact_threshold).any(-1)
        ob = index.obj_body
        obj_pos = xpos[:, ob].clone()  # plain indexing is a view of live simulator memory
        obj_rot = quat.wxyz_to_xyzw(xquat[:, ob])
        obj_lin, obj_ang = _origin_velocity(cvel[:, ob].clone(), obj_pos, subtree_com[:, index.obj_root])
    else:
        obj_contact = torch.zeros(n, body_pos.shape[1], dtype=torch.bool, device=body_pos.device)
        obj_pos = torch.zeros(n, 3, dtype=body_pos.dtype, device=body_pos.device)
        obj_rot = quat.identity_like(obj_pos)
        obj_lin = torch.zeros_like(obj_pos)
        obj_ang = torch.zeros_like(obj_pos)
    return SimState(
        body_pos=body_pos.to(f32),
        body_rot=quat.normalize(body_rot).to(f32),
        body_lin_vel=lin.to(f32),
        body_ang_vel=ang.to(f32),
        joint_rotvec=joint_rotvec.to(f32),
        joint_ang_vel=joint_ang_vel.to(f32),
        body_contact=contact,
        body_object_contact=obj_contact,
        body_contact_force=any_force.to(f32),
        object_pos=obj_pos.to(f32),
        object_rot=quat.normalize(obj_rot).to(f32),
        object_lin_vel=obj_lin.to(f32),
        object_ang_vel=obj_ang.to(f32),
        object_contact=obj_contact.any(-1),
    )


def check_targets(pd_targets: Tensor, num_worlds: int, num_dofs: int = NUM_DOFS) -> None:
    if tuple(pd_targets.shape) != (num_worlds, num_dofs):
        raise BackendError(f"PD targets have shape {tuple(pd_targets.shape)}, expected ({num_worlds}, {num_dofs})")


def sorted_env_ids(env_ids: Tensor, num_worlds: int) -> tuple[np.ndarray, Tensor]:
    """(sorted world ids as int32 numpy, the permutation that sorts ``env_ids``).

    Simulators want sorted ids; callers give rows in their own order, so rows are permuted too.
    """
    ids = env_ids.detach().to("cpu", torch.long).reshape(-1)
    order = torch.argsort(ids)
    ids_sorted = ids[order].numpy()
    if ids_sorted.size:
        if ids_sorted[0] < 0 or ids_sorted[-1] >= num_worlds:
            raise BackendError(f"world ids must be in [0, {num_worlds}), got {ids.tolist()}")
        if (np.diff(ids_sorted) == 0).any():
            raise BackendError(f"world ids repeat: {ids.tolist()}")
    return ids_sorted.astype(np.int32), order
