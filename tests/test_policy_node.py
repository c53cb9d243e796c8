"""The policy node: state and reference from messages, same observation as training, DDS behaviour.

The DDS tests run the real node (Cyclone DDS on loopback, a pid-based domain) and a feeder node in
this process, with a real random-init teacher exported through ``training.export``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from intermimic_policy.contract import ContractMismatch
from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.fk import forward_kinematics
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.embodiment.smplx_body import DOF_NAMES, action_offset_scale
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.numpy_obs import Kinematics, ObjectCloud, WorldState, quat_to_matrix
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros.messages_convert import MotionFrames
from intermimic_policy.ros.msgs import ns_from_time
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray
from intermimic_policy.ros.msgs.geometry_msgs import Point, Pose, PoseStamped, Quaternion
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, HOIWindow, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.node_config import PolicyNodeConfig, TimeoutConfig, TopicConfig, load_node_config
from intermimic_policy.ros.node_state import (
    MessageRejected,
    RobotInputs,
    body_order,
    joint_order,
    parse_contacts,
    parse_joint_state,
    parse_odometry,
    parse_pose_stamped,
)
from intermimic_policy.ros.policy_node import PolicyController, PolicyNode, load_checked_policy, main
from intermimic_policy.ros.reference_buffer import (
    ReferenceBuffer,
    ReferenceSample,
    parse_hoi_frame,
    parse_hoi_window,
)
from intermimic_policy.ros.torch_state import HumanoidKinematics, build_sim_state
from intermimic_policy.ros.transport import Node, make_node
from intermimic_policy.runtime.base import Policy
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.reference import MotionLibrary

_DOMAINS = itertools.count()


def next_domain() -> int:
    """A DDS domain per node test, from the pid (parallel runs on one machine never cross)."""
    return 100 + (os.getpid() + 61 + next(_DOMAINS)) % 120

FPS = 30.0
DT_NS = round(1e9 / FPS)
NUM_POINTS = 1024
REF_FIELDS = ("body_pos", "body_lin_vel", "body_ang_vel", "object_pos", "object_lin_vel", "object_ang_vel",
              "body_contact", "ig")


# ---------------------------------------------------------------------------------- fixtures
def synthetic_motion(frames: int = 48, seed: int = 0) -> HOIMotion:
    """A clip whose bodies are exact FK of smooth joint motions, a box in front of the hands."""
    g = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    amp, freq, phase = g.uniform(0.05, 0.3, (51, 3)), g.uniform(0.5, 2.0, (51, 3)), g.uniform(0, 6.3, (51, 3))
    rotvec = amp * np.sin(2 * np.pi * freq * t[:, None, None] + phase)
    root_pos = np.stack([0.3 * t, 0.05 * np.sin(t), 0.9 + 0.02 * np.sin(2 * t)], -1)
    root_rot = quat.from_yaw(torch.from_numpy(0.4 * t)).numpy()
    bp, br = forward_kinematics(default_skeleton().offsets, torch.from_numpy(root_pos),
                                torch.from_numpy(root_rot), torch.from_numpy(rotvec))
    labels = g.integers(-1, 2, (frames, 52)).astype(np.int8)
    f32 = np.float32
    return HOIMotion(
        fps=FPS, root_pos=bp[:, 0].numpy().astype(f32), root_rot=br[:, 0].numpy().astype(f32),
        joint_rotvec=rotvec.astype(f32), body_pos=bp.numpy().astype(f32), body_rot=br.numpy().astype(f32),
        object_pos=(root_pos + [0.45, 0.0, 0.1]).astype(f32),
        object_rot=quat.from_yaw(torch.from_numpy(0.2 * t + 0.1)).numpy().astype(f32),
        object_name="box", body_contact=labels, object_contact=labels[:, 17] > 0, name="synthetic")


_FRAMES: dict[int, MotionFrames] = {}


def hoi_frame(m: HOIMotion, k: int) -> HOIFrame:
    """Frame k as the motion streamer sends it (the shared conversion)."""
    if id(m) not in _FRAMES:
        _FRAMES[id(m)] = MotionFrames(m)
    return _FRAMES[id(m)].frame(k)


class RobotPose:
    """A made-up measured state near the reference at frame k, and its messages."""

    def __init__(self, m: HOIMotion, k: int, seed: int = 1) -> None:
        g = np.random.default_rng(seed + k)
        rotvec = torch.from_numpy(m.joint_rotvec[k].astype(np.float64))
        self.angles = joint_map.hinge_angles_from_rotvec(rotvec).numpy() + g.normal(0, 0.05, 153)
        self.rates = g.normal(0, 0.5, 153)
        self.root_pos = m.root_pos[k].astype(np.float64) + g.normal(0, 0.01, 3)
        self.root_rot = quat.normalize(torch.from_numpy(m.root_rot[k].astype(np.float64))).numpy()
        self.root_lin = g.normal(0, 0.3, 3)
        self.root_ang = g.normal(0, 0.3, 3)
        self.obj_pos = m.object_pos[k].astype(np.float64) + [0.0, 0.0, 0.01 * k]
        self.obj_rot = m.object_rot[k].astype(np.float64)
        self.touch = g.random(52) > 0.5
        self.obj_touch = self.touch & (g.random(52) > 0.5)
        self.force = g.normal(0, 5.0, (52, 3))

    def messages(self, stamp_ns: int) -> tuple[JointState, Odometry, PoseStamped, ContactState]:
        """The four state messages as the simulation bridge sends them (the shared conversion;
        the Odometry twist is in the root frame, as ROS specifies)."""
        return (convert.joint_state_message(self.angles, self.rates, stamp_ns),
                convert.odometry_message(self.root_pos, self.root_rot, self.root_lin, self.root_ang, stamp_ns),
                convert.pose_stamped_message(self.obj_pos, self.obj_rot, stamp_ns),
                convert.contact_state_message(self.touch, self.obj_touch, self.force, stamp_ns))


@pytest.fixture(scope="module")
def motion() -> HOIMotion:
    return synthetic_motion()


@pytest.fixture(scope="module")
def library(motion: HOIMotion) -> MotionLibrary:
    return MotionLibrary([motion], {"box": load_object("box").points(NUM_POINTS)}, num_points=NUM_POINTS)


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_random

    out = tmp_path_factory.mktemp("policy") / "teacher.onnx"
    export_random("teacher", out, seed=3)
    return out


def node_config(policy: Path, **kw: Any) -> PolicyNodeConfig:
    prefix = f"/t{uuid.uuid4().hex[:10]}"
    topics = TopicConfig(**{f: f"{prefix}/{f}" for f in TopicConfig.__dataclass_fields__})
    base = PolicyNodeConfig(policy=str(policy), transport="cyclone", domain_id=next_domain(), topics=topics,
                            num_object_points=NUM_POINTS)
    return replace(base, **kw).validate()


@pytest.fixture(scope="module")
def teacher(teacher_onnx: Path) -> Policy:
    return load_checked_policy(node_config(teacher_onnx))


def training_state(ctl: PolicyController) -> Any:
    """The training-side ``SimState`` (torch, MuJoCo kinematics) of the controller's inputs."""
    assert ctl.joints is not None and ctl.root is not None and ctl.object_pose is not None
    inputs = RobotInputs(ctl.joints, ctl.root, ctl.object_pose, ctl._object_velocity.lin_vel,
                         ctl._object_velocity.ang_vel, ctl.contacts)
    return build_sim_state(inputs, HumanoidKinematics())


# ---------------------------------------------------------------------------- state from messages
def test_sim_state_from_messages_matches_fk_and_differentiated_fk(motion: HOIMotion) -> None:
    robot = RobotPose(motion, 5)
    j, o, p, c = robot.messages(123)
    joints = parse_joint_state(j, joint_order())
    root = parse_odometry(o)
    np.testing.assert_allclose(root.lin_vel, robot.root_lin, atol=1e-12)  # back in the world frame
    inputs = RobotInputs(joints, root, parse_pose_stamped(p), np.zeros(3), np.zeros(3),
                         parse_contacts(c, body_order()))
    offsets = torch.from_numpy(np.array(default_skeleton().offsets))
    sim = build_sim_state(inputs, HumanoidKinematics())

    def fk(h: float) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.from_numpy(robot.angles + h * robot.rates)
        rot0 = quat.multiply(quat.from_rotvec(torch.from_numpy(robot.root_ang * h)), torch.from_numpy(robot.root_rot))
        return forward_kinematics(offsets, torch.from_numpy(robot.root_pos + h * robot.root_lin), rot0,
                                  joint_map.rotvec_from_hinge_angles(angles))

    pos, rot = fk(0.0)
    np.testing.assert_allclose(sim.body_pos[0].numpy(), pos.numpy(), atol=1e-5)
    np.testing.assert_allclose(sim.body_rot[0].numpy(), rot.numpy(), atol=1e-5)
    # body velocities against central differences of FK along the measured rates
    h = 1e-6
    (p1, r1), (p0, r0) = fk(h), fk(-h)
    lin_fd = (p1 - p0) / (2 * h)
    ang_fd = quat.to_rotvec(quat.multiply(r1, quat.conjugate(r0))) / (2 * h)
    np.testing.assert_allclose(sim.body_lin_vel[0].numpy(), lin_fd.numpy(), atol=2e-4)
    np.testing.assert_allclose(sim.body_ang_vel[0].numpy(), ang_fd.numpy(), atol=2e-4)
    assert sim.body_contact[0].tolist() == robot.touch.tolist()
    assert bool(sim.object_contact[0]) == bool(robot.obj_touch.any())
    # the node's numpy kinematics (no MuJoCo) gives MuJoCo's state
    world = WorldState.empty()
    Kinematics(default_skeleton().offsets).compute(world, root.pos, root.rot, root.lin_vel, root.ang_vel,
                                                   joints.angles, joints.rates)
    np.testing.assert_allclose(world.body_pos, sim.body_pos[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(world.body_mat, quat_to_matrix(sim.body_rot[0].numpy()), atol=1e-5)
    np.testing.assert_allclose(world.body_lin_vel, sim.body_lin_vel[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(world.body_ang_vel, sim.body_ang_vel[0].numpy(), atol=1e-5)


def test_joint_order_contacts_and_malformed_state_messages(motion: HOIMotion) -> None:
    robot = RobotPose(motion, 2)
    j, o, p, c = robot.messages(1)
    perm = np.random.default_rng(0).permutation(153)
    shuffled = JointState(header=j.header, name=[j.name[i] for i in perm],
                          position=[j.position[i] for i in perm], velocity=[j.velocity[i] for i in perm])
    np.testing.assert_array_equal(parse_joint_state(shuffled, joint_order()).angles, robot.angles)
    bad = {
        "has 152 names": replace(j, name=j.name[:152], position=j.position[:152], velocity=j.velocity[:152]),
        "unknown name": replace(j, name=["Nope_x", *j.name[1:]]),
        "duplicate": replace(j, name=[j.name[1], *j.name[1:]]),
        "velocity has 0 values": replace(j, velocity=[]),
        "NaN": replace(j, position=[float("nan"), *j.position[1:]]),
    }
    for why, msg in bad.items():
        with pytest.raises(MessageRejected, match=why):
            parse_joint_state(msg, joint_order())
    zero = replace(p, pose=Pose(position=Point(), orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)))
    with pytest.raises(MessageRejected, match="not a unit quaternion"):
        parse_pose_stamped(zero)
    with pytest.raises(MessageRejected, match="force has 51 values"):
        parse_contacts(replace(c, force=c.force[:51]), body_order())


# ------------------------------------------------------------------------------------ reference
def test_reference_buffer_equals_motion_library_with_lookahead_and_clip_end(
        motion: HOIMotion, library: MotionLibrary) -> None:
    points = torch.from_numpy(load_object("box").points(NUM_POINTS))
    offsets = (0, 1, 4, 16)
    buf = ReferenceBuffer(offsets)
    last = motion.num_frames - 1
    for k in range(17):
        buf.add(parse_hoi_frame(hoi_frame(motion, k), FPS))
    assert buf.readiness().ok is False and "frame 17" in buf.readiness().reason  # t+16 needs t+17
    for k in range(17, 21):
        buf.add(parse_hoi_frame(hoi_frame(motion, k), FPS))
    assert buf.readiness().ok
    # then the whole clip as a window (the producer's current frame is still 0) that repeats the
    # last frame past the clip end: the clip-end marker
    window = HOIWindow(start_frame=0, frames=[hoi_frame(motion, min(k, last)) for k in range(last + 6)])
    frames, end = parse_hoi_window(window, FPS)
    assert end == last and frames[-1].frame_index == last
    buf.add_window(frames, end)
    assert buf.cursor == 0

    cloud = ObjectCloud(points.numpy())

    def check(t: int) -> None:
        refs = buf.ref_frames(cloud)
        for d, ref in zip(offsets, refs, strict=True):
            exp = library.frames(torch.tensor([0]), torch.tensor([t + d]))
            for f in REF_FIELDS:
                np.testing.assert_allclose(getattr(ref, f), getattr(exp, f)[0].float().numpy(),
                                           atol=1e-6, err_msg=f"frame {t}+{d} {f}")
            np.testing.assert_allclose(ref.body_mat, quat_to_matrix(exp.body_rot[0].numpy()), atol=1e-6)
            np.testing.assert_allclose(ref.object_mat, quat_to_matrix(exp.object_rot[0].numpy()), atol=1e-6)

    for t in range(0, last + 3):  # past the end the cursor and every offset clamp to the last frame
        assert buf.readiness().ok, buf.readiness().reason
        check(min(t, last))
        buf.advance()
    assert buf.cursor == last
    # a frame index far before the cursor is a new clip: the buffer restarts there
    buf.add(parse_hoi_frame(hoi_frame(motion, 0), FPS))
    assert (buf.cursor, buf.restarts, buf.clip_end) == (0, 1, None)


def test_windows_resynchronise_the_cursor_to_the_producer(motion: HOIMotion) -> None:
    buf = ReferenceBuffer((1, 16))

    def window(start: int, count: int = 20) -> list[ReferenceSample]:
        return [parse_hoi_frame(hoi_frame(motion, k), FPS) for k in range(start, start + count)]

    for s in window(5, 26):  # a late joiner's first frames: it takes frame 5 for "now"
        buf.add(s)
    assert buf.cursor == 5 and buf.readiness().ok
    buf.add_window(window(6), None)  # within RESYNC_FRAMES of the cursor: kept
    assert buf.cursor == 5
    buf.add_window(window(10), None)  # the producer is at 10: jump forward
    assert (buf.cursor, buf.skipped_frames, buf.restarts) == (10, 5, 0)
    buf.add_window(window(6), None)  # back to 6 (frame 5 already dropped: 6 starts one-sided)
    assert (buf.cursor, buf.first_index, buf.restarts) == (6, 6, 0) and buf.readiness().ok
    buf.add_window(window(0), None)  # before the stream's first frame: a new clip
    assert (buf.cursor, buf.restarts) == (0, 1)


def test_malformed_reference_messages_are_rejected(motion: HOIMotion) -> None:
    f = hoi_frame(motion, 3)
    cases = {
        "joint_rotvec has 152 values": replace(f, joint_rotvec=f.joint_rotvec[:152]),
        "fps is 60 but the policy runs at 30": replace(f, fps=60.0),
        "body_rotations\\[0\\] is not a unit": replace(f, body_rotations=[0.0] * 4 + f.body_rotations[4:]),
        "labels must be -1, 0 or \\+1": replace(f, body_contact_labels=[2] + f.body_contact_labels[1:]),
        "object_name is empty": replace(f, object_name=""),
        "NaN": replace(f, body_positions=[float("inf")] + f.body_positions[1:]),
    }
    for why, msg in cases.items():
        with pytest.raises(MessageRejected, match=why):
            parse_hoi_frame(msg, FPS)
    with pytest.raises(MessageRejected, match=r"frames\[1\].frame_index is 12, expected 11"):
        parse_hoi_window(HOIWindow(start_frame=10, frames=[hoi_frame(motion, 10), hoi_frame(motion, 12)]), FPS)


# ------------------------------------------------------------------------------- the controller
def test_observation_is_the_training_builders_and_targets_the_envs_action_map(
        teacher: Policy, motion: HOIMotion, library: MotionLibrary) -> None:
    cfg = node_config(Path("unused.onnx"), soft_start_s=0.0, max_slew_rad=0.0)
    ctl = PolicyController(cfg, teacher)
    for k in range(motion.num_frames):
        assert ctl.on_reference(hoi_frame(motion, k), 0.0)
    builder = ObservationBuilder(teacher.contract.observation)
    offset, scale = action_offset_scale()
    for t in range(4):
        robot = RobotPose(motion, t)
        for msg, handler in zip(robot.messages((t + 1) * DT_NS),
                                (ctl.on_joint_state, ctl.on_odometry, ctl.on_object_pose, ctl.on_contacts)):
            assert handler(msg, 0.01 * t)  # type: ignore[operator]
        result = ctl.tick(0.01 * t, (t + 1) * DT_NS)
        assert result.mode == "running" and result.message is not None
        sim = training_state(ctl)
        refs = [library.frames(torch.tensor([0]), torch.tensor([t + d])) for d in teacher.contract.ref_offsets]
        expected = builder.build(sim, refs, library.points_of(torch.tensor([0])))
        assert ctl.last_observation is not None
        np.testing.assert_allclose(ctl.last_observation, expected.numpy(), atol=1e-5, rtol=0)
        # HOIEnv.action_to_targets: clamp, offset + scale * a as rotation vectors, then hinge angles
        a = np.clip(teacher(expected.numpy()), -1.0, 1.0)
        rotvec = torch.from_numpy((offset + scale * a).astype(np.float32)).reshape(51, 3)
        hinge = joint_map.hinge_angles_from_rotvec(rotvec.double()).numpy()
        np.testing.assert_allclose(result.message.position, hinge, atol=2e-5)
    # the object velocity came from differencing the last two poses over their stamps
    expected_vel = (RobotPose(motion, 3).obj_pos - RobotPose(motion, 2).obj_pos) * FPS
    np.testing.assert_allclose(ctl.world_state().object_lin_vel, expected_vel, rtol=1e-4)


def test_soft_start_blends_from_the_measured_pose_and_clamps_report(teacher: Policy, motion: HOIMotion) -> None:
    cfg = node_config(Path("unused.onnx"), soft_start_s=0.1, max_slew_rad=0.05)  # 3 ticks of blending
    ctl = PolicyController(cfg, teacher)
    for k in range(motion.num_frames):
        ctl.on_reference(hoi_frame(motion, k), 0.0)
    robot = RobotPose(motion, 0)
    for msg, handler in zip(robot.messages(DT_NS), (ctl.on_joint_state, ctl.on_odometry,
                                                    ctl.on_object_pose, ctl.on_contacts)):
        handler(msg, 0.0)  # type: ignore[operator]
    modes, positions = [], []
    offset, scale = action_offset_scale()
    for t in range(5):
        r = ctl.tick(0.0, t)
        assert r.message is not None
        modes.append(r.mode)
        positions.append(np.array(r.message.position))
        if t == 0:  # a third of the way from the measured pose to the policy (no slew limit yet)
            assert ctl.last_observation is not None
            a = np.clip(teacher(ctl.last_observation), -1.0, 1.0)
            rotvec = torch.from_numpy((offset + scale * a).astype(np.float32)).reshape(51, 3).double()
            policy = joint_map.hinge_angles_from_rotvec(rotvec).numpy()
            blend = robot.angles + (policy - robot.angles) / 3.0
            np.testing.assert_allclose(positions[0], np.clip(blend, ctl.lower, ctl.upper), atol=2e-5)
        else:
            assert np.max(np.abs(positions[-1] - positions[-2])) <= 0.05 + 1e-12
            assert r.clipped_slew and ctl.counters.slew_clamps == t
    assert modes == ["soft_start", "soft_start", "running", "running", "running"]


# ------------------------------------------------------------------------------------ the node
class Feeder:
    """A second node in this process: publishes the inputs, records targets and status."""

    def __init__(self, cfg: PolicyNodeConfig) -> None:
        t = cfg.topics
        self.node: Node = make_node("feeder", backend="cyclone", domain_id=cfg.domain_id)
        self.ref = self.node.create_publisher(t.reference, HOIFrame, 100)
        self.window = self.node.create_publisher(t.reference_window, HOIWindow, 100)
        self.joints = self.node.create_publisher(t.joint_states, JointState, "reliable")
        self.odom = self.node.create_publisher(t.odom, Odometry, "reliable")
        self.obj = self.node.create_publisher(t.object_pose, PoseStamped, "reliable")
        self.contacts = self.node.create_publisher(t.contacts, ContactState, "reliable")
        self.targets: list[PDTargets] = []
        self.status: list[DiagnosticArray] = []
        self.node.create_subscription(t.pd_targets, PDTargets, self.targets.append, 100)
        self.node.create_subscription(t.status, DiagnosticArray, self.status.append, 100)

    def publish_state(self, robot: RobotPose, stamp_ns: int) -> None:
        j, o, p, c = robot.messages(stamp_ns)
        self.odom.publish(o)
        self.obj.publish(p)
        self.contacts.publish(c)
        self.joints.publish(j)

    def last_status(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.status[-1].status[0].values}


def count_is(items: list[Any], n: int) -> Callable[[], bool]:
    return lambda: len(items) == n


def spin_both(node: PolicyNode, feeder: Feeder, until: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if until():
            return True
        node.spin_once(0.002)
        feeder.node.spin_once(0.002)
    return until()


@pytest.fixture
def running(teacher: Policy, teacher_onnx: Path) -> Iterator[Callable[..., tuple[PolicyNode, Feeder]]]:
    made: list[Any] = []

    def start(**kw: Any) -> tuple[PolicyNode, Feeder]:
        cfg = node_config(teacher_onnx, **kw)
        node = PolicyNode(cfg, teacher)
        made.append(node)
        feeder = Feeder(cfg)
        made.append(feeder.node)
        pubs = (feeder.ref, feeder.window, feeder.joints, feeder.odom, feeder.obj, feeder.contacts)
        assert spin_both(node, feeder, lambda: all(p.subscription_count() == 1 for p in pubs)
                         and node.pub_targets.subscription_count() == 1, 10.0)
        return node, feeder

    yield start
    for thing in made:
        thing.destroy()


def test_lockstep_answers_every_state_tick_with_its_stamp(running: Any, teacher: Policy,
                                                          motion: HOIMotion, library: MotionLibrary) -> None:
    node, feeder = running(lockstep=True, soft_start_s=0.0,
                           timeouts=TimeoutConfig(reference_s=5.0, object_pose_s=5.0, state_s=5.0, contacts_s=5.0))
    builder = ObservationBuilder(teacher.contract.observation)
    c = teacher.contract
    for k in range(17):  # the lookahead the first tick needs, except its last frame
        feeder.ref.publish(hoi_frame(motion, k))
    robot = RobotPose(motion, 0)
    feeder.publish_state(robot, 0)
    spin_both(node, feeder, lambda: node.controller.reason.startswith("waiting for lookahead"), 5.0)
    assert feeder.targets == [] and node.controller.mode == "waiting"
    assert "frame 17" in node.controller.reason
    feeder.ref.publish(hoi_frame(motion, 17))  # now tick 0 can be answered
    for t in range(6):
        answered = count_is(feeder.targets, t + 1)
        if t > 0:
            feeder.ref.publish(hoi_frame(motion, 17 + t))
            robot = RobotPose(motion, t)
            feeder.publish_state(robot, t * DT_NS)
        assert spin_both(node, feeder, answered, 5.0), node.controller.reason
        msg = feeder.targets[-1]
        assert ns_from_time(msg.header.stamp) == t * DT_NS
        assert msg.joint_names == list(DOF_NAMES) and len(msg.position) == 153
        assert msg.kp == list(c.kp) and msg.kd == list(c.kd)
        assert msg.velocity == [0.0] * 153 and msg.effort == [0.0] * 153
        refs = [library.frames(torch.tensor([0]), torch.tensor([t + d])) for d in c.ref_offsets]
        expected = builder.build(training_state(node.controller), refs, library.points_of(torch.tensor([0])))
        np.testing.assert_allclose(node.controller.last_observation, expected.numpy(), atol=1e-5,  # type: ignore[arg-type]
                                   err_msg=f"tick {t} cursor {node.controller.buffer.cursor}")
    # a NaN state tick is answered with a hold of the last targets (raised kd), stamped with the tick
    nan_state = RobotPose(motion, 6)
    nan_state.angles[40] = np.nan
    feeder.publish_state(nan_state, 6 * DT_NS)
    assert spin_both(node, feeder, lambda: len(feeder.targets) == 7, 5.0)
    hold = feeder.targets[-1]
    assert ns_from_time(hold.header.stamp) == 6 * DT_NS and hold.position == feeder.targets[-2].position
    np.testing.assert_allclose(hold.kd, 2.0 * np.asarray(c.kd))
    assert node.controller.mode == "safe_hold" and node.controller.counters.safe_hold_events == 1
    assert node.controller.counters.rejected["joint_states"] == 1
    # every published tick has its CPU time beside its wall time (the hold included)
    assert len(node.stats.tick_cpu_ms) == len(node.stats.tick_ms) == 7


def test_lookahead_frames_are_parsed_after_the_tick_they_arrive_beside(running: Any, motion: HOIMotion) -> None:
    """A streamed frame that the current tick does not read waits until that tick is published; a
    NaN one then holds the next tick (it neither delays nor changes the one already built)."""
    node, feeder = running(lockstep=True, soft_start_s=0.0,
                           timeouts=TimeoutConfig(reference_s=5.0, object_pose_s=5.0, state_s=5.0, contacts_s=5.0))
    order: list[str] = []
    parse, publish = node.controller.on_reference, node.pub_targets.publish
    node.inbox.clear()
    node.subscriptions[0]._callback = node._deferred(  # type: ignore[attr-defined]
        lambda msg, now: order.append(f"parse {msg.frame_index}") or parse(msg, now))
    node.pub_targets.publish = lambda msg: (order.append("publish"), publish(msg))[1]  # type: ignore[method-assign]
    for k in range(17):
        feeder.ref.publish(hoi_frame(motion, k))
    feeder.publish_state(RobotPose(motion, 0), 0)
    assert spin_both(node, feeder, lambda: "frame 17" in node.controller.reason, 5.0), node.controller.reason
    order.clear()
    feeder.ref.publish(hoi_frame(motion, 17))  # tick 0 reads frames up to 17: parsed before it
    assert spin_both(node, feeder, count_is(feeder.targets, 1), 5.0), node.controller.reason
    assert order == ["parse 17", "publish"]
    for k in (18, 19, 20):  # three frames of extra lookahead, parsed while idle (the watchdog)
        feeder.ref.publish(hoi_frame(motion, k))
    assert spin_both(node, feeder, lambda: node.controller.buffer.newest == 20 and not node.inbox, 5.0)
    for t in (1, 2):  # the frame sent beside tick t (t + 20) is first read by tick t + 3: parsed after
        order.clear()
        feeder.ref.publish(hoi_frame(motion, 20 + t))
        feeder.publish_state(RobotPose(motion, t), t * DT_NS)
        assert spin_both(node, feeder, lambda n=t + 1: len(feeder.targets) == n and not node.inbox, 5.0)
        assert order == ["publish", f"parse {20 + t}"]
    bad = hoi_frame(motion, 23)
    bad.body_positions = [math.nan] * len(bad.body_positions)  # a NaN source faults the reference
    feeder.ref.publish(bad)
    feeder.publish_state(RobotPose(motion, 3), 3 * DT_NS)
    assert spin_both(node, feeder, lambda: len(feeder.targets) == 4 and not node.inbox, 5.0)
    assert node.controller.counters.rejected["reference"] == 1
    assert feeder.targets[-1].kd[0] == teacher_kd0(node)  # tick 3 ran on the frames it reads
    feeder.publish_state(RobotPose(motion, 4), 4 * DT_NS)
    assert spin_both(node, feeder, count_is(feeder.targets, 5), 5.0)
    assert node.controller.mode == "safe_hold" and "reference" in node.controller.reason
    assert feeder.targets[-1].kd[0] > teacher_kd0(node)


def test_warm_up_runs_the_policy_before_the_next_state_and_changes_nothing(running: Any, motion: HOIMotion) -> None:
    """With ``warm_lead_ms`` the node runs the policy once between ticks, ahead of the next state
    (the median arrival interval after the last one), and the ticks answer exactly as without it."""
    lead_ms, period = 15.0, 1.0 / FPS
    node, feeder = running(lockstep=True, soft_start_s=0.0, warm_lead_ms=lead_ms,
                           timeouts=TimeoutConfig(reference_s=5.0, object_pose_s=5.0, state_s=5.0, contacts_s=5.0))
    calls: list[float] = []
    policy = node.controller.policy
    node.controller.policy = lambda obs: (calls.append(time.monotonic()), policy(obs))[1]  # type: ignore[assignment]
    for k in range(30):
        feeder.ref.publish(hoi_frame(motion, k))
    published: list[float] = []
    start = time.monotonic()
    for t in range(8):  # states at the control period, in real time
        while time.monotonic() < start + t * period:
            spin_both(node, feeder, lambda: False, 0.001)
        published.append(time.monotonic())
        feeder.publish_state(RobotPose(motion, t), t * DT_NS)
        assert spin_both(node, feeder, count_is(feeder.targets, t + 1), 5.0), node.controller.reason
    spin_both(node, feeder, lambda: False, period)
    assert node.warm_ups >= 6 and len(calls) == len(feeder.targets) + node.warm_ups
    # each warm-up lies between two states, about lead_ms before the later one
    for w in [c for c in calls if not any(0 <= c - p < 0.004 for p in published)][:-1]:
        later = min(p for p in published + [published[-1] + period] if p > w)
        assert 0.0 < later - w < 2 * lead_ms * 1e-3
    # the warm-up leaves the controller as it was: its observation and the cursor
    before, cursor = node.controller.last_observation.copy(), node.controller.buffer.cursor  # type: ignore[union-attr]
    node._warm_up()
    np.testing.assert_array_equal(node.controller.last_observation, before)  # type: ignore[arg-type]
    assert node.controller.buffer.cursor == cursor and node.controller.counters.ticks == 8
    # and the answers are those of a node without warm-ups fed the same states
    plain, plain_feeder = running(lockstep=True, soft_start_s=0.0,
                                  timeouts=TimeoutConfig(reference_s=5.0, object_pose_s=5.0, state_s=5.0,
                                                         contacts_s=5.0))
    for k in range(30):
        plain_feeder.ref.publish(hoi_frame(motion, k))
    for t in range(8):
        plain_feeder.publish_state(RobotPose(motion, t), t * DT_NS)
        assert spin_both(plain, plain_feeder, count_is(plain_feeder.targets, t + 1), 5.0)
    assert plain.warm_ups == 0
    assert [m.position for m in plain_feeder.targets] == [m.position for m in feeder.targets]


def test_stopping_the_reference_reaches_safe_hold_within_its_timeout(running: Any, motion: HOIMotion) -> None:
    timeout = 0.3
    node, feeder = running(status_hz=5.0, timeouts=TimeoutConfig(reference_s=timeout, object_pose_s=2.0,
                                                                 state_s=2.0, contacts_s=2.0))
    for k in range(18):
        feeder.ref.publish(hoi_frame(motion, k))
    k, robot = 18, RobotPose(motion, 0)
    start = time.monotonic()
    while time.monotonic() - start < 0.6:  # stream in real time: one frame and one state per 1/30 s
        feeder.ref.publish(hoi_frame(motion, k))
        k += 1
        feeder.publish_state(robot, time.time_ns())
        spin_both(node, feeder, lambda: False, 1 / FPS)
    assert feeder.targets and node.controller.mode in ("soft_start", "running")
    before = len(feeder.targets)
    stopped = time.monotonic()
    held_at = None
    while time.monotonic() - stopped < 1.5:  # the state keeps coming, the reference does not
        feeder.publish_state(robot, time.time_ns())
        spin_both(node, feeder, lambda: False, 1 / FPS)
        holds = [m for m in feeder.targets[before:] if m.kd[0] > teacher_kd0(node)]
        if holds and held_at is None:
            held_at = time.monotonic()
    assert held_at is not None, node.controller.reason
    assert held_at - stopped <= timeout + 0.2
    assert node.controller.mode == "safe_hold" and "reference" in node.controller.reason
    spin_both(node, feeder, lambda: bool(feeder.status) and feeder.last_status()["mode"] == "safe_hold", 2.0)
    status = feeder.last_status()
    assert status["mode"] == "safe_hold" and int(status["safe_hold_events"]) == 1
    # every hold repeats the last good targets with zero velocity
    last_good = node.controller.last_good
    assert last_good is not None and feeder.targets[-1].position == last_good.tolist()


def teacher_kd0(node: PolicyNode) -> float:
    return float(node.controller.contract.kd[0])


def test_malformed_messages_are_counted_and_rejected_while_it_keeps_publishing(
        running: Any, motion: HOIMotion) -> None:
    node, feeder = running(lockstep=True, soft_start_s=0.0,
                           timeouts=TimeoutConfig(reference_s=5.0, object_pose_s=5.0, state_s=5.0, contacts_s=5.0))

    class NotUtf8(HOIFrame):
        """A peer whose string is not UTF-8: valid CDR that cannot be decoded (a wrong-sized array
        cannot even be written: the fixed-size arrays make it a serialization error)."""

        def serialize(self, *args: Any, **kwargs: Any) -> bytes:
            return HOIFrame.serialize(self, *args, **kwargs).replace(b"box\x00", b"\xff\xfe\xfd\x00")

    for k in range(24):
        feeder.ref.publish(hoi_frame(motion, k))
    robot = RobotPose(motion, 0)
    j, o, p, c = robot.messages(0)
    feeder.joints.publish(replace(j, name=j.name[:152], position=j.position[:152], velocity=j.velocity[:152]))
    feeder.joints.publish(replace(j, name=["Tail_x", *j.name[1:]]))
    feeder.obj.publish(replace(p, pose=Pose(orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0))))
    feeder.contacts.publish(replace(c, in_contact=c.in_contact[:40]))
    feeder.ref.publish(NotUtf8(**{f: getattr(hoi_frame(motion, 3), f) for f in HOIFrame.__dataclass_fields__}))
    feeder.ref.publish(replace(hoi_frame(motion, 24), fps=25.0))
    for t in range(3):
        feeder.publish_state(RobotPose(motion, t), t * DT_NS)
        assert spin_both(node, feeder, count_is(feeder.targets, t + 1), 5.0), node.controller.reason
    rejected = node.controller.counters.rejected
    assert rejected["joint_states"] == 2 and rejected["object_pose"] == 1 and rejected["contacts"] == 1
    assert rejected["reference"] == 1  # the 25 fps frame
    ref_sub = next(s for s in node.subscriptions if s.msg_type is HOIFrame)
    assert ref_sub.malformed == 1
    assert [ns_from_time(m.header.stamp) for m in feeder.targets] == [0, DT_NS, 2 * DT_NS]
    assert node.controller.mode == "running" and node.controller.counters.safe_hold_events == 0
    node.publish_status()
    assert spin_both(node, feeder, lambda: bool(feeder.status), 5.0)
    status = feeder.last_status()
    assert status["rejected.joint_states"] == "2" and status[f"malformed.{ref_sub.topic}"] == "1"


# ------------------------------------------------------------------------------- contract / CLI
def test_a_policy_that_does_not_fit_the_config_is_refused(teacher_onnx: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ContractMismatch, match="kind: policy has 'teacher', expected 'student'"):
        load_checked_policy(node_config(teacher_onnx, kind="student"))
    with pytest.raises(ContractMismatch, match="model_hash"):
        load_checked_policy(node_config(teacher_onnx, model_hash="0" * 64))
    cfg = tmp_path / "sim_hoi.yaml"
    cfg.write_text("common:\n  policy: nowhere.onnx\n  clip: x.pt\npolicy_node:\n  kind: student\n"
                   "  timeouts: {reference_s: 0.4}\n")
    assert load_node_config(cfg).timeouts.reference_s == 0.4
    assert main(["--config", str(cfg), "--policy", str(teacher_onnx), "--transport", "cyclone",
                 "--domain-id", str(next_domain())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit the expected contract" in err and "kind" in err


def test_node_expectations_come_from_its_own_config_not_the_policy(teacher_onnx: Path) -> None:
    """A node configured for 50 Hz refuses a 30 Hz policy, naming both rates."""
    from intermimic_policy.contract import ContractMismatch
    from intermimic_policy.ros.policy_core import expected_for, load_checked_policy

    config = node_config(teacher_onnx)
    assert expected_for(config).control_hz == config.control_hz == 30.0
    with pytest.raises(ContractMismatch, match="control_hz"):
        load_checked_policy(replace(config, control_hz=50.0, physics_hz=250.0))


def test_loop_stats_report_the_ticks_cpu_time_and_switched_out_ticks() -> None:
    from intermimic_policy.ros.policy_node import LoopStats, thread_cpu_and_switches

    stats = LoopStats(0.02, 0.005)
    stats.record(1.0, 1.0, 1.002, 0, cpu_s=0.001)
    stats.record(2.0, 2.0, 2.004, 20_000_000, cpu_s=0.003, blocked=2, preempted=1)
    stats.record(2.5, 2.5, 2.501, 30_000_000, cpu_s=0.001, blocked=1)
    stats.record(3.0, 3.0, 3.001, 40_000_000)  # no CPU figure: the wall time alone
    values = stats.values()
    assert list(stats.tick_cpu_ms) == pytest.approx([1.0, 3.0, 1.0])
    assert values["tick_cpu_ms_p50"] == "1.000" and values["tick_cpu_ms_p99"] == "2.960"
    assert values["blocked_ticks"] == "2" and values["preempted_ticks"] == "1"
    before = thread_cpu_and_switches()
    sum(range(100_000))
    after = thread_cpu_and_switches()
    assert all(b >= a for a, b in zip(before, after))


def test_deadline_misses_say_whether_the_nodes_own_work_caused_them() -> None:
    """A tick over the deadline whose CPU time fit it was time off the CPU (preempted, blocked or
    taken by the hypervisor); one whose CPU time alone exceeded it was the node's work."""
    from intermimic_policy.ros.policy_node import LATENCY_WINDOW, LoopStats

    stats = LoopStats(0.02, 0.005)
    stats.record(1.0, 1.0, 1.004, 0, cpu_s=0.004)  # within the deadline
    stats.record(2.0, 2.0, 2.009, 20_000_000, cpu_s=0.0012)  # 9 ms wall, 1.2 ms CPU: off the CPU
    stats.record(3.0, 3.0, 3.008, 40_000_000, cpu_s=0.0075)  # the work itself took 7.5 ms
    stats.record(4.0, 4.0, 4.006, 60_000_000)  # no CPU figure: not attributed
    values = stats.values()
    assert values["deadline_misses"] == "3" and values["deadline_misses_off_cpu"] == "1"
    for k in range(LATENCY_WINDOW):  # the worst tick stays reported after it left the windows
        stats.record(10.0 + k, 10.0 + k, 10.001 + k, 80_000_000 + k * 20_000_000, cpu_s=0.001)
    assert max(stats.tick_ms) < 2.0 and stats.values()["tick_ms_max"] == "9.000"
