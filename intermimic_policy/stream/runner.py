"""Run a user's generator function as a window-publishing process (``intermimic stream``).

The function is ``generate(time_s) -> GeneratedWindow | None``: given the stream time (the
simulation's ``/clock`` in lockstep runs, else the wall clock), it returns the frames it plans
from there (any rate, an ``HOIMotion``) and the stream frame index of its first frame, or None
when it has nothing new. It is called every ``period_s`` of stream time.

Keep-alive: when no window went out for ``keepalive_s`` of wall time, the last one is sent again.
The consumer judges its reference stale on the wall clock, and in a lockstep run stream time
follows the simulation, which can be slower than real time; the motion streamer re-sends its
window the same way. After a window marked ``end`` the keep-alive goes on for ``linger_s``,
then the run ends.

Delivery can be made imperfect on purpose (tests, docs): ``jitter_s`` delays each window by a
random wall-clock time, ``drop`` skips the windows with those numbers (1-based), and
``stall_after`` stops publishing after that many windows while the process stays alive.
"""

from __future__ import annotations

import heapq
import importlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.ros.msgs.intermimic_msgs import HOIWindow
from intermimic_policy.stream.client import WindowPublisher, window_message

logger = logging.getLogger("intermimic.stream")


class StreamError(IntermimicError, ValueError):
    """A generator that cannot be loaded or returned something unusable."""


@dataclass(frozen=True)
class GeneratedWindow:
    motion: HOIMotion  # the planned frames, at the generator's own rate
    start_frame: int  # stream frame index of motion's first frame (time = index / motion.fps)
    end: bool = False  # the last frame is the clip's last


Generator = Callable[[float], "GeneratedWindow | None"]


@dataclass
class RunOptions:
    period_s: float = 0.2  # stream seconds between calls
    lockstep: bool = False  # wait for /clock (the simulation's time) before the first call
    jitter_s: float = 0.0
    drop: tuple[int, ...] = ()
    stall_after: int = 0  # 0: never
    duration_s: float = 0.0  # wall seconds, 0: until the clip ends (then linger_s) or forever
    keepalive_s: float = 0.25  # re-send the last window after this much silence (0: never)
    linger_s: float = 5.0  # after the clip end: keep re-sending the last window this long
    seed: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"generated": 0, "published": 0, "dropped": 0,
                                                           "resent": 0})


def load_generator(spec: str) -> Generator:
    """``MODULE:FUNCTION`` -> the function."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise StreamError(f"--generator must be MODULE:FUNCTION, got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise StreamError(f"generator module {module!r} cannot be imported: {exc}") from exc
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise StreamError(f"{module} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


def run(generate: Generator, publisher: WindowPublisher, options: RunOptions,
        stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Call ``generate`` on schedule and publish what it returns (see the module docstring)."""
    rng = random.Random(options.seed)
    pending: list[tuple[float, int, HOIWindow]] = []  # (release wall time, number, message)
    next_call = 0.0
    number = 0
    ended_at: float | None = None
    last_msg: HOIWindow | None = None
    last_resend = 0.0
    started = time.monotonic()
    st = options.stats
    while not stop():
        publisher.spin_once(0.002)
        wall = time.monotonic()
        if options.duration_s > 0 and wall - started > options.duration_s:
            break
        if ended_at is not None and not pending and wall - ended_at > options.linger_s:
            break
        stalled = bool(options.stall_after) and number >= options.stall_after
        if options.keepalive_s > 0 and last_msg is not None and not pending and not stalled \
                and wall - last_resend >= options.keepalive_s:
            heapq.heappush(pending, (wall, number, last_msg))
            st["resent"] += 1
        ready = not options.lockstep or publisher.has_clock
        now = publisher.now_s()
        if ready and ended_at is None and now + 1e-9 >= next_call:
            next_call = now + options.period_s
            out = generate(now)
            if out is not None:
                number += 1
                st["generated"] += 1
                msg = window_message(out.motion, out.start_frame, out.end, stamp_ns=publisher.node.now_ns())
                if number in options.drop or (options.stall_after and number > options.stall_after):
                    st["dropped"] += 1
                else:
                    delay = rng.uniform(0.0, options.jitter_s) if options.jitter_s > 0 else 0.0
                    heapq.heappush(pending, (wall + delay, number, msg))
                    last_msg = msg
                if out.end:
                    ended_at = wall
        while pending and pending[0][0] <= time.monotonic():
            _, _, msg = heapq.heappop(pending)
            publisher.publish_message(msg)
            st["published"] += 1
            last_resend = time.monotonic()
    return st


def parse_drop(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise StreamError(f"--drop takes window numbers like 3,7, got {text!r}") from exc


def add_run_arguments(p: object) -> None:
    """The runner's options on an argparse parser (shared by ``intermimic stream`` and the
    reference generator's own entry point)."""
    import argparse

    assert isinstance(p, argparse.ArgumentParser)
    p.add_argument("--period", type=float, default=0.2, help="stream seconds between windows (default 0.2)")
    p.add_argument("--lockstep", action="store_true", help="follow the simulation's /clock")
    p.add_argument("--jitter", type=float, default=0.0, help="delay each window by up to this many wall seconds")
    p.add_argument("--drop", default="", help="window numbers not to send (1-based), e.g. 3,7")
    p.add_argument("--stall-after", type=int, default=0, help="stop sending after this many windows (0: never)")
    p.add_argument("--duration", type=float, default=0.0, help="wall seconds to run (0: until the clip ends)")
    p.add_argument("--keepalive", type=float, default=0.25,
                   help="re-send the last window after this many wall seconds of silence (0: never)")
    p.add_argument("--linger", type=float, default=5.0, help="after the clip end, re-send the last window this long (s)")
    p.add_argument("--topic", default="/intermimic/reference_window")
    p.add_argument("--domain-id", type=int, default=None)
    p.add_argument("--transport", choices=("auto", "cyclone", "rclpy"), default="auto")
    p.add_argument("--seed", type=int, default=0)


def options_from_args(args: object) -> RunOptions:
    a = args
    return RunOptions(period_s=a.period, lockstep=a.lockstep, jitter_s=a.jitter,  # type: ignore[attr-defined]
                      drop=parse_drop(a.drop), stall_after=a.stall_after,  # type: ignore[attr-defined]
                      duration_s=a.duration, keepalive_s=a.keepalive, linger_s=a.linger, seed=a.seed)  # type: ignore[attr-defined]


def run_from_args(generate: Generator, args: object, stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    options = options_from_args(args)
    if options.period_s <= 0:
        raise StreamError(f"--period must be positive, got {options.period_s}")
    with WindowPublisher(topic=args.topic, transport=args.transport,  # type: ignore[attr-defined]
                         domain_id=args.domain_id) as pub:  # type: ignore[attr-defined]
        stats = run(generate, pub, options, stop)
    logger.info("generator done: %s", stats)
    return stats


def install_stop_on_signals() -> Callable[[], bool]:
    import signal

    flag = {"stop": False}

    def on_signal(signum: int, _frame: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: flag["stop"]


__all__: Sequence[str] = ["GeneratedWindow", "RunOptions", "StreamError", "load_generator", "run"]
