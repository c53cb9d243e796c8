"""Reading a user's motion file into plain arrays, safely, with one-line errors.

Generators and datasets write ``.npz`` (numpy), ``.pt`` (a dict of tensors) or ``.npy`` (one
array). None of them is ever unpickled: ``np.load(allow_pickle=False)`` and
``torch.load(weights_only=True)`` refuse code-carrying objects, and we say so in one line.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.validate import one_line, require_file

SUFFIXES: tuple[str, ...] = (".npz", ".npy", ".pt", ".pth")


def _from_npz(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                try:
                    out[key] = np.asarray(data[key])
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise MotionError(
                            f"{path}: array {key!r} is a pickled Python object, which is never loaded; "
                            "store it as a numeric or string array") from exc
                    raise
    except MotionError:
        raise
    except Exception as exc:  # untrusted file: any failure in np.load is a bad file
        raise MotionError(f"{path}: not a readable .npz ({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    return out


def _from_npy(path: Path, key: str) -> dict[str, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise MotionError(
                f"{path}: holds a pickled Python object (e.g. a dict saved with np.save), which is never "
                "loaded; save the arrays with np.savez instead") from exc
        raise MotionError(f"{path}: not a readable .npy ({one_line(str(exc), 160)})") from exc
    except Exception as exc:
        raise MotionError(f"{path}: not a readable .npy ({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    return {key: np.asarray(arr)}


def _from_torch(path: Path, key: str) -> dict[str, np.ndarray]:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise MotionError(f"{path}: holds objects the safe loader refuses (torch.load weights_only=True); "
                          "expected tensors, pickled code is never run") from exc
    except Exception as exc:
        raise MotionError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: "
                          f"{one_line(str(exc), 160)})") from exc
    items: Mapping[str, object] = obj if isinstance(obj, Mapping) else {key: obj}
    out: dict[str, np.ndarray] = {}
    for k, v in items.items():
        if isinstance(v, torch.Tensor):
            out[str(k)] = v.detach().cpu().numpy()
        elif isinstance(v, (str, int, float)):
            out[str(k)] = np.asarray(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            out[str(k)] = np.asarray(v, dtype=np.float64)
    return out


def read_arrays(path: str | os.PathLike[str], single_key: str) -> tuple[Path, dict[str, np.ndarray]]:
    """Every array in the file by name; a file holding one bare array gets ``single_key``."""
    p = require_file(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise MotionError(f"{p}: unsupported extension {p.suffix or '(none)'!r}; expected one of {', '.join(SUFFIXES)}")
    if suffix == ".npz":
        return p, _from_npz(p)
    if suffix == ".npy":
        return p, _from_npy(p, single_key)
    return p, _from_torch(p, single_key)


def pick(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[str, np.ndarray] | None:
    """The first of ``names`` the file has (aliases: datasets name the same thing differently)."""
    for n in names:
        if n in arrays:
            return n, arrays[n]
    return None


def numeric(where: Path, key: str, a: np.ndarray, shape_tail: tuple[int, ...] | None = None) -> np.ndarray:
    """``a`` as float64 with a finite check and, if given, the trailing shape."""
    if a.dtype.kind not in "fiu":
        raise MotionError(f"{where}: {key} has dtype {a.dtype}, expected numbers")
    out = np.asarray(a, dtype=np.float64)
    if shape_tail is not None and (out.ndim != 1 + len(shape_tail) or out.shape[1:] != shape_tail):
        tail = ", ".join(str(s) for s in shape_tail)
        raise MotionError(f"{where}: {key} has shape {tuple(out.shape)}, expected (T, {tail})")
    bad = ~np.isfinite(out)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0]) if out.ndim else 0
        raise MotionError(f"{where}: NaN or infinite value in {key} at frame {frame}")
    return out


def text(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> str | None:
    """A string value (numpy str or bytes scalar), or None."""
    found = pick(arrays, names)
    if found is None:
        return None
    value = found[1]
    if value.dtype.kind == "S":
        return bytes(value.reshape(-1)[0]).decode(errors="replace") if value.size else ""
    if value.dtype.kind == "U":
        return str(value.reshape(-1)[0]) if value.size else ""
    return None


def scalar(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> float | None:
    found = pick(arrays, names)
    if found is None or found[1].dtype.kind not in "fiu" or found[1].size != 1:
        return None
    return float(found[1].reshape(-1)[0])
