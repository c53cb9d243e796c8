"""The simulated-state tensors (``SimState``) the observation needs, from robot-state messages.

Why here and not in the bridge: a real robot publishes the same standard messages (hinge angles
and rates in a JointState, the root in an Odometry, the object pose from a tracker), so the policy
node must rebuild everything the training environment reads from a simulator: body poses and
velocities by MuJoCo's kinematics of the same generated humanoid (the skeleton the policy's
contract names), the object velocity by differencing its poses.

Nothing here imports torch or MuJoCo (the deployment install has neither): kinematics and the
observation are :mod:`intermimic_policy.observation.numpy_obs`'s; the training-side ``SimState``
of the same messages is built by :mod:`.torch_state` (tests compare the two).

Each ``parse_*`` validates one message and raises :class:`MessageRejected` naming the problem
(wrong count, unknown or duplicate names, NaN, a zero quaternion...); the node counts and drops
such messages and keeps running.

Frames: positions and orientations are in the world frame (z-up, xyzw inside the project). An
Odometry twist is read in ``child_frame_id`` as ROS specifies: the body frame, unless
``child_frame_id`` is empty or equal to ``header.frame_id`` (then the world frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.numpy_obs import (
    quat_matrix_one,
)
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.geometry_msgs import Pose, PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState

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
    """Hinge angles and rates; needs all of ``order``'s DOF names (any order; the SMPL-X humanoid's
    153 by default) with positions and velocities."""
    perm = order.permutation(msg.name)
    n = len(order.expected)
    angles = _ordered(msg.position, perm, n, "JointState.position")
    rates = _ordered(msg.velocity, perm, n, "JointState.velocity")
    return JointSample(ns_from_time(msg.header.stamp), angles, rates)


def joint_order(names: Sequence[str] = DOF_NAMES) -> NameOrder:
    """The joint order of ``JointState`` (the embodiment's DOFs; default the SMPL-X humanoid's)."""
    return NameOrder(names, "JointState.name")


def body_order(names: Sequence[str] = BODY_NAMES) -> NameOrder:
    """The body order of ``ContactState`` (the embodiment's bodies; default the SMPL-X humanoid's)."""
    return NameOrder(names, "ContactState.body_names")


def parse_odometry(msg: Odometry) -> RootSample:
    pos, rot = pose_arrays(msg.pose.pose, "Odometry.pose.pose")
    t = msg.twist.twist
    lin = _finite(np.array([t.linear.x, t.linear.y, t.linear.z], dtype=np.float64), "Odometry.twist.linear")
    ang = _finite(np.array([t.angular.x, t.angular.y, t.angular.z], dtype=np.float64), "Odometry.twist.angular")
    if msg.child_frame_id and msg.child_frame_id != msg.header.frame_id:
        r = quat_matrix_one(rot)
        lin, ang = r @ lin, r @ ang
    return RootSample(ns_from_time(msg.header.stamp), pos, rot, lin, ang)


def parse_pose_stamped(msg: PoseStamped) -> PoseSample:
    pos, rot = pose_arrays(msg.pose, "PoseStamped.pose")
    return PoseSample(ns_from_time(msg.header.stamp), pos, rot)


def parse_contacts(msg: ContactState, order: NameOrder) -> ContactSample:
    perm = order.permutation(msg.body_names)
    n = len(order.expected)
    for name in ("in_contact", "object_contact", "force"):
        got = len(getattr(msg, name))
        if got != n:
            raise MessageRejected(f"ContactState.{name} has {got} values, expected {n}")
    touch = np.asarray(msg.in_contact, dtype=bool)
    obj = np.asarray(msg.object_contact, dtype=bool)
    raw = msg.force
    if isinstance(raw, np.ndarray):  # [n, 3] from a local caller
        force = np.array(raw, dtype=np.float64).reshape(n, 3)
    else:
        force = np.array([[f.x, f.y, f.z] for f in raw], dtype=np.float64).reshape(n, 3)
    force = _finite(force, "ContactState.force")
    if perm is not None:
        touch, obj, force = touch[perm], obj[perm], force[perm]
    return ContactSample(ns_from_time(msg.header.stamp), touch, obj, force)


def _relative_rotvec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``quat_to_rotvec(quat_multiply(a, quat_conjugate(b)))`` of ONE pair of xyzw quaternions, in
    scalar arithmetic (the batched helpers cost ~10x more for a single quaternion)."""
    ax, ay, az, aw = a.tolist()
    bx, by, bz, bw = b.tolist()
    bx, by, bz = -bx, -by, -bz
    x = aw * bx + ax * bw + ay * bz - az * by
    y = aw * by - ax * bz + ay * bw + az * bx
    z = aw * bz + ax * by - ay * bx + az * bw
    w = aw * bw - ax * bx - ay * by - az * bz
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    scale = 2.0 / max(w, 1e-9) if s < 1e-6 else 2.0 * math.atan2(s, w) / max(s, 1e-12)
    return np.array([x * scale, y * scale, z * scale])


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
        self.ang_vel = _relative_rotvec(sample.rot, prev.rot) / dt


@dataclass(frozen=True)
class RobotInputs:
    """The newest valid sample of every state input (what one observation is built from)."""

    joints: JointSample
    root: RootSample
    object_pose: PoseSample
    object_lin_vel: np.ndarray
    object_ang_vel: np.ndarray
    contacts: ContactSample | None  # None: contacts not provided (all false, zero force)


class StampGuard:
    """Per-input stamp order (see ``policy_core``): ``check(name, stamp)`` says "ok", "duplicate"
    (the input's last stamp again), "out_of_order" (older than its last), "stale" (older than the
    newest state stamp by more than ``stale_s``) or "jump": the clock restarted, either back by
    more than ``jump_s`` at once or ``JUMP_CONFIRM`` messages in a row older than the history (an
    isolated old message is out of order; a restarted clock keeps going from its new time). On a
    jump every input's history is forgotten and the stamp accepted."""

    JUMP_CONFIRM = 3

    def __init__(self, names: Sequence[str], stale_s: float, jump_s: float) -> None:
        self.last: dict[str, int | None] = {n: None for n in names}
        self.behind: dict[str, int] = {n: 0 for n in names}
        self.newest: int | None = None
        self.stale_ns = int(stale_s * 1e9) if stale_s > 0 else None
        self.jump_ns = int(jump_s * 1e9)

    def _jump(self, name: str, stamp_ns: int) -> str:
        self.last = {n: None for n in self.last}
        self.behind = {n: 0 for n in self.behind}
        self.last[name] = self.newest = stamp_ns
        return "jump"

    def check(self, name: str, stamp_ns: int) -> str:
        last, newest = self.last[name], self.newest
        if newest is not None and stamp_ns < newest - self.jump_ns:
            return self._jump(name, stamp_ns)
        verdict = "ok"
        if last is not None and stamp_ns == last:
            return "duplicate"
        if last is not None and stamp_ns < last:
            verdict = "out_of_order"
        elif newest is not None and self.stale_ns is not None and stamp_ns < newest - self.stale_ns:
            verdict = "stale"
        if verdict != "ok":
            self.behind[name] += 1
            return self._jump(name, stamp_ns) if self.behind[name] >= self.JUMP_CONFIRM else verdict
        self.behind[name] = 0
        self.last[name] = stamp_ns
        self.newest = stamp_ns if newest is None else max(newest, stamp_ns)
        return "ok"
