"""Robot motion .npz: exact round trip, refuses other files and bad shapes with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.robot_motion import (
    RobotMotion,
    is_robot_motion_file,
    load_robot_motion,
    save_robot_motion,
)


def _motion(t: int = 7) -> RobotMotion:
    rng = np.random.default_rng(0)
    rot = rng.normal(size=(t, 4))
    return RobotMotion(
        fps=30.0, robot="tiny", joint_names=("a", "b", "c"), root_pos=rng.normal(size=(t, 3)),
        root_rot=rot / np.linalg.norm(rot, axis=1, keepdims=True), joint_pos=rng.normal(size=(t, 3)),
        object_pos=rng.normal(size=(t, 3)).astype(np.float32), object_rot=np.tile([0, 0, 0, 1], (t, 1)).astype(np.float32),
        object_name="largetable", hand_names=("left_hand", "right_hand"),
        hand_contact=rng.integers(-1, 2, size=(t, 2)).astype(np.int8), foot_names=("left_foot",),
        foot_contact=rng.integers(0, 2, size=(t, 1)).astype(bool), name="clip", source="x.pt", meta={"scale": "0.8"},
    )


def test_round_trip(tmp_path) -> None:
    m = _motion()
    p = save_robot_motion(m, tmp_path / "m.npz")
    assert is_robot_motion_file(p)
    back = load_robot_motion(p)
    assert back.identical(m)
    assert back.qpos().shape == (7, 10)


def test_refuses_other_files_and_versions(tmp_path) -> None:
    np.savez(tmp_path / "other.npz", format=np.array("intermimic.hoi_motion"), format_version=np.array(1))
    assert not is_robot_motion_file(tmp_path / "other.npz")
    with pytest.raises(MotionError, match="not a robot motion"):
        load_robot_motion(tmp_path / "other.npz")
    p = save_robot_motion(_motion(), tmp_path / "m.npz")
    with np.load(p) as z:
        data = {k: z[k] for k in z.files}
    data["format_version"] = np.array(99)
    np.savez(tmp_path / "v99.npz", **data)
    with pytest.raises(MotionError, match="version 99"):
        load_robot_motion(tmp_path / "v99.npz")
    with pytest.raises(MotionError, match="no such file"):
        load_robot_motion(tmp_path / "missing.npz")


def test_bad_shapes_are_named() -> None:
    m = _motion()
    with pytest.raises(MotionError, match="joint_pos"):
        RobotMotion(**{**m.__dict__, "joint_pos": np.zeros((7, 2))})
    with pytest.raises(MotionError, match="NaN"):
        RobotMotion(**{**m.__dict__, "root_pos": np.full((7, 3), np.nan)})
