"""Closed-loop speed over DDS: motion streamer -> policy node -> sim bridge as three processes.

Runs ``intermimic launch sim_hoi`` (the no-ROS launcher, Cyclone DDS on loopback) on the bundled
example clip with an untrained exported teacher (the network's cost is a trained one's), and
prints for each mode:

* lockstep: sim ticks per wall second (the loop's throughput when the simulation waits for every
  tick's targets), the policy node's latency (state in -> targets out) and the bridge's round
  trip (state published -> targets received), p50 / p99;
* real time (30 Hz on the wall clock): the same latencies and the share of ticks that found no
  fresh targets (missed ticks).

    python benchmarks/bench_closed_loop.py [--seconds 5] [--policy FILE.onnx] [--clip CLIP]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from intermimic_policy.ros.launcher import LaunchOptions, run_sim_hoi


def _fmt(x: object) -> str:
    return f"{x:8.2f}" if isinstance(x, (int, float)) else f"{x!s:>8}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="sim seconds per run")
    p.add_argument("--policy", help="exported ONNX policy (default: a random-init teacher)")
    p.add_argument("--clip", help="reference clip (default: the bundled example)")
    p.add_argument("--domain-id", type=int, default=90 + os.getpid() % 40)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_closed_loop_") as tmp:
        policy = args.policy
        if policy is None:
            from training.export import export_random

            policy = str(Path(tmp) / "teacher.onnx")
            export_random("teacher", policy, seed=0)
        print(f"{'mode':<10} {'ticks':>8} {'missed':>8} {'tick/s':>8} {'lat p50':>8} {'lat p99':>8} "
              f"{'rt p50':>8} {'rt p99':>8}   (latencies in ms)")
        for lockstep in (True, False):
            report = run_sim_hoi(LaunchOptions(
                clip=args.clip, example=args.clip is None, policy=policy, duration_s=args.seconds,
                lockstep=lockstep, domain_id=args.domain_id, transport="cyclone",
                log_dir=str(Path(tmp) / ("lockstep" if lockstep else "realtime")), progress=False))
            if not report["ok"]:
                print(f"run failed: {report['error']}")
                return 1
            bridge = report["bridge"]
            print(f"{'lockstep' if lockstep else 'real time':<10} {report['ticks']:>8} {report['missed_ticks']:>8} "
                  f"{_fmt(bridge['ticks'] / bridge['wall_time_s'])} {_fmt(report['latency_ms_p50'])} "
                  f"{_fmt(report['latency_ms_p99'])} {_fmt(report['round_trip_ms_p50'])} "
                  f"{_fmt(report['round_trip_ms_p99'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
