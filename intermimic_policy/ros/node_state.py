"""The simulated-state tensors (``SimState``) the observation needs, from robot-state messages.

Why here and not in the bridge: a real robot publishes the same standard messages (hinge angles
and rates in a JointState, the root in an Odometry, the object pose from a tracker), so the policy
node must rebuild everything the training environment reads from a simulator: body poses and
velocities by MuJoCo's kinematics of the same generated humanoid (the skeleton the policy's
contract names), the object velocity by differencing its poses.

Each ``parse_*`` validates one message and raises :class:`MessageRejected` naming the problem
(wrong count, unknown or duplicate names, NaN, a zero quaternion...); the node counts and drops
such messages and keeps running.

Frames: positions and orientations are in the world frame (z-up, xyzw inside the project). An
Odometry twist is read in ``child_frame_id`` as ROS specifies: the body frame, unless
``child_frame_id`` is empty or equal to ``header.frame_id`` (then the world frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES, NUM_BODIES, NUM_DOFS
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.geometry_msgs import Pose, PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.sim.state import SimState

# |q| must be within this of 1 to count as a rotation (then it is renormalised)
QUAT_NORM_TOL = 1e-2


class MessageRejected(IntermimicError, ValueError):
    """A message the node must not use; the text names the field and the problem."""


class NonFiniteInput(MessageRejected):
    """A well-formed message carrying NaN or inf: the source is faulty, the node must hold."""


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise NonFiniteInput(f"{what} contains NaN or inf")
    return values


def unit_quaternion(xyzw: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    """A validated, renormalised xyzw quaternion (float64); zero or far-from-unit is rejected."""
    q = _finite(np.asarray(xyzw, dtype=np.float64), what)
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOL:
        raise MessageRejected(f"{what} is not a unit quaternion (|q| = {norm:.4g})")
    return q / norm


def pose_arrays(pose: Pose, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(position [3], xyzw [4]) of a geometry_msgs/Pose, validated."""
    p = pose.position
    o = pose.orientation
    pos = _finite(np.array([p.x, p.y, p.z], dtype=np.float64), f"{what}.position")
    return pos, unit_quaternion([o.x, o.y, o.z, o.w], f"{what}.orientation")


# -- parsed samples --------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointSample:
    """Hinge angles and rates [153] (float64) in ``smplx_body.DOF_NAMES`` order."""

    stamp_ns: int
    angles: np.ndarray
    rates: np.ndarray


@dataclass(frozen=True)
class RootSample:
    """Root (Pelvis) pose and world-frame velocities."""

    stamp_ns: int
    pos: np.ndarray
    rot: np.ndarray  # xyzw
    lin_vel: np.ndarray
    ang_vel: np.ndarray


@dataclass(frozen=True)
class PoseSample:
    stamp_ns: int
    pos: np.ndarray
    rot: np.ndarray  # xyzw


@dataclass(frozen=True)
class ContactSample:
    """Per-body contact flags and forces [52] in ``BODY_NAMES`` order."""

    stamp_ns: int
    in_contact: np.ndarray  # bool
    object_contact: np.ndarray  # bool
    force: np.ndarray  # [52, 3]


class NameOrder:
    """Maps a message's name list onto a fixed order; caches the permutation of the last list."""

    def __init__(self, expected: Sequence[str], what: str) -> None:
        self.expected = tuple(expected)
        self.index = {n: i for i, n in enumerate(self.expected)}
        self.what = what
        self._last: tuple[str, ...] | None = None
        self._perm: np.ndarray | None = None

    def permutation(self, names: Sequence[str]) -> np.ndarray | None:
        """``perm`` with ``values[perm]`` in the expected order (None when already in order)."""
        key = tuple(names)
        if key == self._last:
            return self._perm
        n = len(self.expected)
        if len(key) != n:
            raise MessageRejected(f"{self.what} has {len(key)} names, expected {n}")
        unknown = [x for x in key if x not in self.index]
        if unknown:
            raise MessageRejected(f"{self.what} has unknown name(s) {unknown[:3]}"
                                  f"{' ...' if len(unknown) > 3 else ''}")
        if len(set(key)) != n:
            raise MessageRejected(f"{self.what} has duplicate names")
        perm = None if key == self.expected else np.argsort([self.index[x] for x in key])
        self._last, self._perm = key, perm
        return perm


def _ordered(values: Sequence[float], perm: np.ndarray | None, count: int, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (count,):
        raise MessageRejected(f"{what} has {a.size} values, expected {count}")
    _finite(a, what)
    return a if perm is None else a[perm]


def parse_joint_state(msg: JointState, order: NameOrder) -> JointSample:
    """Hinge angles and rates; needs all 153 DOF names (any order) with positions and velocities."""
    perm = order.permutation(msg.name)
    angles = _ordered(msg.position, perm, NUM_DOFS, "JointState.position")
    rates = _ordered(msg.velocity, perm, NUM_DOFS, "JointState.velocity")
    return JointSample(ns_from_time(msg.header.stamp), angles, rates)


def joint_order() -> NameOrder:
    return NameOrder(DOF_NAMES, "JointState.name")


def body_order() -> NameOrder:
    return NameOrder(BODY_NAMES, "ContactState.body_names")


def parse_odometry(msg: Odometry) -> RootSample:
    pos, rot = pose_arrays(msg.pose.pose, "Odometry.pose.pose")
    t = msg.twist.twist
    lin = _finite(np.array([t.linear.x, t.linear.y, t.linear.z], dtype=np.float64), "Odometry.twist.linear")
    ang = _finite(np.array([t.angular.x, t.angular.y, t.angular.z], dtype=np.float64), "Odometry.twist.angular")
    if msg.child_frame_id and msg.child_frame_id != msg.header.frame_id:
        r = quat.to_matrix(torch.from_numpy(rot)).numpy()
        lin, ang = r @ lin, r @ ang
    return RootSample(ns_from_time(msg.header.stamp), pos, rot, lin, ang)


def parse_pose_stamped(msg: PoseStamped) -> PoseSample:
    pos, rot = pose_arrays(msg.pose, "PoseStamped.pose")
    return PoseSample(ns_from_time(msg.header.stamp), pos, rot)


def parse_contacts(msg: ContactState, order: NameOrder) -> ContactSample:
    perm = order.permutation(msg.body_names)
    n = NUM_BODIES
    for name in ("in_contact", "object_contact", "force"):
        got = len(getattr(msg, name))
        if got != n:
            raise MessageRejected(f"ContactState.{name} has {got} values, expected {n}")
    touch = np.asarray(msg.in_contact, dtype=bool)
    obj = np.asarray(msg.object_contact, dtype=bool)
    force = _finite(np.array([[f.x, f.y, f.z] for f in msg.force], dtype=np.float64).reshape(n, 3),
                    "ContactState.force")
    if perm is not None:
        touch, obj, force = touch[perm], obj[perm], force[perm]
    return ContactSample(ns_from_time(msg.header.stamp), touch, obj, force)


class ObjectVelocity:
    """Object velocity by backward differences of consecutive poses (their stamps give dt).

    The first pose, a repeated stamp or a stamp that goes back gives zero velocity (a restart).
    """

    def __init__(self) -> None:
        self._prev: PoseSample | None = None
        self.lin_vel = np.zeros(3)
        self.ang_vel = np.zeros(3)

    def update(self, sample: PoseSample) -> None:
        prev, self._prev = self._prev, sample
        if prev is None or sample.stamp_ns <= prev.stamp_ns:
            if prev is None or sample.stamp_ns < prev.stamp_ns:
                self.lin_vel, self.ang_vel = np.zeros(3), np.zeros(3)
            return
        dt = (sample.stamp_ns - prev.stamp_ns) * 1e-9
        self.lin_vel = (sample.pos - prev.pos) / dt
        rel = quat.multiply(torch.from_numpy(sample.rot), quat.conjugate(torch.from_numpy(prev.rot)))
        self.ang_vel = quat.to_rotvec(rel).numpy() / dt


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


@dataclass(frozen=True)
class RobotInputs:
    """The newest valid sample of every state input (what one observation is built from)."""

    joints: JointSample
    root: RootSample
    object_pose: PoseSample
    object_lin_vel: np.ndarray
    object_ang_vel: np.ndarray
    contacts: ContactSample | None  # None: contacts not provided (all false, zero force)


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
