"""``intermimic retarget CLIP... --robot g1 --out DIR [--json REPORT.json]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from intermimic_policy.atomic import atomic_output
from intermimic_policy.errors import IntermimicError


def _retarget(args: argparse.Namespace) -> int:
    from intermimic_policy.retarget.run import retarget_files

    clips = [Path(c) for c in args.clips]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise IntermimicError(f"retarget: no such clip file(s): {', '.join(missing)}")
    report = retarget_files(clips, args.robot, args.out, plots=not args.no_plots, progress=not args.quiet)
    if args.json:
        with atomic_output(args.json) as handle:
            handle.write(json.dumps(report, indent=2).encode())
    o = report["overall"]
    print(f"{o['clips']} clips, {o['frames']} frames on {report['robot']}: {o['frames_per_s']} frames/s (one core), "
          f"contact error {o['contact_error_cm']} cm (source {o['source_contact_error_cm']} cm), "
          f"foot skate {o['foot_skate_cm_s']} cm/s, penetration {o['penetration_cm']} cm, "
          f"joint limit violations {o['joint_limit_violations']}")
    print(f"robot motions and report: {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "retarget", help="retarget HOI clips to a robot URDF (hands on the object, feet planted)",
        description="Per-frame IK (Pinocchio) of SMPL-X HOI clips onto a robot described by "
                    "config/robots/<robot>.yaml: writes one robot motion .npz per clip, a plot per clip "
                    "and report.json (contact error beside the source's, foot skate, penetration, "
                    "joint limit violations, frames/s).",
    )
    p.add_argument("clips", nargs="+", help="clip files (.pt InterMimic or .npz)")
    p.add_argument("--robot", default="g1", help="robot name (config/robots/NAME.yaml) or a YAML path")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--no-plots", action="store_true", help="skip the per-clip PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_retarget)
