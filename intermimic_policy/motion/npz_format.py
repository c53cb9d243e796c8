"""The project's own clip format: a NumPy ``.npz`` that says what it is and round-trips exactly.

Unlike InterMimic's ``.pt`` it stores fps, object name, clip name, source and meta, keeps
every array in its own dtype (labels stay int8 / bool), needs no pickle to read, and carries
``format`` / ``format_version`` so that a reader refuses files it does not understand.

Keys (version 1): ``format`` (str), ``format_version`` (int64), one array per
``HOIMotion`` array field, ``fps`` (float64), ``object_name``, ``name``, ``source`` (str),
``meta_json`` (str: a JSON object of strings).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.motion.archive import MemberRule, check_members, open_zip
from intermimic_policy.motion.hoi_motion import ARRAY_FIELDS, HOIMotion, MotionError
from intermimic_policy.motion.validate import MAX_FRAMES, one_line, read_header, require_file, validate_motion

FORMAT_TAG = "intermimic.hoi_motion"
FORMAT_VERSION = 1

# field -> (shape after the frame axis, allowed dtype kinds)
SCHEMA: dict[str, tuple[tuple[int, ...], str]] = {
    "root_pos": ((3,), "f"),
    "root_rot": ((4,), "f"),
    "joint_rotvec": ((NUM_JOINTS, 3), "f"),
    "body_pos": ((NUM_BODIES, 3), "f"),
    "body_rot": ((NUM_BODIES, 4), "f"),
    "object_pos": ((3,), "f"),
    "object_rot": ((4,), "f"),
    "body_contact": ((NUM_BODIES,), "i"),
    "object_contact": ((), "b"),
}
assert tuple(SCHEMA) == ARRAY_FIELDS
STRING_FIELDS: tuple[str, ...] = ("object_name", "name", "source")


def save_npz(motion: HOIMotion, path: str | os.PathLike[str], *, compress: bool = False) -> Path:
    """Write a clip atomically; ``load_npz`` returns it bit for bit. Returns the path written."""
    p = Path(path)
    motion = validate_motion(motion, f"{p} (writing {motion.name or 'motion'})")
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT_TAG),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "fps": np.array(motion.fps, dtype=np.float64),
        "meta_json": np.array(json.dumps(motion.meta, sort_keys=True)),
    }
    for key in STRING_FIELDS:
        arrays[key] = np.array(str(getattr(motion, key)))
    for key in ARRAY_FIELDS:
        arrays[key] = np.ascontiguousarray(getattr(motion, key))
    writer = np.savez_compressed if compress else np.savez
    with atomic_output(p) as handle:
        writer(handle, **arrays)
    return p


# Budgets: the uncompressed size each member may have, known before anything is inflated.
_NPY_HEADER_BYTES = 4096  # np.save headers are 64-128 bytes; a little slack for long shapes
_STRING_BYTES = 4 * 4096  # object / clip names (numpy stores str as UTF-32)
_META_BYTES = 4 * 65536  # the meta JSON
_MAX_ITEMSIZE = 8  # float64 is the widest dtype a clip array may use


# Optional per-tick arrays a closed-loop recording carries beside the clip (``sim_bridge``): read
# within a per-frame budget, ignored by the clip loader, kept for those who plot them.
TRACE_FIELDS = ("E_h", "E_o", "reference_frame", "tick_time_s", "fresh_targets", "round_trip_ms")


def _member_rules(max_frames: int) -> dict[str, MemberRule]:
    rules = {key: MemberRule(re.escape(key) + r"\.npy", _NPY_HEADER_BYTES + _STRING_BYTES, key)
             for key in ("format", "format_version", "fps", *STRING_FIELDS)}
    rules["meta_json"] = MemberRule(r"meta_json\.npy", _NPY_HEADER_BYTES + _META_BYTES, "meta_json")
    for key, (tail, _) in SCHEMA.items():
        per_frame = int(np.prod(tail, dtype=np.int64)) * _MAX_ITEMSIZE
        rules[key] = MemberRule(re.escape(key) + r"\.npy", _NPY_HEADER_BYTES + max_frames * per_frame, key)
    for key in TRACE_FIELDS:
        rules[key] = MemberRule(re.escape(key) + r"\.npy", _NPY_HEADER_BYTES + (max_frames + 1) * _MAX_ITEMSIZE, key)
    return rules


def _npy_header(p: Path, name: str, handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    fmt = np.lib.format
    version = fmt.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(handle)
    else:
        raise MotionError(f"{p}: member {name!r} uses .npy format version {version}, expected 1.0 or 2.0")
    return tuple(int(n) for n in shape), dtype


def _read_member(p: Path, archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, max_frames: int) -> np.ndarray:
    """One array, after checking that its header's shape and dtype fit the member's stated size."""
    with archive.open(info) as handle:
        shape, dtype = _npy_header(p, info.filename, handle)
        header_len = handle.tell()
    if dtype.hasobject:
        raise MotionError(f"{p}: cannot be read: {key} holds Python objects (pickle), which are never loaded")
    if key in SCHEMA and shape and shape[0] > max_frames:
        raise MotionError(f"{p}: {key} has {shape[0]} frames, over the limit of {max_frames} frames")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if header_len + count * dtype.itemsize != info.file_size:
        raise MotionError(
            f"{p}: member {info.filename!r} declares a {dtype} array of shape {shape} but holds "
            f"{info.file_size - header_len} data bytes; truncated or forged"
        )
    with archive.open(info) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def _read(p: Path, max_frames: int = MAX_FRAMES) -> dict[str, np.ndarray]:
    if not read_header(p, 4).startswith(b"PK"):
        raise MotionError(f"{p}: not an .npz file (not a zip archive)")
    with open_zip(p) as archive:
        if "format.npy" not in archive.namelist():
            raise MotionError(f"{p}: not an intermimic motion file (no 'format' key)")
        members = check_members(p, archive, _member_rules(max_frames))
        try:
            return {name[: -len(".npy")]: _read_member(p, archive, name[: -len(".npy")], info, max_frames)
                    for name, info in members.items()}
        except MotionError:
            raise
        except Exception as exc:  # untrusted file: zip, zlib, header and pickle refusals all mean "bad file"
            raise MotionError(
                f"{p}: cannot be read as an .npz file, truncated or corrupt "
                f"({type(exc).__name__}: {one_line(str(exc), 160)})"
            ) from exc


def _string(p: Path, data: dict[str, np.ndarray], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise MotionError(f"{p}: missing key {key!r}")
    if value.shape != () or value.dtype.kind != "U":
        raise MotionError(f"{p}: {key!r} must be a string, got {value.dtype} array of shape {value.shape}")
    return str(value.item())


def _check_header(p: Path, data: dict[str, np.ndarray]) -> None:
    if "format" not in data:
        raise MotionError(f"{p}: not an intermimic motion file (no 'format' key)")
    tag = _string(p, data, "format")
    if tag != FORMAT_TAG:
        raise MotionError(f"{p}: format is {tag!r}, expected {FORMAT_TAG!r}")
    version = data.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise MotionError(f"{p}: missing or non-integer 'format_version'")
    v = int(version.item())
    if v > FORMAT_VERSION:
        raise MotionError(
            f"{p}: format_version {v} is newer than this intermimic reads ({FORMAT_VERSION}); "
            "upgrade intermimic"
        )
    if v < 1:
        raise MotionError(f"{p}: invalid format_version {v}")


def load_npz(path: str | os.PathLike[str], *, max_frames: int = MAX_FRAMES) -> HOIMotion:
    """Read and validate a clip written by :func:`save_npz` (never unpickles).

    Only the members this format writes are read, each within a byte budget (``max_frames``
    frames of float64) checked before it is decompressed.
    """
    p = require_file(path)
    data = _read(p, max_frames)
    _check_header(p, data)
    arrays: dict[str, np.ndarray] = {}
    frames: int | None = None
    for key, (tail, kinds) in SCHEMA.items():
        value = data.get(key)
        if value is None:
            raise MotionError(f"{p}: missing array {key!r}")
        if value.dtype.kind not in kinds:
            raise MotionError(f"{p}: {key} has dtype {value.dtype}, expected kind {kinds!r}")
        frames = value.shape[0] if frames is None and value.ndim > 0 else frames
        if value.shape != (frames, *tail):
            raise MotionError(f"{p}: {key} has shape {value.shape}, expected {(frames, *tail)}")
        arrays[key] = value
    fps = data.get("fps")
    if fps is None or fps.shape != () or fps.dtype.kind != "f":
        raise MotionError(f"{p}: missing or non-float 'fps'")
    if not np.isfinite(fps) or fps <= 0:
        raise MotionError(f"{p}: fps must be a positive number, got {fps.item()!r}")
    try:
        meta = json.loads(_string(p, data, "meta_json"))
    except json.JSONDecodeError as exc:
        raise MotionError(f"{p}: meta_json is not valid JSON ({one_line(str(exc))})") from exc
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise MotionError(f"{p}: meta_json must be a JSON object of strings")
    if not frames:
        raise MotionError(f"{p}: too few frames (0)")
    motion = HOIMotion(
        fps=float(fps.item()),
        **arrays,
        object_name=_string(p, data, "object_name"),
        name=_string(p, data, "name"),
        source=_string(p, data, "source"),
        meta=meta,
    )
    return validate_motion(motion, p)
