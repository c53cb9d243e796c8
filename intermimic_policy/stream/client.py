"""Publish a motion generator's windows to the policy node in a few lines.

    from intermimic_policy.stream import WindowPublisher

    with WindowPublisher() as pub:            # Cyclone DDS or rclpy, whichever is there
        pub.publish(chunk, start_frame=k)     # chunk: an HOIMotion at the generator's own rate

A window is the generator's frames from ``start_frame`` on (frame ``start_frame + i`` of the
stream is at time ``(start_frame + i) / chunk.fps``); ``end=True`` marks the clip's last frame
(sent as a repeat of it, as ``HOIWindow`` documents). The policy node (``policy_node.timeline``
enabled) resamples, cross-fades and bridges them (``ros.reference_timeline``).

``now_s()`` is the stream time: the simulation's ``/clock`` since its first message when one is
published (lockstep runs), else the wall clock since the publisher started.
"""

from __future__ import annotations

import time
from types import TracebackType

from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.ros.messages_convert import MotionFrames, hoi_window
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame, HOIWindow
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.qos import CLOCK_QOS, QosProfile

WINDOW_TOPIC = "/intermimic/reference_window"
CLOCK_TOPIC = "/clock"


def window_message(chunk: HOIMotion, start_frame: int, end: bool = False, stamp_ns: int = 0) -> HOIWindow:
    """``chunk``'s frames as clip frames ``start_frame, start_frame + 1, ...`` at ``chunk.fps``."""
    frames = MotionFrames(chunk)
    msgs: list[HOIFrame] = []
    for k in range(chunk.num_frames):
        f = frames.frame(k, stamp_ns)
        f.frame_index = int(start_frame) + k
        msgs.append(f)
    if end:
        msgs.append(msgs[-1])
    return hoi_window(msgs, stamp_ns)


class WindowPublisher:
    """A node that publishes ``HOIWindow`` messages (and reads ``/clock`` for stream time)."""

    def __init__(self, *, topic: str = WINDOW_TOPIC, node_name: str = "hoi_generator", transport: str = "auto",
                 domain_id: int | None = None, depth: int = 100, clock_topic: str | None = CLOCK_TOPIC) -> None:
        from intermimic_policy.ros.transport import make_node

        self.node = make_node(node_name, backend=transport, domain_id=domain_id)
        self.published = 0
        self._clock0_ns: int | None = None
        self._clock_ns: int | None = None
        self._wall0 = time.monotonic()
        try:
            self.pub = self.node.create_publisher(topic, HOIWindow, QosProfile(depth=depth))
            if clock_topic:
                self.node.create_subscription(clock_topic, Clock, self._on_clock, CLOCK_QOS)
        except BaseException:
            self.node.destroy()
            raise

    def _on_clock(self, msg: Clock) -> None:
        ns = ns_from_time(msg.clock)
        if self._clock0_ns is None or (self._clock_ns is not None and ns < self._clock_ns):
            self._clock0_ns = ns  # first clock, or the simulation restarted
        self._clock_ns = ns

    @property
    def has_clock(self) -> bool:
        return self._clock_ns is not None

    def now_s(self) -> float:
        if self._clock_ns is not None and self._clock0_ns is not None:
            return (self._clock_ns - self._clock0_ns) * 1e-9
        return time.monotonic() - self._wall0

    def subscribers(self) -> int:
        return int(self.pub.subscription_count())

    def publish(self, chunk: HOIMotion, start_frame: int, end: bool = False) -> HOIWindow:
        msg = window_message(chunk, start_frame, end, stamp_ns=self.node.now_ns())
        self.pub.publish(msg)
        self.published += 1
        return msg

    def publish_message(self, msg: HOIWindow) -> None:
        self.pub.publish(msg)
        self.published += 1

    def spin_once(self, timeout_s: float = 0.0) -> int:
        return self.node.spin_once(timeout_s)

    def close(self) -> None:
        self.node.destroy()

    def __enter__(self) -> WindowPublisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
