"""The one typed config loader: YAML -> nested ``@dataclass``, strictly.

Used for the pipeline config (``training.config``), the node parameter files (``ros.node_params``)
and anything else read from YAML. Strict because a typo must stop a run before it starts, not
fall back to a default silently:

* unknown keys (and unknown sections, where the caller names the known ones) are refused;
* an empty file, a non-mapping top level and a value of the wrong type are refused;
* every error is ONE line naming the file and the dotted key: ``run.yaml: teacher.ppo.gama:
  unknown key; known: ...``.

Types understood: bool, int, float, str, ``Any``, ``X | None``, unions (first arm that fits),
``tuple[T, ...]``/``list[T]``, ``dict[...]`` and nested dataclasses (a ``None`` section is an
empty one). Numbers must be finite where a float is expected (YAML's ``.inf``/``.nan`` are refused).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from intermimic_policy.errors import IntermimicError

T = TypeVar("T")


# scalar setting types: the Python types a YAML value may have, and how an error names them
_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


class ConfigError(IntermimicError, ValueError):
    """A configuration file or value that cannot be used; the message names the file and the key.

    Always one line: a key or value holding a line break (found by the fuzzer) is shown escaped."""

    def __init__(self, message: object = "") -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if key else source


def read_yaml(path: str | os.PathLike[str], *, sections: Collection[str] | None = None) -> dict[str, Any]:
    """The top-level mapping of a YAML file. Refuses unreadable, invalid and empty files, a
    non-mapping top level and (when ``sections`` is given) top-level keys not among them."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {_one_line(str(exc))}") from exc
    if doc is None or doc == {}:  # an empty file must not silently mean "all defaults"
        raise ConfigError(f"{p}: the file is empty (write the settings you want, or pass no file)")
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(doc).__name__}")
    if sections is not None:
        unknown = sorted(str(k) for k in doc if k not in sections)
        if unknown:
            raise ConfigError(f"{p}: unknown section(s) {unknown}; known: {sorted(sections)}")
    return doc


def from_dict(cls: type[T], data: Any, source: str = "config", key: str = "") -> T:
    """Dataclass ``cls`` from a mapping: unknown keys and wrong types refused, the error naming
    ``source`` and the dotted key below ``key``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, key or '(top level)')}: expected a mapping of settings, got "
                          f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        dotted = ", ".join(f"{key}.{k}" if key else k for k in unknown)
        raise ConfigError(f"{source}: {dotted}: unknown key(s); known: {sorted(known)}")
    kwargs = {k: convert(hints[k], v, source, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(source) else f"{_where(source, key)}: {msg}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_where(source, key or cls.__name__)}: {_one_line(str(exc))}") from None


def convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """``value`` as type ``tp`` (see the module docstring for the types understood)."""
    where = _where(source, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is none of "
                          f"{[getattr(a, '__name__', str(a)) for a in args]}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, source, key)
    if value is None:
        raise ConfigError(f"{where}: must not be empty")
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        kinds, what = _SCALARS[tp]
        if not isinstance(value, kinds) or (isinstance(value, bool) and tp is not bool):
            raise ConfigError(f"{where}: must be {what}, got {value!r}")
        if tp is float:
            number = float(typing.cast(float, value))
            if not math.isfinite(number):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return number
        return value
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


def load(path: str | os.PathLike[str], cls: type[T], *, section: str | None = None,
         sections: Collection[str] | None = None) -> T:
    """Read ``path`` (optionally only its top-level ``section``) into dataclass ``cls``."""
    doc = read_yaml(path, sections=sections)
    data = doc.get(section) if section is not None else doc
    return from_dict(cls, data, str(Path(path)), section or "")
