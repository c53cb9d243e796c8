"""Checks every loader applies, so a bad clip fails at load time with one clear line.

A clip that loads is finite, has unit quaternions, labels in {-1, 0, +1}, a known object and
enough frames. Every error is a :class:`MotionError` whose message starts with the file (or
``where`` string) and names the field, the frame and the problem, on one line, so the CLI can
print it as is.

Frame numbers in messages are the file's own row numbers (``frame_offset`` accounts for rows a
loader dropped, e.g. the empty first row of ``OMOMO_retarget``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.embodiment.smplx_body import BODY_NAMES, JOINT_NAMES
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.object_names import KNOWN_OBJECTS

MIN_FRAMES = 2
"""Fewest frames a clip may have: velocities need two samples."""

MAX_FRAMES = 54_000
"""Most frames a clip file may hold (half an hour at 30 fps; OMOMO clips are a few hundred). Loaders
check it, and the byte size it implies, before decompressing or allocating anything."""

QUAT_REJECT_TOL = 1e-3
"""A quaternion whose norm is further than this from 1 is corrupt, not merely rounded."""

QUAT_KEEP_TOL = 1e-5
"""Norms this close to 1 are left bit-for-bit as stored: float32 normalisation is not idempotent,
and re-normalising already-unit data would break bit-exact round trips."""

QUATERNION_FIELDS: tuple[str, ...] = ("root_rot", "body_rot", "object_rot")
FLOAT_FIELDS: tuple[str, ...] = (
    "root_pos", "root_rot", "joint_rotvec", "body_pos", "body_rot", "object_pos", "object_rot",
)


def one_line(text: str, limit: int = 240) -> str:
    """Collapse whitespace so an error from a library fits the one-line error contract."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def require_file(path: str | os.PathLike[str]) -> Path:
    """The path as a readable, non-empty regular file, or a MotionError that says why not."""
    p = Path(path)
    if not p.exists():
        raise MotionError(f"{p}: file not found")
    if p.is_dir():
        raise MotionError(f"{p}: is a directory, expected a motion file")
    try:
        size = p.stat().st_size
    except OSError as exc:  # permissions, broken mounts
        raise MotionError(f"{p}: cannot be read ({one_line(exc.strerror or str(exc))})") from exc
    if size == 0:
        raise MotionError(f"{p}: file is empty (0 bytes)")
    return p


def read_header(path: Path, size: int = 8) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise MotionError(f"{path}: cannot be read ({one_line(exc.strerror or str(exc))})") from exc


# Per-field names of the second axis, so errors say which body or joint is bad.
_ITEM_NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "body_pos": ("body", BODY_NAMES),
    "body_rot": ("body", BODY_NAMES),
    "body_contact": ("body", BODY_NAMES),
    "joint_rotvec": ("joint", JOINT_NAMES),
}


def _where(field: str, index: tuple[int, ...], frame_offset: int) -> str:
    frame = index[0] + frame_offset
    kind, names = _ITEM_NAMES.get(field, ("", ()))
    if len(index) > 1 and index[1] < len(names):
        return f"{kind} {names[index[1]]} at frame {frame}"
    return f"frame {frame}"


def check_finite(
    where: str, fields: Mapping[str, np.ndarray], frame_offset: int = 0
) -> None:
    """Refuse NaN or infinity, naming the field and the first bad frame."""
    for name, values in fields.items():
        if values.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(values[index]) else "infinite value"
            raise MotionError(
                f"{where}: {kind} in {name} at {_where(name, index, frame_offset)}"
            )


def round_labels(
    where: str, name: str, values: np.ndarray, allowed: tuple[int, ...], frame_offset: int = 0
) -> np.ndarray:
    """Round float labels (the upstream loader does) and refuse levels outside ``allowed``."""
    rounded = np.round(values)
    check_levels(where, name, rounded, allowed, frame_offset)
    return rounded


def check_levels(
    where: str, name: str, values: np.ndarray, allowed: tuple[int, ...], frame_offset: int = 0
) -> None:
    bad = ~np.isin(values, np.asarray(allowed))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        levels = "{" + ", ".join(f"{a:+d}" if a else "0" for a in allowed) + "}"
        raise MotionError(
            f"{where}: {name} has label {values[index].item()!r} at "
            f"{_where(name, index, frame_offset)}, expected one of {levels}"
        )


def check_quaternions(where: str, name: str, q: np.ndarray, frame_offset: int = 0) -> np.ndarray:
    """Unit quaternions: rounding noise is normalised away, anything worse is refused."""
    norm = np.linalg.norm(q.astype(np.float64), axis=-1)
    off = np.abs(norm - 1.0)
    bad = off > QUAT_REJECT_TOL
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        n = float(norm[index])
        what = "zero-norm quaternion" if n < 1e-6 else f"quaternion with norm {n:.6g} (not unit)"
        raise MotionError(f"{where}: {what} in {name} at {_where(name, index, frame_offset)}")
    fix = off > QUAT_KEEP_TOL
    if not fix.any():
        return q
    out = q.copy()
    out[fix] = (q[fix].astype(np.float64) / norm[fix][:, None]).astype(q.dtype)
    return out


def _check_label_array(
    where: str, name: str, values: np.ndarray, allowed: tuple[int, ...], frame_offset: int, kinds: str
) -> None:
    if values.dtype.kind not in kinds:
        raise MotionError(f"{where}: {name} has dtype {values.dtype}, expected integer labels")
    if values.dtype.kind != "b":
        check_levels(where, name, values, allowed, frame_offset)


def validate_motion(
    motion: HOIMotion,
    where: str | os.PathLike[str],
    *,
    frame_offset: int = 0,
    known_objects: Collection[str] = KNOWN_OBJECTS,
    min_frames: int = MIN_FRAMES,
) -> HOIMotion:
    """Check a clip; return it with near-unit quaternions normalised and labels as int8 / bool.

    Returns ``motion`` itself when nothing needed changing, so valid data stays bit-exact.
    """
    where = str(where)
    if motion.num_frames < min_frames:
        raise MotionError(f"{where}: too few frames ({motion.num_frames}), need at least {min_frames}")
    if not np.isfinite(motion.fps) or motion.fps <= 0:
        raise MotionError(f"{where}: fps must be a positive number, got {motion.fps!r}")
    for name in FLOAT_FIELDS:
        kind = getattr(motion, name).dtype.kind
        if kind != "f":
            raise MotionError(f"{where}: {name} has dtype {getattr(motion, name).dtype}, expected float")
    check_finite(
        where, {n: getattr(motion, n) for n in FLOAT_FIELDS}, frame_offset
    )
    if motion.object_name not in known_objects:
        raise MotionError(
            f"{where}: unknown object {motion.object_name!r} (known: {', '.join(sorted(known_objects))})"
        )
    changes: dict[str, Any] = {}
    for name in QUATERNION_FIELDS:
        q = getattr(motion, name)
        fixed = check_quaternions(where, name, q, frame_offset)
        if fixed is not q:
            changes[name] = fixed
    _check_label_array(where, "body_contact", motion.body_contact, (-1, 0, 1), frame_offset, "iuf")
    if motion.body_contact.dtype != np.int8:
        changes["body_contact"] = motion.body_contact.astype(np.int8)
    _check_label_array(where, "object_contact", motion.object_contact, (0, 1), frame_offset, "biuf")
    if motion.object_contact.dtype != np.bool_:
        changes["object_contact"] = motion.object_contact.astype(bool)
    return dataclasses.replace(motion, **changes) if changes else motion
