"""Policy node latency, jitter and deadline misses over DDS, against the DDS floor, at 30 and 50 Hz.

The policy node runs as its own process (``python -m intermimic_policy.ros.policy_node``, Cyclone
DDS on loopback, a random-init teacher exported with the rate in its contract); this process
plays motion streamer and robot at that rate. Per rate and mode it reports:

* node tick (from the node's status): state in -> targets published, inside the node (p50/p99/max),
  and its deadline misses (ticks longer than a quarter period) and interval jitter;
* driver-seen round trip: state published here -> the PDTargets of that stamp received here;
* DDS floor, measured in the same run with the same message sizes: an echo process (same
  transport, same codecs) subscribed to the same five inputs answers each JointState with a
  prebuilt 153-joint PDTargets. Its round trip is what DDS and two Python processes cost with
  no policy at all; the target is driver-seen p99 <= 2 ms and <= 3x the floor's p99.

Modes: ``lockstep`` (each tick's state is stamped with the tick; the next tick is sent at the
period schedule; a tick whose answer has not arrived by then is missed) and ``realtime`` (stamps
are wall-clock time; the node runs on the arrival of each state, no clock of its own; missed =
stamps never answered, jitter = |interval - period| of the answers).

    python benchmarks/bench_policy_node_latency.py [--duration 600] [--rates 30 50] [--modes lockstep realtime]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.fk import forward_kinematics
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.embodiment.smplx_body import DOF_NAMES
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.transport import make_node

TARGET_P99_MS = 2.0
LOOKAHEAD = 20
REPO = Path(__file__).resolve().parents[1]


def synthetic_motion(frames: int, fps: float) -> HOIMotion:
    """A smooth clip (exact FK of sinusoidal joint motions) with the primitive box."""
    g = np.random.default_rng(0)
    t = np.arange(frames) / fps
    amp, freq, phase = g.uniform(0.05, 0.3, (51, 3)), g.uniform(0.1, 0.5, (51, 3)), g.uniform(0, 6.3, (51, 3))
    rotvec = amp * np.sin(2 * np.pi * freq * t[:, None, None] + phase)
    root_pos = np.stack([0.2 * np.sin(0.2 * t), 0.05 * np.sin(t), 0.9 + 0.02 * np.sin(2 * t)], -1)
    root_rot = quat.from_yaw(torch.from_numpy(0.3 * np.sin(0.1 * t))).numpy()
    bp, br = forward_kinematics(default_skeleton().offsets, torch.from_numpy(root_pos),
                                torch.from_numpy(root_rot), torch.from_numpy(rotvec))
    labels = np.zeros((frames, 52), np.int8)
    f32 = np.float32
    return HOIMotion(fps=fps, root_pos=bp[:, 0].numpy().astype(f32), root_rot=br[:, 0].numpy().astype(f32),
                     joint_rotvec=rotvec.astype(f32), body_pos=bp.numpy().astype(f32),
                     body_rot=br.numpy().astype(f32), object_pos=(root_pos + [0.45, 0, 0.1]).astype(f32),
                     object_rot=root_rot.astype(f32), object_name="box", body_contact=labels,
                     object_contact=np.zeros(frames, bool), name="bench")


TOPICS = ("reference", "reference_window", "object_pose", "joint_states", "odom", "contacts", "pd_targets", "status")


class Driver:
    """Streamer and robot in one node; records when each stamp's targets came back."""

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
        self.frames = convert.MotionFrames(motion)
        rotvec = torch.from_numpy(motion.joint_rotvec.astype(np.float64))
        self.angles = joint_map.hinge_angles_from_rotvec(rotvec).numpy()
        self.motion = motion
        self._rates = np.zeros(153)
        self._false = np.zeros(52, bool)
        self._force = np.zeros((52, 3))

    def _on_targets(self, msg: PDTargets) -> None:
        self.received[ns_from_time(msg.header.stamp)] = time.perf_counter()

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status = {kv.key: kv.value for kv in msg.status[0].values}

    def wait_matched(self, timeout_s: float) -> bool:
        pubs = (self.ref, self.joints, self.odom, self.obj, self.contacts)
        return self.node.spin(until=lambda: all(p.subscription_count() > 0 for p in pubs), timeout_s=timeout_s)

    def publish_state(self, k: int, stamp_ns: int) -> None:
        m = self.motion
        z = np.zeros(3)
        self.odom.publish(convert.odometry_message(m.root_pos[k], m.root_rot[k], z, z, stamp_ns))
        self.obj.publish(convert.pose_stamped_message(m.object_pos[k], m.object_rot[k], stamp_ns))
        self.contacts.publish(convert.contact_state_message(self._false, self._false, self._force, stamp_ns))
        self.joints.publish(convert.joint_state_message(self.angles[k], self._rates, stamp_ns))


def run_echo(domain: int, prefix: str, seconds: float) -> int:
    """The DDS floor's peer: subscribed to the node's five inputs; answers each JointState with a
    prebuilt PDTargets of the policy node's size, stamped with its stamp."""
    node = make_node("bench_echo", backend="cyclone", domain_id=domain)
    pub = node.create_publisher(f"{prefix}/pd_targets", PDTargets)
    names, zeros = list(DOF_NAMES), np.zeros(len(DOF_NAMES))
    msg = PDTargets(header=Header(), joint_names=names, position=zeros, velocity=zeros, kp=zeros, kd=zeros,
                    effort=zeros)

    def on_joints(state: JointState) -> None:
        msg.header = Header(stamp=state.header.stamp)
        pub.publish(msg)

    node.create_subscription(f"{prefix}/joint_states", JointState, on_joints)
    for topic, kind in (("reference", HOIFrame), ("odom", Odometry), ("object_pose", PoseStamped),
                        ("contacts", ContactState)):
        node.create_subscription(f"{prefix}/{topic}", kind, lambda _m: None, 100 if topic == "reference" else "reliable")
    node.spin(timeout_s=seconds)
    node.destroy()
    return 0


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("CYCLONEDDS_URI", None)
    return env


def run_node(policy: Path, domain: int, prefix: str, lockstep: bool, seconds: float, tmp: Path) -> subprocess.Popen[str]:
    cfg = {"policy_node": {
        "policy": str(policy), "transport": "cyclone", "domain_id": domain, "lockstep": lockstep,
        "soft_start_s": 0.0, "max_slew_rad": 0.0, "status_hz": 5.0, "node_name": "bench_policy_node",
        "timeouts": {"reference_s": 1.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0},
        "topics": {k: f"{prefix}/{k}" for k in TOPICS},
    }}
    path = tmp / f"node_{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "intermimic_policy.ros.policy_node", "--config", str(path),
                             "--duration", str(seconds + 60), "--log-level", "WARNING"],
                            env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_echo_process(domain: int, prefix: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--echo", str(domain), prefix, str(seconds + 60)],
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
        driver.ref.publish(driver.frames.frame(k))
    driver.node.spin(timeout_s=0.5)
    sent: dict[int, float] = {}
    start = time.perf_counter() + 0.2
    for k in tqdm(range(ticks), desc=desc, unit="tick", leave=False, mininterval=5.0):
        due = start + k * period
        while (now := time.perf_counter()) < due:
            driver.node.spin_once(min(0.002, due - now))
        stamp = (k + 1) * dt_ns if mode == "lockstep" else time.time_ns()
        driver.ref.publish(driver.frames.frame(k + LOOKAHEAD))
        sent[stamp] = time.perf_counter()
        driver.publish_state(k, stamp)
    driver.node.spin(timeout_s=0.5)  # the last answers and a status of the running node
    warm = int(rate)  # the first second: start-up (matching, first ticks)
    stamps = list(sent)[warm:]
    rt = np.array([(driver.received[s] - sent[s]) * 1e3 for s in stamps if s in driver.received])
    missed = sum(1 for i, s in enumerate(stamps) if s not in driver.received or
                 (i + 1 < len(stamps) and driver.received[s] > sent[stamps[i + 1]]))
    arrivals = np.array(sorted(driver.received[s] for s in stamps if s in driver.received))
    jitter = np.abs(np.diff(arrivals) - period) * 1e3 if arrivals.size > 2 else np.array([np.nan])
    return {"ticks": float(len(stamps)), "answered": float(rt.size), "missed": float(missed),
            "rt_p50": float(np.median(rt)), "rt_p99": float(np.percentile(rt, 99)), "rt_max": float(rt.max()),
            "jitter_p99": float(np.percentile(jitter, 99))}


def measure(rate: float, mode: str, seconds: float, policy: Path, tmp: Path) -> dict[str, float]:
    domain = 100 + (os.getpid() + int(rate) + (7 if mode == "realtime" else 0)) % 120
    ticks = int(seconds * rate)
    motion = synthetic_motion(ticks + LOOKAHEAD + 40, rate)
    out: dict[str, float] = {}
    # the floor: same driver, same messages, an echo instead of the policy node
    prefix = f"/bench{uuid.uuid4().hex[:8]}"
    echo = run_echo_process(domain, prefix, seconds)
    driver = Driver(domain, prefix, motion)
    try:
        if not driver.wait_matched(60.0):
            raise RuntimeError(f"echo did not come up: {echo.poll()}")
        floor = drive(driver, rate, mode, seconds, f"floor {mode} {rate:g} Hz")
        out.update({f"floor_{k}": v for k, v in floor.items() if k.startswith("rt_")})
    finally:
        driver.node.destroy()
        _stop(echo)
    prefix = f"/bench{uuid.uuid4().hex[:8]}"
    proc = run_node(policy, domain, prefix, mode == "lockstep", seconds, tmp)
    driver = Driver(domain, prefix, motion)
    try:
        if not driver.wait_matched(90.0):
            log = proc.stdout.read() if proc.poll() is not None and proc.stdout is not None else ""
            raise RuntimeError(f"policy node did not come up (exit {proc.poll()}): {log}")
        out.update(drive(driver, rate, mode, seconds, f"node {mode} {rate:g} Hz"))
        s = driver.status
        for key in ("tick_ms_p50", "tick_ms_p99", "tick_ms_max", "jitter_ms_p99", "deadline_misses", "state_gaps",
                    "late_inputs", "safe_hold_events"):
            out[f"node_{key}"] = float(s.get(key, "nan"))
    finally:
        driver.node.destroy()
        _stop(proc)
    return out


def markdown(rows: list[dict[str, object]]) -> str:
    head = ("| rate | mode | s | ticks | missed | node tick p50 / p99 / max (ms) | node deadline misses | "
            "round trip p50 / p99 / max (ms) | DDS floor p50 / p99 (ms) | p99 / floor p99 | answer jitter p99 (ms) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        f = r["figures"]
        assert isinstance(f, dict)
        lines.append(
            f"| {r['rate']:g} Hz | {r['mode']} | {r['seconds']:g} | {f['ticks']:.0f} | {f['missed']:.0f} | "
            f"{f['node_tick_ms_p50']:.3f} / {f['node_tick_ms_p99']:.3f} / {f['node_tick_ms_max']:.3f} | "
            f"{f['node_deadline_misses']:.0f} | {f['rt_p50']:.3f} / {f['rt_p99']:.3f} / {f['rt_max']:.3f} | "
            f"{f['floor_rt_p50']:.3f} / {f['floor_rt_p99']:.3f} | {f['rt_p99'] / f['floor_rt_p99']:.2f} | "
            f"{f['jitter_p99']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--echo":
        return run_echo(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds per rate and mode "
                        "(and again for the DDS floor)")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 50.0])
    parser.add_argument("--modes", nargs="+", choices=("lockstep", "realtime"), default=["lockstep", "realtime"])
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    from intermimic_policy.sim.env_config import HOIEnvConfig
    from training.export import export_random

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_policy_node_") as d:
        tmp = Path(d)
        for rate in args.rates:
            policy = tmp / f"teacher_{rate:g}hz.onnx"
            # physics stays a whole multiple of the control rate (the contract refuses anything else)
            env = HOIEnvConfig(control_hz=rate, physics_hz=rate * max(1, round(240.0 / rate)))
            export_random("teacher", policy, env_config=env)
            for mode in args.modes:
                r = measure(rate, mode, args.duration, policy, tmp)
                rows.append({"rate": rate, "mode": mode, "seconds": args.duration, "figures": r})
                ok = r["rt_p99"] <= TARGET_P99_MS and r["rt_p99"] <= 3 * r["floor_rt_p99"] and r["missed"] == 0
                print(f"teacher {rate:g} Hz {mode}: " + "  ".join(f"{k} {v:.3f}" for k, v in r.items())
                      + f"  [{'meets' if ok else 'misses'} p99 <= {TARGET_P99_MS} ms and <= 3x floor, no miss]",
                      flush=True)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
