"""Kinematic replay of a clip in MuJoCo: video, contact sheet, contact-label and distance plot.

The replay is the first look at a clip: does the humanoid hold the object where the contact
labels say (hand-object distance ~0 while a hand is labelled +1)? Is the object mesh in the
frame the clip assumes? Everything is written atomically into one folder:

* ``replay.mp4`` (or ``.gif``): offscreen frames from a camera that follows the humanoid;
* ``contact_sheet.png``: a grid of evenly spaced frames;
* ``contacts.png``: per-body contact labels over time, the object flag, left/right hand-object
  distances (the plot needs no OpenGL, so it is written even when rendering is impossible);
* ``summary.json``: what was written (paths relative to the folder), or why no video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from tqdm import tqdm

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment import smplx_body
from intermimic_policy.embodiment.skeleton import Skeleton, default_skeleton
from intermimic_policy.errors import IntermimicError
from intermimic_policy.jsonio import dump_json
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.sim import kinematic, render
from intermimic_policy.sim.objects import ObjectAsset, load_object
from intermimic_policy.sim.scene import SceneConfig, build_scene

VIDEO_STEM = "replay"
SHEET_FILE = "contact_sheet.png"
PLOT_FILE = "contacts.png"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ReplayConfig:
    width: int = 640
    height: int = 480
    stride: int = 1  # render every Nth frame (the video plays at fps / stride, so in real time)
    video_format: str = "mp4"  # mp4 (falls back to gif without ffmpeg) or gif
    skeleton: str = "default"  # "default" or "clip" (bone lengths fitted to the clip)
    sheet_tiles: int = 12
    sheet_columns: int = 4
    camera: render.FollowCameraConfig = field(default_factory=render.FollowCameraConfig)
    object_cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise IntermimicError(f"replay stride must be >= 1, got {self.stride}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise IntermimicError(f"replay size {self.width}x{self.height} must be within 16..4096 pixels")
        if self.video_format not in ("mp4", "gif"):
            raise IntermimicError(f"replay format must be mp4 or gif, got {self.video_format!r}")
        if self.skeleton not in ("default", "clip"):
            raise IntermimicError(f"replay skeleton must be 'default' or 'clip', got {self.skeleton!r}")


@dataclass(frozen=True)
class ReplayResult:
    out_dir: Path
    frames: int  # frames rendered (= video frames) or that would have been rendered
    video: Path | None
    video_reason: str | None  # why there is no video (None when there is one)
    contact_sheet: Path | None
    plots: tuple[Path, ...]
    summary: Path
    gl_backend: str | None
    hand_distance: np.ndarray  # [T, 2] left/right hand-object distance per clip frame (m)
    object_reason: str | None  # why the object is missing from the replay (None when present)


def replay_motion(
    motion: HOIMotion,
    out_dir: str | Path,
    config: ReplayConfig | None = None,
    obj: ObjectAsset | None = None,
) -> ReplayResult:
    """Replay ``motion`` kinematically and write video, contact sheet, plot and summary."""
    cfg = config or ReplayConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    object_reason = None
    if obj is None:
        try:
            obj = load_object(motion.object_name, cache_dir=cfg.object_cache_dir)
        except IntermimicError as exc:
            object_reason = str(exc)
    scene = build_scene(
        _skeleton(motion, cfg.skeleton), obj,
        SceneConfig(offscreen_width=max(cfg.width, 640), offscreen_height=max(cfg.height, 480)),
    )
    data = mujoco.MjData(scene.model)
    qpos = kinematic.motion_qpos(scene, motion)
    distances = np.full((motion.num_frames, 2), np.nan)
    if obj is not None:
        for f in range(motion.num_frames):
            kinematic.set_qpos(scene, data, qpos[f])
            distances[f] = kinematic.hand_object_distances(scene, data)

    frames = list(range(0, motion.num_frames, cfg.stride))
    video = sheet = None
    gl_backend = reason = None
    try:
        renderer = render.OffscreenRenderer(scene.model, cfg.width, cfg.height)
    except render.RenderUnavailable as exc:
        reason = str(exc)
    else:
        with renderer:
            gl_backend = renderer.backend
            video, sheet = _render(scene, data, motion, qpos, frames, renderer, out, cfg, obj is not None)

    plot = write_contact_plot(out / PLOT_FILE, motion, distances)
    result = ReplayResult(
        out_dir=out, frames=len(frames), video=video, video_reason=reason, contact_sheet=sheet,
        plots=(plot,), summary=out / SUMMARY_FILE, gl_backend=gl_backend, hand_distance=distances,
        object_reason=object_reason,
    )
    _write_summary(result, motion, cfg, scene.object_name)
    return result


def _skeleton(motion: HOIMotion, which: str) -> Skeleton:
    if which == "default":
        return default_skeleton()
    from intermimic_policy.embodiment.smplx_shape import skeleton_from_motion

    return skeleton_from_motion(motion)


def _render(scene: Any, data: mujoco.MjData, motion: HOIMotion, qpos: np.ndarray, frames: list[int],
            renderer: render.OffscreenRenderer, out: Path, cfg: ReplayConfig,
            with_object: bool) -> tuple[Path, Path]:
    path = render.follow_camera_path(motion.root_pos, motion.object_pos if with_object else None,
                                     motion.fps, cfg.camera, motion.root_rot)
    n_tiles = min(cfg.sheet_tiles, len(frames))
    tile_at = set(np.linspace(0, len(frames) - 1, n_tiles).round().astype(int).tolist())
    tiles, labels = [], []
    with render.video_writer(out / VIDEO_STEM, motion.fps / cfg.stride, cfg.video_format) as writer:
        for i, f in enumerate(tqdm(frames, desc=f"replay {motion.name or 'clip'}", unit="frame",
                                   disable=not cfg.progress, leave=False)):
            kinematic.set_qpos(scene, data, qpos[f])
            image = renderer.render(data, path.camera(f))
            writer.append(image)
            if i in tile_at:
                tiles.append(image)
                labels.append(f"frame {f}  t={f / motion.fps:.2f}s")
    sheet = render.write_png(out / SHEET_FILE, render.contact_sheet(tiles, labels, cfg.sheet_columns))
    return writer.path, sheet


def write_contact_plot(path: Path, motion: HOIMotion, distances: np.ndarray) -> Path:
    """Per-body contact labels (heat map), object flag and hand-object distances over time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    t = np.arange(motion.num_frames) / motion.fps
    span = (0.0, max(t[-1], 1.0 / motion.fps))
    fig, (ax_b, ax_o, ax_d) = plt.subplots(
        3, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [7, 0.5, 3]})
    colors = ListedColormap(["#d9534f", "#e6e6e6", "#2e9e5b"])
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], colors.N)
    ax_b.imshow(motion.body_contact.T, aspect="auto", interpolation="nearest", cmap=colors, norm=norm,
                extent=(span[0], span[1], smplx_body.NUM_BODIES - 0.5, -0.5))
    ax_b.set_yticks(range(smplx_body.NUM_BODIES))
    ax_b.set_yticklabels(smplx_body.BODY_NAMES, fontsize=5)
    ax_b.set_title(f"{motion.name or 'clip'}: contact labels ({motion.object_name}, {motion.fps:g} fps)")
    ax_b.legend(handles=[Patch(color="#2e9e5b", label="+1 must touch"), Patch(color="#e6e6e6", label="0 unknown"),
                         Patch(color="#d9534f", label="-1 must not touch")],
                loc="upper right", fontsize=7, framealpha=0.9)
    ax_o.imshow(motion.object_contact[None].astype(np.int8), aspect="auto", interpolation="nearest",
                cmap=colors, norm=norm, extent=(span[0], span[1], 0.5, -0.5))
    ax_o.set_yticks([0])
    ax_o.set_yticklabels(["object flag"], fontsize=7)
    for side, col, bodies in (("left", "#1f77b4", smplx_body.LEFT_HAND_BODIES),
                              ("right", "#ff7f0e", smplx_body.RIGHT_HAND_BODIES)):
        k = 0 if side == "left" else 1
        ax_d.plot(t, distances[:, k], color=col, label=f"{side} hand")
        touching = (motion.body_contact[:, list(bodies)] == 1).any(axis=1)
        ax_d.fill_between(t, 0, 1, where=touching, transform=ax_d.get_xaxis_transform(), color=col,
                          alpha=0.12, step="mid", label=f"{side} hand labelled +1")
    ax_d.axhline(0.0, color="black", lw=0.6)
    finite = distances[np.isfinite(distances)]
    if finite.size:
        ax_d.set_ylim(min(-0.05, float(finite.min()) - 0.01), min(1.5, max(0.1, float(np.percentile(finite, 98)) * 1.1)))
        ax_d.legend(loc="upper right", fontsize=7, ncol=2)
    else:
        ax_d.text(0.5, 0.5, "no object mesh: distances unavailable", transform=ax_d.transAxes, ha="center")
    ax_d.set_ylabel("hand-object distance (m)")
    ax_d.set_xlabel("time (s)")
    ax_d.set_xlim(*span)
    fig.tight_layout()
    try:
        with atomic_output(path) as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def contact_distance_stats(motion: HOIMotion, distances: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Mean hand-object distance per hand in frames labelled +1 (should be ~0) and -1 (should be > 0)."""
    stats: dict[str, dict[str, float | None]] = {}
    for k, (side, bodies) in enumerate((("left", smplx_body.LEFT_HAND_BODIES),
                                        ("right", smplx_body.RIGHT_HAND_BODIES))):
        labels = motion.body_contact[:, list(bodies)]
        touch = (labels == 1).any(axis=1)
        away = (labels == -1).all(axis=1)
        d = distances[:, k]
        stats[side] = {
            "mean_when_touch_m": _mean(d[touch]),
            "mean_when_away_m": _mean(d[away]),
            "min_m": round(float(np.nanmin(d)), 5) if np.isfinite(d).any() else None,
        }
    return stats


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 5) if x.size else None


def _write_summary(result: ReplayResult, motion: HOIMotion, cfg: ReplayConfig, object_name: str | None) -> None:
    def rel(p: Path | None) -> str | None:
        return None if p is None else p.name

    summary = {
        "clip": motion.name,
        "source": motion.source,
        "object": object_name,
        "object_reason": result.object_reason,
        "fps": motion.fps,
        "clip_frames": motion.num_frames,
        "stride": cfg.stride,
        "frames": result.frames,
        "video": rel(result.video),
        "video_reason": result.video_reason,
        "video_fps": motion.fps / cfg.stride,
        "contact_sheet": rel(result.contact_sheet),
        "plots": [rel(p) for p in result.plots],
        "gl_backend": result.gl_backend,
        "skeleton": cfg.skeleton,
        "size": [cfg.width, cfg.height],
        "hand_object_distance": contact_distance_stats(motion, result.hand_distance),
    }
    dump_json(result.summary, summary)  # strict JSON: a NaN statistic is null, never a crash

