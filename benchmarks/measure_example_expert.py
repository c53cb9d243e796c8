"""The balance expert alone on the bundled example clip: box lift and falls, nominal and perturbed.

Why: the warm start clones this expert, so the clone cannot lift the box higher than the expert
does. Run it before training to see what a gain change buys under the robustness check's
perturbations (the box 20% heavier, 20% less grippy, both). One world per case, ~1 min in all.

    python benchmarks/measure_example_expert.py                      # the recipe's expert_gains
    python benchmarks/measure_example_expert.py --gain squeeze_p=0   # ... with one gain overridden
"""

from __future__ import annotations

import argparse
import json

import torch

from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from intermimic_policy.sim.perturb import parse_perturb
from training.config import load_pipeline_config
from training.expert import make_expert

EXAMPLE_RECIPE = "config/pipeline/example.yaml"
CASES = {"nominal": [], "mass 1.2": ["object_mass=1.2"], "friction 0.8": ["object_friction=0.8"],
         "both": ["object_mass=1.2", "object_friction=0.8"]}


def measure(gains: dict[str, float], perturb: list[str]) -> dict[str, float]:
    """One rollout from frame 0: lift (cm, the box's highest point over its start, as the closed
    loop's report measures it), frames reached, mean E_h / E_o (cm), fell (ended early)."""
    act = make_expert("balance", gains)
    assert act is not None
    clip = make_example_motion()
    env = HOIEnv(eval_config(num_worlds=1, threads=1, perturb=parse_perturb(perturb)), [clip])
    try:
        env.reset(torch.arange(1), clip_ids=torch.zeros(1, dtype=torch.long),
                  start_frames=torch.zeros(1, dtype=torch.long))
        z0 = z_max = float(env.sim_state().object_pos[0, 2])
        eh, eo, n = 0.0, 0.0, 0
        while bool(env.active.any()):
            _, _, _, _, info = env.step(act(env))
            z_max = max(z_max, float(env.sim_state().object_pos[0, 2]))
            eh, eo, n = eh + float(info["E_h"][0]), eo + float(info["E_o"][0]), n + 1
        frames = int(env.t[0])
    finally:
        env.close()
    return {"lift_cm": 100 * (z_max - z0), "frames": frames, "E_h_cm": 100 * eh / max(n, 1),
            "E_o_cm": 100 * eo / max(n, 1), "fell": frames < clip.num_frames - 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gain", action="append", default=[], metavar="NAME=VALUE", help="override one expert gain")
    p.add_argument("--json", default=None, help="write the table here")
    a = p.parse_args()
    torch.set_num_threads(1)
    gains = dict(load_pipeline_config(EXAMPLE_RECIPE).teacher.bc_warmstart.expert_gains)
    for kv in a.gain:
        k, v = kv.split("=", 1)
        gains[k] = float(v)
    print("expert_gains:", json.dumps(gains))
    rows = {}
    for name, perturb in CASES.items():
        rows[name] = r = measure(gains, perturb)
        print(f"{name:13s} lift {r['lift_cm']:6.2f} cm  frames {r['frames']:3d}  E_h {r['E_h_cm']:5.2f}  "
              f"E_o {r['E_o_cm']:5.2f}  fell {r['fell']}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gains": gains, "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
