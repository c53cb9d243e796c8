"""Deterministic messages that a helper process sends and the test process expects.

Float arrays are built in float32 so that what arrives compares equal to what is expected.
"""

from __future__ import annotations

import numpy as np

from intermimic_policy.ros.msgs.geometry_msgs import Point, Pose, PoseStamped, Quaternion
from intermimic_policy.ros.msgs.intermimic_msgs import HOIFrame
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header


def _f32(values: np.ndarray) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


def hoi_frame(i: int) -> HOIFrame:
    """Frame ``i`` of a made-up clip (header stamp left for the sender to fill)."""
    k = np.arange(208, dtype=np.float32)
    labels = [((b + i) % 3) - 1 for b in range(52)]
    return HOIFrame(
        header=Header(frame_id="world"),
        frame_index=i,
        fps=30.0,
        root_pose=Pose(position=Point(x=0.1 * i, y=-0.2, z=0.9),
                       orientation=Quaternion(x=0.0, y=0.0, z=0.6, w=0.8)),
        joint_rotvec=_f32(np.sin(k[:153] * 0.01 + i)),
        body_positions=_f32(k[:156] * 0.001 - i),
        body_rotations=_f32(np.cos(k * 0.02 + i)),
        object_pose=Pose(position=Point(x=1.0, y=float(i), z=0.5)),
        object_name=f"largebox_{i % 4}",
        body_contact_labels=labels,
        object_contact=bool(i % 2),
    )


def joint_state(i: int) -> JointState:
    names = [f"joint_{j}" for j in range(5)]
    return JointState(header=Header(frame_id="base"), name=names,
                      position=[0.5 * i + j for j in range(5)],
                      velocity=[-0.25 * j for j in range(5)], effort=[])


def pose_stamped(i: int) -> PoseStamped:
    return PoseStamped(header=Header(frame_id="world"),
                       pose=Pose(position=Point(x=float(i), y=2.0, z=3.0)))
