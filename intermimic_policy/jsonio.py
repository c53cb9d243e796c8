"""Strict JSON for reports: what is written is JSON every parser reads, and written atomically.

``json.dumps`` writes NaN and infinity as bare ``NaN`` / ``Infinity``, which is not JSON (jq, JS,
Go and most tools refuse the file). Reports here turn every non-finite float into ``null``
(numpy scalars and arrays included), and are written through :func:`atomic_output` so a reader
never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from intermimic_policy.atomic import atomic_output


def finite_or_none(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats as None, tuples as lists, numpy values as Python.

    Dataclasses become dicts; other objects are left for the encoder (which refuses them unless a
    ``default`` is given)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {k if isinstance(k, str) else str(k): finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return finite_or_none({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return finite_or_none(tolist())
    return obj


def dumps(obj: Any, *, indent: int | None = 2, default: Any = None, sort_keys: bool = False) -> str:
    """Strict JSON text of ``obj`` (non-finite floats as null); never writes NaN/Infinity."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False, default=default, sort_keys=sort_keys)


def dump_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, default: Any = None) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (with a final newline); returns the path."""
    blob = dumps(obj, indent=indent, default=default).encode() + b"\n"
    target = Path(path)
    with atomic_output(target) as handle:
        handle.write(blob)
    return target
