"""Cyclone DDS's receive sockets accept loopback traffic only under the default configuration.

Cyclone binds them to 0.0.0.0 whatever the configured interfaces (finding of issue 14); the
transport restricts each one it opened (device ``lo`` and a source filter for 127.0.0.0/8).
"""

from __future__ import annotations

import os
import socket

import pytest

from intermimic_policy.ros.msgs.builtin_interfaces import Time
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.transport import loopback_guard, make_node
from intermimic_policy.ros.transport.cyclone_config import NetworkConfig


def _external_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a route
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _received(sock: socket.socket) -> list[bytes]:
    sock.settimeout(0.3)
    got = []
    try:
        while True:
            got.append(sock.recv(64))
    except TimeoutError:
        return got


def _send_from(source: str, port: int, payload: bytes, dest: str = "127.0.0.1") -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind((source, 0))
        sender.sendto(payload, (dest, port))
    finally:
        sender.close()


@pytest.mark.parametrize("restrict", [False, True])
def test_restricted_socket_takes_only_loopback_sources(restrict: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    port = sock.getsockname()[1]
    try:
        if restrict:
            loopback_guard.restrict_to_loopback(sock.fileno())
            assert loopback_guard.is_restricted(sock.fileno())
            assert loopback_guard.bound_device(sock.fileno()) == "lo"
        else:
            assert not loopback_guard.is_restricted(sock.fileno())
        _send_from("127.0.0.1", port, b"local")
        external = _external_address()
        if external is not None:
            _send_from(external, port, b"external-to-lo")
            _send_from(external, port, b"external-to-external", dest=external)
        got = _received(sock)
        assert b"local" in got
        if external is not None:
            # the control (unrestricted) case takes everything; the restricted one only loopback
            expected = {b"local"} if restrict else {b"local", b"external-to-lo", b"external-to-external"}
            assert set(got) == expected
    finally:
        sock.close()


def test_default_node_receive_sockets_are_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CYCLONEDDS_URI", raising=False)
    before = loopback_guard.open_udp_any_fds()
    domain = 150 + os.getpid() % 60
    a = make_node("guard_a", backend="cyclone", domain_id=domain)
    b = make_node("guard_b", backend="cyclone", domain_id=domain)
    try:
        opened = loopback_guard.open_udp_any_fds() - before
        assert opened, "Cyclone opened no 0.0.0.0 receive socket (did its socket layout change?)"
        for fd in opened:
            assert loopback_guard.is_restricted(fd), f"fd {fd} takes datagrams from any host"
            assert loopback_guard.bound_device(fd) == "lo"
        # and DDS still works through them
        got: list[int] = []
        pub = a.create_publisher("/guard_topic", Header)
        b.create_subscription("/guard_topic", Header, lambda m: got.append(int(m.stamp.sec)))
        a.spin(until=lambda: pub.subscription_count() > 0, timeout_s=10.0)
        for _ in range(50):
            pub.publish(Header(stamp=Time(sec=42, nanosec=0), frame_id="guard"))
            b.spin_once(0.05)
            if got:
                break
        assert got and got[0] == 42
    finally:
        a.destroy()
        b.destroy()


def test_interface_configurations_that_are_not_loopback_are_left_alone() -> None:
    assert loopback_guard.is_loopback_only(NetworkConfig().interfaces)
    assert loopback_guard.is_loopback_only(("lo",))
    assert not loopback_guard.is_loopback_only(("eth0",))
    assert not loopback_guard.is_loopback_only(("127.0.0.1", "192.168.123.99"))
    assert not loopback_guard.is_loopback_only(())
