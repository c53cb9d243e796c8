"""One node API, two transports: rclpy where ROS 2 is installed, Cyclone DDS everywhere else.

::

    from intermimic_policy.ros.transport import make_node
    from intermimic_policy.ros.msgs.sensor_msgs import JointState

    with make_node("demo", backend="cyclone") as node:
        pub = node.create_publisher("/joint_states", JointState, "sensor_data")
        node.create_timer(0.02, lambda: pub.publish(JointState(header=...)))
        node.spin()

``backend="auto"`` takes ``$INTERMIMIC_ROS_BACKEND`` when set, else rclpy when it imports,
else Cyclone DDS. The Cyclone backend talks on loopback only unless given a
:class:`NetworkConfig` or ``$CYCLONEDDS_URI``.
"""

from __future__ import annotations

import os

from intermimic_policy.ros.transport.base import (
    Logger,
    Node,
    Publisher,
    Subscription,
    Timer,
    TransportError,
    dds_topic_name,
    resolve_domain_id,
    resolve_topic_name,
)
from intermimic_policy.ros.transport.cyclone_config import NetworkConfig, default_network_config

BACKENDS = ("cyclone", "rclpy")


def rclpy_available() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` -> ``$INTERMIMIC_ROS_BACKEND`` or rclpy when importable or cyclone."""
    if backend == "auto":
        backend = os.environ.get("INTERMIMIC_ROS_BACKEND", "").strip() or "auto"
    if backend == "auto":
        return "rclpy" if rclpy_available() else "cyclone"
    if backend not in BACKENDS:
        raise TransportError(f"unknown ROS backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if backend == "rclpy" and not rclpy_available():
        raise TransportError("backend 'rclpy' asked for but rclpy does not import "
                             "(source your ROS 2 setup, or use backend='cyclone')")
    return backend


def make_node(name: str, *, backend: str = "auto", domain_id: int | None = None,
              namespace: str = "/", use_sim_time: bool = False,
              network: NetworkConfig | None = None) -> Node:
    """A node named ``name`` on ``domain_id`` (default ``$ROS_DOMAIN_ID`` or 0).

    ``use_sim_time``: the node clock follows /clock once a message arrives. ``network``:
    Cyclone backend only (rclpy reads its RMW's own configuration).
    """
    chosen = resolve_backend(backend)
    if chosen == "cyclone":
        from intermimic_policy.ros.transport.cyclone import CycloneNode

        return CycloneNode(name, domain_id=domain_id, namespace=namespace,
                           use_sim_time=use_sim_time, network=network)
    if network is not None:
        raise TransportError("a NetworkConfig applies to the cyclone backend only; configure the "
                             "rclpy RMW through its own environment (e.g. CYCLONEDDS_URI)")
    from intermimic_policy.ros.transport.rclpy_backend import RclpyNode

    return RclpyNode(name, domain_id=domain_id, namespace=namespace, use_sim_time=use_sim_time)


__all__ = [
    "BACKENDS", "Logger", "NetworkConfig", "Node", "Publisher", "Subscription", "Timer",
    "TransportError", "dds_topic_name", "default_network_config", "make_node", "rclpy_available",
    "resolve_backend", "resolve_domain_id", "resolve_topic_name",
]
