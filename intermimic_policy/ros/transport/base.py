"""The one node API every intermimic ROS node is written against, whatever carries the bytes.

Why: the policy node, the motion streamer and the sim bridge must run both inside a ROS 2
install (rclpy) and on machines without ROS (plain Cyclone DDS speaking the ROS 2 wire format).
They see this small, rclpy-shaped API: publishers, subscriptions, timers, a clock and a logger,
with messages always being our dataclasses from :mod:`intermimic_policy.ros.msgs`.

Callbacks run in the thread that calls :meth:`Node.spin_once` / :meth:`Node.spin`, never in a
middleware thread, so node code needs no locks. A node is not thread-safe: use it from one
thread.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from intermimic_policy.errors import IntermimicError
from intermimic_policy.ros.msgs import time_from_ns
from intermimic_policy.ros.msgs.builtin_interfaces import Time
from intermimic_policy.ros.qos import QosLike

MsgT = TypeVar("MsgT")

# ROS 2 domain ids: 0..232 keep every DDS port under 65535 with the default port mapping.
MAX_DOMAIN_ID = 232

_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_FQ_NAME = re.compile(rf"^(/{_TOKEN})+$")


class TransportError(IntermimicError):
    """A node, topic or middleware setting that cannot work (the message says which)."""


class Logger(Protocol):
    """What node code may call on ``node.get_logger()`` (rclpy's logger has the same methods)."""

    def debug(self, msg: str) -> Any: ...

    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...

    def error(self, msg: str) -> Any: ...


def resolve_domain_id(domain_id: int | None) -> int:
    """``domain_id``, else ``$ROS_DOMAIN_ID``, else 0; checked against the valid range."""
    if domain_id is None:
        text = os.environ.get("ROS_DOMAIN_ID", "").strip()
        try:
            domain_id = int(text) if text else 0
        except ValueError:
            raise TransportError(f"ROS_DOMAIN_ID={text!r} is not an integer") from None
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) \
            or not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise TransportError(f"domain id {domain_id!r} is outside 0..{MAX_DOMAIN_ID}")
    return domain_id


def validate_node_name(name: str, namespace: str) -> str:
    """The node's namespace in canonical form; raises on a name ROS 2 would refuse."""
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        raise TransportError(f"invalid node name {name!r}: use letters, digits and '_', "
                             "not starting with a digit")
    ns = "/" + namespace.strip("/") if namespace not in ("", "/") else "/"
    if ns != "/" and not _FQ_NAME.match(ns):
        raise TransportError(f"invalid node namespace {namespace!r}")
    return ns


def resolve_topic_name(topic: str, namespace: str = "/", node_name: str | None = None) -> str:
    """The fully qualified ROS name of ``topic`` (relative names join the node's namespace,
    ``~`` is the node's private namespace), as rcl expands it."""
    if not isinstance(topic, str) or not topic:
        raise TransportError(f"invalid topic name {topic!r}: empty")
    base = namespace.rstrip("/")
    if topic.startswith("~"):
        if node_name is None:
            raise TransportError(f"topic {topic!r} needs a node name to expand '~'")
        rest = topic[1:]
        if rest and not rest.startswith("/"):
            raise TransportError(f"invalid topic name {topic!r}: '~' must be followed by '/'")
        fq = f"{base}/{node_name}{rest}"
    elif topic.startswith("/"):
        fq = topic
    else:
        fq = f"{base}/{topic}"
    if not _FQ_NAME.match(fq):
        raise TransportError(f"invalid topic name {topic!r} (resolved to {fq!r}): tokens are "
                             "letters, digits and '_', not starting with a digit, separated by '/'")
    return fq


def dds_topic_name(fq_topic: str) -> str:
    """The DDS topic ROS 2 uses for a fully qualified topic: ``/a/b`` -> ``rt/a/b``."""
    return "rt" + fq_topic


class Publisher(ABC):
    """Publishes messages of one type on one topic."""

    topic: str
    msg_type: type

    @abstractmethod
    def publish(self, msg: Any) -> None:
        """Send ``msg``; a message that cannot be serialized raises ``MessageError``."""

    @abstractmethod
    def subscription_count(self) -> int:
        """How many subscriptions currently match (useful to wait for a peer)."""

    @abstractmethod
    def wait_for_all_acked(self, timeout_s: float) -> bool:
        """Block until every reliable subscriber acknowledged what was published (e.g. before
        exiting); False on timeout."""

    @abstractmethod
    def destroy(self) -> None: ...


class Subscription(ABC):
    """Delivers messages of one type on one topic to a callback inside ``spin_once``.

    ``received`` counts delivered messages; ``malformed`` counts samples that failed to
    deserialize (dropped and logged, never raised: a bad peer must not stop the node).
    """

    topic: str
    msg_type: type
    received: int = 0
    malformed: int = 0

    @abstractmethod
    def publisher_count(self) -> int:
        """How many publishers currently match."""

    @abstractmethod
    def destroy(self) -> None: ...


class Timer(ABC):
    """Calls a callback every ``period_s`` seconds of the node's clock (sim time if used)."""

    period_s: float

    @abstractmethod
    def cancel(self) -> None: ...

    @property
    @abstractmethod
    def canceled(self) -> bool: ...


class Node(ABC):
    """A ROS 2 node: see the module docstring. Use as a context manager to destroy it."""

    name: str
    namespace: str
    backend: str
    use_sim_time: bool

    @abstractmethod
    def create_publisher(self, topic: str, msg_type: type[MsgT], qos: QosLike = "reliable") -> Publisher:
        """A publisher; ``qos`` is a profile name (:mod:`intermimic_policy.ros.qos`), a depth or
        a ``QosProfile``."""

    @abstractmethod
    def create_subscription(self, topic: str, msg_type: type[MsgT], callback: Callable[[MsgT], Any],
                            qos: QosLike = "reliable") -> Subscription:
        """A subscription whose ``callback(msg)`` runs inside ``spin_once``."""

    @abstractmethod
    def create_timer(self, period_s: float, callback: Callable[[], Any]) -> Timer:
        """A timer on the node's clock; its callback runs inside ``spin_once``."""

    @abstractmethod
    def spin_once(self, timeout_s: float | None = 0.0) -> int:
        """Wait up to ``timeout_s`` (None: forever) for work, run what is ready, return how
        many callbacks ran."""

    @abstractmethod
    def now_ns(self) -> int:
        """The node clock in integer nanoseconds: sim time when ``use_sim_time`` and a /clock
        message has arrived, wall time (since the Unix epoch) otherwise."""

    @abstractmethod
    def get_logger(self) -> Logger: ...

    @abstractmethod
    def destroy(self) -> None:
        """Release every middleware resource; idempotent. A running ``spin`` returns."""

    @property
    @abstractmethod
    def destroyed(self) -> bool: ...

    def now(self) -> float:
        """The node clock in seconds (see :meth:`now_ns`)."""
        return self.now_ns() * 1e-9

    def stamp(self) -> Time:
        """The node clock as a ``builtin_interfaces/Time`` for a message header (exact)."""
        return time_from_ns(self.now_ns())

    def spin(self, until: Callable[[], bool] | None = None, timeout_s: float | None = None) -> bool:
        """Run callbacks until ``until()`` is true, the node is destroyed, or ``timeout_s``
        seconds (wall) have passed. Returns whether ``until`` was satisfied."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.destroyed:
            if until is not None and until():
                return True
            step = 0.1
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                step = min(step, remaining)
            self.spin_once(step)
        return bool(until is not None and until())

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
