"""Typed node parameters from one YAML file shared by the nodes of a launch (``config/sim_hoi.yaml``).

Why strict dataclasses instead of loose ROS parameters: a typo in a key or a negative period
must stop a node at start-up with a message that names the file and the key. The file has a
``common`` section (what every node of the launch must agree on: domain, lockstep, clip, policy,
topic names) and one section per node; a node reads the ``common`` keys it knows (others belong
to other nodes and are ignored) and then its own section, where an unknown key is an error.
A section may also be in ROS 2 parameter-file form (``name: {ros__parameters: {...}}``).

This is the one loader of the three nodes: the policy node (``ros.node_config``), the simulation
bridge and the motion streamer.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from intermimic_policy.errors import IntermimicError

COMMON_SECTION = "common"
T = TypeVar("T")


class ParamError(IntermimicError, ValueError):
    """A parameter file or value a node cannot use; the message names the file and the key."""


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed YAML mapping of ``path`` (an empty file is an empty mapping)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ParamError(f"{p}: cannot read the parameter file: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamError(f"{p}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(doc, dict):
        raise ParamError(f"{p}: the top level must be a mapping of sections, got {type(doc).__name__}")
    return doc


def section(doc: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    """Section ``name`` of a parsed file ({} when absent), unwrapping ``ros__parameters``."""
    part = doc.get(name) or {}
    if isinstance(part, Mapping) and "ros__parameters" in part:
        part = part["ros__parameters"] or {}
    if not isinstance(part, Mapping):
        raise ParamError(f"{source}: section {name!r} must be a mapping, got {type(part).__name__}")
    return part


def _is_optional(hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the annotated type: bool, int, float, str, ``str | int`` (a QoS profile name
    or a depth), ``X | None``, ``tuple[str, ...]``."""
    optional, inner = _is_optional(hint)
    if value is None:
        if optional:
            return None
        raise ParamError(f"{where} must not be empty")
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(f"{where} must be true or false, got {value!r}")
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamError(f"{where} must be an integer, got {value!r}")
    if inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParamError(f"{where} must be a number, got {value!r}")
    if inner is str:
        if isinstance(value, str):
            return value
        raise ParamError(f"{where} must be a string, got {value!r}")
    if typing.get_origin(inner) in (typing.Union, types.UnionType) and set(typing.get_args(inner)) == {str, int}:
        # ``str | int`` parameters are QoS profiles: a name (``qos.PROFILES``) or a keep-last depth
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
        raise ParamError(f"{where} must be a QoS profile name or a depth, got {value!r}")
    if typing.get_origin(inner) is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ParamError(f"{where} must be a list of strings, got {value!r}")
    raise ParamError(f"{where}: unsupported parameter type {inner!r}")  # pragma: no cover


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    if not isinstance(data, Mapping):
        raise ParamError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if is_dataclass(hint):
            kwargs[key] = build(typing.cast(type, hint), value or {}, f"{where}.{key}")
        else:
            kwargs[key] = coerce(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def merged_section(doc: Mapping[str, Any], name: str, cls: type, source: str,
                   common_keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The keys of ``common`` that ``cls`` knows (only ``common_keys`` of them when given),
    overlaid by section ``name`` (topics merged)."""
    common = section(doc, COMMON_SECTION, source)
    own = dict(section(doc, name, source))
    known = {f.name for f in fields(cls)}
    if common_keys is not None:
        known &= set(common_keys)
    merged: dict[str, Any] = {k: v for k, v in common.items() if k in known}
    hints = get_type_hints(cls)
    for key in list(merged):
        # nested sections (topics, ...): keep the common entries this node has, then overlay its own
        if is_dataclass(hints[key]) and isinstance(merged[key], Mapping):
            names = {f.name for f in fields(hints[key])}
            base = {k: v for k, v in merged[key].items() if k in names}
            if isinstance(own.get(key), Mapping):
                base.update(own.pop(key))
            merged[key] = base
    merged.update(own)
    return merged


def load_params(path: str | os.PathLike[str] | None, name: str, cls: type[T], **overrides: Any) -> T:
    """Section ``name`` of ``path`` (None: defaults) as ``cls``, then the non-None ``overrides``.

    ``cls`` may define ``validate(source) -> cls`` (called on the result).
    """
    source = str(path) if path is not None else "defaults"
    if path is None:
        config = cls()
    else:
        doc = read_yaml(path)
        config = build(cls, merged_section(doc, name, cls, source), f"{source}: {name}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if chosen:
        config = replace(config, **chosen)  # type: ignore[type-var]
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate(source)
    return config


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Our arguments and the ``--params-file`` of a ``--ros-args`` block (as ``ros2 launch``
    passes them to an executable)."""
    args = list(argv)
    if "--ros-args" not in args:
        return args, None
    i = args.index("--ros-args")
    ours, ros = args[:i], args[i + 1:]
    if "--" in ros:
        j = ros.index("--")
        ours += ros[j + 1:]
        ros = ros[:j]
    params = None
    for k, a in enumerate(ros):
        if a == "--params-file" and k + 1 < len(ros):
            params = ros[k + 1]
    return ours, params
