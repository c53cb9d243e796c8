"""Reference motion on the device: many clips stacked, read one frame per world.

The environment asks, every step, for the reference at frame t (+ each observation offset) of the
clip each world tracks. ``MotionLibrary`` stacks all clips (padded to the longest), derives the
velocities and the interaction-graph vectors once, and answers with a batched ``RefFrame``.

Differences from upstream (``InterMimic._load_motion``, spec 1.5):

* angular velocities are true ones (``HOIMotion``'s relative-rotation differences), not
  differences of absolute rotation vectors, which jump at the +-pi wrap;
* ``RefFrame.ig`` is kept in the world frame; the terms rotate it into the heading they need;
* padded frames repeat the clip's last frame, and reads are clamped to each clip's last frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from intermimic_policy.embodiment.smplx_body import NUM_BODIES
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.state.frames import InitialState, RefFrame
from intermimic_policy.state.interaction_graph import nearest_point_vectors, object_points_world

__all__ = ["InitialState", "MotionLibrary", "RefFrame", "farthest_point_subsample"]

# frames per chunk when the interaction-graph vectors of a clip are precomputed
_IG_FRAMES_PER_CHUNK = 64


def farthest_point_subsample(points: Tensor, count: int) -> Tensor:
    """``count`` of ``points`` [P,3] spread over the cloud; deterministic (starts at point 0)."""
    p = points.shape[0]
    if count >= p:
        return points.clone()
    chosen = torch.zeros(count, dtype=torch.long)
    dist = torch.full((p,), float("inf"), dtype=points.dtype)
    last = 0
    for i in range(1, count):
        dist = torch.minimum(dist, (points - points[last]).square().sum(-1))
        last = int(dist.argmax())
        chosen[i] = last
    return points[chosen]


def _as_points(name: str, pts: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(np.asarray(pts) if not isinstance(pts, Tensor) else pts).to(torch.float32)
    if t.dim() != 2 or t.shape[1] != 3 or t.shape[0] < 1:
        raise MotionError(f"object {name!r}: surface points must be [P, 3], got {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise MotionError(f"object {name!r}: surface points contain NaN or inf")
    return t


class MotionLibrary:
    """All reference clips of an environment, stacked on one device.

    ``object_points`` maps each object name to its object-frame surface points [P, 3]. Objects
    with different point counts are brought to the smallest count (or ``num_points``) by
    deterministic farthest-point subsampling, so every world sees the same P.
    """

    def __init__(self, motions: Sequence[HOIMotion], object_points: Mapping[str, Tensor | np.ndarray],
                 device: torch.device | str = "cpu", num_points: int | None = None) -> None:
        if not motions:
            raise MotionError("motion library: no clips given")
        fps = {float(m.fps) for m in motions}
        if len(fps) != 1:
            raise MotionError(f"motion library: clips have different frame rates {sorted(fps)}; "
                              "resample them to one rate first")
        self.fps = fps.pop()
        self.device = torch.device(device)
        self.clip_names = [m.name or f"clip{i}" for i, m in enumerate(motions)]
        self.object_names = [m.object_name for m in motions]

        missing = sorted({n for n in self.object_names if n not in object_points})
        if missing:
            raise MotionError(f"motion library: no surface points for object(s) {missing}")
        used = sorted(set(self.object_names))
        clouds = {n: _as_points(n, object_points[n]) for n in used}
        target = num_points if num_points is not None else min(c.shape[0] for c in clouds.values())
        short = [n for n, c in clouds.items() if c.shape[0] < target]
        if short:
            raise MotionError(f"motion library: object(s) {short} have fewer than {target} surface points")
        self.object_list = used
        self.points = torch.stack([farthest_point_subsample(clouds[n], target) for n in used]).to(self.device)
        self.clip_object = torch.tensor([used.index(n) for n in self.object_names], dtype=torch.long,
                                        device=self.device)

        bodies = {int(np.shape(m.body_pos)[1]) for m in motions}
        if len(bodies) != 1:
            raise MotionError(f"motion library: clips have different body counts {sorted(bodies)} (one embodiment per library)")
        self.num_bodies = bodies.pop()
        self._layout = _frame_layout(self.num_bodies)
        lengths = [m.num_frames for m in motions]
        self.num_frames = torch.tensor(lengths, dtype=torch.long, device=self.device)
        self.max_frames = max(lengths)
        per_clip: dict[str, list[np.ndarray]] = {k: [] for k in _STACKED}
        for m in tqdm(motions, desc="reference clips", disable=len(motions) < 16, leave=False):
            arrays = self._clip_arrays(m)
            for k in _STACKED:
                per_clip[k].append(_pad(arrays[k], self.max_frames))
        self._data: dict[str, Tensor] = {
            k: torch.from_numpy(np.stack(per_clip[k])).to(self.device) for k in _STACKED
        }
        self._data["ig"] = self._compute_ig()
        # RefFrame fields packed per (clip, frame) row: every frame query is ONE index_select
        # (all worlds and all offsets at once), and the fields are views of the gathered rows.
        m, length = len(motions), self.max_frames
        self._table = torch.cat([self._data[k].reshape(m, length, -1).float() for k, _ in self._layout],
                                dim=-1).reshape(m * length, -1).contiguous()
        for k, _ in self._layout:
            if k not in _INITIAL_FIELDS:
                del self._data[k]

    # -- construction helpers ------------------------------------------------------------------
    @staticmethod
    def _clip_arrays(m: HOIMotion) -> dict[str, np.ndarray]:
        arrays = {
            "body_pos": m.body_pos, "body_rot": m.body_rot, "body_lin_vel": m.body_lin_vel,
            "body_ang_vel": m.body_ang_vel, "object_pos": m.object_pos, "object_rot": m.object_rot,
            "object_lin_vel": m.object_lin_vel, "object_ang_vel": m.object_ang_vel,
            "body_contact": m.body_contact, "object_contact": m.object_contact,
            "root_pos": m.root_pos, "root_rot": m.root_rot, "root_lin_vel": m.root_lin_vel,
            "root_ang_vel": m.root_ang_vel, "joint_rotvec": m.joint_rotvec,
            "joint_ang_vel": m.joint_ang_vel,
        }
        out = {}
        for k, a in arrays.items():
            a = np.asarray(a)
            if k == "object_contact":
                out[k] = a.astype(bool)
                continue
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise MotionError(f"{m.name or 'motion'}: {k} contains NaN or inf")
            out[k] = a
        return out

    def _compute_ig(self) -> Tensor:
        body_pos, obj_pos, obj_rot = (self._data[k] for k in ("body_pos", "object_pos", "object_rot"))
        m, length = body_pos.shape[:2]
        out = torch.empty_like(body_pos)
        for clip in range(m):
            pts = self.points[self.clip_object[clip]]
            for s in range(0, length, _IG_FRAMES_PER_CHUNK):
                sl = slice(s, min(length, s + _IG_FRAMES_PER_CHUNK))
                world = object_points_world(pts, obj_pos[clip, sl], obj_rot[clip, sl])
                out[clip, sl] = nearest_point_vectors(body_pos[clip, sl], world, obj_pos[clip, sl])
        return out

    # -- queries -------------------------------------------------------------------------------
    @property
    def num_clips(self) -> int:
        return len(self.clip_names)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    def clamp_frames(self, clip_ids: Tensor, t: Tensor) -> Tensor:
        """Frames clamped into [0, last frame of each clip]."""
        last = self.num_frames[clip_ids] - 1
        return torch.minimum(t.clamp_min(0), last)

    @property
    def frame_table(self) -> Tensor:
        """Every (clip, frame) as one float32 row [clips * max_frames, F] (``RefFrame`` fields in
        :meth:`field_offsets` order; row ``clip * max_frames + frame``)."""
        return self._table

    def field_offsets(self) -> dict[str, int]:
        """Where each ``RefFrame`` field starts in a :attr:`frame_table` row."""
        out, start = {}, 0
        for name, tail in self._layout:
            out[name] = start
            start += math.prod(tail)
        return out

    def rows(self, clip_ids: Tensor, t: Tensor) -> Tensor:
        """Flat table rows of (clip, frame), frames clamped to each clip's end."""
        clip_ids = clip_ids.to(self.device, torch.long)
        return clip_ids * self.max_frames + self.clamp_frames(clip_ids, t.to(self.device, torch.long))

    def frames(self, clip_ids: Tensor, t: Tensor) -> RefFrame:
        """The reference of clip ``clip_ids[i]`` at frame ``t[i]`` (clamped to the clip's end)."""
        return self._unpack(self._table.index_select(0, self.rows(clip_ids, t)))

    def frames_at_offsets(self, clip_ids: Tensor, t: Tensor, offsets: Sequence[int]) -> RefFrame:
        """The references at ``t + d`` for every ``d`` in ``offsets``, stacked offset-major in ONE
        ``RefFrame`` of ``len(offsets) * N`` rows (rows ``[i N, (i+1) N)`` are offset ``i``), read
        with one gather. ``.index(slice(i * N, (i + 1) * N))`` gives offset ``i``'s frame."""
        clip_ids = clip_ids.to(self.device, torch.long)
        t = t.to(self.device, torch.long)
        shift = torch.tensor(list(offsets), dtype=torch.long, device=self.device)
        frames = (t.unsqueeze(0) + shift.unsqueeze(1)).reshape(-1)
        return self.frames(clip_ids.repeat(len(offsets)), frames)

    def _unpack(self, rows: Tensor) -> RefFrame:
        n = rows.shape[0]
        out: dict[str, Tensor] = {}
        start = 0
        for name, tail in self._layout:
            size = math.prod(tail)
            out[name] = rows[:, start:start + size].view(n, *tail)
            start += size
        out["object_contact"] = out["object_contact"] > 0.5
        return RefFrame(**out)

    @property
    def joint_rotvec_table(self) -> Tensor:
        """Every clip's joint rotation vectors, [clips, max_frames, 51, 3] (padded as the table)."""
        return self._data["joint_rotvec"]

    def joint_rotvec(self, clip_ids: Tensor, t: Tensor) -> Tensor:
        """Reference joint rotation vectors [N, 51, 3] at (clip, frame) (clamped)."""
        clip_ids = clip_ids.to(self.device, torch.long)
        return self._data["joint_rotvec"][clip_ids, self.clamp_frames(clip_ids, t.to(self.device, torch.long))]

    def initial_state(self, clip_ids: Tensor, t: Tensor) -> InitialState:
        """The reference state at (clip, frame), for a backend reset (reference state init)."""
        clip_ids = clip_ids.to(self.device, torch.long)
        t = self.clamp_frames(clip_ids, t.to(self.device, torch.long))
        d = self._data
        return InitialState(**{k: d[k][clip_ids, t] for k in _INITIAL_FIELDS})

    def points_of(self, clip_ids: Tensor) -> Tensor:
        """Object-frame surface points of each world's object, [N, P, 3]."""
        return self.points[self.clip_object[clip_ids.to(self.device, torch.long)]]


def _frame_layout(nb: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """RefFrame fields in table order, with their per-frame shapes for ``nb`` bodies
    (object_contact stored as 0/1)."""
    return (
        ("body_pos", (nb, 3)), ("body_rot", (nb, 4)), ("body_lin_vel", (nb, 3)),
        ("body_ang_vel", (nb, 3)), ("object_pos", (3,)), ("object_rot", (4,)), ("object_lin_vel", (3,)),
        ("object_ang_vel", (3,)), ("body_contact", (nb,)), ("object_contact", ()), ("ig", (nb, 3)),
    )


_FRAME_LAYOUT = _frame_layout(NUM_BODIES)
# InitialState fields, kept per clip for resets (InitialState's field order)
_INITIAL_FIELDS = ("root_pos", "root_rot", "root_lin_vel", "root_ang_vel", "joint_rotvec", "joint_ang_vel",
                   "object_pos", "object_rot", "object_lin_vel", "object_ang_vel")

_STACKED = (
    "body_pos", "body_rot", "body_lin_vel", "body_ang_vel", "object_pos", "object_rot",
    "object_lin_vel", "object_ang_vel", "body_contact", "object_contact", "root_pos", "root_rot",
    "root_lin_vel", "root_ang_vel", "joint_rotvec", "joint_ang_vel",
)


def _pad(a: np.ndarray, length: int) -> np.ndarray:
    """Pad along time by repeating the last frame (padded frames are never read after clamping)."""
    if a.shape[0] == length:
        return a
    reps = np.repeat(a[-1:], length - a.shape[0], axis=0)
    return np.concatenate([a, reps], axis=0)

