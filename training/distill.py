"""Reference distillation (spec 9.1): each teacher tracks each clip of its subset from frame 0 with
its mean action; the simulated state of every control step becomes the refined clip.

Why: the refined clips are on the simulated body (one embodiment for all subjects) and physically
consistent (no floating contacts, no penetration the physics would not allow), so the student
learns from references it can actually reach.

Per clip it writes ``<out>/<teacher>/<clip>.npz`` (our format) and, with ``write_pt``,
``<out>/<teacher>/OMOMO_retarget/<clip>.pt`` (InterMimic's layout, empty row 0, through
``motion.intermimic_pt``). Contact labels are copied from the MoCap frame by frame. A rollout that
terminates early follows ``DistillConfig.early_termination``: ``keep_prefix`` keeps the frames
before the failing step (``meta["distill_status"] = "prefix"``), ``drop`` writes nothing; both
are counted. A per-clip table (``table.md``, in the stage outputs) and one plot per clip compare
refined and MoCap: E_h, E_o, hand-object distance at labelled hand contacts, foot height and
floor penetration (of the foot body origins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from intermimic_policy.embodiment.smplx_body import BODY_NAMES, LEFT_HAND_BODIES, RIGHT_HAND_BODIES
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.intermimic_pt import save_intermimic_pt
from intermimic_policy.motion.npz_format import save_npz
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from intermimic_policy.sim.metrics import human_error, object_error
from intermimic_policy.sim.subject import subject_skeleton
from intermimic_policy.state.interaction_graph import object_points_world
from training.student.config import DistillConfig

FOOT_BODIES: tuple[int, ...] = tuple(BODY_NAMES.index(n) for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"))
HAND_BODIES = LEFT_HAND_BODIES + RIGHT_HAND_BODIES


@dataclass
class Rollout:
    """The simulated frames of one clip (``frames`` long) and how the rollout ended."""

    clip: HOIMotion
    body_pos: np.ndarray
    body_rot: np.ndarray
    joint_rotvec: np.ndarray
    object_pos: np.ndarray
    object_rot: np.ndarray
    terminated: bool  # the rollout failed before the clip's last frame
    points: np.ndarray  # object-frame surface points the env used [P, 3]

    @property
    def frames(self) -> int:
        return int(self.body_pos.shape[0])


def rollout_clips(clips: Sequence[HOIMotion], policy: Any, *, backend: str = "mujoco", seed: int = 0,
                  max_worlds: int = 64, progress: bool = True) -> list[Rollout]:
    """Run ``policy`` (mean actions, ``policy.act``) on every clip from frame 0, recording each step.

    Worlds are batched per object; the env gets the policy's trained settings (its
    ``config_overrides``), the subject skeleton fitted to all ``clips`` when it was trained with one.
    """
    overrides = dict(getattr(policy, "config_overrides", {}) or {})
    skeleton = subject_skeleton(list(clips)) if overrides.get("skeleton") == "subject" else None
    by_object: dict[str, list[int]] = {}
    for i, m in enumerate(clips):
        by_object.setdefault(m.object_name, []).append(i)
    out: dict[int, Rollout] = {}
    bar = tqdm(total=sum(m.num_frames for m in clips), desc="distill", unit="frame", disable=not progress)
    try:
        for ids in by_object.values():
            group = [clips[i] for i in ids]
            for start in range(0, len(group), max_worlds):
                batch = group[start:start + max_worlds]
                cfg = eval_config(num_worlds=len(batch), backend=backend, seed=seed, **overrides)
                env = HOIEnv(cfg, batch, skeleton=skeleton)
                try:
                    for j, r in enumerate(_rollout_batch(env, policy, batch, seed, bar)):
                        out[ids[start + j]] = r
                finally:
                    env.close()
    finally:
        bar.close()
    return [out[i] for i in range(len(clips))]


def _rollout_batch(env: HOIEnv, policy: Any, clips: list[HOIMotion], seed: int, bar: tqdm) -> list[Rollout]:
    n = len(clips)
    obs = env.reset(torch.arange(n), clip_ids=torch.arange(n), start_frames=torch.zeros(n, dtype=torch.long))
    if hasattr(policy, "reset"):
        policy.reset(env, seed)
    rec: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(n)]
    terminated = [False] * n

    def record(worlds: list[int]) -> None:
        s = env.sim_state()
        arrays = [a.cpu().numpy() for a in (s.body_pos, s.body_rot, s.joint_rotvec, s.object_pos, s.object_rot)]
        for w in worlds:
            rec[w].append(tuple(a[w].copy() for a in arrays))

    record(list(range(n)))
    bar.update(n)
    while bool(env.active.any()):
        live = env.active.clone()
        obs, _, term, _, _ = env.step(policy.act(env, obs))
        keep = [w for w in range(n) if bool(live[w]) and not bool(term[w])]
        for w in range(n):
            if bool(live[w]) and bool(term[w]):
                terminated[w] = True  # the failing frame is not part of the refined clip
        record(keep)
        bar.update(len(keep))
    lib = env.motion_library
    rollouts = []
    for w, clip in enumerate(clips):
        body_pos, body_rot, joint_rotvec, object_pos, object_rot = (np.stack(c).astype(np.float32)
                                                                   for c in zip(*rec[w]))
        points = lib.points[int(lib.clip_object[w])].cpu().numpy()
        rollouts.append(Rollout(clip, body_pos, body_rot, joint_rotvec, object_pos, object_rot,
                                terminated=terminated[w], points=points))
    return rollouts


def refined_motion(r: Rollout, teacher: str) -> HOIMotion:
    """The rollout as a clip: simulated poses, the MoCap's contact labels of the same frames."""
    n, src = r.frames, r.clip
    status = "prefix" if r.terminated else "complete"
    meta = {**src.meta, "distilled_by": teacher, "distill_status": status, "mocap_frames": str(src.num_frames),
            "mocap_source": src.source}
    return HOIMotion(
        fps=src.fps, root_pos=r.body_pos[:, 0].copy(), root_rot=r.body_rot[:, 0].copy(), joint_rotvec=r.joint_rotvec,
        body_pos=r.body_pos, body_rot=r.body_rot, object_pos=r.object_pos, object_rot=r.object_rot,
        object_name=src.object_name, body_contact=np.ascontiguousarray(src.body_contact[:n]),
        object_contact=np.ascontiguousarray(src.object_contact[:n]), name=src.name, source="distill", meta=meta)


_EXAMPLE_CACHE: dict[int | None, HOIMotion] = {}


def load_mocap(sources: Sequence[str], frames: int | None) -> list[HOIMotion]:
    """``training.subsets.load_clips`` with the bundled example built once per process (its IK
    takes seconds, and the distill, student and evaluate stages all read it)."""
    from training.subsets import EXAMPLE_CLIP, load_clip

    out = []
    for s in sources:
        if s == EXAMPLE_CLIP:
            if frames not in _EXAMPLE_CACHE:
                _EXAMPLE_CACHE[frames] = load_clip(s, frames).motion
            out.append(_EXAMPLE_CACHE[frames])
        else:
            out.append(load_clip(s, frames).motion)
    return out


# -- refined vs MoCap -----------------------------------------------------------------------------
def _hand_object_distance(m: HOIMotion, points: np.ndarray) -> np.ndarray:
    """Per frame: mean distance (m) of the hand bodies labelled in contact to the object's surface
    points (NaN where no hand body is labelled)."""
    world = object_points_world(torch.from_numpy(points).float(), torch.from_numpy(m.object_pos).float(),
                                torch.from_numpy(m.object_rot).float())  # [T, P, 3]
    hands = torch.from_numpy(m.body_pos[:, list(HAND_BODIES)]).float()  # [T, H, 3]
    d = torch.cdist(hands, world).min(-1).values.numpy()  # [T, H]
    labelled = m.body_contact[:, list(HAND_BODIES)] > 0
    with np.errstate(invalid="ignore"):
        out = np.where(labelled, d, 0.0).sum(1) / labelled.sum(1)
    return np.where(labelled.any(1), out, np.nan)


def clip_curves(refined: HOIMotion, mocap: HOIMotion, points: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame curves over the refined clip's frames."""
    n = refined.num_frames
    ref = mocap.slice(0, n) if mocap.num_frames > n else mocap
    e_h = human_error(torch.from_numpy(refined.body_pos), torch.from_numpy(ref.body_pos)).numpy()
    pts = torch.from_numpy(points).float()
    sim_pts = object_points_world(pts, torch.from_numpy(refined.object_pos).float(), torch.from_numpy(refined.object_rot).float())
    ref_pts = object_points_world(pts, torch.from_numpy(ref.object_pos).float(), torch.from_numpy(ref.object_rot).float())
    e_o = object_error(sim_pts, ref_pts).numpy()
    return {
        "E_h": e_h, "E_o": e_o,
        "hand_obj_refined": _hand_object_distance(refined, points), "hand_obj_mocap": _hand_object_distance(ref, points),
        "foot_z_refined": refined.body_pos[:, list(FOOT_BODIES), 2].min(1),
        "foot_z_mocap": ref.body_pos[:, list(FOOT_BODIES), 2].min(1),
    }


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def clip_metrics(curves: dict[str, np.ndarray]) -> dict[str, float]:
    """Summary numbers (cm) of the per-frame curves."""
    cm = 100.0
    return {
        "E_h_cm": _nanmean(curves["E_h"]) * cm, "E_o_cm": _nanmean(curves["E_o"]) * cm,
        "hand_obj_at_contact_cm_refined": _nanmean(curves["hand_obj_refined"]) * cm,
        "hand_obj_at_contact_cm_mocap": _nanmean(curves["hand_obj_mocap"]) * cm,
        "foot_height_cm_refined": _nanmean(curves["foot_z_refined"]) * cm,
        "foot_height_cm_mocap": _nanmean(curves["foot_z_mocap"]) * cm,
        "penetration_cm_refined": float(np.clip(-curves["foot_z_refined"], 0, None).mean()) * cm,
        "penetration_cm_mocap": float(np.clip(-curves["foot_z_mocap"], 0, None).mean()) * cm,
    }


def plot_clip(curves: dict[str, np.ndarray], path: Path, title: str, fps: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(curves["E_h"])) / fps
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, 100 * curves["E_h"], label="E_h (key bodies)")
    axes[0].plot(t, 100 * curves["E_o"], label="E_o (object points)")
    axes[0].set_ylabel("refined vs MoCap (cm)")
    axes[1].plot(t, 100 * curves["hand_obj_mocap"], label="MoCap")
    axes[1].plot(t, 100 * curves["hand_obj_refined"], label="refined")
    axes[1].set_ylabel("hand-object dist.\nat contacts (cm)")
    axes[2].plot(t, 100 * curves["foot_z_mocap"], label="MoCap")
    axes[2].plot(t, 100 * curves["foot_z_refined"], label="refined")
    axes[2].axhline(0.0, color="k", lw=0.5)
    axes[2].set_ylabel("lowest foot body z (cm)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path


# -- one teacher ------------------------------------------------------------------------------------
def distill_teacher(name: str, policy: Any, clips: Sequence[HOIMotion], sources: Sequence[str], out_dir: Path,
                    cfg: DistillConfig, *, backend: str = "mujoco", seed: int = 0,
                    progress: bool = True) -> list[dict[str, Any]]:
    """Distill one teacher's clips into ``out_dir``; one record per clip (written or dropped)."""
    rollouts = rollout_clips(clips, policy, backend=backend, seed=seed, max_worlds=cfg.max_worlds, progress=progress)
    rows = []
    (out_dir / "OMOMO_retarget").mkdir(parents=True, exist_ok=True)
    for r, source in zip(rollouts, sources):
        motion = refined_motion(r, name)
        status = motion.meta["distill_status"]
        row: dict[str, Any] = {"teacher": name, "clip": motion.name, "source": source, "status": status,
                               "frames": motion.num_frames, "mocap_frames": r.clip.num_frames,
                               "npz": None, "pt": None}
        if r.terminated and (cfg.early_termination == "drop" or motion.num_frames < cfg.min_frames):
            row["status"] = "dropped"
            rows.append(row)
            continue
        curves = clip_curves(motion, r.clip, r.points)
        row["metrics"] = clip_metrics(curves)
        row["npz"] = str(save_npz(motion, out_dir / f"{motion.name}.npz"))
        if cfg.write_pt:
            row["pt"] = str(save_intermimic_pt(motion, out_dir / "OMOMO_retarget" / f"{motion.name}.pt",
                                               variant="OMOMO_retarget"))
        if cfg.plots:
            row["plot"] = str(plot_clip(curves, out_dir / "plots" / f"{motion.name}.png",
                                        f"{name}: {motion.name} ({status}, {motion.num_frames}/{r.clip.num_frames} frames)",
                                        motion.fps))
        rows.append(row)
    return rows


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The per-clip table, refined against MoCap."""
    head = ("| teacher | clip | status | frames | E_h cm | E_o cm | hand-obj cm (ref / MoCap) | "
            "foot z cm (ref / MoCap) | penetration cm (ref / MoCap) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        m = r.get("metrics")
        if not m:
            lines.append(f"| {r['teacher']} | {r['clip']} | {r['status']} | {r['frames']}/{r['mocap_frames']} |"
                         + " - |" * 5)
            continue
        lines.append(
            f"| {r['teacher']} | {r['clip']} | {r['status']} | {r['frames']}/{r['mocap_frames']} | {m['E_h_cm']:.2f} | "
            f"{m['E_o_cm']:.2f} | {m['hand_obj_at_contact_cm_refined']:.2f} / {m['hand_obj_at_contact_cm_mocap']:.2f} | "
            f"{m['foot_height_cm_refined']:.2f} / {m['foot_height_cm_mocap']:.2f} | "
            f"{m['penetration_cm_refined']:.2f} / {m['penetration_cm_mocap']:.2f} |")
    return "\n".join(lines) + "\n"


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    out = {"complete": 0, "prefix": 0, "dropped": 0}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out
