"""``intermimic eval`` and ``intermimic obs-layout``: evaluate a policy on clips; print the observation.

``eval`` takes clip files or folders (every clip inside), runs :func:`~.evaluate.evaluate`, prints
a per-clip table and the summary, and optionally writes the JSON report (atomically).
``obs-layout`` prints where every observation term sits in the flat vector.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from intermimic_policy.observation.spec import ObservationSpec, student_spec, teacher_spec
from intermimic_policy.sim.backends import BACKENDS
from intermimic_policy.sim.env_config import SKELETONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a policy on HOI clips (success, duration, E_h, E_o)",
        description="Run a policy closed-loop on HOI clips from frame 0 to the clip end or a failure; "
                    "print success, duration, E_h and E_o per clip and overall.")
    p.add_argument("clips", nargs="*", help="clip files (.pt/.npz) or folders of clips")
    p.add_argument("--example", action="store_true", help="evaluate on the bundled example clip (no file needed)")
    p.add_argument("--example-seed", type=int, default=0, metavar="N",
                   help="with --example: the clip variation (0: the bundled clip)")
    p.add_argument("--policy", default="pd-replay",
                   help="policy to evaluate: 'pd-replay' (no-learning baseline), an exported policy (.onnx), "
                        "a training checkpoint (.pt), or what another registered loader accepts")
    p.add_argument("--perturb", action="append", default=[], metavar="KEY=VALUE",
                   help="robustness setting, repeatable: object_mass, object_friction, floor_friction (scales), "
                        "action_delay (control steps), obs_noise (std), push (m/s kicks every push_interval_s)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--attempts", type=int, default=1, help="runs per clip (default 1)")
    p.add_argument("--backend", choices=BACKENDS, default="mujoco",
                   help="simulator: mujoco (CPU), warp (MuJoCo Warp, needs a GPU); isaacgym is NOT available "
                        "in this project (listed for upstream parity; choosing it fails with an explanation)")
    p.add_argument("--max-worlds", type=int, default=64, help="worlds simulated at once per object")
    p.add_argument("--threads", type=int, default=0, help="simulation threads (0: one per core)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skeleton", choices=SKELETONS, default="default",
                   help="humanoid: the default skeleton, or 'subject': one skeleton fitted to all the "
                        "clips (FK matches their bodies, feet on their floor; for clips of one subject)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_eval)

    q = subparsers.add_parser("obs-layout", help="print the observation layout (term, offset, start, size)",
                              description="Print where every observation term sits in the flat vector.")
    q.add_argument("--student", action="store_true", help="the Transformer student's 4-token spec (default: teacher)")
    q.add_argument("--json", action="store_true", help="print JSON (spec and layout) instead of a table")
    q.set_defaults(func=run_obs_layout)


def _clip_paths(args: list[str]) -> list[Path]:
    from intermimic_policy.motion.hoi_motion import MotionError
    from intermimic_policy.motion.io import find_motion_files

    out: list[Path] = []
    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            found = find_motion_files(p)
            if not found:
                raise MotionError(f"{p}: no clips (.pt/.npz) in this folder")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise MotionError(f"{p}: no such clip file or folder")
    return out


def use_assets_beside(paths: list[Path]) -> None:
    """Without INTERMIMIC_DATA / INTERMIMIC_OBJECTS, find the objects the way the dataset lays them
    out: an ``assets/objects`` folder in a parent of a clip (DATA/motions/SET/clip.pt ->
    DATA/assets/objects); found folders go to INTERMIMIC_OBJECTS for this process."""
    import os

    if os.environ.get("INTERMIMIC_DATA") or os.environ.get("INTERMIMIC_OBJECTS"):
        return
    found: list[str] = []
    for p in paths:
        for parent in p.resolve().parents:
            cand = parent / "assets" / "objects"
            if cand.is_dir():
                if str(cand) not in found:
                    found.append(str(cand))
                break
    if found:
        os.environ["INTERMIMIC_OBJECTS"] = os.pathsep.join(found)


def run_eval(args: argparse.Namespace) -> int:
    from intermimic_policy.errors import IntermimicError
    from intermimic_policy.motion.io import load_motions
    from intermimic_policy.sim.evaluate import EvalSettings, evaluate, load_policy
    from intermimic_policy.sim.perturb import parse_perturb

    if bool(args.clips) == bool(args.example):
        raise IntermimicError("eval needs clip files/folders or --example (not both)")
    settings = EvalSettings(attempts=args.attempts, backend=args.backend, max_worlds=args.max_worlds,
                            threads=args.threads, device=args.device, seed=args.seed,
                            progress=not args.no_progress, skeleton=args.skeleton,
                            perturb=parse_perturb(args.perturb))
    policy = load_policy(args.policy)
    if args.example:
        from intermimic_policy.motion.example import make_example_motion

        motions = [make_example_motion(seed=args.example_seed)]
    else:
        paths = _clip_paths(args.clips)
        use_assets_beside(paths)
        from intermimic_policy.motion.robot_motion import is_robot_motion_file, load_robot_motion

        robots = [is_robot_motion_file(p) for p in paths]
        if any(robots) and not all(robots):
            raise IntermimicError("eval: give either robot motions (intermimic retarget --robot) or SMPL-X clips, "
                                  "not both")
        # robot motions: the policy's contract names the robot the environment then runs
        motions = ([load_robot_motion(p) for p in paths] if any(robots)  # type: ignore[misc]
                   else load_motions(paths, progress=not args.no_progress))
    report = evaluate(motions, policy, settings)
    print(report.table())
    s = report.summary()
    print(f"policy {s['policy']}: {s['successes']}/{s['attempts']} attempts succeeded "
          f"({100.0 * s['success_rate']:.1f}%), mean duration {s['mean_duration_s']:.2f} s, "
          f"E_h {s['E_h_cm']:.2f} cm, E_o {s['E_o_cm']:.2f} cm")
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


def _spec(student: bool) -> ObservationSpec:
    return student_spec() if student else teacher_spec()


def run_obs_layout(args: argparse.Namespace) -> int:
    spec = _spec(args.student)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), "digest": spec.digest(), "layout": spec.layout()}, indent=2))
        return 0
    notes = {t.name: t.note for t in spec.terms}
    print(f"observation: {spec.dim} dims = {spec.num_tokens} blocks x {spec.block_dim} "
          f"(reference offsets {list(spec.ref_offsets)}), digest {spec.digest()}")
    head = f"{'start':>5} {'dim':>4} {'token':>5} {'offset':>6}  {'source':<6} {'term':<26} note"
    print(head)
    print("-" * len(head))
    for row in spec.layout():
        print(f"{row['start']:>5} {row['dim']:>4} {row['token']:>5} {'+' + str(row['ref_offset']):>6}  "
              f"{row['source']!s:<6} {row['term']!s:<26} {notes.get(str(row['term']), '')}")
    return 0
