"""Typed parameters of the policy node, read from the ``policy_node`` section of a YAML file.

Why a dataclass and not loose ROS parameters: a typo in a key or a negative timeout must stop the
node at start-up with a message naming the file and the key, never surface as odd behaviour at
30 Hz. Rates, gains, joint order and the observation layout are NOT parameters: they come from
the policy's contract and ``smplx_body`` (the single sources of truth), so the YAML cannot
contradict the model it runs.

File layout (``config/sim_hoi.yaml``)::

    common:          # shared by the three nodes; the keys this node knows are read, others ignored
      domain_id: 0
      lockstep: false
      policy: out/policy.onnx
    policy_node:     # this node, strict: an unknown key is an error
      kind: teacher
      timeouts: {reference_s: 0.5, state_s: 0.2}
      ...

A section may also be in ROS 2 parameter-file form (``policy_node: {ros__parameters: {...}}``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from intermimic_policy.contract import rate_problem
from intermimic_policy.embodiment.smplx_body import CONTROL_HZ, PHYSICS_HZ
from intermimic_policy.ros import node_params
from intermimic_policy.ros.reference_timeline import TimelineConfig
from intermimic_policy.ros.topics import Topics, validate_prefix

SECTION = "policy_node"
# keys of the ``common`` section this node reads (it ignores the others: clip, streamer options)
COMMON_KEYS = ("domain_id", "lockstep", "policy", "transport", "topics", "topic_prefix", "robot")
KINDS = ("teacher", "student")


# A policy-node parameter file or value that cannot be used (names the file and the key). The
# same type as the other nodes' ``node_params.ParamError``: the policy node loads through
# ``node_params`` too, so one error type covers the file, the keys and ``validate``.
NodeConfigError = node_params.ParamError


# one topic table for every node (``ros.topics``); the old name stays for callers
TopicConfig = Topics


@dataclass(frozen=True)
class QosConfig:
    """QoS profile names (``intermimic_policy.ros.qos.PROFILES``) or depths, per direction."""

    reference: str | int = 100  # reliable keep-last 100: a burst of lookahead frames must not drop
    state: str | int = "reliable"
    pd_targets: str | int = "reliable"
    status: str | int = "reliable"


@dataclass(frozen=True)
class TimeoutConfig:
    """Seconds without a valid message after which an input is stale (0 = input not required).

    Stale reference, object pose or state puts the node into safe hold. Measured on the wall
    clock at reception, so a paused simulation is also noticed.
    """

    reference_s: float = 0.5
    object_pose_s: float = 0.25
    state_s: float = 0.25  # joint states and odometry
    contacts_s: float = 0.25


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Everything the policy node is configured with (see the module docstring)."""

    policy: str = ""  # path to the exported ONNX policy (``--policy`` overrides)
    kind: str = "teacher"  # the kind of policy this deployment expects
    backend: str = "onnxruntime"  # runtime.loader backend: auto, onnxruntime, tensorrt, ...
    threads: int = 1  # inference threads (1 keeps the control loop from stuttering)
    compiled_observation: bool = True  # numba kernels for the tick's kinematics and observation
                                       # (observation.compiled_obs; the numpy path without numba)
    transport: str = "auto"  # ROS transport: auto, cyclone, rclpy
    domain_id: int | None = None  # None: $ROS_DOMAIN_ID or 0
    node_name: str = "policy_node"
    namespace: str = "/"
    lockstep: bool = False  # one PDTargets per received state tick, stamped with its stamp
    max_reference_lag_frames: int = 0  # > 0: skip ahead when the newest frame is this far ahead; 0: never
    soft_start_s: float = 1.0  # blend from the measured pose to the policy over this time (0: off)
    max_slew_rad: float = 0.35  # largest change of a target per tick (rad); 0 disables
    hold_kd_scale: float = 2.0  # damping multiplier while holding
    status_hz: float = 2.0  # diagnostics rate, 1..5 Hz
    # The rates this deployment runs at: the node's OWN expectation (never read from the policy
    # file it checks); a policy trained at other rates is refused, naming both.
    control_hz: float = CONTROL_HZ
    physics_hz: float = PHYSICS_HZ
    upstream_action_map: bool = False  # policy trained with upstream's action-scale quirks
    model_hash: str = ""  # expected humanoid model hash; "" = the default skeleton's
    num_object_points: int = 0  # 0: the contract's, else the training environment's default
    # The object table, loaded at start-up: "name" (a primitive or a mesh in object_search_dirs,
    # full install) or "name=points.npy" ([num_object_points, 3], object frame). A reference
    # naming another object is rejected and the node holds; a name is never opened as a path.
    # Empty: the primitive objects.
    objects: tuple[str, ...] = ()
    object_search_dirs: tuple[str, ...] = ()
    torch_threads: int = 1  # unused (the node has no torch); kept so older files still load
    max_buffered_frames: int = 512  # reference frames kept ahead of the cursor (more are dropped)
    max_window_frames: int = 128  # a longer HOIWindow is refused unparsed
    clock_jump_s: float = 1.0  # a state stamp this far behind the newest is a restarted clock
    tick_deadline_ms: float = 0.0  # a tick (state in -> targets out) longer than this is a deadline miss; 0: a quarter period
    # SCHED_FIFO priority (1..99) of the node's process, set before DDS starts its threads (they
    # inherit it): a shared CPU then cannot delay a tick behind other work. 0: normal scheduling.
    rt_priority: int = 0
    # Warm-up before the next expected state (ms ahead of it; 0: off): after a long idle the first
    # inference runs from cold caches and a halted core (0.55-0.75 ms for the example teacher
    # after 33 ms idle on a 2-vCPU host against 0.26-0.31 ms back to back). The node then runs
    # the policy once on its last observation, result discarded, this long before the state is
    # due (the median of recent arrival intervals after the last one).
    warm_lead_ms: float = 0.0
    topic_prefix: str = ""  # prepended to every topic name (two runs on one host never cross)
    topics: Topics = field(default_factory=Topics)
    qos: QosConfig = field(default_factory=QosConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    timeline: TimelineConfig = field(default_factory=TimelineConfig)  # generator windows (ros.reference_timeline)
    # the body driven: "" = the SMPL-X humanoid; a robot name (config/robots/<name>.yaml): the node
    # then reads that robot's JointState / ContactState names and RobotHOIWindow references, runs
    # its FK, and accepts only a policy whose contract names it (embodiment "robot:<name>")
    robot: str = ""

    def validate(self, source: str = "policy node config") -> PolicyNodeConfig:
        def bad(key: str, why: str) -> NodeConfigError:
            return NodeConfigError(f"{source}: {SECTION}.{key} {why}")

        if self.kind not in KINDS:
            raise bad("kind", f"must be one of {KINDS}, got {self.kind!r}")
        if self.threads < 1:
            raise bad("threads", f"must be >= 1, got {self.threads}")
        if self.torch_threads < 1:
            raise bad("torch_threads", f"must be >= 1, got {self.torch_threads}")
        if self.max_reference_lag_frames < 0:
            raise bad("max_reference_lag_frames", f"must be >= 0, got {self.max_reference_lag_frames}")
        if self.num_object_points < 0:
            raise bad("num_object_points", f"must be >= 0, got {self.num_object_points}")
        for key in ("soft_start_s", "max_slew_rad"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise bad(key, f"must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.hold_kd_scale) and self.hold_kd_scale >= 1.0):
            raise bad("hold_kd_scale", f"must be >= 1 (holding never lowers damping), got {self.hold_kd_scale}")
        if not 1.0 <= self.status_hz <= 5.0:
            raise bad("status_hz", f"must be within 1..5 Hz, got {self.status_hz}")
        for f in fields(self.timeouts):
            value = getattr(self.timeouts, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(f"timeouts.{f.name}", f"must be a finite number of seconds >= 0, got {value}")
        if not (math.isfinite(self.timeline.bridge_s) and self.timeline.bridge_s >= 0):
            raise bad("timeline.bridge_s", f"must be a finite number of seconds >= 0, got {self.timeline.bridge_s}")
        for key in ("max_buffered_frames", "max_window_frames"):
            value = getattr(self, key)
            if not 17 <= value <= 100_000:
                raise bad(key, f"must be within 17..100000 (the policy reads 17 frames ahead), got {value}")
        if not (math.isfinite(self.clock_jump_s) and self.clock_jump_s > 0):
            raise bad("clock_jump_s", f"must be a positive number of seconds, got {self.clock_jump_s}")
        if isinstance(self.rt_priority, bool) or not isinstance(self.rt_priority, int) or not 0 <= self.rt_priority <= 99:
            raise bad("rt_priority", f"must be an integer SCHED_FIFO priority in 0..99 (0: off), got {self.rt_priority!r}")
        if not (math.isfinite(self.tick_deadline_ms) and self.tick_deadline_ms >= 0):
            raise bad("tick_deadline_ms", f"must be a finite number >= 0, got {self.tick_deadline_ms}")
        why = validate_prefix(self.topic_prefix)
        if why:
            raise bad("topic_prefix", why)
        for entry in self.objects:
            name, _, _ = entry.partition("=")
            if not name.strip() or "/" in name or name.strip() != name:
                raise bad("objects", f"entry {entry!r} must be NAME or NAME=POINTS.npy")
        rates = rate_problem(self.control_hz, self.physics_hz)
        if rates:
            raise bad("control_hz/physics_hz", rates)
        if not (math.isfinite(self.warm_lead_ms) and 0 <= self.warm_lead_ms < 1e3 / self.control_hz):
            raise bad("warm_lead_ms", f"must be a finite number of ms within [0, one control period), "
                                      f"got {self.warm_lead_ms}")
        if self.timeouts.reference_s == 0 or self.timeouts.state_s == 0:
            raise bad("timeouts", "reference_s and state_s cannot be 0: the policy cannot run without them")
        return self


def config_from_dict(doc: Mapping[str, Any], source: str = "policy node config") -> PolicyNodeConfig:
    """The config from a parsed YAML document (``common`` keys first, then ``policy_node``)."""
    if not isinstance(doc, Mapping):
        raise NodeConfigError(f"{source}: top level must be a mapping with a {SECTION!r} section")
    merged = node_params.merged_section(doc, SECTION, PolicyNodeConfig, source, COMMON_KEYS)
    return node_params.build(PolicyNodeConfig, merged, f"{source}: {SECTION}").validate(source)


def load_node_config(path: str | os.PathLike[str] | None, **overrides: Any) -> PolicyNodeConfig:
    """Read ``path`` (None: all defaults), then apply non-None ``overrides`` (e.g. policy=...)."""
    if path is None:
        config = PolicyNodeConfig()
    else:
        config = config_from_dict(node_params.read_yaml(path), str(Path(path)))
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **chosen).validate(str(path or "overrides")) if chosen else config.validate()


def object_table(config: PolicyNodeConfig) -> tuple[str, ...]:
    """The configured object table (empty: the primitive objects, which need no files)."""
    if config.objects:
        return config.objects
    from intermimic_policy.motion.object_names import PRIMITIVE_BOXES

    return tuple(PRIMITIVE_BOXES)


def resolved_topics(config: PolicyNodeConfig) -> Topics:
    return config.topics.prefixed(config.topic_prefix)
