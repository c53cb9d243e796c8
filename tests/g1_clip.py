"""A short OMOMO_new clip retargeted to the G1 (shared by the G1 tests; cached per folder)."""

from __future__ import annotations

from pathlib import Path

CLIP = "sub2_largetable_000.pt"
FRAMES = 45


def retargeted_g1_clip(motions_root: Path, out_dir: Path, frames: int = FRAMES) -> Path:
    """``out_dir/g1_clip.npz``: the first ``frames`` frames of ``CLIP`` retargeted to the G1."""
    from intermimic_policy.embodiment.robot import load_robot
    from intermimic_policy.motion.io import load_motion
    from intermimic_policy.motion.objects import load_object
    from intermimic_policy.motion.robot_motion import save_robot_motion
    from intermimic_policy.retarget.geometry import object_geometry
    from intermimic_policy.retarget.retarget import retarget_clip

    path = out_dir / "g1_clip.npz"
    if path.is_file():
        return path
    src = motions_root / "OMOMO_new" / CLIP
    assert src.is_file(), f"{src} is missing from the shared data"
    motion = load_motion(src).slice(0, frames)
    result = retarget_clip(load_robot("g1"), motion, object_geometry(load_object(motion.object_name)))
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_robot_motion(result.motion, path)
