"""Where a lockstep round trip goes: the policy node and a driver with trace points, over DDS.

The latency benchmark (``bench_policy_node_latency.py``) gives the round trip and the floor; this
script splits one run's round trip into its stages, per tick, with ``time.perf_counter`` stamps
taken in both processes (CLOCK_MONOTONIC, the same clock across processes on Linux):

  driver publishes the four state messages -> the node receives and parses them (JointState,
  Odometry, PoseStamped, ContactState; each a DDS take, a deserialisation and a parse) -> tick:
  observation, then inference and the targets' checks -> PDTargets published -> the driver's
  callback sees it.

The node runs as in the benchmark (its own process, SCHED_FIFO 20, the given policy, lockstep at
30 Hz); trace points are wrapped around its methods at start-up, so the node's code is unchanged
and each point costs ~1 us. Results are printed as p50/p90/p99 per stage.

    INTERMIMIC_DATA=... python benchmarks/trace_policy_node.py [--seconds 60] [--policy F.onnx]
"""

from __future__ import annotations

import argparse
import atexit
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_policy_node_latency as bench  # noqa: E402

STAGES = (
    ("driver publishes the 4 state messages", "sent", "driver_joints_out"),
    ("JointState reaches the node's callback", "driver_joints_out", "joints_in"),
    ("JointState parsed", "joints_in", "joints_parsed"),
    ("other inputs taken and parsed, tick starts", "joints_parsed", "tick0"),
    ("observation", "tick0", "obs_done"),
    ("inference, targets, clamps", "obs_done", "tick1"),
    ("PDTargets published (serialise + write)", "pub0", "pub1"),
    ("PDTargets reaches the driver's callback", "pub1", "received"),
    ("round trip", "sent", "received"),
)


def run_traced_node(out: str, argv: list[str]) -> int:
    """The policy node (``policy_node.main``) with trace points; writes them to ``out`` as json."""
    from intermimic_policy.ros import policy_core, policy_node
    from intermimic_policy.ros.msgs import ns_from_time
    from intermimic_policy.ros.transport import cyclone

    events: list[tuple[int, str, float]] = []  # (stamp or -1, point, time)
    clock = time.perf_counter

    def wrap(cls: Any, name: str, before: str | None, after: str | None, stamp_arg: int | None = None) -> None:
        inner = getattr(cls, name)

        def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            stamp = -1 if stamp_arg is None else int(args[stamp_arg])
            if before:
                events.append((stamp, before, clock()))
            result = inner(self, *args, **kwargs)
            if after:
                events.append((stamp, after, clock()))
            return result
        setattr(cls, name, traced)

    node_cls, ctl = policy_node.PolicyNode, policy_core.PolicyController
    inner_js = node_cls._on_joint_state

    def on_joint_state(self: Any, msg: Any) -> None:
        events.append((ns_from_time(msg.header.stamp), "joints_in", clock()))
        inner_js(self, msg)
    node_cls._on_joint_state = on_joint_state  # type: ignore[method-assign]
    wrap(ctl, "on_joint_state", None, "joints_parsed")
    wrap(ctl, "tick", "tick0", "tick1", stamp_arg=1)
    wrap(ctl, "observation", None, "obs_done")
    inner_pub = cyclone.CyclonePublisher.publish

    def publish(self: Any, msg: Any) -> None:
        if type(msg).__name__ != "PDTargets":
            return inner_pub(self, msg)
        events.append((-1, "pub0", clock()))
        inner_pub(self, msg)
        events.append((-1, "pub1", clock()))
    cyclone.CyclonePublisher.publish = publish  # type: ignore[method-assign]
    atexit.register(lambda: Path(out).write_text(json.dumps(events)))
    return policy_node.main(argv)


def per_tick(driver: dict[str, Any], events: list[tuple[int, str, float]]) -> dict[int, dict[str, float]]:
    """Each stamp's points: the node's (points without a stamp belong to the newest stamped one)."""
    ticks: dict[int, dict[str, float]] = {}
    current = None
    for stamp, point, t in events:
        if stamp != -1:
            current = stamp
        if current is not None:
            ticks.setdefault(current, {}).setdefault(point, t)
    for stamp, sent, joints_out in driver["sent"]:
        tick = ticks.setdefault(stamp, {})
        tick["sent"], tick["driver_joints_out"] = sent, joints_out
        if str(stamp) in driver["received"]:
            tick["received"] = driver["received"][str(stamp)]
    return ticks


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--node":
        return run_traced_node(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--policy", default=str(bench.REPO / "intermimic_policy/assets/policies/example_teacher_int8.onnx"))
    p.add_argument("--clip", default=bench.DEFAULT_CLIP)
    p.add_argument("--json", default="", help="also write the per-stage figures here")
    args = p.parse_args()
    bench.apply_rt_priority(20)
    rate = 30.0
    with tempfile.TemporaryDirectory(prefix="trace_policy_node_") as d:
        tmp = Path(d)
        setup = bench.prepare(rate, argparse.Namespace(policy=args.policy, random_teacher=False, clip=args.clip,
                                                       duration=args.seconds), tmp)
        domain, prefix = 100 + (uuid.uuid4().int % 100), f"/trace{uuid.uuid4().hex[:8]}"
        cfg = {"policy_node": {
            "policy": str(setup.policy), "transport": "cyclone", "domain_id": domain, "lockstep": True,
            "control_hz": rate, "physics_hz": setup.physics_hz, "objects": setup.objects, "rt_priority": 20,
            "soft_start_s": 0.0, "max_slew_rad": 0.0, "status_hz": 5.0, "node_name": "trace_policy_node",
            "timeouts": {"reference_s": 1.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0},
            "topics": {k: f"{prefix}/{k}" for k in bench.TOPICS}}}
        (tmp / "node.yaml").write_text(yaml.safe_dump(cfg))
        trace = tmp / "node_trace.json"
        proc = subprocess.Popen([sys.executable, __file__, "--node", str(trace), "--config", str(tmp / "node.yaml"),
                                 "--duration", str(args.seconds + 30), "--log-level", "ERROR"], env=bench._env())
        driver = bench.Driver(domain, prefix, setup.motion)
        sent: list[tuple[int, float, float]] = []
        publish_state = driver.publish_state

        def traced_publish_state(k: int, stamp_ns: int) -> None:
            t = time.perf_counter()
            publish_state(k, stamp_ns)
            sent.append((stamp_ns, t, time.perf_counter()))
        driver.publish_state = traced_publish_state  # type: ignore[method-assign]
        try:
            if not driver.wait_matched(90.0):
                raise SystemExit(f"policy node did not come up (exit {proc.poll()})")
            bench.drive(driver, rate, "lockstep", args.seconds, "traced lockstep 30 Hz")
            received = {str(k): v for k, v in driver.received.items()}
        finally:
            driver.node.destroy()
            proc.terminate()
            proc.wait(30)
        events = json.loads(trace.read_text())
    ticks = per_tick({"sent": sent, "received": received}, events)
    warm = int(rate)
    rows = [ticks[s] for s, _, _ in sent[warm:] if all(k in ticks[s] for _, a, b in STAGES for k in (a, b))]
    figures = {}
    print(f"{len(rows)} ticks traced ({args.seconds:g} s lockstep at {rate:g} Hz, {Path(args.policy).name})")
    for name, a, b in STAGES:
        ms = np.array([(r[b] - r[a]) * 1e3 for r in rows])
        figures[name] = {q: float(np.percentile(ms, q)) for q in (50, 90, 99)}
        print(f"{name:45s} p50 {figures[name][50]:6.3f}  p90 {figures[name][90]:6.3f}  p99 {figures[name][99]:6.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"ticks": len(rows), "stages_ms": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
