"""One humanoid skeleton for a set of clips of one subject (``HOIEnvConfig.skeleton="subject"``).

Why: the data's body positions come from each subject's own SMPL-X skeleton, and with the
default skeleton the feet of OMOMO frame 0 float ~10 cm above the floor, so every episode starts
with a drop. An environment trains on many clips at once (a teacher's subject subset), and
builds one scene per object, so it needs ONE skeleton for all of them:

* bones: the robust mean (``smplx_shape.robust_offsets``) of the per-frame bone offsets of every
  frame of every clip: the subject's bones, with frames and clips that disagree voted out;
* geoms follow the bones (``smplx_shape.scale_geoms``);
* feet: each clip's first ``floor_frames`` frames are where it stands on its floor (the data
  normalises the lowest vertex of those frames to z = 0). Each clip gives its own foot-box fit
  (``smplx_shape.fit_feet_to_floor``) for the shared bones; the per-clip boxes are combined by
  their median, so one clip with an odd start does not move every other clip's floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from intermimic_policy.embodiment.fk import bone_offsets_from_pose, forward_kinematics
from intermimic_policy.embodiment.skeleton import Geom, Skeleton, SkeletonError
from intermimic_policy.embodiment.smplx_body import BODY_NAMES
from intermimic_policy.embodiment.smplx_shape import (
    FOOT_BODIES,
    fit_feet_to_floor,
    robust_offsets,
    scale_geoms,
)
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion

# frames per clip that enter the bone estimate (evenly spaced; all frames of short clips)
_FRAMES_PER_CLIP = 600


def _poses(motion: HOIMotion) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.from_numpy(np.asarray(motion.body_pos, dtype=np.float64))
    rot = quat.normalize(torch.from_numpy(np.asarray(motion.body_rot, dtype=np.float64)))
    if not (torch.isfinite(pos).all() and torch.isfinite(rot).all()):
        raise SkeletonError(f"{motion.name or 'motion'}: body poses contain NaN or inf")
    return pos, rot


def subject_skeleton(motions: Sequence[HOIMotion], floor_frames: int = 30, name: str | None = None) -> Skeleton:
    """The skeleton whose FK matches the clips' body positions and whose feet meet their floor."""
    if not motions:
        raise SkeletonError("subject skeleton: no clips given")
    per_frame = []
    for m in motions:
        pos, rot = _poses(m)
        keep = np.unique(np.linspace(0, m.num_frames - 1, min(m.num_frames, _FRAMES_PER_CLIP)).astype(int))
        per_frame.append(bone_offsets_from_pose(pos[keep], rot[keep]))
    offsets = robust_offsets(torch.cat(per_frame))
    names = [m.name or f"clip{i}" for i, m in enumerate(motions)]
    label = name or f"subject:{names[0]}" + (f"+{len(names) - 1}" if len(names) > 1 else "")
    base = Skeleton(offsets, scale_geoms(offsets), name=label,
                    meta={"clips": ",".join(names[:8]) + (",..." if len(names) > 8 else ""),
                          "num_clips": str(len(names))})
    fits: list[Skeleton] = []
    for m in motions:
        pos, rot = _poses(m)
        n = max(1, min(floor_frames, m.num_frames))
        fk_pos, fk_rot = forward_kinematics(
            base.offsets, pos[:n, 0], rot[:n, 0], torch.from_numpy(np.asarray(m.joint_rotvec[:n], dtype=np.float64)))
        fitted, report = fit_feet_to_floor(base, fk_pos, fk_rot, floor_z=0.0)
        if not any(math.isnan(v) for v in report.values()):
            fits.append(fitted)
    if not fits:  # no clip starts standing on its floor: keep the feet as the bones give them
        return replace(base, meta={**base.meta, "feet": "not fitted (no standing start)"})
    geoms = list(base.geoms)
    for b in FOOT_BODIES:
        boxes = [f.geoms[b] for f in fits]
        if boxes[0].kind != "box":
            continue
        size = np.median(np.array([g.size for g in boxes]), axis=0)
        pos = np.median(np.array([g.pos for g in boxes]), axis=0)
        geoms[b] = Geom("box", tuple(float(x) for x in size), boxes[0].density,
                        pos=(float(pos[0]), float(pos[1]), float(pos[2])))
    change = {}
    for b in FOOT_BODIES:  # the box's full extent change along the axis it was fitted on
        delta = 2.0 * (np.array(geoms[b].size) - np.array(base.geoms[b].size))
        change[f"foot_change_m.{BODY_NAMES[b]}"] = f"{float(delta[np.argmax(np.abs(delta))]):.4f}"
    return replace(base, geoms=tuple(geoms), meta={**base.meta, "feet_fitted_from": str(len(fits)), **change})
