"""Conversions between the project's data (``HOIMotion``, ``SimState``) and ROS messages.

Why one module: the motion streamer, the simulation bridge, the launcher and the tests must put
the same numbers on the wire the same way, and the policy node (``ros.node_state``,
``ros.reference_buffer``) must read back exactly what training used. Conventions are those of
the message definitions: world frame z-up, metres, radians, xyzw quaternions in float arrays,
joint order ``smplx_body.DOF_NAMES`` (153 hinge DOFs) and body order ``smplx_body.BODY_NAMES``.

* ``HOIMotion`` frame <-> ``HOIFrame`` (:func:`hoi_frame`, :class:`MotionFrames`,
  :func:`motion_from_frames`), consecutive frames -> ``HOIWindow`` (:func:`hoi_window`).
* Simulated state -> ``JointState`` (hinge angles and rates), ``Odometry`` (root pose, twist in
  the root frame as ROS specifies), ``PoseStamped`` (object) and ``ContactState``
  (:func:`state_messages`).
* ``PDTargets`` -> validated hinge-angle targets (:func:`parse_pd_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from intermimic_policy.embodiment.description import EmbodimentSpec
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES, NUM_BODIES, NUM_DOFS
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.robot_motion import RobotMotion
from intermimic_policy.motion.validate import validate_motion
from intermimic_policy.observation.numpy_obs import quat_matrix_one
from intermimic_policy.ros.msgs import ns_from_time, time_from_ns
from intermimic_policy.ros.msgs.geometry_msgs import (
    Point,
    Pose,
    PoseStamped,
    PoseWithCovariance,
    Quaternion,
    Twist,
    TwistWithCovariance,
    Vector3,
)
from intermimic_policy.ros.msgs.intermimic_msgs import (
    ContactState,
    HOIFrame,
    HOIWindow,
    PDTargets,
    RobotHOIFrame,
    RobotHOIWindow,
)
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_state import MessageRejected, NameOrder, NonFiniteInput
from intermimic_policy.sim.state import SimState

WORLD_FRAME = "world"
BASE_FRAME = "pelvis"


def header(stamp_ns: int, frame_id: str = WORLD_FRAME) -> Header:
    return Header(stamp=time_from_ns(stamp_ns), frame_id=frame_id)


def pose(position: Sequence[float] | np.ndarray, xyzw: Sequence[float] | np.ndarray) -> Pose:
    p = [float(v) for v in position]
    q = [float(v) for v in xyzw]
    return Pose(position=Point(x=p[0], y=p[1], z=p[2]), orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))


def _vector(v: Sequence[float] | np.ndarray) -> Vector3:
    x = [float(a) for a in v]
    return Vector3(x=x[0], y=x[1], z=x[2])


# -- reference frames ----------------------------------------------------------------------------
class MotionFrames:
    """A clip's frames as message-ready lists, built once (a streamer sends each many times)."""

    def __init__(self, motion: HOIMotion, frame_id: str = WORLD_FRAME) -> None:
        self.motion = motion
        self.frame_id = frame_id
        self.num_frames = motion.num_frames
        self.fps = float(motion.fps)
        f32 = np.float32
        self._rotvec = np.asarray(motion.joint_rotvec, f32).reshape(self.num_frames, -1).tolist()
        self._body_pos = np.asarray(motion.body_pos, f32).reshape(self.num_frames, -1).tolist()
        self._body_rot = np.asarray(motion.body_rot, f32).reshape(self.num_frames, -1).tolist()
        self._labels = np.asarray(motion.body_contact, np.int64).tolist()
        self._root = [pose(p, q) for p, q in zip(np.asarray(motion.root_pos, np.float64),
                                                   np.asarray(motion.root_rot, np.float64))]
        self._object = [pose(p, q) for p, q in zip(np.asarray(motion.object_pos, np.float64),
                                                     np.asarray(motion.object_rot, np.float64))]
        self._contact = [bool(c) for c in np.asarray(motion.object_contact)]

    def frame(self, index: int, stamp_ns: int = 0) -> HOIFrame:
        """Clip frame ``index`` (0-based) as an ``HOIFrame`` with ``frame_index = index``."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside the clip's 0..{self.num_frames - 1}")
        return HOIFrame(
            header=header(stamp_ns, self.frame_id), frame_index=index, fps=self.fps,
            root_pose=self._root[index], joint_rotvec=list(self._rotvec[index]),
            body_positions=list(self._body_pos[index]), body_rotations=list(self._body_rot[index]),
            object_pose=self._object[index], object_name=self.motion.object_name,
            body_contact_labels=list(self._labels[index]), object_contact=self._contact[index],
        )


class RobotMotionFrames:
    """A robot clip's frames as ``RobotHOIFrame`` messages (body poses by the robot's own FK,
    ``sim.robot_reference.robot_clip``), built once."""

    def __init__(self, motion: RobotMotion, frame_id: str = WORLD_FRAME) -> None:
        from intermimic_policy.embodiment.description import embodiment_for
        from intermimic_policy.embodiment.robot import load_robot
        from intermimic_policy.sim.robot_reference import robot_clip

        clip = robot_clip(motion, load_robot(motion.robot), embodiment_for(motion.robot))
        self.motion = motion
        self.frame_id = frame_id
        self.num_frames = motion.num_frames
        self.fps = float(motion.fps)
        n = self.num_frames
        self._q = np.asarray(motion.joint_pos, np.float64).tolist()
        self._body_pos = np.asarray(clip.body_pos, np.float32).reshape(n, -1).tolist()
        self._body_rot = np.asarray(clip.body_rot, np.float32).reshape(n, -1).tolist()
        self._labels = np.asarray(clip.body_contact, np.int64).tolist()
        self._root = [pose(p, q) for p, q in zip(np.asarray(motion.root_pos, np.float64),
                                                   np.asarray(motion.root_rot, np.float64))]
        self._object = [pose(p, q) for p, q in zip(np.asarray(motion.object_pos, np.float64),
                                                     np.asarray(motion.object_rot, np.float64))]
        self._contact = [bool(c) for c in np.asarray(clip.object_contact)]

    def frame(self, index: int, stamp_ns: int = 0) -> RobotHOIFrame:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside the clip's 0..{self.num_frames - 1}")
        return RobotHOIFrame(
            header=header(stamp_ns, self.frame_id), robot=self.motion.robot, frame_index=index, fps=self.fps,
            root_pose=self._root[index], joint_positions=list(self._q[index]),
            body_positions=list(self._body_pos[index]), body_rotations=list(self._body_rot[index]),
            object_pose=self._object[index], object_name=self.motion.object_name,
            body_contact_labels=list(self._labels[index]), object_contact=self._contact[index],
        )


def hoi_frame(motion: HOIMotion, index: int, stamp_ns: int = 0, frame_id: str = WORLD_FRAME) -> HOIFrame:
    """One frame of ``motion`` as an ``HOIFrame`` (for many frames use :class:`MotionFrames`)."""
    if not 0 <= index < motion.num_frames:
        raise IndexError(f"frame {index} outside the clip's 0..{motion.num_frames - 1}")
    msg = MotionFrames(motion.slice(index, index + 1), frame_id).frame(0, stamp_ns)
    msg.frame_index = index
    return msg


def hoi_window(frames: Sequence[HOIFrame], stamp_ns: int = 0, frame_id: str = WORLD_FRAME) -> HOIWindow:
    """A window whose first frame is the producer's current frame (``frames`` consecutive; a
    repeat of the last frame at the end marks the clip end, as ``HOIWindow`` documents).
    ``RobotHOIFrame`` frames make a ``RobotHOIWindow``."""
    if not frames:
        raise ValueError("a window needs at least one frame")
    if isinstance(frames[0], RobotHOIFrame):
        return RobotHOIWindow(header=header(stamp_ns, frame_id), start_frame=int(frames[0].frame_index),  # type: ignore[return-value]
                              frames=list(frames))  # type: ignore[arg-type]
    return HOIWindow(header=header(stamp_ns, frame_id), start_frame=int(frames[0].frame_index),
                     frames=list(frames))


def motion_from_frames(frames: Sequence[HOIFrame], name: str = "", source: str = "ros") -> HOIMotion:
    """The clip made of consecutive ``HOIFrame`` messages (the inverse of :class:`MotionFrames`);
    validated like every clip the project loads."""
    if not frames:
        raise MessageRejected("no frames to make a clip of")
    fps = {float(f.fps) for f in frames}
    objects = {f.object_name for f in frames}
    if len(fps) != 1 or len(objects) != 1:
        raise MessageRejected(f"frames mix rates {sorted(fps)} or objects {sorted(objects)}")
    n = len(frames)

    def arr(values: list[Sequence[float]], shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(n, *shape)

    def pose_arrays(p: list[Pose]) -> tuple[np.ndarray, np.ndarray]:
        pos = np.array([[q.position.x, q.position.y, q.position.z] for q in p], dtype=np.float32)
        rot = np.array([[q.orientation.x, q.orientation.y, q.orientation.z, q.orientation.w] for q in p],
                       dtype=np.float32)
        return pos, rot

    root_pos, root_rot = pose_arrays([f.root_pose for f in frames])
    obj_pos, obj_rot = pose_arrays([f.object_pose for f in frames])
    motion = HOIMotion(
        fps=fps.pop(), root_pos=root_pos, root_rot=root_rot,
        joint_rotvec=arr([f.joint_rotvec for f in frames], (NUM_DOFS // 3, 3)),
        body_pos=arr([f.body_positions for f in frames], (NUM_BODIES, 3)),
        body_rot=arr([f.body_rotations for f in frames], (NUM_BODIES, 4)),
        object_pos=obj_pos, object_rot=obj_rot, object_name=objects.pop(),
        body_contact=np.asarray([f.body_contact_labels for f in frames], dtype=np.int8).reshape(n, NUM_BODIES),
        object_contact=np.asarray([bool(f.object_contact) for f in frames], dtype=bool),
        name=name, source=source,
    )
    return validate_motion(motion, name or "frames from ROS", min_frames=1)


# -- simulated state -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StateMessages:
    """Everything the bridge publishes for one tick, all with the same stamp."""

    joint_state: JointState
    odom: Odometry
    object_pose: PoseStamped
    contacts: ContactState


def joint_state_message(angles: np.ndarray, rates: np.ndarray, stamp_ns: int,
                        frame_id: str = BASE_FRAME, names: Sequence[str] = DOF_NAMES) -> JointState:
    """Hinge angles and rates in ``names`` order (the embodiment's DOFs, default the SMPL-X
    humanoid's 153; effort left empty: not measured)."""
    a = np.asarray(angles, dtype=np.float64).reshape(-1)
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    n = len(names)
    if a.shape != (n,) or r.shape != (n,):
        raise ValueError(f"joint state needs {n} angles and rates, got {a.shape} and {r.shape}")
    return JointState(header=header(stamp_ns, frame_id), name=list(names), position=a.tolist(),
                      velocity=r.tolist(), effort=[])


def odometry_message(pos: np.ndarray, rot: np.ndarray, lin_vel_world: np.ndarray, ang_vel_world: np.ndarray,
                     stamp_ns: int, frame_id: str = WORLD_FRAME, child_frame_id: str = BASE_FRAME) -> Odometry:
    """Root pose in ``frame_id``; the twist in ``child_frame_id`` (the root frame), as ROS specifies."""
    lin = np.asarray(lin_vel_world, dtype=np.float64)
    ang = np.asarray(ang_vel_world, dtype=np.float64)
    if child_frame_id and child_frame_id != frame_id:
        # R^T v (numpy: a per-tick call must not pay torch's dispatch)
        r = quat_matrix_one(np.asarray(rot, dtype=np.float64).reshape(4))
        lin, ang = lin @ r, ang @ r
    return Odometry(
        header=header(stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=PoseWithCovariance(pose=pose(pos, rot)),
        twist=TwistWithCovariance(twist=Twist(linear=_vector(lin), angular=_vector(ang))),
    )


def pose_stamped_message(pos: np.ndarray, rot: np.ndarray, stamp_ns: int, frame_id: str = WORLD_FRAME) -> PoseStamped:
    return PoseStamped(header=header(stamp_ns, frame_id), pose=pose(pos, rot))


def contact_state_message(in_contact: np.ndarray, object_contact: np.ndarray, force: np.ndarray,
                          stamp_ns: int, frame_id: str = WORLD_FRAME,
                          body_names: Sequence[str] = BODY_NAMES) -> ContactState:
    """Per-body flags [B] and net contact forces [B, 3] in ``body_names`` order (default the
    SMPL-X humanoid's 52 bodies)."""
    f = np.asarray(force, dtype=np.float64).reshape(len(body_names), 3)
    return ContactState(header=header(stamp_ns, frame_id), body_names=list(body_names),
                        in_contact=[bool(x) for x in np.asarray(in_contact).reshape(-1)],
                        object_contact=[bool(x) for x in np.asarray(object_contact).reshape(-1)],
                        force=[_vector(row) for row in f])


def state_messages(sim: SimState, angles: np.ndarray, rates: np.ndarray, stamp_ns: int, world: int = 0,
                   frame_id: str = WORLD_FRAME, base_frame: str = BASE_FRAME,
                   embodiment: EmbodimentSpec | None = None) -> StateMessages:
    """The four state messages of world ``world``: what a robot (or the bridge) publishes
    (joint and body names of ``embodiment``, default the SMPL-X humanoid)."""
    dofs = embodiment.dof_names if embodiment is not None else DOF_NAMES
    bodies = embodiment.body_names if embodiment is not None else BODY_NAMES
    def np64(t: torch.Tensor) -> np.ndarray:
        return t[world].detach().cpu().double().numpy()

    return StateMessages(
        joint_state=joint_state_message(angles, rates, stamp_ns, base_frame, dofs),
        odom=odometry_message(np64(sim.body_pos[:, 0]), np64(sim.body_rot[:, 0]), np64(sim.body_lin_vel[:, 0]),
                              np64(sim.body_ang_vel[:, 0]), stamp_ns, frame_id, base_frame),
        object_pose=pose_stamped_message(np64(sim.object_pos), np64(sim.object_rot), stamp_ns, frame_id),
        contacts=contact_state_message(sim.body_contact[world].cpu().numpy(),
                                       sim.body_object_contact[world].cpu().numpy(),
                                       np64(sim.body_contact_force), stamp_ns, frame_id, bodies),
    )


# -- PD targets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetSample:
    """Validated PD targets in ``DOF_NAMES`` order (float64 [153]; optional parts None when empty)."""

    stamp_ns: int
    position: np.ndarray
    velocity: np.ndarray | None
    kp: np.ndarray | None
    kd: np.ndarray | None
    effort: np.ndarray | None


def pd_targets_order(names: Sequence[str] = DOF_NAMES) -> NameOrder:
    """The PD target joint order (the embodiment's DOFs; default the SMPL-X humanoid's)."""
    return NameOrder(tuple(names), "PDTargets.joint_names")


def _field(values: Sequence[float], perm: np.ndarray | None, name: str, required: bool,
           n: int = NUM_DOFS) -> np.ndarray | None:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 and not required:
        return None
    if a.shape != (n,):
        raise MessageRejected(f"PDTargets.{name} has {a.size} values, expected {n}"
                              + ("" if required else " (or none)"))
    if not np.all(np.isfinite(a)):
        raise NonFiniteInput(f"PDTargets.{name} contains NaN or inf")
    return a if perm is None else a[perm]


def parse_pd_targets(msg: PDTargets, order: NameOrder) -> TargetSample:
    """Validate a ``PDTargets``: all 153 joint names (any order), 153 finite positions; velocity,
    kp, kd and effort either empty or 153 finite values (kp, kd >= 0)."""
    perm = order.permutation(msg.joint_names)
    n = len(order.expected)
    sample = TargetSample(
        stamp_ns=ns_from_time(msg.header.stamp),
        position=_field(msg.position, perm, "position", True, n),  # type: ignore[arg-type]
        velocity=_field(msg.velocity, perm, "velocity", False, n),
        kp=_field(msg.kp, perm, "kp", False, n),
        kd=_field(msg.kd, perm, "kd", False, n),
        effort=_field(msg.effort, perm, "effort", False, n),
    )
    for name in ("kp", "kd"):
        gains = getattr(sample, name)
        if gains is not None and np.any(gains < 0):
            raise MessageRejected(f"PDTargets.{name} has negative gains")
    return sample


# -- clips -----------------------------------------------------------------------------------------
def load_clip(clip: str, example: bool = False) -> HOIMotion:
    """The clip a node is configured with: a file any ``load_motion`` format, or the bundled example
    (a robot motion ``.npz``, from ``intermimic retarget --robot``, is returned as a ``RobotMotion``)."""
    if example:
        from intermimic_policy.motion.example import make_example_motion

        return make_example_motion()
    from intermimic_policy.motion.io import load_motion
    from intermimic_policy.motion.robot_motion import is_robot_motion_file, load_robot_motion

    if is_robot_motion_file(clip):
        return load_robot_motion(clip)  # type: ignore[return-value]

    return load_motion(clip)
