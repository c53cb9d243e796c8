"""Soak: the closed loop (streamer -> policy node -> sim bridge, three processes over Cyclone DDS)
runs for a long time; memory growth per node, missed ticks and latency are reported.

Runs ``intermimic launch sim_hoi`` as a child process (real-time mode by default, the reference
looping so the run never ends on a clamped last frame), and every ``--interval`` seconds samples
each node's resident memory from ``/proc`` and the nodes' status messages (tick count, missed
ticks, the policy node's latency p50/p99 over its last 2048 ticks, any counter named like
``overrun``/``deadline``). Writes ``soak.json`` (the samples and the summary) and ``soak.png``.

    python benchmarks/bench_soak.py [--duration 1800] [--policy FILE.onnx] [--out out/soak]

RSS growth is measured from the end of a warm-up (default 10 % of the run, at least 30 s, counted
from the bridge's first tick) to the end; ``rss_slope_mb_per_h`` is the least-squares slope over the samples after warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from intermimic_policy.jsonio import dump_json
from intermimic_policy.ros.launcher import NODES, StatusMonitor, default_config_path
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray

ROOT = Path(__file__).resolve().parents[1]
STATUS_TOPICS = {"policy_node": "/intermimic/status", "sim_bridge": "/intermimic/sim_bridge/status",
                 "motion_streamer": "/intermimic/motion_streamer/status"}
DEADLINE_WORDS = ("missed", "overrun", "deadline", "stale", "safe_hold", "watchdog")


def _children(root_pid: int) -> dict[int, str]:
    """Descendant pids of ``root_pid`` that run a node module, with the node's name."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: dict[int, str] = {}
    frontier = [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent != pid:
                continue
            frontier.append(child)
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            for spec in NODES:
                if spec.module in cmdline:
                    found[child] = spec.name
    return found


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def soak_config(out: Path, loop: bool) -> Path:
    """config/sim_hoi.yaml with the reference looping (the example clip is a few seconds long)."""
    doc = yaml.safe_load(default_config_path().read_text())
    doc["common"]["loop"] = loop
    path = out / "sim_hoi_soak.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def summarize(samples: list[dict[str, Any]], report: dict[str, Any], duration: float, warmup: float) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    ticking = next((s["t"] for s in samples if s["status"].get("sim_bridge", {}).get("ticks")), 0.0)
    warmup = ticking + warmup  # the nodes' start-up (imports, model load) is not growth
    for spec in NODES:
        points = [(s["t"], s["rss_mb"][spec.name]) for s in samples if s["rss_mb"].get(spec.name) is not None]
        after = [(t, r) for t, r in points if t >= warmup] or points[-2:]
        if not points:
            nodes[spec.name] = None
            continue
        t, r = np.array(after).T if len(after) > 1 else (np.array([0.0, 1.0]), np.array([after[0][1]] * 2))
        slope = float(np.polyfit(t, r, 1)[0] * 3600.0) if len(after) > 2 else None
        nodes[spec.name] = {"rss_mb_start": points[0][1], "rss_mb_after_warmup": float(r[0]),
                            "rss_mb_end": points[-1][1], "rss_mb_max": max(p[1] for p in points),
                            "rss_growth_mb": float(r[-1] - r[0]), "rss_slope_mb_per_h": slope}
    p99_windows = [s["status"].get("policy_node", {}).get("latency_ms_p99") for s in samples]
    p99_windows = [v for v in p99_windows if v is not None]
    counters: dict[str, Any] = {}
    for name, values in (report.get("policy_node_status") or {}).items():
        if any(w in name for w in DEADLINE_WORDS):
            counters[f"policy_node.{name}"] = _number(values) if _number(values) is not None else values
    for name, value in (report.get("bridge") or {}).items():
        if any(w in name for w in DEADLINE_WORDS):
            counters[f"sim_bridge.{name}"] = value
    ticks = report.get("ticks") or 0
    missed = report.get("missed_ticks") or 0
    return {
        "duration_s": duration, "warmup_s": warmup, "ok": report.get("ok"), "error": report.get("error"),
        "ticks": ticks, "missed_ticks": missed, "missed_ratio": missed / ticks if ticks else None,
        "policy_latency_ms_p50_final": report.get("latency_ms_p50"),
        "policy_latency_ms_p99_final": report.get("latency_ms_p99"),
        "policy_latency_ms_p99_worst_window": max(p99_windows) if p99_windows else None,
        "round_trip_ms_p50": report.get("round_trip_ms_p50"), "round_trip_ms_p99": report.get("round_trip_ms_p99"),
        "real_time_factor": (report.get("bridge") or {}).get("real_time_factor"),
        "deadline_counters": counters, "nodes": nodes,
    }


def plot(samples: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    t = np.array([s["t"] for s in samples]) / 60.0
    for spec in NODES:
        axes[0].plot(t, [s["rss_mb"].get(spec.name) or np.nan for s in samples], label=spec.name)
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend()
    for key, label in (("latency_ms_p50", "policy p50"), ("latency_ms_p99", "policy p99")):
        axes[1].plot(t, [s["status"].get("policy_node", {}).get(key) or np.nan for s in samples], label=label)
    axes[1].set_ylabel("latency (ms, last 2048 ticks)")
    axes[1].legend()
    for key in ("ticks", "missed_ticks"):
        axes[2].plot(t, [s["status"].get("sim_bridge", {}).get(key) or np.nan for s in samples], label=key)
    axes[2].set_ylabel("bridge ticks")
    axes[2].set_xlabel("wall time (min)")
    axes[2].legend()
    fig.suptitle(f"soak {summary['duration_s']:g} s: missed {summary['missed_ticks']}/{summary['ticks']} ticks, "
                 f"p99 {summary['policy_latency_ms_p99_final']} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=1800.0, help="simulated seconds (real time unless --lockstep)")
    p.add_argument("--policy", help="exported ONNX policy (default: a random-init teacher)")
    p.add_argument("--clip", help="reference clip (default: the bundled example)")
    p.add_argument("--lockstep", action="store_true", help="lockstep instead of real time")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=None, help="seconds excluded from growth (default 10%%, >= 30)")
    p.add_argument("--out", default="out/soak", help="folder for soak.json, soak.png and the node logs")
    p.add_argument("--domain-id", type=int, default=150 + os.getpid() % 50)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = args.policy
    if policy is None:
        from training.export import export_random

        policy = str(out / "teacher_random.onnx")
        export_random("teacher", policy, seed=0)
    warmup = args.warmup if args.warmup is not None else max(30.0, 0.1 * args.duration)
    report_path = out / "launch_report.json"
    report_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "intermimic_policy.cli", "launch", "sim_hoi", "--config",
            str(soak_config(out, loop=True)), "--policy", policy, "--duration", str(args.duration),
            "--report", str(report_path), "--log-dir", str(out / "logs"), "--domain-id", str(args.domain_id),
            "--transport", "cyclone", "--quiet", "--lockstep" if args.lockstep else "--no-lockstep"]
    argv += ["--clip", args.clip] if args.clip else ["--example"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    from intermimic_policy.ros.transport import make_node

    monitor = StatusMonitor()
    node = make_node("soak_monitor", backend="cyclone", domain_id=args.domain_id)
    for name, topic in STATUS_TOPICS.items():
        node.create_subscription(topic, DiagnosticArray, monitor.callback(name), "reliable")
    launcher = subprocess.Popen(argv, env=env, start_new_session=True)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    next_sample = started
    pids: dict[int, str] = {}
    try:
        while launcher.poll() is None:
            node.spin_once(0.2)
            now = time.monotonic()
            if now < next_sample:
                continue
            next_sample += args.interval
            pids.update(_children(launcher.pid))
            rss = {name: _rss_mb(pid) for pid, name in pids.items()}
            status = {name: {k: _number(v) for k, v in values.items() if _number(v) is not None}
                      for name, values in monitor.values.items()}
            samples.append({"t": now - started, "rss_mb": rss, "status": status})
            bridge = status.get("sim_bridge", {})
            print(f"[{now - started:7.0f} s] ticks {bridge.get('ticks')} missed {bridge.get('missed_ticks')} "
                  f"p99 {status.get('policy_node', {}).get('latency_ms_p99')} ms  RSS "
                  + " ".join(f"{k} {v:.0f}" for k, v in rss.items() if v is not None) + " MB", flush=True)
    except KeyboardInterrupt:
        os.killpg(launcher.pid, signal.SIGINT)
        launcher.wait(timeout=30)
    finally:
        node.destroy()
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"ok": False,
                                                                                 "error": "no launch report"}
    summary = summarize(samples, report, args.duration, warmup)
    dump_json(out / "soak.json", {"summary": summary, "samples": samples, "launch_report": report})
    plot(samples, summary, out / "soak.png")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
