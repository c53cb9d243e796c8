"""Retargeting speed and quality over a whole clip set (default: every OMOMO_new clip).

Times the per-frame IK of every clip on one core (CPU time of this process with one BLAS/OpenMP
thread, so other jobs on the machine do not count; wall time is printed too) and prints the report
figures per clip and overall: frames/s, contact error beside the source's, foot skate, penetration
(floor / object), joint limit violations. Needs ``INTERMIMIC_DATA``.

    OMP_NUM_THREADS=1 python benchmarks/bench_retarget.py [--robot g1] [--clips GLOB] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from intermimic_policy.retarget.run import retarget_files  # noqa: E402

COLUMNS = ("frames", "frames_per_s", "contact_error_cm", "source_contact_error_cm", "foot_skate_cm_s",
           "source_foot_skate_cm_s", "floor_penetration_cm", "object_penetration_cm", "joint_limit_violations")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robot", default="g1")
    ap.add_argument("--clips", default="motions/OMOMO_new/*.pt", help="glob under $INTERMIMIC_DATA (or absolute)")
    ap.add_argument("--out", default=None, help="also write robot motions and plots here")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args()
    data = os.environ.get("INTERMIMIC_DATA")
    if Path(args.clips).is_absolute():
        clips = sorted(Path("/").glob(args.clips.lstrip("/")))
    elif data:
        clips = sorted(Path(data).glob(args.clips))
    else:
        print("bench_retarget: set INTERMIMIC_DATA", file=sys.stderr)
        return 2
    if not clips:
        print(f"bench_retarget: no clips match {args.clips}", file=sys.stderr)
        return 2
    report = retarget_files(clips, args.robot, args.out or ".", plots=args.out is not None, write=args.out is not None)
    print(f"{'clip':24s} " + " ".join(f"{c[:14]:>14s}" for c in COLUMNS))
    for name, row in report["clips"].items():
        print(f"{name:24s} " + " ".join(f"{row[c]!s:>14s}" for c in COLUMNS))
    print("deepest object penetration per clip (link @ frame):")
    for name, row in report["clips"].items():
        if row.get("object_penetration_frame", -1) >= 0:
            print(f"  {name:24s} {row['object_penetration_cm']:6.2f} cm  {row['object_penetration_link']} @ {row['object_penetration_frame']}")
    o = report["overall"]
    print(f"{'OVERALL':24s} " + " ".join(f"{o.get(c)!s:>14s}" for c in COLUMNS))
    print(f"frames/s on one core (CPU time of the IK): {o['frames_per_s']} (with the targets: "
          f"{o['frames_per_s_with_targets']}), wall: {o['frames_per_wall_s']}; "
          f"max contact error {o['contact_error_max_cm']} cm, max penetration {o['penetration_cm']} cm")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
