"""Fuzzing the clip loaders: mutated ``.pt`` and ``.npz`` bytes either load as a valid clip or
fail with a :class:`MotionError` (one line naming the file), never another exception, a crash,
a hang or a large allocation.

Targets (re-point here if the loaders move): a valid file is built once per format, then bytes
are overwritten, inserted, or the file is cut.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.intermimic_pt import save_intermimic_pt
from intermimic_policy.motion.io import load_motion
from intermimic_policy.motion.npz_format import save_npz
from tests.fuzzing import Tally, fuzz_settings
from tests.test_motion_io import synthetic_motion

# name -> (file name, writer of a valid file, cases)
TARGETS: dict[str, tuple[str, Callable[[HOIMotion, Path], object], int]] = {
    "pt": ("sub2_largetable_000.pt", lambda m, p: save_intermimic_pt(m, p), 150),
    "npz": ("clip.npz", lambda m, p: save_npz(m, p), 150),
    "npz_compressed": ("clip.npz", lambda m, p: save_npz(m, p, compress=True), 100),
}


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """A few edits: overwrite a byte, insert a byte, or cut the file at an offset."""
    edit = st.tuples(st.sampled_from(["set", "insert", "cut"]), st.integers(0, size - 1), st.integers(0, 255))
    return draw(st.lists(edit, min_size=1, max_size=6))


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for op, at, value in edits:
        at = min(at, max(len(b) - 1, 0))
        if op == "set" and b:
            b[at] = value
        elif op == "insert":
            b[at:at] = bytes([value])
        elif op == "cut":
            del b[at:]
    return bytes(b)


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_clip_files_load_or_fail_cleanly(target: str) -> None:
    name, write, cases = TARGETS[target]
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / name
        write(synthetic_motion(frames=4), good)
        original = good.read_bytes()
        path = Path(tmp) / "fuzz" / name
        path.parent.mkdir()
        tally = Tally(f"loader.{target}")
        # half the edits land in the first and last 600 bytes: zip local and central headers
        near_headers = st.one_of(mutations(600), mutations(len(original)),
                                 mutations(600).map(lambda e: [(op, len(original) - 1 - at, v) for op, at, v in e]))

        @fuzz_settings(cases)
        @given(edits=near_headers)
        def check(edits: list[tuple[str, int, int]]) -> None:
            path.write_bytes(apply(original, edits))
            try:
                motion = load_motion(path)
            except MotionError as exc:
                message = str(exc)
                assert message.startswith(str(path)) and "\n" not in message, message
                tally.add("refused")
                return
            assert isinstance(motion, HOIMotion) and motion.num_frames >= 2
            tally.add("loaded")

        check()
        tally.report()
