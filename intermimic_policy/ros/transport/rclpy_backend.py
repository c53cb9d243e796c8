"""rclpy backend: the same node API on a real ROS 2 node (any RMW).

Node code keeps using our dataclasses; this backend converts them field by field to and from
the rosidl-generated classes. NOT TESTED in this repository: rclpy cannot be installed on the
machines that run the test suite, so this file is kept small and plain on purpose (the field
tables it walks are the ones ``tests/test_ros_msgs.py`` checks against the .msg definitions).
Differences from the Cyclone backend: deserialization errors are handled (and logged) by the
RMW, so ``Subscription.malformed`` stays 0; with ``use_sim_time`` ROS timers wait for the first
/clock message, while ``now()`` falls back to wall time until then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from intermimic_policy.ros.msgs import FieldInfo, MessageError, fields_of, ros_type_name, validate
from intermimic_policy.ros.qos import QosLike, to_rclpy_qos
from intermimic_policy.ros.transport.base import (
    Logger,
    MsgT,
    Node,
    Publisher,
    Subscription,
    Timer,
    TransportError,
    resolve_domain_id,
    resolve_topic_name,
    validate_node_name,
)


def ros_class(msg_type: type) -> Any:
    """The rosidl-generated class for one of our message classes."""
    from rosidl_runtime_py.utilities import get_message

    return get_message(ros_type_name(msg_type))


_PYTHON_OF = {"bool": bool, "string": str, "float32": float, "float64": float}


def _python(info: FieldInfo, value: Any) -> Any:
    """A primitive as the exact Python type rclpy's setters assert (numpy scalars are not)."""
    if info.base == "byte":
        return bytes([int(value)])
    return _PYTHON_OF.get(info.base, int)(value)


def to_ros(msg: Any) -> Any:
    """Our dataclass -> the rclpy message (``byte`` fields become 1-byte ``bytes``)."""
    out = ros_class(type(msg))()
    for info in fields_of(type(msg)):
        value = getattr(msg, info.name)
        if info.nested is not None:
            value = to_ros(value) if info.kind == "none" else [to_ros(v) for v in value]
        elif info.kind == "none":
            value = _python(info, value)
        else:
            value = [_python(info, v) for v in value]
        setattr(out, info.name, value)
    return out


def from_ros(ros_msg: Any, msg_type: type[MsgT]) -> MsgT:
    """The rclpy message -> our dataclass (numpy / array.array values become lists)."""
    kwargs: dict[str, Any] = {}
    for info in fields_of(msg_type):
        value = getattr(ros_msg, info.name)
        if info.nested is not None:
            value = (from_ros(value, info.nested) if info.kind == "none"
                     else [from_ros(v, info.nested) for v in value])
        elif info.base == "byte":
            value = value[0] if info.kind == "none" else [b[0] for b in value]
        elif info.kind != "none":
            value = value.tolist() if hasattr(value, "tolist") else list(value)
        kwargs[info.name] = value
    return msg_type(**kwargs)


class RclpyPublisher(Publisher):
    def __init__(self, node: Any, publisher: Any, topic: str, msg_type: type) -> None:
        self._node = node
        self._pub = publisher
        self.topic = topic
        self.msg_type = msg_type

    def publish(self, msg: Any) -> None:
        if not isinstance(msg, self.msg_type):
            raise MessageError(f"{self.topic} takes {ros_type_name(self.msg_type)}, "
                               f"got {type(msg).__name__}")
        validate(msg, elements=False)
        self._pub.publish(to_ros(msg))

    def subscription_count(self) -> int:
        return int(self._pub.get_subscription_count())

    def wait_for_all_acked(self, timeout_s: float) -> bool:
        from rclpy.duration import Duration

        return bool(self._pub.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9))))

    def destroy(self) -> None:
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None


class RclpySubscription(Subscription):
    def __init__(self, node: Any, topic: str, msg_type: type, callback: Callable[[Any], Any],
                 qos: QosLike) -> None:
        self._node = node
        self.topic = topic
        self.msg_type = msg_type
        self.received = 0
        self.malformed = 0

        def deliver(ros_msg: Any) -> None:
            self.received += 1
            callback(from_ros(ros_msg, msg_type))  # counted by the node's wrapper

        self._sub = node.create_subscription(ros_class(msg_type), topic, deliver, to_rclpy_qos(qos))

    def publisher_count(self) -> int:
        return int(self._node.count_publishers(self.topic))

    def destroy(self) -> None:
        if self._sub is not None:
            self._node.destroy_subscription(self._sub)
            self._sub = None


class RclpyTimer(Timer):
    def __init__(self, node: Any, period_s: float, callback: Callable[[], Any]) -> None:
        self.period_s = float(period_s)
        self._timer = node.create_timer(period_s, callback)

    def cancel(self) -> None:
        self._timer.cancel()

    @property
    def canceled(self) -> bool:
        return bool(self._timer.is_canceled())


class RclpyNode(Node):
    """A node on rclpy. Build it through ``make_node(..., backend="rclpy")``."""

    backend = "rclpy"

    def __init__(self, name: str, *, domain_id: int | None = None, namespace: str = "/",
                 use_sim_time: bool = False) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node as RosNode
        from rclpy.parameter import Parameter

        self.namespace = validate_node_name(name, namespace)
        self.name = name
        self.use_sim_time = bool(use_sim_time)
        domain = resolve_domain_id(domain_id)
        if not rclpy.ok():
            rclpy.init(domain_id=domain)
        self._node = RosNode(name, namespace=self.namespace, parameter_overrides=[
            Parameter("use_sim_time", Parameter.Type.BOOL, self.use_sim_time)])
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self._node)
        self._destroyed = False
        self._callbacks_run = 0

    def _counted(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            self._callbacks_run += 1
            return callback(*args)

        return run

    def _check_alive(self) -> None:
        if self._destroyed:
            raise TransportError(f"node {self.name!r} is destroyed")

    def create_publisher(self, topic: str, msg_type: type[MsgT], qos: QosLike = "reliable") -> Publisher:
        self._check_alive()
        fq = resolve_topic_name(topic, self.namespace, self.name)
        pub = self._node.create_publisher(ros_class(msg_type), fq, to_rclpy_qos(qos))
        return RclpyPublisher(self._node, pub, fq, msg_type)

    def create_subscription(self, topic: str, msg_type: type[MsgT], callback: Callable[[MsgT], Any],
                            qos: QosLike = "reliable") -> Subscription:
        self._check_alive()
        fq = resolve_topic_name(topic, self.namespace, self.name)
        return RclpySubscription(self._node, fq, msg_type, self._counted(callback), qos)

    def create_timer(self, period_s: float, callback: Callable[[], Any]) -> Timer:
        self._check_alive()
        return RclpyTimer(self._node, period_s, self._counted(callback))

    def spin_once(self, timeout_s: float | None = 0.0) -> int:
        self._check_alive()
        before = self._callbacks_run
        self._executor.spin_once(timeout_sec=timeout_s)
        return self._callbacks_run - before

    def now_ns(self) -> int:
        t = int(self._node.get_clock().now().nanoseconds)
        if self.use_sim_time and t == 0:
            return time.time_ns()  # no /clock yet
        return t

    def get_logger(self) -> Logger:
        return self._node.get_logger()  # type: ignore[no-any-return]

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        self._executor.remove_node(self._node)
        self._executor.shutdown()
        self._node.destroy_node()
