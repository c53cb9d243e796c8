"""The ROS 2 policy node: the transport around :class:`~.policy_core.PolicyController`.

The controller (``policy_core``) holds the logic, pure and testable without DDS; this module
subscribes to its inputs, ticks it and publishes its targets and status; ``main`` is the shared
process entry (``node_main``).

Timing: the node runs on the arrival of the state it needs, never on a clock of its own (the
robot or simulator owns the clock). A tick starts when a JointState arrives and every other state
input carries its stamp (contacts only when required); it answers with one PDTargets carrying
that stamp. ``lockstep`` (a simulator that waits for each answer) only changes staleness: a
matched lockstep tick is current by construction. A watchdog timer does not tick the policy: it
answers a tick whose inputs stay incomplete past ``patience`` (lockstep: with a hold; real time:
with the newest inputs, counted as ``late_inputs``) and holds when inputs go stale. Reference
messages are parsed off the tick's path: after the tick is published, or before it only when the
tick needs them (``flush_inbox``).

Reported in the status (and the launch report): the node's own tick time (state in -> targets
out, p50/p99/max) beside its CPU time and the ticks that were preempted or blocked (wall minus
CPU is time off the CPU), the interval jitter of the ticks against the contract's period, deadline
misses (ticks longer than ``tick_deadline_ms``; ``deadline_misses_off_cpu`` counts those whose CPU
time fit the deadline, i.e. the node's own work did not cause them) and the counters of ``policy_core``.

Run: ``python -m intermimic_policy.ros.policy_node --config config/sim_hoi.yaml [--policy F.onnx]``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray, DiagnosticStatus
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
from intermimic_policy.ros.node_common import NodeLifetime, status_array
from intermimic_policy.ros.node_config import PolicyNodeConfig, load_node_config, resolved_topics
from intermimic_policy.ros.node_main import StopFlag, add_common_arguments, exit_process, run_main
from intermimic_policy.ros.policy_core import (  # noqa: F401 - the node's public names
    INPUTS,
    MODES,
    NodeCounters,
    PolicyController,
    TickResult,
    describe,
    expected_for,
    load_checked_policy,
)
from intermimic_policy.ros.safety import check_staleness
from intermimic_policy.runtime.base import Policy

logger = logging.getLogger("intermimic.ros.policy_node")

STATUS_NAME = "intermimic/policy_node"
LATENCY_WINDOW = 2048
WARM_WINDOW = 8  # arrival intervals the warm-up's schedule is the median of
# reference messages kept unparsed at most (a window is one message): beyond, they are parsed at once
INBOX_LIMIT = 64


# -- the node ------------------------------------------------------------------------------------
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def thread_cpu_and_switches() -> tuple[float, int, int]:
    """CPU seconds of the calling thread and its voluntary (it blocked: a lock, a syscall) and
    involuntary (preempted) context switches so far: the differences over a tick say whether
    the tick was slow work or time spent off the CPU, and why."""
    ru = resource.getrusage(_RUSAGE_THREAD)
    return time.thread_time(), ru.ru_nvcsw, ru.ru_nivcsw


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def _ms(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "nan"


class LoopStats:
    """Tick time, latency from arrival, interval jitter and deadline misses (bounded windows)."""

    def __init__(self, period_s: float, deadline_s: float) -> None:
        self.period_s = period_s
        self.deadline_s = deadline_s
        self.tick_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # tick start -> published
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # state arrival -> published
        self.jitter_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)  # |interval - period| of stamps
        # the tick's own CPU time: tick_ms - tick_cpu_ms is time the thread was off the CPU
        # (preempted by other threads/processes, or waiting), so slow work and a busy machine
        # are told apart in the field
        self.tick_cpu_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.blocked_ticks = 0  # ticks during which the thread blocked (voluntary context switch)
        self.preempted_ticks = 0  # ticks during which the thread was preempted (involuntary switch)
        self.worst_tick_ms = float("nan")  # over the whole run (the windows hold the newest ticks only)
        self.deadline_misses = 0
        # misses whose CPU time fit the deadline: the rest of the tick was time off the CPU
        # (preempted, blocked, or, in a virtual machine, taken by the hypervisor, which guests with
        # paravirtual steal accounting leave out of the thread's CPU time), not the node's own work
        self.deadline_misses_off_cpu = 0
        self.state_gaps = 0  # stamps that skipped whole periods (the state source missed ticks)
        self.late_inputs = 0  # real time: ticks run before every input of the stamp arrived
        self._last_stamp: int | None = None

    def record(self, started: float, arrived: float, done: float, stamp_ns: int,
               cpu_s: float | None = None, blocked: int = 0, preempted: int = 0) -> None:
        tick = done - started
        self.tick_ms.append(tick * 1e3)
        if not tick * 1e3 <= self.worst_tick_ms:  # (NaN before the first tick)
            self.worst_tick_ms = tick * 1e3
        if cpu_s is not None:
            self.tick_cpu_ms.append(cpu_s * 1e3)
        self.blocked_ticks += blocked > 0
        self.preempted_ticks += preempted > 0
        self.latency_ms.append((done - arrived) * 1e3)
        if tick > self.deadline_s:
            self.deadline_misses += 1
            self.deadline_misses_off_cpu += cpu_s is not None and cpu_s <= self.deadline_s
        if self._last_stamp is not None and stamp_ns > self._last_stamp:
            interval = (stamp_ns - self._last_stamp) * 1e-9
            self.jitter_ms.append(abs(interval - self.period_s) * 1e3)
            if interval > 1.5 * self.period_s:
                self.state_gaps += int(round(interval / self.period_s)) - 1
        self._last_stamp = stamp_ns

    def values(self) -> dict[str, str]:
        t, lat, jit = self.tick_ms, self.latency_ms, self.jitter_ms
        return {
            "tick_ms_p50": _ms(_percentile(t, 50)), "tick_ms_p99": _ms(_percentile(t, 99)),
            "tick_ms_max": _ms(self.worst_tick_ms),
            "latency_ms_p50": _ms(_percentile(lat, 50)), "latency_ms_p99": _ms(_percentile(lat, 99)),
            "latency_ms_max": _ms(max(lat) if lat else float("nan")),
            "tick_cpu_ms_p50": _ms(_percentile(self.tick_cpu_ms, 50)),
            "tick_cpu_ms_p99": _ms(_percentile(self.tick_cpu_ms, 99)),
            "blocked_ticks": str(self.blocked_ticks), "preempted_ticks": str(self.preempted_ticks),
            "jitter_ms_p99": _ms(_percentile(jit, 99)), "deadline_ms": _ms(self.deadline_s * 1e3),
            "deadline_misses": str(self.deadline_misses),
            "deadline_misses_off_cpu": str(self.deadline_misses_off_cpu), "state_gaps": str(self.state_gaps),
            "late_inputs": str(self.late_inputs),
        }


class PolicyNode(NodeLifetime):
    """The controller on a ROS transport: subscriptions, the watchdog, publishing and the status."""

    def __init__(self, config: PolicyNodeConfig, policy: Policy | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from intermimic_policy.ros.transport import make_node

        self.config = config
        self.clock = clock
        self.controller = PolicyController(config, policy if policy is not None else load_checked_policy(config))
        self.topics = t = resolved_topics(config)
        self.node = make_node(config.node_name, backend=config.transport, domain_id=config.domain_id,
                              namespace=config.namespace)
        q = config.qos
        c = self.controller
        self.period = 1.0 / c.contract.control_hz
        deadline = config.tick_deadline_ms * 1e-3 if config.tick_deadline_ms > 0 else 0.25 * self.period
        self.stats = LoopStats(self.period, deadline)
        # how long a tick may wait for the rest of its inputs before the watchdog answers it
        self.patience_s = min(x for x in c.timeouts.values() if x > 0) if config.lockstep else 0.25 * self.period
        try:
            self.pub_targets = self.node.create_publisher(t.pd_targets, PDTargets, q.pd_targets)
            self.pub_status = self.node.create_publisher(t.status, DiagnosticArray, q.status)
            # a robot's reference travels as RobotHOIFrame / RobotHOIWindow (its own sizes)
            robot = c.robot is not None
            self.subscriptions = [
                self.node.create_subscription(t.reference, RobotHOIFrame if robot else HOIFrame,
                                              self._deferred(c.on_robot_reference if robot else c.on_reference),
                                              q.reference),
                self.node.create_subscription(t.reference_window, RobotHOIWindow if robot else HOIWindow,
                                              self._deferred(c.on_robot_window if robot else c.on_window),
                                              q.reference),
                self.node.create_subscription(t.joint_states, JointState, self._on_joint_state, q.state),
                self.node.create_subscription(t.odom, Odometry, self._wrap(c.on_odometry), q.state),
                self.node.create_subscription(t.object_pose, PoseStamped, self._wrap(c.on_object_pose), q.state),
                self.node.create_subscription(t.contacts, ContactState, self._wrap(c.on_contacts), q.state),
            ]
            # the watchdog (not a control clock): 4x the control rate, so a late tick is noticed
            self.node.create_timer(self.period / 4, self._on_watchdog)
            self.node.create_timer(1.0 / config.status_hz, self.publish_status)
        except BaseException:
            self.node.destroy()
            raise
        # reference messages received but not parsed yet: (handler, message, arrival time)
        self.inbox: deque[tuple[Callable[[Any, float], bool], Any, float]] = deque()
        self.pending_stamp: int | None = None
        self.pending_rx: float | None = None
        self.arrivals: deque[float] = deque(maxlen=WARM_WINDOW + 1)  # state arrivals of answered ticks
        self.warm_at: float | None = None  # when to warm up before the next state (warm_lead_ms)
        self.warm_ups = 0
        self.last_answered: int | None = None
        self.last_result: TickResult | None = None
        self.scheduling = "normal"  # what ``apply_rt_priority`` applied to the process

    @property
    def latencies_ms(self) -> deque[float]:
        return self.stats.latency_ms

    # -- callbacks ----------------------------------------------------------------------------
    def _wrap(self, handler: Callable[[Any, float], bool]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            handler(msg, self.clock())
            self._service()
        return callback

    def _deferred(self, handler: Callable[[Any, float], bool]) -> Callable[[Any], None]:
        """Reference messages wait in the inbox and are parsed after the next tick is published,
        or before it when it needs them (:meth:`PolicyController.reference_current`). A streamer
        sends frames ahead of time, so a lookahead frame that arrives beside a state no longer
        delays that state's tick by its validation; the watchdog parses what waits while idle."""
        def callback(msg: Any) -> None:
            self.inbox.append((handler, msg, self.clock()))
            if len(self.inbox) >= INBOX_LIMIT:
                self.flush_inbox()
            self._service()
        return callback

    def flush_inbox(self) -> None:
        """Parse every waiting reference message, in arrival order, at its arrival time."""
        while self.inbox:
            handler, msg, arrived = self.inbox.popleft()
            handler(msg, arrived)

    def _on_joint_state(self, msg: JointState) -> None:
        now = self.clock()
        c = self.controller
        ok = c.on_joint_state(msg, now)
        stamp = ns_from_time(msg.header.stamp)
        nonfinite = not ok and "joint_states" in c.faults
        # a re-sent state of the pending tick keeps its first arrival time, so a peer that keeps
        # re-sending cannot starve the watchdog; stamps closer than half a period are decimated
        if (ok or nonfinite) and stamp not in (self.last_answered, self.pending_stamp):
            last = self.last_answered
            if last is None or stamp < last or stamp - last >= 0.5 * self.period * 1e9 or nonfinite:
                self.pending_stamp, self.pending_rx = stamp, now
        self._service()

    def _service(self, force: bool = False) -> None:
        """Answer the pending state tick once all its inputs arrived (forced by the watchdog)."""
        s = self.pending_stamp
        if s is None:
            return
        c = self.controller
        matched = c.state_stamp_complete(s)
        if not force and "joint_states" not in c.faults and not matched:
            return
        started = self.clock()
        tick0 = thread_cpu_and_switches()
        self.warm_at = None
        if self.inbox and not c.reference_current(started):
            self.flush_inbox()
        if self.config.lockstep:
            result = c.tick(started, s, matched=matched and not force)
        else:
            result = c.tick(started, s)
            if force and not matched and result.message is not None:
                self.stats.late_inputs += 1
        if result.message is None and not force:
            self.last_result = result
            self.flush_inbox()
            return
        self._emit(result, started, tick0, self.pending_rx, s)
        if result.message is not None:
            self.last_answered, self.pending_stamp = s, None

    def _on_watchdog(self) -> None:
        self.flush_inbox()
        now = self.clock()
        c = self.controller
        if self.pending_stamp is not None and self.pending_rx is not None:
            if now - self.pending_rx > self.patience_s:
                self._service(force=True)
            return
        stale = check_staleness(c.last_rx, now, c.timeouts)
        if stale.stale and c.last_sent is not None:
            # no state tick to answer (the robot or simulator is gone): report the hold
            c.enter_safe_hold(stale.describe())

    def _emit(self, result: TickResult, started: float, tick0: tuple[float, int, int], arrived: float | None,
              stamp_ns: int) -> None:
        self.last_result = result
        if result.message is None:
            self.flush_inbox()
            return
        self.pub_targets.publish(result.message)
        done = self.clock()
        cpu, blocked, preempted = thread_cpu_and_switches()
        cpu0, blocked0, preempted0 = tick0
        self.stats.record(started, arrived if arrived is not None else started, done, stamp_ns,
                          cpu - cpu0, blocked - blocked0, preempted - preempted0)
        self.flush_inbox()
        self.controller.prepare()
        if arrived is not None:
            self.arrivals.append(arrived)
            self._schedule_warm_up(done)
        if result.clipped_limit or result.clipped_slew:
            logger.debug("clamped joints: limits %s, slew %s", result.clipped_limit, result.clipped_slew)

    def _schedule_warm_up(self, now: float) -> None:
        """Warm up ``warm_lead_ms`` before the next state is due: the newest arrival plus the
        median of the recent arrival intervals (the period until there are two)."""
        lead = self.config.warm_lead_ms * 1e-3
        if lead <= 0:
            return
        a = self.arrivals
        gaps = sorted(a[i + 1] - a[i] for i in range(len(a) - 1)) or [self.period]
        due = a[-1] + gaps[len(gaps) // 2] - lead
        self.warm_at = due if due > now else None

    def _warm_up(self) -> None:
        self.warm_at = None
        if self.controller.warm():
            self.warm_ups += 1

    # -- status -------------------------------------------------------------------------------
    def status_values(self) -> dict[str, str]:
        c = self.controller
        k = c.counters
        values: dict[str, str] = {
            "mode": c.mode, "reason": c.reason, "lockstep": str(self.config.lockstep).lower(),
            "control_hz": f"{c.contract.control_hz:g}",
            "frame": "" if c.buffer.cursor is None else str(c.buffer.cursor),
            "clip_end": "" if c.buffer.clip_end is None else str(c.buffer.clip_end),
            **self.stats.values(),
            "scheduling": self.scheduling, "warm_ups": str(self.warm_ups),
            "reference_restarts": str(c.buffer.restarts), "reference_skipped_frames": str(c.buffer.skipped_frames),
            "reference_dropped_frames": str(c.buffer.dropped_frames),
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
        """Run callbacks (and the warm-ups, when on) until ``until()``, ``duration_s`` or the end."""
        if self.config.warm_lead_ms <= 0:
            self.node.spin(until=until, timeout_s=duration_s)
            return
        end = None if duration_s is None else time.monotonic() + duration_s
        while not self.node.destroyed and not (until is not None and until()):
            step = 0.1
            if end is not None:
                step = min(step, end - time.monotonic())
                if step <= 0:
                    return
            self.spin_once(step)

    def spin_once(self, timeout_s: float = 0.0) -> int:
        """Wait up to ``timeout_s`` for inputs and run their callbacks, or run a due warm-up."""
        if self.warm_at is not None:
            wait = self.warm_at - self.clock()
            if wait <= 0:
                self._warm_up()
                return 1
            timeout_s = min(timeout_s, wait)
        return self.node.spin_once(timeout_s)


def apply_rt_priority(priority: int) -> str:
    """Run this process under SCHED_FIFO at ``priority`` (0: leave it); call before any thread
    starts (threads inherit the policy). Returns what was applied, for the log and the status: a
    refusal (no CAP_SYS_NICE / rtprio limit) is reported, never fatal."""
    if priority <= 0:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        logger.warning("rt_priority %d not applied (%s): running with normal scheduling; grant CAP_SYS_NICE or an "
                       "rtprio limit (ulimit -r) to the node", priority, exc)
        return f"refused ({exc.__class__.__name__})"
    return f"fifo {priority}"


def freeze_startup_objects() -> None:
    """Move everything built at start-up (modules, policy, tables, the node) out of the garbage
    collector's reach: a full collection then walks only what the loop allocates, so it cannot
    stall a tick for milliseconds (``gc.freeze``; the loop itself allocates little)."""
    gc.collect()
    gc.freeze()


# -- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intermimic_policy_node",
                                description="Run an exported InterMimic policy as a ROS 2 node.")
    add_common_arguments(p)
    p.add_argument("--policy", help="exported ONNX policy (overrides the config)")
    p.add_argument("--lockstep", action="store_true", default=None,
                   help="the simulator waits for each answer (a matched tick is never stale)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--robot", default=None, help="drive this robot (config/robots/<name>.yaml; overrides the config)")
    return p


def _run(args: argparse.Namespace, params_file: str | None, stop: StopFlag) -> None:
    config = load_node_config(args.config or params_file, policy=args.policy, lockstep=args.lockstep,
                              domain_id=args.domain_id, transport=args.transport,
                              **({"robot": args.robot} if args.robot else {}))
    scheduling = apply_rt_priority(config.rt_priority)
    with PolicyNode(config) as node:
        node.scheduling = scheduling
        freeze_startup_objects()
        logger.info("policy %s %s on %s; lockstep=%s", Path(config.policy).name, describe(node.controller),
                    node.node.backend, config.lockstep)
        node.spin(args.duration, until=stop)
        node.publish_status()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("policy_node", build_parser(), _run, argv)


if __name__ == "__main__":
    exit_process(main())
