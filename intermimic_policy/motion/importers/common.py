"""What every importer shares: frames and axes, object poses, resampling, the floor, assembly.

An importer turns its source into a :class:`PoseSequence` (root pose and the 51 local joint
rotations of our skeleton, the object pose, at the source's rate, already z-up) plus the
skeleton those rotations are meant for. :func:`assemble` then does the same for every source:
resample to the control rate (slerp for rotations, linear for positions), forward kinematics,
put the lowest foot on the floor, contact labels from geometry when the source has none, and the
checks every clip passes (``validate_motion``).

Axes: our world is z-up. A y-up source is turned +90 degrees about x (y -> z, z -> -y), as
InterMimic turns its y-up data (spec 1.2). Our body frames are SMPL-X's turned by
``SMPLX_TO_OURS`` (``embodiment.smplx_shape``), so an SMPL local rotation R becomes
``C R C^T`` and a root orientation ``W R C^T``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from intermimic_policy.embodiment.fk import forward_kinematics
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.embodiment.smplx_body import CONTROL_HZ, NUM_BODIES, NUM_JOINTS
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.object_names import KNOWN_OBJECTS
from intermimic_policy.motion.validate import validate_motion

UP_AXES = ("y", "z")
# y-up source world -> our z-up world: +90 degrees about x
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
FLOOR_FRAMES = 30  # the floor is judged over the first second, as InterMimic's data normalises it
FOOT_NAMES = ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe")
# Height of the lowest foot joint (ankle or toe) above the floor over the first second in
# OMOMO_new, whose floor is the SMPL-X mesh's sole: mean 4.3 cm, std 1.2 cm over its 27 clips.
# Joints carry no sole, and our collision boxes are not the mesh, so this is the floor rule.
FOOT_JOINT_HEIGHT_M = 0.043

OBJECT_POS_KEYS = ("object_pos", "obj_pos", "object_trans", "obj_trans", "object_transl")
OBJECT_ROT_KEYS = ("object_rot", "obj_rot", "object_rot_mat", "obj_rot_mat", "object_angles", "obj_angles",
                   "object_orient", "obj_orient")
OBJECT_NAME_KEYS = ("object_name", "obj_name", "object")
FPS_KEYS = ("fps", "mocap_framerate", "mocap_frame_rate", "frame_rate")


def world_matrix(up: str) -> np.ndarray:
    if up not in UP_AXES:
        raise MotionError(f"--up must be y or z, got {up!r}")
    return Y_UP_TO_Z_UP if up == "y" else np.eye(3)


def matrix_quat(m: np.ndarray) -> Tensor:
    """A constant rotation matrix as an xyzw quaternion (float64)."""
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.from_matrix(m).as_quat())


def slerp(q0: Tensor, q1: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions, ``w`` broadcast over the last axis."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    near = sin < 1e-6
    a = torch.where(near, 1.0 - w, torch.sin((1.0 - w) * theta) / sin.clamp_min(1e-12))
    b = torch.where(near, w, torch.sin(w * theta) / sin.clamp_min(1e-12))
    return quat.normalize(a * q0 + b * q1)


@dataclass(frozen=True, eq=False)
class PoseSequence:
    """A source as our skeleton's coordinates, z-up, at the source's rate (float64)."""

    fps: float
    root_pos: np.ndarray  # [T, 3]
    root_rot: np.ndarray  # [T, 4] xyzw
    joint_rotvec: np.ndarray  # [T, 51, 3]
    object_pos: np.ndarray  # [T, 3]
    object_rot: np.ndarray  # [T, 4] xyzw
    object_name: str
    body_contact: np.ndarray | None = None  # [T, 52] in {-1, 0, 1}, when the source has labels
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])


def resample_times(num_frames: int, fps_in: float, fps_out: float) -> np.ndarray:
    """Source-frame coordinates (fractional) of the output frames, covering the source's span."""
    duration = (num_frames - 1) / fps_in
    count = int(np.floor(duration * fps_out + 1e-6)) + 1
    return np.arange(count) * (fps_in / fps_out)


def interpolate(seq: PoseSequence, coords: np.ndarray) -> PoseSequence:
    """The sequence at fractional source frames ``coords`` (slerp / lerp; labels from the nearer frame)."""
    t = seq.num_frames
    c = np.clip(coords, 0.0, t - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), t - 1)
    i1 = np.minimum(i0 + 1, t - 1)
    w = c - i0

    def lerp(a: np.ndarray) -> np.ndarray:
        ww = w.reshape(-1, *([1] * (a.ndim - 1)))
        return (1.0 - ww) * a[i0] + ww * a[i1]

    def qs(a: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(np.asarray(a, dtype=np.float64))
        ww = torch.from_numpy(w).reshape(-1, *([1] * (q.ndim - 1)))
        return slerp(q[i0], q[i1], ww).numpy()

    joints = torch.from_numpy(seq.joint_rotvec)
    jq = qs(quat.from_rotvec(joints).numpy())
    labels = None
    if seq.body_contact is not None:
        labels = seq.body_contact[np.where(w < 0.5, i0, i1)]
    fps = seq.fps * (len(c) - 1) / max(float(c[-1] - c[0]), 1e-12) if len(c) > 1 else seq.fps
    return dataclasses.replace(
        seq, fps=fps, root_pos=lerp(seq.root_pos), root_rot=qs(seq.root_rot),
        joint_rotvec=quat.to_rotvec(torch.from_numpy(jq)).numpy(), object_pos=lerp(seq.object_pos),
        object_rot=qs(seq.object_rot), body_contact=labels)


def resample(seq: PoseSequence, fps_out: float) -> PoseSequence:
    if abs(seq.fps - fps_out) < 1e-9:
        return seq
    out = interpolate(seq, resample_times(seq.num_frames, seq.fps, fps_out))
    return dataclasses.replace(out, fps=float(fps_out))


# -- objects -----------------------------------------------------------------------------------
def object_rotation(where: Path, key: str, rot: np.ndarray, frames: int) -> np.ndarray:
    """Object orientations as xyzw quaternions from quaternions [T,4] (xyzw), matrices [T,3,3]
    or axis-angle [T,3]."""
    from scipy.spatial.transform import Rotation

    if rot.shape[0] != frames:
        raise MotionError(f"{where}: {key} has {rot.shape[0]} frames, the body has {frames}")
    if rot.shape[1:] == (4,):
        n = np.linalg.norm(rot, axis=-1)
        if np.any(np.abs(n - 1.0) > 1e-3):
            f = int(np.argmax(np.abs(n - 1.0)))
            raise MotionError(f"{where}: {key} at frame {f} is not a unit quaternion (|q| = {n[f]:.4g}; xyzw expected)")
        return rot / n[:, None]
    if rot.shape[1:] == (3, 3):
        det = np.linalg.det(rot)
        if np.any(np.abs(det - 1.0) > 1e-2):
            f = int(np.argmax(np.abs(det - 1.0)))
            raise MotionError(f"{where}: {key} at frame {f} is not a rotation matrix (det {det[f]:.4g})")
        return Rotation.from_matrix(rot).as_quat()
    if rot.shape[1:] == (3,):
        return Rotation.from_rotvec(rot).as_quat()
    raise MotionError(f"{where}: {key} has shape {tuple(rot.shape)}, expected (T, 4) quaternions xyzw, "
                      "(T, 3, 3) matrices or (T, 3) axis-angle")


def object_name_for(where: Path, given: str | None, from_file: str | None) -> str:
    name = given or from_file
    if not name:
        raise MotionError(f"{where}: no object name in the file; pass --object NAME "
                          f"(one of {', '.join(KNOWN_OBJECTS)})")
    if name not in KNOWN_OBJECTS:
        raise MotionError(f"{where}: unknown object {name!r} (known: {', '.join(sorted(KNOWN_OBJECTS))})")
    return name


def object_track(where: Path, arrays: dict[str, np.ndarray], frames: int, world: np.ndarray,
                 object_name: str | None) -> tuple[np.ndarray, np.ndarray, str, bool]:
    """(pos [T,3], rot xyzw [T,4], name, present) in our world. A source without object poses
    gets the object parked 10 m away (a body-only clip: no contact anywhere)."""
    from intermimic_policy.motion.importers.source import numeric, pick, text

    name = object_name_for(where, object_name, text(arrays, OBJECT_NAME_KEYS))
    found_pos, found_rot = pick(arrays, OBJECT_POS_KEYS), pick(arrays, OBJECT_ROT_KEYS)
    six = pick(arrays, ("motion_obj", "obj_motion"))  # HOI-Diff: axis-angle then translation, (T, 6)
    if found_pos is None and found_rot is None and six is not None:
        v = numeric(where, six[0], six[1])
        if v.ndim != 2 or v.shape[1] != 6:
            raise MotionError(f"{where}: {six[0]} has shape {tuple(v.shape)}, expected (T, 6) axis-angle + translation")
        found_rot, found_pos = (six[0], v[:, :3]), (six[0], v[:, 3:])
    if found_pos is None and found_rot is None:
        pos = np.tile([10.0, 0.0, 0.0], (frames, 1))
        return pos, np.tile([0.0, 0.0, 0.0, 1.0], (frames, 1)), name, False
    if found_pos is None or found_rot is None:
        missing = OBJECT_POS_KEYS[0] if found_pos is None else OBJECT_ROT_KEYS[0]
        raise MotionError(f"{where}: the object has a {'rotation' if found_pos is None else 'position'} "
                          f"but no {missing}")
    pos = numeric(where, found_pos[0], found_pos[1])
    if pos.ndim != 2 or pos.shape != (frames, 3):
        raise MotionError(f"{where}: {found_pos[0]} has shape {tuple(pos.shape)}, expected ({frames}, 3)")
    rot_raw = numeric(where, found_rot[0], found_rot[1])
    rot = object_rotation(where, found_rot[0], rot_raw, frames)
    from scipy.spatial.transform import Rotation

    rot_world = (Rotation.from_matrix(world) * Rotation.from_quat(rot)).as_quat()
    return pos @ world.T, rot_world, name, True


def source_fps(where: Path, arrays: dict[str, np.ndarray], given: float | None) -> float:
    from intermimic_policy.motion.importers.source import scalar

    fps = given if given is not None else scalar(arrays, FPS_KEYS)
    if fps is None:
        raise MotionError(f"{where}: no frame rate in the file (keys {', '.join(FPS_KEYS)}); pass --fps F")
    if not (np.isfinite(fps) and fps > 0):
        raise MotionError(f"{where}: frame rate must be a positive number, got {fps}")
    return float(fps)


# -- assembly ------------------------------------------------------------------------------------
def _foot_ids() -> list[int]:
    from intermimic_policy.embodiment.smplx_body import body_index

    return [body_index(n) for n in FOOT_NAMES]


def assemble(seq: PoseSequence, skeleton: Skeleton, where: Path, *, name: str, source: str,
             fps_out: float = CONTROL_HZ, floor: bool = True, labels: bool = True,
             object_present: bool = True) -> HOIMotion:
    """Resample, FK, floor, labels, validation: the clip (see the module docstring).

    Floor: everything (body and object) is shifted vertically so that the lowest foot joint
    over the first second is :data:`FOOT_JOINT_HEIGHT_M` above z = 0.
    """
    if seq.num_frames < 2:
        raise MotionError(f"{where}: too few frames ({seq.num_frames}), need at least 2")
    seq = resample(seq, fps_out)
    if seq.num_frames < 2:
        raise MotionError(f"{where}: shorter than one control step at {fps_out:g} Hz")
    root_pos = torch.from_numpy(seq.root_pos)
    root_rot = quat.normalize(torch.from_numpy(seq.root_rot))
    rotvec = torch.from_numpy(seq.joint_rotvec)
    body_pos, body_rot = forward_kinematics(skeleton.offsets, root_pos, root_rot, rotvec)
    meta = dict(seq.meta)
    shift = 0.0
    if floor:
        n = min(FLOOR_FRAMES, seq.num_frames)
        shift = FOOT_JOINT_HEIGHT_M - float(body_pos[:n, _foot_ids(), 2].min())
    lift = torch.tensor([0.0, 0.0, shift], dtype=torch.float64)
    root_pos, body_pos = root_pos + lift, body_pos + lift
    object_pos = seq.object_pos + lift.numpy()
    meta["floor_shift_m"] = f"{shift:.4f}"
    t = seq.num_frames
    body_contact = np.zeros((t, NUM_BODIES), dtype=np.int8)
    if seq.body_contact is not None:
        body_contact = np.asarray(seq.body_contact, dtype=np.int8)
        meta["contact_labels"] = "source"
    elif labels and object_present:
        from intermimic_policy.motion.contact_labels import label_clip_arrays

        try:
            body_contact = label_clip_arrays(skeleton.geoms, body_pos.numpy(), body_rot.numpy(), object_pos,
                                             seq.object_rot, seq.object_name, seq.fps)
            meta["contact_labels"] = "geometry"
        except MotionError as exc:
            meta["contact_labels"] = f"none ({exc})"
    else:
        meta["contact_labels"] = "none"
    meta["skeleton"] = skeleton.name
    motion = HOIMotion(
        fps=float(seq.fps),
        root_pos=root_pos.numpy().astype(np.float32),
        root_rot=quat.canonical(root_rot).numpy().astype(np.float32),
        joint_rotvec=rotvec.numpy().astype(np.float32).reshape(t, NUM_JOINTS, 3),
        body_pos=body_pos.numpy().astype(np.float32),
        body_rot=quat.canonical(body_rot).numpy().astype(np.float32),
        object_pos=object_pos.astype(np.float32),
        object_rot=np.asarray(seq.object_rot, dtype=np.float32),
        object_name=seq.object_name,
        body_contact=body_contact,
        object_contact=(body_contact == 1).any(axis=1),
        name=name,
        source=source,
        meta=meta,
    )
    return validate_motion(motion, where)
