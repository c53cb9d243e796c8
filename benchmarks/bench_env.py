"""Environment speed on CPU: HOIEnv control steps/s beside the raw MuJoCo physics of the same model.

For each (worlds, threads) it measures, on the same instrumented scene and the same PD-replay
controls of one clip (8 physics substeps per control step):

* env      ``HOIEnv.step`` with the default config (physics + state + observation + reward +
           terminations + metrics): the fused CPU step (``sim.fused_step``) where it applies,
           PD-replay actions, auto-reset on;
* torch    the same with ``fused_cpu_step=False``: the torch terms (the GPU path, on CPU);
* pipe     the torch step with ``HOIEnvConfig.pipeline`` (physics on a background thread, worlds in
           two blocks, the finished block's terms computed meanwhile); only with ``--pipeline``;
* rollout  ``mujoco.rollout.Rollout`` (persistent thread pool), physics only;
* batch    ``mujoco.batch.Batch`` (what the backend uses), physics only;
* pool     a ``ThreadPoolExecutor`` over one ``MjData`` per world calling ``mj_step(nstep=8)``.

and prints world control steps per second and env / rollout, torch / rollout (the share of the raw
physics rate the environment keeps; the rest is our overhead). Every measurement is repeated
``--repeats`` times, the repeats sweeping all configurations in turn, and the best of each is kept:
other processes on the machine only ever slow a run down, so the best runs are the comparable ones
(the load average is printed).

    python benchmarks/bench_env.py [--clip CLIP] [--steps 30] [--repeats 5] [--worlds 1 8 64]
                                   [--threads 1 2] [--pipeline]
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mujoco
import numpy as np
import torch
from mujoco import batch as mjbatch
from mujoco import rollout

from intermimic_policy.embodiment import joint_map
from intermimic_policy.motion.io import load_motion
from intermimic_policy.sim.backends.base import instrument_scene, reset_vectors
from intermimic_policy.sim.env import HOIEnv, motion_state_at
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.scene import build_scene

SUBSTEPS = 8


def default_clip() -> Path:
    root = os.environ.get("INTERMIMIC_DATA")
    if not root:
        raise SystemExit("set INTERMIMIC_DATA or pass --clip")
    return Path(root) / "motions" / "OMOMO_new" / "sub2_largetable_000.pt"


def physics_inputs(clip, worlds: int, steps: int):
    """(model, initial qpos/qvel/ctrl row, per-step ctrl [steps, nu]) for the clip's PD replay."""
    scene = build_scene(obj=load_object(clip.object_name))
    model, layout = instrument_scene(scene)
    qpos, qvel, ctrl0 = (x[0].numpy() for x in reset_vectors(layout, motion_state_at(clip, 0)))
    frames = np.minimum(np.arange(1, steps + 1), clip.num_frames - 1)
    angles = joint_map.hinge_angles_from_rotvec(torch.from_numpy(clip.joint_rotvec[frames]).double()).numpy()
    ctrl = np.repeat(ctrl0[None], steps, axis=0)
    ctrl[:, layout.actuator_ids] = angles
    return model, qpos, qvel, ctrl


def bench_rollout(model, qpos, qvel, ctrl, worlds: int, threads: int) -> float:
    data = [mujoco.MjData(model) for _ in range(threads)]
    d = mujoco.MjData(model)
    d.qpos[:], d.qvel[:] = qpos, qvel
    mujoco.mj_forward(model, d)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.zeros((1, mujoco.mj_stateSize(model, spec)))
    mujoco.mj_getState(model, d, state[0], spec)
    state = np.repeat(state, worlds, axis=0)
    control = np.repeat(np.repeat(ctrl, SUBSTEPS, axis=0)[None], worlds, axis=0)
    with rollout.Rollout(nthread=threads) as r:
        r.rollout(model, data, state, control[:, :SUBSTEPS])  # warm up the pool
        t = time.perf_counter()
        r.rollout(model, data, state, control)
        return worlds * ctrl.shape[0] / (time.perf_counter() - t)


def bench_batch(model, qpos, qvel, ctrl, worlds: int, threads: int) -> float:
    b = mjbatch.Batch(model, worlds, nthread=threads, persistent=True)
    b.bind("qpos")[:] = qpos
    b.bind("qvel")[:] = qvel
    b.forward()
    c = b.bind("ctrl")
    t = time.perf_counter()
    for row in ctrl:
        c[:] = row
        b.step(nstep=SUBSTEPS, stage=mujoco.mjtStage.mjSTAGE_VEL)
    return worlds * ctrl.shape[0] / (time.perf_counter() - t)


def bench_pool(model, qpos, qvel, ctrl, worlds: int, threads: int) -> float:
    datas = [mujoco.MjData(model) for _ in range(worlds)]
    for d in datas:
        d.qpos[:], d.qvel[:] = qpos, qvel
        mujoco.mj_forward(model, d)
    chunks = [datas[i::threads] for i in range(threads)]

    def run(chunk: list[mujoco.MjData], row: np.ndarray) -> None:
        for d in chunk:
            d.ctrl[:] = row
            mujoco.mj_step(model, d, SUBSTEPS)

    with ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        for row in ctrl:
            list(pool.map(run, chunks, [row] * threads))
        return worlds * ctrl.shape[0] / (time.perf_counter() - t)


class PhysicsRun:
    """One raw-physics measurement (its control rows fix the step count)."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __call__(self, steps: int) -> float:
        return self.fn(*self.args)


class EnvRun:
    """One environment, kept across repeats: each run restarts it from frame 0 and times ``steps``
    PD-replay control steps (the same physics every run)."""

    def __init__(self, clip, worlds: int, threads: int, **changes) -> None:
        config = HOIEnvConfig(num_worlds=worlds, threads=threads, state_init="start", episode_cap=None, **changes)
        self.env = HOIEnv(config, [clip])
        self.worlds = worlds

    def __call__(self, steps: int) -> float:
        env = self.env
        env.reset()
        env.step(env.pd_replay_actions())  # warm up
        t = time.perf_counter()
        for _ in range(steps):
            env.step(env.pd_replay_actions())
        return self.worlds * steps / (time.perf_counter() - t)

    def close(self) -> None:
        self.env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=30, help="control steps per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs of each measurement (best kept)")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pipeline", action="store_true", help="also measure the pipelined environment")
    args = ap.parse_args()
    clip = load_motion(args.clip or default_clip())
    print(f"clip {clip.name} ({clip.object_name}), {args.steps} control steps x {SUBSTEPS} substeps, best of "
          f"{args.repeats}, {os.cpu_count()} CPUs, load avg {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = (f"{'worlds':>6} {'threads':>7} {'env':>9} {'torch':>9} {'pipe':>9} {'rollout':>9} {'batch':>9} "
            f"{'pool':>9} {'env/rollout':>11} {'torch/rollout':>13}   (world control steps per second)")
    print(head)
    print("-" * len(head))
    configs: dict[tuple[int, int], dict[str, EnvRun | PhysicsRun]] = {}
    for worlds in args.worlds:
        model, qpos, qvel, ctrl = physics_inputs(clip, worlds, args.steps)
        for threads in args.threads:
            runs: dict[str, EnvRun | PhysicsRun] = {
                "env": EnvRun(clip, worlds, threads),
                "torch": EnvRun(clip, worlds, threads, fused_cpu_step=False),
                **{name: PhysicsRun(fn, (model, qpos, qvel, ctrl, worlds, threads))
                   for name, fn in (("rollout", bench_rollout), ("batch", bench_batch), ("pool", bench_pool))},
            }
            if args.pipeline:
                runs["pipe"] = EnvRun(clip, worlds, threads, fused_cpu_step=False, pipeline=True)
            configs[(worlds, threads)] = runs
    # the repeats sweep every configuration in turn, so each one's runs spread over the whole
    # benchmark: a burst of other load spoils a few runs of each, not all runs of one
    best = {key: {name: 0.0 for name in runs} for key, runs in configs.items()}
    for _ in range(args.repeats):
        for key, runs in configs.items():
            for name, run in runs.items():
                best[key][name] = max(best[key][name], run(args.steps))
    for (worlds, threads), runs in configs.items():
        for run in runs.values():
            if isinstance(run, EnvRun):
                run.close()
        b = best[(worlds, threads)]
        pipe, raw = b.get("pipe", float("nan")), b["rollout"]
        print(f"{worlds:>6} {threads:>7} {b['env']:>9.0f} {b['torch']:>9.0f} {pipe:>9.0f} {raw:>9.0f} "
              f"{b['batch']:>9.0f} {b['pool']:>9.0f} {100.0 * b['env'] / raw:>10.0f}% "
              f"{100.0 * b['torch'] / raw:>12.0f}%", flush=True)
    print(f"load avg after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
