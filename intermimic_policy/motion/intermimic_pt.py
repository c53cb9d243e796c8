"""InterMimic's clip format: one ``torch.save``d ``[T, 591]`` float32 tensor per ``.pt`` file.

Layout (``intermimic_spec.md`` 1.2): root pos 0:3, root quat 3:7 (xyzw), reserved 7:9, 51 joint
rotation vectors 9:162, 52 body positions 162:318, object pos 318:321, object quat 321:325
(xyzw), reserved 325:330, object-contact flag 330, 52 body contact labels 331:383, 52 global
body quats 383:591. The format carries no fps (upstream hard-codes 30) and no object name: the
object is the second-to-last ``_`` field of the file name (``sub2_largetable_000.pt``).

Variants (the folder a clip ships in):

* ``OMOMO`` / ``OMOMO_new``: kinematic references; every row is a frame.
* ``OMOMO_retarget``: teacher rollouts; row 0 is empty (kinematic columns zero, labels kept)
  and is dropped, so the clip has one frame fewer than its ``OMOMO`` source.

Files are untrusted: the zip directory is checked against what ``torch.save`` writes and a size
budget first, then the file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.motion.archive import MemberRule, check_members, open_zip
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.validate import (
    MAX_FRAMES,
    MIN_FRAMES,
    check_finite,
    one_line,
    read_header,
    require_file,
    round_labels,
    validate_motion,
)

FPS = 30.0
WIDTH = 591
VARIANTS: tuple[str, ...] = ("OMOMO", "OMOMO_new", "OMOMO_retarget")
EMPTY_FIRST_FRAME_VARIANTS: frozenset[str] = frozenset({"OMOMO_retarget"})
SOURCE = "intermimic_pt"


class Columns:
    """Column slices of one row; the single place the 591-column layout is written down."""

    root_pos: slice = slice(0, 3)
    root_rot: slice = slice(3, 7)
    reserved_a: slice = slice(7, 9)
    joint_rotvec: slice = slice(9, 9 + 3 * NUM_JOINTS)
    body_pos: slice = slice(162, 162 + 3 * NUM_BODIES)
    object_pos: slice = slice(318, 321)
    object_rot: slice = slice(321, 325)
    reserved_b: slice = slice(325, 330)
    object_contact: int = 330
    body_contact: slice = slice(331, 331 + NUM_BODIES)
    body_rot: slice = slice(383, 383 + 4 * NUM_BODIES)
    kinematic: slice = slice(0, 330)


COLUMNS = Columns()
assert COLUMNS.body_rot.stop == WIDTH

_CLIP_NAME = re.compile(r"^(?P<subject>sub\d+)_(?P<object>.+)_(?P<index>\d+)$")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # legacy (pre-zip) torch.save files start with a pickle protocol opcode


@dataclass(frozen=True)
class ClipName:
    """What InterMimic's file naming ``sub{S}_{object}_{idx}`` says about a clip."""

    object_name: str
    subject: str = ""
    index: str = ""


def parse_clip_name(path: str | os.PathLike[str]) -> ClipName | None:
    """Subject, object and index from the file name; None when it has no object field.

    Falls back to upstream's rule (object = second-to-last ``_`` field) for other prefixes.
    """
    stem = Path(path).stem
    match = _CLIP_NAME.match(stem)
    if match:
        return ClipName(match["object"], match["subject"], match["index"])
    parts = stem.split("_")
    if len(parts) < 2 or not parts[-2]:
        return None
    subject = parts[0] if len(parts) > 2 and parts[0].startswith("sub") else ""
    return ClipName(parts[-2], subject, parts[-1])


def variant_from_folder(path: str | os.PathLike[str]) -> str | None:
    folder = Path(path).resolve().parent.name.lower()
    return next((v for v in VARIANTS if v.lower() == folder), None)


def _resolve_variant(path: Path, table: np.ndarray, variant: str | None) -> tuple[str, str]:
    if variant is not None:
        if variant not in VARIANTS:
            raise MotionError(f"{path}: unknown variant {variant!r}, expected one of {', '.join(VARIANTS)}")
        return variant, "argument"
    found = variant_from_folder(path)
    if found in EMPTY_FIRST_FRAME_VARIANTS and table.shape[0] and table[0, COLUMNS.kinematic].any():
        # dropping a real frame because of a folder name would lose data silently
        raise MotionError(
            f"{path}: the folder says {found} but frame 0 is not empty; pass the variant explicitly"
        )
    if found is not None:
        return found, "folder"
    if not table[0, COLUMNS.kinematic].any():
        return "OMOMO_retarget", "content"
    return "OMOMO", "content"


# What torch.save writes (under one folder named after the file): the pickle, one record per
# storage, and a few small bookkeeping files. Anything else is refused before torch sees it.
_PICKLE_BYTES = 64 * 1024  # a one-tensor pickle is ~200 bytes
_SMALL_BYTES = 1024


def _torch_zip_rules(max_frames: int) -> dict[str, MemberRule]:
    storage = max_frames * WIDTH * 8  # float64 is the widest float the loader accepts
    return {
        "pickle": MemberRule(r"data\.pkl", _PICKLE_BYTES, "pickle"),
        "storage": MemberRule(r"data/\d{1,6}", storage, "tensor storage"),
        "small": MemberRule(r"version|byteorder|\.format_version|\.storage_alignment|\.data/version"
                            r"|\.data/serialization_id", _SMALL_BYTES, "version files"),
    }


def _check_torch_zip(path: Path, max_frames: int) -> None:
    """Refuse a torch zip holding unexpected or oversized members before torch.load inflates any.

    (torch.load itself checks that each record is as large as the pickle says.)"""
    with open_zip(path) as archive:
        names = archive.namelist()
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise MotionError(f"{path}: a zip archive but not a torch.save file (no data.pkl inside)")
        pickle_name = next(n for n in names if n == "data.pkl" or n.endswith("/data.pkl"))
        prefix = pickle_name[: -len("data.pkl")]
        check_members(path, archive, _torch_zip_rules(max_frames), prefix=prefix,
                      total_bytes=max_frames * WIDTH * 8 + _PICKLE_BYTES + 8 * _SMALL_BYTES)


def _read_table(path: Path, max_frames: int = MAX_FRAMES) -> np.ndarray:
    header = read_header(path)
    if header[:1] == bytes([_PICKLE_PROTO]):
        raise MotionError(
            f"{path}: legacy (pre-zip, torch < 1.6) torch.save file; its sizes cannot be checked before "
            "loading, so it is refused: re-save it with a current torch"
        )
    if not header.startswith(_ZIP_MAGIC):
        raise MotionError(
            f"{path}: not a PyTorch file (starts with {header!r}; expected a tensor written by torch.save)"
        )
    _check_torch_zip(path, max_frames)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stderr must stay one line for the CLI
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise MotionError(
            f"{path}: holds objects the safe loader refuses (torch.load weights_only=True); "
            "expected a plain tensor, pickled code is never run"
        ) from exc
    except Exception as exc:  # untrusted file: any failure inside torch.load is a bad file
        raise MotionError(
            f"{path}: cannot be read as a PyTorch tensor file, truncated or corrupt "
            f"({type(exc).__name__}: {one_line(str(exc), 160)})"
        ) from exc
    if not isinstance(obj, torch.Tensor):
        raise MotionError(f"{path}: contains a {type(obj).__name__}, expected one [T, {WIDTH}] tensor")
    if obj.layout != torch.strided:
        raise MotionError(f"{path}: tensor has layout {obj.layout}, expected a dense tensor")
    if not obj.dtype.is_floating_point or obj.dtype.itemsize > 8:
        raise MotionError(f"{path}: tensor has dtype {obj.dtype}, expected float32")
    if obj.ndim != 2 or obj.shape[1] != WIDTH:
        raise MotionError(f"{path}: tensor has shape {list(obj.shape)}, expected [T, {WIDTH}] (InterMimic layout)")
    if obj.shape[0] > max_frames:
        raise MotionError(f"{path}: tensor has {obj.shape[0]} frames, over the limit of {max_frames} frames")
    # A zero stride would expand a few stored bytes into a full-size table on the copy below.
    if obj.numel() and not obj.is_contiguous():
        raise MotionError(f"{path}: tensor is not stored contiguously (strides {list(obj.stride())}); "
                          "expected a plain [T, 591] tensor as torch.save writes it")
    return obj.detach().to(torch.float32).contiguous().numpy()


def load_intermimic_pt(
    path: str | os.PathLike[str], variant: str | None = None, *, object_name: str | None = None,
    max_frames: int = MAX_FRAMES,
) -> HOIMotion:
    """Read one InterMimic clip, validated (see :mod:`intermimic_policy.motion.validate`).

    ``variant`` overrides detection (folder name, else an all-zero first row means
    ``OMOMO_retarget``); ``object_name`` overrides the name taken from the file name. The archive
    may hold only what ``torch.save`` writes, with at most ``max_frames`` rows, checked before
    anything is decompressed.
    """
    p = require_file(path)
    table = _read_table(p, max_frames)
    if table.shape[0] == 0:
        raise MotionError(f"{p}: too few frames (0), need at least {MIN_FRAMES}")
    variant, variant_from = _resolve_variant(p, table, variant)
    offset = 1 if variant in EMPTY_FIRST_FRAME_VARIANTS else 0
    if offset == 0 and not table[0, COLUMNS.kinematic].any():
        raise MotionError(
            f"{p}: frame 0 is empty (all kinematic columns zero), as in OMOMO_retarget clips; "
            f"load it with variant 'OMOMO_retarget' (got {variant!r} from the {variant_from})"
        )
    rows = table[offset:]
    if rows.shape[0] < MIN_FRAMES:
        dropped = " after dropping the empty frame 0" if offset else ""
        raise MotionError(f"{p}: too few frames ({rows.shape[0]}{dropped}), need at least {MIN_FRAMES}")

    t = rows.shape[0]
    c = COLUMNS
    fields = {
        "root_pos": rows[:, c.root_pos],
        "root_rot": rows[:, c.root_rot],
        "joint_rotvec": rows[:, c.joint_rotvec].reshape(t, NUM_JOINTS, 3),
        "body_pos": rows[:, c.body_pos].reshape(t, NUM_BODIES, 3),
        "body_rot": rows[:, c.body_rot].reshape(t, NUM_BODIES, 4),
        "object_pos": rows[:, c.object_pos],
        "object_rot": rows[:, c.object_rot],
        "object_contact": rows[:, c.object_contact],
        "body_contact": rows[:, c.body_contact],
    }
    check_finite(str(p), fields, offset)
    body_contact = round_labels(str(p), "body_contact", fields.pop("body_contact"), (-1, 0, 1), offset)
    object_contact = round_labels(str(p), "object_contact", fields.pop("object_contact"), (0, 1), offset)

    clip = parse_clip_name(p)
    if object_name is None:
        if clip is None:
            raise MotionError(
                f"{p}: cannot tell the object from the file name; InterMimic clips are named "
                "sub{S}_{object}_{idx}.pt"
            )
        object_name = clip.object_name
    meta = {"variant": variant, "variant_from": variant_from, "dropped_leading_frames": str(offset)}
    if clip is not None and clip.subject:
        meta["subject"] = clip.subject
    if clip is not None and clip.index:
        meta["clip_index"] = clip.index
    motion = HOIMotion(
        fps=FPS,
        **{k: np.ascontiguousarray(v) for k, v in fields.items()},
        object_name=object_name,
        body_contact=body_contact.astype(np.int8),
        object_contact=object_contact.astype(bool),
        name=p.stem,
        source=SOURCE,
        meta=meta,
    )
    return validate_motion(motion, p, frame_offset=offset)


def to_table(motion: HOIMotion, *, empty_first_frame: bool = False) -> np.ndarray:
    """The ``[T, 591]`` float32 rows of a clip (plus an empty row 0 for ``OMOMO_retarget``)."""
    t = motion.num_frames
    c = COLUMNS
    rows = np.zeros((t, WIDTH), dtype=np.float32)
    rows[:, c.root_pos] = motion.root_pos
    rows[:, c.root_rot] = motion.root_rot
    rows[:, c.joint_rotvec] = motion.joint_rotvec.reshape(t, -1)
    rows[:, c.body_pos] = motion.body_pos.reshape(t, -1)
    rows[:, c.body_rot] = motion.body_rot.reshape(t, -1)
    rows[:, c.object_pos] = motion.object_pos
    rows[:, c.object_rot] = motion.object_rot
    rows[:, c.object_contact] = motion.object_contact
    rows[:, c.body_contact] = motion.body_contact
    if not empty_first_frame:
        return rows
    empty = np.zeros((1, WIDTH), dtype=np.float32)
    labels = slice(c.object_contact, c.body_contact.stop)
    empty[0, labels] = rows[0, labels]  # upstream keeps the contact labels in the empty row
    return np.concatenate([empty, rows])


def save_intermimic_pt(
    motion: HOIMotion, path: str | os.PathLike[str], *, variant: str | None = None
) -> Path:
    """Write a clip in InterMimic's layout (atomically); returns the path written.

    The format stores neither fps nor object, so the clip must be 30 fps and the file name must
    carry the object (``sub2_largetable_000.pt``). ``variant`` (default: from the folder name,
    else ``OMOMO``) decides whether the empty ``OMOMO_retarget`` row 0 is written, so that
    ``load_intermimic_pt`` of the result returns the same frames.
    """
    p = Path(path)
    where = f"{p} (writing {motion.name or 'motion'})"
    if abs(motion.fps - FPS) > 1e-9:
        raise MotionError(f"{where}: the InterMimic .pt format is fixed at {FPS:g} fps, clip has {motion.fps:g}")
    clip = parse_clip_name(p)
    if clip is None or clip.object_name != motion.object_name:
        raise MotionError(
            f"{where}: the file name must carry the object, e.g. sub0_{motion.object_name}_000.pt "
            "(InterMimic stores the object only in the file name)"
        )
    variant = variant or variant_from_folder(p) or "OMOMO"
    if variant not in VARIANTS:
        raise MotionError(f"{where}: unknown variant {variant!r}, expected one of {', '.join(VARIANTS)}")
    motion = validate_motion(motion, where)
    table = to_table(motion, empty_first_frame=variant in EMPTY_FIRST_FRAME_VARIANTS)
    with atomic_output(p) as handle:
        torch.save(torch.from_numpy(table), handle)
    return p
