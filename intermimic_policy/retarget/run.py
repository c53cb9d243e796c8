"""Retarget many clips and write their robot motions, a report and plots (what the CLI and the
benchmark call)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment.robot import RobotDescription, load_robot
from intermimic_policy.motion.io import load_motion
from intermimic_policy.motion.objects import load_object
from intermimic_policy.motion.robot_motion import save_robot_motion
from intermimic_policy.retarget.geometry import ObjectGeometry, object_geometry
from intermimic_policy.retarget.metrics import evaluate
from intermimic_policy.retarget.retarget import RetargetConfig, RetargetResult, retarget_clip

# Overall figures: frame-weighted means, except maxima and counts.
_MEAN_KEYS = ("contact_error_cm", "source_contact_error_cm", "foot_skate_cm_s", "source_foot_skate_cm_s")
_MAX_KEYS = ("contact_error_max_cm", "penetration_cm", "floor_penetration_cm", "object_penetration_cm")


def summarize(per_clip: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = list(per_clip.values())
    frames = sum(r["frames"] for r in rows)
    out: dict[str, Any] = {"clips": len(rows), "frames": frames}
    cpu = sum(r["cpu_seconds"] for r in rows)
    out["frames_per_s"] = round(frames / max(cpu, 1e-9), 1)
    out["frames_per_s_with_targets"] = round(frames / max(cpu + sum(r["targets_cpu_seconds"] for r in rows), 1e-9), 1)
    out["frames_per_wall_s"] = round(frames / max(sum(r["wall_seconds"] for r in rows), 1e-9), 1)
    for key in _MEAN_KEYS:
        weight = "contact_frames" if "contact" in key else "frames"
        pairs = [(r[key], r[weight]) for r in rows if r[key] is not None and r[weight] > 0]
        total = sum(w for _, w in pairs)
        out[key] = round(sum(v * w for v, w in pairs) / total, 3) if total else None
    for key in _MAX_KEYS:
        vals = [r[key] for r in rows if r[key] is not None]
        out[key] = max(vals) if vals else None
    out["joint_limit_violations"] = sum(r["joint_limit_violations"] for r in rows)
    return out


def write_plot(path: Path, result: RetargetResult, desc: RobotDescription, geom: ObjectGeometry | None) -> Path:
    """Hand-to-surface distance (robot and source) and foot heights over the clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pinocchio as pin
    from scipy.spatial.transform import Rotation

    m, tg = result.motion, result.targets
    data = desc.model.createData()
    hand_fid = [desc.frame_id(h.site) for h in desc.config.hands]
    foot_fid = [desc.frame_id(f.site) for f in desc.config.feet]
    q = m.qpos()
    hands = np.zeros((m.num_frames, len(hand_fid), 3))
    feet = np.zeros((m.num_frames, len(foot_fid), 3))
    for t in range(m.num_frames):
        pin.framesForwardKinematics(desc.model, data, q[t])
        hands[t] = [data.oMf[f].translation for f in hand_fid]
        feet[t] = [data.oMf[f].translation for f in foot_fid]
    time = np.arange(m.num_frames) / m.fps
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    if geom is not None:
        r = Rotation.from_quat(m.object_rot.astype(np.float64)).as_matrix()
        for h, name in enumerate(m.hand_names):
            local = np.einsum("tji,tj->ti", r, hands[:, h] - m.object_pos)
            dist = geom.surface.closest(local)[1] * 100
            line, = axes[0].plot(time, dist, label=f"robot {name}")
            axes[0].plot(time, tg.source_hand_dist[:, h] * 100, ":", color=line.get_color(), label=f"source {name}")
            on = tg.hand_contact[:, h]
            axes[0].fill_between(time, 0, 1, where=on, color=line.get_color(), alpha=0.12,
                                 transform=axes[0].get_xaxis_transform())
    axes[0].set_ylabel("hand to surface (cm)")
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title(f"{m.name} on {m.robot}: shaded = labelled contact")
    for f, name in enumerate(m.foot_names):
        line, = axes[1].plot(time, feet[:, f, 2] * 100, label=f"{name} sole height")
        axes[1].fill_between(time, 0, 1, where=tg.foot_planted[:, f], color=line.get_color(), alpha=0.12,
                             transform=axes[1].get_xaxis_transform())
    axes[1].set_ylabel("sole height (cm)")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return path


def retarget_files(clips: Sequence[str | os.PathLike[str]], robot: str, out: str | os.PathLike[str],
                   config: RetargetConfig | None = None, plots: bool = True, progress: bool = True,
                   write: bool = True) -> dict[str, Any]:
    """Retarget every clip to ``robot``; returns (and writes ``out/report.json``) the report."""
    desc = load_robot(robot)
    out_dir = Path(out)
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    geoms: dict[str, ObjectGeometry] = {}
    per_clip: dict[str, dict[str, Any]] = {}
    for path in tqdm(list(clips), desc=f"retarget to {desc.name}", unit="clip", disable=not progress):
        motion = load_motion(path)
        name = motion.name or Path(path).stem
        geom = geoms.get(motion.object_name)
        if geom is None and motion.object_name:
            geom = geoms[motion.object_name] = object_geometry(load_object(motion.object_name))
        result = retarget_clip(desc, motion, geom, config)
        row = evaluate(desc, result.motion, result.targets, geom)
        row["frames_per_s"] = round(result.frames_per_s, 1)
        row["cpu_seconds"] = round(result.cpu_seconds, 4)
        row["targets_cpu_seconds"] = round(result.targets_cpu_seconds, 4)
        row["wall_seconds"] = round(result.seconds, 4)
        if write:
            row["motion"] = str(save_robot_motion(result.motion, out_dir / f"{name}.npz"))
            if plots:
                row["plot"] = str(write_plot(out_dir / f"{name}_retarget.png", result, desc, geom))
        per_clip[name] = row
    report = {"robot": desc.name, "robot_hash": desc.content_hash, "overall": summarize(per_clip), "clips": per_clip}
    if write:
        with atomic_output(out_dir / "report.json") as handle:
            handle.write(json.dumps(report, indent=2).encode())
    return report
