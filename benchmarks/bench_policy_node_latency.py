"""Policy node latency and loop jitter over DDS, at 30 Hz and 50 Hz.

The node runs as its own process (``python -m intermimic_policy.ros.policy_node``, Cyclone DDS
on loopback, a random-init teacher exported with the rate in its contract); this process plays
motion streamer and robot at the same rate and measures:

* ``lockstep``: every tick it publishes the next reference frame and the four state messages
  (stamp = tick); latency = reference sent -> the PDTargets of that stamp received (median, p99,
  max), plus the node's own state-in -> targets-out figure from its status. A tick whose targets
  have not arrived when the next tick is due is a missed tick.
* ``timer``: the node ticks on its own timer at the contract's rate with the newest inputs;
  jitter = spread of the intervals between received PDTargets (std, p99 |dt - period|); missed
  = intervals over 1.5 periods, and the node's own ``missed_ticks``.

Target: p99 <= 2 ms and no missed tick. The machine may be shared: run it when quiet.

    python benchmarks/bench_policy_node_latency.py [--seconds 60] [--rates 30 50] [--modes lockstep timer]
"""

from __future__ import annotations

import argparse
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
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
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


class Driver:
    """Streamer and robot in one node; records the targets and the node's status."""

    def __init__(self, domain: int, prefix: str, motion: HOIMotion) -> None:
        self.node = make_node("bench_driver", backend="cyclone", domain_id=domain)
        n = self.node
        self.ref = n.create_publisher(f"{prefix}/reference", HOIFrame, 100)
        self.joints = n.create_publisher(f"{prefix}/joint_states", JointState)
        self.odom = n.create_publisher(f"{prefix}/odom", Odometry)
        self.obj = n.create_publisher(f"{prefix}/object_pose", PoseStamped)
        self.contacts = n.create_publisher(f"{prefix}/contacts", ContactState)
        self.received: dict[int, float] = {}
        self.arrivals: list[float] = []
        self.status: dict[str, str] = {}
        n.create_subscription(f"{prefix}/pd_targets", PDTargets, self._on_targets, 100)
        n.create_subscription(f"{prefix}/status", DiagnosticArray, self._on_status)
        self.frames = convert.MotionFrames(motion)
        rotvec = torch.from_numpy(motion.joint_rotvec.astype(np.float64))
        self.angles = joint_map.hinge_angles_from_rotvec(rotvec).numpy()
        self.motion = motion

    def _on_targets(self, msg: PDTargets) -> None:
        now = time.perf_counter()
        self.received[ns_from_time(msg.header.stamp)] = now
        self.arrivals.append(now)

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status = {kv.key: kv.value for kv in msg.status[0].values}

    def wait_matched(self, timeout_s: float) -> bool:
        pubs = (self.ref, self.joints, self.odom, self.obj, self.contacts)
        return self.node.spin(until=lambda: all(p.subscription_count() > 0 for p in pubs), timeout_s=timeout_s)

    def publish_state(self, k: int, stamp_ns: int) -> None:
        m = self.motion
        rates = np.zeros(153)
        self.odom.publish(convert.odometry_message(m.root_pos[k], m.root_rot[k], np.zeros(3), np.zeros(3), stamp_ns))
        self.obj.publish(convert.pose_stamped_message(m.object_pos[k], m.object_rot[k], stamp_ns))
        self.contacts.publish(convert.contact_state_message(np.zeros(52, bool), np.zeros(52, bool),
                                                            np.zeros((52, 3)), stamp_ns))
        self.joints.publish(convert.joint_state_message(self.angles[k], rates, stamp_ns))


def run_node(policy: Path, domain: int, prefix: str, lockstep: bool, seconds: float, tmp: Path) -> subprocess.Popen[str]:
    cfg = {"policy_node": {
        "policy": str(policy), "transport": "cyclone", "domain_id": domain, "lockstep": lockstep,
        "soft_start_s": 0.0, "max_slew_rad": 0.0, "status_hz": 5.0, "node_name": "bench_policy_node",
        "timeouts": {"reference_s": 1.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0},
        "topics": {k: f"{prefix}/{k}" for k in ("reference", "reference_window", "object_pose", "joint_states",
                                                "odom", "contacts", "pd_targets", "status")},
    }}
    path = tmp / f"node_{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("CYCLONEDDS_URI", None)
    return subprocess.Popen([sys.executable, "-m", "intermimic_policy.ros.policy_node", "--config", str(path),
                             "--duration", str(seconds + 30), "--log-level", "WARNING"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def measure(rate: float, mode: str, seconds: float, policy: Path, tmp: Path) -> dict[str, float]:
    domain = 100 + (os.getpid() + int(rate) + (7 if mode == "timer" else 0)) % 120
    prefix = f"/bench{uuid.uuid4().hex[:8]}"
    ticks = int(seconds * rate)
    motion = synthetic_motion(ticks + LOOKAHEAD + 40, rate)
    proc = run_node(policy, domain, prefix, mode == "lockstep", seconds, tmp)
    driver = Driver(domain, prefix, motion)
    period = 1.0 / rate
    dt_ns = round(1e9 / rate)
    out: dict[str, float] = {}
    try:
        if not driver.wait_matched(60.0):
            log = proc.stdout.read() if proc.poll() is not None and proc.stdout is not None else ""
            raise RuntimeError(f"policy node did not come up (exit {proc.poll()}): {log}")
        for k in range(LOOKAHEAD):
            driver.ref.publish(driver.frames.frame(k))
        sent: dict[int, float] = {}
        missed = 0
        start = time.perf_counter() + 0.5
        for k in tqdm(range(ticks), desc=f"{mode} {rate:g} Hz", unit="tick", leave=False, mininterval=2.0):
            due = start + k * period
            while (now := time.perf_counter()) < due:
                driver.node.spin_once(min(0.002, due - now))
            if mode == "lockstep" and k > 0 and (k - 1) * dt_ns not in driver.received:
                missed += 1
            sent[k * dt_ns] = time.perf_counter()
            driver.ref.publish(driver.frames.frame(k + LOOKAHEAD))
            driver.publish_state(k, (k + 1) * dt_ns if mode == "lockstep" else time.time_ns())
        driver.node.spin(timeout_s=0.3)  # the last answers and a status of the running node
        status = dict(driver.status)
        if mode == "lockstep":
            lat = np.array([(driver.received[s + dt_ns] - t) * 1e3 for s, t in sent.items()
                            if s + dt_ns in driver.received])
            out.update(latency_ms_p50=float(np.median(lat)), latency_ms_p99=float(np.percentile(lat, 99)),
                       latency_ms_max=float(lat.max()), answered=float(len(lat)), ticks=float(ticks),
                       missed_ticks=float(missed + ticks - len(lat)))
        else:
            arr = np.array(driver.arrivals)
            arr = arr[(arr > start + 1.0) & (arr < start + ticks * period)]  # steady state only
            dts = np.diff(arr)
            out.update(interval_ms_mean=float(dts.mean() * 1e3), jitter_ms_std=float(dts.std() * 1e3),
                       jitter_ms_p99=float(np.percentile(np.abs(dts - period), 99) * 1e3),
                       missed_ticks=float(np.sum(dts > 1.5 * period)), ticks=float(len(dts) + 1))
        s = status
        out.update(node_latency_ms_p50=float(s.get("latency_ms_p50", "nan")),
                   node_latency_ms_p99=float(s.get("latency_ms_p99", "nan")),
                   node_missed_ticks=float(s.get("missed_ticks", "nan")))
    finally:
        driver.node.destroy()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time per rate and mode")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 50.0])
    parser.add_argument("--modes", nargs="+", choices=("lockstep", "timer"), default=["lockstep", "timer"])
    args = parser.parse_args()
    from intermimic_policy.sim.env_config import HOIEnvConfig
    from training.export import export_random

    with tempfile.TemporaryDirectory(prefix="bench_policy_node_") as d:
        tmp = Path(d)
        for rate in args.rates:
            policy = tmp / f"teacher_{rate:g}hz.onnx"
            # physics stays a whole multiple of the control rate (the contract refuses anything else)
            env = HOIEnvConfig(control_hz=rate, physics_hz=rate * max(1, round(240.0 / rate)))
            export_random("teacher", policy, env_config=env)
            for mode in args.modes:
                r = measure(rate, mode, args.seconds, policy, tmp)
                figures = "  ".join(f"{k} {v:g}" if k in ("ticks", "answered") or "missed" in k else f"{k} {v:.3f}"
                                    for k, v in r.items())
                verdict = ""
                if mode == "lockstep":
                    ok = r["latency_ms_p99"] <= TARGET_P99_MS and r["missed_ticks"] == 0
                    verdict = f"  [{'meets' if ok else 'misses'} p99 <= {TARGET_P99_MS} ms, no missed tick]"
                print(f"teacher {rate:g} Hz {mode:8s} {args.seconds:g} s: {figures}{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
