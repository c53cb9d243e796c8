"""Subject-specific skeletons: from a clip's own body poses, or from SMPL-X shape parameters.

Why: ``OMOMO``/``OMOMO_new`` body positions come from each subject's SMPL-X skeleton, about 3 cm
(mean) away from the default humanoid's FK (spec 1.3), and the default feet float 5-9 cm above
the clip's floor. A humanoid built from the subject's own bones tracks the reference exactly.

Geoms follow the bones: each body's geom is mapped by the similarity (rotation + uniform scale)
that takes the default bone to the subject bone it hangs on (its first child, or its own bone for
leaves), so capsules stay on their bones; radii scale with the subject's overall size (trunk +
leg length ratio), so one odd bone does not make a limb fat or thin. The feet boxes are then
deepened (or thinned) along their most vertical axis until they touch the floor where the
subject's sole is: the clip's floor (InterMimic normalises the lowest vertex of the first 30
frames to z = 0) or, for SMPL-X, the lowest vertex of the rest mesh.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from intermimic_policy.embodiment.fk import bone_offsets_from_pose, forward_kinematics, geom_bottom_z
from intermimic_policy.embodiment.skeleton import Geom, Skeleton, SkeletonError, children, default_skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, NUM_BODIES, body_index
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat

if TYPE_CHECKING:
    from intermimic_policy.motion.hoi_motion import HOIMotion

FOOT_BODIES: tuple[int, ...] = tuple(body_index(n) for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"))
# Bodies whose summed bone lengths measure overall size (pelvis->head and one leg).
_SIZE_CHAIN: tuple[int, ...] = tuple(
    body_index(n) for n in ("Torso", "Spine", "Chest", "Neck", "Head", "L_Hip", "L_Knee", "L_Ankle")
)
_MAX_FOOT_CHANGE_M = 0.08

# SMPL-X joint index (0..54) of each of our 52 bodies. SMPL-X order: body 0..21, jaw/eyes 22..24,
# left hand 25..39, right hand 40..54, each hand index, middle, pinky, ring, thumb (1..3): ours too.
SMPLX_JOINT_OF_BODY: tuple[int, ...] = (
    0, 1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12, 15, 13, 16, 18, 20, *range(25, 40),
    14, 17, 19, 21, *range(40, 55),
)
# SMPL-X is y-up, facing +z, subject's left +x; ours is z-up, facing +x, left +y.
SMPLX_TO_OURS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class SMPLXModelError(IntermimicError, ValueError):
    """An SMPL-X model file that is missing or unusable."""


# -- geometry ------------------------------------------------------------------------------


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation matrix taking direction a to direction b."""
    a = a / max(np.linalg.norm(a), 1e-12)
    b = b / max(np.linalg.norm(b), 1e-12)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1.0 + 1e-9:  # opposite: turn pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _size_of(offsets: np.ndarray) -> float:
    return float(np.linalg.norm(offsets[list(_SIZE_CHAIN)], axis=-1).sum())


def scale_geoms(offsets: np.ndarray, base: Skeleton | None = None) -> tuple[Geom, ...]:
    """Geoms of ``base`` (default skeleton) moved onto the bones given by ``offsets`` [52, 3]."""
    base = base if base is not None else default_skeleton()
    offsets = np.asarray(offsets, dtype=np.float64)
    thickness = _size_of(offsets) / _size_of(base.offsets)
    out = []
    for b, g in enumerate(base.geoms):
        kids = children(b)
        ref = kids[0] if kids else b
        old, new = base.offsets[ref], offsets[ref]
        ratio = float(np.linalg.norm(new)) / max(float(np.linalg.norm(old)), 1e-9)
        rot = _align(old, new)
        pts = (ratio * (rot @ g.points().T)).T
        if b == 0:
            pts = g.points()  # the pelvis sphere stays centred on the root
        size_scale = ratio if g.kind == "box" else thickness
        out.append(g.with_points(pts, size_scale))
    return tuple(out)


def fit_feet_to_floor(
    skeleton: Skeleton, body_pos: torch.Tensor, body_rot: torch.Tensor, floor_z: float = 0.0
) -> tuple[Skeleton, dict[str, float]]:
    """Deepen/thin each foot box so its lowest point over the given frames is at ``floor_z``.

    body_pos [T, 52, 3], body_rot [T, 52, 4]: frames in which the feet stand on the floor (the
    subject's own skeleton pose). Each box is extended along its local axis closest to vertical
    in the frame where it is lowest, which lowers that frame's bottom exactly by the gap. Changes
    larger than 8 cm are not applied (the frames are then not standing ones) and reported as NaN.
    """
    geoms = list(skeleton.geoms)
    report: dict[str, float] = {}
    for _ in range(2):  # a second pass absorbs the rotation of the box's other extents
        bottoms = geom_bottom_z(geoms, body_pos, body_rot)  # [T, 52]
        for b in FOOT_BODIES:
            g = geoms[b]
            if g.kind != "box":
                continue
            t = int(torch.argmin(bottoms[:, b]))
            gap = float(bottoms[t, b]) - floor_z
            down_local = quat.rotate_inverse(
                body_rot[t, b], torch.tensor([0.0, 0.0, -1.0], dtype=body_rot.dtype)
            ).numpy()
            k = int(np.argmax(np.abs(down_local)))
            c = float(down_local[k])
            delta = gap / abs(c)
            half = list(g.size)
            if abs(gap) > _MAX_FOOT_CHANGE_M or half[k] + 0.5 * delta < 0.25 * half[k]:
                report[BODY_NAMES[b]] = math.nan
                continue
            half[k] += 0.5 * delta
            pos = list(g.pos)
            pos[k] += math.copysign(0.5 * delta, c)
            geoms[b] = Geom("box", tuple(half), g.density, pos=(pos[0], pos[1], pos[2]))
            if not math.isnan(report.get(BODY_NAMES[b], 0.0)):
                report[BODY_NAMES[b]] = report.get(BODY_NAMES[b], 0.0) + delta
    return replace(skeleton, geoms=tuple(geoms)), report


# -- from a clip -----------------------------------------------------------------------------


def robust_offsets(per_frame: torch.Tensor) -> np.ndarray:
    """Robust mean over frames of per-frame offsets [T, 52, 3]: mean of the frames within
    3 median absolute deviations of the median (at least 0.1 mm), per body."""
    x = per_frame.detach().double()
    med = x.median(dim=0).values
    dev = (x - med).norm(dim=-1)  # [T, 52]
    mad = dev.median(dim=0).values
    keep = (dev <= torch.clamp(3.0 * mad, min=1e-4)).to(x.dtype).unsqueeze(-1)
    mean = (x * keep).sum(0) / keep.sum(0).clamp_min(1.0)
    return mean.numpy()


def skeleton_from_motion(
    motion: HOIMotion, fit_feet: bool = True, floor_frames: int = 30, name: str | None = None
) -> Skeleton:
    """The subject's skeleton, estimated from a clip's own body positions and rotations.

    Bone offsets are ``R_parent^T (p_b - p_parent)`` averaged robustly over frames; geoms follow
    the bones (:func:`scale_geoms`); with ``fit_feet`` the foot boxes meet z = 0 over the first
    ``floor_frames`` frames (the data's floor, see the module doc).
    """
    pos = torch.from_numpy(np.asarray(motion.body_pos, dtype=np.float64))
    rot = quat.normalize(torch.from_numpy(np.asarray(motion.body_rot, dtype=np.float64)))
    if not (torch.isfinite(pos).all() and torch.isfinite(rot).all()):
        raise SkeletonError(f"{motion.name or 'motion'}: body poses contain NaN or inf")
    offsets = robust_offsets(bone_offsets_from_pose(pos, rot))
    label = name or f"subject:{motion.name or 'clip'}"
    sk = Skeleton(offsets, scale_geoms(offsets), name=label, meta={"clip": motion.name, "format": motion.source})
    if not fit_feet:
        return sk
    n = max(1, min(floor_frames, motion.num_frames))
    fk_pos, fk_rot = forward_kinematics(
        sk.offsets, pos[:n, 0], rot[:n, 0],
        torch.from_numpy(np.asarray(motion.joint_rotvec[:n], dtype=np.float64)),
    )
    sk, report = fit_feet_to_floor(sk, fk_pos, fk_rot, floor_z=0.0)
    meta = dict(sk.meta)
    meta.update({f"foot_change_m.{k}": f"{v:.4f}" for k, v in report.items()})
    return replace(sk, meta=meta)


# -- from SMPL-X -----------------------------------------------------------------------------


def _smplx_file(model_path: str | Path, gender: str) -> Path:
    path = Path(model_path).expanduser()
    if path.is_dir():
        path = path / f"SMPLX_{gender.upper()}.npz"
    if not path.is_file():
        raise SMPLXModelError(f"SMPL-X model file {path} does not exist")
    if path.suffix != ".npz":
        raise SMPLXModelError(f"{path}: only the .npz release of SMPL-X is read (pickle files are not loaded)")
    return path


def smplx_rest_joints(model_path: str | Path, betas: np.ndarray | list[float],
                      gender: str = "neutral") -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X rest-pose joints [55, 3] and vertices [V, 3] for ``betas``, in the model's frame.

    Only numeric arrays are read (``allow_pickle=False``: SMPL-X files are user files), and the
    shape blend and joint regression are smplx's own (``smplx.lbs``).
    """
    from smplx.lbs import blend_shapes, vertices2joints

    path = _smplx_file(model_path, gender)
    try:
        with np.load(path, allow_pickle=False) as data:
            v_template = np.asarray(data["v_template"], dtype=np.float64)
            shapedirs = np.asarray(data["shapedirs"], dtype=np.float64)
            j_regressor = np.asarray(data["J_regressor"], dtype=np.float64)
    except KeyError as exc:
        raise SMPLXModelError(f"{path}: missing array {exc}") from exc
    except (ValueError, OSError) as exc:
        raise SMPLXModelError(f"{path}: not a readable SMPL-X .npz ({exc})") from exc
    if shapedirs.ndim == 2:
        shapedirs = shapedirs[:, :, None]
    nv = v_template.shape[0]
    if v_template.shape != (nv, 3) or shapedirs.shape[:2] != (nv, 3) or j_regressor.shape[1:] != (nv,):
        raise SMPLXModelError(
            f"{path}: inconsistent shapes v_template {v_template.shape}, shapedirs {shapedirs.shape}, "
            f"J_regressor {j_regressor.shape}"
        )
    if j_regressor.shape[0] < 55:
        raise SMPLXModelError(f"{path}: J_regressor has {j_regressor.shape[0]} joints, SMPL-X needs 55")
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    # smplx's rule: fewer than 300 shape columns means 10 shape (+ 10 expression) coefficients
    shape_dims = 10 if shapedirs.shape[-1] < 300 else 300
    shape_dims = min(shape_dims, shapedirs.shape[-1])
    if b.size > shape_dims or not np.isfinite(b).all():
        raise SMPLXModelError(f"{path}: got {b.size} betas (finite values needed), model has {shape_dims}")
    betas_t = torch.from_numpy(b)[None]
    v = torch.from_numpy(v_template)[None] + blend_shapes(betas_t, torch.from_numpy(shapedirs[:, :, : b.size]))
    joints = vertices2joints(torch.from_numpy(j_regressor), v)
    return joints[0, :55].numpy(), v[0].numpy()


def skeleton_from_smplx(
    model_path: str | Path, betas: np.ndarray | list[float], gender: str = "neutral", fit_feet: bool = True
) -> Skeleton:
    """The humanoid skeleton of an SMPL-X body with shape ``betas`` (rest pose, z-up, facing +x).

    Offsets are differences of SMPL-X rest joints (all body frames are parallel at rest, as in
    our table); fingers come from the hand joints. With ``fit_feet`` the foot boxes reach the
    lowest vertex of the rest mesh (the sole).
    """
    joints, verts = smplx_rest_joints(model_path, betas, gender)
    j = joints[list(SMPLX_JOINT_OF_BODY)] @ SMPLX_TO_OURS.T
    from intermimic_policy.embodiment.smplx_body import PARENTS

    offsets = np.zeros((NUM_BODIES, 3))
    offsets[1:] = j[1:] - j[list(PARENTS[1:])]
    beta_text = ",".join(f"{x:g}" for x in np.asarray(betas, dtype=np.float64).reshape(-1))
    sk = Skeleton(offsets, scale_geoms(offsets), name=f"smplx:{gender}",
                  meta={"source": str(model_path), "betas": beta_text})
    if not fit_feet:
        return sk
    sole = float((verts @ SMPLX_TO_OURS.T)[:, 2].min() - j[0, 2])
    zero = torch.zeros(51, 3, dtype=torch.float64)
    pos, rot = forward_kinematics(sk.offsets, torch.zeros(3, dtype=torch.float64),
                                  torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), zero)
    sk, report = fit_feet_to_floor(sk, pos[None], rot[None], floor_z=sole)
    meta = dict(sk.meta)
    meta.update({f"foot_change_m.{k}": f"{v:.4f}" for k, v in report.items()})
    return replace(sk, meta=meta)
