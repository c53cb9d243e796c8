"""The G1 through the stack, timed on CPU: environment steps, and the policy node's per-tick work.

* env: ``HOIEnv`` control steps/s of the G1 (43 DOF, 46 bodies) on a retargeted OMOMO_new slice
  with PD-replay actions, beside the SMPL-X humanoid on the same source clip (same worlds/threads);
* node: the policy node's observation of the G1 (``RobotKinematics`` FK + ``NumpyObservation``),
  ms per tick, and the FK alone.

    python benchmarks/bench_g1.py [--clip OMOMO_new/sub2_largetable_000.pt] [--frames 60] [--worlds 8] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from intermimic_policy.embodiment.description import embodiment_for
from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.embodiment.robot_kinematics import RobotKinematics
from intermimic_policy.motion.io import load_motion, save_motion
from intermimic_policy.motion.objects import load_object
from intermimic_policy.motion.robot_motion import save_robot_motion
from intermimic_policy.observation.numpy_obs import NumpyObservation, ObjectCloud, WorldState, reference_frame
from intermimic_policy.retarget.geometry import object_geometry
from intermimic_policy.retarget.retarget import retarget_clip
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.robot_reference import robot_clip


def env_rate(config: HOIEnvConfig, clip: Path, steps: int) -> float:
    env = HOIEnv(config, [clip])
    env.reset()
    env.step(env.pd_replay_actions())
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.pd_replay_actions())
    rate = steps * config.num_worlds / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("INTERMIMIC_DATA", "data")) / "motions"
    p.add_argument("--clip", default=str(data / "OMOMO_new" / "sub2_largetable_000.pt"))
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--worlds", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    desc, emb = load_robot("g1"), embodiment_for("g1")
    source = load_motion(args.clip).slice(0, args.frames)
    result = retarget_clip(desc, source, object_geometry(load_object(source.object_name)))
    with tempfile.TemporaryDirectory() as tmp:
        g1_clip = save_robot_motion(result.motion, Path(tmp) / "g1.npz")
        smplx_clip = save_motion(source, Path(tmp) / "smplx.npz")
        common = {"num_worlds": args.worlds, "threads": args.threads, "state_init": "start", "min_episode_frames": 5}
        g1 = env_rate(HOIEnvConfig(robot="g1", **common), g1_clip, args.steps)
        smplx = env_rate(HOIEnvConfig(**common), smplx_clip, args.steps)
    print(f"env  G1 ({emb.num_dofs} DOF, {emb.num_bodies} bodies): {g1:8.1f} world steps/s   "
          f"SMPL-X (153 DOF, 52 bodies): {smplx:8.1f} world steps/s   ({args.worlds} worlds, {args.threads} thread)")

    # the policy node's per-tick observation work for the G1
    clip = robot_clip(result.motion, desc, emb)
    kin = RobotKinematics(desc, emb)
    obs = NumpyObservation(HOIEnvConfig(robot="g1").obs_spec)
    world = WorldState.empty(emb.num_bodies)
    cloud = ObjectCloud(load_object(source.object_name).points(1024))
    t = 10
    refs = [reference_frame(clip.body_pos[k - 1:k + 2], clip.body_rot[k - 1:k + 2], clip.object_pos[k - 1:k + 2],
                            clip.object_rot[k - 1:k + 2], clip.body_contact[k], 1, clip.fps, cloud.points)
            for k in (t + 1, t + 16)]
    q, dq = clip.joint_pos[t], np.zeros(emb.num_dofs)
    args_fk = (clip.root_pos[t], clip.root_rot[t], clip.root_lin_vel[t], clip.root_ang_vel[t], q, dq)
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        kin.compute(world, *args_fk)
    fk_ms = (time.perf_counter() - start) / n * 1e3
    world.object_pos[:] = clip.object_pos[t]
    start = time.perf_counter()
    for _ in range(n):
        kin.compute(world, *args_fk)
        obs.build(world, refs, cloud)
    tick_ms = (time.perf_counter() - start) / n * 1e3
    print(f"node G1 FK {fk_ms:.3f} ms, FK + observation ({obs.dim} dims) {tick_ms:.3f} ms per tick")


if __name__ == "__main__":
    main()
