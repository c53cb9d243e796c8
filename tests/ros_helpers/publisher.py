"""A ROS node in its own process, for the two-process transport tests.

stream:  wait for subscribers on <prefix>/hoi_frame and <prefix>/joint_states, then publish
         --count HOIFrames and JointStates (``samples.py``), stamped with the node clock,
         every --period seconds; exit 0 (exit 3 if no subscriber shows up in --wait seconds).
latched: publish three PoseStamped on the latched topic <prefix>/object_pose and one on the
         volatile topic <prefix>/volatile_pose, print READY, then keep serving until killed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped  # noqa: E402
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame  # noqa: E402
from intermimic_policy.ros.msgs.sensor_msgs import JointState  # noqa: E402
from intermimic_policy.ros.qos import QosProfile  # noqa: E402
from intermimic_policy.ros.transport import make_node  # noqa: E402
from ros_helpers import samples  # noqa: E402


def stream(args: argparse.Namespace) -> int:
    with make_node("helper_stream", backend="cyclone", domain_id=args.domain) as node:
        qos = QosProfile(depth=100)
        frames = node.create_publisher(f"{args.prefix}/hoi_frame", HOIFrame, qos)
        joints = node.create_publisher(f"{args.prefix}/joint_states", JointState, qos)
        if not node.spin(until=lambda: frames.subscription_count() > 0
                         and joints.subscription_count() > 0, timeout_s=args.wait):
            print("no subscriber", flush=True)
            return 3
        for i in range(args.count):
            frame = samples.hoi_frame(i)
            frame.header.stamp = node.stamp()
            frames.publish(frame)
            state = samples.joint_state(i)
            state.header.stamp = node.stamp()
            joints.publish(state)
            node.spin_once(args.period)
        # reliable delivery: do not exit (and drop the writers) before the reader has it all
        ok = frames.wait_for_all_acked(5.0) and joints.wait_for_all_acked(5.0)
        print("acked" if ok else "not acked", flush=True)
    return 0


def latched(args: argparse.Namespace) -> int:
    with make_node("helper_latched", backend="cyclone", domain_id=args.domain) as node:
        latched_pub = node.create_publisher(f"{args.prefix}/object_pose", PoseStamped, "latched")
        volatile_pub = node.create_publisher(f"{args.prefix}/volatile_pose", PoseStamped, "reliable")
        for i in range(3):
            msg = samples.pose_stamped(i)
            msg.header.stamp = node.stamp()
            latched_pub.publish(msg)
        volatile_pub.publish(samples.pose_stamped(99))
        print("READY", flush=True)
        node.spin(timeout_s=args.wait)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["stream", "latched"])
    parser.add_argument("--domain", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--period", type=float, default=0.01)
    parser.add_argument("--wait", type=float, default=15.0)
    args = parser.parse_args()
    return stream(args) if args.mode == "stream" else latched(args)


if __name__ == "__main__":
    sys.exit(main())
