"""Policy node latency, jitter and deadline misses over DDS, against the DDS floor, at 30 and 50 Hz.

The policy node runs as its own process (``python -m intermimic_policy.ros.policy_node``, Cyclone
DDS on loopback) with the policy the product ships (``assets/policies/example_teacher.onnx``;
``--policy F.onnx`` for another, ``--random-teacher`` for upstream's 1024-1024-512 net at random
init); this process plays motion streamer and robot at the control rate on a real OMOMO clip
(``--clip``, under ``$INTERMIMIC_DATA/motions``), played back and forth for as long as the run
lasts (at 50 Hz the clip's frames are played at 50 fps and the policy's contract is restamped to
50 Hz: same weights, the latency is what is measured). Per rate and mode it reports:

* node tick (from the node's status): state in -> targets published, inside the node (p50/p99/max),
  and its deadline misses (ticks longer than a quarter period; in brackets those whose CPU time fit
  the deadline: time off the CPU, e.g. taken by the hypervisor, not the node's work) and interval
  jitter, and the hypervisor's steal time during the run (``steal_ms``);
* driver-seen round trip: state published here -> the PDTargets of that stamp received here;
* DDS floor, measured in the same run with the same message sizes: an echo process (same
  transport, same codecs) subscribed to the same five inputs answers each JointState with a
  prebuilt 153-joint PDTargets. Its round trip is what DDS and two Python processes cost with
  no policy at all; the target is driver-seen p99 <= 2 ms and <= 3x the floor's p99.

Both peers build their messages once and fill them in place each tick (numbers as numpy rows,
constant name lists shared), as a robot driver should: the floor is transport, not Python
message building.

Modes: ``lockstep`` (each tick's state is stamped with the tick; the next tick is sent at the
period schedule; a tick whose answer has not arrived by then is missed) and ``realtime`` (stamps
are wall-clock time; the node runs on the arrival of each state, no clock of its own; missed =
stamps never answered, jitter = |interval - period| of the answers).

    python benchmarks/bench_policy_node_latency.py [--duration 600] [--rates 30 50] \
        [--modes lockstep realtime] [--json out.json] [--readme README.md]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from tqdm import tqdm

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.ros.msgs import ns_from_time, time_from_ns
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.msgs.geometry_msgs import Pose, PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.policy_node import apply_rt_priority
from intermimic_policy.ros.transport import make_node
from intermimic_policy.runtime.base import read_policy_file

TARGET_P99_MS = 2.0
LOOKAHEAD = 20
REPO = Path(__file__).resolve().parents[1]
SHIPPED_POLICY = REPO / "intermimic_policy" / "assets" / "policies" / "example_teacher.onnx"
DEFAULT_CLIP = "OMOMO_new/sub2_largetable_000.pt"
README_BEGIN = "<!-- bench_policy_node_latency{tag}: begin (written by the benchmark's --readme) -->"
README_END = "<!-- bench_policy_node_latency{tag}: end -->"


def clip_path(clip: str) -> Path:
    """``clip`` as given, else under ``$INTERMIMIC_DATA/motions`` (which must then be set)."""
    path = Path(clip)
    if path.is_file():
        return path
    root = os.environ.get("INTERMIMIC_DATA")
    if not root:
        raise SystemExit(f"clip {clip!r} is not a file and INTERMIMIC_DATA is not set (it holds motions/OMOMO_new)")
    path = Path(root) / "motions" / clip
    if not path.is_file():
        raise SystemExit(f"clip {path} does not exist")
    return path


def back_and_forth(motion: HOIMotion, frames: int, fps: float) -> HOIMotion:
    """The clip played forwards, then backwards, ... for ``frames`` frames at ``fps``: a real clip
    for as long as a run lasts, with no jump in any pose."""
    n = motion.num_frames
    t = np.arange(frames) % (2 * n - 2)
    idx = np.where(t < n, t, 2 * n - 2 - t)
    per_frame = ("root_pos", "root_rot", "joint_rotvec", "body_pos", "body_rot", "object_pos", "object_rot",
                 "body_contact", "object_contact")
    return dataclasses.replace(motion, fps=fps, **{f: getattr(motion, f)[idx] for f in per_frame})


def policy_at_rate(src: Path, rate: float, physics_hz: float, dst: Path) -> Path:
    """``src`` with its contract's rates set to ``rate``/``physics_hz`` (same graph and weights)."""
    contract = read_policy_file(src).contract
    if abs(contract.control_hz - rate) < 1e-9:
        return src
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == "control_hz":
            prop.value = json.dumps(float(rate))
        elif prop.key == "physics_hz":
            prop.value = json.dumps(float(physics_hz))
    onnx.save(model, str(dst))
    return dst


TOPICS = ("reference", "reference_window", "object_pose", "joint_states", "odom", "contacts", "pd_targets", "status")


class Driver:
    """Streamer and robot in one node; records when each stamp's targets came back.

    Every message is built once; a tick writes the stamp and the clip's numbers into it (numpy
    rows the fast codecs write as one buffer each)."""

    def __init__(self, domain: int, prefix: str, motion: HOIMotion) -> None:
        self.node = make_node(f"bench_driver_{uuid.uuid4().hex[:6]}", backend="cyclone", domain_id=domain)
        n = self.node
        self.ref = n.create_publisher(f"{prefix}/reference", HOIFrame, 100)
        self.joints = n.create_publisher(f"{prefix}/joint_states", JointState)
        self.odom = n.create_publisher(f"{prefix}/odom", Odometry)
        self.obj = n.create_publisher(f"{prefix}/object_pose", PoseStamped)
        self.contacts = n.create_publisher(f"{prefix}/contacts", ContactState)
        self.received: dict[int, float] = {}
        self.status: dict[str, str] = {}
        n.create_subscription(f"{prefix}/pd_targets", PDTargets, self._on_targets, 100)
        n.create_subscription(f"{prefix}/status", DiagnosticArray, self._on_status)
        m = self.motion = motion
        f32, f64 = np.float32, np.float64
        rotvec = torch.from_numpy(m.joint_rotvec.astype(f64))
        self.angles = joint_map.hinge_angles_from_rotvec(rotvec).numpy()
        self.rates = np.gradient(self.angles, 1.0 / m.fps, axis=0)
        self.root_lin, self.root_ang = m.root_lin_vel.astype(f64), m.root_ang_vel.astype(f64)
        self.rotvec32 = m.joint_rotvec.astype(f32).reshape(m.num_frames, -1)
        self.body_pos32 = m.body_pos.astype(f32).reshape(m.num_frames, -1)
        self.body_rot32 = m.body_rot.astype(f32).reshape(m.num_frames, -1)
        self.labels = m.body_contact.astype(np.int8)
        self.touch = m.body_contact > 0
        self.root_pose = np.concatenate([m.root_pos, m.root_rot], -1).astype(f64)
        self.object_pose = np.concatenate([m.object_pos, m.object_rot], -1).astype(f64)
        self.frame_msg = HOIFrame(header=Header(frame_id="world"), fps=float(m.fps), object_name=m.object_name)
        self.odom_msg = Odometry(header=Header(frame_id="world"), child_frame_id="world")  # twist in the world frame
        self.pose_msg = PoseStamped(header=Header(frame_id="world"))
        self.contact_msg = ContactState(header=Header(frame_id="world"), body_names=list(BODY_NAMES),
                                        force=np.zeros((len(BODY_NAMES), 3)))  # type: ignore[arg-type]
        self.joint_msg = JointState(header=Header(frame_id="pelvis"), name=list(DOF_NAMES),
                                    effort=np.zeros(0))  # type: ignore[arg-type]
        self._false = np.zeros(len(BODY_NAMES), bool)

    def _on_targets(self, msg: PDTargets) -> None:
        self.received[ns_from_time(msg.header.stamp)] = time.perf_counter()

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status = {kv.key: kv.value for kv in msg.status[0].values}

    def wait_matched(self, timeout_s: float) -> bool:
        pubs = (self.ref, self.joints, self.odom, self.obj, self.contacts)
        return self.node.spin(until=lambda: all(p.subscription_count() > 0 for p in pubs), timeout_s=timeout_s)

    @staticmethod
    def _set_pose(pose: Pose, values: np.ndarray) -> None:
        p, q = pose.position, pose.orientation
        p.x, p.y, p.z, q.x, q.y, q.z, q.w = values.tolist()

    def publish_frame(self, k: int) -> None:
        f = self.frame_msg
        f.frame_index = k
        self._set_pose(f.root_pose, self.root_pose[k])
        self._set_pose(f.object_pose, self.object_pose[k])
        f.joint_rotvec, f.body_positions, f.body_rotations = (  # type: ignore[assignment]
            self.rotvec32[k], self.body_pos32[k], self.body_rot32[k])
        f.body_contact_labels = self.labels[k]  # type: ignore[assignment]
        f.object_contact = bool(self.motion.object_contact[k])
        self.ref.publish(f)

    def publish_state(self, k: int, stamp_ns: int) -> None:
        stamp = time_from_ns(stamp_ns)
        o = self.odom_msg
        o.header.stamp = stamp
        self._set_pose(o.pose.pose, self.root_pose[k])
        t = o.twist.twist
        t.linear.x, t.linear.y, t.linear.z = self.root_lin[k].tolist()
        t.angular.x, t.angular.y, t.angular.z = self.root_ang[k].tolist()
        self.odom.publish(o)
        self.pose_msg.header.stamp = stamp
        self._set_pose(self.pose_msg.pose, self.object_pose[k])
        self.obj.publish(self.pose_msg)
        c = self.contact_msg
        c.header.stamp = stamp
        c.in_contact, c.object_contact = self.touch[k], self._false  # type: ignore[assignment]
        self.contacts.publish(c)
        j = self.joint_msg
        j.header.stamp = stamp
        j.position, j.velocity = self.angles[k], self.rates[k]  # type: ignore[assignment]
        self.joints.publish(j)


@dataclasses.dataclass(frozen=True)
class Placement:
    """How the node runs (the floor's echo at the same priority): SCHED_FIFO priority, warm-up."""

    rt_priority: int = 0
    warm_lead_ms: float = 0.0


def run_echo(domain: int, prefix: str, seconds: float, rt_priority: int = 0) -> int:
    """The DDS floor's peer: subscribed to the node's five inputs; answers each JointState with a
    prebuilt PDTargets of the policy node's size, stamped with its stamp."""
    apply_rt_priority(rt_priority)  # as the policy node (before DDS starts its threads)
    node = make_node("bench_echo", backend="cyclone", domain_id=domain)
    pub = node.create_publisher(f"{prefix}/pd_targets", PDTargets)
    names, zeros = list(DOF_NAMES), np.zeros(len(DOF_NAMES))
    msg = PDTargets(header=Header(), joint_names=names, position=zeros, velocity=zeros, kp=zeros,  # type: ignore[arg-type]
                    kd=zeros, effort=zeros)  # type: ignore[arg-type]

    def on_joints(state: JointState) -> None:
        msg.header.stamp = state.header.stamp
        pub.publish(msg)

    node.create_subscription(f"{prefix}/joint_states", JointState, on_joints)
    for topic, kind in (("reference", HOIFrame), ("odom", Odometry), ("object_pose", PoseStamped),
                        ("contacts", ContactState)):
        node.create_subscription(f"{prefix}/{topic}", kind, lambda _m: None, 100 if topic == "reference" else "reliable")
    gc.collect()
    gc.freeze()
    node.spin(timeout_s=seconds)
    node.destroy()
    return 0


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("CYCLONEDDS_URI", None)
    return env


def run_node(policy: Path, rate: float, physics_hz: float, objects: list[str], domain: int, prefix: str,
             lockstep: bool, seconds: float, tmp: Path, place: Placement) -> subprocess.Popen[str]:
    cfg = {"policy_node": {
        "policy": str(policy), "transport": "cyclone", "domain_id": domain, "lockstep": lockstep,
        "control_hz": rate, "physics_hz": physics_hz, "objects": objects, "rt_priority": place.rt_priority,
        "warm_lead_ms": place.warm_lead_ms,
        "soft_start_s": 0.0, "max_slew_rad": 0.0, "status_hz": 5.0, "node_name": "bench_policy_node",
        "timeouts": {"reference_s": 1.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0},
        "topics": {k: f"{prefix}/{k}" for k in TOPICS},
    }}
    path = tmp / f"node_{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "intermimic_policy.ros.policy_node", "--config", str(path),
                             "--duration", str(seconds + 60), "--log-level", "WARNING"],
                            env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_echo_process(domain: int, prefix: str, seconds: float, place: Placement) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--echo", str(domain), prefix, str(seconds + 60),
                             str(place.rt_priority)],
                            env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drive(driver: Driver, rate: float, mode: str, seconds: float, desc: str) -> dict[str, float]:
    """Publish reference + state every period for ``seconds``; the round trips and misses seen here."""
    period, dt_ns = 1.0 / rate, round(1e9 / rate)
    ticks = int(seconds * rate)
    for k in range(LOOKAHEAD):
        driver.publish_frame(k)
    driver.node.spin(timeout_s=0.5)
    gc.collect()
    gc.freeze()
    sent: dict[int, float] = {}
    start = time.perf_counter() + 0.2
    for k in tqdm(range(ticks), desc=desc, unit="tick", leave=False, mininterval=5.0):
        due = start + k * period
        while (now := time.perf_counter()) < due:
            driver.node.spin_once(min(0.002, due - now))
        stamp = (k + 1) * dt_ns if mode == "lockstep" else time.time_ns()
        driver.publish_frame(k + LOOKAHEAD)
        sent[stamp] = time.perf_counter()
        driver.publish_state(k, stamp)
    driver.node.spin(timeout_s=0.5)  # the last answers and a status of the running node
    gc.unfreeze()
    warm = int(rate)  # the first second: start-up (matching, first ticks)
    stamps = list(sent)[warm:]
    rt = np.array([(driver.received[s] - sent[s]) * 1e3 for s in stamps if s in driver.received])
    missed = sum(1 for i, s in enumerate(stamps) if s not in driver.received or
                 (i + 1 < len(stamps) and driver.received[s] > sent[stamps[i + 1]]))
    arrivals = np.array(sorted(driver.received[s] for s in stamps if s in driver.received))
    jitter = np.abs(np.diff(arrivals) - period) * 1e3 if arrivals.size > 2 else np.array([np.nan])
    if rt.size == 0:
        raise RuntimeError(f"{desc}: no tick was answered")
    return {"ticks": float(len(stamps)), "answered": float(rt.size), "missed": float(missed),
            "rt_p50": float(np.median(rt)), "rt_p99": float(np.percentile(rt, 99)), "rt_max": float(rt.max()),
            "jitter_p99": float(np.percentile(jitter, 99))}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one rate's runs share: the policy (restamped to the rate), the clip, the object table."""

    rate: float
    physics_hz: float
    policy: Path
    motion: HOIMotion
    objects: list[str]


def prepare(rate: float, args: argparse.Namespace, tmp: Path) -> Setup:
    physics_hz = rate * max(1, round(240.0 / rate))  # a whole multiple (the contract refuses anything else)
    if args.random_teacher:
        from intermimic_policy.sim.env_config import HOIEnvConfig
        from training.export import export_random

        policy = tmp / f"random_teacher_{rate:g}hz.onnx"
        export_random("teacher", policy, env_config=HOIEnvConfig(control_hz=rate, physics_hz=physics_hz))
    else:
        policy = policy_at_rate(Path(args.policy), rate, physics_hz, tmp / f"policy_{rate:g}hz.onnx")
    points = read_policy_file(policy).contract.object_points
    clip = load_motion(clip_path(args.clip))
    from intermimic_policy.sim.objects import load_object

    cloud = tmp / f"{clip.object_name}_{points}.npy"
    np.save(cloud, load_object(clip.object_name, num_points=points).points(points).astype(np.float32))
    frames = int(args.duration * rate) + LOOKAHEAD + 2 * int(rate) + 40
    return Setup(rate, physics_hz, policy, back_and_forth(clip, frames, rate), [f"{clip.object_name}={cloud}"])


def measure(setup: Setup, mode: str, seconds: float, tmp: Path, place: Placement,
            floor_seconds: float | None = None) -> dict[str, float]:
    rate = setup.rate
    domain = 100 + (os.getpid() + int(rate) + (7 if mode == "realtime" else 0)) % 120
    out: dict[str, float] = {}
    # the floor: same driver, same messages, an echo instead of the policy node
    prefix = f"/bench{uuid.uuid4().hex[:8]}"
    floor_s = seconds if floor_seconds is None else floor_seconds
    echo = run_echo_process(domain, prefix, floor_s, place)
    driver = Driver(domain, prefix, setup.motion)
    try:
        if not driver.wait_matched(60.0):
            raise RuntimeError(f"echo did not come up: {echo.poll()}")
        floor = drive(driver, rate, mode, floor_s, f"floor {mode} {rate:g} Hz")
        out.update({f"floor_{k}": v for k, v in floor.items() if k.startswith("rt_")})
    finally:
        driver.node.destroy()
        _stop(echo)
    prefix = f"/bench{uuid.uuid4().hex[:8]}"
    proc = run_node(setup.policy, rate, setup.physics_hz, setup.objects, domain, prefix, mode == "lockstep",
                    seconds, tmp, place)
    driver = Driver(domain, prefix, setup.motion)
    try:
        if not driver.wait_matched(90.0):
            log = proc.stdout.read() if proc.poll() is not None and proc.stdout is not None else ""
            raise RuntimeError(f"policy node did not come up (exit {proc.poll()}): {log}")
        steal0 = steal_ms()
        out.update(drive(driver, rate, mode, seconds, f"node {mode} {rate:g} Hz"))
        out["steal_ms"] = steal_ms() - steal0
        s = driver.status
        if place.rt_priority and not s.get("scheduling", "").startswith("fifo"):
            raise RuntimeError(f"policy node did not get SCHED_FIFO: {s.get('scheduling')}")
        if s.get("mode") != "running":
            raise RuntimeError(f"policy node ended the run in mode {s.get('mode')!r}: {s.get('reason')}")
        for key in ("tick_ms_p50", "tick_ms_p99", "tick_ms_max", "tick_cpu_ms_p50", "tick_cpu_ms_p99",
                    "blocked_ticks", "preempted_ticks", "latency_ms_p99", "jitter_ms_p99",
                    "deadline_misses", "deadline_misses_off_cpu", "state_gaps", "late_inputs", "safe_hold_events", "lookahead_waits", "warm_ups"):
            out[f"node_{key}"] = float(s.get(key, "nan"))
    finally:
        driver.node.destroy()
        _stop(proc)
    return out


def markdown(rows: list[dict[str, object]]) -> str:
    head = ("| rate | mode | s | ticks | missed | node tick p50 / p99 / max (ms) | node deadline misses (off CPU) | "
            "round trip p50 / p99 / max (ms) | DDS floor p50 / p99 (ms) | p99 / floor p99 | answer jitter p99 (ms) | "
            "steal (s) |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        f = r["figures"]
        assert isinstance(f, dict)
        lines.append(
            f"| {r['rate']:g} Hz | {r['mode']} | {r['seconds']:g} | {f['ticks']:.0f} | {f['missed']:.0f} | "
            f"{f['node_tick_ms_p50']:.3f} / {f['node_tick_ms_p99']:.3f} / {f['node_tick_ms_max']:.3f} | "
            f"{f['node_deadline_misses']:.0f} ({f.get('node_deadline_misses_off_cpu', float('nan')):.0f}) | "
            f"{f['rt_p50']:.3f} / {f['rt_p99']:.3f} / {f['rt_max']:.3f} | "
            f"{f['floor_rt_p50']:.3f} / {f['floor_rt_p99']:.3f} | {f['rt_p99'] / f['floor_rt_p99']:.2f} | "
            f"{f['jitter_p99']:.3f} | {f.get('steal_ms', float('nan')) * 1e-3:.1f} |")
    return "\n".join(lines)


def steal_ms() -> float:
    """CPU time the hypervisor gave to others while this guest wanted to run (all CPUs, ms since
    boot; NaN off Linux): a virtual machine's ticks can be late for reasons no process controls."""
    try:
        fields_ = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return float(fields_[8]) * 1e3 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def write_readme(path: Path, table: str, note: str, tag: str = "") -> None:
    """Replace the block between the README's markers (``tag``: which block) with this run's
    table (atomically)."""
    begin, end = README_BEGIN.format(tag=f" {tag}" if tag else ""), README_END.format(tag=f" {tag}" if tag else "")
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin!r} ... {end!r} block to fill")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{head}{begin}\n{note}\n\n{table}\n{end}{tail}")
    os.replace(tmp, path)


@contextlib.contextmanager
def _stopping(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--echo":
        return run_echo(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds per rate and mode "
                        "(and again for the DDS floor)")
    parser.add_argument("--floor-duration", type=float, default=None,
                        help="seconds of the DDS floor per rate and mode (default: --duration); its p99 is a "
                        "property of the transport, which a few minutes pin down")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="N busy-loop processes (normal priority) compete for the CPUs during the run: "
                        "the figure under a load generator")
    parser.add_argument("--only", nargs="+", default=[], metavar="RATE:MODE",
                        help="run just these of the rates x modes (e.g. 30:lockstep 50:realtime)")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 50.0])
    parser.add_argument("--modes", nargs="+", choices=("lockstep", "realtime"), default=["lockstep", "realtime"])
    parser.add_argument("--policy", default=str(SHIPPED_POLICY), help="exported policy (default: the shipped one)")
    parser.add_argument("--random-teacher", action="store_true",
                        help="a random-init teacher of upstream's size (1024-1024-512) instead of --policy")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="clip file, or a path under $INTERMIMIC_DATA/motions")
    parser.add_argument("--rt-priority", type=int, default=0, metavar="N",
                        help="SCHED_FIFO priority of all three processes (node, echo, driver); 0: normal scheduling")
    parser.add_argument("--warm-lead-ms", type=float, default=0.0,
                        help="policy_node.warm_lead_ms: warm the policy up this long before the next state")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--readme", default="", help="write the table into this README's benchmark block")
    parser.add_argument("--readme-tag", default="", help="which block (markers carry the tag)")
    args = parser.parse_args()
    # the load first: started after apply_rt_priority it would inherit SCHED_FIFO and starve the rest
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    scheduling = apply_rt_priority(args.rt_priority)  # the driver (the robot) as the node
    place = Placement(args.rt_priority, args.warm_lead_ms)
    load_before = load_average()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_policy_node_") as d, _stopping(hogs):
        tmp = Path(d)
        for rate in args.rates:
            setup = prepare(rate, args, tmp)
            for mode in args.modes:
                if args.only and f"{rate:g}:{mode}" not in args.only:
                    continue
                r = measure(setup, mode, args.duration, tmp, place, args.floor_duration)
                rows.append({"rate": rate, "mode": mode, "seconds": args.duration, "load": load_average(),
                             "figures": r})
                ok = r["rt_p99"] <= TARGET_P99_MS and r["rt_p99"] <= 3 * r["floor_rt_p99"] and r["missed"] == 0
                print(f"{rate:g} Hz {mode}: " + "  ".join(f"{k} {v:.3f}" for k, v in r.items())
                      + f"  [{'meets' if ok else 'misses'} p99 <= {TARGET_P99_MS} ms and <= 3x floor, no miss]"
                      + f"  load {load_average()}", flush=True)
    table = markdown(rows)
    print(table)
    policy = "random-init teacher 1024-1024-512" if args.random_teacher else Path(args.policy).name
    note = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs, load "
            f"average {load_before} at the start and {load_average()} at the end; `--duration {args.duration:g}`"
            + (f" (DDS floor {args.floor_duration:g} s)" if args.floor_duration is not None else "")
            + (f", {args.load} busy-loop load processes" if args.load else "") + ", "
            f"policy {policy}, clip {args.clip} (back and forth), ONNX Runtime on one thread, scheduling "
            f"{scheduling} (`--rt-priority {args.rt_priority}`)"
            + (f", policy warm-up {args.warm_lead_ms:g} ms before each state" if args.warm_lead_ms else "") + ".")
    print(note)
    if args.json:
        Path(args.json).write_text(json.dumps({"note": note, "rows": rows}, indent=2))
    if args.readme:
        write_readme(Path(args.readme), table, note, args.readme_tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
