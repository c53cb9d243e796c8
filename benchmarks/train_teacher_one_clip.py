"""Train a teacher on ONE real clip for a fixed sample budget on the CPU; compare it with PD replay.

Uses the shared data (``$INTERMIMIC_DATA/motions/OMOMO_new``), the real MuJoCo ``HOIEnv`` with
upstream's teacher settings, and ``training.teacher.train_teacher`` (checkpoints, TensorBoard,
learning curve). At the end both the teacher (mean actions) and the PD-replay baseline run the
clip from frame 0; it prints training samples/s and both policies' metrics, and writes
``OUT/learning_curve.png`` and ``OUT/report.json``.

    python benchmarks/train_teacher_one_clip.py [--clip CLIP] [--samples 40000] [--worlds 16]
        [--epochs 6] [--lr 2e-5] [--threads 1] [--out runs/teacher_one_clip]

PPO defaults are upstream's (horizon 32, 6 mini-epochs, lr 2e-5, MLP 1024-1024-512); a CPU
budget of minutes is ~5 orders of magnitude below what upstream trains a teacher with.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

from intermimic_policy.motion.io import load_motion
from training.config import EnvSettings, EvalSettings, PPOConfig, TeacherTrainConfig, to_dict
from training.teacher import train_teacher, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", help="clip file (default: $INTERMIMIC_DATA/motions/OMOMO_new/sub2_largetable_000.pt)")
    p.add_argument("--samples", type=int, default=40_000, help="training sample budget (env steps x worlds)")
    p.add_argument("--worlds", type=int, default=16)
    p.add_argument("--horizon", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--minibatch", type=int, default=16384)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a busy 2-core machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-interval", type=int, default=50)
    p.add_argument("--out", default="runs/teacher_one_clip")
    p.add_argument("--fresh", action="store_true", help="delete OUT first instead of resuming")
    args = p.parse_args()

    clip = args.clip
    if clip is None:
        root = os.environ.get("INTERMIMIC_DATA")
        if not root:
            raise SystemExit("set INTERMIMIC_DATA (the shared data folder) or pass --clip")
        clip = str(Path(root) / "motions" / "OMOMO_new" / "sub2_largetable_000.pt")
    motion = load_motion(clip)
    per_it = args.worlds * args.horizon
    iterations = max(1, math.ceil(args.samples / per_it))
    cfg = TeacherTrainConfig(
        iterations=iterations, seed=args.seed, save_interval=min(args.save_interval, iterations),
        keep_checkpoints=1, torch_threads=args.threads,
        ppo=PPOConfig(num_steps_per_env=args.horizon, num_learning_epochs=args.epochs,
                      minibatch_size=args.minibatch, learning_rate=args.lr),
        env=EnvSettings(num_envs=args.worlds),
        eval=EvalSettings(enabled=True),
    )
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    print(f"clip {motion.name}: {motion.num_frames} frames ({motion.duration_s:.2f} s), object {motion.object_name}")
    print(f"budget {iterations * per_it} samples = {iterations} iterations x {args.worlds} worlds x {args.horizon} "
          f"steps; epochs {args.epochs}, lr {args.lr}, torch threads {args.threads}")
    result = train_teacher("one_clip", [motion], cfg, out, clip_sources=[clip])
    print(f"\ntraining: {result.samples} samples in {result.wall_s:.0f} s wall; this run trained "
          f"{result.extra['trained_iterations']} iterations at {result.samples_per_s:.0f} samples/s "
          f"(environment alone inside the rollouts: {result.env_samples_per_s:.0f} samples/s)")
    head = f"{'policy':<10} {'success':>8} {'duration_s':>10} {'E_h_cm':>7} {'E_o_cm':>7}"
    print(head)
    for name, m in (("teacher", result.metrics), ("pd-replay", result.baseline)):
        assert m is not None
        print(f"{name:<10} {100 * m['success_rate']:>7.0f}% {m['mean_duration_s']:>10.2f} "
              f"{m['E_h_cm']:>7.2f} {m['E_o_cm']:>7.2f}")
    report = {"clip": clip, "frames": motion.num_frames, "config": to_dict(cfg), **result.to_dict()}
    write_json(out / "report.json", report)
    print(f"\nwrote {out / 'learning_curve.png'} and {out / 'report.json'}")
    print(json.dumps({"teacher": result.metrics, "pd_replay": result.baseline}))


if __name__ == "__main__":
    main()
