"""Tune the balance expert's gains on the bundled example clip (cross-entropy, ~2-4 min on CPU).

The gains go into ``bc_warmstart.expert_gains`` of ``config/pipeline/example.yaml``. Tuning under
the robustness perturbation the shipped policy must pass (``--perturb object_mass=1.2 --perturb
object_friction=0.8``) gives gains that hold the box in both; the script scores the result on the
nominal clip too.

    python benchmarks/tune_example_expert.py --perturb object_mass=1.2 --perturb object_friction=0.8
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from intermimic_policy.motion.example import example_config, make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from intermimic_policy.sim.perturb import parse_perturb
from training.config import load_pipeline_config
from training.expert import BalanceGains, rollout_scores, tune_gains

EXAMPLE_RECIPE = "config/pipeline/example.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--perturb", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--worlds", type=int, default=16)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the gains and the tuning history here")
    p.add_argument("--squeeze", type=float, default=None,
                   help="the clip's grip squeeze (m the palms aim inside the box faces; default: the clip's)")
    a = p.parse_args()
    torch.set_num_threads(1)
    init = BalanceGains(**load_pipeline_config(EXAMPLE_RECIPE).teacher.bc_warmstart.expert_gains)
    clip = make_example_motion() if a.squeeze is None else make_example_motion(
        config=example_config(squeeze=a.squeeze))
    env = HOIEnv(eval_config(num_worlds=a.worlds, threads=1, perturb=parse_perturb(a.perturb)), [clip])
    result = tune_gains(env, iterations=a.iterations, init=init, seed=a.seed)
    env.close()
    gains = result.gains.vector()[None]
    scores = {}
    for name, pert in (("nominal", []), ("perturbed", a.perturb)):
        e = HOIEnv(eval_config(num_worlds=1, threads=1, perturb=parse_perturb(pert)), [clip])
        reached, e_h, e_o = rollout_scores(e, gains)
        e.close()
        scores[name] = {"frames": float(reached[0]), "E_h_cm": 100 * float(e_h[0]), "E_o_cm": 100 * float(e_o[0])}
        print(f"{name}: {scores[name]}")
    out = {"gains": dataclasses.asdict(result.gains), "scores": scores, "perturb": a.perturb,
           "wall_s": result.wall_s, "history": result.history}
    print("expert_gains:", json.dumps({k: round(v, 3) for k, v in out["gains"].items()}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
