"""Why the example's box error grows: per-frame object error and what touches the box.

Runs the balance expert (or an exported ONNX policy) on the bundled example clip in one world and
prints, every ``--every`` frames while the box is near the hands: E_h, E_o, the box's position
error (cm), its rotation error (rotation vector, degrees, world frame) and the humanoid bodies in
contact with it (number of contact points each). A grasp held by one point per hand shows up here
as a box that pivots about the palm-to-palm axis (a large y component of the rotation error).

    python benchmarks/diag_example_grasp.py                      # the expert
    python benchmarks/diag_example_grasp.py --policy intermimic_policy/assets/policies/example_teacher.onnx
    python benchmarks/diag_example_grasp.py --perturb object_mass=1.2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from typing import Any

import mujoco
import numpy as np
import torch

from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from intermimic_policy.sim.perturb import Perturbation, parse_perturb
from training.config import load_pipeline_config
from training.expert import make_expert

EXAMPLE_RECIPE = "config/pipeline/example.yaml"  # the shipped policy's recipe: its expert's gains


def object_contacts(model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, int]:
    """Humanoid (or world) body name -> contact points it has with the object."""
    names: Counter[str] = Counter()
    for c in data.contact[: data.ncon]:
        b1 = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[c.geom1]) or "world"
        b2 = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[c.geom2]) or "world"
        if "object" in b1 or "object" in b2:
            names[b2 if "object" in b1 else b1] += 1
    return dict(names)


def run(policy: str | None, perturb: Perturbation, every: int) -> list[dict[str, object]]:
    warm = load_pipeline_config(EXAMPLE_RECIPE).teacher.bc_warmstart
    act = make_expert(warm.expert, warm.expert_gains)
    overrides: dict[str, Any] = {}
    onnx = None
    if policy is not None:
        from intermimic_policy.sim.evaluate import load_onnx_policy

        onnx = load_onnx_policy(policy)
        overrides = dict(onnx.config_overrides)
    env = HOIEnv(eval_config(num_worlds=1, threads=1, perturb=perturb, **overrides), [make_example_motion()])
    backend: Any = env.groups[0].backend  # the MuJoCo CPU backend: its model and per-world data
    obs = env.reset(torch.arange(1), clip_ids=torch.zeros(1, dtype=torch.long),
                    start_frames=torch.zeros(1, dtype=torch.long))
    rows: list[dict[str, object]] = []
    while bool(env.active.any()):
        actions = onnx.act(env, obs) if onnx is not None else act(env)  # type: ignore[misc]
        obs, _, _, _, info = env.step(actions)
        sim, ref = env.sim_state(), env.reference(0)
        rot = quat.to_rotvec(quat.normalize(quat.multiply(sim.object_rot, quat.conjugate(ref.object_rot))))[0]
        rows.append({
            "frame": int(env.t[0]), "E_h_cm": 100 * float(info["E_h"][0]), "E_o_cm": 100 * float(info["E_o"][0]),
            "object_pos_error_cm": [round(100 * float(x), 2) for x in sim.object_pos[0] - ref.object_pos[0]],
            "object_rot_error_deg": [round(math.degrees(float(x)), 1) for x in rot],
            "held_in_reference": bool(ref.object_contact[0]),
            "contacts": object_contacts(backend.model, backend.get_data(0)),
            "ended_by": [k for k, v in info["reasons"].items() if bool(v[0])],
        })
    env.close()
    for r in rows[::every]:
        print(f"frame {r['frame']:3d}  E_h {r['E_h_cm']:5.2f}  E_o {r['E_o_cm']:5.2f}  "
              f"dpos {r['object_pos_error_cm']}  drot {r['object_rot_error_deg']}  "
              f"held {int(bool(r['held_in_reference']))}  touch {r['contacts']}")
    e_h = float(np.mean([r["E_h_cm"] for r in rows]))
    e_o = float(np.mean([r["E_o_cm"] for r in rows]))
    peak = max(float(np.linalg.norm(np.asarray(r["object_rot_error_deg"], dtype=float))) for r in rows)
    print(f"{policy or 'expert'}: {len(rows)} frames, E_h {e_h:.2f} cm, E_o {e_o:.2f} cm, "
          f"peak box rotation error {peak:.1f} deg, ended by {rows[-1]['ended_by'] or ['clip_end']}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=None, help="an exported .onnx policy (default: the balance expert)")
    p.add_argument("--perturb", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--every", type=int, default=3, help="print every N-th frame")
    p.add_argument("--json", default=None, help="write the per-frame rows here")
    a = p.parse_args()
    rows = run(a.policy, parse_perturb(a.perturb), a.every)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
