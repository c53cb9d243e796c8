"""The generator runner without a network: schedule, dropped windows, jitter, stall, keep-alive,
clip end; and ``intermimic stream`` errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from intermimic_policy.cli import main as cli_main
from intermimic_policy.motion.io import load_motion
from intermimic_policy.ros.reference_timeline import window_from_message
from intermimic_policy.stream.reference import ClipWindowGenerator, ReferenceGeneratorConfig
from intermimic_policy.stream.runner import RunOptions, load_generator, run


class FakePublisher:
    """Stream time runs 10x faster than the wall clock; messages are kept."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.sent: list[tuple[float, Any]] = []
        self.has_clock = True

        class _Node:
            def now_ns(self) -> int:
                return 1

        self.node = _Node()

    def now_s(self) -> float:
        return 10.0 * (time.monotonic() - self.start)

    def spin_once(self, timeout_s: float = 0.0) -> int:
        time.sleep(timeout_s)
        return 0

    def publish_message(self, msg: Any) -> None:
        self.sent.append((time.monotonic() - self.start, msg))


@pytest.fixture(scope="module")
def clip(motions_root: Path):  # type: ignore[no-untyped-def]
    return load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt").slice(0, 60)


def test_runner_drops_jitters_and_ends(clip) -> None:  # type: ignore[no-untyped-def]
    gen = ClipWindowGenerator(clip, ReferenceGeneratorConfig(window_s=0.5, fps=20.0))
    pub = FakePublisher()
    opts = RunOptions(period_s=0.3, jitter_s=0.01, drop=(2,), keepalive_s=0.0, linger_s=0.05, seed=1)
    stats = run(gen, pub, opts)  # type: ignore[arg-type]
    assert stats["dropped"] == 1 and stats["published"] == stats["generated"] - 1
    windows = [window_from_message(m) for _, m in pub.sent]
    starts = [w.samples[0].frame_index for w in windows]
    assert starts == sorted(starts) and all(w.fps == 20.0 for w in windows)
    assert windows[-1].end and not any(w.end for w in windows[:-1])
    assert windows[-1].samples[-1].frame_index == int(clip.duration_s * 20)  # the clip's last instant
    assert 6 not in starts  # window 2 (stream time 0.3 s = frame 6) was dropped


def test_runner_keepalive_and_stall(clip) -> None:  # type: ignore[no-untyped-def]
    gen = ClipWindowGenerator(clip, ReferenceGeneratorConfig(window_s=1.0))
    pub = FakePublisher()
    opts = RunOptions(period_s=5.0, keepalive_s=0.05, stall_after=1, duration_s=0.4)
    stats = run(gen, pub, opts)  # type: ignore[arg-type]
    assert stats["generated"] >= 1 and stats["resent"] == 0  # stalled after the first: silent
    pub2 = FakePublisher()
    stats2 = run(ClipWindowGenerator(clip, ReferenceGeneratorConfig(window_s=1.0)), pub2,  # type: ignore[arg-type]
                 RunOptions(period_s=5.0, keepalive_s=0.05, duration_s=0.4))
    assert stats2["resent"] >= 4  # the window is re-sent while nothing new is due
    assert len({id(m) for _, m in pub2.sent}) == stats2["generated"]


def test_stream_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for spec, expected in (("nocolon", "MODULE:FUNCTION"), ("no_such_module_xyz:f", "cannot be imported"),
                           ("intermimic_policy.stream.reference:nothing", "no function")):
        assert cli_main(["stream", "--generator", spec]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert callable(load_generator("intermimic_policy.stream.reference:example"))
