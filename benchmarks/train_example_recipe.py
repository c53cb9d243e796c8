"""Learning curves of the round-1 teacher recipe and the new one, in the same run, on one clip.

For each recipe: the behaviour-cloning warm start, then PPO iterations; every few rounds the
current policy is evaluated closed loop from frame 0 (mean actions, as deployment runs it).
Written: ``benchmarks/results/<name>.csv`` (recipe, phase, round, samples, wall_s, success,
duration_s, E_h_cm, E_o_cm) and ``<name>.png`` (duration and E_h against samples and wall time),
plus the speed ratios (new / round 1) printed and stored in ``<name>.json``.

Recipes (settings of ``TeacherTrainConfig``):
  round1  the round-1 CPU recipe: PD-replay expert, upstream network 1024-1024-512 and sigma 0.055
  new     config/pipeline/example.yaml: balance expert, 512-256 network, sigma 0.01, noise 0.01

Run: ``python benchmarks/train_example_recipe.py [--clip CLIP.pt] [--bc-rounds 20] [--ppo-iters 6]``
(on 2 busy cores: ~20-40 min for both recipes with the defaults).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.evaluate import EvalSettings, evaluate
from training.bc_warmstart import BCRoundStats, bc_warmstart
from training.config import TeacherTrainConfig, load_pipeline_config
from training.teacher import TeacherTrainer, boundary_seed

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class MeanPolicy:
    """The training policy's action mean, as an evaluation policy."""

    name: str
    policy: Any
    config_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def reset(self, env: HOIEnv, seed: int) -> None:
        pass

    def act(self, env: HOIEnv, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.policy.action_mean(obs).clamp(-1.0, 1.0)


def recipes(bc_rounds: int) -> dict[str, TeacherTrainConfig]:
    new = load_pipeline_config(REPO / "config" / "pipeline" / "example.yaml").teacher
    new = dataclasses.replace(new, bc_warmstart=dataclasses.replace(new.bc_warmstart, iterations=bc_rounds))
    old = dataclasses.replace(
        new, ppo=dataclasses.replace(new.ppo, hidden_dims=(1024, 1024, 512), init_log_std=-2.9),
        bc_warmstart=dataclasses.replace(new.bc_warmstart, expert="pd-replay", expert_gains={}, noise_std=None,
                                         expert_mix=0.5))
    return {"round1": old, "new": new}


def evaluate_now(trainer: TeacherTrainer, clip: HOIMotion, name: str) -> dict[str, float]:
    was = trainer.policy.training
    trainer.policy.eval()
    try:
        report = evaluate([clip], MeanPolicy(name, trainer.policy), EvalSettings(progress=False, max_worlds=1))
    finally:
        trainer.policy.train(was)
    s = report.summary()
    return {"success": float(s["success_rate"]), "duration_s": float(s["mean_duration_s"]),
            "E_h_cm": float(s["E_h_cm"]), "E_o_cm": float(s["E_o_cm"])}


def run_recipe(name: str, cfg: TeacherTrainConfig, clip: HOIMotion, out: Path, eval_every: int,
               ppo_iters: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    trainer = TeacherTrainer(name, [clip], cfg, out / name, progress=False)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    env_s = {"bc": 0.0, "ppo": 0.0}
    per_round = cfg.samples_per_iteration

    def record(phase: str, k: int, samples: int) -> None:
        wall = time.perf_counter() - t0
        m = evaluate_now(trainer, clip, name)
        rows.append({"recipe": name, "phase": phase, "round": k, "samples": samples, "wall_s": wall, **m})
        print(f"{name:>7} {phase} {k:>3}: {samples:>7} samples {wall:7.1f} s  duration {m['duration_s']:.2f} s  "
              f"E_h {m['E_h_cm']:.1f} cm  success {m['success']:.0%}", flush=True)

    eval_s = [0.0]

    def on_round(stats: BCRoundStats) -> None:
        if stats.round % eval_every == 0 or stats.round == cfg.bc_warmstart.iterations:
            t = time.perf_counter()
            record("bc", stats.round, stats.round * per_round)
            eval_s[0] += time.perf_counter() - t

    try:
        record("init", 0, 0)
        trainer.vec_env.reset(seed=boundary_seed(cfg.seed, -1))
        t = time.perf_counter()
        bc_warmstart(trainer.vec_env, trainer.policy, cfg.bc_warmstart, horizon=cfg.ppo.num_steps_per_env,
                     gamma=cfg.ppo.gamma, lam=cfg.ppo.lam, device=cfg.device, progress=False, on_round=on_round)
        env_s["bc"] = time.perf_counter() - t - eval_s[0]
        bc_samples = cfg.bc_warmstart.iterations * per_round
        trainer.runner.reset(seed=boundary_seed(cfg.seed, 0))
        t = time.perf_counter()
        for it in range(1, ppo_iters + 1):
            trainer.runner.learn_iteration()
            if it % max(1, eval_every // 2) == 0 or it == ppo_iters:
                env_s["ppo"] += time.perf_counter() - t
                record("ppo", it, bc_samples + it * per_round)
                t = time.perf_counter()
        env_s["ppo"] += time.perf_counter() - t if ppo_iters % max(1, eval_every // 2) else 0.0
    finally:
        trainer.close()
    speed = {"bc_samples_per_s": cfg.bc_warmstart.iterations * per_round / env_s["bc"] if env_s["bc"] else math.nan,
             "ppo_samples_per_s": ppo_iters * per_round / env_s["ppo"] if env_s["ppo"] else math.nan}
    return rows, speed


def plot(rows: list[dict[str, Any]], path: Path, clip: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        for col, x in enumerate(("samples", "wall_s")):
            axes[0, col].plot([r[x] for r in mine], [r["duration_s"] for r in mine], marker="o", label=name)
            axes[1, col].plot([r[x] for r in mine], [r["E_h_cm"] for r in mine], marker="o", label=name)
    for col, x in enumerate(("environment samples", "wall time (s)")):
        axes[1, col].set_xlabel(x)
    axes[0, 0].set_ylabel("closed-loop duration (s) from frame 0")
    axes[1, 0].set_ylabel("E_h (cm)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{clip}: round-1 recipe vs new (success = the whole clip within the error bounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", help="a clip file (default: the bundled example clip)")
    p.add_argument("--bc-rounds", type=int, default=20)
    p.add_argument("--ppo-iters", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--recipes", nargs="+", default=["round1", "new"])
    p.add_argument("--name", default="example_recipe")
    p.add_argument("--work", default="/tmp/intermimic_recipe_bench")
    p.add_argument("--merge", nargs="+", metavar="NAME",
                   help="no training: join earlier runs' results (by --name) into one plot and summary "
                        "(recipes trained in separate runs, e.g. in parallel)")
    args = p.parse_args()
    out_dir = REPO / "benchmarks" / "results"
    if args.merge:
        merge(args.merge, args.name, out_dir)
        return
    torch.set_num_threads(1)
    if args.clip:
        from intermimic_policy.motion.io import load_motion

        clip = load_motion(args.clip)
    else:
        from intermimic_policy.motion.example import make_example_motion

        clip = make_example_motion()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    speeds: dict[str, dict[str, float]] = {}
    for name in args.recipes:
        cfg = recipes(args.bc_rounds)[name]
        r, speeds[name] = run_recipe(name, cfg, clip, Path(args.work), args.eval_every, args.ppo_iters)
        rows += r
    write_results(rows, speeds, clip.name, args.name, out_dir)


def merge(names: list[str], name: str, out_dir: Path) -> None:
    rows: list[dict[str, Any]] = []
    speeds: dict[str, dict[str, float]] = {}
    clips = set()
    for part in names:
        with (out_dir / f"{part}.csv").open(newline="") as f:
            rows += [{k: (v if k in ("recipe", "phase") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
        info = json.loads((out_dir / f"{part}.json").read_text())
        speeds.update(info["speeds"])
        clips.add(info["clip"])
    if len(clips) != 1:
        raise SystemExit(f"--merge: the runs are of different clips {sorted(clips)}")
    write_results(rows, speeds, clips.pop(), name, out_dir)


def write_results(rows: list[dict[str, Any]], speeds: dict[str, dict[str, float]], clip: str, name: str,
                  out_dir: Path) -> None:
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out_dir / f"{name}.png", clip)
    summary: dict[str, Any] = {"clip": clip, "speeds": speeds}
    if "round1" in speeds and "new" in speeds:
        summary["ratios_new_over_round1"] = {k: speeds["new"][k] / speeds["round1"][k] for k in speeds["new"]}
        best = {n: max((r["duration_s"] for r in rows if r["recipe"] == n), default=math.nan) for n in speeds}
        summary["best_duration_s"] = best
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
