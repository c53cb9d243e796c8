"""Bounded reading of zip archives (``.npz`` and ``torch.save`` files) before anything is decompressed.

A zip's central directory states every member's uncompressed size, and Python's ``zipfile``
never returns more than that size. Checking the directory first therefore bounds what a loader
can be made to allocate: a 1 MB file whose member inflates to gigabytes, or that carries
members nobody asked for, is refused before a byte of it is inflated.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.validate import one_line

MAX_MEMBERS = 64
"""More entries than any clip format writes; a longer directory is not a clip."""


@dataclass(frozen=True)
class MemberRule:
    """Members whose name (after the archive's folder prefix, if any) matches ``pattern``."""

    pattern: str
    max_bytes: int
    what: str  # for messages: "the tensor data", "array body_pos"...

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


def _human(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise MotionError(f"{path}: cannot be read: truncated or corrupt zip archive ({one_line(str(exc), 120)})") from exc


def check_members(
    path: Path,
    archive: zipfile.ZipFile,
    rules: Mapping[str, MemberRule],
    *,
    prefix: str = "",
    total_bytes: int | None = None,
) -> dict[str, zipfile.ZipInfo]:
    """Check the directory against ``rules`` (key: rule name); return {name without prefix: info}.

    Refused, each with one line naming the member and the limit: unexpected members, duplicate
    names, encrypted members, a member larger than its rule's ``max_bytes`` or all members
    together larger than ``total_bytes``.
    """
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise MotionError(f"{path}: {len(infos)} archive members, more than the limit of {MAX_MEMBERS}")
    found: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if prefix and not name.startswith(prefix):
            raise MotionError(f"{path}: unexpected archive member {name!r} (outside {prefix!r})")
        short = name[len(prefix):]
        if short in found:
            raise MotionError(f"{path}: archive member {name!r} appears twice")
        if info.flag_bits & 0x1:
            raise MotionError(f"{path}: archive member {name!r} is encrypted")
        rule = next((r for r in rules.values() if r.matches(short)), None)
        if rule is None:
            raise MotionError(f"{path}: unexpected archive member {name!r}; expected only: "
                              + ", ".join(r.what for r in rules.values()))
        if info.file_size > rule.max_bytes:
            raise MotionError(
                f"{path}: archive member {name!r} ({rule.what}) is {_human(info.file_size)} uncompressed, "
                f"over the limit of {_human(rule.max_bytes)}"
            )
        total += info.file_size
        found[short] = info
    if total_bytes is not None and total > total_bytes:
        raise MotionError(f"{path}: archive members total {_human(total)} uncompressed, "
                          f"over the limit of {_human(total_bytes)}")
    return found
