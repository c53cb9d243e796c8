"""SMPL-X / SMPL-H parameter sequences (AMASS, OMOMO, BEHAVE, InterAct, InterDiff) -> clips.

Keys read: ``trans`` [T,3], and either ``poses`` [T,165] (SMPL-X: root, 21 body, jaw, 2 eyes,
2 x 15 hand joints) / [T,156] (SMPL-H: root, 21 body, 2 x 15 hand joints), or ``root_orient``
[T,3] + ``pose_body`` [T,63] (+ ``pose_hand`` [T,90], else the hands are flat); ``betas``,
``gender`` and the frame rate (``fps`` / ``mocap_framerate``) when present. Hand poses are full
axis-angle (no PCA), relative to the flat hand (smplx's ``flat_hand_mean=True``).

Two ways to positions, and the clip's ``meta["body_model"]`` says which was taken:

* ``smplx`` / ``smplh``: a model file was given (``--model``): the ``smplx`` package poses the
  subject's body and its pelvis is the root; our skeleton is the subject's (its rest joints).
  The file is first opened with ``allow_pickle=False`` so that the package never unpickles it.
* ``skeleton-table``: no model file (SMPL-X may not be redistributed): the rotations drive our
  own skeleton table (``embodiment.skeleton``), and ``trans`` is taken as the pelvis position
  (the model's rest pelvis offset, a few cm, is unknown without the model; the floor placement
  absorbs its vertical part).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intermimic_policy.embodiment.skeleton import Skeleton, default_skeleton
from intermimic_policy.embodiment.smplx_body import CONTROL_HZ, NUM_BODIES, PARENTS
from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, SMPLX_TO_OURS, scale_geoms
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.importers.common import (
    PoseSequence,
    assemble,
    matrix_quat,
    object_track,
    source_fps,
    world_matrix,
)
from intermimic_policy.motion.importers.source import numeric, pick, read_arrays, text
from intermimic_policy.motion.validate import one_line

SMPL_FORMATS = ("smplx", "smplh")
NUM_MODEL_JOINTS = {"smplx": 55, "smplh": 52}
_HANDS_START = {"smplx": 25, "smplh": 22}  # first left-hand joint in the model's joint order


def model_joint_of_body(fmt: str) -> tuple[int, ...]:
    """The model joint index of each of our 52 bodies (SMPL-H has no jaw or eyes)."""
    shift = _HANDS_START["smplx"] - _HANDS_START[fmt]
    return tuple(j if j < 22 else j - shift for j in SMPLX_JOINT_OF_BODY)


def _full_pose(where: Path, arrays: dict[str, np.ndarray], fmt: str) -> np.ndarray:
    """Axis-angle of every model joint [T, J, 3] (model frame)."""
    n = NUM_MODEL_JOINTS[fmt]
    found = pick(arrays, ("poses", "fullpose", "full_pose"))
    if found is not None:
        key, raw = found
        p = numeric(where, key, raw)
        widths = {n * 3: n, 52 * 3: 52, 55 * 3: 55}
        if p.ndim != 2 or p.shape[1] not in widths:
            raise MotionError(f"{where}: {key} has shape {tuple(p.shape)}, expected (T, {n * 3}) for {fmt}")
        have = widths[p.shape[1]]
        p = p.reshape(len(p), have, 3)
        if have == n:
            return p
        out = np.zeros((len(p), n, 3))  # the other layout: body joints then both hands
        out[:, :22] = p[:, :22]
        out[:, _HANDS_START[fmt]:] = p[:, _HANDS_START["smplx" if have == 55 else "smplh"]:]
        return out
    ro, pb = pick(arrays, ("root_orient", "global_orient")), pick(arrays, ("pose_body", "body_pose"))
    if ro is None or pb is None:
        raise MotionError(f"{where}: no pose: expected 'poses' or 'root_orient' + 'pose_body' "
                          f"(keys in the file: {', '.join(sorted(arrays)) or 'none'})")
    root = numeric(where, ro[0], ro[1], (3,))
    body = numeric(where, pb[0], pb[1])
    t = len(root)
    if body.shape not in ((t, 63), (t, 21, 3)):
        raise MotionError(f"{where}: {pb[0]} has shape {tuple(body.shape)}, expected ({t}, 63)")
    out = np.zeros((t, n, 3))
    out[:, 0] = root
    out[:, 1:22] = body.reshape(t, 21, 3)
    ph = pick(arrays, ("pose_hand", "hand_pose"))
    if ph is not None:
        hands = numeric(where, ph[0], ph[1])
        if hands.shape not in ((t, 90), (t, 30, 3)):
            raise MotionError(f"{where}: {ph[0]} has shape {tuple(hands.shape)}, expected ({t}, 90) (no PCA)")
        out[:, _HANDS_START[fmt]:] = hands.reshape(t, 30, 3)
    else:
        for lk, rk in (("left_hand_pose", "right_hand_pose"), ("lhand_pose", "rhand_pose")):
            if lk in arrays and rk in arrays:
                left = numeric(where, lk, arrays[lk]).reshape(t, -1)
                right = numeric(where, rk, arrays[rk]).reshape(t, -1)
                if left.shape[1] != 45 or right.shape[1] != 45:
                    raise MotionError(f"{where}: {lk}/{rk} must be (T, 45) axis-angle (PCA hands are not read)")
                out[:, _HANDS_START[fmt]:] = np.concatenate([left, right], 1).reshape(t, 30, 3)
    return out


def _betas(where: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    found = pick(arrays, ("betas", "shape", "beta"))
    if found is None:
        return np.zeros(10)
    b = numeric(where, found[0], found[1])
    return (b[0] if b.ndim == 2 else b).reshape(-1)  # per-frame betas: the first frame's


def _gender(arrays: dict[str, np.ndarray]) -> str:
    g = (text(arrays, ("gender",)) or "neutral").strip().lower()
    return g if g in ("male", "female", "neutral") else "neutral"


# -- the smplx package ----------------------------------------------------------------------------
def _model_file(model: str | os.PathLike[str], fmt: str, gender: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / f"{fmt.upper()}_{gender.upper()}.npz"
    if not path.is_file():
        raise MotionError(f"{fmt.upper()} model file {path} does not exist")
    if path.suffix.lower() != ".npz":
        raise MotionError(f"{path}: only .npz model files are read (pickle files are never loaded)")
    try:  # refuse pickled content before the smplx package opens the file
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                data[key]
    except ValueError as exc:
        raise MotionError(f"{path}: holds pickled objects, which are never loaded ({one_line(str(exc), 80)})") from exc
    except Exception as exc:
        raise MotionError(f"{path}: not a readable model .npz ({type(exc).__name__}: {one_line(str(exc), 120)})") from exc
    return path


def _body_model(path: Path, fmt: str, gender: str, num_betas: int) -> Any:
    import smplx

    cls = smplx.SMPLX if fmt == "smplx" else smplx.SMPLH
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints notices; stdout stays ours
            return cls(str(path), ext="npz", gender=gender, num_betas=num_betas, use_pca=False,
                       flat_hand_mean=True, dtype=torch.float64)
    except Exception as exc:  # a model file of the wrong layout fails deep inside smplx
        raise MotionError(f"{path}: the smplx package cannot build an {fmt.upper()} model from it "
                          f"({type(exc).__name__}: {one_line(str(exc), 120)})") from exc


def model_joints(body_model: Any, fmt: str, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray,
                 chunk: int = 256) -> np.ndarray:
    """World joint positions [T, J, 3] (model frame): the smplx package's linear blend skinning
    (``smplx.lbs.lbs``) with the model's own tensors; the hand poses are full axis-angle."""
    from smplx.lbs import lbs

    m = body_model
    b_t = torch.from_numpy(betas).reshape(1, -1)
    out = []
    with torch.no_grad():
        for s in range(0, len(pose), chunk):
            p = torch.from_numpy(pose[s:s + chunk]).reshape(-1, NUM_MODEL_JOINTS[fmt] * 3)
            _, joints = lbs(b_t.expand(len(p), -1), p, m.v_template, m.shapedirs, m.posedirs, m.J_regressor,
                            m.parents, m.lbs_weights)
            out.append(joints[:, : NUM_MODEL_JOINTS[fmt]].numpy() + trans[s:s + chunk, None])
    return np.concatenate(out)


def _skeleton_from_rest(rest: np.ndarray, fmt: str, name: str) -> Skeleton:
    j = rest[list(model_joint_of_body(fmt))] @ SMPLX_TO_OURS.T
    offsets = np.zeros((NUM_BODIES, 3))
    offsets[1:] = j[1:] - j[list(PARENTS[1:])]
    return Skeleton(offsets, scale_geoms(offsets), name=name)


# -- conversion ---------------------------------------------------------------------------------
def to_our_rotations(pose: np.ndarray, fmt: str, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(root quaternion xyzw [T,4], joint rotation vectors [T,51,3]) on our skeleton."""
    c = SMPLX_TO_OURS
    idx = list(model_joint_of_body(fmt))
    local = pose[:, idx[1:]] @ c.T  # C R C^T has the rotation vector C r
    root_src = quat.from_rotvec(torch.from_numpy(pose[:, 0]))
    w_q = matrix_quat(world).expand_as(root_src)
    ct_q = matrix_quat(c.T).expand_as(root_src)
    root = quat.multiply(quat.multiply(w_q, root_src), ct_q)
    return root.numpy(), local


def from_our_rotations(root_rot: np.ndarray, joint_rotvec: np.ndarray, fmt: str,
                       world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_our_rotations`: model axis-angle [T, J, 3] (jaw and eyes zero)."""
    c = SMPLX_TO_OURS
    t = len(root_rot)
    pose = np.zeros((t, NUM_MODEL_JOINTS[fmt], 3))
    idx = list(model_joint_of_body(fmt))
    pose[:, idx[1:]] = np.asarray(joint_rotvec, dtype=np.float64) @ c
    r = torch.from_numpy(np.asarray(root_rot, dtype=np.float64))
    wt_q = matrix_quat(world.T).expand_as(r)
    c_q = matrix_quat(c).expand_as(r)
    pose[:, 0] = quat.to_rotvec(quat.multiply(quat.multiply(wt_q, r), c_q)).numpy()
    return pose


def import_smpl(path: str | os.PathLike[str], fmt: str, *, fps: float | None = None, up: str = "z",
                object_name: str | None = None, model: str | os.PathLike[str] | None = None,
                fps_out: float | None = None) -> HOIMotion:
    """Read an SMPL-X / SMPL-H parameter file into a validated clip at the control rate."""
    if fmt not in SMPL_FORMATS:
        raise MotionError(f"unknown SMPL format {fmt!r}, expected one of {SMPL_FORMATS}")
    where, arrays = read_arrays(path, "poses")
    world = world_matrix(up)
    pose = _full_pose(where, arrays, fmt)
    t = len(pose)
    found = pick(arrays, ("trans", "transl", "translation"))
    if found is None:
        raise MotionError(f"{where}: no 'trans' (root translation, (T, 3))")
    trans = numeric(where, found[0], found[1], (3,))
    if len(trans) != t:
        raise MotionError(f"{where}: {found[0]} has {len(trans)} frames, the pose has {t}")
    rate = source_fps(where, arrays, fps)
    betas, gender = _betas(where, arrays), _gender(arrays)
    obj_pos, obj_rot, name, present = object_track(where, arrays, t, world, object_name)
    root_rot, local = to_our_rotations(pose, fmt, world)
    meta = {"import_format": fmt, "source_file": where.name, "source_fps": f"{rate:g}", "up": up,
            "gender": gender}
    if model is not None:
        file = _model_file(model, fmt, gender)
        body_model = _body_model(file, fmt, gender, len(betas))
        rest = model_joints(body_model, fmt, np.zeros((1, NUM_MODEL_JOINTS[fmt], 3)), np.zeros((1, 3)), betas)[0]
        skeleton = _skeleton_from_rest(rest, fmt, f"{fmt}:{gender}")
        joints = model_joints(body_model, fmt, pose, trans, betas)
        root_pos = joints[:, 0] @ world.T
        # our FK on the subject skeleton must put every body where the model does
        from intermimic_policy.embodiment.fk import forward_kinematics

        fk, _ = forward_kinematics(skeleton.offsets, torch.from_numpy(root_pos), torch.from_numpy(root_rot),
                                   torch.from_numpy(local))
        ref = joints[:, list(model_joint_of_body(fmt))] @ world.T
        meta.update(body_model=fmt, model_file=file.name,
                    model_fk_max_err_m=f"{float(np.abs(fk.numpy() - ref).max()):.2e}")
    else:
        skeleton = default_skeleton()
        root_pos = trans @ world.T
        meta.update(body_model="skeleton-table")
    seq = PoseSequence(fps=rate, root_pos=root_pos, root_rot=root_rot, joint_rotvec=local,
                       object_pos=obj_pos, object_rot=obj_rot, object_name=name, meta=meta)
    return assemble(seq, skeleton, where, name=where.stem, source=f"import:{fmt}", object_present=present,
                    fps_out=CONTROL_HZ if fps_out is None else fps_out)


def smpl_params_from_motion(motion: HOIMotion, fmt: str = "smplx", up: str = "z") -> dict[str, np.ndarray]:
    """A clip as an SMPL-X / SMPL-H parameter file's arrays (``trans`` = pelvis, no model offset),
    e.g. to hand a clip to tools that read AMASS-style files, or to test the importer."""
    world = world_matrix(up)
    pose = from_our_rotations(motion.root_rot, motion.joint_rotvec, fmt, world)
    from scipy.spatial.transform import Rotation

    obj_rot = (Rotation.from_matrix(world.T) * Rotation.from_quat(np.asarray(motion.object_rot, np.float64)))
    return {
        "trans": np.asarray(motion.root_pos, np.float64) @ world,
        "poses": pose.reshape(len(pose), -1),
        "betas": np.zeros(10),
        "gender": np.array("neutral"),
        "mocap_framerate": np.array(float(motion.fps)),
        "object_pos": np.asarray(motion.object_pos, np.float64) @ world,
        "object_rot": obj_rot.as_quat(),
        "object_name": np.array(motion.object_name),
    }
