"""Objects and replay: CoACD decomposition time per object, hand-distance and render rates.

Decomposes each object with a fresh cache (so CoACD really runs; set OMP_NUM_THREADS=1 to
measure one core), prints time, number of hulls, largest hull and mass against the convex hull's,
then replays one clip and prints the hand-object distance rate and the offscreen render rate.

    OMP_NUM_THREADS=1 python benchmarks/bench_objects_replay.py [--objects largetable woodchair]
        [--clip PATH] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np
import trimesh

from intermimic_policy.sim import kinematic, render
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.scene import SceneConfig, build_scene


def bench_decomposition(names: list[str]) -> None:
    print(f"{'object':<14}{'time s':>8}{'hulls':>7}{'max verts':>10}{'mass kg':>9}{'hull kg':>9}")
    with tempfile.TemporaryDirectory() as cache:
        for name in names:
            start = time.perf_counter()
            asset = load_object(name, cache_dir=cache)
            took = time.perf_counter() - start
            hull = trimesh.Trimesh(asset.vertices, asset.faces, process=False).convex_hull.volume * asset.density
            print(f"{name:<14}{took:>8.1f}{len(asset.parts):>7}{max(len(v) for v, _ in asset.parts):>10}"
                  f"{asset.mass:>9.1f}{hull:>9.1f}")


def bench_replay(clip: Path | None, width: int, height: int) -> None:
    if clip is None:
        from intermimic_policy.motion.example import make_example_motion

        motion = make_example_motion()
    else:
        from intermimic_policy.motion.io import load_motion

        motion = load_motion(clip)
    scene = build_scene(obj=load_object(motion.object_name),
                        config=SceneConfig(offscreen_width=width, offscreen_height=height))
    data = mujoco.MjData(scene.model)
    qpos = kinematic.motion_qpos(scene, motion)
    start = time.perf_counter()
    for f in range(motion.num_frames):
        kinematic.set_qpos(scene, data, qpos[f])
        kinematic.hand_object_distances(scene, data)
    took = time.perf_counter() - start
    print(f"{motion.name}: kinematics + hand-object distances {motion.num_frames / took:.0f} frames/s")
    try:
        renderer = render.OffscreenRenderer(scene.model, width, height)
    except render.RenderUnavailable as exc:
        print(f"render: unavailable ({exc})")
        return
    with renderer:
        path = render.follow_camera_path(motion.root_pos, motion.object_pos, motion.fps, root_rot=motion.root_rot)
        renderer.render(data, path.camera(0))  # warm-up
        start = time.perf_counter()
        n = min(60, motion.num_frames)
        for f in range(n):
            kinematic.set_qpos(scene, data, qpos[f])
            image = renderer.render(data, path.camera(f))
        took = time.perf_counter() - start
    print(f"render {width}x{height} ({renderer.backend}): {n / took:.1f} frames/s, mean pixel {np.mean(image):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", nargs="*", default=["largetable", "woodchair"])
    parser.add_argument("--clip", type=Path, default=None, help="clip to replay (default: the example clip)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if args.objects:
        bench_decomposition(args.objects)
    bench_replay(args.clip, args.width, args.height)


if __name__ == "__main__":
    main()
