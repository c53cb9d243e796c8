"""The motion streamer node: a reference clip (or a generator's plans) as ``HOIFrame`` messages.

Sources (``source``):

* ``clip``: a file any ``load_motion`` format reads, or the bundled example clip; streamed from
  ``start_offset``, optionally looping (``loop``: each lap restarts at frame 0, and its frame
  indices restart too, which consumers read as a new clip).
* ``generator``: a relay for a motion generator process. It subscribes to
  ``/intermimic/generator/window`` (``HOIWindow``: the generator's current frame and its plan),
  keeps the newest plan of every frame, and republishes the frames at the stream's rate. A window
  that re-plans frames already sent re-sends them; a window far from the stream position
  re-synchronises the stream to it; a window whose last frame repeats marks the clip end.

Timing: the stream has a position (the clip frame that is "now"). It publishes every frame up to
position + ``lookahead_frames`` (the policy reads frames t+1..t+16 and a neighbour for central
differences, so at least 17), each once, and ``HOIWindow`` messages (the position and its
lookahead) every ``1 / window_hz`` s, and on every tick once the clip end is within the
lookahead (the window's repeated last frame tells the consumer where the clip ends, and keeps
its reference input fresh after the last frame).

* lockstep: the position follows ``/clock`` (the simulation's time): the first clock is the
  stream's start, a clock that goes back (a restarted simulation) restarts the stream, and a
  repeated clock (the simulation waiting for a tick's targets) re-sends the current window at
  most every ``resend_s``, so a consumer that joined late or restarted gets its lookahead.
* real time: the position advances at ``rate_hz`` on the wall clock, from when the first
  subscriber matched (``wait_for_subscribers``).

Run: ``intermimic_motion_streamer --config config/sim_hoi.yaml [--clip CLIP | --example]
[--source generator] [--loop] [--lockstep]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.robot_motion import RobotMotion
from intermimic_policy.ros import node_params
from intermimic_policy.ros.messages_convert import (
    WORLD_FRAME,
    MotionFrames,
    RobotMotionFrames,
    header,
    hoi_window,
    load_clip,
)
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray, DiagnosticStatus
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow, RobotHOIFrame, RobotHOIWindow
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.node_common import NodeLifetime, status_array
from intermimic_policy.ros.node_main import StopFlag, add_common_arguments, exit_process, run_main
from intermimic_policy.ros.node_state import MessageRejected
from intermimic_policy.ros.qos import QosProfile
from intermimic_policy.ros.reference_buffer import parse_hoi_window
from intermimic_policy.ros.topics import Topics, validate_prefix

logger = logging.getLogger("intermimic.ros.motion_streamer")

SECTION = "motion_streamer"
STATUS_NAME = "intermimic/motion_streamer"
SOURCES = ("clip", "generator")
# the policy reads frames up to t + 16 and one neighbour for central differences
MIN_LOOKAHEAD = 17
# a generator window this many frames away from the stream position re-synchronises the stream
RESYNC_FRAMES = 2


# -- configuration ---------------------------------------------------------------------------------
# one topic table for every node (``ros.topics``); the old name stays for callers
StreamerTopics = Topics


@dataclass(frozen=True)
class MotionStreamerConfig:
    """The ``motion_streamer`` section (plus the ``common`` keys it shares with the other nodes)."""

    source: str = "clip"  # "clip" or "generator"
    clip: str = ""
    example: bool = False
    start_offset: int = 0  # first clip frame streamed (the bridge resets to it too)
    loop: bool = False
    lockstep: bool = False
    domain_id: int | None = None
    transport: str = "auto"
    node_name: str = "motion_streamer"
    namespace: str = "/"
    rate_hz: float = 0.0  # 0: the clip's (or the generator frames') fps; a generator's frames must match it
    lookahead_frames: int = 20
    window_hz: float = 2.0  # whole windows per second (0: only at the clip end and on re-sends)
    resend_s: float = 0.25  # lockstep: re-send the current window this often while the clock waits
    wait_for_subscribers: bool = True  # real time: start streaming when the reference has a reader
    reference_depth: int = 100  # reliable keep-last depth of the reference topics
    status_hz: float = 2.0
    frame_id: str = WORLD_FRAME
    # generator: frames kept ahead of the stream (older ones are forgotten as it passes them;
    # frames beyond this many ahead are dropped and counted) and frames in one window (a longer
    # window is refused unparsed)
    max_stored_frames: int = 1024
    max_window_frames: int = 128
    topic_prefix: str = ""  # prepended to every topic name (two runs on one host never cross)
    topics: Topics = field(default_factory=Topics)

    def validate(self, source: str = "motion streamer config") -> MotionStreamerConfig:
        def bad(key: str, why: str) -> node_params.ParamError:
            return node_params.ParamError(f"{source}: {SECTION}.{key} {why}")

        if self.source not in SOURCES:
            raise bad("source", f"must be one of {SOURCES}, got {self.source!r}")
        if self.source == "clip" and bool(self.clip) == self.example:
            raise bad("clip", "and example: give exactly one clip (common.clip, --clip) or example: true")
        if self.start_offset < 0:
            raise bad("start_offset", f"must be >= 0, got {self.start_offset}")
        if self.lookahead_frames < MIN_LOOKAHEAD:
            raise bad("lookahead_frames", f"must be >= {MIN_LOOKAHEAD} (the policy reads frame t + 16 and its "
                                          f"neighbour), got {self.lookahead_frames}")
        for key in ("rate_hz", "window_hz"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise bad(key, f"must be a finite number >= 0, got {value}")
        for key in ("resend_s", "status_hz"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise bad(key, f"must be a positive number, got {value}")
        if self.reference_depth < 1:
            raise bad("reference_depth", f"must be >= 1, got {self.reference_depth}")
        for key in ("max_stored_frames", "max_window_frames"):
            value = getattr(self, key)
            if not MIN_LOOKAHEAD <= value <= 100_000:
                raise bad(key, f"must be within {MIN_LOOKAHEAD}..100000, got {value}")
        why = validate_prefix(self.topic_prefix)
        if why:
            raise bad("topic_prefix", why)
        return self


def load_streamer_config(path: str | None, **overrides: Any) -> MotionStreamerConfig:
    return node_params.load_params(path, SECTION, MotionStreamerConfig, **overrides)


# -- frame sources ---------------------------------------------------------------------------------
class FrameSource(Protocol):
    fps: float | None

    def get(self, index: int, stamp_ns: int) -> HOIFrame | None:
        """Clip frame ``index`` stamped ``stamp_ns``, or None when not available (yet)."""

    def end(self) -> int | None:
        """The clip's last frame index, when known."""


class ClipSource:
    """A clip in memory."""

    def __init__(self, motion: HOIMotion, frame_id: str = WORLD_FRAME) -> None:
        # a robot motion (``intermimic retarget --robot``) streams as RobotHOIFrame / RobotHOIWindow
        self.robot = isinstance(motion, RobotMotion)
        self.frames: MotionFrames | RobotMotionFrames = (
            RobotMotionFrames(motion, frame_id) if isinstance(motion, RobotMotion) else MotionFrames(motion, frame_id))
        self.fps: float | None = float(motion.fps)
        self.name = motion.name

    def get(self, index: int, stamp_ns: int) -> HOIFrame | None:
        # a robot clip's frames are RobotHOIFrame (the stream handles both alike: index and stamp)
        return self.frames.frame(index, stamp_ns) if 0 <= index < self.frames.num_frames else None  # type: ignore[return-value]

    def end(self) -> int | None:
        return self.frames.num_frames - 1


class GeneratorSource:
    """The newest plan of every frame a generator sent, by clip frame index."""

    def __init__(self, frame_id: str = WORLD_FRAME, max_stored_frames: int = 1024,
                 max_window_frames: int = 128) -> None:
        self.store: dict[int, HOIFrame] = {}
        self.max_stored_frames = max_stored_frames
        self.max_window_frames = max_window_frames
        self.dropped_frames = 0  # frames beyond the store's cap (not kept)
        self.fps: float | None = None
        self.frame_id = frame_id
        self.end_frame: int | None = None
        self.name = "generator"

    def add(self, msg: HOIWindow) -> tuple[int, list[int]]:
        """Store a validated window's frames; (its start frame, indices whose content changed)."""
        samples, end = parse_hoi_window(msg, self.fps, self.max_window_frames)
        changed = []
        for k, sample in enumerate(samples):
            frame = msg.frames[k]
            if sample.frame_index not in self.store and len(self.store) >= self.max_stored_frames:
                self.dropped_frames += 1  # the stream forgets frames it passed: this bounds the plan ahead
                continue
            old = self.store.get(sample.frame_index)
            if old is not None and replace(old, header=frame.header) != frame:
                changed.append(sample.frame_index)
            self.store[sample.frame_index] = frame
        self.fps = samples[0].fps
        last = samples[-1].frame_index
        if end is not None:
            self.end_frame = end
        elif self.end_frame is not None and last > self.end_frame:
            self.end_frame = None  # the plan grew past a previously announced end
        return samples[0].frame_index, changed

    def forget_before(self, index: int) -> None:
        for i in [i for i in self.store if i < index]:
            del self.store[i]

    def get(self, index: int, stamp_ns: int) -> HOIFrame | None:
        frame = self.store.get(index)
        if frame is None:
            return None
        return replace(frame, header=header(stamp_ns, self.frame_id))

    def end(self) -> int | None:
        return self.end_frame


# -- the stream ------------------------------------------------------------------------------------
class Stream:
    """Which frames to publish for a stream position, without a transport.

    Positions are absolute counters ``c`` (laps of a looping clip continue counting); the clip
    frame of ``c`` is ``c % T`` when looping, else ``c`` (capped at the clip end).
    """

    def __init__(self, source: FrameSource, lookahead: int, loop: bool = False) -> None:
        self.source = source
        self.lookahead = lookahead
        self.loop = loop
        self.anchor_ns: int | None = None
        self.anchor_c = 0
        self.sent_upto = -1
        self.position = 0
        self.restarts = 0
        self.resend: set[int] = set()

    @property
    def started(self) -> bool:
        return self.anchor_ns is not None

    def restart(self, anchor_ns: int, c0: int) -> None:
        if self.started:
            self.restarts += 1
        self.anchor_ns, self.anchor_c = anchor_ns, c0
        self.position = c0
        self.sent_upto = c0 - 1
        self.resend.clear()

    def fps(self) -> float:
        return self.source.fps or 30.0

    def position_at(self, time_ns: int) -> int:
        assert self.anchor_ns is not None
        return self.anchor_c + int(math.floor((time_ns - self.anchor_ns) * self.fps() * 1e-9 + 1e-6))

    def stamp_of(self, c: int) -> int:
        assert self.anchor_ns is not None
        return self.anchor_ns + int(round((c - self.anchor_c) * 1e9 / self.fps()))

    def clip_frame(self, c: int) -> int:
        end = self.source.end()
        if end is None:
            return c
        return c % (end + 1) if self.loop else min(c, end)

    def _lap_end(self, c: int) -> int | None:
        """Absolute counter of the last frame of ``c``'s lap (None: end unknown)."""
        end = self.source.end()
        if end is None:
            return None
        if not self.loop:
            return end
        n = end + 1
        return (c // n + 1) * n - 1

    def horizon(self, c: int) -> int:
        """The last counter to publish at position ``c``: lookahead, lap end, available frames."""
        h = c + self.lookahead
        lap_end = self._lap_end(c)
        if lap_end is not None:
            h = min(h, lap_end)
        return h

    def in_end_zone(self, c: int) -> bool:
        lap_end = self._lap_end(c)
        return lap_end is not None and c + self.lookahead >= lap_end

    def _frame(self, c: int) -> HOIFrame | None:
        return self.source.get(self.clip_frame(c), self.stamp_of(c))

    def advance(self, c: int) -> list[HOIFrame]:
        """Move to position ``c``; the frames to publish now (new ones and re-planned ones)."""
        self.position = c
        out: list[HOIFrame] = []
        for r in sorted(self.resend):
            if c <= r <= self.sent_upto:
                f = self._frame(r)
                if f is not None:
                    out.append(f)
        self.resend.clear()
        k = max(self.sent_upto + 1, c)  # frames behind the position are of no use any more
        h = self.horizon(c)
        while k <= h:
            f = self._frame(k)
            if f is None:  # a generator has not planned this far yet
                break
            out.append(f)
            self.sent_upto = k
            k += 1
        return out

    def window(self, stamp_ns: int | None = None) -> HOIWindow | None:
        """The current position and its lookahead; a repeated last frame marks the clip end."""
        if not self.started:
            return None
        c = self.position
        lap_end = self._lap_end(c)
        if lap_end is not None and c > lap_end:
            c = lap_end
        frames: list[HOIFrame] = []
        for k in range(c, self.horizon(c) + 1):
            f = self._frame(k)
            if f is None:
                break
            frames.append(f)
        if not frames:
            return None
        if lap_end is not None and c + len(frames) - 1 >= lap_end:
            frames.append(frames[-1])
        return hoi_window(frames, self.stamp_of(self.position) if stamp_ns is None else stamp_ns,
                          frames[0].header.frame_id)


# -- the node --------------------------------------------------------------------------------------
@dataclass
class StreamerCounters:
    frames_published: int = 0
    windows_published: int = 0
    clock_messages: int = 0
    generator_windows: int = 0
    rejected_generator_windows: int = 0
    resyncs: int = 0


class MotionStreamerNode(NodeLifetime):
    """The streamer on a ROS transport. Drive it with :meth:`run`, or :meth:`poll` step by step."""

    def __init__(self, config: MotionStreamerConfig, motion: HOIMotion | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from intermimic_policy.ros.transport import make_node

        self.config = config
        self.clock = clock
        self.counters = StreamerCounters()
        self.source: ClipSource | GeneratorSource
        if config.source == "clip":
            clip = motion if motion is not None else load_clip(config.clip, config.example)
            if config.start_offset >= clip.num_frames:
                raise node_params.ParamError(f"{SECTION}.start_offset {config.start_offset} is past the clip's "
                                             f"last frame {clip.num_frames - 1}")
            if config.rate_hz and abs(config.rate_hz - clip.fps) > 1e-6 * clip.fps:
                raise node_params.ParamError(
                    f"{SECTION}.rate_hz {config.rate_hz:g} differs from the clip's {clip.fps:g} fps: a clip streams "
                    "at its own frame rate (the policy checks it against its control rate); set rate_hz: 0")
            self.source = ClipSource(clip, config.frame_id)
        else:
            self.source = GeneratorSource(config.frame_id, config.max_stored_frames, config.max_window_frames)
            if config.rate_hz:
                self.source.fps = config.rate_hz
        self.stream = Stream(self.source, config.lookahead_frames, config.loop and config.source == "clip")
        self.node = make_node(config.node_name, backend=config.transport, domain_id=config.domain_id,
                              namespace=config.namespace)
        t = config.topics.prefixed(config.topic_prefix)
        qos = QosProfile(depth=config.reference_depth)
        try:
            robot = isinstance(self.source, ClipSource) and self.source.robot
            self.pub_frames = self.node.create_publisher(t.reference, RobotHOIFrame if robot else HOIFrame, qos)
            self.pub_windows = self.node.create_publisher(t.reference_window, RobotHOIWindow if robot else HOIWindow,
                                                          qos)
            self.pub_status = self.node.create_publisher(t.streamer_status, DiagnosticArray, "reliable")
            self.subscriptions = []
            if config.source == "generator":
                self.subscriptions.append(self.node.create_subscription(
                    t.generator_window, HOIWindow, self._on_generator_window, qos))
            if config.lockstep:
                self.subscriptions.append(self.node.create_subscription(t.clock, Clock, self._on_clock, "reliable"))
            self.node.create_timer(1.0 / config.status_hz, self.publish_status)
        except BaseException:
            self.node.destroy()
            raise
        self.last_clock_ns: int | None = None
        self._pending_start: int | None = None  # generator: the first window's start frame
        self._last_window = -math.inf
        self._wall_anchor: float | None = None
        self._last_tick_c: int | None = None

    # -- inputs -------------------------------------------------------------------------------
    def _start_frame(self) -> int | None:
        if self.config.source == "clip":
            return self.config.start_offset
        return self._pending_start

    def _now_ns(self) -> int:
        if self.config.lockstep:
            return self.last_clock_ns if self.last_clock_ns is not None else 0
        assert self._wall_anchor is not None
        return int(round((self.clock() - self._wall_anchor) * 1e9))

    def _on_clock(self, msg: Clock) -> None:
        t = ns_from_time(msg.clock)
        self.counters.clock_messages += 1
        previous, self.last_clock_ns = self.last_clock_ns, t
        start = self._start_frame()
        if start is None:
            return  # generator: nothing to stream yet
        if not self.stream.started or previous is None or t < previous:
            if self.stream.started:
                logger.info("the clock went back (%.3f s -> %.3f s): restarting the stream at frame %d",
                            (previous or 0) * 1e-9, t * 1e-9, start)
            self.stream.restart(t, start)
            self._tick(force_window=True)
        elif t == previous:
            if self.clock() - self._last_window >= self.config.resend_s:
                self._publish_window()  # the simulation waits: make sure the consumer has its lookahead
        else:
            self._tick()

    def _on_generator_window(self, msg: HOIWindow) -> None:
        src = self.source
        assert isinstance(src, GeneratorSource)
        try:
            start, changed = src.add(msg)
        except MessageRejected as exc:
            self.counters.rejected_generator_windows += 1
            logger.warning("rejected a generator window (%d so far): %s", self.counters.rejected_generator_windows, exc)
            return
        self.counters.generator_windows += 1
        s = self.stream
        if not s.started:
            self._pending_start = start  # real time: poll() starts the stream (once subscribed)
            if self.config.lockstep and self.last_clock_ns is not None:
                self._begin(start)
            return
        if abs(start - s.position) > RESYNC_FRAMES:
            self.counters.resyncs += 1
            logger.info("generator window starts at frame %d, stream is at %d: re-synchronising", start, s.position)
            self._pending_start = start
            s.restart(self._now_ns(), start)
        s.resend.update(changed)
        src.forget_before(s.position - 1)
        self._tick(force_window=bool(changed))

    def _begin(self, start: int) -> None:
        if self.config.lockstep:
            assert self.last_clock_ns is not None
            self.stream.restart(self.last_clock_ns, start)
        else:
            self._wall_anchor = self.clock()
            self.stream.restart(0, start)
        self._tick(force_window=True)

    # -- outputs ------------------------------------------------------------------------------
    def _publish_window(self) -> None:
        w = self.stream.window()
        if w is None:
            return
        self.pub_windows.publish(w)
        self.counters.windows_published += 1
        self._last_window = self.clock()

    def _tick(self, force_window: bool = False) -> None:
        """Publish what the stream position (from the clock or the wall) makes due."""
        s = self.stream
        if not s.started:
            return
        c = s.position_at(self._now_ns())
        frames = s.advance(c)
        for f in frames:
            self.pub_frames.publish(f)
        self.counters.frames_published += len(frames)
        new_tick = c != self._last_tick_c
        self._last_tick_c = c
        periodic = self.config.window_hz > 0 and self.clock() - self._last_window >= 1.0 / self.config.window_hz
        if force_window or periodic or (new_tick and s.in_end_zone(c)):
            self._publish_window()

    def poll(self, timeout_s: float = 0.05) -> None:
        """Serve messages for up to ``timeout_s``; in real time, advance the stream when due."""
        c = self.config
        if not c.lockstep:
            if not self.stream.started:
                start = self._start_frame()
                if start is not None and (not c.wait_for_subscribers or self.pub_frames.subscription_count() > 0):
                    self._begin(start)
            else:
                self._tick()
                period = 1.0 / self.stream.fps()
                assert self._wall_anchor is not None
                elapsed = self.clock() - self._wall_anchor
                timeout_s = min(timeout_s, max(0.0, period - (elapsed % period)))
        self.node.spin_once(timeout_s)

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        while not stop() and not self.node.destroyed:
            self.poll(0.05)

    # -- status -------------------------------------------------------------------------------
    def status_values(self) -> dict[str, str]:
        s = self.stream
        end = self.source.end()
        if not s.started:
            mode = "waiting_for_clock" if self.config.lockstep else "waiting_for_subscribers"
            if self.config.source == "generator" and self._pending_start is None:
                mode = "waiting_for_generator"
        elif end is not None and not self.stream.loop and s.position >= end:
            mode = "ended"
        else:
            mode = "streaming"
        values = {
            "mode": mode, "source": self.config.source, "lockstep": str(self.config.lockstep).lower(),
            "position": str(s.position), "frame": str(s.clip_frame(s.position)) if s.started else "",
            "end_frame": "" if end is None else str(end), "restarts": str(s.restarts),
            "fps": f"{s.fps():g}",
        }
        values.update({k: str(v) for k, v in vars(self.counters).items()})
        if isinstance(self.source, GeneratorSource):
            values["stored_frames"] = str(len(self.source.store))
            values["dropped_frames"] = str(self.source.dropped_frames)
        for sub in self.subscriptions:
            values[f"malformed.{sub.topic}"] = str(sub.malformed)
        return values

    def publish_status(self) -> None:
        values = self.status_values()
        self.pub_status.publish(status_array(name=STATUS_NAME, hardware_id=self.config.node_name,
                                             level=DiagnosticStatus.OK, message=values["mode"], values=values,
                                             stamp=self.node.stamp()))



# -- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intermimic_motion_streamer",
                                description="Stream an HOI reference clip (or relay a generator) over ROS 2.")
    add_common_arguments(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--clip", default=None, help="clip file (any format load_motion reads)")
    src.add_argument("--example", action="store_true", default=None, help="stream the bundled example clip")
    src.add_argument("--source", choices=SOURCES, default=None, help="'generator': relay generator windows")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--start-offset", type=int, default=None, help="first clip frame to stream")
    p.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=None,
                   help="follow /clock (the simulation's time) instead of the wall clock")
    p.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds")
    return p


def _run(args: argparse.Namespace, params_file: str | None, stop: StopFlag) -> None:
    overrides: dict[str, Any] = {"lockstep": args.lockstep, "loop": args.loop, "start_offset": args.start_offset,
                                 "domain_id": args.domain_id, "transport": args.transport}
    if args.clip:  # "" (an empty launch argument): the config's clip
        overrides.update(source="clip", clip=args.clip, example=False)
    elif args.example:
        overrides.update(source="clip", clip="", example=True)
    elif args.source is not None:
        overrides.update(source=args.source)
    config = load_streamer_config(args.config or params_file, **overrides)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with MotionStreamerNode(config) as streamer:
        logger.info("streaming %s at %g fps, lookahead %d frames, lockstep=%s, transport %s",
                    getattr(streamer.source, "name", config.source), streamer.stream.fps(),
                    config.lookahead_frames, config.lockstep, streamer.node.backend)
        streamer.run(stop=lambda: stop() or (deadline is not None and time.monotonic() > deadline))
        streamer.publish_status()
        streamer.pub_status.wait_for_all_acked(0.3)  # bounded: a signal must end the node within 1 s


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("motion_streamer", build_parser(), _run, argv)


if __name__ == "__main__":
    exit_process(main())
