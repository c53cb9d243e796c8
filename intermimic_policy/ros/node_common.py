"""What the three nodes (streamer, policy node, sim bridge) share: status messages and lifetime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from intermimic_policy.ros.msgs.builtin_interfaces import Time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray, DiagnosticStatus, KeyValue
from intermimic_policy.ros.msgs.std_msgs import Header


def status_array(*, name: str, hardware_id: str, level: int, message: str, values: Mapping[str, str],
                 stamp: Time) -> DiagnosticArray:
    """One node's status as the standard diagnostics message (every counter as a key/value)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


class NodeLifetime:
    """``destroy()`` and use as a context manager; nodes with more to close extend ``destroy``."""

    node: Any

    def destroy(self) -> None:
        self.node.destroy()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
