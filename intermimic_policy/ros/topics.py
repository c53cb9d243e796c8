"""Every topic of the sim_hoi system, named once (the three nodes, the launcher and the YAML).

Each node reads the names it uses from one :class:`Topics` (the ``topics`` section of the
``common`` block, overridable per node). ``topic_prefix`` (a ``common`` key) is prepended to every
name, so two runs on one host and one DDS domain never cross (the domain id separates them too).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Topics:
    """Topic names (ROS names; relative names resolve in the node's namespace)."""

    reference: str = "/intermimic/reference"
    reference_window: str = "/intermimic/reference_window"
    generator_window: str = "/intermimic/generator/window"
    object_pose: str = "/intermimic/object_pose"
    joint_states: str = "/intermimic/joint_states"
    odom: str = "/intermimic/odom"
    contacts: str = "/intermimic/contacts"
    pd_targets: str = "/intermimic/pd_targets"
    status: str = "/intermimic/status"
    clock: str = "/clock"
    bridge_status: str = "/intermimic/sim_bridge/status"
    streamer_status: str = "/intermimic/motion_streamer/status"

    def prefixed(self, prefix: str) -> Topics:
        """Every name under ``prefix`` ("" or "/": unchanged): "/run1" + "/clock" -> "/run1/clock"."""
        p = prefix.rstrip("/")
        if not p:
            return self
        if not p.startswith("/"):
            p = "/" + p
        return replace(self, **{f.name: p + "/" + getattr(self, f.name).lstrip("/") for f in fields(self)})


def validate_prefix(prefix: str) -> str | None:
    """Why ``prefix`` is not a usable topic prefix (None: it is)."""
    body = prefix.strip("/")
    if not body:
        return None
    for part in body.split("/"):
        if not part or not (part[0].isalpha() or part[0] == "_") or not all(c.isalnum() or c == "_" for c in part):
            return f"{prefix!r} is not a ROS name prefix (letters, digits and _ separated by /)"
    return None
