"""The Cyclone DDS transport: real DDS on loopback, real helper processes, ROS 2 wire names."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedds.qos import Policy

from intermimic_policy.ros import msgs
from intermimic_policy.ros.msgs import MessageError
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.qos import QosError, QosProfile, resolve_qos, to_cyclone_qos
from intermimic_policy.ros.transport import (
    NetworkConfig,
    Node,
    TransportError,
    default_network_config,
    make_node,
    resolve_backend,
    resolve_domain_id,
    resolve_topic_name,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_helpers import samples  # noqa: E402

HELPER = Path(__file__).resolve().parent / "ros_helpers" / "publisher.py"
REPO = Path(__file__).resolve().parents[1]
# One domain per test run (from the pid) so that parallel runs on a machine never cross.
DOMAIN = 100 + os.getpid() % 120


@pytest.fixture
def prefix() -> str:
    return f"/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def node_factory() -> Iterator[Any]:
    nodes: list[Node] = []

    def make(name: str, **kwargs: Any) -> Node:
        node = make_node(name, backend="cyclone", domain_id=DOMAIN, **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy()


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("CYCLONEDDS_URI", None)  # the helper must use the same loopback default
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, str(HELPER), *args, "--domain", str(DOMAIN)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=10)
    return out, err


# --------------------------------------------------------------------------- two processes


def test_hoi_frames_and_joint_states_cross_processes(node_factory: Any, prefix: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CYCLONEDDS_URI", raising=False)
    node = node_factory("receiver")
    frames: list[tuple[HOIFrame, int]] = []
    states: list[tuple[JointState, int]] = []
    qos = QosProfile(depth=100)
    frame_sub = node.create_subscription(f"{prefix}/hoi_frame", HOIFrame,
                                         lambda m: frames.append((m, time.time_ns())), qos)
    state_sub = node.create_subscription(f"{prefix}/joint_states", JointState,
                                         lambda m: states.append((m, time.time_ns())), qos)
    count = 30
    started = time.time_ns()
    proc = _spawn("stream", "--prefix", prefix, "--count", str(count), "--period", "0.01")
    try:
        done = node.spin(until=lambda: len(frames) == count and len(states) == count, timeout_s=15)
        assert frame_sub.publisher_count() == 1
        publications = [*frame_sub.matched_publications(), *state_sub.matched_publications()]
        proc.wait(timeout=10)
    finally:
        out, err = _stop(proc)
    assert done, f"got {len(frames)} frames, {len(states)} joint states; helper said {out!r} {err!r}"
    assert proc.returncode == 0 and "acked" in out, err

    for i, (frame, received) in enumerate(frames):
        expected = samples.hoi_frame(i)
        expected.header.stamp = frame.header.stamp
        assert frame == expected  # every field, bit for bit (float32 arrays included)
        stamp = msgs.ns_from_time(frame.header.stamp)
        assert started <= stamp <= received
        assert received - stamp < 2_000_000_000
    stamps = [msgs.ns_from_time(f.header.stamp) for f, _ in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == count
    for i, (state, _) in enumerate(states):
        expected_state = samples.joint_state(i)
        expected_state.header.stamp = state.header.stamp
        assert state == expected_state
    assert frame_sub.malformed == state_sub.malformed == 0

    # What a ROS 2 peer sees on the wire: rt/ topic names, ROS type names, the Jazzy type hash.
    by_topic = {p.topic_name: p for p in publications}
    frame_pub = by_topic[f"rt{prefix}/hoi_frame"]
    assert frame_pub.type_name == "intermimic_msgs::msg::dds_::HOIFrame_"
    assert frame_pub.qos[Policy.Userdata].data == f"typehash={msgs.type_hash(HOIFrame)};".encode()
    assert by_topic[f"rt{prefix}/joint_states"].type_name == "sensor_msgs::msg::dds_::JointState_"


def test_latched_message_reaches_a_late_subscriber(node_factory: Any, prefix: str) -> None:
    proc = _spawn("latched", "--prefix", prefix, "--wait", "20")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # published before any subscriber exists
        assert line.strip() == "READY", proc.stderr.read() if proc.stderr else ""
        node = node_factory("late")
        latched: list[PoseStamped] = []
        volatile: list[PoseStamped] = []
        node.create_subscription(f"{prefix}/object_pose", PoseStamped, latched.append, "latched")
        node.create_subscription(f"{prefix}/volatile_pose", PoseStamped, volatile.append, "reliable")
        assert node.spin(until=lambda: len(latched) >= 1, timeout_s=10)
        node.spin(timeout_s=0.5)  # anything else that would come has had time to come
    finally:
        _stop(proc)
    assert [m.pose.position.x for m in latched] == [2.0]  # the last of 3, depth 1
    assert volatile == []  # a volatile publisher keeps nothing for late joiners


# ------------------------------------------------------------------------------ in process


def test_malformed_sample_is_counted_logged_and_survived(node_factory: Any, prefix: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    class NotUtf8(HOIFrame):
        """A peer (e.g. C++) that puts non-UTF-8 bytes in a string: valid CDR, which Cyclone's
        own checks pass, that Python cannot decode."""

        def serialize(self, *args: Any, **kwargs: Any) -> bytes:
            data = HOIFrame.serialize(self, *args, **kwargs)
            assert data.count(b"abcd\x00") == 1
            return data.replace(b"abcd\x00", b"\xff\xfe\xfd\xfc\x00")

    sender, receiver = node_factory("sender"), node_factory("receiver")
    got: list[HOIFrame] = []
    sub = receiver.create_subscription(f"{prefix}/frames", HOIFrame, got.append)
    pub = sender.create_publisher(f"{prefix}/frames", HOIFrame)
    assert receiver.spin(until=lambda: pub.subscription_count() == 1, timeout_s=5)
    with caplog.at_level(logging.WARNING):
        pub.publish(NotUtf8(frame_index=1, object_name="abcd"))
        pub.publish(HOIFrame(frame_index=2))
        assert receiver.spin(until=lambda: len(got) == 1, timeout_s=5)
    assert [f.frame_index for f in got] == [2]
    assert (sub.malformed, sub.received) == (1, 1)
    assert any("malformed" in r.getMessage() and f"{prefix}/frames" in r.getMessage()
               for r in caplog.records)


def test_sim_time_follows_clock_and_drives_timers(node_factory: Any, prefix: str) -> None:
    clock_node = node_factory("clock_source")
    node = node_factory("sim_node", use_sim_time=True)
    wall_before = time.time()
    assert abs(node.now() - wall_before) < 5  # no /clock yet: wall time
    ticks: list[float] = []
    node.create_timer(0.5, lambda: ticks.append(node.now()))
    clock = clock_node.create_publisher("/clock", Clock, "reliable")
    assert node.spin(until=lambda: clock.subscription_count() == 1, timeout_s=5)
    for i in range(1, 31):  # sim time 100.1 .. 103.0, far faster than wall time
        clock.publish(Clock(clock=msgs.time_from_seconds(100.0 + 0.1 * i)))
        node.spin(until=lambda i=i: abs(node.now() - (100.0 + 0.1 * i)) < 1e-6, timeout_s=2)
    assert node.now() == pytest.approx(103.0)
    assert node.stamp().sec == 103
    # restarted at the first /clock (100.1), then every 0.5 s of sim time
    assert ticks == pytest.approx([100.6, 101.1, 101.6, 102.1, 102.6])


def test_wall_timer_and_spin_until(node_factory: Any) -> None:
    node = node_factory("timer_node")
    ticks: list[float] = []
    timer = node.create_timer(0.02, lambda: ticks.append(time.monotonic()))
    assert node.spin(until=lambda: len(ticks) >= 3, timeout_s=5)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert all(g > 0.01 for g in gaps)
    timer.cancel()
    n = len(ticks)
    node.spin(timeout_s=0.08)
    assert len(ticks) == n and timer.canceled
    assert node.spin(until=lambda: False, timeout_s=0.05) is False


def test_publish_refuses_wrong_types_and_sizes(node_factory: Any, prefix: str) -> None:
    node = node_factory("strict")
    pub = node.create_publisher(f"{prefix}/frames", HOIFrame, "command")
    with pytest.raises(MessageError, match="takes intermimic_msgs/msg/HOIFrame, got JointState"):
        pub.publish(JointState())
    bad = HOIFrame()
    bad.joint_rotvec = bad.joint_rotvec[:-1]
    with pytest.raises(MessageError, match=r"joint_rotvec: expected exactly 153 values, got 152"):
        pub.publish(bad)
    bad = HOIFrame()
    bad.body_contact_labels[0] = 500
    with pytest.raises(MessageError, match=r"body_contact_labels\[0\]: 500 is outside int8"):
        pub.publish(bad)
    with pytest.raises(TransportError, match="already used with intermimic_msgs/msg/HOIFrame"):
        node.create_subscription(f"{prefix}/frames", DiagnosticArray, print)
    node.destroy()
    with pytest.raises(TransportError, match="destroyed"):
        node.create_publisher(f"{prefix}/x", HOIFrame)
    node.destroy()  # idempotent


def test_nodes_of_one_process_must_share_the_network_config(node_factory: Any) -> None:
    node_factory("first")
    other = NetworkConfig(peers=("127.0.0.1", "127.0.0.2"))
    with pytest.raises(TransportError, match="another network configuration"):
        node_factory("second", network=other)


# ------------------------------------------------------------------------ names and config


def test_topic_names_resolve_like_rcl() -> None:
    assert resolve_topic_name("hoi/frame", "/robot", "policy") == "/robot/hoi/frame"
    assert resolve_topic_name("/abs", "/robot", "policy") == "/abs"
    assert resolve_topic_name("~/status", "/robot", "policy") == "/robot/policy/status"
    assert resolve_topic_name("status", "/", "policy") == "/status"
    for bad in ["", "a//b", "1abc", "a b", "/trailing/", "~x"]:
        with pytest.raises(TransportError):
            resolve_topic_name(bad, "/", "policy")
    with pytest.raises(TransportError, match="invalid node name"):
        make_node("bad name", backend="cyclone", domain_id=DOMAIN)


def test_domain_and_backend_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert resolve_domain_id(None) == 42
    assert resolve_domain_id(7) == 7
    monkeypatch.setenv("ROS_DOMAIN_ID", "x")
    with pytest.raises(TransportError, match="ROS_DOMAIN_ID"):
        resolve_domain_id(None)
    with pytest.raises(TransportError, match="outside 0..232"):
        resolve_domain_id(233)
    monkeypatch.setenv("INTERMIMIC_ROS_BACKEND", "cyclone")
    assert resolve_backend("auto") == "cyclone"
    monkeypatch.delenv("INTERMIMIC_ROS_BACKEND")
    with pytest.raises(TransportError, match="unknown ROS backend"):
        resolve_backend("zenoh")
    try:
        import rclpy  # noqa: F401
    except ImportError:
        assert resolve_backend("auto") == "cyclone"
        with pytest.raises(TransportError, match="rclpy does not import"):
            resolve_backend("rclpy")


def test_qos_profiles_map_like_rmw_cyclonedds() -> None:
    latched = to_cyclone_qos("latched", type_hash="RIHS01_00")
    assert latched[Policy.Durability] == Policy.Durability.TransientLocal
    assert latched[Policy.History] == Policy.History.KeepLast(1)
    assert latched[Policy.DurabilityService].history == Policy.History.KeepLast(1)
    assert latched[Policy.Reliability] == Policy.Reliability.Reliable(max_blocking_time=2**63 - 1)
    assert latched[Policy.WriterDataLifecycle] == Policy.WriterDataLifecycle(autodispose=False)
    assert latched[Policy.Userdata].data == b"typehash=RIHS01_00;"
    sensor = to_cyclone_qos("sensor_data")
    assert sensor[Policy.Reliability] == Policy.Reliability.BestEffort
    assert sensor[Policy.History] == Policy.History.KeepLast(5)
    assert sensor[Policy.Durability] == Policy.Durability.Volatile
    assert resolve_qos("command").depth == 1 and resolve_qos("reliable").depth == 10
    assert resolve_qos(3) == QosProfile(depth=3)
    deadline = to_cyclone_qos(QosProfile(deadline_s=0.1, lifespan_s=2.0))
    assert deadline[Policy.Deadline].deadline == 100_000_000
    assert deadline[Policy.Lifespan].lifespan == 2_000_000_000
    with pytest.raises(QosError, match="unknown QoS profile 'fast'"):
        resolve_qos("fast")
    with pytest.raises(QosError, match="depth >= 1"):
        QosProfile(depth=0)


def test_default_network_is_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CYCLONEDDS_URI", raising=False)
    config = default_network_config()
    assert config is not None
    root = ET.fromstring(config.to_xml())
    ns = {"c": "https://cdds.io/config"}
    addresses = [e.get("address") for e in root.iterfind(".//c:NetworkInterface", ns)]
    assert addresses == ["127.0.0.1"]
    assert root.findtext(".//c:AllowMulticast", namespaces=ns) == "false"
    assert [e.get("address") for e in root.iterfind(".//c:Peer", ns)] == ["127.0.0.1"]
    robot = ET.fromstring(NetworkConfig(interfaces=("eth0",), peers=(), multicast=True).to_xml())
    assert [e.get("name") for e in robot.iterfind(".//c:NetworkInterface", ns)] == ["eth0"]
    assert robot.findtext(".//c:AllowMulticast", namespaces=ns) == "true"
    with pytest.raises(TransportError, match="needs unicast peers"):
        NetworkConfig(peers=(), multicast=False)
    monkeypatch.setenv("CYCLONEDDS_URI", "file:///etc/robot_cyclone.xml")
    assert default_network_config() is None  # the user's own configuration wins
