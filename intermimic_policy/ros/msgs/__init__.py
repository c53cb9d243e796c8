"""ROS 2 messages as Cyclone DDS dataclasses, and what nodes need to know about them.

Node code builds and reads these classes whatever the transport: the Cyclone backend puts them
on the wire as they are (their CDR bytes are ROS 2's), the rclpy backend converts them field by
field. One module per ROS package (``std_msgs``, ``geometry_msgs``, ``sensor_msgs``, ``nav_msgs``,
``diagnostic_msgs``, ``rosgraph_msgs``, ``builtin_interfaces``, ``intermimic_msgs``), generated
from the ``.msg`` definitions by :mod:`intermimic_policy.ros.msg_codegen`; never edit them by hand.

This module indexes them (:data:`MESSAGE_TYPES`), describes their fields (:func:`fields_of`,
used by the rclpy conversion and the tests), names the exact field that makes a message
unpublishable (:func:`validate`) and converts stamps (:func:`time_from_seconds`).
"""

from __future__ import annotations

import math
import numbers
import typing
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

import cyclonedds.idl.types as idl_types
from cyclonedds.idl import IdlStruct

from intermimic_policy.errors import IntermimicError
from intermimic_policy.ros.msgs import (
    builtin_interfaces,
    diagnostic_msgs,
    geometry_msgs,
    intermimic_msgs,
    nav_msgs,
    rosgraph_msgs,
    sensor_msgs,
    std_msgs,
)
from intermimic_policy.ros.msgs.builtin_interfaces import Time

_MODULES = (builtin_interfaces, std_msgs, geometry_msgs, sensor_msgs, nav_msgs, diagnostic_msgs,
            rosgraph_msgs, intermimic_msgs)

#: Every message class, by ROS name ``pkg/msg/Name``.
MESSAGE_TYPES: dict[str, type[IdlStruct]] = {
    cls.__ros_type__: cls
    for module in _MODULES
    for cls in (getattr(module, name) for name in module.__all__)
}

_INT_RANGES: dict[str, tuple[int, int]] = {
    "byte": (0, 255), "int8": (-(2**7), 2**7 - 1), "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_PYTHON_BASES: dict[type, str] = {bool: "bool", str: "string", float: "float64", int: "int64"}


class MessageError(IntermimicError):
    """A message that cannot be published or converted; the text names the field."""


def is_message_type(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, IdlStruct) and hasattr(obj, "__ros_type__")


def message_type(name: str) -> type[IdlStruct]:
    """The class for ``pkg/msg/Name`` (``pkg/Name`` is accepted too)."""
    parts = name.strip("/").split("/")
    full = f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else "/".join(parts)
    try:
        return MESSAGE_TYPES[full]
    except KeyError:
        raise MessageError(
            f"unknown message type {name!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        ) from None


def _check_type(msg_type: object) -> type[IdlStruct]:
    if not is_message_type(msg_type):
        raise MessageError(f"{msg_type!r} is not a message class from intermimic_policy.ros.msgs")
    return typing.cast(type[IdlStruct], msg_type)


def ros_type_name(msg_type: type[IdlStruct]) -> str:
    """``geometry_msgs/msg/Pose``: the name rclpy and the ROS tools use."""
    return str(_check_type(msg_type).__ros_type__)  # type: ignore[attr-defined]


def dds_type_name(msg_type: type[IdlStruct]) -> str:
    """``geometry_msgs::msg::dds_::Pose_``: the type name on the wire."""
    pkg, _, name = ros_type_name(msg_type).split("/")
    return f"{pkg}::msg::dds_::{name}_"


def type_hash(msg_type: type[IdlStruct]) -> str:
    """The REP-2011 type hash ``RIHS01_<sha256>`` that ROS 2 Jazzy announces per endpoint."""
    return str(_check_type(msg_type).__rihs01__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FieldInfo:
    """One field of a message class, read back from its IDL annotations.

    ``base`` is the element's ROS primitive name (``float32``, ``string``, ``byte``...) or, for a
    nested message, its ROS name with ``nested`` set to the class. ``kind`` is "none" (scalar),
    "fixed" (``T[N]``), "bounded" (``T[<=N]``) or "unbounded" (``T[]``); ``length`` is N.
    """

    name: str
    base: str
    kind: str = "none"
    length: int = 0
    string_bound: int = 0
    nested: type[IdlStruct] | None = None

    def ros_type(self) -> str:
        """The field type as rosbags spells it, e.g. ``float32[153]``, ``string<=8``."""
        base = self.base + (f"<={self.string_bound}" if self.string_bound else "")
        return base + {"none": "", "fixed": f"[{self.length}]", "bounded": f"[<={self.length}]",
                       "unbounded": "[]"}[self.kind]


def _element(annotation: object, where: str) -> tuple[str, int, type[IdlStruct] | None]:
    if is_message_type(annotation):
        cls = typing.cast(type[IdlStruct], annotation)
        return str(cls.__ros_type__), 0, cls  # type: ignore[attr-defined]
    if typing.get_origin(annotation) is typing.Annotated:
        inner, holder = typing.get_args(annotation)[:2]
        if isinstance(holder, str):
            return holder, 0, None
        if isinstance(holder, idl_types.bounded_str):
            return "string", holder.max_length, None
        raise MessageError(f"{where}: unsupported annotation {annotation!r}")
    if annotation in _PYTHON_BASES:
        return _PYTHON_BASES[typing.cast(type, annotation)], 0, None
    raise MessageError(f"{where}: unsupported annotation {annotation!r}")


_FIELDS: dict[type, tuple[FieldInfo, ...]] = {}


def fields_of(msg_type: type) -> tuple[FieldInfo, ...]:
    """The fields of a message class in wire order."""
    cached = _FIELDS.get(msg_type)
    if cached is not None:
        return cached
    cls = _check_type(msg_type)
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclass_fields(typing.cast(typing.Any, cls)):
        ann = hints[f.name]
        where = f"{cls.__name__}.{f.name}"
        holder = typing.get_args(ann)[1] if typing.get_origin(ann) is typing.Annotated else None
        if isinstance(holder, idl_types.array):
            base, sbound, nested = _element(holder.subtype, where)
            out.append(FieldInfo(f.name, base, "fixed", holder.length, sbound, nested))
        elif isinstance(holder, idl_types.sequence):
            base, sbound, nested = _element(holder.subtype, where)
            kind = "bounded" if holder.max_length else "unbounded"
            out.append(FieldInfo(f.name, base, kind, holder.max_length or 0, sbound, nested))
        else:
            base, sbound, nested = _element(ann, where)
            out.append(FieldInfo(f.name, base, "none", 0, sbound, nested))
    _FIELDS[msg_type] = result = tuple(out)
    return result


def _validate_value(info: FieldInfo, value: object, where: str, elements: bool) -> None:
    if info.nested is not None:
        if not isinstance(value, info.nested):
            raise MessageError(f"{where}: expected {info.nested.__name__}, got {type(value).__name__}")
        _validate(value, where, elements)
        return
    if info.base == "string":
        if not isinstance(value, str):
            raise MessageError(f"{where}: expected str, got {type(value).__name__}")
        if info.string_bound and len(value.encode()) > info.string_bound:
            raise MessageError(f"{where}: string longer than its bound {info.string_bound}")
        return
    if info.base == "bool":
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise MessageError(f"{where}: expected bool, got {value!r}")
        return
    if info.base in ("float32", "float64"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise MessageError(f"{where}: expected a float, got {type(value).__name__}")
        number = float(value)
        if info.base == "float32" and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise MessageError(f"{where}: {value!r} overflows float32")
        return
    lo, hi = _INT_RANGES[info.base]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MessageError(f"{where}: expected an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise MessageError(f"{where}: {value!r} is outside {info.base} [{lo}, {hi}]")


def _validate(msg: object, where: str, elements: bool) -> None:
    for info in fields_of(type(msg)):
        value = getattr(msg, info.name)
        path = f"{where}.{info.name}"
        if info.kind == "none":
            _validate_value(info, value, path, elements)
            continue
        try:
            n = len(value)
        except TypeError:
            raise MessageError(f"{path}: expected a list, got {type(value).__name__}") from None
        if info.kind == "fixed" and n != info.length:
            raise MessageError(f"{path}: expected exactly {info.length} values, got {n}")
        if info.kind == "bounded" and n > info.length:
            raise MessageError(f"{path}: at most {info.length} values allowed, got {n}")
        if info.nested is None and not elements:
            continue
        element = FieldInfo(info.name, info.base, "none", 0, info.string_bound, info.nested)
        for i, item in enumerate(value):
            _validate_value(element, item, f"{path}[{i}]", elements)


def validate(msg: object, *, elements: bool = True) -> None:
    """Raise :class:`MessageError` naming the first field that cannot be serialized.

    Checks types, integer ranges, fixed-array lengths and sequence/string bounds; with
    ``elements=False`` only the shape (lengths, nested types) is checked, which is cheap enough
    for every publish. NaN is allowed: ROS uses it for "unknown" (e.g. JointState velocity).
    """
    cls = _check_type(type(msg))
    _validate(msg, cls.__name__, elements)


def decode(msg_type: type[IdlStruct], data: bytes | bytearray | memoryview) -> IdlStruct:
    """A message from its CDR bytes; truncated or malformed bytes are a :class:`MessageError`
    naming the type (the decoder's own errors are struct.error, UnicodeDecodeError...)."""
    cls = _check_type(msg_type)
    blob = bytes(data)
    try:
        return cls.deserialize(blob)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: every decoder failure means "malformed"
        detail = " ".join(str(exc).split())[:160]
        raise MessageError(f"{ros_type_name(cls)}: cannot decode {len(blob)} bytes, truncated or malformed CDR "
                           f"({type(exc).__name__}: {detail})") from None


def time_from_ns(ns: int) -> Time:
    """A ``builtin_interfaces/Time`` from integer nanoseconds (exact)."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def time_from_seconds(t: float) -> Time:
    """A ``builtin_interfaces/Time`` from float seconds (nanosec in [0, 1e9), as ROS does)."""
    if not math.isfinite(t):
        raise MessageError(f"cannot make a time stamp from {t!r}")
    return time_from_ns(round(t * 1e9))


def seconds_from_time(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def ns_from_time(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


__all__ = [
    "MESSAGE_TYPES", "FieldInfo", "MessageError", "dds_type_name", "decode", "fields_of", "is_message_type",
    "message_type", "ns_from_time", "ros_type_name", "seconds_from_time", "time_from_ns",
    "time_from_seconds", "type_hash", "validate", "builtin_interfaces", "std_msgs", "geometry_msgs",
    "sensor_msgs", "nav_msgs", "diagnostic_msgs", "rosgraph_msgs", "intermimic_msgs",
]
