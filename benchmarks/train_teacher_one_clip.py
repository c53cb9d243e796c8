"""Train a teacher on ONE real clip for a fixed sample budget on the CPU; compare it with PD replay.

Uses the shared data (``$INTERMIMIC_DATA/motions/OMOMO_new``), the real MuJoCo ``HOIEnv`` and
``training.teacher.train_teacher`` (behaviour-cloning warm start, PPO, checkpoints, TensorBoard,
learning curve) with the teacher settings of ``config/pipeline/one_clip_cpu.yaml`` (its header
lists every deviation from upstream and why). At the end the teacher (mean actions) and the
PD-replay baseline run the clip with the same evaluation (``intermimic eval``: from frame 0,
deterministic); it prints samples/s and both policies' metrics, and writes
``OUT/learning_curve.png`` and ``OUT/report.json``.

    python benchmarks/train_teacher_one_clip.py [--config config/pipeline/one_clip_cpu.yaml]
        [--clip CLIP] [--samples 100000] [--worlds N] [--lr LR] [--epochs N] [--bc-rounds N]
        [--threads 1] [--seed 0] [--out runs/teacher_one_clip] [--fresh]

``--samples`` is the TOTAL environment budget: the warm start's rollouts count against it, PPO
gets the rest. Without ``--samples`` the config's iteration count is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
from pathlib import Path

from intermimic_policy import jsonio
from intermimic_policy.motion.io import load_motion
from training.config import expand_path, load_pipeline_config, to_dict
from training.teacher import train_teacher, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "pipeline" / "one_clip_cpu.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML whose teacher settings are used")
    p.add_argument("--clip", help="clip file (default: the config's first clip)")
    p.add_argument("--samples", type=int, help="total environment samples (warm start + PPO)")
    p.add_argument("--worlds", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", type=int, help="PPO mini-epochs")
    p.add_argument("--bc-rounds", type=int, help="warm-start DAgger rounds (0 = no warm start)")
    p.add_argument("--threads", type=int, help="torch threads (1: best on a busy 2-core machine)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default="runs/teacher_one_clip")
    p.add_argument("--fresh", action="store_true", help="delete OUT first instead of resuming")
    args = p.parse_args()

    pipeline = load_pipeline_config(args.config)
    cfg = pipeline.teacher
    if args.worlds is not None:
        cfg.env = dataclasses.replace(cfg.env, num_envs=args.worlds)
    if args.lr is not None:
        cfg.ppo = dataclasses.replace(cfg.ppo, learning_rate=args.lr)
    if args.epochs is not None:
        cfg.ppo = dataclasses.replace(cfg.ppo, num_learning_epochs=args.epochs)
    if args.bc_rounds is not None:
        cfg.bc_warmstart = dataclasses.replace(cfg.bc_warmstart, iterations=args.bc_rounds)
    if args.threads is not None:
        cfg.torch_threads = args.threads
    if args.seed is not None:
        cfg.seed = args.seed
    per_it = cfg.samples_per_iteration
    if args.samples is not None:
        cfg.iterations = max(1, math.ceil((args.samples - cfg.bc_samples) / per_it))
    cfg.save_interval = min(cfg.save_interval, cfg.iterations)

    if args.clip is not None:
        clip = args.clip
    elif pipeline.clips:
        if "INTERMIMIC_DATA" not in os.environ and "$INTERMIMIC_DATA" in pipeline.clips[0]:
            raise SystemExit("set INTERMIMIC_DATA (the shared data folder) or pass --clip")
        clip = expand_path(pipeline.clips[0])
    else:
        raise SystemExit(f"{args.config} names no clip: pass --clip")
    motion = load_motion(clip)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    bc = cfg.bc_warmstart
    print(f"clip {motion.name}: {motion.num_frames} frames ({motion.duration_s:.2f} s), object {motion.object_name}")
    print(f"budget {cfg.bc_samples + cfg.iterations * per_it} samples: warm start {cfg.bc_samples} "
          f"({bc.iterations} DAgger rounds) + PPO {cfg.iterations * per_it} ({cfg.iterations} iterations x "
          f"{cfg.env.num_envs} worlds x {cfg.ppo.num_steps_per_env} steps); PPO lr {cfg.ppo.learning_rate}, "
          f"{cfg.ppo.num_learning_epochs} epochs, minibatch {cfg.ppo.minibatch_size}; torch threads {cfg.torch_threads}")
    result = train_teacher("one_clip", [motion], cfg, out, clip_sources=[clip])
    bc_info = result.extra.get("bc_warmstart") or {}
    print(f"\ntraining: {result.wall_s:.0f} s wall for this call; PPO {result.samples} samples, this call trained "
          f"{result.extra['trained_iterations']} iterations at {result.samples_per_s:.0f} samples/s "
          f"(environment alone inside the rollouts: {result.env_samples_per_s:.0f} samples/s)")
    if bc_info:
        print(f"warm start: {bc_info['samples']} samples in {bc_info['wall_s']:.0f} s "
              f"({bc_info['samples'] / max(bc_info['wall_s'], 1e-9):.0f} samples/s incl. fitting), "
              f"final DAgger action MSE {bc_info['final_dagger_mse']:.2e}")
    print(f"{'policy':<10} {'success':>8} {'duration_s':>10} {'E_h_cm':>7} {'E_o_cm':>7}")
    for name, m in (("teacher", result.metrics), ("pd-replay", result.baseline)):
        assert m is not None
        print(f"{name:<10} {100 * m['success_rate']:>7.0f}% {m['mean_duration_s']:>10.2f} "
              f"{m['E_h_cm']:>7.2f} {m['E_o_cm']:>7.2f}")
    report = {"clip": clip, "frames": motion.num_frames, "config": to_dict(cfg), **result.to_dict()}
    write_json(out / "report.json", report)
    print(f"\nwrote {out / 'learning_curve.png'} and {out / 'report.json'}")
    print(jsonio.dumps({"teacher": result.metrics, "pd_replay": result.baseline}, indent=None))


if __name__ == "__main__":
    main()
