"""Our Cyclone DDS message types are ROS 2's: same fields as the .msg files, same CDR bytes as
rosbags (an independent ROS 2 serializer) for Humble and Jazzy, same REP-2011 type hashes."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from intermimic_policy.ros import msg_codegen, msgs
from intermimic_policy.ros.msgs import MESSAGE_TYPES, FieldInfo, MessageError, fields_of
from intermimic_policy.ros.msgs.geometry_msgs import Pose, Quaternion
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow

REPO = Path(__file__).resolve().parents[1]
MSG_PKG = REPO / "ros2_ws" / "src" / "intermimic_msgs"
OUR_MSGS = sorted((MSG_PKG / "msg").glob("*.msg"))
STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
ALL_TYPES = sorted(MESSAGE_TYPES)

REQUIRED_TYPES = {
    "builtin_interfaces/msg/Time", "std_msgs/msg/Header", "geometry_msgs/msg/Point",
    "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Pose", "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/Vector3", "geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistWithCovariance",
    "geometry_msgs/msg/PoseWithCovariance", "sensor_msgs/msg/JointState", "nav_msgs/msg/Odometry",
    "diagnostic_msgs/msg/KeyValue", "diagnostic_msgs/msg/DiagnosticStatus",
    "diagnostic_msgs/msg/DiagnosticArray", "rosgraph_msgs/msg/Clock",
    "intermimic_msgs/msg/HOIFrame", "intermimic_msgs/msg/HOIWindow",
    "intermimic_msgs/msg/PDTargets", "intermimic_msgs/msg/ContactState",
}


def _store(which: str) -> Typestore:
    """A rosbags store with our .msg files registered through rosbags' own parser."""
    store = get_typestore(STORES[which])
    types: dict[str, Any] = {}
    for path in OUR_MSGS:
        types.update(get_types_from_msg(path.read_text(), f"intermimic_msgs/msg/{path.stem}"))
    store.register(types)
    return store


@pytest.fixture(scope="module", params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Typestore:
    return _store(request.param)


# ----------------------------------------------------------------------- definitions and codegen


def test_every_needed_type_exists_with_ros_dds_names() -> None:
    assert REQUIRED_TYPES <= set(MESSAGE_TYPES)
    for name, cls in MESSAGE_TYPES.items():
        pkg, _, short = name.split("/")
        assert cls.__idl__.idl_transformed_typename == f"{pkg}::msg::dds_::{short}_"
        assert msgs.dds_type_name(cls) == f"{pkg}::msg::dds_::{short}_"
        assert cls.__idl_annotations__.get("extensibility") == "final"
    assert msgs.message_type("geometry_msgs/Pose") is Pose
    with pytest.raises(MessageError, match="unknown message type"):
        msgs.message_type("geometry_msgs/msg/Nope")


def test_checked_in_modules_equal_a_fresh_generation() -> None:
    generated = msg_codegen.generate()
    on_disk = {p.name for p in (REPO / "intermimic_policy" / "ros" / "msgs").glob("*.py")}
    assert {p.name for p in generated} == on_disk - {"__init__.py"}
    for path, text in generated.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python -m intermimic_policy.ros.msg_codegen")
    assert msg_codegen.main(["--check"]) == 0


def _rosbags_field(desc: tuple[Any, Any]) -> tuple[str, str, int, int]:
    """(base, kind, length, string_bound) from a rosbags field description."""
    node, rest = desc
    kind, length = "none", 0
    if node.name == "ARRAY":
        (node, rest), length = rest
        kind = "fixed"
    elif node.name == "SEQUENCE":
        (node, rest), length = rest
        kind = "bounded" if length else "unbounded"
    if node.name == "NAME":
        return rest, kind, length, 0
    base, sbound = rest
    return base, kind, length, sbound


@pytest.mark.parametrize("name", ALL_TYPES)
def test_python_fields_match_the_msg_definitions(store: Typestore, name: str) -> None:
    """Field by field: names, order, element types, array kinds and bounds, constants."""
    consts, fielddefs = store.fielddefs[name]
    ours = fields_of(MESSAGE_TYPES[name])
    assert [f.name for f in ours] == [n for n, _ in fielddefs]
    for info, (_, desc) in zip(ours, fielddefs):
        assert (info.base, info.kind, info.length, info.string_bound) == _rosbags_field(desc), info
        if info.nested is not None:
            assert info.nested is MESSAGE_TYPES[info.base]
    cls = MESSAGE_TYPES[name]
    for const_name, _, value in consts:
        assert getattr(cls, const_name) == value


def test_our_msg_files_parse_with_rosbags() -> None:
    for path in OUR_MSGS:
        parsed = get_types_from_msg(path.read_text(), f"intermimic_msgs/msg/{path.stem}")
        assert list(parsed) == [f"intermimic_msgs/msg/{path.stem}"]
    hoi = {f.name: f for f in fields_of(HOIFrame)}
    assert (hoi["joint_rotvec"].length, hoi["body_positions"].length) == (153, 156)
    assert (hoi["body_rotations"].length, hoi["body_contact_labels"].length) == (208, 52)
    assert HOIFrame.CONTACT_MUST_TOUCH == 1 and HOIFrame.CONTACT_MUST_NOT_TOUCH == -1


@pytest.mark.parametrize("name", ALL_TYPES)
def test_type_hashes_match_rosbags(name: str) -> None:
    jazzy = _store("jazzy")
    assert msgs.type_hash(MESSAGE_TYPES[name]) == jazzy.hash_rihs01(name)


def test_type_hashes_match_values_published_by_ros2_jazzy() -> None:
    # As printed by `ros2 topic info -v` on Jazzy (independent of rosbags and of our code).
    assert msgs.type_hash(MESSAGE_TYPES["std_msgs/msg/Header"]) == (
        "RIHS01_f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01")
    assert msgs.type_hash(MESSAGE_TYPES["geometry_msgs/msg/Vector3"]) == (
        "RIHS01_cc12fe83e4c02719f1ce8070bfd14aecd40f75a96696a67a2a1f37f7dbb0765d")


def test_ros_defaults_are_kept() -> None:
    assert Quaternion().w == 1.0 and Pose().orientation.w == 1.0  # geometry_msgs: "float64 w 1"
    frame = HOIFrame()
    assert len(frame.joint_rotvec) == 153 and frame.body_contact_labels == [0] * 52
    frame.joint_rotvec[0] = 1.0
    assert HOIFrame().joint_rotvec[0] == 0.0  # no shared mutable default


def test_package_manifest_and_cmake_declare_every_message_and_dependency() -> None:
    cmake = (MSG_PKG / "CMakeLists.txt").read_text()
    manifest = ET.parse(MSG_PKG / "package.xml").getroot()
    assert manifest.findtext("name") == "intermimic_msgs"
    assert manifest.findtext("member_of_group") == "rosidl_interface_packages"
    build_tools = {e.text for e in manifest.findall("buildtool_depend")}
    assert {"ament_cmake", "rosidl_default_generators"} <= build_tools
    assert "rosidl_default_runtime" in {e.text for e in manifest.findall("exec_depend")}
    depends = {e.text for e in manifest.findall("depend")}
    deps_line = next(line for line in cmake.splitlines() if "DEPENDENCIES" in line)
    for path in OUR_MSGS:
        assert f'"msg/{path.name}"' in cmake, f"{path.name} missing from rosidl_generate_interfaces"
        for info in fields_of(MESSAGE_TYPES[f"intermimic_msgs/msg/{path.stem}"]):
            pkg = info.base.split("/")[0] if info.nested is not None else None
            if pkg and pkg != "intermimic_msgs":
                assert pkg in depends, f"package.xml lacks <depend>{pkg}</depend>"
                assert pkg in deps_line.split(), f"CMakeLists DEPENDENCIES lacks {pkg}"
                assert f"find_package({pkg} REQUIRED)" in cmake


# ---------------------------------------------------------------------------- wire equality

_ALPHABET = "abcXYZ_/ 09-é日"
_INT_RANGES = {
    # ROS 2 byte is an octet (0..255); rosbags packs it as a signed char (ROS 1's byte), so
    # only 0..127 is comparable through rosbags. Our range check for byte is tested below.
    "byte": (0, 127), "int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}
_NUMPY = {"bool": np.bool_, "byte": np.uint8, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
          "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
          "uint64": np.uint64, "float32": np.float32, "float64": np.float64}


def _random_scalar(base: str, rng: random.Random, string_bound: int = 0) -> Any:
    if base == "bool":
        return rng.random() < 0.5
    if base == "string":
        if string_bound:
            return "".join(rng.choice("abc_XYZ") for _ in range(rng.randint(0, string_bound)))
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 9)))
    if base == "float32":
        return float(np.float32(rng.uniform(-1e3, 1e3)))  # exactly representable
    if base == "float64":
        return rng.choice([rng.uniform(-1e6, 1e6), -0.0, 1e-300])
    lo, hi = _INT_RANGES[base]
    return rng.choice([lo, hi, rng.randint(lo, hi)])


def _random_value(info: FieldInfo, rng: random.Random, depth: int) -> Any:
    def one() -> Any:
        if info.nested is not None:
            return _random_tree(info.nested, rng, depth + 1)
        return _random_scalar(info.base, rng, info.string_bound)

    if info.kind == "none":
        return one()
    n = info.length if info.kind == "fixed" else rng.randint(0, 3 if depth == 0 else 2)
    if info.kind == "bounded":
        n = min(n, info.length)
    return [one() for _ in range(n)]


def _random_tree(cls: type, rng: random.Random, depth: int = 0) -> dict[str, Any]:
    return {f.name: _random_value(f, rng, depth) for f in fields_of(cls)}


def _ours(cls: type, tree: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields_of(cls):
        value = tree[f.name]
        if f.nested is not None:
            value = _ours(f.nested, value) if f.kind == "none" else [_ours(f.nested, v) for v in value]
        kwargs[f.name] = value
    return cls(**kwargs)


def _rosbags(store: Typestore, cls: type, tree: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields_of(cls):
        value = tree[f.name]
        if f.nested is not None:
            value = (_rosbags(store, f.nested, value) if f.kind == "none"
                     else [_rosbags(store, f.nested, v) for v in value])
        elif f.kind != "none" and f.base != "string":
            value = np.array(value, dtype=_NUMPY[f.base])
        kwargs[f.name] = value
    return store.types[cls.__ros_type__](**kwargs)  # type: ignore[attr-defined]


def _plain(msg: Any) -> Any:
    """A rosbags message as nested lists/dicts, to compare with our dataclass's tree."""
    if hasattr(msg, "__msgtype__"):
        return {f.name: _plain(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
    if isinstance(msg, np.ndarray):
        return msg.tolist()
    if isinstance(msg, list):
        return [_plain(v) for v in msg]
    return msg


def _tree_of(msg: Any) -> Any:
    if msgs.is_message_type(type(msg)):
        return {f.name: _tree_of(getattr(msg, f.name)) for f in fields_of(type(msg))}
    if isinstance(msg, list):
        return [_tree_of(v) for v in msg]
    return msg


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ALL_TYPES)
def test_cdr_bytes_equal_rosbags(store: Typestore, name: str, seed: int) -> None:
    cls = MESSAGE_TYPES[name]
    rng = random.Random(f"{name}-{seed}")
    tree = _random_tree(cls, rng)
    ours = _ours(cls, tree)
    theirs = _rosbags(store, cls, tree)
    ours_bytes = ours.serialize()  # includes the 4-byte encapsulation header, as ROS does
    theirs_bytes = bytes(store.serialize_cdr(theirs, name))
    assert ours_bytes[:4] == b"\x00\x01\x00\x00"  # CDR little endian (XCDR1)
    assert ours_bytes == theirs_bytes
    # and each side reads the other's bytes back to the same values
    assert _tree_of(cls.deserialize(theirs_bytes)) == tree
    assert _plain(store.deserialize_cdr(ours_bytes, name)) == _plain(theirs)


def test_a_full_hoi_window_round_trips_through_rosbags(store: Typestore) -> None:
    rng = random.Random(7)
    frames = [_ours(HOIFrame, _random_tree(HOIFrame, rng)) for _ in range(17)]
    window = HOIWindow(start_frame=5, frames=frames)
    data = window.serialize()
    back: Any = store.deserialize_cdr(data, "intermimic_msgs/msg/HOIWindow")
    assert len(back.frames) == 17 and back.start_frame == 5
    assert bytes(store.serialize_cdr(back, "intermimic_msgs/msg/HOIWindow")) == data


# ------------------------------------------------------------------------------- validation


def test_wrong_sized_or_out_of_range_fields_are_named() -> None:
    frame = HOIFrame()
    frame.joint_rotvec = [0.0] * 152
    with pytest.raises(MessageError, match=r"HOIFrame\.joint_rotvec: expected exactly 153 values, got 152"):
        msgs.validate(frame)
    with pytest.raises(Exception, match="joint_rotvec"):  # cyclonedds refuses it too
        frame.serialize()
    frame = HOIFrame()
    frame.body_contact_labels[3] = 2**7
    with pytest.raises(MessageError, match=r"body_contact_labels\[3\]: 128 is outside int8"):
        msgs.validate(frame)
    msgs.validate(frame, elements=False)  # shape only: passes
    window = HOIWindow(frames=[HOIFrame(), Pose()])  # type: ignore[list-item]
    with pytest.raises(MessageError, match=r"HOIWindow\.frames\[1\]: expected HOIFrame, got Pose"):
        msgs.validate(window, elements=False)
    frame = HOIFrame(object_name=3)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match=r"object_name: expected str"):
        msgs.validate(frame)
    nan_ok = HOIFrame(fps=float("nan"))
    msgs.validate(nan_ok)


def test_time_conversions_follow_ros() -> None:
    t = msgs.time_from_seconds(-1.25)
    assert (t.sec, t.nanosec) == (-2, 750_000_000)
    t = msgs.time_from_ns(1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789)
    assert msgs.ns_from_time(t) == 1_700_000_000_123_456_789
    assert msgs.seconds_from_time(msgs.time_from_seconds(12.5)) == 12.5
    with pytest.raises(MessageError):
        msgs.time_from_seconds(float("inf"))


# ------------------------------------------------------------------------------ the codegen

_PROBE = """\
# A probe message: bounded types, defaults and constants.
#
# Second paragraph.

string GREETING=hello world # '#' starts a comment, also here
int32 LIMIT=-5  # trailing comment
string<=8 label "hi"
int32[<=3] small
float64[2] pair [1.5, -2.5]
bool flag true
geometry_msgs/Point[<=2] points
std_msgs/Header header
"""


def _load_generated(text: str, name: str) -> Any:
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(text, name, "exec", dont_inherit=True), module.__dict__)  # noqa: S102
    finally:
        del sys.modules[name]
    return module


def test_codegen_handles_bounds_defaults_and_constants(tmp_path: Path) -> None:
    (tmp_path / "CodegenProbe.msg").write_text(_PROBE)
    generated = msg_codegen.generate(msg_dir=tmp_path, out_dir=tmp_path)
    module = _load_generated(generated[tmp_path / "intermimic_msgs.py"], "codegen_probe_msgs")
    probe_cls = module.CodegenProbe
    assert probe_cls.LIMIT == -5 and probe_cls.GREETING == "hello world"
    probe = probe_cls()
    assert (probe.label, probe.pair, probe.flag, probe.small) == ("hi", [1.5, -2.5], True, [])
    info = {f.name: f for f in fields_of(probe_cls)}
    assert info["label"].string_bound == 8 and info["small"].kind == "bounded"
    assert info["points"].length == 2 and info["pair"].kind == "fixed"

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(_PROBE, "intermimic_msgs/msg/CodegenProbe"))
    assert probe_cls.__rihs01__ == store.hash_rihs01("intermimic_msgs/msg/CodegenProbe")
    tree = _random_tree(probe_cls, random.Random(3))
    tree["label"], tree["small"] = "ab1234", [1, -2, 3]
    ours = _ours(probe_cls, tree)
    theirs = bytes(store.serialize_cdr(_rosbags(store, probe_cls, tree),
                                       "intermimic_msgs/msg/CodegenProbe"))
    assert ours.serialize() == theirs
    ours.small = [1, 2, 3, 4]
    with pytest.raises(MessageError, match="at most 3 values"):
        msgs.validate(ours)
    ours.small, ours.label = [], "123456789"
    with pytest.raises(MessageError, match="longer than its bound 8"):
        msgs.validate(ours)


@pytest.mark.parametrize("text, problem", [
    ("float64 Bad_Name\n", "bad field name"),
    ("Strin x\n", "unknown message type"),
    ("float64[0] x\n", "positive size"),
    ("Header header\n", "std_msgs/Header"),
    ("int8[2] x [1, 2, 3]\n", "default has 3 values"),
    ("int8 x 300\n", "outside"),
    ("string<=2 x abc\n", "longer than its bound"),
    ("char c\n", "not supported"),
    ("# only a comment\n", "at least one field"),
    ("float64 x\nfloat64 x\n", "duplicate field"),
])
def test_codegen_rejects_bad_definitions_with_file_and_line(tmp_path: Path, text: str,
                                                           problem: str) -> None:
    (tmp_path / "Broken.msg").write_text(text)
    with pytest.raises(msg_codegen.MsgDefinitionError, match=problem) as info:
        msg_codegen.generate(msg_dir=tmp_path, out_dir=tmp_path)
    assert "Broken.msg" in str(info.value)
