"""The motion streamer: a clip (or a generator's plans) as HOIFrame / HOIWindow messages.

The stream logic is checked without a transport, then the node over real Cyclone DDS on loopback
(a test node plays the simulation's /clock, the policy node and the generator; unique topics).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.hoi_motion import ARRAY_FIELDS, HOIMotion
from intermimic_policy.ros import msgs
from intermimic_policy.ros.messages_convert import MotionFrames, hoi_frame, hoi_window, motion_from_frames
from intermimic_policy.ros.motion_streamer import (
    ClipSource,
    GeneratorSource,
    MotionStreamerConfig,
    MotionStreamerNode,
    Stream,
    StreamerTopics,
    load_streamer_config,
)
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.node_params import ParamError
from intermimic_policy.ros.qos import QosProfile
from intermimic_policy.ros.reference_buffer import parse_hoi_window
from intermimic_policy.ros.transport import Node, make_node

DOMAIN = 220 + os.getpid() % 12
T0 = 1_000_000_000
DT = 33_333_333


@pytest.fixture(scope="module")
def motion() -> HOIMotion:
    return make_example_motion().slice(0, 30)


def test_frames_round_trip_bit_exact(motion: HOIMotion) -> None:
    frames = MotionFrames(motion)
    msgs_ = [frames.frame(i, T0 + i * DT) for i in range(motion.num_frames)]
    assert [m.frame_index for m in msgs_] == list(range(30)) and msgs_[3].fps == 30.0
    assert msgs.ns_from_time(msgs_[2].header.stamp) == T0 + 2 * DT
    back = motion_from_frames(msgs_, name=motion.name)
    for key in ARRAY_FIELDS:
        a, b = getattr(motion, key), getattr(back, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert back.object_name == motion.object_name and back.fps == motion.fps
    single = hoi_frame(motion, 7)
    assert single.frame_index == 7 and single.joint_rotvec == msgs_[7].joint_rotvec
    with pytest.raises(IndexError):
        frames.frame(30)


# -- the stream logic, no transport -----------------------------------------------------------------
def _indices(frames: list[HOIFrame]) -> list[int]:
    return [f.frame_index for f in frames]


def _window(s: Stream) -> HOIWindow:
    w = s.window()
    assert w is not None
    return w


def test_stream_sends_lookahead_once_and_marks_the_clip_end(motion: HOIMotion) -> None:
    s = Stream(ClipSource(motion), lookahead=17)
    s.restart(T0, 0)
    assert _indices(s.advance(0)) == list(range(18))
    assert _indices(s.advance(1)) == [18]
    assert s.advance(1) == []  # each frame once
    assert not s.in_end_zone(1)
    assert _indices(s.advance(5)) == [19, 20, 21, 22]
    window = s.window()
    assert window is not None and window.start_frame == 5 and _indices(window.frames) == list(range(5, 23))
    frames, end = parse_hoi_window(window)
    assert end is None and len(frames) == 18  # not near the end: no end marker
    assert _indices(s.advance(12)) == list(range(23, 30))  # up to the last frame, not past it
    assert s.in_end_zone(12)
    frames, end = parse_hoi_window(_window(s))
    assert end == 29 and frames[0].frame_index == 12 and frames[-1].frame_index == 29
    assert s.advance(40) == []
    assert _indices(_window(s).frames) == [29, 29]  # after the end: the last frame, marked
    assert msgs.ns_from_time(_window(s).header.stamp) == T0 + round(40 * 1e9 / 30)


def test_looping_stream_restarts_indices_only_when_the_lap_starts(motion: HOIMotion) -> None:
    s = Stream(ClipSource(motion), lookahead=17, loop=True)
    s.restart(T0, 5)
    assert _indices(s.advance(5)) == list(range(5, 23))
    assert _indices(s.advance(20)) == list(range(23, 30))  # the lookahead stops at the lap end
    assert s.in_end_zone(20)
    assert _indices(s.advance(29)) == []
    assert _indices(s.advance(30)) == list(range(0, 18))  # a new lap: indices restart (a new clip)
    assert _window(s).start_frame == 0 and s.clip_frame(31) == 1


def test_generator_source_relays_replans_and_learns_the_end(motion: HOIMotion) -> None:
    frames = MotionFrames(motion)
    src = GeneratorSource()
    s = Stream(src, lookahead=17)
    start, changed = src.add(hoi_window([frames.frame(i) for i in range(0, 10)]))
    assert (start, changed) == (0, [])
    s.restart(T0, start)
    assert _indices(s.advance(0)) == list(range(10))  # only what was planned so far
    src.add(hoi_window([frames.frame(i) for i in range(2, 25)]))
    assert _indices(s.advance(1)) == list(range(10, 19))
    replanned = frames.frame(12)
    replanned.object_contact = not replanned.object_contact
    _, changed = src.add(hoi_window([frames.frame(i) for i in range(11, 12)] + [replanned]))
    assert changed == [12]
    s.resend.update(changed)
    assert _indices(s.advance(2)) == [12, 19]  # the re-planned frame again, then the new one
    tail = [frames.frame(i) for i in range(20, 30)]
    src.add(hoi_window(tail + [tail[-1]]))  # the generator's clip ends at 29
    assert src.end() == 29
    assert _indices(s.advance(15)) == list(range(20, 30))
    with pytest.raises(Exception, match="frame_index"):
        src.add(HOIWindow(start_frame=3, frames=[frames.frame(5)]))


# -- the node over DDS -----------------------------------------------------------------------------
def _topics() -> StreamerTopics:
    p = f"/t{uuid.uuid4().hex[:10]}"
    return StreamerTopics(reference=f"{p}/reference", reference_window=f"{p}/window",
                          generator_window=f"{p}/generator", clock=f"{p}/clock", streamer_status=f"{p}/status")


class Consumer:
    """The test's policy node (frames, windows) and simulation (/clock) and generator."""

    def __init__(self, topics: StreamerTopics) -> None:
        self.node: Node = make_node(f"consumer_{uuid.uuid4().hex[:8]}", backend="cyclone", domain_id=DOMAIN)
        self.frames: list[HOIFrame] = []
        self.windows: list[HOIWindow] = []
        qos = QosProfile(depth=100)
        self.node.create_subscription(topics.reference, HOIFrame, self.frames.append, qos)
        self.node.create_subscription(topics.reference_window, HOIWindow, self.windows.append, qos)
        self.clock = self.node.create_publisher(topics.clock, Clock)
        self.generator = self.node.create_publisher(topics.generator_window, HOIWindow, qos)

    def tick(self, stamp_ns: int) -> None:
        self.clock.publish(Clock(clock=msgs.time_from_ns(stamp_ns)))


def _drive(streamer: MotionStreamerNode, peer: Consumer, until: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        streamer.poll(0.01)
        peer.node.spin_once(0.01)
    return until()


@pytest.fixture
def lockstep(motion: HOIMotion) -> Iterator[tuple[MotionStreamerNode, Consumer]]:
    topics = _topics()
    config = MotionStreamerConfig(clip="in-memory", lockstep=True, domain_id=DOMAIN, transport="cyclone",
                                  topics=topics, resend_s=0.2, window_hz=0.0)
    streamer = MotionStreamerNode(config, motion)
    peer = Consumer(topics)
    try:
        yield streamer, peer
    finally:
        peer.node.destroy()
        streamer.destroy()


def test_lockstep_follows_the_clock_resends_when_it_waits_and_restarts_when_it_goes_back(
        lockstep: tuple[MotionStreamerNode, Consumer]) -> None:
    streamer, peer = lockstep
    assert _drive(streamer, peer, lambda: streamer.subscriptions[0].publisher_count() == 1
                  and streamer.pub_frames.subscription_count() == 1)
    assert streamer.status_values()["mode"] == "waiting_for_clock"
    peer.tick(T0)
    assert _drive(streamer, peer, lambda: len(peer.frames) == 21 and len(peer.windows) == 1)
    assert _indices(peer.frames) == list(range(21))
    assert [msgs.ns_from_time(f.header.stamp) for f in peer.frames[:2]] == [T0, T0 + DT]
    assert peer.windows[0].start_frame == 0
    peer.tick(T0 + DT)
    assert _drive(streamer, peer, lambda: len(peer.frames) == 22)
    assert peer.frames[-1].frame_index == 21
    # the simulation waits (same clock again): the current window is re-sent, no new frames
    time.sleep(0.25)
    peer.tick(T0 + DT)
    assert _drive(streamer, peer, lambda: len(peer.windows) == 2)
    assert peer.windows[-1].start_frame == 1 and len(peer.frames) == 22
    # the simulation restarted: its clock went back, the stream starts again at start_offset
    peer.tick(T0)
    assert _drive(streamer, peer, lambda: len(peer.frames) == 22 + 21)
    assert _indices(peer.frames[22:]) == list(range(21)) and streamer.stream.restarts == 1
    # near the end every tick brings a window that marks the clip's last frame
    peer.tick(T0 + 12 * DT)
    assert _drive(streamer, peer, lambda: bool(peer.windows) and peer.windows[-1].start_frame == 12
                  and peer.frames[-1].frame_index == 29)
    _, end = parse_hoi_window(peer.windows[-1])
    assert end == 29 and peer.frames[-1].frame_index == 29
    assert streamer.status_values()["restarts"] == "1"


def test_generator_relay_republishes_frames_and_survives_bad_windows(motion: HOIMotion) -> None:
    class NotUtf8(HOIWindow):
        def serialize(self, *args: Any, **kwargs: Any) -> bytes:
            return HOIWindow.serialize(self, *args, **kwargs).replace(b"abcd\x00", b"\xff\xfe\xfd\xfc\x00")

    topics = _topics()
    now = [50.0]
    config = MotionStreamerConfig(source="generator", lockstep=False, domain_id=DOMAIN, transport="cyclone",
                                  topics=topics, wait_for_subscribers=False, window_hz=0.0)
    streamer = MotionStreamerNode(config, clock=lambda: now[0])
    peer = Consumer(topics)
    frames = MotionFrames(motion)
    try:
        assert _drive(streamer, peer, lambda: peer.generator.subscription_count() == 1
                      and streamer.pub_frames.subscription_count() == 1)
        assert streamer.status_values()["mode"] == "waiting_for_generator"
        bad_fps = frames.frame(1)
        bad_fps.fps = float("nan")
        for bad in (HOIWindow(start_frame=0, frames=[]),  # empty
                    HOIWindow(start_frame=4, frames=[frames.frame(0), frames.frame(1)]),  # wrong indices
                    HOIWindow(start_frame=0, frames=[frames.frame(0), bad_fps])):  # NaN
            peer.generator.publish(bad)
        peer.generator.publish(NotUtf8(start_frame=0, frames=[HOIFrame(object_name="abcd")]))
        assert _drive(streamer, peer, lambda: streamer.counters.rejected_generator_windows == 3
                      and streamer.subscriptions[0].malformed == 1), streamer.status_values()
        assert peer.frames == []
        peer.generator.publish(hoi_window([frames.frame(i) for i in range(5, 30)]))
        # the stream starts at the generator's current frame, with the default lookahead of 20
        assert _drive(streamer, peer, lambda: len(peer.frames) == 21 and len(peer.windows) == 1)
        assert _indices(peer.frames) == list(range(5, 26)) and peer.windows[-1].start_frame == 5
        now[0] += 2 / 30  # real time: two frames later, two more frames
        assert _drive(streamer, peer, lambda: len(peer.frames) == 23)
        assert _indices(peer.frames[-2:]) == [26, 27]
        status = streamer.status_values()
        assert status["mode"] == "streaming" and status["frame"] == "7" and status["generator_windows"] == "1"
    finally:
        peer.node.destroy()
        streamer.destroy()


def test_config_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("common: {example: true, loop: true}\nmotion_streamer: {lookahead_frames: 10}\n")
    with pytest.raises(ParamError, match=r"lookahead_frames must be >= 17"):
        load_streamer_config(str(cfg))
    cfg.write_text("common: {example: true, loop: true}\nmotion_streamer: {looop: true}\n")
    with pytest.raises(ParamError, match=r"s\.yaml: motion_streamer\.looop: unknown key\(s\)"):
        load_streamer_config(str(cfg))
    cfg.write_text("common: {clip: '', example: false}\nmotion_streamer: {source: generator, rate_hz: 30}\n")
    config = load_streamer_config(str(cfg))  # a relay needs no clip
    assert config.source == "generator" and config.rate_hz == 30.0
    cfg.write_text("common: {clip: '', example: false}\n")
    with pytest.raises(ParamError, match="exactly one clip"):
        load_streamer_config(str(cfg))
