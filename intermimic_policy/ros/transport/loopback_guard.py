"""Make Cyclone DDS's receive sockets loopback-only when the configuration is loopback-only.

Why: Cyclone binds its receive sockets to 0.0.0.0 whatever ``Interfaces`` says (upstream
issues eclipse-cyclonedds#1923 and #2090; no configuration changes it), so a demo configured for
127.0.0.1 still accepts RTPS datagrams from any host that can reach the machine. The sockets are
created inside the C library, so they cannot be rebound; once they exist, each one the domain
opened on 0.0.0.0 gets

* ``SO_BINDTODEVICE lo``: the kernel delivers it only datagrams that arrived on the loopback
  device (unprivileged since Linux 5.7 on a socket not yet bound to a device), and
* a classic BPF socket filter that drops any datagram whose IPv4 source is outside 127.0.0.0/8
  (this also covers datagrams a local process sends from the machine's own external address,
  which Linux routes over ``lo``).

Linux only; elsewhere :func:`restrict_new_sockets` reports that it could not restrict anything
and the caller warns. A configuration from ``CYCLONEDDS_URI`` or one naming a real interface is
left alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterable

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_ATTACH_FILTER = 26
SO_GET_FILTER = SO_ATTACH_FILTER  # getsockopt: the attached filter's length in instructions

# Classic BPF (linux/filter.h): A = IPv4 source (at SKF_NET_OFF + 12); keep the datagram if
# (A & 0xff000000) == 0x7f000000, else drop it.
_SKF_NET_OFF = -0x100000
_LOOPBACK_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x20, 0, 0, (_SKF_NET_OFF + 12) & 0xFFFFFFFF),  # ld  [net + 12]
    (0x54, 0, 0, 0xFF000000),                         # and #0xff000000
    (0x15, 0, 1, 0x7F000000),                         # jeq #0x7f000000, keep, drop
    (0x06, 0, 0, 0xFFFFFFFF),                         # keep: ret #-1 (whole datagram)
    (0x06, 0, 0, 0),                                  # drop: ret #0
)
LOOPBACK_FILTER_LEN = len(_LOOPBACK_FILTER)
_MAX_FILTER_READ = 64


def _filter_program() -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    code = b"".join(struct.pack("HBBI", *ins) for ins in _LOOPBACK_FILTER)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("HxxxxxxQ" if struct.calcsize("P") == 8 else "HxxI",
                       len(_LOOPBACK_FILTER), ctypes.addressof(buf))
    return prog, buf


def is_loopback_only(interfaces: Iterable[str]) -> bool:
    items = list(interfaces)
    return bool(items) and all(i == "lo" or i.startswith("127.") or i == "::1" for i in items)


def _socket_inodes() -> dict[int, int]:
    """fd -> socket inode for this process's open sockets."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(name)] = int(target[8:-1])
    return out


def _udp_any_inodes() -> set[int]:
    """Inodes of the host's IPv4 UDP sockets bound to 0.0.0.0 (this process's are among them)."""
    found: set[int] = set()
    with open("/proc/self/net/udp", encoding="ascii") as fh:
        next(fh, None)
        for line in fh:
            fields = line.split()
            if len(fields) > 9 and fields[1].split(":")[0] == "00000000":
                found.add(int(fields[9]))
    return found


def open_udp_any_fds() -> set[int]:
    """This process's file descriptors of IPv4 UDP sockets bound to 0.0.0.0."""
    if not sys.platform.startswith("linux"):
        return set()
    any_inodes = _udp_any_inodes()
    return {fd for fd, inode in _socket_inodes().items() if inode in any_inodes}


def restrict_to_loopback(fd: int) -> None:
    """Apply the loopback-only device binding and source filter to an open UDP socket."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        prog, _keep = _filter_program()
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, b"lo")
        except OSError as exc:  # older kernels want CAP_NET_RAW: the source filter still holds
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
    finally:
        sock.close()


def is_restricted(fd: int) -> bool:
    """Whether a socket filter is attached to ``fd`` (the kernel returns nothing without one)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        # The kernel reads the buffer length as a count of 8-byte instructions and copies that
        # many instructions: the buffer must hold 8 bytes for each one it may copy.
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_GET_FILTER, 8 * _MAX_FILTER_READ))
    except OSError:
        return False
    finally:
        sock.close()


def bound_device(fd: int) -> str:
    """The device a socket is bound to ('' for none)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, 16).rstrip(b"\0").decode()
    finally:
        sock.close()


def restrict_new_sockets(before: set[int]) -> list[int]:
    """Restrict every 0.0.0.0 UDP socket of this process that was not open in ``before``
    (the fds from :func:`open_udp_any_fds` taken before the DDS domain was created)."""
    restricted = []
    for fd in sorted(open_udp_any_fds() - before):
        restrict_to_loopback(fd)
        restricted.append(fd)
    return restricted
