"""The ROS 2 policy node: reference + object pose + robot state in, PD targets out, safely.

Data path of one control tick (the same code as training wherever training has the step):

1. robot-state messages -> ``SimState`` (``node_state``: FK of the contract's skeleton, body
   velocities from joint rates, object velocity from pose differences);
2. reference frames -> one ``RefFrame`` per observation offset (``reference_buffer``: the
   ``HOIMotion`` finite differences, clamped at the clip end);
3. ``ObservationBuilder(contract.observation).build`` -> the policy (``runtime.load_policy``);
4. actions -> ``contract.pd_targets`` (clamp, offset + scale: rotation vectors) -> hinge angles
   (``joint_map``), exactly ``HOIEnv.action_to_targets``;
5. safety (``safety``): soft start from the measured pose, joint-limit and slew clamps, NaN
   guard -> ``PDTargets`` with the contract's joint names, kp and kd.

Modes: ``waiting`` (an input or the lookahead has not arrived: nothing is published),
``soft_start``, ``running``, ``safe_hold`` (an input went stale or a value was NaN/inf: the last
good targets are published with zero velocity and kd x ``hold_kd_scale``). Leaving safe hold goes
through a new soft start from the measured pose.

Timing: with ``lockstep`` the node answers every state tick (a JointState stamp, matched by the
Odometry / object pose / contacts of the same stamp) with one PDTargets carrying that stamp, so a
simulator can wait for it; otherwise a timer at the contract's ``control_hz`` publishes with the
newest inputs. Staleness is judged on the wall clock of reception in both modes.

Run: ``python -m intermimic_policy.ros.policy_node --config config/sim_hoi.yaml [--policy F.onnx]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from intermimic_policy.contract import PolicyContract, default_model_hash, expected_contract
from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.spec import student_spec, teacher_spec
from intermimic_policy.ros.msgs import ns_from_time, time_from_ns
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray, DiagnosticStatus
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, HOIWindow, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_common import NodeLifetime, status_array
from intermimic_policy.ros.node_config import PolicyNodeConfig, load_node_config
from intermimic_policy.ros.node_params import split_ros_args
from intermimic_policy.ros.node_state import (
    ContactSample,
    HumanoidKinematics,
    JointSample,
    MessageRejected,
    NonFiniteInput,
    ObjectVelocity,
    PoseSample,
    RobotInputs,
    RootSample,
    body_order,
    build_sim_state,
    joint_order,
    parse_contacts,
    parse_joint_state,
    parse_odometry,
    parse_pose_stamped,
)
from intermimic_policy.ros.reference_buffer import ReferenceBuffer, parse_hoi_frame, parse_hoi_window
from intermimic_policy.ros.reference_timeline import ReferenceTimeline, window_from_message
from intermimic_policy.ros.safety import (
    HoldCommand,
    check_staleness,
    clamp_slew,
    clamp_to_limits,
    hold_command,
    nonfinite_fields,
    soft_start_blend,
)
from intermimic_policy.runtime.base import Policy, read_policy_file
from intermimic_policy.runtime.loader import load_policy
from intermimic_policy.sim.reference import RefFrame
from intermimic_policy.sim.state import SimState

logger = logging.getLogger("intermimic.ros.policy_node")

MODES = ("waiting", "soft_start", "running", "safe_hold")
STATUS_NAME = "intermimic/policy_node"
# inputs by the name used in counters, staleness reports and the status
INPUTS = ("reference", "joint_states", "odom", "object_pose", "contacts")
LATENCY_WINDOW = 2048


# -- policy loading ------------------------------------------------------------------------------
def expected_for(config: PolicyNodeConfig, policy_contract: PolicyContract) -> PolicyContract:
    """The contract this configuration accepts.

    Joints, gains, action map and observation layout come from ``smplx_body`` and the spec of
    ``config.kind``; the model hash names the skeleton FK uses (the default one unless configured).
    Rates are the policy's own (the node has no rate parameter; it runs at the policy's).
    """
    return expected_contract(
        config.kind,
        spec=teacher_spec() if config.kind == "teacher" else student_spec(),
        model_hash=config.model_hash or default_model_hash(),
        control_hz=policy_contract.control_hz,
        physics_hz=policy_contract.physics_hz,
        upstream_action_map=config.upstream_action_map,
    )


def load_checked_policy(config: PolicyNodeConfig) -> Policy:
    """Open ``config.policy``; ``ContractMismatch`` lists every way it does not fit the config."""
    if not config.policy:
        raise IntermimicError("policy node: no policy given (set policy_node.policy / common.policy "
                              "in the config, or pass --policy FILE.onnx)")
    declared = read_policy_file(config.policy).contract
    return load_policy(config.policy, backend=config.backend, expected=expected_for(config, declared),
                       threads=config.threads)


def _training_num_points() -> int:
    """The surface-point count the training environment uses by default (its config is the source)."""
    from intermimic_policy.sim.env_config import HOIEnvConfig

    return int(HOIEnvConfig.__dataclass_fields__["num_object_points"].default)  # type: ignore[arg-type]


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
    missed_ticks: int = 0  # timer periods that found the loop busy (timer mode)
    lookahead_waits: int = 0  # ticks skipped waiting for reference lookahead
    policy_errors: int = 0  # exceptions while building the observation or running the policy
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
    """The node's logic without a transport: feed messages in, call :meth:`tick`, publish.

    ``now`` arguments are seconds on a monotonic clock (reception times, staleness).
    """

    def __init__(self, config: PolicyNodeConfig, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        c = self.contract = policy.contract
        self.builder = ObservationBuilder(c.observation)
        self.kinematics = HumanoidKinematics(default_skeleton())
        self.dt = 1.0 / c.control_hz
        self.kp = np.asarray(c.kp, dtype=np.float64)
        self.kd = np.asarray(c.kd, dtype=np.float64)
        offset = np.asarray(c.action_offset, dtype=np.float64)
        scale = np.asarray(c.action_scale, dtype=np.float64) * c.action_clip
        self.lower, self.upper = offset - np.abs(scale), offset + np.abs(scale)
        self.joint_names = list(c.joint_names)
        self._zeros = [0.0] * len(self.joint_names)
        self._kp_list = self.kp.tolist()
        self._kd_list = self.kd.tolist()
        self.buffer = ReferenceBuffer(c.ref_offsets, config.max_reference_lag_frames)
        # generator windows (any rate, overlapping, late) joined into one timeline when enabled
        self.timeline = (ReferenceTimeline(c.control_hz, self.buffer.required_lookahead, config.timeline)
                         if config.timeline.enabled else None)
        self.num_points = config.num_object_points or _training_num_points()
        self._points: dict[str, Tensor] = {}
        self._joint_order = joint_order()
        self._body_order = body_order()
        self._object_velocity = ObjectVelocity()
        t = config.timeouts
        self.timeouts = {"reference": t.reference_s, "joint_states": t.state_s, "odom": t.state_s,
                         "object_pose": t.object_pose_s, "contacts": t.contacts_s}
        self.last_rx: dict[str, float | None] = {k: None for k in INPUTS}
        self.faults: dict[str, str] = {}  # input -> why its newest message was unusable (NaN)
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
        self.last_observation: Tensor | None = None

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

    def prepare(self) -> None:
        """Precompute the reference frames of the next tick (off the tick's critical path)."""
        with torch.inference_mode():
            self.buffer.prepare(self.points_of)

    def points_of(self, name: str) -> Tensor:
        """Object-frame surface points of ``name`` exactly as the training environment samples them."""
        pts = self._points.get(name)
        if pts is None:
            from intermimic_policy.sim.objects import load_object

            asset = load_object(name, search_dirs=list(self.config.object_search_dirs) or None,
                                num_points=self.num_points)
            pts = torch.from_numpy(np.ascontiguousarray(asset.points(self.num_points), dtype=np.float32))
            self._points[name] = pts
        return pts

    def _check_object(self, name: str) -> None:
        try:
            self.points_of(name)
        except IntermimicError as exc:
            raise MessageRejected(f"object {name!r}: {exc}") from exc

    def on_reference(self, msg: HOIFrame, now: float) -> bool:
        try:
            sample = parse_hoi_frame(msg, self.contract.control_hz)
            self._check_object(sample.object_name)
        except MessageRejected as exc:
            self._reject("reference", exc, now)
            return False
        self.buffer.add(sample)
        self._accept("reference", now)
        self.prepare()
        return True

    def on_window(self, msg: HOIWindow, now: float) -> bool:
        if self.timeline is not None:
            try:
                window = window_from_message(msg)
                self._check_object(window.samples[0].object_name)
            except MessageRejected as exc:
                self._reject("reference_window", exc, now)
                return False
            self.timeline.push(window, now)
            self.timeline.feed(self.buffer, now)
            self._accept("reference", now)
            self.prepare()
            return True
        try:
            frames, end = parse_hoi_window(msg, self.contract.control_hz)
            self._check_object(frames[0].object_name)
        except MessageRejected as exc:
            self._reject("reference_window", exc, now)
            return False
        self.buffer.add_window(frames, end)
        self._accept("reference", now)
        self.prepare()
        return True

    def on_joint_state(self, msg: JointState, now: float) -> bool:
        try:
            self.joints = parse_joint_state(msg, self._joint_order)
        except MessageRejected as exc:
            self._reject("joint_states", exc, now)
            return False
        self._accept("joint_states", now)
        return True

    def on_odometry(self, msg: Odometry, now: float) -> bool:
        try:
            self.root = parse_odometry(msg)
        except MessageRejected as exc:
            self._reject("odom", exc, now)
            return False
        self._accept("odom", now)
        return True

    def on_object_pose(self, msg: PoseStamped, now: float) -> bool:
        try:
            sample = parse_pose_stamped(msg)
        except MessageRejected as exc:
            self._reject("object_pose", exc, now)
            return False
        self.object_pose = sample
        self._object_velocity.update(sample)
        self._accept("object_pose", now)
        return True

    def on_contacts(self, msg: ContactState, now: float) -> bool:
        try:
            self.contacts = parse_contacts(msg, self._body_order)
        except MessageRejected as exc:
            self._reject("contacts", exc, now)
            return False
        self._accept("contacts", now)
        return True

    # -- lockstep matching --------------------------------------------------------------------
    def state_stamp_complete(self, stamp_ns: int) -> bool:
        """Whether every state input (contacts only when required) carries ``stamp_ns``."""
        samples: list[tuple[str, JointSample | RootSample | PoseSample | ContactSample | None]] = [
            ("odom", self.root), ("object_pose", self.object_pose), ("contacts", self.contacts)]
        for name, sample in samples:
            if self.timeouts[name] <= 0 and sample is None:
                continue
            if sample is None or sample.stamp_ns != stamp_ns:
                return False
        return True

    # -- observation --------------------------------------------------------------------------
    def robot_inputs(self) -> RobotInputs:
        assert self.joints is not None and self.root is not None and self.object_pose is not None
        return RobotInputs(self.joints, self.root, self.object_pose, self._object_velocity.lin_vel,
                           self._object_velocity.ang_vel, self.contacts)

    def sim_state(self) -> SimState:
        return build_sim_state(self.robot_inputs(), self.kinematics)

    def reference_frames(self) -> list[RefFrame]:
        return self.buffer.ref_frames(self.points_of)

    def observation(self) -> tuple[Tensor, SimState, list[RefFrame], Tensor]:
        """(obs [1, D], the SimState, the RefFrames, the object points [1, P, 3]) at the cursor."""
        sim = self.sim_state()
        refs = self.reference_frames()
        points = self.points_of(self.buffer.current().object_name).unsqueeze(0)
        return self.builder.build(sim, refs, points), sim, refs, points

    # -- the tick ------------------------------------------------------------------------------
    def _message(self, stamp_ns: int, position: np.ndarray) -> PDTargets:
        return PDTargets(header=Header(stamp=time_from_ns(stamp_ns), frame_id=""),
                         joint_names=self.joint_names, position=position.tolist(),
                         velocity=self._zeros, kp=self._kp_list, kd=self._kd_list, effort=self._zeros)

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
        cmd: HoldCommand = hold_command(pose, self.kp, self.kd, self.config.hold_kd_scale)
        msg = PDTargets(header=Header(stamp=time_from_ns(stamp_ns)), joint_names=self.joint_names,
                        position=cmd.position.tolist(), velocity=cmd.velocity.tolist(),
                        kp=cmd.kp.tolist(), kd=cmd.kd.tolist(), effort=self._zeros)
        self.counters.holds_published += 1
        self.counters.published += 1
        self.last_sent = cmd.position
        return TickResult(self.mode, reason, msg)

    def _wait(self, reason: str) -> TickResult:
        self.mode, self.reason = "waiting", reason
        return TickResult(self.mode, reason)

    def tick(self, now: float, stamp_ns: int, matched: bool = False) -> TickResult:
        """See :meth:`_tick`; torch runs without autograd bookkeeping (~20 % of the builder's time)."""
        with torch.inference_mode():
            return self._tick(now, stamp_ns, matched)

    def _tick(self, now: float, stamp_ns: int, matched: bool = False) -> TickResult:
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
            obs, _, _, _ = self.observation()
            self.last_observation = obs
            obs_np = obs.numpy()
            if nonfinite_fields({"observation": obs_np}):
                self.counters.nonfinite_events += 1
                return self._hold(stamp_ns, "observation contains NaN or inf")
            actions = self.policy(obs_np)
        except Exception as exc:  # noqa: BLE001 - the control loop must hold, not die, on any failure
            self.counters.policy_errors += 1
            logger.exception("observation or policy failed")
            return self._hold(stamp_ns, f"observation or policy failed: {type(exc).__name__}: {exc}")
        if nonfinite_fields({"actions": actions}):
            self.counters.nonfinite_events += 1
            return self._hold(stamp_ns, "policy output contains NaN or inf")
        rotvec = torch.from_numpy(self.contract.pd_targets(actions)[0].astype(np.float64))
        targets = joint_map.hinge_angles_from_rotvec(rotvec.reshape(-1, 3)).numpy()
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
        return TickResult(mode, "", self._message(stamp_ns, final), limit.names, slew.names)


# -- the node ------------------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class PolicyNode(NodeLifetime):
    """The controller on a ROS transport: subscriptions, timers, publishing and the status."""

    def __init__(self, config: PolicyNodeConfig, policy: Policy | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from intermimic_policy.ros.transport import make_node

        self.config = config
        self.clock = clock
        self.controller = PolicyController(config, policy if policy is not None else load_checked_policy(config))
        self.node = make_node(config.node_name, backend=config.transport, domain_id=config.domain_id,
                              namespace=config.namespace)
        t, q = config.topics, config.qos
        try:
            self.pub_targets = self.node.create_publisher(t.pd_targets, PDTargets, q.pd_targets)
            self.pub_status = self.node.create_publisher(t.status, DiagnosticArray, q.status)
            c = self.controller
            self.subscriptions = [
                self.node.create_subscription(t.reference, HOIFrame, self._wrap(c.on_reference), q.reference),
                self.node.create_subscription(t.reference_window, HOIWindow, self._wrap(c.on_window), q.reference),
                self.node.create_subscription(t.joint_states, JointState, self._on_joint_state, q.state),
                self.node.create_subscription(t.odom, Odometry, self._wrap(c.on_odometry), q.state),
                self.node.create_subscription(t.object_pose, PoseStamped, self._wrap(c.on_object_pose), q.state),
                self.node.create_subscription(t.contacts, ContactState, self._wrap(c.on_contacts), q.state),
            ]
            period = 1.0 / self.controller.contract.control_hz
            self.period = period
            # how long a lockstep tick may wait for its inputs before the watchdog judges them
            self.patience_s = min(t for t in self.controller.timeouts.values() if t > 0)
            self.node.create_timer(period, self._on_timer)
            self.node.create_timer(1.0 / config.status_hz, self.publish_status)
        except BaseException:
            self.node.destroy()
            raise
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.pending_stamp: int | None = None
        self.pending_rx: float | None = None
        self.last_answered: int | None = None
        self._last_timer: float | None = None
        self.last_result: TickResult | None = None

    # -- callbacks ----------------------------------------------------------------------------
    def _wrap(self, handler: Callable[[Any, float], bool]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            handler(msg, self.clock())
            if self.config.lockstep:
                self._service_lockstep()
        return callback

    def _on_joint_state(self, msg: JointState) -> None:
        now = self.clock()
        ok = self.controller.on_joint_state(msg, now)
        if self.config.lockstep:
            stamp = ns_from_time(msg.header.stamp)
            nonfinite = not ok and "joint_states" in self.controller.faults
            # a re-sent state of the pending tick keeps its first arrival time, so a peer that
            # keeps re-sending cannot starve the watchdog
            if (ok or nonfinite) and stamp not in (self.last_answered, self.pending_stamp):
                self.pending_stamp, self.pending_rx = stamp, now
            self._service_lockstep()

    def _service_lockstep(self, force: bool = False) -> None:
        """Answer the pending state tick once all its inputs arrived (or, forced, when holding)."""
        s = self.pending_stamp
        if s is None:
            return
        c = self.controller
        matched = c.state_stamp_complete(s)
        if not force and "joint_states" not in c.faults and not matched:
            return
        result = c.tick(self.clock(), s, matched=matched and not force)
        if result.message is None and not force:
            self.last_result = result
            return
        self._emit(result, self.pending_rx)
        if result.message is not None:
            self.last_answered, self.pending_stamp = s, None

    def _on_timer(self) -> None:
        now = self.clock()
        if self.config.lockstep:
            # watchdog: a pending tick whose inputs went stale is answered with a hold; with no
            # tick to answer (the simulator is gone) the node still reports the hold
            c = self.controller
            if self.pending_stamp is not None and self.pending_rx is not None:
                if now - self.pending_rx > self.patience_s:
                    self._service_lockstep(force=True)
                return
            stale = check_staleness(c.last_rx, now, c.timeouts)
            if stale.stale and c.last_sent is not None:
                c.enter_safe_hold(stale.describe())
            return
        if self._last_timer is not None and now - self._last_timer > 1.5 * self.period:
            # the loop was busy past a whole period: those ticks never ran
            self.controller.counters.missed_ticks += int(round((now - self._last_timer) / self.period)) - 1
        self._last_timer = now
        self._emit(self.controller.tick(now, self.node.now_ns()), now)

    def _emit(self, result: TickResult, started: float | None) -> None:
        self.last_result = result
        if result.message is None:
            return
        self.pub_targets.publish(result.message)
        if started is not None:
            self.latencies_ms.append((self.clock() - started) * 1e3)
        self.controller.prepare()
        if result.clipped_limit or result.clipped_slew:
            logger.debug("clamped joints: limits %s, slew %s", result.clipped_limit, result.clipped_slew)

    # -- status -------------------------------------------------------------------------------
    def status_values(self) -> dict[str, str]:
        c = self.controller
        k = c.counters
        lat = list(self.latencies_ms)
        values: dict[str, str] = {
            "mode": c.mode, "reason": c.reason, "lockstep": str(self.config.lockstep).lower(),
            "control_hz": f"{c.contract.control_hz:g}",
            "frame": "" if c.buffer.cursor is None else str(c.buffer.cursor),
            "clip_end": "" if c.buffer.clip_end is None else str(c.buffer.clip_end),
            "latency_ms_p50": f"{_percentile(lat, 50):.3f}", "latency_ms_p99": f"{_percentile(lat, 99):.3f}",
            "latency_ms_max": f"{max(lat):.3f}" if lat else "nan",
            "reference_restarts": str(c.buffer.restarts), "reference_skipped_frames": str(c.buffer.skipped_frames),
        }
        for f in fields(k):
            if f.name != "rejected":
                values[f.name] = str(getattr(k, f.name))
        for topic, n in k.rejected.items():
            values[f"rejected.{topic}"] = str(n)
        if c.timeline is not None:
            values.update(c.timeline.status().values())
        for sub in self.subscriptions:
            # samples that failed to deserialize (e.g. a fixed-size array of the wrong length)
            values[f"malformed.{sub.topic}"] = str(sub.malformed)
        return values

    def publish_status(self) -> None:
        c = self.controller
        level = {"waiting": DiagnosticStatus.WARN, "soft_start": DiagnosticStatus.OK,
                 "running": DiagnosticStatus.OK, "safe_hold": DiagnosticStatus.ERROR}[c.mode]
        self.pub_status.publish(status_array(
            name=STATUS_NAME, hardware_id=self.config.node_name, level=level,
            message=f"{c.mode}: {c.reason}" if c.reason else c.mode, values=self.status_values(),
            stamp=self.node.stamp()))

    # -- lifetime -----------------------------------------------------------------------------
    def spin(self, duration_s: float | None = None, until: Callable[[], bool] | None = None) -> None:
        self.node.spin(until=until, timeout_s=duration_s)

    def spin_once(self, timeout_s: float = 0.0) -> int:
        return self.node.spin_once(timeout_s)



# -- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intermimic_policy_node",
                                description="Run an exported InterMimic policy as a ROS 2 node.")
    p.add_argument("--config", help="YAML with a policy_node section (e.g. config/sim_hoi.yaml)")
    p.add_argument("--policy", help="exported ONNX policy (overrides the config)")
    p.add_argument("--lockstep", action="store_true", default=None,
                   help="answer each state tick with targets stamped with its stamp")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain (default: config or $ROS_DOMAIN_ID)")
    p.add_argument("--transport", choices=("auto", "cyclone", "rclpy"), default=None)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ours, params_file = split_ros_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(ours)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="[%(levelname)s] %(name)s: %(message)s")
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        config = load_node_config(args.config or params_file, policy=args.policy, lockstep=args.lockstep,
                                  domain_id=args.domain_id, transport=args.transport)
        torch.set_num_threads(config.torch_threads)
        with PolicyNode(config) as node:
            logger.info("policy %s (%s, %g Hz, %s) on %s; lockstep=%s", Path(config.policy).name,
                        node.controller.contract.kind, node.controller.contract.control_hz,
                        node.controller.policy.backend_name, node.node.backend, config.lockstep)
            node.spin(args.duration, until=lambda: stop["now"])
    except IntermimicError as exc:
        print(f"policy_node: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"policy_node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
