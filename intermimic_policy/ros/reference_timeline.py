"""Generator windows -> one reference timeline at the control rate (pure: no transport, no clock).

A motion generator sends windows of future frames at its own rate, with overlap between
consecutive windows and with some latency; windows arrive jittered, and one may be lost. The
policy needs one frame per control tick plus a fixed lookahead. This module joins the windows:

* **time**: a frame's time is ``frame_index / fps`` (the generator's own index and rate), control
  frame ``i`` is at ``i / control_hz``; each window is resampled onto the control grid (slerp for
  rotations, linear for positions, labels from the nearer frame);
* **cross-fade**: where a new window overlaps frames still ahead of the consumer's cursor, the old
  plan fades into the new one linearly over the overlap (so a re-plan never jumps); frames at or
  behind the cursor are never changed;
* **bridge**: when the real frames run out before the needed lookahead (a late or lost window),
  the last real frame is held (zero velocity, as a clip end is) for at most ``bridge_s``; after
  that :meth:`ReferenceTimeline.status` says ``hold`` and the consumer goes to safe hold;
* **late windows**: a window arriving while the timeline was bridging came too late for the
  needed lookahead: it is counted (and used: its frames replace the bridged ones ahead).

Interface (what the policy node calls): :meth:`ReferenceTimeline.push` a window,
:meth:`ReferenceTimeline.feed` the control-rate frames into the node's ``ReferenceBuffer`` on
every window and every tick, :meth:`ReferenceTimeline.status` for the mode and the counters;
:meth:`ReferenceTimeline.frame` / :meth:`frame_at` read the timeline directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from intermimic_policy.embodiment.smplx_body import CONTROL_HZ
from intermimic_policy.observation.numpy_obs import quat_from_rotvec, quat_to_rotvec
from intermimic_policy.ros.msgs.intermimic_msgs import HOIWindow
from intermimic_policy.ros.reference_buffer import ReferenceBuffer, ReferenceSample, parse_hoi_window

MODES = ("waiting", "ok", "bridging", "hold", "ended")
_EPS = 1e-6
RESTART_S = 2.0  # a window starting this far behind the cursor starts a new timeline (a new clip)


@dataclass(frozen=True)
class TimelineConfig:
    """The ``policy_node.timeline`` parameters."""

    enabled: bool = False  # join generator windows (any rate, overlapping, late) instead of relayed ones
    bridge_s: float = 0.5  # hold the last real frame this long when windows are late, then safe hold
    crossfade: bool = True  # fade overlapping plans into each other (False: the newest plan wins)

    def validate(self, where: str = "timeline") -> TimelineConfig:
        if not (math.isfinite(self.bridge_s) and self.bridge_s >= 0):
            raise ValueError(f"{where}.bridge_s must be a finite number >= 0, got {self.bridge_s}")
        return self


@dataclass(frozen=True)
class TimelineWindow:
    """A generator window: frames at the generator's rate; ``end`` marks the last of a clip."""

    samples: tuple[ReferenceSample, ...]
    end: bool = False

    @property
    def fps(self) -> float:
        return self.samples[0].fps

    @property
    def times(self) -> np.ndarray:
        return np.array([s.frame_index for s in self.samples], dtype=np.float64) / self.fps


def window_from_message(msg: HOIWindow) -> TimelineWindow:
    """Validate an ``HOIWindow`` at any frame rate (raises ``MessageRejected`` like the node's parsers)."""
    samples, end = parse_hoi_window(msg, expected_fps=None)
    return TimelineWindow(tuple(samples), end=end is not None)


@dataclass
class TimelineStatus:
    mode: str = "waiting"
    reason: str = ""
    windows: int = 0
    late_windows: int = 0  # arrived while the timeline was bridging (too late for the lookahead)
    restarts: int = 0  # a window far behind the cursor: the generator started a new clip
    stale_windows: int = 0  # entirely behind the cursor: dropped
    bridged_frames: int = 0  # frames made up by holding the last real frame
    crossfaded_frames: int = 0
    horizon: int | None = None  # newest real control frame
    end: int | None = None

    def values(self) -> dict[str, str]:
        """For the node's diagnostics (``timeline.*`` keys)."""
        out = {k: ("" if v is None else str(v)) for k, v in self.__dict__.items()}
        return {f"timeline.{k}": v for k, v in out.items()}


# -- blending of samples ---------------------------------------------------------------------------
def _slerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """Slerp on the shorter arc, numpy only (the policy node runs without torch)."""
    qa = np.asarray(a, dtype=np.float64)
    qb = np.asarray(b, dtype=np.float64)
    dot = (qa * qb).sum(-1, keepdims=True)
    qb = np.where(dot < 0, -qb, qb)
    theta = np.arccos(np.minimum(np.abs(dot), 1.0))
    s = np.sin(theta)
    near = s < 1e-6
    safe = np.maximum(s, 1e-12)
    ka = np.where(near, 1.0 - w, np.sin((1.0 - w) * theta) / safe)
    kb = np.where(near, w, np.sin(w * theta) / safe)
    q = ka * qa + kb * qb
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def blend(a: ReferenceSample, b: ReferenceSample, w: float, index: int, fps: float) -> ReferenceSample:
    """``a`` and ``b`` mixed by ``w`` in [0, 1] (0: a), as control frame ``index``."""
    if w <= _EPS:
        return replace(a, frame_index=index, fps=fps)
    if w >= 1.0 - _EPS:
        return replace(b, frame_index=index, fps=fps)
    lerp = lambda x, y: ((1.0 - w) * x.astype(np.float64) + w * y.astype(np.float64)).astype(np.float32)  # noqa: E731
    ja = quat_from_rotvec(a.joint_rotvec.astype(np.float64))
    jb = quat_from_rotvec(b.joint_rotvec.astype(np.float64))
    joints = quat_to_rotvec(_slerp(ja, jb, w).astype(np.float64)).astype(np.float32)
    near = a if w < 0.5 else b
    return ReferenceSample(
        frame_index=index, fps=fps, stamp_ns=near.stamp_ns, body_pos=lerp(a.body_pos, b.body_pos),
        body_rot=_slerp(a.body_rot, b.body_rot, w), joint_rotvec=joints,
        object_pos=lerp(a.object_pos, b.object_pos), object_rot=_slerp(a.object_rot, b.object_rot, w),
        object_name=near.object_name, body_contact=near.body_contact, object_contact=near.object_contact)


def resample_window(window: TimelineWindow, control_hz: float) -> dict[int, ReferenceSample]:
    """The window's frames on the control grid: every control frame inside its time span."""
    times = window.times
    first = math.ceil(times[0] * control_hz - _EPS)
    last = math.floor(times[-1] * control_hz + _EPS)
    out: dict[int, ReferenceSample] = {}
    for i in range(first, last + 1):
        t = i / control_hz
        k = int(np.clip(np.searchsorted(times, t + _EPS / control_hz, side="right") - 1, 0, len(times) - 1))
        if k == len(times) - 1 or abs(times[k] - t) * control_hz < _EPS:
            out[i] = replace(window.samples[k], frame_index=i, fps=control_hz)
            continue
        w = float((t - times[k]) / (times[k + 1] - times[k]))
        out[i] = blend(window.samples[k], window.samples[k + 1], w, i, control_hz)
    return out


# -- the timeline ----------------------------------------------------------------------------------
class ReferenceTimeline:
    """Control-rate frames joined from windows (see the module docstring)."""

    def __init__(self, control_hz: float = CONTROL_HZ, lookahead: int = 17,
                 config: TimelineConfig | None = None) -> None:
        self.control_hz = float(control_hz)
        self.lookahead = int(lookahead)
        self.config = (config or TimelineConfig()).validate()
        self.frames: dict[int, ReferenceSample] = {}
        self.bridged: set[int] = set()
        self.cursor: int | None = None  # the consumer's current frame
        self._status = TimelineStatus()
        self._bridging_since: float | None = None
        self._dirty: set[int] = set()  # frames changed since the last feed
        self._restarted = False  # the consumer's buffer must start over too

    # -- input ------------------------------------------------------------------------------------
    def push(self, window: TimelineWindow, now: float) -> None:
        """Join one window (``now``: seconds on the consumer's monotonic clock)."""
        st = self._status
        st.windows += 1
        new = resample_window(window, self.control_hz)
        if not new:
            st.stale_windows += 1
            return
        lo, hi = min(new), max(new)
        if self.cursor is not None and lo < self.cursor - RESTART_S * self.control_hz:
            self._restart()
        elif self.cursor is not None and hi < self.cursor:
            st.stale_windows += 1
            return
        if st.mode in ("bridging", "hold"):
            st.late_windows += 1
        floor = -1 if self.cursor is None else self.cursor  # frames at or behind the cursor stay
        old_real = [i for i in range(max(lo, floor + 1), hi + 1) if i in self.frames and i not in self.bridged]
        fade = self.config.crossfade and bool(old_real)
        a, b = (min(old_real), max(old_real)) if old_real else (0, -1)
        for i, sample in new.items():
            if i <= floor:
                continue
            if fade and a <= i <= b:
                w = (i - a + 1) / (b - a + 2)
                sample = blend(self.frames[i], sample, w, i, self.control_hz)
                st.crossfaded_frames += 1
            self.frames[i] = sample
            self.bridged.discard(i)
            self._dirty.add(i)
        if window.end:
            st.end = hi
            for i in [i for i in self.frames if i > hi]:
                del self.frames[i]
                self.bridged.discard(i)
        elif st.end is not None and hi > st.end:
            st.end = None  # the clip went on after all
        self._update_horizon()
        if self.cursor is None:
            self.cursor = lo

    def _restart(self) -> None:
        self.frames.clear()
        self.bridged.clear()
        self._dirty.clear()
        self.cursor = None
        self._bridging_since = None
        self._status.restarts += 1
        self._restarted = True
        self._status.end = None
        self._status.mode = "waiting"

    def _update_horizon(self) -> None:
        real = [i for i in self.frames if i not in self.bridged]
        self._status.horizon = max(real) if real else None

    # -- the consumer -------------------------------------------------------------------------------
    def set_cursor(self, cursor: int | None, now: float) -> None:
        """The consumer's current frame; frames well behind it are forgotten."""
        if cursor is None:
            return
        self.cursor = cursor
        for i in [i for i in self.frames if i < cursor - 2]:
            del self.frames[i]
            self.bridged.discard(i)
            self._dirty.discard(i)
        self._bridge(now)

    def _bridge(self, now: float) -> None:
        st = self._status
        if st.horizon is None or self.cursor is None:
            st.mode, st.reason = "waiting", "no generator window yet"
            return
        need = self.cursor + self.lookahead
        if st.end is not None and st.horizon >= st.end:
            st.mode, st.reason = "ended", ""
            self._bridging_since = None
            return
        if st.horizon >= need:
            st.mode, st.reason = "ok", ""
            self._bridging_since = None
            return
        if self._bridging_since is None:
            self._bridging_since = now
        late_s = now - self._bridging_since
        if late_s > self.config.bridge_s:
            st.mode = "hold"
            st.reason = (f"generator windows late: real frames end at {st.horizon}, frame {need} needed, "
                         f"bridged {late_s:.2f} s > bridge_s {self.config.bridge_s:g} s")
            return
        st.mode, st.reason = "bridging", f"holding frame {st.horizon} (needed {need})"
        last = self.frames[st.horizon]
        for i in range(st.horizon + 1, need + 1):
            if i not in self.frames:
                self.frames[i] = replace(last, frame_index=i)
                self.bridged.add(i)
                self._dirty.add(i)
                st.bridged_frames += 1

    def feed(self, buffer: ReferenceBuffer, now: float) -> None:
        """Bring the buffer up to date: frames changed since the last feed, in order, from the
        buffer's cursor on, and the clip end. Call after every push and before every tick."""
        if self._restarted:
            self._restarted = False
            buffer.restarts += 1
            buffer.reset()
        self.set_cursor(buffer.cursor if buffer.cursor is not None else self.cursor, now)
        start = buffer.cursor - 1 if buffer.cursor is not None else None
        for i in sorted(self._dirty):
            if start is not None and i < start:
                continue
            buffer.add(self.frames[i])
        self._dirty.clear()
        if self._status.end is not None:
            buffer.clip_end = self._status.end
        elif buffer.clip_end is not None and buffer.newest is not None and buffer.newest > buffer.clip_end:
            buffer.clip_end = None

    def status(self) -> TimelineStatus:
        return replace(self._status)

    # -- reading ------------------------------------------------------------------------------------
    def frame(self, index: int) -> ReferenceSample | None:
        return self.frames.get(index)

    def frame_at(self, t: float) -> ReferenceSample | None:
        """The frame at stream time ``t`` (s), interpolated between control frames."""
        x = t * self.control_hz
        i = math.floor(x + _EPS)
        a, b = self.frames.get(i), self.frames.get(i + 1)
        if a is None:
            return None
        w = x - i
        if b is None or w < _EPS:
            return a
        return blend(a, b, w, i, self.control_hz)


def windows_from_frames(samples: Sequence[ReferenceSample], size: int, stride: int) -> list[TimelineWindow]:
    """Consecutive overlapping windows over a list of samples (tests and the reference generator)."""
    out = []
    for s in range(0, len(samples), stride):
        chunk = tuple(samples[s:s + size])
        out.append(TimelineWindow(chunk, end=s + size >= len(samples)))
        if s + size >= len(samples):
            break
    return out


__all__ = ["MODES", "ReferenceTimeline", "TimelineConfig", "TimelineStatus", "TimelineWindow", "blend",
           "resample_window", "window_from_message", "windows_from_frames"]
