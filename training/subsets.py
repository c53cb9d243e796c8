"""Which clips a teacher learns: by subject, by object, or an explicit list of paths/globs.

InterMimic trains one teacher per subject (``dataSub: ['sub2']``); a teacher per object or per
hand-picked list is as useful. A subset is a filter over loaded clips (subject from the clip's
``meta['subject']`` or its ``subN`` name, object from ``HOIMotion.object_name``), so every
teacher's clip list is decided before any job starts, and an empty subset fails early.

Clip sources are file paths/globs, or ``example`` for the bundled example clip (so a fresh
machine without the shared data can run the pipeline).
"""

from __future__ import annotations

import fnmatch
import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.robot_motion import RobotMotion, is_robot_motion_file, load_robot_motion
from training.config import TeacherSpec, expand_path

EXAMPLE_CLIP = "example"

_SUBJECT_RE = re.compile(r"(?:^|[_/\\.-])(sub\d+)(?=$|[_/\\.-])", re.IGNORECASE)


class SubsetError(IntermimicError, ValueError):
    """A clip list or subset that selects nothing, or names files that do not exist."""


@dataclass(frozen=True)
class Clip:
    """A loaded clip and where it came from (``source`` is a path or ``example``)."""

    source: str
    motion: HOIMotion


@dataclass(frozen=True)
class ClipSubset:
    subject: str | None = None
    object: str | None = None
    paths: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: TeacherSpec) -> ClipSubset:
        return cls(subject=spec.subject, object=spec.object, paths=tuple(spec.paths))

    def describe(self) -> str:
        parts = [f"subject={self.subject}" if self.subject else "", f"object={self.object}" if self.object else ""]
        if self.paths:
            parts.append(f"paths={list(self.paths)}")
        return ", ".join(p for p in parts if p) or "all clips"


def resolve_clip_sources(patterns: Sequence[str]) -> list[str]:
    """Expand globs and ``$VARS``; each pattern must match at least one file. Sorted, unique."""
    out: list[str] = []
    for pattern in patterns:
        if pattern == EXAMPLE_CLIP:
            out.append(EXAMPLE_CLIP)
            continue
        expanded = expand_path(pattern)
        if glob.has_magic(expanded):
            matches = sorted(p for p in glob.glob(expanded) if Path(p).is_file())
            if not matches:
                raise SubsetError(f"clip pattern {pattern!r} matches no file")
            out.extend(str(Path(m).resolve()) for m in matches)
        else:
            path = Path(expanded)
            if not path.is_file():
                raise SubsetError(f"clip {pattern!r}: no such file")
            out.append(str(path.resolve()))
    return list(dict.fromkeys(out))


def load_clip(source: str, frames: int | None = None) -> Clip:
    """Load one clip (``example`` = the bundled clip); keep the first ``frames`` frames if given."""
    if source == EXAMPLE_CLIP:
        from intermimic_policy.motion.example import make_example_motion

        motion = make_example_motion()
    elif is_robot_motion_file(source):  # a clip retargeted to a robot (``intermimic retarget --robot``)
        robot = load_robot_motion(source)
        if frames is not None and robot.num_frames > frames:
            robot = slice_robot_motion(robot, frames)
        return Clip(source, robot)  # type: ignore[arg-type]
    else:
        from intermimic_policy.motion.io import load_motion

        motion = load_motion(source)
    if frames is not None and motion.num_frames > frames:
        motion = motion.slice(0, frames)
    return Clip(source, motion)


def slice_robot_motion(m: RobotMotion, frames: int) -> RobotMotion:
    """The first ``frames`` frames of a robot motion."""
    import dataclasses

    arrays = {k: getattr(m, k)[:frames] for k in ("root_pos", "root_rot", "joint_pos", "object_pos", "object_rot",
                                                 "hand_contact", "foot_contact")}
    return dataclasses.replace(m, **arrays)


def load_clips(sources: Sequence[str], frames: int | None = None) -> list[Clip]:
    return [load_clip(s, frames) for s in sources]


def subject_of(clip: Clip) -> str | None:
    """``meta['subject']`` if the loader set it, else the ``subN`` token of the name or file."""
    meta = clip.motion.meta.get("subject")
    if meta:
        return str(meta).lower()
    for text in (clip.motion.name, Path(clip.source).name):
        match = _SUBJECT_RE.search(text or "")
        if match:
            return match.group(1).lower()
    return None


def _matches_path(clip: Clip, patterns: Sequence[str]) -> bool:
    name = Path(clip.source).name
    for pattern in patterns:
        if pattern == clip.source or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(clip.source, pattern):
            return True
    return False


def select(subset: ClipSubset, clips: Sequence[Clip], teacher: str = "teacher") -> list[Clip]:
    """The clips of ``subset``: path patterns, then subject, then object. Empty is an error."""
    chosen = list(clips)
    if subset.paths:
        resolved = set()
        for p in subset.paths:
            try:
                resolved.update(resolve_clip_sources([p]))
            except SubsetError:
                pass  # may still match by file name among the loaded clips
        patterns = list(subset.paths) + sorted(resolved)
        chosen = [c for c in chosen if _matches_path(c, patterns)]
    if subset.subject:
        chosen = [c for c in chosen if subject_of(c) == subset.subject.lower()]
    if subset.object:
        chosen = [c for c in chosen if c.motion.object_name.lower() == subset.object.lower()]
    if not chosen:
        available = sorted({f"{subject_of(c)}/{c.motion.object_name}" for c in clips})
        raise SubsetError(
            f"teacher {teacher!r}: subset ({subset.describe()}) selects none of the {len(clips)} clip(s); "
            f"available subject/object: {available}"
        )
    return chosen
