"""The policy node's logic without a transport: messages in, one ``PDTargets`` (or nothing) out.

Data path of one control tick (the same definitions as training wherever training has the step):

1. robot-state messages -> one world's state (``node_state`` parsers, ``numpy_obs.Kinematics``:
   FK and body velocities of the contract's skeleton, object velocity from pose differences);
2. reference frames -> one ``RefSample`` per observation offset (``reference_buffer``: the
   ``HOIMotion`` finite differences, clamped at the clip end), computed ahead of the tick;
3. ``numpy_obs.NumpyObservation(contract.observation)`` -> the policy (``runtime.load_policy``);
4. actions -> ``contract.pd_targets`` (clamp, offset + scale: rotation vectors) -> hinge angles,
   exactly ``HOIEnv.action_to_targets``; the output's shape is checked, never broadcast;
5. safety (``safety``): soft start from the measured pose, joint-limit and slew clamps, NaN
   guard -> ``PDTargets`` with the contract's joint names (one list, built once), kp and kd.

Modes: ``waiting`` (an input or the lookahead has not arrived: nothing is published),
``soft_start``, ``running``, ``safe_hold`` (an input went stale, a value was NaN/inf, or the
reference names an object outside the object table: the last good targets are published with
zero velocity and kd x ``hold_kd_scale``). Leaving safe hold goes through a new soft start.

Nothing here imports torch or MuJoCo, and nothing slow runs per message: object surface points
are loaded at start-up from the configured object table (a name on the wire is only looked up,
never opened as a path), and windows and the frame store are capped by configuration.

Time: each state input's stamps must move forward. A repeated stamp is a duplicate (ignored), an
older one is out of order (rejected and counted), one older than the newest state stamp by more
than the state timeout is stale (rejected), and a jump back by more than ``clock_jump_s`` (or
three messages in a row older than the history) is a restarted clock (reported; the node starts
over with a soft start). A duplicate still shows the source is alive (a simulator re-sends the
tick it waits on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from intermimic_policy.contract import DeploymentExpectation, PolicyContract
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation import compiled_obs
from intermimic_policy.observation.compiled_obs import (
    CompiledKinematics,
    CompiledObservation,
    CompiledTargets,
)
from intermimic_policy.observation.numpy_obs import (
    Kinematics,
    NumpyObservation,
    ObjectCloud,
    WorldState,
    hinge_angles_from_rotvec,
    quat_matrix_one,
)
from intermimic_policy.observation.spec import student_spec, teacher_spec
from intermimic_policy.ros.msgs import time_from_ns
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
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
from intermimic_policy.ros.node_config import PolicyNodeConfig, object_table
from intermimic_policy.ros.node_state import (
    ContactSample,
    JointSample,
    MessageRejected,
    NonFiniteInput,
    ObjectVelocity,
    PoseSample,
    RootSample,
    StampGuard,
    body_order,
    joint_order,
    parse_contacts,
    parse_joint_state,
    parse_odometry,
    parse_pose_stamped,
)
from intermimic_policy.ros.reference_buffer import (
    ReferenceBuffer,
    parse_hoi_frame,
    parse_hoi_window,
    parse_robot_hoi_frame,
    parse_robot_hoi_window,
)
from intermimic_policy.ros.reference_timeline import ReferenceTimeline, window_from_message
from intermimic_policy.ros.safety import (
    check_staleness,
    clamp_slew,
    clamp_to_limits,
    hold_command,
    nonfinite_fields,
    soft_start_blend,
)
from intermimic_policy.runtime.base import Policy
from intermimic_policy.runtime.loader import load_policy

logger = logging.getLogger("intermimic.ros.policy_node")
_S = TypeVar("_S", JointSample, RootSample, PoseSample, ContactSample)

MODES = ("waiting", "soft_start", "running", "safe_hold")
# inputs by the name used in counters, staleness reports and the status
INPUTS = ("reference", "joint_states", "odom", "object_pose", "contacts")
STATE_INPUTS = ("joint_states", "odom", "object_pose", "contacts")


# -- the contract adapter (the one place that reads what the policy depends on) -------------------
@dataclass(frozen=True)
class Deployment:
    """What the node builds from the policy's contract (and its own config where the contract is
    silent): the skeleton FK uses and the object point count the observation was trained with."""

    skeleton: Skeleton | None  # None: a robot (its FK comes from its URDF: ``robot``)
    num_points: int
    robot: Any = None  # embodiment.description.EmbodimentSpec of the robot driven, if any


def deployment_of(contract: PolicyContract, config: PolicyNodeConfig) -> Deployment:
    """What the policy's observation depends on, rebuilt from its contract (the skeleton table and
    the object point count it was trained with; the contract checks the table against its hash)."""
    if config.robot:  # the contract was checked against this robot's embodiment (expected_for)
        from intermimic_policy.embodiment.description import embodiment_for

        return Deployment(skeleton=None, num_points=int(contract.object_points), robot=embodiment_for(config.robot))
    return Deployment(skeleton=contract.skeleton_model(), num_points=int(contract.object_points))


def expected_for(config: PolicyNodeConfig) -> DeploymentExpectation:
    """What this node's OWN configuration accepts: kind, rates, action map, skeleton hash and point
    count come from the config (never from the file under test); joints, gains and the
    observation layout from the embodiment table and the spec of ``config.kind``."""
    if config.robot:  # a robot: its embodiment's joints, gains and observation
        from intermimic_policy.contract import preset_spec

        embodiment = f"robot:{config.robot}"
        return DeploymentExpectation(
            kind=config.kind, control_hz=config.control_hz, physics_hz=config.physics_hz, embodiment=embodiment,
            obs_spec=preset_spec(config.kind, embodiment), model_hash=config.model_hash,
            object_points=config.num_object_points)
    return DeploymentExpectation(
        kind=config.kind,
        control_hz=config.control_hz,
        physics_hz=config.physics_hz,
        upstream_action_map=config.upstream_action_map,
        obs_spec=teacher_spec() if config.kind == "teacher" else student_spec(),
        model_hash=config.model_hash,
        object_points=config.num_object_points,
    )


def load_checked_policy(config: PolicyNodeConfig) -> Policy:
    """Open ``config.policy``; ``ContractMismatch`` lists every way it does not fit the config."""
    if not config.policy:
        raise IntermimicError("policy node: no policy given (set policy_node.policy / common.policy "
                              "in the config, or pass --policy FILE.onnx)")
    return load_policy(config.policy, backend=config.backend, expected=expected_for(config),
                       threads=config.threads)


# -- the object table ------------------------------------------------------------------------------
def load_object_table(entries: tuple[str, ...], num_points: int, search_dirs: tuple[str, ...] = ()) -> dict[str, ObjectCloud]:
    """Surface points of every configured object, loaded once at start-up.

    An entry is ``name=FILE.npy`` (object-frame points [num_points, 3]: what a deployment without
    the mesh tools uses) or a bare object name (a primitive or a mesh in the search dirs, sampled
    exactly as the training environment does; needs the full install).
    """
    table: dict[str, ObjectCloud] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        name = name.strip()
        if not name:
            raise IntermimicError(f"policy node: object table entry {entry!r} has no name")
        if sep:
            try:
                pts = np.load(Path(path.strip()), allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise IntermimicError(f"policy node: object {name!r}: cannot read points file {path!r}: {exc}") from exc
            if pts.shape != (num_points, 3) or not np.isfinite(pts).all():
                raise IntermimicError(f"policy node: object {name!r}: {path} holds {list(pts.shape)} points, "
                                      f"expected finite [{num_points}, 3]")
        else:
            try:
                from intermimic_policy.sim.objects import load_object
            except ImportError as exc:
                raise IntermimicError(f"policy node: object {name!r} needs the mesh tools (full install); "
                                      f"give it as {name}=POINTS.npy instead") from exc
            asset = load_object(name, search_dirs=list(search_dirs) or None, num_points=num_points)
            pts = asset.points(num_points)
        table[name] = ObjectCloud(np.asarray(pts, dtype=np.float32))
    return table


# -- bookkeeping ---------------------------------------------------------------------------------
@dataclass
class NodeCounters:
    """What the status reports (monotonic counts since start)."""

    ticks: int = 0  # control ticks evaluated
    published: int = 0  # PDTargets sent (policy, soft start and hold)
    holds_published: int = 0
    safe_hold_events: int = 0  # entries into safe hold
    joint_limit_clamps: int = 0  # ticks where a joint-limit clamp changed a target
    slew_clamps: int = 0
    nonfinite_events: int = 0  # NaN/inf found in an input, the observation or the actions
    lookahead_waits: int = 0  # ticks skipped waiting for reference lookahead
    policy_errors: int = 0  # exceptions while building the observation or running the policy
    unknown_objects: int = 0  # reference messages naming an object outside the object table
    duplicates: int = 0  # state messages repeating the last stamp (ignored)
    out_of_order: int = 0  # state messages older than the last one of their input (rejected)
    stale_stamps: int = 0  # state messages far older than the newest state stamp (rejected)
    clock_jumps: int = 0  # stamps jumping back by more than clock_jump_s (a restarted clock)
    rejected: dict[str, int] = field(default_factory=lambda: {k: 0 for k in (*INPUTS, "reference_window")})


@dataclass(frozen=True)
class TickResult:
    """What one tick decided: the message to publish (None: nothing) and why."""

    mode: str
    reason: str
    message: PDTargets | None = None
    clipped_limit: tuple[str, ...] = ()
    clipped_slew: tuple[str, ...] = ()


class PolicyController:
    """The node's logic: feed messages in (``on_*``), call :meth:`tick`, publish its message.

    ``now`` arguments are seconds on a monotonic clock (reception times, staleness).
    """

    def __init__(self, config: PolicyNodeConfig, policy: Policy,
                 objects: dict[str, ObjectCloud] | None = None) -> None:
        self.config = config
        self.policy = policy
        c = self.contract = policy.contract
        deployment = deployment_of(c, config)
        self.num_points = deployment.num_points
        self.robot = deployment.robot  # the robot's EmbodimentSpec, or None (the SMPL-X humanoid)
        compiled = config.compiled_observation and compiled_obs.available()
        if self.robot is not None:
            from intermimic_policy.embodiment.robot import load_robot
            from intermimic_policy.embodiment.robot_kinematics import RobotKinematics

            self.kinematics: Any = RobotKinematics(load_robot(config.robot), self.robot)
        else:
            assert deployment.skeleton is not None
            self.kinematics = (CompiledKinematics if compiled else Kinematics)(deployment.skeleton.offsets)
        self.obs = (CompiledObservation if compiled else NumpyObservation)(c.observation)
        self.world = WorldState.empty(c.observation.num_bodies)
        self.objects = objects if objects is not None else load_object_table(
            object_table(config), self.num_points, config.object_search_dirs)
        self.dt = 1.0 / c.control_hz
        self.kp = np.asarray(c.kp, dtype=np.float64)
        self.kd = np.asarray(c.kd, dtype=np.float64)
        self._offset = np.asarray(c.action_offset, dtype=np.float32)
        self._scale = np.asarray(c.action_scale, dtype=np.float32)
        self._compiled_targets = CompiledTargets(self._offset, self._scale, c.action_clip) \
            if compiled and self.robot is None else None
        scale = self._scale.astype(np.float64) * c.action_clip
        self.lower, self.upper = self._offset - np.abs(scale), self._offset + np.abs(scale)
        self.joint_names = list(c.joint_names)  # one list for every message (names are constant)
        n = len(self.joint_names)
        self._zeros = np.zeros(n)
        self.buffer = ReferenceBuffer(c.ref_offsets, config.max_reference_lag_frames, config.max_buffered_frames)
        # generator windows (any rate, overlapping, late) joined into one timeline when enabled
        self.timeline = (ReferenceTimeline(c.control_hz, self.buffer.required_lookahead, config.timeline)
                         if config.timeline.enabled else None)
        self._joint_order = joint_order() if self.robot is None else joint_order(self.robot.dof_names)
        self._body_order = body_order() if self.robot is None else body_order(self.robot.body_names)
        self._object_velocity = ObjectVelocity()
        t = config.timeouts
        self.timeouts = {"reference": t.reference_s, "joint_states": t.state_s, "odom": t.state_s,
                         "object_pose": t.object_pose_s, "contacts": t.contacts_s}
        self.stamps = StampGuard(STATE_INPUTS, stale_s=t.state_s, jump_s=config.clock_jump_s)
        self.last_rx: dict[str, float | None] = {k: None for k in INPUTS}
        self.faults: dict[str, str] = {}  # input -> why its newest message was unusable
        self.joints: JointSample | None = None
        self.root: RootSample | None = None
        self.object_pose: PoseSample | None = None
        self.contacts: ContactSample | None = None
        self.counters = NodeCounters()
        self.mode = "waiting"
        self.reason = "no inputs yet"
        self.last_good: np.ndarray | None = None  # last targets published from the policy
        self.last_sent: np.ndarray | None = None  # last targets published (any mode)
        self.last_success: float | None = None
        self.soft_start_pose: np.ndarray | None = None
        self.soft_ticks = 0
        self._soft_start_due = True  # at the first policy tick and after every safe hold
        self.last_observation: np.ndarray | None = None

    # -- inputs -------------------------------------------------------------------------------
    def _reject(self, topic: str, exc: MessageRejected, now: float) -> None:
        """Count and drop a message; NaN/inf from a source also faults it (hold until it is good)."""
        self.counters.rejected[topic] += 1
        if isinstance(exc, NonFiniteInput):
            self.counters.nonfinite_events += 1
            self.faults[topic if topic != "reference_window" else "reference"] = str(exc)
        logger.warning("rejected a message on %s (%d so far): %s", topic, self.counters.rejected[topic], exc)

    def _accept(self, name: str, now: float) -> None:
        self.last_rx[name] = now
        self.faults.pop(name, None)

    def cloud_of(self, name: str) -> ObjectCloud | None:
        """The object's surface points from the table loaded at start-up (None: not in it)."""
        return self.objects.get(name)

    def prepare(self) -> None:
        """Precompute the reference frames of the next tick (off the tick's critical path)."""
        self.buffer.prepare(self.cloud_of, self.obs.prepare_reference)

    def _check_object(self, name: str, now: float) -> bool:
        if name in self.objects:
            return True
        self.counters.unknown_objects += 1
        self.counters.rejected["reference"] += 1
        why = f"object {name[:64]!r} is not in the object table {sorted(self.objects)}"
        self.faults["reference"] = why
        if self.counters.unknown_objects in (1, 10, 100) or self.counters.unknown_objects % 1000 == 0:
            logger.warning("reference rejected (%d so far): %s", self.counters.unknown_objects, why)
        return False

    def on_reference(self, msg: HOIFrame, now: float) -> bool:
        try:
            sample = parse_hoi_frame(msg, self.contract.control_hz)
        except MessageRejected as exc:
            self._reject("reference", exc, now)
            return False
        if not self._check_object(sample.object_name, now):
            return False
        self.buffer.add(sample)
        self._accept("reference", now)
        self.prepare()
        return True

    def on_robot_window(self, msg: RobotHOIWindow, now: float) -> bool:
        """A robot's reference window (``RobotHOIWindow``), checked against its embodiment."""
        if self.robot is None:
            self._reject("reference_window", MessageRejected("a robot's reference window reached the SMPL-X "
                                                             "humanoid's node"), now)
            return False
        try:
            frames, end = parse_robot_hoi_window(msg, self.robot, self.contract.control_hz,
                                                 self.config.max_window_frames)
        except MessageRejected as exc:
            self._reject("reference_window", exc, now)
            return False
        if not self._check_object(frames[0].object_name, now):
            return False
        self.buffer.add_window(frames, end)
        self._accept("reference", now)
        self.prepare()
        return True

    def on_robot_reference(self, msg: RobotHOIFrame, now: float) -> bool:
        """One robot reference frame (``RobotHOIFrame``)."""
        if self.robot is None:
            self._reject("reference", MessageRejected("a robot's reference frame reached the SMPL-X humanoid's node"),
                         now)
            return False
        try:
            sample = parse_robot_hoi_frame(msg, self.robot, self.contract.control_hz)
        except MessageRejected as exc:
            self._reject("reference", exc, now)
            return False
        if not self._check_object(sample.object_name, now):
            return False
        self.buffer.add(sample)
        self._accept("reference", now)
        self.prepare()
        return True

    def on_window(self, msg: HOIWindow, now: float) -> bool:
        if self.timeline is not None:
            try:
                window = window_from_message(msg)
            except MessageRejected as exc:
                self._reject("reference_window", exc, now)
                return False
            if not self._check_object(window.samples[0].object_name, now):
                return False
            self.timeline.push(window, now)
            self.timeline.feed(self.buffer, now)
            self._accept("reference", now)
            self.prepare()
            return True
        try:
            frames, end = parse_hoi_window(msg, self.contract.control_hz, self.config.max_window_frames)
        except MessageRejected as exc:
            self._reject("reference_window", exc, now)
            return False
        if not self._check_object(frames[0].object_name, now):
            return False
        self.buffer.add_window(frames, end)
        self._accept("reference", now)
        self.prepare()
        return True

    def _stamp_ok(self, name: str, stamp_ns: int, now: float) -> bool:
        verdict = self.stamps.check(name, stamp_ns)
        k = self.counters
        if verdict == "ok":
            return True
        if verdict == "jump":
            k.clock_jumps += 1
            logger.warning("%s: the clock jumped back (stamp %d ns); starting over", name, stamp_ns)
            self._soft_start_due = True
            self._object_velocity = ObjectVelocity()
            return True
        if verdict == "duplicate":
            k.duplicates += 1
            # a simulator re-sends the tick it waits on (lockstep, or before the first targets):
            # not new data, but the source is alive
            self.last_rx[name] = now
        elif verdict == "out_of_order":
            k.out_of_order += 1
            k.rejected[name] += 1
        else:
            k.stale_stamps += 1
            k.rejected[name] += 1
        return False

    def _admit(self, topic: str, parse: Callable[[], _S], now: float) -> _S | None:
        """Parse one state input and check its stamp; a rejected or stale one is counted, None."""
        try:
            sample = parse()
        except MessageRejected as exc:
            self._reject(topic, exc, now)
            return None
        return sample if self._stamp_ok(topic, sample.stamp_ns, now) else None

    def on_joint_state(self, msg: JointState, now: float) -> bool:
        sample = self._admit("joint_states", lambda: parse_joint_state(msg, self._joint_order), now)
        if sample is None:
            return False
        self.joints = sample
        self._accept("joint_states", now)
        return True

    def on_odometry(self, msg: Odometry, now: float) -> bool:
        sample = self._admit("odom", lambda: parse_odometry(msg), now)
        if sample is None:
            return False
        self.root = sample
        self._accept("odom", now)
        return True

    def on_object_pose(self, msg: PoseStamped, now: float) -> bool:
        sample = self._admit("object_pose", lambda: parse_pose_stamped(msg), now)
        if sample is None:
            return False
        self.object_pose = sample
        self._object_velocity.update(sample)
        self._accept("object_pose", now)
        return True

    def on_contacts(self, msg: ContactState, now: float) -> bool:
        sample = self._admit("contacts", lambda: parse_contacts(msg, self._body_order), now)
        if sample is None:
            return False
        self.contacts = sample
        self._accept("contacts", now)
        return True

    # -- stamp matching -----------------------------------------------------------------------
    def reference_current(self, now: float) -> bool:
        """Whether a tick at ``now`` can run on the reference frames already parsed: the buffer
        has every frame the observation reads and the stream is fresh. The node then parses newly
        arrived (lookahead) frames after the tick instead of before it. A generator timeline
        bridges and holds on the windows themselves, so with one the answer is always no."""
        if self.timeline is not None or not self.buffer.readiness().ok:
            return False
        return check_staleness(self.last_rx, now, {"reference": self.timeouts["reference"]}).ok

    def state_stamp_complete(self, stamp_ns: int) -> bool:
        """Whether every state input (contacts only when required) carries ``stamp_ns``."""
        samples: list[tuple[str, JointSample | RootSample | PoseSample | ContactSample | None]] = [
            ("joint_states", self.joints), ("odom", self.root), ("object_pose", self.object_pose),
            ("contacts", self.contacts)]
        for name, sample in samples:
            if self.timeouts[name] <= 0 and sample is None:
                continue
            if sample is None or sample.stamp_ns != stamp_ns:
                return False
        return True

    # -- observation --------------------------------------------------------------------------
    def world_state(self) -> WorldState:
        """The world state of the newest inputs (filled in place)."""
        j, r, p = self.joints, self.root, self.object_pose
        assert j is not None and r is not None and p is not None
        w = self.world
        self.kinematics.compute(w, r.pos, r.rot, r.lin_vel, r.ang_vel, j.angles, j.rates)
        w.body_contact[:] = False if self.contacts is None else self.contacts.in_contact
        w.object_pos[:] = p.pos
        w.object_mat[:] = quat_matrix_one(p.rot)
        w.object_lin_vel[:] = self._object_velocity.lin_vel
        w.object_ang_vel[:] = self._object_velocity.ang_vel
        return w

    def observation(self) -> np.ndarray:
        """The observation [1, D] (float32) at the cursor (a reused buffer)."""
        cloud = self.objects[self.buffer.current().object_name]
        refs = self.buffer.ref_frames(cloud)
        return self.obs.build(self.world_state(), refs, cloud)[None]

    def warm(self) -> bool:
        """Run the policy once on the last observation and discard the result, so that the next
        tick finds its weights in cache and the core awake (``PolicyNodeConfig.warm_lead_ms``);
        nothing the controller holds changes. False when there is no observation yet."""
        if self.last_observation is None:
            return False
        self.policy(self.last_observation)
        return True

    # -- the tick ------------------------------------------------------------------------------
    def _message(self, stamp_ns: int, position: np.ndarray, velocity: np.ndarray, kp: np.ndarray,
                 kd: np.ndarray) -> PDTargets:
        # numpy arrays, not lists: the fast codec writes each as one buffer (``ros.fast_cdr``)
        return PDTargets(header=Header(stamp=time_from_ns(stamp_ns), frame_id=""), joint_names=self.joint_names,
                         position=position, velocity=velocity, kp=kp, kd=kd,  # type: ignore[arg-type]
                         effort=self._zeros)  # type: ignore[arg-type]

    def enter_safe_hold(self, reason: str) -> None:
        """Switch to safe hold (counted once per entry); the next policy tick soft-starts again."""
        if self.mode != "safe_hold":
            self.counters.safe_hold_events += 1
            logger.warning("safe hold: %s", reason)
        self._soft_start_due = True
        self.soft_start_pose = None
        self.mode, self.reason = "safe_hold", reason

    def _hold(self, stamp_ns: int, reason: str) -> TickResult:
        self.enter_safe_hold(reason)
        pose = self.last_sent if self.last_sent is not None else (
            self.joints.angles if self.joints is not None else None)
        if pose is None:
            return TickResult(self.mode, reason)
        cmd = hold_command(pose, self.kp, self.kd, self.config.hold_kd_scale)
        msg = self._message(stamp_ns, cmd.position, cmd.velocity, cmd.kp, cmd.kd)
        self.counters.holds_published += 1
        self.counters.published += 1
        self.last_sent = cmd.position
        return TickResult(self.mode, reason, msg)

    def _wait(self, reason: str) -> TickResult:
        self.mode, self.reason = "waiting", reason
        return TickResult(self.mode, reason)

    def targets_from_actions(self, actions: np.ndarray) -> np.ndarray:
        """Hinge-angle targets [153] of the policy output [1, 153]: clamp, offset + scale (rotation
        vectors), hinge angles. The shape must be exact: nothing is broadcast."""
        want = (1, len(self._offset))
        if actions.shape != want:
            raise IntermimicError(f"policy output has shape {list(actions.shape)}, expected {list(want)}")
        if self._compiled_targets is not None:
            return self._compiled_targets(actions)
        clip = self.contract.action_clip
        rotvec = self._offset + self._scale * np.clip(actions[0].astype(np.float32), -clip, clip)
        if self.robot is not None:  # a robot's action map gives its hinge angles directly
            return rotvec.astype(np.float64)
        return hinge_angles_from_rotvec(rotvec.astype(np.float64).reshape(-1, 3))

    def tick(self, now: float, stamp_ns: int, matched: bool = False) -> TickResult:
        """Decide and build this tick's command (the caller publishes ``result.message``).

        ``matched``: a lockstep tick whose state inputs all carry its stamp. They are then current
        by construction and the wall-clock timeouts are not applied (a slow simulator is not a
        fault); the lockstep watchdog applies them to a tick that stays incomplete.
        """
        self.counters.ticks += 1
        ran_before = self.last_sent is not None
        if self.faults:
            name, why = next(iter(self.faults.items()))
            return self._hold(stamp_ns, f"invalid {name}: {why}")
        if not matched:
            stale = check_staleness(self.last_rx, now, self.timeouts)
            if not stale.ok:
                if not ran_before or not stale.stale:
                    return self._wait(stale.describe())
                return self._hold(stamp_ns, stale.describe())
        elif ran_before:
            # the simulator stamps the state inputs, so they are current by construction; the
            # reference stream is not, and a dead streamer must still lead to a hold
            ref = check_staleness(self.last_rx, now, {"reference": self.timeouts["reference"]})
            if ref.stale:
                return self._hold(stamp_ns, ref.describe())
        if self.timeline is not None:
            self.timeline.feed(self.buffer, now)  # bridges late windows for timeline.bridge_s
            timeline = self.timeline.status()
            if timeline.mode == "hold" and ran_before:
                return self._hold(stamp_ns, timeline.reason)
        ready = self.buffer.readiness()
        if not ready.ok:
            self.counters.lookahead_waits += 1
            if not matched and ran_before and self.last_success is not None and \
                    now - self.last_success > self.timeouts["reference"]:
                return self._hold(stamp_ns, ready.reason)
            return self._wait(ready.reason)
        try:
            obs = self.observation()
            self.last_observation = obs
            if not np.isfinite(obs).all():
                self.counters.nonfinite_events += 1
                return self._hold(stamp_ns, "observation contains NaN or inf")
            actions = np.asarray(self.policy(obs))
            if not np.isfinite(actions).all():
                self.counters.nonfinite_events += 1
                return self._hold(stamp_ns, "policy output contains NaN or inf")
            targets = self.targets_from_actions(actions)
        except Exception as exc:  # noqa: BLE001 - the control loop must hold, not die, on any failure
            self.counters.policy_errors += 1
            logger.exception("observation or policy failed")
            return self._hold(stamp_ns, f"observation or policy failed: {type(exc).__name__}: {exc}")
        assert self.joints is not None
        if self._soft_start_due:
            self._soft_start_due = False
            if self.config.soft_start_s > 0:
                self.soft_start_pose, self.soft_ticks = self.joints.angles.copy(), 0
        mode = "running"
        if self.soft_start_pose is not None:
            # tick k of the blend (1-based) reaches the policy fully at k = soft_start_s * control_hz
            self.soft_ticks += 1
            elapsed = self.soft_ticks * self.dt
            targets = soft_start_blend(self.soft_start_pose, targets, elapsed, self.config.soft_start_s)
            if elapsed >= self.config.soft_start_s - 1e-9:
                self.soft_start_pose = None
            else:
                mode = "soft_start"
        limit = clamp_to_limits(targets, self.lower, self.upper, self.joint_names)
        slew = clamp_slew(limit.values, self.last_sent, self.config.max_slew_rad, self.joint_names)
        final = slew.values
        if nonfinite_fields({"targets": final}):
            self.counters.nonfinite_events += 1
            return self._hold(stamp_ns, "targets contain NaN or inf")
        self.counters.joint_limit_clamps += bool(limit.count)
        self.counters.slew_clamps += bool(slew.count)
        self.mode, self.reason = mode, ""
        self.last_good = self.last_sent = final
        self.last_success = now
        self.buffer.advance()
        self.counters.published += 1
        return TickResult(mode, "", self._message(stamp_ns, final, self._zeros, self.kp, self.kd),
                          limit.names, slew.names)


def describe(controller: PolicyController) -> dict[str, Any]:
    """Start-up facts for the log: policy kind, rate, backend, objects."""
    c = controller.contract
    return {"kind": c.kind, "control_hz": c.control_hz, "backend": controller.policy.backend_name,
            "objects": sorted(controller.objects), "num_points": controller.num_points}

