"""Kinematic replay of a robot motion: the robot (MuJoCo model from its URDF) with its object,
a video, a contact sheet and a joint plot (joint positions as a fraction of their URDF range)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from tqdm import tqdm

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.robot_motion import RobotMotion, load_robot_motion
from intermimic_policy.sim import render
from intermimic_policy.sim.robot_scene import RobotScene, build_robot_scene


def set_robot_qpos(scene: RobotScene, data: mujoco.MjData, motion: RobotMotion, t: int) -> None:
    """Put frame ``t`` into MuJoCo (quaternions xyzw -> wxyz at this boundary) and run kinematics."""
    r = scene.root_qpos_adr
    data.qpos[r:r + 3] = motion.root_pos[t]
    x, y, z, w = motion.root_rot[t]
    data.qpos[r + 3:r + 7] = (w, x, y, z)
    data.qpos[scene.joint_qpos_adr] = motion.joint_pos[t]
    if scene.object_qpos_adr is not None:
        o = scene.object_qpos_adr
        data.qpos[o:o + 3] = motion.object_pos[t]
        x, y, z, w = motion.object_rot[t]
        data.qpos[o + 3:o + 7] = (w, x, y, z)
    mujoco.mj_kinematics(scene.model, data)


def write_joint_plot(path: Path, motion: RobotMotion, lower: np.ndarray, upper: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac = (motion.joint_pos - lower) / (upper - lower)
    time = np.arange(motion.num_frames) / motion.fps
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    im = axes[0].imshow(frac.T, aspect="auto", origin="lower", cmap="coolwarm", vmin=0, vmax=1,
                        extent=(0, time[-1] if len(time) > 1 else 1, -0.5, len(motion.joint_names) - 0.5))
    axes[0].set_yticks(range(len(motion.joint_names)), [n.replace("_joint", "") for n in motion.joint_names], fontsize=5)
    axes[0].set_title(f"{motion.name} on {motion.robot}: joint position / URDF range (0 = lower, 1 = upper)")
    fig.colorbar(im, ax=axes[0], fraction=0.03)
    for h, name in enumerate(motion.hand_names):
        axes[1].plot(time, motion.hand_contact[:, h] + 0.05 * h, label=f"{name} label")
    for f, name in enumerate(motion.foot_names):
        axes[1].plot(time, motion.foot_contact[:, f] * 0.5 + 0.05 * f - 1.5, "--", label=f"{name} planted")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=6, ncol=4, loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return path


def replay_robot_motion(path: str | os.PathLike[str], out: str | os.PathLike[str], width: int = 640,
                        height: int = 480, stride: int = 1, fmt: str = "mp4", progress: bool = True) -> dict[str, Any]:
    from intermimic_policy.motion.objects import load_object

    motion = load_robot_motion(path)
    desc = load_robot(motion.robot)
    if motion.joint_names != desc.joint_names:
        raise IntermimicError(f"{path}: joint names do not match robot {motion.robot!r} (retargeted for another URDF?)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = load_object(motion.object_name) if motion.object_name else None
    scene = build_robot_scene(desc, obj)
    data = mujoco.MjData(scene.model)
    summary: dict[str, Any] = {"motion": str(path), "robot": motion.robot, "frames": motion.num_frames}
    summary["plot"] = str(write_joint_plot(out_dir / "joints.png", motion, desc.lower, desc.upper))
    frames = list(range(0, motion.num_frames, max(stride, 1)))
    try:
        with render.OffscreenRenderer(scene.model, width, height) as renderer:
            cam = render.follow_camera_path(motion.root_pos, motion.object_pos if obj is not None else None,
                                            motion.fps, None, motion.root_rot)
            tiles = []
            tile_at = set(np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int).tolist())
            with render.video_writer(out_dir / "replay", motion.fps / max(stride, 1), fmt) as writer:
                for i, t in enumerate(tqdm(frames, desc=f"replay {motion.name}", unit="frame", disable=not progress)):
                    set_robot_qpos(scene, data, motion, t)
                    image = renderer.render(data, cam.camera(t))
                    writer.append(image)
                    if i in tile_at:
                        tiles.append(image)
            summary["video"] = str(writer.path)
            summary["contact_sheet"] = str(render.write_png(out_dir / "contact_sheet.png", render.contact_sheet(tiles)))
    except render.RenderUnavailable as exc:
        summary["video"] = None
        summary["video_reason"] = str(exc)
    with atomic_output(out_dir / "summary.json") as handle:
        handle.write(json.dumps(summary, indent=2).encode())
    return summary
