"""QoS profiles by name, mapped to Cyclone DDS the way ``rmw_cyclonedds_cpp`` maps rclpy QoS.

Why: node code names its intent ("latched", "sensor_data"...) once; both transports turn that
into the same DDS policies, so a Cyclone-only process and a ROS 2 node on ``rmw_cyclonedds_cpp``
match (and fail to match) exactly as two ROS 2 nodes would.

Named profiles:

* ``reliable``: reliable, volatile, keep last 10 (rclpy's default for a depth of 10).
* ``sensor_data``: best effort, volatile, keep last 5 (ROS 2's sensor-data profile).
* ``latched``: reliable, transient local, keep last 1: a late subscriber gets the last message.
* ``command``: reliable, volatile, keep last 1: only the newest command matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from intermimic_policy.errors import IntermimicError

if TYPE_CHECKING:
    from cyclonedds.qos import Qos


class QosError(IntermimicError):
    """An unknown profile name or an impossible QoS setting."""


class Reliability(str, Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(str, Enum):
    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


class History(str, Enum):
    KEEP_LAST = "keep_last"
    KEEP_ALL = "keep_all"


@dataclass(frozen=True)
class QosProfile:
    """The subset of ROS 2 QoS our nodes use. Durations in seconds; ``None`` = unspecified."""

    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    history: History = History.KEEP_LAST
    depth: int = 10
    deadline_s: float | None = None
    lifespan_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reliability", Reliability(self.reliability))
        object.__setattr__(self, "durability", Durability(self.durability))
        object.__setattr__(self, "history", History(self.history))
        if self.history is History.KEEP_LAST and not 1 <= self.depth <= 2**31 - 1:
            raise QosError(f"QoS keep_last needs a depth >= 1, got {self.depth}")
        for name in ("deadline_s", "lifespan_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise QosError(f"QoS {name} must be a positive finite number of seconds, got {value}")


PROFILES: dict[str, QosProfile] = {
    "reliable": QosProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 10),
    "sensor_data": QosProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 5),
    "latched": QosProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1),
    "command": QosProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 1),
}

# rclpy's /clock subscription: keep last 1, best effort (it matches reliable publishers too).
CLOCK_QOS = QosProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 1)

QosLike = str | int | QosProfile


def resolve_qos(qos: QosLike) -> QosProfile:
    """A profile from its name, a depth (reliable keep-last, as rclpy reads an int) or itself."""
    if isinstance(qos, QosProfile):
        return qos
    if isinstance(qos, bool):
        raise QosError(f"not a QoS: {qos!r}")
    if isinstance(qos, int):
        return QosProfile(depth=qos)
    if isinstance(qos, str):
        try:
            return PROFILES[qos]
        except KeyError:
            raise QosError(f"unknown QoS profile {qos!r}; known: {', '.join(PROFILES)}") from None
    raise QosError(f"not a QoS: {qos!r} (give a profile name, a depth or a QosProfile)")


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def to_cyclone_qos(qos: QosLike, *, type_hash: str | None = None) -> Qos:
    """Reader/writer QoS as ``rmw_cyclonedds_cpp`` (``create_readwrite_qos``) builds it.

    ``type_hash`` (``RIHS01_...``) goes into USER_DATA as ``typehash=<hash>;``: ROS 2 Jazzy
    endpoints announce theirs there and warn about peers that do not.
    """
    from cyclonedds.qos import Policy, Qos
    from cyclonedds.util import duration

    p = resolve_qos(qos)
    policies: list[Any] = [Policy.WriterDataLifecycle(autodispose=False)]
    if p.history is History.KEEP_LAST:
        history: Any = Policy.History.KeepLast(p.depth)
    else:
        history = Policy.History.KeepAll
    policies.append(history)
    if p.reliability is Reliability.RELIABLE:
        policies.append(Policy.Reliability.Reliable(max_blocking_time=duration(infinite=True)))
    else:
        policies.append(Policy.Reliability.BestEffort)
    if p.durability is Durability.TRANSIENT_LOCAL:
        # Cyclone keeps historical data per the durability-service QoS, not the history QoS.
        policies.append(Policy.Durability.TransientLocal)
        unlimited = -1
        policies.append(Policy.DurabilityService(
            cleanup_delay=0, history=history, max_samples=unlimited, max_instances=unlimited,
            max_samples_per_instance=unlimited,
        ))
    else:
        policies.append(Policy.Durability.Volatile)
    if p.lifespan_s is not None:
        policies.append(Policy.Lifespan(_ns(p.lifespan_s)))
    if p.deadline_s is not None:
        policies.append(Policy.Deadline(_ns(p.deadline_s)))
    policies.append(Policy.Liveliness.Automatic(lease_duration=duration(infinite=True)))
    if type_hash:
        policies.append(Policy.Userdata(f"typehash={type_hash};".encode("ascii")))
    return Qos(*policies)


def to_rclpy_qos(qos: QosLike) -> Any:
    """The same profile as an ``rclpy.qos.QoSProfile`` (imported lazily: rclpy is optional)."""
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    p = resolve_qos(qos)
    kwargs: dict[str, Any] = {
        "history": HistoryPolicy.KEEP_LAST if p.history is History.KEEP_LAST else HistoryPolicy.KEEP_ALL,
        "depth": p.depth,
        "reliability": (ReliabilityPolicy.RELIABLE if p.reliability is Reliability.RELIABLE
                        else ReliabilityPolicy.BEST_EFFORT),
        "durability": (DurabilityPolicy.TRANSIENT_LOCAL if p.durability is Durability.TRANSIENT_LOCAL
                       else DurabilityPolicy.VOLATILE),
    }
    if p.deadline_s is not None:
        kwargs["deadline"] = Duration(nanoseconds=_ns(p.deadline_s))
    if p.lifespan_s is not None:
        kwargs["lifespan"] = Duration(nanoseconds=_ns(p.lifespan_s))
    return QoSProfile(**kwargs)
