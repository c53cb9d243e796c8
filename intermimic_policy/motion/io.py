"""One entry point for clips on disk: pick the format from the file extension.

``.pt`` is InterMimic's layout (:mod:`.intermimic_pt`), ``.npz`` the project's own
(:mod:`.npz_format`). Every path through here is validated, so callers can trust what they get.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.intermimic_pt import load_intermimic_pt, save_intermimic_pt
from intermimic_policy.motion.npz_format import load_npz, save_npz

FORMATS: dict[str, str] = {".pt": "InterMimic [T, 591] tensor", ".npz": "intermimic .npz"}


def _suffix(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(f"{s} ({d})" for s, d in FORMATS.items())
        raise MotionError(f"{p}: unsupported extension {p.suffix or '(none)'!r}; expected {known}")
    return suffix


def load_motion(path: str | os.PathLike[str], variant: str | None = None) -> HOIMotion:
    """Load and validate a clip; ``variant`` applies to InterMimic ``.pt`` files only."""
    p = Path(path)
    if _suffix(p) == ".pt":
        return load_intermimic_pt(p, variant)
    if variant is not None:
        raise MotionError(f"{p}: variant {variant!r} applies to InterMimic .pt files only")
    return load_npz(p)


def save_motion(motion: HOIMotion, path: str | os.PathLike[str]) -> Path:
    """Write a clip in the format its extension names (atomically); returns the path."""
    p = Path(path)
    if _suffix(p) == ".pt":
        return save_intermimic_pt(motion, p)
    return save_npz(motion, p)


def find_motion_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every clip file under ``root`` (recursively), sorted so runs are reproducible."""
    base = Path(root)
    if not base.is_dir():
        raise MotionError(f"{base}: not a folder")
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in FORMATS and p.is_file())


def load_motions(
    paths: Sequence[str | os.PathLike[str]], variant: str | None = None, progress: bool = True
) -> list[HOIMotion]:
    """Load many clips with a progress bar; the first bad file stops with its own error."""
    return [load_motion(p, variant) for p in tqdm(paths, desc="loading clips", unit="clip", disable=not progress)]
