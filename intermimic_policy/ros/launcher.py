"""The no-ROS launcher: the ``sim_hoi`` launch as three processes over DDS, with a report.

``launch/sim_hoi.launch.py`` starts motion streamer, policy node and simulation bridge under
``ros2 launch``. Where ROS 2 is not installed, :func:`run_sim_hoi` starts the same three nodes
as separate processes (each in its own process group, so a terminal's Ctrl-C reaches only the
launcher, which then stops them in order) talking Cyclone DDS on loopback. All three read one
resolved copy of the YAML (the command-line overrides written into its ``common`` section), so
they cannot disagree on clip, policy, lockstep or domain.

A run lasts ``duration_s`` of sim time (the bridge exits after it; in lockstep that is sim
seconds whatever the wall time), or until interrupted. Then every process gets SIGINT, then
SIGTERM and SIGKILL after ``stop_timeout_s``. The report joins the bridge's summary (ticks,
missed ticks, E_h / E_o, round trips) with the policy node's last status (latency from state in
to targets out, safe-hold events) and the streamer's. A node that exits early stops the run with
an error that quotes the end of its log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from tqdm import tqdm

from intermimic_policy.atomic import atomic_output
from intermimic_policy.errors import IntermimicError
from intermimic_policy.ros import node_params
from intermimic_policy.ros.messages_convert import load_clip
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.topics import Topics

logger = logging.getLogger("intermimic.ros.launcher")

PACKAGE = "intermimic"
CONFIG_NAME = "sim_hoi.yaml"
LAUNCH_FILE = "sim_hoi.launch.py"
DEFAULT_STATUS_TOPICS = {"policy_node": "/intermimic/status", "sim_bridge": "/intermimic/sim_bridge/status",
                         "motion_streamer": "/intermimic/motion_streamer/status"}
_TOPIC_KEYS = {"policy_node": "status", "sim_bridge": "bridge_status", "motion_streamer": "streamer_status"}


class LaunchError(IntermimicError):
    """A launch that cannot start or did not finish (the message names the node and its log)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of the launch: its YAML section, its module and its console script."""

    name: str
    module: str
    executable: str


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("policy_node", "intermimic_policy.ros.policy_node", "intermimic_policy_node"),
    NodeSpec("motion_streamer", "intermimic_policy.ros.motion_streamer", "intermimic_motion_streamer"),
    NodeSpec("sim_bridge", "intermimic_policy.ros.sim_bridge", "intermimic_sim_bridge"),
)


def default_config_path() -> Path:
    """``config/sim_hoi.yaml`` of the source tree, else of the installed package's share folder."""
    here = Path(__file__).resolve().parents[2] / "config" / CONFIG_NAME
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config" / CONFIG_NAME
    except Exception:  # noqa: BLE001 - no ROS 2, or the package is not in the ament index
        return Path(sys.prefix) / "share" / PACKAGE / "config" / CONFIG_NAME


@dataclass
class LaunchOptions:
    """What ``intermimic launch sim_hoi`` was asked for (None: the YAML's value)."""

    config: str | None = None
    clip: str | None = None
    example: bool = False
    policy: str | None = None
    duration_s: float | None = None
    lockstep: bool | None = None
    report: str | None = None
    record: str | None = None
    domain_id: int | None = None
    transport: str | None = None
    start_offset: int | None = None
    log_dir: str | None = None
    timeout_s: float | None = None  # wall limit; None: 120 s + 30 x duration (no limit without one)
    perturb: tuple[str, ...] = ()  # KEY=VALUE robustness settings for the bridge (sim.perturb)
    # a robot (config/robots/<name>.yaml): the bridge simulates it, the node drives it; the clip is
    # its retargeted motion and the policy's contract must name it
    robot: str | None = None
    stop_timeout_s: float = 5.0
    progress: bool = True


# -- processes -------------------------------------------------------------------------------------
@dataclass
class ManagedProcess:
    """A node process in its own process group, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal_group(self, sig: int) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def start_process(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> ManagedProcess:
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by stop_processes
    try:
        popen = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(env) if env is not None else None, start_new_session=True)
    except OSError:
        log_file.close()
        raise
    return ManagedProcess(name, popen, log_path, log_file)


def _wait_all(procs: list[ManagedProcess], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        remaining = deadline - time.monotonic()
        try:
            p.popen.wait(timeout=max(0.0, remaining))
        except subprocess.TimeoutExpired:
            return False
    return True


def stop_processes(procs: list[ManagedProcess], timeout_s: float = 5.0) -> dict[str, int | None]:
    """SIGINT every process group, then SIGTERM, then SIGKILL, ``timeout_s`` apart; exit codes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.returncode is None]
        if not alive:
            break
        for p in alive:
            p.signal_group(sig)
        if _wait_all(alive, timeout_s):
            break
        logger.warning("%s did not stop on %s", ", ".join(p.name for p in alive if p.returncode is None),
                       signal.Signals(sig).name)
    for p in procs:
        if p.returncode is None:
            try:
                p.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        p.log_file.close()
    return {p.name: p.returncode for p in procs}


# -- status ----------------------------------------------------------------------------------------
# how long after the bridge's summary a policy-node status must be stamped to count as the final one
FINAL_STATUS_SETTLE_NS = 100_000_000


@dataclass
class StatusMonitor:
    """The newest DiagnosticArray key/values of each node and when the node stamped them (its
    clock, ns)."""

    values: dict[str, dict[str, str]] = field(default_factory=dict)
    stamped: dict[str, int] = field(default_factory=dict)

    def callback(self, name: str) -> Any:
        def on_status(msg: DiagnosticArray) -> None:
            if msg.status:
                self.values[name] = {kv.key: kv.value for kv in msg.status[0].values}
                self.stamped[name] = ns_from_time(msg.header.stamp)
        return on_status


def _number(text: str | None) -> float | int | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


# -- configuration ---------------------------------------------------------------------------------
def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def resolve_config(options: LaunchOptions, log_dir: Path) -> tuple[dict[str, Any], Path]:
    """The YAML with the options applied (written to ``log_dir``) and the path of that copy."""
    source = Path(options.config) if options.config else default_config_path()
    doc = node_params.read_yaml(source)
    common = dict(node_params.section(doc, node_params.COMMON_SECTION, str(source)))
    if options.example and options.clip:
        raise LaunchError("launch: give either --clip or --example, not both")
    policy = options.policy or common.get("policy") or ""
    if not policy:
        raise LaunchError(f"launch: no policy: pass --policy FILE.onnx or set common.policy in {source} "
                          "(scripts/demo.sh writes out/demo/policy.onnx; `intermimic export --init random "
                          "--kind teacher --out policy.onnx` makes an untrained one)")
    if not Path(policy).is_file():
        raise LaunchError(f"launch: policy {policy} not found (pass --policy FILE.onnx; scripts/demo.sh "
                          "exports one to out/demo/policy.onnx, `intermimic export --init random --kind "
                          "teacher --out policy.onnx` makes an untrained one)")
    common["policy"] = _absolute(str(policy))
    if options.policy:  # teacher or student: the node expects the kind the given file declares
        from intermimic_policy.runtime.base import read_policy_file

        try:
            kind = read_policy_file(common["policy"]).contract.kind
        except IntermimicError:
            kind = None  # unreadable: the policy node refuses it at load, naming the problem
        if kind is not None:
            node = {**node_params.section(doc, "policy_node", str(source)), "kind": kind}
            doc = {**doc, "policy_node": node}
    if options.robot is not None:
        _check_robot_launch(options, common, source)
        common["robot"] = options.robot
    if options.example or (not options.clip and common.get("example")):
        # built once here and read by the streamer and the bridge (the example's IK takes seconds)
        from intermimic_policy.motion.example import make_example_motion
        from intermimic_policy.motion.io import save_motion

        clip_file = log_dir / "example_clip.npz"
        save_motion(make_example_motion(), clip_file)
        common.update(clip=str(clip_file), example=False)
    elif options.clip:
        if not Path(options.clip).is_file():
            raise LaunchError(f"launch: clip {options.clip} not found")
        common.update(clip=_absolute(options.clip), example=False)
    elif not common.get("clip"):
        raise LaunchError(f"launch: no clip: pass --clip CLIP or --example (or set common.clip in {source})")
    else:
        common["clip"] = _absolute(str(common["clip"]))
    for key, value in (("lockstep", options.lockstep), ("domain_id", options.domain_id),
                       ("transport", options.transport), ("start_offset", options.start_offset)):
        if value is not None:
            common[key] = value
    bridge = dict(node_params.section(doc, "sim_bridge", str(source)))
    if options.duration_s is not None:
        bridge["duration_s"] = float(options.duration_s)
    if options.perturb:
        from intermimic_policy.sim.perturb import parse_perturb

        parse_perturb(options.perturb)  # a bad KEY=VALUE fails here with its own message
        bridge["perturb"] = ",".join(options.perturb)
    bridge["summary"] = str(log_dir / "bridge_summary.json")
    bridge["exit_when_done"] = False  # the bridge holds its last state until the final statuses are read
    if options.record:
        bridge["record"] = _absolute(options.record)
    resolved = {**doc, node_params.COMMON_SECTION: common, "sim_bridge": bridge}
    _with_clip_object(resolved, str(common["clip"]))
    path = log_dir / CONFIG_NAME
    with atomic_output(path) as handle:
        handle.write(yaml.safe_dump(resolved, sort_keys=False).encode())
    return resolved, path


def _check_robot_launch(options: LaunchOptions, common: Mapping[str, Any], source: Path) -> None:
    """A robot launch needs that robot's clip and policy: refuse others here, in one line each."""
    from intermimic_policy.embodiment.description import EmbodimentError, embodiment_for
    from intermimic_policy.motion.robot_motion import is_robot_motion_file, load_robot_motion
    from intermimic_policy.runtime.base import read_policy_file

    robot = options.robot or ""
    try:
        embodiment_for(robot)
    except EmbodimentError as exc:
        raise LaunchError(f"launch --robot: {exc}") from exc
    clip = options.clip or ("" if options.example else str(common.get("clip") or ""))
    if not clip or not is_robot_motion_file(clip):
        raise LaunchError(f"launch --robot {robot}: give its retargeted clip with --clip CLIP.npz "
                          f"(`intermimic retarget CLIP.pt --robot {robot} --out DIR` writes one)")
    if load_robot_motion(clip).robot != robot:
        raise LaunchError(f"launch --robot {robot}: clip {clip} was retargeted to {load_robot_motion(clip).robot!r}")
    try:
        embodiment = read_policy_file(str(common["policy"])).contract.embodiment
    except IntermimicError:
        return  # unreadable: the policy node refuses it at load, naming the problem
    if embodiment != f"robot:{robot}":
        raise LaunchError(f"launch --robot {robot}: policy {common['policy']} drives {embodiment!r} "
                          f"(`intermimic export --init random --kind teacher --robot {robot} --out FILE.onnx` "
                          "makes an untrained one for it)")


def _status_topics(doc: Mapping[str, Any]) -> dict[str, str]:
    topics = dict(DEFAULT_STATUS_TOPICS)
    common = doc.get(node_params.COMMON_SECTION) or {}
    common_topics = common.get("topics") or {}
    for node, key in _TOPIC_KEYS.items():
        own = doc.get(node) or {}
        name = (own.get("topics") or {}).get(key) or common_topics.get(key) or topics[node]
        prefix = own.get("topic_prefix", common.get("topic_prefix")) or ""
        topics[node] = getattr(Topics(**{key: name}).prefixed(prefix), key)
    return topics


def _with_clip_object(doc: dict[str, Any], clip: str) -> None:
    """Put the clip's object into the policy node's object table (loaded at its start-up) unless
    the file configures the table itself."""
    node = dict(doc.get("policy_node") or {})
    if node.get("objects"):
        return
    from intermimic_policy.motion.object_names import PRIMITIVE_BOXES

    name = load_clip(clip, False).object_name
    node["objects"] = sorted({name, *PRIMITIVE_BOXES})
    doc["policy_node"] = node


# -- the run ---------------------------------------------------------------------------------------
def _report(doc: Mapping[str, Any], options: LaunchOptions, bridge: dict[str, Any], monitor: StatusMonitor,
            procs: list[ManagedProcess], log_dir: Path, error: str | None, interrupted: bool) -> dict[str, Any]:
    common = doc[node_params.COMMON_SECTION]
    policy_status = monitor.values.get("policy_node", {})
    # the control loop's timing as the policy node measured it (tick = state in -> targets out)
    loop = {key: _number(policy_status.get(key)) for key in (
        "tick_ms_p50", "tick_ms_p99", "tick_ms_max", "jitter_ms_p99", "deadline_ms", "deadline_misses",
        "deadline_misses_off_cpu", "state_gaps", "late_inputs", "duplicates", "out_of_order", "stale_stamps", "clock_jumps",
        "unknown_objects")}
    report: dict[str, Any] = {
        "ok": error is None and not interrupted, "error": error, "interrupted": interrupted,
        "ticks": bridge.get("ticks"), "missed_ticks": bridge.get("missed_ticks"),
        "latency_ms_p50": _number(policy_status.get("latency_ms_p50")),
        "latency_ms_p99": _number(policy_status.get("latency_ms_p99")),
        "round_trip_ms_p50": bridge.get("round_trip_ms_p50"), "round_trip_ms_p99": bridge.get("round_trip_ms_p99"),
        "E_h_cm": bridge.get("E_h_cm"), "E_o_cm": bridge.get("E_o_cm"),
        "safe_hold_events": _number(policy_status.get("safe_hold_events")),
        "loop": loop, "target_timeouts": bridge.get("target_timeouts"),
        "policy_mode": policy_status.get("mode"),
        "duration": options.duration_s if options.duration_s is not None else bridge.get("sim_time_s"),
        "clip": common.get("clip"), "policy": common.get("policy"), "lockstep": bool(common.get("lockstep")),
        "domain_id": common.get("domain_id"), "record": (doc.get("sim_bridge") or {}).get("record") or None,
        "bridge": bridge, "policy_node_status": policy_status,
        "motion_streamer_status": monitor.values.get("motion_streamer", {}),
        "exit_codes": {p.name: p.returncode for p in procs},
        "processes": {p.name: {"pid": p.popen.pid, "exit_code": p.returncode, "log": str(p.log_path)} for p in procs},
        "log_dir": str(log_dir),
    }
    report.update(_outcome(report, bridge, common))
    return report


# issue 11's bar for a closed loop that did the interaction
SUCCESS_MAX_ERROR_CM = 6.0
SUCCESS_LIFT_TOLERANCE_CM = 5.0
FALL_HEIGHT_M = 0.3


def _outcome(report: Mapping[str, Any], bridge: Mapping[str, Any], common: Mapping[str, Any]) -> dict[str, Any]:
    """``success`` (whole clip, no fall, the object lifted as the reference lifts it, E_h and E_o
    at most 6 cm, every tick answered, no safe hold) and the figures it is judged on."""
    frames, hz = bridge.get("clip_frames"), bridge.get("control_hz")
    start = int(bridge.get("start_offset") or 0)
    clip_s = (int(frames) - 1 - start) / float(hz) if frames and hz else None
    ref_lift = None
    clip = common.get("clip")
    if clip and Path(str(clip)).is_file():
        try:
            from intermimic_policy.motion.io import load_motion

            z = load_motion(str(clip)).object_pos[start:, 2]
            ref_lift = float((z.max() - z[0]) * 100.0)
        except Exception:  # noqa: BLE001 - a report never fails on a clip it cannot read back
            ref_lift = None
    lift = bridge.get("object_lift_cm")
    duration = bridge.get("sim_time_s")

    def at_most(x: Any, limit: float) -> bool:
        return isinstance(x, (int, float)) and x == x and x <= limit

    success = bool(
        report.get("ok") and clip_s is not None and isinstance(duration, (int, float)) and duration >= clip_s - 1e-6
        and at_most(report.get("E_h_cm"), SUCCESS_MAX_ERROR_CM) and at_most(report.get("E_o_cm"), SUCCESS_MAX_ERROR_CM)
        and isinstance(lift, (int, float)) and ref_lift is not None
        and abs(lift - ref_lift) <= SUCCESS_LIFT_TOLERANCE_CM
        and (bridge.get("root_height_min_m") or 0.0) > FALL_HEIGHT_M
        and report.get("missed_ticks") == 0 and not report.get("safe_hold_events")
        and not bridge.get("physics_failures"))
    return {"success": success, "clip_duration_s": clip_s, "duration_s": duration,
            "object_lift_cm": lift, "reference_lift_cm": ref_lift,
            "fell": None if bridge.get("root_height_min_m") is None else bridge["root_height_min_m"] <= FALL_HEIGHT_M}


def _interrupt_on_sigterm() -> Any:
    """SIGTERM to the launcher stops the run like Ctrl-C (its children are in their own process
    groups and would otherwise outlive it). Returns the previous handler (None off the main thread)."""
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        return None


def run_sim_hoi(options: LaunchOptions) -> dict[str, Any]:
    """Start the three nodes, wait for the run to end, stop them, return (and write) the report."""
    from intermimic_policy.ros.transport import make_node

    log_dir = Path(options.log_dir) if options.log_dir else Path(tempfile.mkdtemp(prefix="intermimic_launch_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    if options.report and not Path(options.report).expanduser().resolve().parent.is_dir():
        raise LaunchError(f"launch: the folder of --report {options.report} does not exist")
    if options.record and not Path(options.record).expanduser().resolve().parent.is_dir():
        raise LaunchError(f"launch: the folder of --record {options.record} does not exist")
    doc, config_path = resolve_config(options, log_dir)
    common = doc[node_params.COMMON_SECTION]
    domain = common.get("domain_id")
    duration = (doc.get("sim_bridge") or {}).get("duration_s") or 0.0
    summary_file = Path(doc["sim_bridge"]["summary"])
    # a summary left by an earlier run in the same log folder would end this run at once and be
    # reported as its result
    summary_file.unlink(missing_ok=True)
    timeout = options.timeout_s if options.timeout_s is not None else (120.0 + 30.0 * duration if duration else None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[ManagedProcess] = []
    monitor = StatusMonitor()
    error: str | None = None
    interrupted = False
    node = make_node("sim_hoi_launcher", backend=str(common.get("transport") or "auto"),
                     domain_id=domain if isinstance(domain, int) else None)
    previous_term = _interrupt_on_sigterm()
    try:
        for name, topic in _status_topics(doc).items():
            node.create_subscription(topic, DiagnosticArray, monitor.callback(name), "reliable")
        for spec in NODES:
            argv = [sys.executable, "-m", spec.module, "--config", str(config_path)]
            procs.append(start_process(spec.name, argv, log_dir / f"{spec.name}.log", env))
        logger.info("started %s (logs in %s)", ", ".join(f"{p.name} [{p.popen.pid}]" for p in procs), log_dir)
        started = time.monotonic()
        with tqdm(total=None, desc="sim_hoi", unit="tick", disable=not options.progress) as bar:
            try:
                while True:
                    node.spin_once(0.1)
                    status = monitor.values.get("sim_bridge", {})
                    ticks = _number(status.get("ticks"))
                    if isinstance(ticks, int) and ticks > bar.n:
                        if bar.total is None and duration:
                            bar.total = int(round(duration * float(_number(status.get("control_hz")) or 30)))
                        bar.update(ticks - bar.n)
                    if summary_file.is_file():  # the bridge simulated the duration and wrote its summary
                        break
                    dead = [p for p in procs if p.returncode is not None]
                    if dead:
                        p = dead[0]
                        error = (f"{p.name} exited early with code {p.returncode}; end of its log "
                                 f"({p.log_path}):\n{p.log_tail()}")
                        break
                    if timeout is not None and time.monotonic() - started > timeout:
                        error = (f"the run did not finish within {timeout:g} s of wall time (sim_bridge at tick "
                                 f"{ticks}); logs in {log_dir}")
                        break
            except KeyboardInterrupt:
                interrupted = True
        if error is None and not interrupted:
            # the policy node's status after the last tick (it reports at a few Hz; the bridge
            # keeps its inputs fresh meanwhile): one the node stamped a moment after the bridge
            # finished, so that it has answered the bridge's last state (a status that merely
            # arrives later may have been built before that answer)
            ended_ns = time.time_ns() + FINAL_STATUS_SETTLE_NS
            node.spin(until=lambda: monitor.stamped.get("policy_node", 0) > ended_ns, timeout_s=3.0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop_processes(procs, options.stop_timeout_s)
        node.destroy()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    bridge: dict[str, Any] = {}
    if summary_file.is_file():
        bridge = json.loads(summary_file.read_text())
        bridge.pop("E_h_cm_per_tick", None)
    elif error is None and not interrupted:
        error = f"sim_bridge wrote no summary ({summary_file}); see {log_dir}/sim_bridge.log"
    report = _report(doc, options, bridge, monitor, procs, log_dir, error, interrupted)
    if options.report:
        with atomic_output(Path(options.report).expanduser()) as handle:
            handle.write(json.dumps(report, indent=2).encode())
    return report


def ros2_launch_argv(options: LaunchOptions) -> list[str]:
    """``ros2 launch intermimic sim_hoi.launch.py`` with the launch arguments it declares."""
    argv = ["ros2", "launch", PACKAGE, LAUNCH_FILE]
    if options.clip:
        argv.append(f"clip:={_absolute(options.clip)}")
    if options.policy:
        argv.append(f"policy:={_absolute(options.policy)}")
    if options.lockstep is not None:
        argv.append(f"lockstep:={str(options.lockstep).lower()}")
    if options.config:
        argv.append(f"config:={_absolute(options.config)}")
    if options.robot:
        argv.append(f"robot:={options.robot}")
    return argv
