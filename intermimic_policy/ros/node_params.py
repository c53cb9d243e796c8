"""Typed node parameters from one YAML file shared by the nodes of a launch (``config/sim_hoi.yaml``).

Why strict dataclasses instead of loose ROS parameters: a typo in a key or a negative period
must stop a node at start-up with a message that names the file and the key. The file has a
``common`` section (what every node of the launch must agree on: domain, lockstep, clip, policy,
topic names) and one section per node; a node reads the ``common`` keys it knows (others belong
to other nodes and are ignored) and then its own section, where an unknown key is an error.
A section may also be in ROS 2 parameter-file form (``name: {ros__parameters: {...}}``).

This is the one loader of the three nodes: the policy node (``ros.node_config``), the simulation
bridge and the motion streamer; the typed conversion itself is the project's one config loader,
``intermimic_policy.config_io``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar, get_type_hints

from intermimic_policy import config_io
from intermimic_policy.config_io import ConfigError

COMMON_SECTION = "common"
T = TypeVar("T")


# the sections a launch parameter file may have (another top-level key is a typo: refused)
SECTIONS = (COMMON_SECTION, "motion_streamer", "policy_node", "sim_bridge")

# One error type for every configuration file of the project (``config_io``).
ParamError = ConfigError


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed parameter file (``config_io.read_yaml``: empty files and unknown sections refused)."""
    return config_io.read_yaml(path, sections=SECTIONS)


def section(doc: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    """Section ``name`` of a parsed file ({} when absent), unwrapping ``ros__parameters``."""
    part = doc.get(name) or {}
    if isinstance(part, Mapping) and "ros__parameters" in part:
        part = part["ros__parameters"] or {}
    if not isinstance(part, Mapping):
        raise ParamError(f"{source}: section {name!r} must be a mapping, got {type(part).__name__}")
    return part


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; unknown keys and wrong types are errors
    (``config_io.from_dict``; ``where`` is "FILE: section")."""
    source, _, key = where.partition(": ")
    return config_io.from_dict(cls, data, source, key)


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
