"""``intermimic launch sim_hoi``: the closed loop (streamer, policy node, sim bridge) without ROS 2.

    intermimic launch sim_hoi [--clip CLIP | --example] [--policy FILE.onnx] [--duration S] [--robot g1]
        [--lockstep] [--report FILE.json] [--record FILE.npz] [--config config/sim_hoi.yaml]

Starts the three nodes as processes over Cyclone DDS (loopback), waits ``--duration`` sim
seconds, stops them and prints (and writes) the report. ``--via ros2`` runs
``ros2 launch intermimic sim_hoi.launch.py`` instead (ROS 2 installed; no report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from intermimic_policy.errors import IntermimicError


def _fmt(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _launch(args: argparse.Namespace) -> int:
    from intermimic_policy.ros.launcher import LaunchOptions, ros2_launch_argv, run_sim_hoi

    if args.duration is not None and not args.duration > 0:
        raise IntermimicError(f"launch: --duration must be positive, got {args.duration}")
    options = LaunchOptions(
        config=args.config, clip=args.clip, example=args.example, policy=args.policy, duration_s=args.duration,
        lockstep=args.lockstep, report=args.report, record=args.record, domain_id=args.domain_id,
        transport=args.transport, start_offset=args.start_offset, log_dir=args.log_dir, timeout_s=args.timeout,
        progress=not args.quiet, perturb=tuple(args.perturb), robot=args.robot,
    )
    if args.via == "ros2":
        if shutil.which("ros2") is None:
            raise IntermimicError("launch --via ros2: the ros2 command is not on PATH (source your ROS 2 setup)")
        argv = ros2_launch_argv(options)
        os.execvp(argv[0], argv)
    report = run_sim_hoi(options)
    if not report["ok"] and not report["interrupted"]:
        raise IntermimicError(f"launch sim_hoi: {report['error']}"
                              + (f" (report: {args.report})" if args.report else ""))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"sim_hoi: {report['ticks']} ticks ({report['missed_ticks']} missed), "
              f"E_h {_fmt(report['E_h_cm'])} cm, E_o {_fmt(report['E_o_cm'])} cm, "
              f"policy latency p50 {_fmt(report['latency_ms_p50'])} ms / p99 {_fmt(report['latency_ms_p99'])} ms, "
              f"round trip p50 {_fmt(report['round_trip_ms_p50'])} ms, "
              f"safe-hold events {report['safe_hold_events']}; logs in {report['log_dir']}")
        print(f"success: {str(report.get('success')).lower()} (sim {_fmt(report.get('duration_s'))} s of a "
              f"{_fmt(report.get('clip_duration_s'))} s clip, object lift {_fmt(report.get('object_lift_cm'))} cm, "
              f"reference {_fmt(report.get('reference_lift_cm'))} cm)")
        if args.report:
            print(f"report: {args.report}")
    return 130 if report["interrupted"] else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch", help="run a launch (sim_hoi: streamer + policy node + sim bridge) without ROS 2",
        description="Start the motion streamer, the policy node and the simulation bridge as processes over "
                    "DDS (loopback), run for --duration sim seconds, stop them cleanly and report ticks, "
                    "missed ticks, latency, E_h/E_o and safe-hold events.")
    p.add_argument("target", choices=["sim_hoi"], help="the launch to run")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--clip", help="reference clip file (.pt InterMimic or .npz)")
    src.add_argument("--example", action="store_true", help="use the bundled example clip (no dataset needed)")
    p.add_argument("--policy", help="exported ONNX policy (default: common.policy of the config)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of sim time to run (lockstep: sim seconds); default: until Ctrl-C")
    p.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=None,
                   help="the simulation waits for each tick's targets (deterministic)")
    p.add_argument("--report", help="write the report JSON here")
    p.add_argument("--record", help="the bridge writes per-tick E_h/E_o and the trajectory here (.npz)")
    p.add_argument("--config", help="node parameters (default: config/sim_hoi.yaml)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain (default: config, $ROS_DOMAIN_ID, 0)")
    p.add_argument("--transport", choices=("auto", "cyclone", "rclpy"), default=None)
    p.add_argument("--start-offset", type=int, default=None, help="first clip frame")
    p.add_argument("--log-dir", help="folder for node logs and the resolved config (default: a temp folder)")
    p.add_argument("--timeout", type=float, default=None,
                   help="wall-time limit in seconds (default: 120 + 30 x duration)")
    p.add_argument("--via", choices=("processes", "ros2"), default="processes",
                   help="processes (default, no ROS 2 needed) or ros2 (exec ros2 launch)")
    p.add_argument("--perturb", action="append", default=[], metavar="KEY=VALUE",
                   help="robustness setting for the simulation, repeatable: object_mass, object_friction, "
                        "floor_friction (scales), action_delay (ticks)")
    p.add_argument("--robot", help="run a robot (e.g. g1: config/robots/g1.yaml) instead of the SMPL-X humanoid; "
                                   "--clip is then its retargeted clip and --policy a policy for it")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_launch)
