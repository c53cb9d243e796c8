"""Generate the Cyclone DDS twins of our ROS 2 messages from their ``.msg`` definitions.

Why: a node must speak ROS 2 without rclpy (a robot's plain Python stack, CI machines), and the
``.msg`` files must stay the only definition. This module parses ``.msg`` text (ours from
``ros2_ws/src/intermimic_msgs/msg`` and the few standard messages we use, embedded below as
published in ROS 2 common_interfaces) and writes one Python module per ROS package under
``intermimic_policy/ros/msgs/``: ``@final`` IdlStruct dataclasses named ``pkg::msg::dds_::Name_``
on the wire, whose CDR bytes are ROS 2's (``tests/test_ros_msgs.py`` checks every type against
rosbags, an independent serializer). Each class also carries its ROS name and its REP-2011 type
hash (``RIHS01_...``), which ROS 2 Jazzy endpoints announce in their USER_DATA.

After editing a ``.msg`` file run ``python -m intermimic_policy.ros.msg_codegen``; ``--check``
exits 1 when the checked-in modules are stale.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from intermimic_policy.errors import IntermimicError

REPO_ROOT = Path(__file__).resolve().parents[2]
MSG_PACKAGE_DIR = REPO_ROOT / "ros2_ws" / "src" / "intermimic_msgs"
OUTPUT_DIR = Path(__file__).resolve().parent / "msgs"
OUTPUT_MODULE = "intermimic_policy.ros.msgs"

# ROS 2 .msg primitive -> (cyclonedds annotation, Python default, REP-2011 field type id).
# ``char``/``wchar``/``wstring`` are left out on purpose: no message of ours needs them and
# their ROS 2 mapping differs between IDL and .msg; the parser refuses them by name.
PRIMITIVES: dict[str, tuple[str, str, int]] = {
    "bool": ("bool", "False", 15),
    "byte": ("types.byte", "0", 16),
    "int8": ("types.int8", "0", 2),
    "uint8": ("types.uint8", "0", 3),
    "int16": ("types.int16", "0", 4),
    "uint16": ("types.uint16", "0", 5),
    "int32": ("types.int32", "0", 6),
    "uint32": ("types.uint32", "0", 7),
    "int64": ("types.int64", "0", 8),
    "uint64": ("types.uint64", "0", 9),
    "float32": ("types.float32", "0.0", 10),
    "float64": ("types.float64", "0.0", 11),
    "string": ("str", '""', 17),
}
PRIMITIVE_PYTHON: dict[str, str] = {
    name: ("bool" if name == "bool" else "str" if name == "string" else
           "float" if name.startswith("float") else "int")
    for name in PRIMITIVES
}
_TYPE_ID_NESTED = 1
_TYPE_ID_BOUNDED_STRING = 21
_TYPE_ID_OFFSET = {"none": 0, "fixed": 48, "bounded": 96, "unbounded": 144}

# The standard messages our nodes use, as published in ROS 2 common_interfaces / rcl_interfaces
# (Humble and Jazzy define them identically; the tests check both against rosbags' stores).
STANDARD_MSGS: dict[str, str] = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "geometry_msgs/msg/Point": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    "geometry_msgs/msg/Pose": "Point position\nQuaternion orientation\n",
    "geometry_msgs/msg/PoseStamped": "std_msgs/Header header\nPose pose\n",
    "geometry_msgs/msg/PoseWithCovariance": "Pose pose\nfloat64[36] covariance\n",
    "geometry_msgs/msg/Vector3": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Twist": "Vector3 linear\nVector3 angular\n",
    "geometry_msgs/msg/TwistWithCovariance": "Twist twist\nfloat64[36] covariance\n",
    "sensor_msgs/msg/JointState": (
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
        "float64[] effort\n"
    ),
    "nav_msgs/msg/Odometry": (
        "std_msgs/Header header\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\n"
        "geometry_msgs/TwistWithCovariance twist\n"
    ),
    "diagnostic_msgs/msg/KeyValue": "string key\nstring value\n",
    "diagnostic_msgs/msg/DiagnosticStatus": (
        "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\n"
        "byte level\nstring name\nstring message\nstring hardware_id\nKeyValue[] values\n"
    ),
    "diagnostic_msgs/msg/DiagnosticArray": "std_msgs/Header header\nDiagnosticStatus[] status\n",
    "rosgraph_msgs/msg/Clock": "builtin_interfaces/Time clock\n",
}

# Output order of packages (dependencies first) and of the generated modules' imports.
PACKAGE_ORDER: tuple[str, ...] = (
    "builtin_interfaces", "std_msgs", "geometry_msgs", "sensor_msgs", "nav_msgs",
    "diagnostic_msgs", "rosgraph_msgs", "intermimic_msgs",
)

_MSG_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_PKG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD_NAME = re.compile(r"^[a-z](?:[a-z0-9]|_(?!_))*(?<!_)$")
_CONST_NAME = re.compile(r"^[A-Z](?:[A-Z0-9]|_(?!_))*(?<!_)$")
_CONSTANT = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=(.*)$", re.S)
_TYPE = re.compile(
    r"^(?P<base>[A-Za-z][A-Za-z0-9_]*(?:/(?:msg/)?[A-Za-z][A-Za-z0-9]*)?)"
    r"(?:<=(?P<sbound>\d+))?"
    r"(?:\[(?P<abound><=)?(?P<n>\d*)\])?$"
)


class MsgDefinitionError(IntermimicError):
    """A .msg definition that does not parse or refers to an unknown type."""


@dataclass(frozen=True)
class FieldType:
    """A field's type: ``base`` is a primitive name or a full message name ``pkg/msg/Name``.

    ``kind`` is "none" (a scalar), "fixed" (``T[N]``), "bounded" (``T[<=N]``) or "unbounded"
    (``T[]``); ``length`` is N (0 when unbounded); ``string_bound`` is the bound of ``string<=N``.
    """

    base: str
    kind: str = "none"
    length: int = 0
    string_bound: int = 0

    @property
    def is_message(self) -> bool:
        return "/" in self.base


@dataclass(frozen=True)
class MsgField:
    name: str
    type: FieldType
    default: object | None = None
    comment: tuple[str, ...] = ()


@dataclass(frozen=True)
class MsgConstant:
    name: str
    base: str
    value: object


@dataclass(frozen=True)
class MessageDefinition:
    """One parsed message: ``full_name`` is ``pkg/msg/Name``."""

    full_name: str
    fields: tuple[MsgField, ...]
    constants: tuple[MsgConstant, ...] = ()
    doc: tuple[str, ...] = ()
    origin: str = ""

    @property
    def package(self) -> str:
        return self.full_name.split("/")[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/")[2]

    @property
    def dds_type_name(self) -> str:
        return f"{self.package}::msg::dds_::{self.name}_"

    def dependencies(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for f in self.fields:
            if f.type.is_message:
                seen[f.type.base] = None
        return tuple(seen)


def _full_name(base: str, package: str) -> str:
    parts = base.split("/")
    if len(parts) == 1:
        return f"{package}/msg/{parts[0]}"
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return base


def _parse_type(text: str, package: str, where: str) -> FieldType:
    m = _TYPE.match(text)
    if not m:
        raise MsgDefinitionError(f"{where}: cannot parse type {text!r}")
    base = m.group("base")
    sbound = int(m.group("sbound")) if m.group("sbound") else 0
    if sbound and base != "string":
        raise MsgDefinitionError(f"{where}: only string takes a '<=N' bound, not {base!r}")
    if base in ("char", "wchar", "wstring"):
        raise MsgDefinitionError(f"{where}: type {base!r} is not supported by msg_codegen")
    if base not in PRIMITIVES:
        if base == "Header":
            raise MsgDefinitionError(f"{where}: write 'std_msgs/Header', ROS 2 has no bare 'Header'")
        base = _full_name(base, package)
        pkg, _, name = base.split("/")
        if not _PKG_NAME.match(pkg) or not _MSG_NAME.match(name):
            raise MsgDefinitionError(f"{where}: bad message type name {text!r}")
    if "[" not in text:
        return FieldType(base, "none", 0, sbound)
    n = m.group("n")
    if m.group("abound"):
        if not n or int(n) < 1:
            raise MsgDefinitionError(f"{where}: bounded array needs a positive bound: {text!r}")
        return FieldType(base, "bounded", int(n), sbound)
    if n:
        if int(n) < 1:
            raise MsgDefinitionError(f"{where}: fixed array needs a positive size: {text!r}")
        return FieldType(base, "fixed", int(n), sbound)
    return FieldType(base, "unbounded", 0, sbound)


_INT_RANGES: dict[str, tuple[int, int]] = {
    "byte": (0, 255), "int8": (-(2**7), 2**7 - 1), "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}


def _parse_scalar(base: str, text: str, where: str, string_bound: int = 0) -> object:
    """A constant or default value, read as rosidl_adapter reads it."""
    text = text.strip()
    if base == "bool":
        if text.lower() not in ("true", "1", "false", "0"):
            raise MsgDefinitionError(f"{where}: bool value must be true/false/1/0, got {text!r}")
        return text.lower() in ("true", "1")
    if base == "string":
        for quote in "\"'":
            if len(text) >= 2 and text[0] == quote and text[-1] == quote:
                text = text[1:-1].replace("\\" + quote, quote)
                break
        if string_bound and len(text) > string_bound:
            raise MsgDefinitionError(f"{where}: string value longer than its bound {string_bound}")
        return text
    if base in ("float32", "float64"):
        try:
            return float(text)
        except ValueError:
            raise MsgDefinitionError(f"{where}: bad {base} value {text!r}") from None
    try:
        value = int(text)
    except ValueError:
        try:
            value = int(text, 0)
        except ValueError:
            raise MsgDefinitionError(f"{where}: bad {base} value {text!r}") from None
    lo, hi = _INT_RANGES[base]
    if not lo <= value <= hi:
        raise MsgDefinitionError(f"{where}: {base} value {value} outside [{lo}, {hi}]")
    return value


def _parse_default(ftype: FieldType, text: str, where: str) -> object:
    if ftype.is_message:
        raise MsgDefinitionError(f"{where}: nested message fields cannot have a default")
    if ftype.kind == "none":
        return _parse_scalar(ftype.base, text, where, ftype.string_bound)
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise MsgDefinitionError(f"{where}: array default must be written [a, b, ...], got {text!r}")
    inner = text[1:-1].strip()
    if ftype.base == "string":
        try:
            items = [str(v) for v in ast.literal_eval(f"[{inner}]")]
        except (ValueError, SyntaxError):
            items = [v.strip() for v in inner.split(",")] if inner else []
    else:
        items = [v.strip() for v in inner.split(",")] if inner else []
    out = [_parse_scalar(ftype.base, v, where, ftype.string_bound) for v in items]
    if ftype.kind == "fixed" and len(out) != ftype.length:
        raise MsgDefinitionError(f"{where}: default has {len(out)} values, the array {ftype.length}")
    if ftype.kind == "bounded" and len(out) > ftype.length:
        raise MsgDefinitionError(f"{where}: default has {len(out)} values, the bound is {ftype.length}")
    return out


def parse_msg(text: str, full_name: str, *, origin: str = "") -> MessageDefinition:
    """Parse one .msg text. ``full_name`` is ``pkg/msg/Name``; ``origin`` names it in errors."""
    parts = full_name.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not _PKG_NAME.match(parts[0]) \
            or not _MSG_NAME.match(parts[2]):
        raise MsgDefinitionError(f"{origin or full_name}: bad message name {full_name!r}")
    package = parts[0]
    fields: list[MsgField] = []
    constants: list[MsgConstant] = []
    doc: list[str] = []
    pending: list[str] = []
    in_doc = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{origin or full_name}:{lineno}"
        line = raw.strip()
        if not line:
            if in_doc and doc:
                in_doc = False
            pending = []
            continue
        if line.startswith("#"):
            comment = line[2:] if line.startswith("# ") else line[1:]
            if in_doc:
                doc.append(comment)
            else:
                pending.append(comment)
            continue
        in_doc = False
        body, _, trailing = line.partition("#")  # '#' always starts a comment, as in rosidl
        tokens = body.split(None, 1)
        if len(tokens) < 2:
            raise MsgDefinitionError(f"{where}: expected '<type> <name>', got {line!r}")
        type_text, rest = tokens
        const = _CONSTANT.match(rest.strip())
        if const:
            name, value = const.group(1), const.group(2)
            if not _CONST_NAME.match(name):
                raise MsgDefinitionError(f"{where}: bad constant name {name!r}")
            ftype = _parse_type(type_text, package, where)
            if ftype.kind != "none" or ftype.is_message:
                raise MsgDefinitionError(f"{where}: constants must be primitive scalars")
            constants.append(MsgConstant(name, ftype.base, _parse_scalar(ftype.base, value, where,
                                                                         ftype.string_bound)))
            continue
        words = rest.split(None, 1)
        name = words[0]
        if not _FIELD_NAME.match(name):
            raise MsgDefinitionError(f"{where}: bad field name {name!r} (lower_snake_case)")
        ftype = _parse_type(type_text, package, where)
        default = _parse_default(ftype, words[1], where) if len(words) > 1 else None
        notes = tuple(pending) + ((trailing.strip(),) if trailing.strip() else ())
        if any(f.name == name for f in fields):
            raise MsgDefinitionError(f"{where}: duplicate field {name!r}")
        fields.append(MsgField(name, ftype, default, notes))
        pending = []
    if not fields:
        raise MsgDefinitionError(f"{origin or full_name}: a message needs at least one field")
    while doc and not doc[-1]:
        doc.pop()
    return MessageDefinition(full_name, tuple(fields), tuple(constants), tuple(doc), origin)


def load_definitions(msg_dir: Path | None = None) -> dict[str, MessageDefinition]:
    """Standard definitions plus every ``msg_dir/*.msg`` (``intermimic_msgs`` by default)."""
    msg_dir = msg_dir or MSG_PACKAGE_DIR / "msg"
    defs = {name: parse_msg(text, name, origin=f"<standard {name}>")
            for name, text in STANDARD_MSGS.items()}
    paths = sorted(msg_dir.glob("*.msg"))
    if not paths:
        raise MsgDefinitionError(f"{msg_dir}: no .msg files found")
    for path in paths:
        name = f"intermimic_msgs/msg/{path.stem}"
        rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        defs[name] = parse_msg(path.read_text(encoding="utf-8"), name, origin=str(rel))
    for d in defs.values():
        for dep in d.dependencies():
            if dep not in defs:
                raise MsgDefinitionError(f"{d.origin}: unknown message type {dep!r}")
    return defs


def type_description(name: str, defs: Mapping[str, MessageDefinition]) -> dict[str, object]:
    """The REP-2011 TypeDescription of ``name`` (without default values) as plain data."""

    def describe(full: str) -> dict[str, object]:
        out = []
        for f in defs[full].fields:
            t = f.type
            if t.is_message:
                tid = _TYPE_ID_NESTED
            elif t.string_bound:
                tid = _TYPE_ID_BOUNDED_STRING
            else:
                tid = PRIMITIVES[t.base][2]
            out.append({
                "name": f.name,
                "type": {
                    "type_id": tid + _TYPE_ID_OFFSET[t.kind],
                    "capacity": t.length if t.kind in ("fixed", "bounded") else 0,
                    "string_capacity": t.string_bound,
                    "nested_type_name": t.base if t.is_message else "",
                },
            })
        return {"type_name": full, "fields": out}

    referenced: dict[str, dict[str, object]] = {}
    todo = list(defs[name].dependencies())
    while todo:
        dep = todo.pop()
        if dep not in referenced and dep != name:
            referenced[dep] = describe(dep)
            todo.extend(defs[dep].dependencies())
    return {
        "type_description": describe(name),
        "referenced_type_descriptions": [referenced[k] for k in sorted(referenced)],
    }


def rihs01(name: str, defs: Mapping[str, MessageDefinition]) -> str:
    """REP-2011 type hash, version 1: sha256 of the TypeDescription's JSON."""
    text = json.dumps(type_description(name, defs))
    return "RIHS01_" + hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------- render


def _annotation(t: FieldType) -> str:
    """``Annotated[<Python type>, <cyclonedds holder>]``, so that both mypy (no plugin needed:
    it sees ``list[float]``, ``str``) and cyclonedds (it reads the holder) get what they need."""
    if t.is_message:
        element = python = t.base.split("/")[2]
    elif t.string_bound:
        element = f"Annotated[str, types.bounded_str({t.string_bound})]"
        python = "str"
    else:
        element = PRIMITIVES[t.base][0]
        python = PRIMITIVE_PYTHON[t.base]
    if t.kind == "fixed":
        return f"Annotated[list[{python}], types.array({element}, {t.length})]"
    if t.kind == "bounded":
        return f"Annotated[list[{python}], types.sequence({element}, {t.length})]"
    if t.kind == "unbounded":
        return f"Annotated[list[{python}], types.sequence({element})]"
    return element


def _literal(base: str, value: object) -> str:
    if base in ("float32", "float64"):
        number = float(value)  # type: ignore[arg-type]
        return repr(number) if math.isfinite(number) else f'float("{number}")'
    return repr(value)


def _default(f: MsgField) -> str:
    t = f.type
    if t.kind == "none":
        if t.is_message:
            return f"field(default_factory={t.base.split('/')[2]})"
        if f.default is not None:
            return _literal(t.base, f.default)
        return PRIMITIVES[t.base][1]
    if f.default is not None:
        values = ", ".join(_literal(t.base, v) for v in f.default)  # type: ignore[attr-defined]
        return f"field(default_factory=lambda: [{values}])"
    if t.kind == "fixed":
        if t.is_message:
            cls = t.base.split("/")[2]
            return f"field(default_factory=lambda: [{cls}() for _ in range({t.length})])"
        return f"field(default_factory=lambda: [{PRIMITIVES[t.base][1]}] * {t.length})"
    return "field(default_factory=list)"


def _ordered(defs: Sequence[MessageDefinition]) -> list[MessageDefinition]:
    """Dependencies first inside one package (a class must exist before it is named)."""
    by_name = {d.full_name: d for d in defs}
    done: dict[str, MessageDefinition] = {}

    def visit(d: MessageDefinition) -> None:
        if d.full_name in done:
            return
        for dep in d.dependencies():
            if dep in by_name:
                visit(by_name[dep])
        done[d.full_name] = d

    for d in sorted(defs, key=lambda d: d.name):
        visit(d)
    return list(done.values())


def _source_of(package: str) -> str:
    if package == "intermimic_msgs":
        return "ros2_ws/src/intermimic_msgs/msg/*.msg"
    return "msg_codegen.STANDARD_MSGS (ROS 2 common_interfaces)"


def render_package(package: str, defs: Mapping[str, MessageDefinition]) -> str:
    """The Python module for one ROS package."""
    mine = _ordered([d for d in defs.values() if d.package == package])
    if not mine:
        raise MsgDefinitionError(f"no messages for package {package!r}")
    needs_types = needs_field = needs_annotated = False
    imports: dict[str, set[str]] = {}
    for d in mine:
        for f in d.fields:
            ann = _annotation(f.type)
            needs_types |= "types." in ann
            needs_annotated |= "Annotated[" in ann
            needs_field |= "field(" in _default(f)
            if f.type.is_message:
                pkg = f.type.base.split("/")[0]
                if pkg != package:
                    imports.setdefault(pkg, set()).add(f.type.base.split("/")[2])
    local = {d.name for d in mine}
    imported = [name for names in imports.values() for name in names]
    clashes = sorted({n for n in imported if n in local or imported.count(n) > 1})
    if clashes:
        raise MsgDefinitionError(f"package {package}: message names {clashes} would clash in "
                                 "the generated module")
    lines = [
        f"# Generated by intermimic_policy.ros.msg_codegen from {_source_of(package)}.",
        "# Do not edit: change the .msg definition and run `python -m intermimic_policy.ros.msg_codegen`.",
        f'"""ROS 2 package ``{package}`` as Cyclone DDS types (``@final``: ROS 2\'s CDR bytes)."""',
        "",
    ]
    if needs_field:
        lines.append("from dataclasses import dataclass, field")
    else:
        lines.append("from dataclasses import dataclass")
    if needs_annotated:
        lines.append("from typing import Annotated")
    lines.append("")
    lines.append("import cyclonedds.idl.annotations as annotate")
    if needs_types:
        lines.append("import cyclonedds.idl.types as types")
    lines.append("from cyclonedds.idl import IdlStruct")
    if imports:
        lines.append("")
        for pkg in sorted(imports):
            lines.append(f"from {OUTPUT_MODULE}.{pkg} import {', '.join(sorted(imports[pkg]))}")
    names = [f'"{d.name}"' for d in sorted(mine, key=lambda d: d.name)]
    one_line = f"__all__ = [{', '.join(names)}]"
    lines.append("")
    if len(one_line) <= 100:
        lines.append(one_line)
    else:
        lines += ["__all__ = [", *(f"    {n}," for n in names), "]"]
    for d in mine:
        lines += ["", "", "@dataclass", "@annotate.final", '@annotate.autoid("sequential")']
        typename = f"{d.package}.msg.dds_.{d.name}_"
        lines.append(f'class {d.name}(IdlStruct, typename="{typename}"):')
        if not d.doc:
            lines.append(f'    """``{d.full_name}``."""')
        else:
            lines.append(f'    """``{d.full_name}``.')
            lines.append("")
            lines += [f"    {s}".rstrip() for s in d.doc]
            lines.append('    """')
        lines.append("")
        lines.append(f'    __ros_type__ = "{d.full_name}"')
        lines.append(f'    __rihs01__ = "{rihs01(d.full_name, defs)}"')
        for c in d.constants:
            lines.append(f"    {c.name} = {_literal(c.base, c.value)}")
        lines.append("")
        for f in d.fields:
            lines += [f"    # {c}".rstrip() for c in f.comment]
            line = f"    {f.name}: {_annotation(f.type)} = {_default(f)}"
            if len(line) > 100 and _default(f).startswith("field("):
                line = f"    {f.name}: {_annotation(f.type)} = field(\n        {_default(f)[6:-1]}\n    )"
            lines.append(line)
    return "\n".join(lines) + "\n"


def generate(msg_dir: Path | None = None, out_dir: Path | None = None) -> dict[Path, str]:
    """Every generated module's path and text (nothing is written)."""
    defs = load_definitions(msg_dir)
    out_dir = out_dir or OUTPUT_DIR
    packages = [p for p in PACKAGE_ORDER if any(d.package == p for d in defs.values())]
    extra = sorted({d.package for d in defs.values()} - set(packages))
    if extra:
        raise MsgDefinitionError(f"packages {extra} are not in PACKAGE_ORDER")
    return {out_dir / f"{pkg}.py": render_package(pkg, defs) for pkg in packages}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intermimic_policy.ros.msg_codegen",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a generated module differs from what is checked in")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            _write_atomic(path, text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(REPO_ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
