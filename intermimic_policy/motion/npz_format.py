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
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.motion.atomic import atomic_output
from intermimic_policy.motion.hoi_motion import ARRAY_FIELDS, HOIMotion, MotionError
from intermimic_policy.motion.validate import one_line, read_header, require_file, validate_motion

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


def _read(p: Path) -> dict[str, np.ndarray]:
    if not read_header(p, 4).startswith(b"PK"):
        raise MotionError(f"{p}: not an .npz file (not a zip archive)")
    try:
        with np.load(p, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
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


def load_npz(path: str | os.PathLike[str]) -> HOIMotion:
    """Read and validate a clip written by :func:`save_npz` (never unpickles)."""
    p = require_file(path)
    data = _read(p)
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
