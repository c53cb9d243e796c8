"""The reference timeline: generator windows joined at the control rate, as the policy node
consumes them (``ReferenceBuffer`` fed by ``ReferenceTimeline.feed`` every window and tick).

* overlapping 30 fps windows delivered out of order, one dropped: the consumer reads the clip
  bit for bit;
* 20 fps windows: resampled to 30 Hz within a few mm of the 30 fps clip;
* windows that disagree (plan noise) are cross-faded: no jump at the window boundaries;
* windows that stop: the last real frame is held for ``bridge_s``, then the timeline says hold;
  a window that arrives while bridging is counted late and replaces the bridged frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intermimic_policy.motion.io import load_motion
from intermimic_policy.ros.reference_buffer import ReferenceBuffer
from intermimic_policy.ros.reference_timeline import (
    ReferenceTimeline,
    TimelineConfig,
    TimelineWindow,
    window_from_message,
)
from intermimic_policy.stream.client import window_message
from intermimic_policy.stream.reference import ClipWindowGenerator, ReferenceGeneratorConfig

OFFSETS = (1, 16)  # the teacher's reference offsets
DT = 1.0 / 30.0


@pytest.fixture(scope="module")
def clip(motions_root: Path):  # type: ignore[no-untyped-def]
    return load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt").slice(0, 90)


def _windows(clip, config: ReferenceGeneratorConfig, period_frames: int) -> list[TimelineWindow]:  # type: ignore[no-untyped-def]
    """Every window the generator sends, at stream times 0, period, 2 period, ... (via messages)."""
    gen = ClipWindowGenerator(clip, config)
    out = []
    k = 0
    while True:
        w = gen(k * period_frames * DT)
        if w is None:
            return out
        out.append(window_from_message(window_message(w.motion, w.start_frame, w.end)))
        k += 1


class Consumer:
    """The policy node's use of the timeline, without the node: push, feed, tick."""

    def __init__(self, config: TimelineConfig | None = None) -> None:
        self.buffer = ReferenceBuffer(OFFSETS)
        self.timeline = ReferenceTimeline(30.0, self.buffer.required_lookahead, config or TimelineConfig(enabled=True))
        self.now = 0.0

    def push(self, window: TimelineWindow) -> None:
        self.timeline.push(window, self.now)
        self.timeline.feed(self.buffer, self.now)

    def tick(self) -> np.ndarray | None:
        """Pelvis position of the frame at the cursor, or None when not ready; advances."""
        self.timeline.feed(self.buffer, self.now)
        self.now += DT
        if not self.buffer.readiness().ok or self.timeline.status().mode == "hold":
            return None
        out = self.buffer.current().body_pos.copy()
        self.buffer.advance()
        return out


def test_jittered_overlapping_windows_with_one_dropped_rebuild_the_clip(clip) -> None:  # type: ignore[no-untyped-def]
    windows = _windows(clip, ReferenceGeneratorConfig(window_s=1.5), period_frames=6)
    arrival = {i: i * 6 + (1 if i % 2 else -1) for i in range(len(windows))}  # jitter: +-1 frame
    arrival[0] = 0
    dropped = 3
    c = Consumer()
    got = []
    for tick in range(clip.num_frames):
        for i, w in enumerate(windows):
            if arrival[i] == tick and i != dropped:
                c.push(w)
        frame = c.tick()
        assert frame is not None, (tick, c.timeline.status(), c.buffer.readiness())
        got.append(frame)
        if c.buffer.cursor == c.buffer.clip_end:
            break
    got_a = np.stack(got)
    assert len(got_a) == clip.num_frames - 1
    np.testing.assert_array_equal(got_a, clip.body_pos[: len(got_a)])
    st = c.timeline.status()
    assert st.bridged_frames == 0 and st.late_windows == 0 and st.mode == "ended"
    assert st.crossfaded_frames > 0 and st.windows == len(windows) - 1


def test_20fps_windows_are_resampled_to_the_control_rate(clip) -> None:  # type: ignore[no-untyped-def]
    windows = _windows(clip, ReferenceGeneratorConfig(window_s=1.5, fps=20.0), period_frames=6)
    c = Consumer()
    for w in windows:
        c.push(w)
    frames = [c.timeline.frame(i) for i in range(clip.num_frames - 1)]
    assert all(f is not None for f in frames)
    pos = np.stack([f.body_pos for f in frames])  # type: ignore[union-attr]
    err = np.linalg.norm(pos - clip.body_pos[: len(pos)], axis=-1)
    print(f"20 -> 30 fps: mean {1000 * err.mean():.2f} mm, max {1000 * err.max():.2f} mm")
    assert err.mean() < 0.005 and err.max() < 0.03
    assert all(f.fps == 30.0 for f in frames)  # type: ignore[union-attr]
    mid = c.timeline.frame_at(10.5 * DT)
    assert mid is not None
    np.testing.assert_allclose(mid.body_pos, 0.5 * (pos[10] + pos[11]), atol=1e-5)


def _max_step(clip, crossfade: bool) -> float:  # type: ignore[no-untyped-def]
    windows = _windows(clip, ReferenceGeneratorConfig(window_s=1.0, noise_m=0.05, seed=4), period_frames=6)
    c = Consumer(TimelineConfig(enabled=True, crossfade=crossfade))
    got = []
    for tick in range(clip.num_frames - 20):
        if tick % 6 == 0 and tick // 6 < len(windows):
            c.push(windows[tick // 6])
        frame = c.tick()
        assert frame is not None
        got.append(frame[0])
    return float(np.linalg.norm(np.diff(np.stack(got), axis=0), axis=-1).max())


def test_disagreeing_windows_are_crossfaded(clip) -> None:  # type: ignore[no-untyped-def]
    faded, hard = _max_step(clip, True), _max_step(clip, False)
    own = float(np.linalg.norm(np.diff(clip.body_pos[:, 0], axis=0), axis=-1).max())
    print(f"largest pelvis step per tick: clip {100 * own:.2f} cm, cross-faded {100 * faded:.2f} cm, "
          f"newest plan wins {100 * hard:.2f} cm")
    assert faded < 0.5 * hard
    assert faded < own + 0.03


def test_missing_windows_are_bridged_then_hold_and_late_windows_counted(clip) -> None:  # type: ignore[no-untyped-def]
    windows = _windows(clip, ReferenceGeneratorConfig(window_s=1.0), period_frames=6)
    c = Consumer(TimelineConfig(enabled=True, bridge_s=0.3))
    c.push(windows[0])  # frames 0..30; lookahead 17 -> real frames last until tick 13
    modes = []
    for _ in range(30):
        frame = c.tick()
        modes.append(c.timeline.status().mode)
        if frame is None:
            break
    st = c.timeline.status()
    assert modes[:13] == ["ok"] * 13 and "bridging" in modes and modes[-1] == "hold", modes
    bridging_ticks = modes.count("bridging")
    assert bridging_ticks == pytest.approx(0.3 / DT, abs=1.5)  # bounded by bridge_s
    assert st.bridged_frames > 0 and "late" in st.reason
    # the generator comes back: its window is late, replaces the bridged frames, and the node runs again
    cursor = c.buffer.cursor
    assert cursor is not None
    back = next(w for w in windows if w.samples[0].frame_index >= cursor - 2)
    c.push(back)
    st = c.timeline.status()
    assert st.late_windows == 1 and st.mode == "ok"
    nxt = c.timeline.frame(cursor + 1)
    assert nxt is not None and cursor + 1 not in c.timeline.bridged
    np.testing.assert_array_equal(nxt.body_pos, clip.body_pos[cursor + 1])
    assert c.tick() is not None
    # a window entirely behind the cursor is dropped
    c.push(TimelineWindow(windows[0].samples[:5]))
    assert c.timeline.status().stale_windows == 1


def test_a_window_from_far_behind_starts_a_new_timeline(clip) -> None:  # type: ignore[no-untyped-def]
    windows = _windows(clip, ReferenceGeneratorConfig(window_s=1.0), period_frames=6)
    c = Consumer()
    for tick in range(75):
        if tick % 6 == 0 and tick // 6 < len(windows):
            c.push(windows[tick // 6])
        assert c.tick() is not None
    assert c.buffer.cursor == 75
    c.push(windows[0])  # the generator started over (frames 0..30)
    assert c.timeline.status().restarts == 1 and c.buffer.cursor == 0 and c.buffer.restarts == 1
    frame = c.tick()
    assert frame is not None
    np.testing.assert_array_equal(frame, clip.body_pos[0])
