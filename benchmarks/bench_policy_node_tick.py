"""Where the policy node's tick time goes: the same node, driver and messages in ONE process,
ticked back to back ("hot"), paced at the control period ("paced", as a robot drives it) and paced
with the policy run once on the last observation just before each state ("prewarmed": its 7 MB
of weights back in cache, which tells the weights' share of the cold cost) and paced by busy-waiting the period ("spun":
the CPU never idles, so what a sleeping CPU loses shows apart from what other work evicts).

Why: the node's tick (state in -> targets published) measured ~1.5-1.9 ms p50 when the node runs
as its own process but ~1 ms in one process. This runs the node exactly as ``policy_node`` does
(``PolicyNode`` on Cyclone DDS, the shipped policy, a real OMOMO clip through the benchmark's
``Driver``) in this process and reports, per pacing, the tick's wall time, its CPU time
(``thread_time``) and how many ticks were switched out. If paced ticks are as slow as the own
process while hot ticks are not, the gap is the cost of a cold start after sleeping a period
(caches, TLB, an idle vCPU waking), not the process boundary or the code.

    python benchmarks/bench_policy_node_tick.py [--ticks 1500] [--rate 50] [--profile out.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policy_node_latency import SHIPPED_POLICY, TOPICS, Driver, prepare  # noqa: E402

from intermimic_policy.ros.node_config import load_node_config  # noqa: E402
from intermimic_policy.ros.policy_node import PolicyNode, freeze_startup_objects  # noqa: E402


class StageTimer:
    """Wraps one of the controller's per-tick calls and keeps its wall times (ms)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.ms: list[float] = []

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return out


STAGES = ("kinematics", "observation", "policy", "targets_from_actions")


def time_stages(node: PolicyNode) -> dict[str, StageTimer]:
    """Per-stage timers on the node's controller (the kinematics run inside the observation)."""
    ctl = node.controller
    timers = {"observation": StageTimer(ctl.observation), "policy": StageTimer(ctl.policy),
              "targets_from_actions": StageTimer(ctl.targets_from_actions),
              "kinematics": StageTimer(ctl.kinematics.compute)}
    c: Any = ctl  # the timers stand in for its methods and policy
    c.observation, c.policy = timers["observation"], timers["policy"]
    c.targets_from_actions = timers["targets_from_actions"]
    c.kinematics.compute = timers["kinematics"]
    return timers


def run(node: PolicyNode, driver: Driver, rate: float, ticks: int, paced: bool, k0: int,
        prewarm: bool = False, spin: bool = False) -> dict[str, float]:
    period = 1.0 / rate
    node.stats.tick_ms.clear()
    node.stats.tick_cpu_ms.clear()
    blocked0, preempted0 = node.stats.blocked_ticks, node.stats.preempted_ticks
    for i in range(ticks):
        k = k0 + i
        if prewarm and node.controller.last_observation is not None:
            # the policy once on the last observation (output dropped) just before the state
            # goes out: its weights are back in cache when the real tick runs
            node.controller.policy(node.controller.last_observation)
        driver.publish_frame(k + 20)
        stamp = int((k + 1) * period * 1e9)
        driver.publish_state(k, stamp)
        end = time.monotonic() + 0.5
        while node.last_answered != stamp and time.monotonic() < end:
            node.spin_once(0.01)
        driver.node.spin_once(0.0)
        if spin:  # busy-wait the period: the CPU never idles between ticks
            until = time.perf_counter() + period
            while time.perf_counter() < until:
                pass
        elif paced:
            time.sleep(period)
    t, c = np.asarray(node.stats.tick_ms), np.asarray(node.stats.tick_cpu_ms)
    return {"ticks": float(len(t)), "tick_ms_p50": float(np.median(t)), "tick_ms_p99": float(np.percentile(t, 99)),
            "tick_cpu_ms_p50": float(np.median(c)), "tick_cpu_ms_p99": float(np.percentile(c, 99)),
            "blocked_ticks": float(node.stats.blocked_ticks - blocked0),
            "preempted_ticks": float(node.stats.preempted_ticks - preempted0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=1500)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--policy", default=str(SHIPPED_POLICY))
    p.add_argument("--clip", default="OMOMO_new/sub2_largetable_000.pt")
    p.add_argument("--modes", nargs="+", default=["hot", "paced", "prewarmed", "spun"],
                   choices=("hot", "paced", "prewarmed", "spun"))
    p.add_argument("--profile", default="", help="cProfile (tottime) of of the paced ticks to this file")
    p.add_argument("--stages", action="store_true",
                   help="also time the tick's stages (kinematics, observation, policy, targets) per mode")
    p.add_argument("--numpy-observation", action="store_true",
                   help="the numpy observation path instead of the compiled one (compiled_observation: false)")
    p.add_argument("--json", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        setup = prepare(args.rate, argparse.Namespace(random_teacher=False, policy=args.policy, clip=args.clip,
                                                      duration=(len(args.modes) + 1) * args.ticks / args.rate + 10),
                         tmp)
        domain = 100 + os.getpid() % 120
        prefix = f"/tick{uuid.uuid4().hex[:8]}"
        cfg = {"policy_node": {
            "policy": str(setup.policy), "transport": "cyclone", "domain_id": domain, "lockstep": True,
            "control_hz": args.rate, "physics_hz": setup.physics_hz, "objects": setup.objects,
            "soft_start_s": 0.0, "max_slew_rad": 0.0, "status_hz": 5.0, "node_name": "bench_tick_node",
            "compiled_observation": not args.numpy_observation,
            "timeouts": {"reference_s": 1.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0},
            "topics": {k: f"{prefix}/{k}" for k in TOPICS}}}
        path = tmp / "node.yaml"
        path.write_text(yaml.safe_dump(cfg))
        config = load_node_config(path)
        out: dict[str, dict[str, float]] = {}
        with PolicyNode(config) as node:
            driver = Driver(domain, prefix, setup.motion)
            try:
                if not driver.wait_matched(60.0):
                    raise SystemExit("driver and node did not match")
                for k in range(20):
                    driver.publish_frame(k)
                freeze_startup_objects()
                run(node, driver, args.rate, 100, False, 0)  # warm-up
                timers = time_stages(node) if args.stages else {}
                k0 = 100
                for mode in args.modes:
                    profiler = None
                    for timer in timers.values():
                        timer.ms.clear()
                    if args.profile and mode == "paced":
                        import cProfile

                        profiler = cProfile.Profile()
                        profiler.enable()
                    out[mode] = run(node, driver, args.rate, args.ticks, mode != "hot", k0, prewarm=mode == "prewarmed",
                                    spin=mode == "spun")
                    if profiler is not None:
                        profiler.disable()
                        import io
                        import pstats

                        text = io.StringIO()
                        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
                        Path(args.profile).write_text(text.getvalue())
                    for name, timer in timers.items():
                        ms = np.asarray(timer.ms)
                        out[mode][f"{name}_ms_p50"] = float(np.median(ms))
                        out[mode][f"{name}_ms_p99"] = float(np.percentile(ms, 99))
                    k0 += args.ticks
                    print(mode, " ".join(f"{k} {v:.3f}" for k, v in out[mode].items()), flush=True)
            finally:
                driver.node.destroy()
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": args.rate, "load": os.getloadavg(), "figures": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
