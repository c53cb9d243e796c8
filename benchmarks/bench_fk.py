"""Forward-kinematics throughput: our batched torch FK against MuJoCo's mj_kinematics.

Prints frames per second for torch FK at batch 1, 256 and 4096 (float32 and float64, CPU) and
for ``mujoco.mj_kinematics`` on the generated humanoid (one frame per call, from Python, and the
same after hinge-angle conversion of the whole batch). Random but fixed poses; no data needed.

    python benchmarks/bench_fk.py [--seconds 1.0] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import mujoco
import numpy as np
import torch

from intermimic_policy.embodiment.fk import forward_kinematics
from intermimic_policy.embodiment.joint_map import qpos_from_pose
from intermimic_policy.embodiment.mjcf import humanoid_model
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.geometry import quaternion as quat


def _rate(step: Callable[[], object], frames_per_call: int, seconds: float) -> float:
    """Frames per second of ``step``, after one warm-up call, timed for about ``seconds``."""
    step()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * frames_per_call / elapsed


def _poses(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    root_pos = torch.randn(batch, 3, generator=g, dtype=dtype)
    root_rot = quat.normalize(torch.randn(batch, 4, generator=g, dtype=dtype))
    rotvec = 0.5 * torch.randn(batch, 51, 3, generator=g, dtype=dtype)
    return root_pos, root_rot, rotvec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    offsets = default_skeleton().offsets
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; mujoco {mujoco.__version__}")
    print(f"{'method':<34}{'batch':>7}{'frames/s':>14}{'us/frame':>11}")
    for dtype in (torch.float32, torch.float64):
        off = torch.from_numpy(np.array(offsets)).to(dtype)
        for batch in (1, 256, 4096):
            root_pos, root_rot, rotvec = _poses(batch, dtype)
            with torch.no_grad():
                rate = _rate(partial(forward_kinematics, off, root_pos, root_rot, rotvec), batch, args.seconds)
            name = f"torch FK ({str(dtype).removeprefix('torch.')})"
            print(f"{name:<34}{batch:>7}{rate:>14,.0f}{1e6 / rate:>11.2f}")

    model = humanoid_model()
    data = mujoco.MjData(model)
    root_pos, root_rot, rotvec = _poses(256, torch.float64)
    qpos = qpos_from_pose(root_pos, root_rot, rotvec).numpy()
    index = [0]

    def one_frame() -> None:
        data.qpos[:] = qpos[index[0] % len(qpos)]
        mujoco.mj_kinematics(model, data)
        index[0] += 1

    rate = _rate(one_frame, 1, args.seconds)
    print(f"{'mujoco mj_kinematics (python loop)':<34}{1:>7}{rate:>14,.0f}{1e6 / rate:>11.2f}")

    def batch_with_conversion() -> None:
        q = qpos_from_pose(root_pos, root_rot, rotvec).numpy()
        for row in q:
            data.qpos[:] = row
            mujoco.mj_kinematics(model, data)

    rate = _rate(batch_with_conversion, len(qpos), args.seconds)
    print(f"{'mujoco + rotvec->hinge conversion':<34}{len(qpos):>7}{rate:>14,.0f}{1e6 / rate:>11.2f}")


if __name__ == "__main__":
    main()
