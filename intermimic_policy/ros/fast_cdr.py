"""Fast CDR (de)serialisation of the large per-tick messages, byte-identical to Cyclone's.

Why: the generic Python (de)serialiser of ``cyclonedds`` walks every element of every field in
Python; a 153-joint ``JointState`` or ``PDTargets`` costs ~0.6 ms each way, more than the whole
policy tick. Their layout is simple (XCDR1, little endian, ``@final``): a header, a sequence of
names that never changes, and arrays of numbers. Here the arrays are read and written as numpy
buffers in one call each, and the name block is encoded once and then compared/copied as bytes.

Scope: ``JointState``, ``PDTargets``, ``ContactState``, ``HOIFrame``, ``Odometry`` and
``PoseStamped`` (the node's per-tick inputs and output) in XCDR1 little endian
(what Cyclone and ROS 2 put on the wire by default). Any other encoding (big endian, XCDR2)
falls back to the library's own code, so a peer with another encoding still works. Deserialised
samples carry lists as the library's do (made by numpy in one ``tolist`` per field); tests check bytes and values against the library both ways.

:func:`install` (called by the Cyclone transport) replaces ``serialize``/``deserialize`` of those
classes; :func:`uninstall` restores them.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from intermimic_policy.ros.msgs.builtin_interfaces import Time
from intermimic_policy.ros.msgs.geometry_msgs import (
    Point,
    Pose,
    PoseStamped,
    PoseWithCovariance,
    Quaternion,
    Twist,
    TwistWithCovariance,
    Vector3,
)
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header

XCDR1_LE = b"\x00\x01\x00\x00"
_U32 = struct.Struct("<I")
_TIME = struct.Struct("<iI")
_F64 = struct.Struct("<d")
_POSE = struct.Struct("<7d")
_TWIST = struct.Struct("<6d")
_COV = struct.Struct("<36d")
_NAME_BLOCKS = 16  # distinct name lists remembered per field


def _pad(pos: int, align: int) -> int:
    return (-pos) % align


class _Writer:
    __slots__ = ("parts", "pos")

    def __init__(self) -> None:
        self.parts: list[bytes] = [XCDR1_LE]
        self.pos = 0  # offset in the data (alignment is relative to it)

    def align(self, n: int) -> None:
        p = _pad(self.pos, n)
        if p:
            self.parts.append(b"\x00" * p)
            self.pos += p

    def raw(self, b: bytes) -> None:
        self.parts.append(b)
        self.pos += len(b)

    def u32(self, v: int) -> None:
        self.align(4)
        self.raw(_U32.pack(v))

    def string(self, s: str) -> None:
        b = s.encode()
        self.u32(len(b) + 1)
        self.raw(b + b"\x00")

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 4  # after the encapsulation header

    def align(self, n: int) -> None:
        self.pos += _pad(self.pos - 4, n)

    def u32(self) -> int:
        self.align(4)
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def string(self) -> str:
        n = self.u32()
        if n < 1 or self.pos + n > len(self.data):
            raise ValueError("CDR string length out of range")
        s = self.data[self.pos:self.pos + n - 1].decode()
        self.pos += n
        return s

    def array(self, dtype: str, count: int, align: int) -> np.ndarray:
        self.align(align)
        size = np.dtype(dtype).itemsize * count
        if self.pos + size > len(self.data):
            raise ValueError("CDR array runs past the end of the sample")
        a = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return a


class _NameBlocks:
    """Encoded name sequences: a names list is encoded once, then found again by identity or
    value (writing) or by its bytes (reading). Bounded, least recently used first out."""

    def __init__(self) -> None:
        self._by_value: OrderedDict[tuple[str, ...], bytes] = OrderedDict()
        self._last_obj: Any = None
        self._last_block = b""

    def encode(self, names: Sequence[str]) -> bytes:
        if names is self._last_obj:
            return self._last_block
        key = tuple(names)
        block = self._by_value.get(key)
        if block is None:
            w = _Writer()
            w.parts, w.pos = [], 0
            w.u32(len(key))
            for n in key:
                w.string(n)
            block = w.bytes()
            self._by_value[key] = block
            if len(self._by_value) > _NAME_BLOCKS:
                self._by_value.popitem(last=False)
        self._last_obj, self._last_block = names, block
        return block

    def decode(self, r: _Reader) -> list[str]:
        data, pos = r.data, r.pos
        for key, block in self._by_value.items():
            if data.startswith(block, pos):
                r.pos += len(block)
                return list(key)
        count = r.u32()
        if count > len(data):
            raise ValueError("CDR sequence length out of range")
        names = [r.string() for _ in range(count)]
        self.encode(names)
        return names


# -- field codecs -------------------------------------------------------------------------------------
def _write_header(w: _Writer, h: Header) -> None:
    w.raw(_TIME.pack(int(h.stamp.sec), int(h.stamp.nanosec)))
    w.string(h.frame_id)


def _read_header(r: _Reader) -> Header:
    sec, nsec = _TIME.unpack_from(r.data, r.pos)
    r.pos += 8
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=r.string())


def _write_f64_seq(w: _Writer, values: Any) -> None:
    a = np.asarray(values, dtype="<f8")
    w.u32(a.size)
    if a.size:
        w.align(8)
        w.raw(a.tobytes())


def _read_f64_seq(r: _Reader) -> list[float]:
    n = r.u32()
    return r.array("<f8", n, 8).tolist() if n else []


def _write_bool_seq(w: _Writer, values: Any) -> None:
    a = np.asarray(values, dtype=bool)
    w.u32(a.size)
    w.raw(a.astype(np.uint8).tobytes())


def _read_bool_seq(r: _Reader) -> list[bool]:
    n = r.u32()
    raw = r.array("u1", n, 1)
    if np.any(raw > 1):
        raise ValueError("CDR bool out of range")
    return raw.view(bool).tolist()


def _write_vec3_seq(w: _Writer, values: Any) -> None:
    if isinstance(values, np.ndarray):
        a = np.asarray(values, dtype="<f8").reshape(-1, 3)
    else:
        a = np.array([(v.x, v.y, v.z) for v in values], dtype="<f8").reshape(-1, 3)
    w.u32(a.shape[0])
    if a.size:
        w.align(8)
        w.raw(a.tobytes())


def _write_pose(w: _Writer, p: Pose) -> None:
    w.align(8)
    o, q = p.position, p.orientation
    w.raw(_POSE.pack(o.x, o.y, o.z, q.x, q.y, q.z, q.w))


def _read_pose(r: _Reader) -> Pose:
    r.align(8)
    x, y, z, qx, qy, qz, qw = _POSE.unpack_from(r.data, r.pos)
    r.pos += _POSE.size
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def _write_fixed(w: _Writer, values: Any, dtype: str, count: int, where: str) -> None:
    a = np.asarray(values, dtype=dtype)
    if a.size != count:
        raise ValueError(f"{where}: expected exactly {count} values, got {a.size}")
    w.align(np.dtype(dtype).itemsize)
    w.raw(a.tobytes())


def _new(cls: type, **values: Any) -> Any:
    """A message without running its default factories (they allocate the fixed arrays)."""
    obj: Any = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


# -- per message ------------------------------------------------------------------------------------------
class _Codec:
    def __init__(self, cls: type, write: Callable[[_Writer, Any, _NameBlocks], None],
                 read: Callable[[_Reader, _NameBlocks], Any]) -> None:
        self.cls = cls
        self.write = write
        self.read = read
        self.names = _NameBlocks()
        self.original_serialize = cls.__dict__.get("serialize")
        self.original_deserialize = cls.__dict__.get("deserialize")

    def serialize(self, msg: Any) -> bytes:
        w = _Writer()
        self.write(w, msg, self.names)
        return w.bytes()

    def deserialize(self, data: bytes) -> Any:
        data = bytes(data)
        r = _Reader(data)
        try:
            msg = self.read(r, self.names)
        except struct.error as exc:
            raise ValueError(f"CDR sample truncated: {exc}") from exc
        if r.pos > len(data):
            raise ValueError("CDR sample truncated")
        return msg


def _joint_state_write(w: _Writer, m: JointState, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    w.align(4)
    w.raw(names.encode(m.name))
    for v in (m.position, m.velocity, m.effort):
        _write_f64_seq(w, v)


def _joint_state_read(r: _Reader, names: _NameBlocks) -> JointState:
    header = _read_header(r)
    r.align(4)
    return _new(JointState, header=header, name=names.decode(r), position=_read_f64_seq(r),
                velocity=_read_f64_seq(r), effort=_read_f64_seq(r))


_PD_FIELDS = ("position", "velocity", "kp", "kd", "effort")


def _pd_write(w: _Writer, m: PDTargets, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    w.align(4)
    w.raw(names.encode(m.joint_names))
    for f in _PD_FIELDS:
        _write_f64_seq(w, getattr(m, f))


def _pd_read(r: _Reader, names: _NameBlocks) -> PDTargets:
    header = _read_header(r)
    r.align(4)
    joint_names = names.decode(r)
    return _new(PDTargets, header=header, joint_names=joint_names, **{f: _read_f64_seq(r) for f in _PD_FIELDS})


def _contacts_write(w: _Writer, m: ContactState, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    w.align(4)
    w.raw(names.encode(m.body_names))
    _write_bool_seq(w, m.in_contact)
    _write_bool_seq(w, m.object_contact)
    _write_vec3_seq(w, m.force)


def _contacts_read(r: _Reader, names: _NameBlocks) -> ContactState:
    header = _read_header(r)
    r.align(4)
    body_names = names.decode(r)
    touch, obj = _read_bool_seq(r), _read_bool_seq(r)
    n = r.u32()
    flat = r.array("<f8", 3 * n, 8).tolist() if n else []
    force = [_new(Vector3, x=flat[i], y=flat[i + 1], z=flat[i + 2]) for i in range(0, 3 * n, 3)]
    return _new(ContactState, header=header, body_names=body_names, in_contact=touch, object_contact=obj,
                force=force)


def _frame_write(w: _Writer, m: HOIFrame, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    w.u32(int(m.frame_index))
    w.align(8)
    w.raw(_F64.pack(float(m.fps)))
    _write_pose(w, m.root_pose)
    _write_fixed(w, m.joint_rotvec, "<f4", 153, "HOIFrame.joint_rotvec")
    _write_fixed(w, m.body_positions, "<f4", 156, "HOIFrame.body_positions")
    _write_fixed(w, m.body_rotations, "<f4", 208, "HOIFrame.body_rotations")
    _write_pose(w, m.object_pose)
    w.string(m.object_name)
    _write_fixed(w, m.body_contact_labels, "i1", 52, "HOIFrame.body_contact_labels")
    w.raw(b"\x01" if m.object_contact else b"\x00")


def _frame_read(r: _Reader, names: _NameBlocks) -> HOIFrame:
    header = _read_header(r)
    index = r.u32()
    r.align(8)
    (fps,) = _F64.unpack_from(r.data, r.pos)
    r.pos += 8
    root = _read_pose(r)
    rotvec, bpos, brot = (r.array("<f4", n, 4).tolist() for n in (153, 156, 208))
    obj = _read_pose(r)
    name = r.string()
    labels = r.array("i1", 52, 1).tolist()
    flag = r.array("u1", 1, 1)
    if flag[0] > 1:
        raise ValueError("CDR bool out of range")
    return _new(HOIFrame, header=header, frame_index=index, fps=fps, root_pose=root, joint_rotvec=rotvec,
                body_positions=bpos, body_rotations=brot, object_pose=obj, object_name=name,
                body_contact_labels=labels, object_contact=bool(flag[0]))


def _pose_stamped_write(w: _Writer, m: PoseStamped, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    _write_pose(w, m.pose)


def _pose_stamped_read(r: _Reader, names: _NameBlocks) -> PoseStamped:
    header = _read_header(r)
    return _new(PoseStamped, header=header, pose=_read_pose(r))


def _odometry_write(w: _Writer, m: Odometry, names: _NameBlocks) -> None:
    _write_header(w, m.header)
    w.string(m.child_frame_id)
    _write_pose(w, m.pose.pose)
    _write_fixed(w, m.pose.covariance, "<f8", 36, "Odometry.pose.covariance")
    lin, ang = m.twist.twist.linear, m.twist.twist.angular
    w.raw(_TWIST.pack(lin.x, lin.y, lin.z, ang.x, ang.y, ang.z))
    _write_fixed(w, m.twist.covariance, "<f8", 36, "Odometry.twist.covariance")


def _odometry_read(r: _Reader, names: _NameBlocks) -> Odometry:
    header = _read_header(r)
    child = r.string()
    pose = _read_pose(r)
    pose_cov = list(_COV.unpack_from(r.data, r.pos))
    r.pos += _COV.size
    lx, ly, lz, ax, ay, az = _TWIST.unpack_from(r.data, r.pos)
    r.pos += _TWIST.size
    twist_cov = list(_COV.unpack_from(r.data, r.pos))
    r.pos += _COV.size
    twist = _new(Twist, linear=_new(Vector3, x=lx, y=ly, z=lz), angular=_new(Vector3, x=ax, y=ay, z=az))
    return _new(Odometry, header=header, child_frame_id=child,
                pose=_new(PoseWithCovariance, pose=pose, covariance=pose_cov),
                twist=_new(TwistWithCovariance, twist=twist, covariance=twist_cov))


CODECS: dict[type, _Codec] = {
    JointState: _Codec(JointState, _joint_state_write, _joint_state_read),
    PDTargets: _Codec(PDTargets, _pd_write, _pd_read),
    ContactState: _Codec(ContactState, _contacts_write, _contacts_read),
    HOIFrame: _Codec(HOIFrame, _frame_write, _frame_read),
    PoseStamped: _Codec(PoseStamped, _pose_stamped_write, _pose_stamped_read),
    Odometry: _Codec(Odometry, _odometry_write, _odometry_read),
}


def _make_methods(codec: _Codec) -> tuple[Any, Any]:
    cls = codec.cls
    generic_serialize = cls.serialize  # type: ignore[attr-defined]
    generic_deserialize = cls.deserialize.__func__  # type: ignore[attr-defined]

    def serialize(self: Any, buffer: Any = None, endianness: Any = None, use_version_2: bool | None = None) -> bytes:
        if buffer is None and endianness is None and not use_version_2:
            return codec.serialize(self)
        return generic_serialize(self, buffer=buffer, endianness=endianness, use_version_2=use_version_2)

    def deserialize(klass: type, data: bytes, has_header: bool = True, use_version_2: bool | None = None) -> Any:
        if has_header and not use_version_2 and bytes(data[:4]) == XCDR1_LE:
            return codec.deserialize(data)
        return generic_deserialize(klass, data, has_header=has_header, use_version_2=use_version_2)

    return serialize, classmethod(deserialize)


def install() -> None:
    """Use the fast codecs for the covered message classes (idempotent)."""
    for cls, codec in CODECS.items():
        if getattr(cls, "_fast_cdr", False):
            continue
        serialize, deserialize = _make_methods(codec)
        cls.serialize = serialize  # type: ignore[attr-defined]
        cls.deserialize = deserialize  # type: ignore[attr-defined]
        cls._fast_cdr = True  # type: ignore[attr-defined]


def uninstall() -> None:
    for cls, codec in CODECS.items():
        if not getattr(cls, "_fast_cdr", False):
            continue
        for name, original in (("serialize", codec.original_serialize), ("deserialize", codec.original_deserialize)):
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        del cls._fast_cdr  # type: ignore[attr-defined]
