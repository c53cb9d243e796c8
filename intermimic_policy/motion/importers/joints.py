"""Joint positions only ((T, 22, 3), SMPL / HumanML3D order, as HOI-Diff and CHOIS write them)
-> clips, by inverse kinematics on our skeleton.

1. Bones fitted to the source: every bone gets the source's median length; the two bodies whose
   children form a rigid triangle (pelvis: hips and torso; chest: neck and both thoraxes) get the
   triangle's own shape (Procrustes mean over frames), so the fit there is exact too. Bone
   directions at rest are our skeleton's; the hands and feet scale with the forearm and shin.
2. Rotations, root to leaves, each frame: a body with several tracked children is turned by the
   best rotation (Kabsch) onto them; a body with one child by the smallest rotation (swing) that
   points its bone at the child from where forward kinematics put the body, so errors do not
   pile up along a chain. The swing leaves the twist about the bone where the parent had it, so
   the twist is smooth in time. Untracked bodies (fingers, wrists, head, toes) keep a neutral
   (zero) local rotation: hands flat.
3. :func:`common.assemble` resamples to the control rate, puts the feet on the floor and labels
   contacts from geometry.

CHOIS-style (T, 24, 3) positions are read too (the two hand joints are ignored), and so is the
(22, 3, T) layout of HOI-Diff's samples, with its object as ``motion_obj`` (T, 6).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from intermimic_policy.embodiment.skeleton import Skeleton, children, default_skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, CONTROL_HZ, NUM_BODIES, PARENTS, body_index
from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, scale_geoms
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.importers.common import (
    PoseSequence,
    assemble,
    object_track,
    source_fps,
    world_matrix,
)
from intermimic_policy.motion.importers.source import numeric, pick, read_arrays

JOINTS_KEYS = ("joints", "global_jpos", "positions", "motion", "jpos")
# our body of each of the 22 SMPL joints, and the reverse
BODY_OF_SMPL22: tuple[int, ...] = tuple(SMPLX_JOINT_OF_BODY.index(j) for j in range(22))
TRACKED: frozenset[int] = frozenset(BODY_OF_SMPL22)
RIGID_GROUPS: dict[int, tuple[int, ...]] = {
    body_index("Pelvis"): tuple(body_index(n) for n in ("L_Hip", "R_Hip", "Torso")),
    body_index("Chest"): tuple(body_index(n) for n in ("Neck", "L_Thorax", "R_Thorax")),
}


def _kabsch(a: Tensor, b: Tensor) -> Tensor:
    """Rotation quaternions [T, 4] taking point sets a [T, N, 3] onto b [T, N, 3] (no centring)."""
    h = a.transpose(-1, -2) @ b
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    e = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    r = vt.transpose(-1, -2) @ e @ u.transpose(-1, -2)
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.from_matrix(r.numpy()).as_quat())


def _swing(a: Tensor, b: Tensor) -> Tensor:
    """Smallest rotations [T, 4] turning directions a [T, 3] onto b [T, 3]."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w = 1.0 + (a * b).sum(-1, keepdim=True)
    xyz = torch.cross(a, b, dim=-1)
    # opposite directions: half turn about an axis normal to a
    opposite = w[..., 0] < 1e-8
    if opposite.any():
        ax = torch.cross(a[opposite], torch.tensor([[0.0, 0.0, 1.0]], dtype=a.dtype).expand_as(a[opposite]), dim=-1)
        ax = torch.where(ax.norm(dim=-1, keepdim=True) < 1e-6,
                         torch.cross(a[opposite], torch.tensor([[1.0, 0.0, 0.0]], dtype=a.dtype).expand_as(a[opposite]),
                                     dim=-1), ax)
        xyz[opposite] = ax
        w[opposite] = 0.0
    return quat.normalize(torch.cat([xyz, w], dim=-1))


def fit_skeleton(targets: np.ndarray, base: Skeleton | None = None) -> Skeleton:
    """Our skeleton with the source's bone lengths (targets: our body order, [T, 52, 3], only the
    22 tracked bodies read); see the module docstring."""
    base = base or default_skeleton()
    off = np.array(base.offsets, dtype=np.float64)
    p = torch.from_numpy(targets)
    for b in range(1, NUM_BODIES):
        if b in TRACKED and PARENTS[b] in TRACKED:
            length = float(np.median(np.linalg.norm(targets[:, b] - targets[:, PARENTS[b]], axis=-1)))
            off[b] = off[b] / max(np.linalg.norm(off[b]), 1e-9) * length
    for body, kids in RIGID_GROUPS.items():
        rest = torch.from_numpy(off[list(kids)]).expand(len(p), -1, -1)
        seen = p[:, list(kids)] - p[:, body : body + 1]
        for _ in range(2):  # Procrustes mean: align, average in the body frame, repeat
            r = _kabsch(rest, seen)
            local = quat.rotate_inverse(r.unsqueeze(1).expand(-1, len(kids), 4), seen)
            mean = local.median(dim=0).values
            rest = mean.expand(len(p), -1, -1)
        # keep the group's rest orientation that of the base skeleton (rest directions matter)
        align = _kabsch(torch.from_numpy(off[list(kids)])[None], mean[None])[0]
        off[list(kids)] = quat.rotate_inverse(align.expand(len(kids), 4), mean).numpy()
    # untracked bones (fingers, hands, toes' children: none) scale with the bone they hang on
    for side in ("L_", "R_"):
        arm = body_index(f"{side}Wrist")
        ratio = float(np.linalg.norm(off[arm])) / max(float(np.linalg.norm(base.offsets[arm])), 1e-9)
        for b in range(1, NUM_BODIES):
            if b not in TRACKED and _ancestor(b, arm):
                off[b] = base.offsets[b] * ratio
    return Skeleton(off, scale_geoms(off, base), name="fitted:joints")


def _ancestor(b: int, a: int) -> bool:
    while b >= 0:
        if b == a:
            return True
        b = PARENTS[b]
    return False


def inverse_kinematics(targets: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(root_pos [T,3], root_rot [T,4], joint_rotvec [T,51,3]) putting the 22 tracked bodies of
    ``skeleton`` on ``targets`` [T, 52, 3] (our body order)."""
    tgt = torch.from_numpy(targets)
    t = tgt.shape[0]
    off = torch.from_numpy(np.array(skeleton.offsets, dtype=np.float64))
    ident = quat.identity_like(tgt[:, 0])
    g: list[Tensor] = [ident] * NUM_BODIES
    pos: list[Tensor] = [tgt[:, 0]] * NUM_BODIES
    for b in range(NUM_BODIES):
        parent = PARENTS[b]
        g_parent = ident if parent < 0 else g[parent]
        if parent >= 0:
            pos[b] = pos[parent] + quat.rotate(g_parent, off[b].expand(t, 3))
        kids = [k for k in children(b) if k in TRACKED] if b in TRACKED else []
        if not kids:
            g[b] = g_parent
        elif len(kids) == 1:
            k = kids[0]
            rest_dir = quat.rotate(g_parent, off[k].expand(t, 3))
            g[b] = quat.multiply(_swing(rest_dir, tgt[:, k] - pos[b]), g_parent)
        else:
            rest = quat.rotate(g_parent.unsqueeze(1).expand(t, len(kids), 4), off[kids].expand(t, -1, -1))
            seen = tgt[:, kids] - pos[b].unsqueeze(1)
            g[b] = quat.multiply(_kabsch(rest, seen), g_parent)
    body_rot = torch.stack(g, dim=1)
    parent_idx = torch.tensor(PARENTS[1:])
    local = quat.multiply(quat.conjugate(body_rot[:, parent_idx]), body_rot[:, 1:])
    return tgt[:, 0].numpy(), quat.canonical(body_rot[:, 0]).numpy(), quat.to_rotvec(local).numpy()


def import_joints(path: str | os.PathLike[str], *, fps: float | None = None, up: str = "y",
                  object_name: str | None = None, fps_out: float | None = None) -> HOIMotion:
    """Read a joint-position file into a validated clip at the control rate."""
    where, arrays = read_arrays(path, "joints")
    found = pick(arrays, JOINTS_KEYS)
    if found is None:
        raise MotionError(f"{where}: no joint positions: expected one of {', '.join(JOINTS_KEYS)} "
                          f"(keys in the file: {', '.join(sorted(arrays)) or 'none'})")
    key, raw = found
    j = numeric(where, key, raw)
    if j.ndim == 3 and j.shape[0] in (22, 24) and j.shape[1] == 3 and j.shape[2] not in (3,):
        j = j.transpose(2, 0, 1)  # HOI-Diff / HumanML3D tools store (joints, 3, T)
    if j.ndim != 3 or j.shape[2] != 3 or j.shape[1] not in (22, 24):
        raise MotionError(f"{where}: {key} has shape {tuple(j.shape)}, expected (T, 22, 3) joint positions "
                          "in the SMPL / HumanML3D order")
    world = world_matrix(up)
    j = j[:, :22] @ world.T
    t = len(j)
    if t < 2:
        raise MotionError(f"{where}: too few frames ({t}), need at least 2")
    rate = source_fps(where, arrays, fps)
    targets = np.zeros((t, NUM_BODIES, 3))
    targets[:, list(BODY_OF_SMPL22)] = j
    obj_pos, obj_rot, name, present = object_track(where, arrays, t, world, object_name)
    for b in BODY_OF_SMPL22[1:]:
        length = float(np.median(np.linalg.norm(targets[:, b] - targets[:, PARENTS[b]], axis=-1)))
        if length < 0.01:
            raise MotionError(f"{where}: the bone to {BODY_NAMES[b]} is {100 * length:.2g} cm long; "
                              "are these joint positions in metres, in the SMPL / HumanML3D order?")
    skeleton = fit_skeleton(targets)
    root_pos, root_rot, rotvec = inverse_kinematics(targets, skeleton)
    meta = {"import_format": "joints", "source_file": where.name, "source_fps": f"{rate:g}", "up": up,
            "body_model": "ik"}
    seq = PoseSequence(fps=rate, root_pos=root_pos, root_rot=root_rot, joint_rotvec=rotvec,
                       object_pos=obj_pos, object_rot=obj_rot, object_name=name, meta=meta)
    return assemble(seq, skeleton, where, name=where.stem, source="import:joints", object_present=present,
                    fps_out=CONTROL_HZ if fps_out is None else fps_out)
