"""Importers for motion from datasets and generators: SMPL-X / SMPL-H parameters and joint
positions (with object poses beside them), each to a validated ``HOIMotion`` at the control rate.

``import_motion(path, fmt, ...)`` is the one entry point (``intermimic motion import``).
"""

from __future__ import annotations

import os

from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError

FORMATS: tuple[str, ...] = ("smplx", "smplh", "joints")


def import_motion(path: str | os.PathLike[str], fmt: str, *, fps: float | None = None, up: str | None = None,
                  object_name: str | None = None, model: str | os.PathLike[str] | None = None) -> HOIMotion:
    """A source file as a clip. ``up`` defaults to z for SMPL files (AMASS) and y for joints
    (HumanML3D); ``model`` is an SMPL-X / SMPL-H ``.npz`` model file or folder (SMPL only)."""
    if fmt in ("smplx", "smplh"):
        from intermimic_policy.motion.importers.smpl_params import import_smpl

        return import_smpl(path, fmt, fps=fps, up=up or "z", object_name=object_name, model=model)
    if fmt == "joints":
        if model is not None:
            raise MotionError("--model applies to smplx / smplh sources only")
        from intermimic_policy.motion.importers.joints import import_joints

        return import_joints(path, fps=fps, up=up or "y", object_name=object_name)
    raise MotionError(f"unknown import format {fmt!r}, expected one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "import_motion"]
