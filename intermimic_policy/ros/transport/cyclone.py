"""Cyclone DDS backend: a ROS 2 node without ROS, speaking ROS 2's wire format.

What makes it interoperate with ``rmw_cyclonedds_cpp`` nodes: topics named ``rt/<topic>``,
types named ``pkg::msg::dds_::Name_`` with ``@final`` (plain CDR) layouts identical to rosidl's,
QoS mapped as the rmw maps it, and the REP-2011 type hash in each endpoint's USER_DATA (what
Jazzy expects). Not implemented: the ``ros_discovery_info`` graph topic, so ``ros2 node list``
does not show these nodes (``ros2 topic list/echo`` do see their topics).

One DomainParticipant per node. Subscriptions are served by a WaitSet inside ``spin_once``:
callbacks run in the spinning thread. Each sample is taken and deserialized on its own, so a
sample that fails to deserialize (a peer built from another message definition) is counted,
logged and dropped, and the node carries on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cyclonedds.core import (
    DDSException,
    GuardCondition,
    InstanceState,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from intermimic_policy.ros import fast_cdr
from intermimic_policy.ros.msgs import (
    MessageError,
    is_message_type,
    ns_from_time,
    ros_type_name,
    type_hash,
    validate,
)
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.qos import CLOCK_QOS, QosLike, resolve_qos, to_cyclone_qos
from intermimic_policy.ros.transport import loopback_guard
from intermimic_policy.ros.transport.base import (
    Logger,
    MsgT,
    Node,
    Publisher,
    Subscription,
    Timer,
    TransportError,
    dds_topic_name,
    resolve_domain_id,
    resolve_topic_name,
    validate_node_name,
)
from intermimic_policy.ros.transport.cyclone_config import NetworkConfig, default_network_config

fast_cdr.install()  # the per-tick messages (de)serialise as numpy buffers

_ANY_STATE = SampleState.Any | ViewState.Any | InstanceState.Any
# Samples taken per subscription per spin_once: bounds the time one busy topic can hold the
# loop (timers and other topics get their turn); the rest is served on the next spin.
MAX_SAMPLES_PER_SPIN = 256
_MALFORMED_LOG_INTERVAL_S = 1.0


def _delete(entity: Any) -> None:
    """Delete a DDS entity now (cyclonedds ties deletion to ``__del__``)."""
    try:
        entity.__del__()
    except Exception:  # noqa: BLE001 - deleting during teardown must not mask the real error
        pass


@dataclass
class _DomainEntry:
    domain: Domain | None
    xml: str | None
    refs: int


_DOMAINS: dict[int, _DomainEntry] = {}
_DOMAINS_LOCK = threading.Lock()


def _acquire_domain(domain_id: int, network: NetworkConfig | None) -> None:
    """Create the process's Domain with our network configuration on first use.

    Cyclone has one configuration per domain and process, so every node of a process on one
    domain must agree on it.
    """
    config = network if network is not None else default_network_config()
    xml = config.to_xml() if config is not None else None
    with _DOMAINS_LOCK:
        entry = _DOMAINS.get(domain_id)
        if entry is not None:
            if entry.xml != xml:
                raise TransportError(
                    f"DDS domain {domain_id} is already open in this process with another "
                    "network configuration; all nodes of a process on one domain must share it")
            entry.refs += 1
            return
        guard = config is not None and config.xml is None and loopback_guard.is_loopback_only(
            config.interfaces)
        before = loopback_guard.open_udp_any_fds() if guard else set()
        try:
            domain = Domain(domain_id, xml) if xml is not None else None
        except DDSException as exc:
            raise TransportError(f"cannot open DDS domain {domain_id} with the given network "
                                 f"configuration: {exc}") from exc
        if guard:
            # Cyclone binds its receive sockets to 0.0.0.0 whatever the interfaces say: make
            # them loopback-only too (see loopback_guard)
            try:
                restricted = loopback_guard.restrict_new_sockets(before)
            except OSError as exc:
                _delete(domain)
                raise TransportError(f"cannot restrict DDS domain {domain_id}'s receive sockets "
                                     f"to loopback: {exc}") from exc
            if not restricted:
                logging.getLogger("intermimic.ros").warning(
                    "DDS domain %d: no 0.0.0.0 receive socket found to restrict to loopback "
                    "(not Linux?): Cyclone may accept datagrams from other hosts", domain_id)
        _DOMAINS[domain_id] = _DomainEntry(domain, xml, 1)


def _release_domain(domain_id: int) -> None:
    with _DOMAINS_LOCK:
        entry = _DOMAINS.get(domain_id)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            del _DOMAINS[domain_id]
            if entry.domain is not None:
                _delete(entry.domain)


class _NodeLogger:
    """A ``logging.Logger`` with rclpy's method names (``warn`` as well as ``warning``)."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def debug(self, msg: str) -> None:
        self._log.debug(msg)

    def info(self, msg: str) -> None:
        self._log.info(msg)

    def warning(self, msg: str) -> None:
        self._log.warning(msg)

    warn = warning

    def error(self, msg: str) -> None:
        self._log.error(msg)

    def fatal(self, msg: str) -> None:
        self._log.critical(msg)


class CyclonePublisher(Publisher):
    def __init__(self, node: CycloneNode, topic: str, msg_type: type, writer: DataWriter) -> None:
        self._node = node
        self.topic = topic
        self.msg_type = msg_type
        self._writer: DataWriter | None = writer
        # the fast codecs check shapes and types while encoding (a bad field fails the write,
        # and ``validate`` then names it); the generic walk costs more than the encoding
        self._fast = bool(getattr(msg_type, "_fast_cdr", False))

    def publish(self, msg: Any) -> None:
        if self._writer is None:
            raise TransportError(f"publisher on {self.topic} is destroyed")
        if not isinstance(msg, self.msg_type):
            raise MessageError(f"{self.topic} takes {ros_type_name(self.msg_type)}, "
                               f"got {type(msg).__name__}")
        if not self._fast:
            validate(msg, elements=False)
        try:
            self._writer.write(msg)
        except DDSException as exc:
            raise TransportError(f"writing to {self.topic} failed: {exc}") from exc
        except Exception as exc:
            validate(msg)  # names the offending field when it can
            raise MessageError(f"{self.topic}: cannot serialize {type(msg).__name__}: {exc}") from exc

    def subscription_count(self) -> int:
        return 0 if self._writer is None else len(self._writer.get_matched_subscriptions())

    def wait_for_all_acked(self, timeout_s: float) -> bool:
        if self._writer is None:
            raise TransportError(f"publisher on {self.topic} is destroyed")
        return bool(self._writer.wait_for_acks(int(max(0.0, timeout_s) * 1e9)))

    def destroy(self) -> None:
        if self._writer is not None:
            _delete(self._writer)
            self._writer = None
            self._node._forget(self)


class CycloneSubscription(Subscription):
    def __init__(self, node: CycloneNode, topic: str, msg_type: type, reader: DataReader,
                 callback: Callable[[Any], Any]) -> None:
        self._node = node
        self.topic = topic
        self.msg_type = msg_type
        self._reader: DataReader | None = reader
        self._condition: ReadCondition | None = ReadCondition(reader, _ANY_STATE)
        self._callback = callback
        self.received = 0
        self.malformed = 0
        self._last_malformed_log = -math.inf
        self.backlog = False

    def _drain(self) -> int:
        """Take and deliver what is waiting, one sample at a time (see module docstring)."""
        ran = 0
        self.backlog = False
        while self._reader is not None:
            if ran >= MAX_SAMPLES_PER_SPIN:
                self.backlog = True
                break
            try:
                samples = self._reader.take(1)
            except DDSException as exc:
                raise TransportError(f"taking samples from {self.topic} failed: {exc}") from exc
            except Exception as exc:  # the sample is already taken: drop it, keep serving
                self._on_malformed(exc)
                continue
            if not samples:
                break
            sample = samples[0]
            if not isinstance(sample, self.msg_type):
                continue  # an invalid sample: a writer went away (no data to deliver)
            self.received += 1
            ran += 1
            self._callback(sample)
        return ran

    def _on_malformed(self, exc: Exception) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._last_malformed_log >= _MALFORMED_LOG_INTERVAL_S:
            self._last_malformed_log = now
            self._node.get_logger().warning(
                f"dropped a malformed {ros_type_name(self.msg_type)} sample on {self.topic} "
                f"({self.malformed} so far): {type(exc).__name__}: {exc}")

    def publisher_count(self) -> int:
        return 0 if self._reader is None else len(self._reader.get_matched_publications())

    def matched_publications(self) -> list[Any]:
        """Discovery data (``cyclonedds.builtin.DcpsEndpoint``: DDS topic and type names, QoS
        with USER_DATA) of the matched writers: what this reader sees of its peers."""
        if self._reader is None:
            return []
        found = (self._reader.get_matched_publication_data(h)
                 for h in self._reader.get_matched_publications())
        return [d for d in found if d is not None]

    def destroy(self) -> None:
        if self._reader is not None:
            self._node._detach(self)
            if self._condition is not None:
                _delete(self._condition)
            _delete(self._reader)
            self._reader = None
            self._condition = None
            self._node._forget(self)


class CycloneTimer(Timer):
    def __init__(self, node: CycloneNode, period_s: float, callback: Callable[[], Any]) -> None:
        if not (isinstance(period_s, (int, float)) and math.isfinite(period_s) and period_s > 0):
            raise TransportError(f"timer period must be a positive number of seconds, got {period_s!r}")
        self._node = node
        self.period_s = float(period_s)
        self.period_ns = max(1, round(period_s * 1e9))
        self.callback = callback
        self._canceled = False
        self.restart(node.now_ns(), node.sim_time_active)

    def cancel(self) -> None:
        self._canceled = True

    @property
    def canceled(self) -> bool:
        return self._canceled

    def restart(self, now_ns: int, sim_time: bool) -> None:
        self.next_due_ns = now_ns + self.period_ns
        self.sim_time = sim_time
        self.last_now_ns = now_ns


class CycloneNode(Node):
    """A node on Cyclone DDS. Build it through ``make_node(..., backend="cyclone")``."""

    backend = "cyclone"

    def __init__(self, name: str, *, domain_id: int | None = None, namespace: str = "/",
                 use_sim_time: bool = False, network: NetworkConfig | None = None) -> None:
        self.namespace = validate_node_name(name, namespace)
        self.name = name
        self.domain_id = resolve_domain_id(domain_id)
        self.use_sim_time = bool(use_sim_time)
        logger_name = "intermimic.ros" + (self.namespace.replace("/", ".") if self.namespace != "/"
                                          else "") + f".{name}"
        self._logger = _NodeLogger(logger_name)
        self._destroyed = True
        _acquire_domain(self.domain_id, network)
        try:
            self._participant = DomainParticipant(self.domain_id)
            self._waitset = WaitSet(self._participant)
            self._guard = GuardCondition(self._participant)
            self._waitset.attach(self._guard)
        except DDSException as exc:
            _release_domain(self.domain_id)
            raise TransportError(f"cannot create a DDS participant on domain {self.domain_id}: "
                                 f"{exc}") from exc
        self._destroyed = False
        self._topics: dict[str, Topic] = {}
        self._publishers: list[CyclonePublisher] = []
        self._subscriptions: list[CycloneSubscription] = []
        self._timers: list[CycloneTimer] = []
        self._sim_time_ns: int | None = None
        if self.use_sim_time:
            self.create_subscription("/clock", Clock, self._on_clock, CLOCK_QOS)

    # ------------------------------------------------------------------------------ entities

    def _check_alive(self) -> None:
        if self._destroyed:
            raise TransportError(f"node {self.name!r} is destroyed")

    def _topic(self, fq: str, msg_type: type) -> Topic:
        if not is_message_type(msg_type):
            raise MessageError(f"{msg_type!r} is not a message class from intermimic_policy.ros.msgs")
        dds_name = dds_topic_name(fq)
        topic = self._topics.get(dds_name)
        if topic is not None:
            if topic.data_type is not msg_type:
                raise TransportError(f"topic {fq} is already used with "
                                     f"{ros_type_name(topic.data_type)} in node {self.name!r}, "
                                     f"not {ros_type_name(msg_type)}")
            return topic
        try:
            topic = Topic(self._participant, dds_name, msg_type)
        except DDSException as exc:
            raise TransportError(f"cannot create topic {fq} ({ros_type_name(msg_type)}): {exc}") from exc
        self._topics[dds_name] = topic
        return topic

    def create_publisher(self, topic: str, msg_type: type[MsgT], qos: QosLike = "reliable") -> Publisher:
        self._check_alive()
        fq = resolve_topic_name(topic, self.namespace, self.name)
        dds_qos = to_cyclone_qos(resolve_qos(qos), type_hash=type_hash(msg_type))  # type: ignore[arg-type]
        writer = DataWriter(self._participant, self._topic(fq, msg_type), dds_qos)
        pub = CyclonePublisher(self, fq, msg_type, writer)
        self._publishers.append(pub)
        return pub

    def create_subscription(self, topic: str, msg_type: type[MsgT], callback: Callable[[MsgT], Any],
                            qos: QosLike = "reliable") -> Subscription:
        self._check_alive()
        if not callable(callback):
            raise TransportError(f"subscription callback for {topic!r} is not callable")
        fq = resolve_topic_name(topic, self.namespace, self.name)
        dds_qos = to_cyclone_qos(resolve_qos(qos), type_hash=type_hash(msg_type))  # type: ignore[arg-type]
        reader = DataReader(self._participant, self._topic(fq, msg_type), dds_qos)
        sub = CycloneSubscription(self, fq, msg_type, reader, callback)
        assert sub._condition is not None
        self._waitset.attach(sub._condition)
        # /clock first, so that callbacks of a spin already see the newest sim time.
        if fq == "/clock" and self.use_sim_time:
            self._subscriptions.insert(0, sub)
        else:
            self._subscriptions.append(sub)
        return sub

    def create_timer(self, period_s: float, callback: Callable[[], Any]) -> Timer:
        self._check_alive()
        timer = CycloneTimer(self, period_s, callback)
        self._timers.append(timer)
        return timer

    def _detach(self, sub: CycloneSubscription) -> None:
        if not self._destroyed and sub._condition is not None:
            self._waitset.detach(sub._condition)

    def _forget(self, entity: object) -> None:
        for group in (self._publishers, self._subscriptions):
            if entity in group:
                group.remove(entity)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------- clock

    def _on_clock(self, msg: Clock) -> None:
        self._sim_time_ns = ns_from_time(msg.clock)

    def now_ns(self) -> int:
        if self.use_sim_time and self._sim_time_ns is not None:
            return self._sim_time_ns
        return time.time_ns()

    @property
    def sim_time_active(self) -> bool:
        return self.use_sim_time and self._sim_time_ns is not None

    # ------------------------------------------------------------------------------ spin

    def _fire_timers(self) -> int:
        self._timers = [t for t in self._timers if not t.canceled]
        if not self._timers:
            return 0
        now = self.now_ns()
        sim_time = self.sim_time_active
        ran = 0
        for t in list(self._timers):
            if t.sim_time != sim_time or now < t.last_now_ns:
                # The clock switched from wall to sim time, or jumped back (a sim reset):
                # restart from now, as ROS timers do on a time jump.
                t.restart(now, sim_time)
            t.last_now_ns = now
            if t.canceled or now < t.next_due_ns:
                continue
            missed = (now - t.next_due_ns) // t.period_ns
            t.next_due_ns += (missed + 1) * t.period_ns  # skip missed periods, as rcl does
            t.callback()
            ran += 1
            if self._destroyed:
                break
        return ran

    def _wait_ns(self, timeout_s: float | None) -> int:
        if any(s.backlog for s in self._subscriptions):
            return 0
        wait = math.inf if timeout_s is None else max(0.0, timeout_s) * 1e9
        live = [t.next_due_ns for t in self._timers if not t.canceled]
        if live and not self.sim_time_active:
            # Wall-clock timers: wake up when the next one is due. Sim-time timers are checked
            # whenever /clock arrives (its reader is in the wait set).
            wait = min(wait, max(0, min(live) - time.time_ns()))
        return duration(infinite=True) if math.isinf(wait) else int(wait)

    def spin_once(self, timeout_s: float | None = 0.0) -> int:
        self._check_alive()
        try:
            self._waitset.wait(self._wait_ns(timeout_s))
        except DDSException as exc:
            raise TransportError(f"node {self.name!r}: waiting for DDS data failed: {exc}") from exc
        self._guard.take()
        ran = 0
        for sub in list(self._subscriptions):
            if self._destroyed:
                return ran
            ran += sub._drain()
        if not self._destroyed:
            ran += self._fire_timers()
        return ran

    def wake(self) -> None:
        """Make a blocked ``spin_once`` return now (callable from another thread)."""
        if not self._destroyed:
            self._guard.set(True)

    # -------------------------------------------------------------------------- lifetime

    def get_logger(self) -> Logger:
        return self._logger

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        _delete(self._waitset)
        for sub in list(self._subscriptions):
            sub.destroy()
        for pub in list(self._publishers):
            pub.destroy()
        self._timers.clear()
        for topic in self._topics.values():
            _delete(topic)
        self._topics.clear()
        _delete(self._guard)
        _delete(self._participant)
        _release_domain(self.domain_id)

    def __del__(self) -> None:
        if not getattr(self, "_destroyed", True):
            try:
                self.destroy()
            except Exception:  # noqa: BLE001 - garbage collection (maybe at exit): nothing to report to
                pass
