"""RobotMotion: an HOI clip on a robot (root pose, joint positions, object pose, contact labels).

What retargeting writes and what a robot environment or replay reads. Quaternions are (x, y, z, w),
world z-up, metres, seconds, like :class:`~intermimic_policy.motion.hoi_motion.HOIMotion`.

The ``.npz`` (``format`` = ``intermimic.robot_motion``, ``format_version`` 1) holds every array in its
own dtype, the joint names (so a reader can check them against its robot), the names of the
contact sites, and a JSON ``meta`` of strings; it needs no pickle and is written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.atomic import atomic_output
from intermimic_policy.motion.hoi_motion import MotionError

FORMAT_TAG = "intermimic.robot_motion"
FORMAT_VERSION = 1
ARRAYS: tuple[str, ...] = ("root_pos", "root_rot", "joint_pos", "object_pos", "object_rot",
                           "hand_contact", "foot_contact")


@dataclass(frozen=True, eq=False)
class RobotMotion:
    fps: float
    robot: str
    joint_names: tuple[str, ...]
    root_pos: np.ndarray  # [T, 3]
    root_rot: np.ndarray  # [T, 4] xyzw
    joint_pos: np.ndarray  # [T, J] rad, in joint_names order
    object_pos: np.ndarray  # [T, 3]
    object_rot: np.ndarray  # [T, 4] xyzw
    object_name: str
    hand_names: tuple[str, ...]
    hand_contact: np.ndarray  # [T, H] int8 {-1, 0, +1}: the source hand labels
    foot_names: tuple[str, ...]
    foot_contact: np.ndarray  # [T, F] bool: planted on the floor
    name: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.root_pos.shape[0] if self.root_pos.ndim == 2 else -1
        j, h, f = len(self.joint_names), len(self.hand_names), len(self.foot_names)
        shapes = {"root_pos": (t, 3), "root_rot": (t, 4), "joint_pos": (t, j), "object_pos": (t, 3),
                  "object_rot": (t, 4), "hand_contact": (t, h), "foot_contact": (t, f)}
        for key, shape in shapes.items():
            if getattr(self, key).shape != shape:
                raise MotionError(f"{self.name or 'robot motion'}: {key} has shape {getattr(self, key).shape}, expected {shape}")
        if t < 1:
            raise MotionError(f"{self.name or 'robot motion'}: no frames")
        if not self.fps > 0:
            raise MotionError(f"{self.name or 'robot motion'}: fps must be positive, got {self.fps}")
        for key in ("root_pos", "root_rot", "joint_pos", "object_pos", "object_rot"):
            if not np.isfinite(getattr(self, key)).all():
                raise MotionError(f"{self.name or 'robot motion'}: {key} has NaN or infinite values")

    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])

    def qpos(self) -> np.ndarray:
        """[T, 7 + J] Pinocchio configuration (root xyz, quat xyzw, joints)."""
        return np.concatenate([self.root_pos, self.root_rot, self.joint_pos], axis=1)

    def identical(self, other: RobotMotion) -> bool:
        for key in ARRAYS:
            a, b = getattr(self, key), getattr(other, key)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                return False
        keys = ("fps", "robot", "joint_names", "object_name", "hand_names", "foot_names", "name", "source", "meta")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def save_robot_motion(motion: RobotMotion, path: str | os.PathLike[str]) -> Path:
    """Write atomically; :func:`load_robot_motion` returns it bit for bit."""
    p = Path(path)
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT_TAG), "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "fps": np.array(motion.fps, dtype=np.float64), "robot": np.array(motion.robot),
        "object_name": np.array(motion.object_name), "name": np.array(motion.name),
        "source": np.array(motion.source), "meta_json": np.array(json.dumps(motion.meta, sort_keys=True)),
        "joint_names": np.array(motion.joint_names, dtype=str).reshape(-1),
        "hand_names": np.array(motion.hand_names, dtype=str).reshape(-1),
        "foot_names": np.array(motion.foot_names, dtype=str).reshape(-1),
    }
    for key in ARRAYS:
        arrays[key] = np.ascontiguousarray(getattr(motion, key))
    with atomic_output(p) as handle:
        np.savez(handle, **arrays)
    return p


def load_robot_motion(path: str | os.PathLike[str]) -> RobotMotion:
    p = Path(path)
    if not p.is_file():
        raise MotionError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise MotionError(f"{p}: not a readable .npz ({exc})") from exc
    if str(data.get("format", "")) != FORMAT_TAG:
        raise MotionError(f"{p}: not a robot motion (format {str(data.get('format', 'missing'))!r}, expected {FORMAT_TAG!r})")
    version = int(data["format_version"])
    if version != FORMAT_VERSION:
        raise MotionError(f"{p}: robot motion format version {version} is not supported (this reader: {FORMAT_VERSION})")
    missing = [k for k in (*ARRAYS, "fps", "robot", "joint_names", "hand_names", "foot_names") if k not in data]
    if missing:
        raise MotionError(f"{p}: missing keys {missing}")

    def names(k: str) -> tuple[str, ...]:
        return tuple(str(x) for x in data[k].reshape(-1))

    meta = json.loads(str(data["meta_json"])) if "meta_json" in data else {}
    return RobotMotion(
        fps=float(data["fps"]), robot=str(data["robot"]), joint_names=names("joint_names"),
        root_pos=data["root_pos"], root_rot=data["root_rot"], joint_pos=data["joint_pos"],
        object_pos=data["object_pos"], object_rot=data["object_rot"], object_name=str(data["object_name"]),
        hand_names=names("hand_names"), hand_contact=data["hand_contact"], foot_names=names("foot_names"),
        foot_contact=data["foot_contact"], name=str(data["name"]), source=str(data["source"]),
        meta={str(k): str(v) for k, v in meta.items()},
    )


def is_robot_motion_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an ``.npz`` tagged as a robot motion (cheap: reads one key)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == FORMAT_TAG
    except (OSError, ValueError):
        return False
