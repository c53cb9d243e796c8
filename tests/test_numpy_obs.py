"""The policy node's numpy path equals training's, on real OMOMO clips; the fast CDR codecs equal
Cyclone's own bytes.

The node side runs exactly as deployed: reference frames go in as ``HOIFrame`` messages, the
robot state as the four state messages, the controller builds the observation with
``numpy_obs``. The training side is ``ObservationBuilder`` over a ``MotionLibrary`` of the same
clip and the ``SimState`` MuJoCo's kinematics gives for the same state (``ros.torch_state``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.contract import default_model_hash, expected_contract
from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.smplx_body import DOF_NAMES
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.numpy_obs import NumpyObservation, ObjectCloud
from intermimic_policy.observation.spec import ObservationSpecError, student_spec, teacher_spec
from intermimic_policy.ros import fast_cdr
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped, PoseWithCovariance, TwistWithCovariance
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, HOIFrame, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_config import PolicyNodeConfig
from intermimic_policy.ros.node_state import RobotInputs
from intermimic_policy.ros.policy_core import PolicyController
from intermimic_policy.ros.torch_state import HumanoidKinematics, build_sim_state
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.reference import MotionLibrary

CLIPS = ("OMOMO_new/sub2_largetable_000.pt", "OMOMO_new/sub2_largetable_001.pt")
NUM_POINTS = 256
DT_NS = round(1e9 / 30)


class ZeroPolicy:
    """A policy stand-in with a real contract (the observation is what is under test)."""

    def __init__(self, kind: str) -> None:
        spec = teacher_spec() if kind == "teacher" else student_spec()
        self.contract = expected_contract(kind, spec=spec, model_hash=default_model_hash())
        self.backend_name = "zeros"

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros((obs.shape[0], len(DOF_NAMES)), dtype=np.float32)


def _robot_messages(m: HOIMotion, k: int, stamp_ns: int, seed: int) -> tuple:
    """A measured state near the clip's frame k (noisy angles, root, rates, object, contacts)."""
    g = np.random.default_rng(seed)
    angles = joint_map.hinge_angles_from_rotvec(torch.from_numpy(m.joint_rotvec[k].astype(np.float64))).numpy()
    angles = angles + g.normal(0, 0.05, 153)
    root_rot = quat.normalize(torch.from_numpy(m.root_rot[k].astype(np.float64) + g.normal(0, 0.02, 4))).numpy()
    obj_rot = quat.normalize(torch.from_numpy(m.object_rot[k].astype(np.float64) + g.normal(0, 0.02, 4))).numpy()
    touch = g.random(52) > 0.5
    return (convert.joint_state_message(angles, g.normal(0, 0.5, 153), stamp_ns),
            convert.odometry_message(m.root_pos[k].astype(np.float64) + g.normal(0, 0.02, 3), root_rot,
                                     g.normal(0, 0.3, 3), g.normal(0, 0.3, 3), stamp_ns),
            convert.pose_stamped_message(m.object_pos[k].astype(np.float64) + g.normal(0, 0.02, 3), obj_rot,
                                         stamp_ns),
            convert.contact_state_message(touch, touch & (g.random(52) > 0.5), g.normal(0, 5.0, (52, 3)),
                                          stamp_ns))


def training_observation(ctl: PolicyController, library: MotionLibrary, builder: ObservationBuilder,
                         t: int) -> np.ndarray:
    """What training's builder makes of the controller's last inputs, with the references at frame t."""
    assert ctl.joints is not None and ctl.root is not None and ctl.object_pose is not None
    inputs = RobotInputs(ctl.joints, ctl.root, ctl.object_pose, ctl._object_velocity.lin_vel,
                         ctl._object_velocity.ang_vel, ctl.contacts)
    sim = build_sim_state(inputs, HumanoidKinematics())
    refs = [library.frames(torch.tensor([0]), torch.tensor([t + d])) for d in ctl.contract.ref_offsets]
    return builder.build(sim, refs, library.points_of(torch.tensor([0]))).numpy()  # type: ignore[no-any-return]


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_node_observation_equals_the_training_builder_on_omomo(motions_root: Path, kind: str, clip: str) -> None:
    motion = load_motion(motions_root / clip).slice(0, 60)
    points = load_object(motion.object_name, num_points=NUM_POINTS).points(NUM_POINTS)
    library = MotionLibrary([motion], {motion.object_name: points}, num_points=NUM_POINTS)
    policy = ZeroPolicy(kind)
    config = PolicyNodeConfig(soft_start_s=0.0, max_slew_rad=0.0, num_object_points=NUM_POINTS,
                              compiled_observation=False)  # the numpy path (compiled: test_compiled_obs)
    ctl = PolicyController(config, policy, {motion.object_name: ObjectCloud(points)})  # type: ignore[arg-type]
    frames = convert.MotionFrames(motion)
    for k in range(motion.num_frames):
        assert ctl.on_reference(frames.frame(k), 0.0)
    builder = ObservationBuilder(policy.contract.observation)
    worst = 0.0
    for t in range(0, 41, 4):  # t + 16 and its neighbour are inside the 60 streamed frames
        stamp = (t + 1) * DT_NS
        msgs = _robot_messages(motion, t, stamp, seed=t)
        for msg, on in zip(msgs, (ctl.on_joint_state, ctl.on_odometry, ctl.on_object_pose, ctl.on_contacts)):
            assert on(msg, 0.0)  # type: ignore[operator]
        ctl.buffer._move(t)  # the node's cursor at frame t (a tick advances it by one)
        result = ctl.tick(0.0, stamp)
        assert result.message is not None and result.mode == "running", result.reason
        expected = training_observation(ctl, library, builder, t)
        assert ctl.last_observation is not None
        err = np.abs(ctl.last_observation - expected)
        worst = max(worst, float(err.max()))
        np.testing.assert_allclose(ctl.last_observation, expected, atol=2e-5, rtol=0, err_msg=f"{clip} t={t}")
    assert worst > 0.0  # two implementations, not one: they agree to float rounding


def test_numpy_observation_refuses_a_spec_it_cannot_build() -> None:
    spec = teacher_spec()
    bad = type(spec)(terms=spec.terms[:-1] + (type(spec.terms[0])("mystery", 3, "sim"),), ref_offsets=(1,))
    with pytest.raises(ObservationSpecError, match="mystery"):
        NumpyObservation(bad)
    wrong = type(spec)(terms=(type(spec.terms[0])("root_height", 2, "sim"),), ref_offsets=(1,))
    with pytest.raises(ObservationSpecError, match="root_height: spec says 2"):
        NumpyObservation(wrong)


def _messages() -> list:
    g = np.random.default_rng(0)
    names = list(DOF_NAMES)
    frame = convert.MotionFrames(HOIMotion(
        fps=30.0, root_pos=np.zeros((2, 3), np.float32), root_rot=np.tile([0, 0, 0, 1.0], (2, 1)).astype(np.float32),
        joint_rotvec=g.normal(0, 0.1, (2, 51, 3)).astype(np.float32),
        body_pos=g.normal(0, 1, (2, 52, 3)).astype(np.float32),
        body_rot=np.tile([0, 0, 0, 1.0], (2, 52, 1)).astype(np.float32), object_pos=np.ones((2, 3), np.float32),
        object_rot=np.tile([0, 0, 0, 1.0], (2, 1)).astype(np.float32), object_name="box",
        body_contact=g.integers(-1, 2, (2, 52)).astype(np.int8), object_contact=np.array([True, False]),
        name="x")).frame(1, 123456789)
    return [
        convert.joint_state_message(g.normal(size=153), g.normal(size=153), 5_000_000_001),
        JointState(header=Header(frame_id="odd"), name=["a", "bb", "ccc"], position=[1.0, 2.0, 3.0]),
        PDTargets(header=Header(frame_id="x"), joint_names=names, position=g.normal(size=153).tolist(),
                  velocity=[0.0] * 153, kp=[100.0] * 153, kd=[10.0] * 153, effort=[]),
        convert.contact_state_message(g.random(52) > 0.5, g.random(52) > 0.5, g.normal(size=(52, 3)), 7),
        ContactState(),
        frame,
        convert.odometry_message(g.normal(size=3), np.array([0.1, -0.2, 0.3, 0.9]) / np.linalg.norm([0.1, -0.2, 0.3, 0.9]),
                                 g.normal(size=3), g.normal(size=3), 9_000_000_123),
        Odometry(header=Header(frame_id="map"), child_frame_id="",
                 pose=PoseWithCovariance(covariance=g.normal(size=36).tolist()),
                 twist=TwistWithCovariance(covariance=g.normal(size=36).tolist())),
        convert.pose_stamped_message(g.normal(size=3), np.array([0.0, 0.0, 0.6, 0.8]), 11),
        PoseStamped(),
    ]


def test_fast_codecs_write_cyclones_bytes_and_read_them_back() -> None:
    messages = _messages()
    fast_cdr.uninstall()
    try:
        reference = [m.serialize() for m in messages]
        decoded_reference = [type(m).deserialize(b) for m, b in zip(messages, reference)]
    finally:
        fast_cdr.install()
    for msg, data, expected in zip(messages, reference, decoded_reference):
        assert msg.serialize() == data, type(msg).__name__
        got = type(msg).deserialize(data)
        for name in vars(expected):
            a, b = getattr(got, name), getattr(expected, name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
            else:
                assert a == b, name
    # a truncated sample is an error, not a short message
    with pytest.raises(ValueError):
        JointState.deserialize(reference[0][:200])
    with pytest.raises(ValueError):
        HOIFrame.deserialize(reference[5][:-60])
    with pytest.raises(ValueError):
        Odometry.deserialize(reference[6][:-8])
    assert all(getattr(type(m), "_fast_cdr", False) for m in messages)  # every per-tick message is covered


def test_numpy_hinge_angles_equal_the_training_joint_map(motions_root: Path) -> None:
    """The node's Rodrigues route to hinge angles equals ``joint_map``'s quaternion route on a real
    clip's joints, on tiny angles (the small-angle series) and near pi (where the axis flips)."""
    from intermimic_policy.observation.numpy_obs import hinge_angles_from_rotvec

    clip = load_motion(motions_root / CLIPS[0]).joint_rotvec.astype(np.float64)  # [T, 51, 3]
    g = np.random.default_rng(3)
    axes = g.normal(size=(3, 51, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    tiny = axes[0] * 10.0 ** g.uniform(-12, -5, (51, 1))
    wide = axes[1] * g.uniform(0.5, 3.1, (51, 1))
    zero = np.zeros((51, 3))
    for rotvec in (*clip[::10], tiny, wide, zero):
        want = joint_map.hinge_angles_from_rotvec(torch.from_numpy(rotvec)).numpy()
        got = hinge_angles_from_rotvec(rotvec)
        assert got.shape == (153,)
        np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)
    batched = hinge_angles_from_rotvec(clip[:5])
    assert batched.shape == (5, 153)
    np.testing.assert_allclose(batched[3], hinge_angles_from_rotvec(clip[3]), atol=0, rtol=0)
