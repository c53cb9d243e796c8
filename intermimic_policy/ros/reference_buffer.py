"""Lookahead buffer of streamed reference frames -> the ``RefFrame`` of each observation offset.

Why: the observation reads the reference at t + each offset (1 and 16 for the teacher, 0, 1, 4
and 16 for the student), with velocities by central differences, exactly as
``HOIMotion``/``MotionLibrary`` derive them in training. A stream only has what has arrived, so
the buffer answers "ready" once every frame those formulas read is there (frame t + d and its two
neighbours), else it names the frame it is waiting for.

Timing ("sequence"): the node owns a frame cursor. It starts at the first frame received and
advances one frame per control tick (the policy runs at the data rate, checked against the
contract); it never moves past what the lookahead allows. A window (``HOIWindow``) names the
producer's current frame: a cursor more than :data:`RESYNC_FRAMES` away from it jumps there
(e.g. a node that joined a running stream and took a lookahead frame for the current one). A
frame index before the stream's first frame, or far behind the cursor, is a new clip (or a
loop): the buffer restarts.

Clip end: a window whose frames repeat the last frame (``HOIWindow`` docs) marks the clip end;
frames past it clamp to it like ``MotionLibrary.frames`` does, with one-sided differences at the
ends like ``HOIMotion``. A frame-only stream cannot announce its end: when it stops, the reference
goes stale and the node holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from intermimic_policy.embodiment.description import EmbodimentSpec
from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_DOFS
from intermimic_policy.observation.numpy_obs import ObjectCloud, RefSample, reference_frame
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow, RobotHOIFrame, RobotHOIWindow
from intermimic_policy.ros.node_state import QUAT_NORM_TOL, MessageRejected, NonFiniteInput, pose_arrays

# a window whose start is this many frames away from the cursor re-synchronises the cursor
RESYNC_FRAMES = 2
# default caps (configurable: ``policy_node.max_buffered_frames`` / ``max_window_frames``): frames
# kept beyond the cursor (a generator may send long plans; later ones are dropped) and frames in
# one window (a longer window is refused before any frame of it is parsed)
MAX_BUFFERED_FRAMES = 512
MAX_WINDOW_FRAMES = 128
_FPS_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class ReferenceSample:
    """One validated reference frame (float32 arrays, as the training data holds them)."""

    frame_index: int
    fps: float
    stamp_ns: int
    body_pos: np.ndarray  # [52, 3]
    body_rot: np.ndarray  # [52, 4] xyzw
    joint_rotvec: np.ndarray  # [51, 3]
    object_pos: np.ndarray  # [3]
    object_rot: np.ndarray  # [4] xyzw
    object_name: str
    body_contact: np.ndarray  # [52] float32 in {-1, 0, 1}
    object_contact: bool

    def same_content(self, other: ReferenceSample) -> bool:
        return (self.object_name == other.object_name and self.object_contact == other.object_contact
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("body_pos", "body_rot", "object_pos", "object_rot", "body_contact")))


def _array(values: Sequence[float], count: int, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float32)
    if a.shape != (count,):
        raise MessageRejected(f"{what} has {a.size} values, expected {count}")
    if not np.all(np.isfinite(a)):
        raise NonFiniteInput(f"{what} contains NaN or inf")
    return a


def parse_hoi_frame(msg: HOIFrame, expected_fps: float | None = None, where: str = "HOIFrame") -> ReferenceSample:
    """Validate a reference frame; ``expected_fps`` is the policy's control rate."""
    fps = float(msg.fps)
    if not np.isfinite(fps):
        raise NonFiniteInput(f"{where}.fps is {msg.fps!r}")
    if not fps > 0:
        raise MessageRejected(f"{where}.fps must be positive, got {msg.fps!r}")
    if expected_fps is not None and abs(fps - expected_fps) > _FPS_RTOL * expected_fps:
        raise MessageRejected(f"{where}.fps is {fps:g} but the policy runs at {expected_fps:g} Hz "
                              "(resample the reference stream to the policy rate)")
    body_pos = _array(msg.body_positions, NUM_BODIES * 3, f"{where}.body_positions").reshape(NUM_BODIES, 3)
    body_rot = _array(msg.body_rotations, NUM_BODIES * 4, f"{where}.body_rotations").reshape(NUM_BODIES, 4)
    norms = np.linalg.norm(body_rot.astype(np.float64), axis=-1)
    if np.any(np.abs(norms - 1.0) > QUAT_NORM_TOL):
        b = int(np.argmax(np.abs(norms - 1.0)))
        raise MessageRejected(f"{where}.body_rotations[{b}] is not a unit quaternion (|q| = {norms[b]:.4g})")
    rotvec = _array(msg.joint_rotvec, NUM_DOFS, f"{where}.joint_rotvec").reshape(-1, 3)
    labels = _array(msg.body_contact_labels, NUM_BODIES, f"{where}.body_contact_labels")
    if not np.all(np.isin(labels, (-1.0, 0.0, 1.0))):
        raise MessageRejected(f"{where}.body_contact_labels must be -1, 0 or +1")
    if not msg.object_name:
        raise MessageRejected(f"{where}.object_name is empty")
    obj_pos, obj_rot = pose_arrays(msg.object_pose, f"{where}.object_pose")
    pose_arrays(msg.root_pose, f"{where}.root_pose")
    return ReferenceSample(
        frame_index=int(msg.frame_index), fps=fps, stamp_ns=ns_from_time(msg.header.stamp),
        body_pos=body_pos, body_rot=body_rot, joint_rotvec=rotvec,
        object_pos=obj_pos.astype(np.float32), object_rot=np.asarray(
            [msg.object_pose.orientation.x, msg.object_pose.orientation.y,
             msg.object_pose.orientation.z, msg.object_pose.orientation.w], dtype=np.float32),
        object_name=msg.object_name, body_contact=labels, object_contact=bool(msg.object_contact),
    )


def parse_hoi_window(msg: HOIWindow, expected_fps: float | None = None,
                     max_frames: int = MAX_WINDOW_FRAMES) -> tuple[list[ReferenceSample], int | None]:
    """(distinct frames in order, clip end frame or None) of a window.

    ``frames[k]`` must be frame ``start_frame + k``; a frame that repeats the previous frame's
    index marks the clip end (later frames are that repeat too and are dropped). A window of more
    than ``max_frames`` frames is refused before any of them is parsed (bounded work per message).
    """
    if not msg.frames:
        raise MessageRejected("HOIWindow has no frames")
    if len(msg.frames) > max_frames:
        raise MessageRejected(f"HOIWindow has {len(msg.frames)} frames, more than the cap of {max_frames} "
                              "(policy_node.max_window_frames)")
    out: list[ReferenceSample] = []
    end = None
    for k, frame in enumerate(msg.frames):
        s = parse_hoi_frame(frame, expected_fps, f"HOIWindow.frames[{k}]")
        if out and s.frame_index == out[-1].frame_index:
            end = s.frame_index
            continue
        if end is not None or s.frame_index != int(msg.start_frame) + k:
            raise MessageRejected(f"HOIWindow.frames[{k}].frame_index is {s.frame_index}, expected "
                                  f"{int(msg.start_frame) + k} (start_frame + k)")
        out.append(s)
    return out, end


def parse_robot_hoi_frame(msg: RobotHOIFrame, embodiment: EmbodimentSpec, expected_fps: float | None = None,
                          where: str = "RobotHOIFrame") -> ReferenceSample:
    """Validate a robot's reference frame against ``embodiment`` (robot name, joint and body counts);
    its joints become rotation vectors q a (the state convention, ``embodiment.description``)."""
    want = embodiment.name.removeprefix("robot:")
    if msg.robot != want:
        raise MessageRejected(f"{where}.robot is {msg.robot[:64]!r}, this policy drives {want!r}")
    fps = float(msg.fps)
    if not np.isfinite(fps):
        raise NonFiniteInput(f"{where}.fps is {msg.fps!r}")
    if not fps > 0:
        raise MessageRejected(f"{where}.fps must be positive, got {msg.fps!r}")
    if expected_fps is not None and abs(fps - expected_fps) > _FPS_RTOL * expected_fps:
        raise MessageRejected(f"{where}.fps is {fps:g} but the policy runs at {expected_fps:g} Hz "
                              "(resample the reference stream to the policy rate)")
    nb, nj = embodiment.num_bodies, embodiment.num_joints
    body_pos = _array(msg.body_positions, nb * 3, f"{where}.body_positions").reshape(nb, 3)
    body_rot = _array(msg.body_rotations, nb * 4, f"{where}.body_rotations").reshape(nb, 4)
    norms = np.linalg.norm(body_rot.astype(np.float64), axis=-1)
    if np.any(np.abs(norms - 1.0) > QUAT_NORM_TOL):
        b = int(np.argmax(np.abs(norms - 1.0)))
        raise MessageRejected(f"{where}.body_rotations[{b}] is not a unit quaternion (|q| = {norms[b]:.4g})")
    q = _array(msg.joint_positions, nj, f"{where}.joint_positions")
    assert embodiment.joint_axes is not None
    rotvec = (q[:, None] * np.asarray(embodiment.joint_axes, np.float32)).astype(np.float32)
    labels = _array(msg.body_contact_labels, nb, f"{where}.body_contact_labels")
    if not np.all(np.isin(labels, (-1.0, 0.0, 1.0))):
        raise MessageRejected(f"{where}.body_contact_labels must be -1, 0 or +1")
    if not msg.object_name:
        raise MessageRejected(f"{where}.object_name is empty")
    obj_pos, _ = pose_arrays(msg.object_pose, f"{where}.object_pose")
    pose_arrays(msg.root_pose, f"{where}.root_pose")
    o = msg.object_pose.orientation
    return ReferenceSample(
        frame_index=int(msg.frame_index), fps=fps, stamp_ns=ns_from_time(msg.header.stamp),
        body_pos=body_pos, body_rot=body_rot, joint_rotvec=rotvec, object_pos=obj_pos.astype(np.float32),
        object_rot=np.asarray([o.x, o.y, o.z, o.w], dtype=np.float32), object_name=msg.object_name,
        body_contact=labels, object_contact=bool(msg.object_contact),
    )


def parse_robot_hoi_window(msg: RobotHOIWindow, embodiment: EmbodimentSpec, expected_fps: float | None = None,
                           max_frames: int = MAX_WINDOW_FRAMES) -> tuple[list[ReferenceSample], int | None]:
    """:func:`parse_hoi_window` for a robot's window (same rules: consecutive frames, a repeated
    last frame marks the clip end, at most ``max_frames`` frames)."""
    if not msg.frames:
        raise MessageRejected("RobotHOIWindow has no frames")
    if len(msg.frames) > max_frames:
        raise MessageRejected(f"RobotHOIWindow has {len(msg.frames)} frames, more than the cap of {max_frames} "
                              "(policy_node.max_window_frames)")
    out: list[ReferenceSample] = []
    end = None
    for k, frame in enumerate(msg.frames):
        s = parse_robot_hoi_frame(frame, embodiment, expected_fps, f"RobotHOIWindow.frames[{k}]")
        if out and s.frame_index == out[-1].frame_index:
            end = s.frame_index
            continue
        if end is not None or s.frame_index != int(msg.start_frame) + k:
            raise MessageRejected(f"RobotHOIWindow.frames[{k}].frame_index is {s.frame_index}, expected "
                                  f"{int(msg.start_frame) + k} (start_frame + k)")
        out.append(s)
    return out, end


@dataclass(frozen=True)
class Readiness:
    ok: bool
    reason: str = ""
    need_frame: int | None = None


class ReferenceBuffer:
    """Frames by index plus the node's cursor (see the module docstring)."""

    def __init__(self, offsets: Sequence[int], max_lag_frames: int = 0,
                 max_buffered_frames: int = MAX_BUFFERED_FRAMES) -> None:
        if not offsets or min(offsets) < 0:
            raise ValueError(f"reference offsets must be >= 0, got {list(offsets)}")
        self.offsets = tuple(int(d) for d in offsets)
        self.max_offset = max(self.offsets)
        # frames t + max_offset and its next neighbour (central difference)
        self.required_lookahead = self.max_offset + 1
        self.max_lag_frames = int(max_lag_frames)
        self.max_buffered_frames = max(int(max_buffered_frames), self.required_lookahead + 2)
        self.dropped_frames = 0  # frames past the buffer cap (counted, not stored)
        self.restarts = 0
        self.skipped_frames = 0
        self.reset()

    # -- filling ----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._frames: dict[int, ReferenceSample] = {}
        self._cache: dict[int, tuple[str, RefSample]] = {}
        self.cursor: int | None = None
        self.first_index: int | None = None
        self.clip_end: int | None = None
        self.newest: int | None = None

    def _restart(self, index: int) -> None:
        if self.cursor is not None:
            self.restarts += 1
        self.reset()
        self.cursor = self.first_index = index

    def _store(self, s: ReferenceSample) -> None:
        i = s.frame_index
        if self.cursor is None or i < self.cursor - RESYNC_FRAMES:
            self._restart(i)
        assert self.cursor is not None and self.first_index is not None
        if i < self.first_index:
            self.first_index = i
        if i > self.cursor + self.max_buffered_frames:
            self.dropped_frames += 1
            return
        old = self._frames.get(i)
        if old is not None and not old.same_content(s):
            for j in (i - 1, i, i + 1):  # a re-planned frame changes its neighbours' velocities
                self._cache.pop(j, None)
        self._frames[i] = s
        if self.clip_end is not None and i > self.clip_end:
            self.clip_end = None  # the clip went on after all (a relayed plan grew)
        self.newest = i if self.newest is None else max(self.newest, i)

    def _limit_lag(self) -> None:
        if self.max_lag_frames > 0 and self.cursor is not None and self.newest is not None:
            lag = self.newest - self.cursor
            target = self.newest - self.required_lookahead
            if lag > self.max_lag_frames and target > self.cursor:
                self.skipped_frames += target - self.cursor
                self._move(target)

    def add(self, sample: ReferenceSample) -> None:
        """One streamed frame."""
        self._store(sample)
        self._limit_lag()

    def add_window(self, frames: Sequence[ReferenceSample], clip_end: int | None) -> None:
        """A window from :func:`parse_hoi_window`: its first frame is the producer's current one."""
        start = frames[0].frame_index
        if self.cursor is None or self.first_index is None or start < self.first_index:
            self._restart(start)
        elif abs(start - self.cursor) > RESYNC_FRAMES:
            if start > self.cursor:
                self.skipped_frames += start - self.cursor
            elif start - 1 not in self._frames:
                # moved back before what is kept: start is the first frame (one-sided difference)
                self.first_index = start
                self._cache.pop(start, None)
            self._move(start)
        for s in frames:
            self._store(s)
        if clip_end is not None:
            self.clip_end = clip_end
        self._limit_lag()

    # -- the cursor -------------------------------------------------------------------------------
    def _move(self, cursor: int) -> None:
        self.cursor = cursor
        for i in [i for i in self._frames if i < cursor - 1]:
            del self._frames[i]
            self._cache.pop(i, None)

    def advance(self, frames: int = 1) -> None:
        """Move the cursor after a tick (it stays at the clip end once there)."""
        if self.cursor is None:
            return
        nxt = self.cursor + frames
        if self.clip_end is not None:
            nxt = min(nxt, self.clip_end)
        self._move(nxt)

    def frame_for(self, offset: int) -> int:
        """The clip frame the observation reads for ``offset`` (clamped to the clip end)."""
        if self.cursor is None:
            raise RuntimeError("reference buffer has no cursor yet")
        f = self.cursor + offset
        return f if self.clip_end is None else min(f, self.clip_end)

    def _needed(self, f: int) -> list[int]:
        assert self.first_index is not None
        need = [f]
        if f > self.first_index:
            need.append(f - 1)
        if self.clip_end is None or f < self.clip_end:
            need.append(f + 1)
        return need

    def readiness(self) -> Readiness:
        if self.cursor is None:
            return Readiness(False, "waiting for reference", None)
        for d in self.offsets:
            for i in self._needed(self.frame_for(d)):
                if i not in self._frames:
                    have = f"have up to {self.newest}" if self.newest is not None else "have none"
                    return Readiness(False, f"waiting for lookahead: frame {i} ({have})", i)
        return Readiness(True)

    def current(self) -> ReferenceSample:
        """The sample at the cursor (after a successful :meth:`readiness`)."""
        return self._frames[self.frame_for(0)]

    # -- RefFrames ----------------------------------------------------------------------------------
    def _neighbours(self, f: int) -> list[ReferenceSample]:
        return [self._frames[i] for i in sorted(self._needed(f))]

    def ref_frame(self, f: int, object_name: str, cloud: ObjectCloud) -> RefSample:
        """The training-identical reference (``numpy_obs.RefSample``) of clip frame ``f``."""
        hit = self._cache.get(f)
        if hit is not None and hit[0] == object_name:
            return hit[1]
        seq = self._neighbours(f)
        k = [s.frame_index for s in seq].index(f)
        cur = seq[k]

        def stack(key: str) -> np.ndarray:
            return np.stack([getattr(s, key) for s in seq]).astype(np.float64)

        ref = reference_frame(stack("body_pos"), stack("body_rot"), stack("object_pos"), stack("object_rot"),
                              cur.body_contact, k, cur.fps, cloud.points)
        self._cache[f] = (object_name, ref)
        return ref

    def prepare(self, cloud_of: Callable[[str], ObjectCloud | None],
                then: Callable[[RefSample], object] | None = None) -> int:
        """Compute ahead the references the tick at the cursor reads, those whose neighbours
        have arrived (and ``then`` of each, the observation's own per-frame work); returns how
        many were computed. Called after a frame arrives and after a tick is published, so the
        tick itself mostly finds them cached."""
        if self.cursor is None:
            return 0
        done = 0
        for d in self.offsets:
            f = self.frame_for(d)
            if f in self._cache or not all(i in self._frames for i in self._needed(f)):
                continue
            name = self._frames[f].object_name
            cloud = cloud_of(name)
            if cloud is None:
                continue
            ref = self.ref_frame(f, name, cloud)
            if then is not None:
                then(ref)
            done += 1
        return done

    def ref_frames(self, cloud: ObjectCloud) -> list[RefSample]:
        """One reference per offset at the cursor, for the current clip's object ``cloud``."""
        name = self.current().object_name
        return [self.ref_frame(self.frame_for(d), name, cloud) for d in self.offsets]
