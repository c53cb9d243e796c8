"""Another robot needs only another YAML: a small URDF written here retargets a real clip."""

from __future__ import annotations

import numpy as np
import pytest

from intermimic_policy.embodiment.robot import load_robot
from intermimic_policy.motion.io import load_motion
from intermimic_policy.retarget.geometry import object_geometry
from intermimic_policy.retarget.metrics import evaluate
from intermimic_policy.retarget.retarget import retarget_clip
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.robot_scene import build_robot_scene


def _link(name: str, geom: str, xyz: str = "0 0 0") -> str:
    return (f'<link name="{name}"><inertial><origin xyz="{xyz}"/><mass value="1.0"/>'
            f'<inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>'
            f'<visual><origin xyz="{xyz}"/><geometry>{geom}</geometry></visual>'
            f'<collision><origin xyz="{xyz}"/><geometry>{geom}</geometry></collision></link>')


def _joint(name: str, parent: str, child: str, xyz: str, axis: str, lo: float = -2.5, hi: float = 2.5) -> str:
    return (f'<joint name="{name}" type="revolute"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="{xyz}"/><axis xyz="{axis}"/><limit lower="{lo}" upper="{hi}" effort="50" velocity="20"/></joint>')


def tiny_urdf() -> str:
    parts = [_link("pelvis", '<box size="0.15 0.22 0.1"/>'), _link("torso", '<box size="0.15 0.25 0.3"/>', "0 0 0.18"),
             _joint("waist_yaw", "pelvis", "torso", "0 0 0.05", "0 0 1")]
    for side, y in (("left", 0.09), ("right", -0.09)):
        parts += [
            _link(f"{side}_hip0", '<sphere radius="0.03"/>'),
            _link(f"{side}_hip1", '<sphere radius="0.03"/>'),
            _link(f"{side}_thigh", '<cylinder radius="0.04" length="0.3"/>', "0 0 -0.17"),
            _link(f"{side}_shin", '<cylinder radius="0.035" length="0.3"/>', "0 0 -0.17"),
            _link(f"{side}_ankle0", '<sphere radius="0.02"/>'),
            _link(f"{side}_foot", '<box size="0.18 0.08 0.04"/>', "0.04 0 -0.04"),
            _joint(f"{side}_hip_pitch", "pelvis", f"{side}_hip0", f"0 {y} -0.05", "0 1 0"),
            _joint(f"{side}_hip_roll", f"{side}_hip0", f"{side}_hip1", "0 0 0", "1 0 0", -1.0, 1.0),
            _joint(f"{side}_hip_yaw", f"{side}_hip1", f"{side}_thigh", "0 0 0", "0 0 1", -1.0, 1.0),
            _joint(f"{side}_knee", f"{side}_thigh", f"{side}_shin", "0 0 -0.34", "0 1 0", 0.0, 2.5),
            _joint(f"{side}_ankle_pitch", f"{side}_shin", f"{side}_ankle0", "0 0 -0.34", "0 1 0", -1.0, 1.0),
            _joint(f"{side}_ankle_roll", f"{side}_ankle0", f"{side}_foot", "0 0 0", "1 0 0", -0.5, 0.5),
            _link(f"{side}_upper_arm0", '<sphere radius="0.03"/>'),
            _link(f"{side}_upper_arm1", '<sphere radius="0.03"/>'),
            _link(f"{side}_upper_arm", '<cylinder radius="0.03" length="0.2"/>', "0 0 -0.12"),
            _link(f"{side}_forearm", '<cylinder radius="0.025" length="0.2"/>', "0 0 -0.11"),
            _link(f"{side}_hand", '<box size="0.08 0.03 0.1"/>', "0 0 -0.05"),
            _joint(f"{side}_shoulder_pitch", "torso", f"{side}_upper_arm0", f"0 {y * 1.8:.3f} 0.3", "0 1 0", -3.0, 3.0),
            _joint(f"{side}_shoulder_roll", f"{side}_upper_arm0", f"{side}_upper_arm1", "0 0 0", "1 0 0", -2.5, 2.5),
            _joint(f"{side}_shoulder_yaw", f"{side}_upper_arm1", f"{side}_upper_arm", "0 0 0", "0 0 1", -2.5, 2.5),
            _joint(f"{side}_elbow", f"{side}_upper_arm", f"{side}_forearm", "0 0 -0.24", "0 1 0", -2.5, 0.0),
            _joint(f"{side}_wrist", f"{side}_forearm", f"{side}_hand", "0 0 -0.22", "1 0 0", -1.5, 1.5),
        ]
    return '<?xml version="1.0"?><robot name="tiny">' + "".join(parts) + "</robot>"


TINY_YAML = """
name: tiny
urdf: tiny.urdf
root_link: pelvis
scale: {rule: leg_length, robot_legs: [[left_thigh, left_shin, left_foot], [right_thigh, right_shin, right_foot]]}
gains: [{match: ".", kp: 100, kd: 10}]
default_pose: {"_knee": 0.2}
sites:
  left_palm: {link: left_hand, pos: [0.0, 0.0, -0.06]}
  right_palm: {link: right_hand, pos: [0.0, 0.0, -0.06]}
  left_sole: {link: left_foot, pos: [0.04, 0.0, -0.06]}
  right_sole: {link: right_foot, pos: [0.04, 0.0, -0.06]}
pairs:
  - {body: Pelvis, frame: pelvis, pos: 1.0, rot: 1.0}
  - {body: L_Knee, frame: left_shin}
  - {body: R_Knee, frame: right_shin}
  - {body: L_Ankle, frame: left_foot, pos: 2.0, rot: 0.3}
  - {body: R_Ankle, frame: right_foot, pos: 2.0, rot: 0.3}
  - {body: Chest, frame: torso, pos: 0.5, rot: 1.0}
  - {body: L_Shoulder, frame: left_upper_arm, pos: 0.5}
  - {body: R_Shoulder, frame: right_upper_arm, pos: 0.5}
  - {body: L_Elbow, frame: left_forearm, chain: L_Shoulder}
  - {body: R_Elbow, frame: right_forearm, chain: R_Shoulder}
  - {body: L_Wrist, frame: left_hand, pos: 2.0, chain: L_Elbow}
  - {body: R_Wrist, frame: right_hand, pos: 2.0, chain: R_Elbow}
hands:
  - {name: left_hand, site: left_palm, source_bodies: "L_(Wrist|Index|Middle|Pinky|Ring|Thumb)", point: [L_Wrist, L_Middle1], chain: L_Wrist}
  - {name: right_hand, site: right_palm, source_bodies: "R_(Wrist|Index|Middle|Pinky|Ring|Thumb)", point: [R_Wrist, R_Middle1], chain: R_Wrist}
feet:
  - {name: left_foot, site: left_sole, link: left_foot, source_bodies: [L_Ankle, L_Toe]}
  - {name: right_foot, site: right_sole, link: right_foot, source_bodies: [R_Ankle, R_Toe]}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.urdf").write_text(tiny_urdf())
    (folder / "tiny.yaml").write_text(TINY_YAML)
    return load_robot(folder / "tiny.yaml")


def test_second_urdf_retargets_with_only_a_yaml(tiny, motions_root) -> None:
    assert tiny.num_dofs == 23 and tiny.name == "tiny"
    motion = load_motion(motions_root / "OMOMO_new/sub2_largetable_000.pt").slice(20, 70)
    geom = object_geometry(load_object(motion.object_name))
    result = retarget_clip(tiny, motion, geom)
    report = evaluate(tiny, result.motion, result.targets, geom)
    assert result.motion.joint_names == tiny.joint_names
    assert report["contact_frames"] > 40
    assert report["contact_error_cm"] <= 1.0
    # 1.6 cm/s measured since the object and the floor are hard constraints in the IK (the G1: < 1 cm/s
    # on the same slice, see test_retarget_clip); the source skates 6 cm/s here.
    assert report["foot_skate_cm_s"] <= 2.0
    assert report["joint_limit_violations"] == 0
    # Measured 2.0 cm on this boxy robot (the G1 stays under 1 cm on this slice): reported, not hidden.
    assert report["floor_penetration_cm"] <= 3.0
    scene = build_robot_scene(tiny, geom.asset)  # MuJoCo from the same URDF
    assert scene.model.nu == 23 and np.isfinite(scene.model.actuator_gainprm[:, 0]).all()


def test_bad_yaml_is_named(tmp_path) -> None:
    from intermimic_policy.embodiment.robot import RobotError

    (tmp_path / "tiny.urdf").write_text(tiny_urdf())
    (tmp_path / "bad.yaml").write_text(TINY_YAML.replace("frame: left_shin", "frame: no_such_link"))
    with pytest.raises(RobotError, match="no_such_link"):
        load_robot(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text(TINY_YAML.replace("body: L_Knee", "body: L_Kneecap"))
    with pytest.raises(RobotError, match="L_Kneecap"):
        load_robot(tmp_path / "bad2.yaml")
    with pytest.raises(RobotError, match="unknown robot"):
        load_robot("no_such_robot")


def test_robot_yaml_is_read_strictly(tmp_path) -> None:
    """The robot YAML goes through config_io: a typo is refused, naming the file and the key."""
    from intermimic_policy.embodiment.robot import RobotError

    (tmp_path / "tiny.urdf").write_text(tiny_urdf())
    cases = {
        "typo.yaml": (TINY_YAML + "posture_wieght: 0.05\n", r"typo\.yaml: posture_wieght: unknown key"),
        "nested.yaml": (TINY_YAML.replace("body: L_Knee,", "body: L_Knee, rott: 1.0,"), r"nested\.yaml: pairs\[\d+\]\.rott: unknown key"),
        "site.yaml": (TINY_YAML.replace("link: left_foot, pos:", "link: left_foot, poss:"), r"site\.yaml: sites\.\w+\.poss: unknown key"),
        "type.yaml": (TINY_YAML + "posture_weight: heavy\n", r"type\.yaml: posture_weight: must be a number"),
        "pose.yaml": (TINY_YAML.replace('{"_knee": 0.2}', '{"_knee": bent}'), r"pose\.yaml: default_pose\._knee: must be a number"),
        "missing.yaml": ("\n".join(ln for ln in TINY_YAML.splitlines() if not ln.startswith("root_link")), r"missing\.yaml: root_link: missing key"),
    }
    for name, (text, pattern) in cases.items():
        assert text != TINY_YAML, name  # the edit really happened
        (tmp_path / name).write_text(text)
        with pytest.raises(RobotError, match=pattern):
            load_robot(tmp_path / name)
