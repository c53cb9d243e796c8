"""Fuzzing the ROS message decoders and the nodes' input parsers.

Random, truncated and mutated CDR bytes must decode to a message or raise :class:`MessageError`
(never another exception, a crash or a hang); a message that decodes must be accepted by the
node's parser or refused with :class:`MessageRejected`. Both tables below are the only places
that name the functions under test (re-point them when the nodes are refactored).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intermimic_policy.embodiment.smplx_body import DOF_NAMES, NUM_BODIES, NUM_DOFS
from intermimic_policy.ros import messages_convert as conv
from intermimic_policy.ros import node_state, reference_buffer
from intermimic_policy.ros.msgs import MESSAGE_TYPES, MessageError, decode
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow, PDTargets
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_state import MessageRejected
from tests.fuzzing import Tally, fuzz_settings
from tests.test_motion_io import synthetic_motion


def _hoi_frames(n: int) -> list[HOIFrame]:
    frames = conv.MotionFrames(synthetic_motion(frames=n))
    return [frames.frame(i, stamp_ns=1_000_000_000 + i) for i in range(n)]


def _pd_targets() -> PDTargets:
    zeros = [0.0] * NUM_DOFS
    return PDTargets(header=Header(), joint_names=list(DOF_NAMES), position=zeros, velocity=zeros,
                     kp=[100.0] * NUM_DOFS, kd=[10.0] * NUM_DOFS, effort=[])


# message -> (a valid message, the node's parser of it)
PARSERS: dict[str, tuple[Callable[[], Any], Callable[[Any], object]]] = {
    "JointState": (lambda: conv.joint_state_message(np.zeros(NUM_DOFS), np.zeros(NUM_DOFS), 1),
                   lambda m: node_state.parse_joint_state(m, node_state.joint_order())),
    "Odometry": (lambda: conv.odometry_message(np.zeros(3), np.array([0, 0, 0, 1.0]), np.ones(3), np.ones(3), 1),
                 node_state.parse_odometry),
    "PoseStamped": (lambda: conv.pose_stamped_message(np.zeros(3), np.array([0, 0, 0, 1.0]), 1),
                    node_state.parse_pose_stamped),
    "ContactState": (lambda: conv.contact_state_message(np.zeros(NUM_BODIES), np.ones(NUM_BODIES),
                                                        np.zeros((NUM_BODIES, 3)), 1),
                     lambda m: node_state.parse_contacts(m, node_state.body_order())),
    "PDTargets": (_pd_targets, lambda m: conv.parse_pd_targets(m, conv.pd_targets_order())),
    "HOIFrame": (lambda: _hoi_frames(1)[0], reference_buffer.parse_hoi_frame),
    "HOIWindow": (lambda: conv.hoi_window(_hoi_frames(3)), reference_buffer.parse_hoi_window),
}
CASES_PER_TYPE = 40  # raw bytes, per message type
CASES_PER_PARSER = 120  # mutated valid messages, per parser


def _decode_or_refuse(cls: type, data: bytes, tally: Tally) -> Any:
    try:
        msg = decode(cls, data)
    except MessageError as exc:
        assert "\n" not in str(exc) and cls.__ros_type__ in str(exc)
        tally.add("undecodable")
        return None
    assert isinstance(msg, cls)
    return msg


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Valid bytes with a few edits: a byte, a 4-byte aligned count (CDR lengths), a cut, garbage."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["byte", "u32", "cut", "append"]))
        if op == "byte" and b:
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif op == "u32" and len(b) >= 8:
            at = 4 * draw(st.integers(1, len(b) // 4 - 1))
            value = draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 153])))
            b[at:at + 4] = struct.pack("<I", value)
        elif op == "cut":
            del b[draw(st.integers(0, len(b))):]
        else:
            b += draw(st.binary(max_size=16))
    return bytes(b)


def test_random_bytes_decode_or_raise_message_error() -> None:
    tally = Tally("ros.decode(random bytes, every type)")
    types = sorted(MESSAGE_TYPES.items())

    @fuzz_settings(CASES_PER_TYPE * len(types))
    @given(index=st.integers(0, len(types) - 1), data=st.one_of(
        st.binary(max_size=64), st.binary(min_size=4, max_size=4).map(lambda h: b"\x00\x01\x00\x00" + h * 8)))
    def check(index: int, data: bytes) -> None:
        msg = _decode_or_refuse(types[index][1], data, tally)
        if msg is not None:
            tally.add("decoded")

    check()
    tally.report()


def test_truncations_of_every_valid_message_are_refused() -> None:
    """Every proper prefix of a serialized default message either decodes or is refused."""
    tally = Tally("ros.decode(every prefix of every default message)")
    for cls in MESSAGE_TYPES.values():
        data = cls().serialize()
        for cut in range(len(data)):
            _decode_or_refuse(cls, data[:cut], tally) is None or tally.add("decoded")
    tally.report()


@pytest.mark.parametrize("name", list(PARSERS))
def test_mutated_messages_are_parsed_or_rejected(name: str) -> None:
    build, parse = PARSERS[name]
    valid = build()
    cls = type(valid)
    parse(valid)  # the unmutated message is accepted
    data = valid.serialize()
    tally = Tally(f"ros.{name} decode+parse")

    @fuzz_settings(CASES_PER_PARSER)
    @given(blob=mutated(data))
    def check(blob: bytes) -> None:
        msg = _decode_or_refuse(cls, blob, tally)
        if msg is None:
            return
        try:
            parse(msg)
        except MessageRejected as exc:
            assert "\n" not in str(exc)
            tally.add("rejected")
            return
        tally.add("accepted")

    check()
    tally.report()


def test_window_of_many_frames_is_bounded_in_time() -> None:
    """A decoded HOIWindow is parsed frame by frame; the time per frame must stay small."""
    import time

    frames = _hoi_frames(2) * 50
    msg = decode(HOIWindow, HOIWindow(frames=frames, start_frame=0).serialize())
    start = time.perf_counter()
    with pytest.raises(MessageRejected):  # repeated indices after the clip end are refused
        reference_buffer.parse_hoi_window(msg)
    assert time.perf_counter() - start < 5.0
