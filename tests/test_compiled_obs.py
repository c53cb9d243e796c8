"""The compiled tick path (observation.compiled_obs) equals the numpy path and training's builder.

The numpy path is the reference the training builder is checked against (test_numpy_obs); here
the compiled kernels are checked against both, on real OMOMO clips, through the node's own
controller (messages in, observation out) and term by term on the kinematics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_numpy_obs import DT_NS, NUM_POINTS, ZeroPolicy, _robot_messages, training_observation

from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation import compiled_obs
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.compiled_obs import CompiledKinematics, CompiledObservation
from intermimic_policy.observation.numpy_obs import Kinematics, NumpyObservation, ObjectCloud, WorldState
from intermimic_policy.observation.spec import ObservationSpecError, teacher_spec
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros.node_config import PolicyNodeConfig
from intermimic_policy.ros.policy_core import PolicyController
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.reference import MotionLibrary

CLIP = "OMOMO_new/sub2_largetable_001.pt"


def test_numba_is_there_where_the_node_is_installed() -> None:
    # the deploy and full installs depend on numba: without it the node silently runs slower
    assert compiled_obs.available()


def _controller(compiled: bool, points: np.ndarray, name: str, kind: str) -> PolicyController:
    config = PolicyNodeConfig(soft_start_s=0.0, max_slew_rad=0.0, num_object_points=NUM_POINTS,
                              compiled_observation=compiled)
    return PolicyController(config, ZeroPolicy(kind), {name: ObjectCloud(points)})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_compiled_node_observation_equals_numpy_and_training_on_omomo(motions_root: Path, kind: str) -> None:
    motion = load_motion(motions_root / CLIP).slice(0, 60)
    points = load_object(motion.object_name, num_points=NUM_POINTS).points(NUM_POINTS)
    fast, slow = (_controller(c, points, motion.object_name, kind) for c in (True, False))
    assert isinstance(fast.obs, CompiledObservation) and isinstance(fast.kinematics, CompiledKinematics)
    assert type(slow.obs) is NumpyObservation and type(slow.kinematics) is Kinematics
    library = MotionLibrary([motion], {motion.object_name: points}, num_points=NUM_POINTS)
    builder = ObservationBuilder(fast.contract.observation)
    frames = convert.MotionFrames(motion)
    for ctl in (fast, slow):
        for k in range(motion.num_frames):
            assert ctl.on_reference(frames.frame(k), 0.0)
    for t in range(0, 41, 5):
        stamp = (t + 1) * DT_NS
        msgs = _robot_messages(motion, t, stamp, seed=100 + t)
        for ctl in (fast, slow):
            for msg, on in zip(msgs, (ctl.on_joint_state, ctl.on_odometry, ctl.on_object_pose, ctl.on_contacts)):
                assert on(msg, 0.0)  # type: ignore[operator]
            ctl.buffer._move(t)
            result = ctl.tick(0.0, stamp)
            assert result.message is not None and result.mode == "running", result.reason
        assert fast.last_observation is not None and slow.last_observation is not None
        # the same arithmetic in another order: equal to float64 rounding, not just float32's
        np.testing.assert_allclose(fast.last_observation, slow.last_observation, atol=1e-9, rtol=0,
                                   err_msg=f"t={t}")
        expected = training_observation(fast, library, builder, t)
        np.testing.assert_allclose(fast.last_observation, expected, atol=2e-5, rtol=0, err_msg=f"training t={t}")


def test_compiled_kinematics_equals_numpy_on_random_states() -> None:
    offsets = default_skeleton().offsets
    fast, slow = CompiledKinematics(offsets), Kinematics(offsets)
    g = np.random.default_rng(0)
    a, b = WorldState.empty(), WorldState.empty()
    for _ in range(20):
        q = g.normal(size=4)
        args = (g.normal(size=3), q / np.linalg.norm(q), g.normal(size=3), g.normal(size=3),
                g.uniform(-np.pi, np.pi, 153), g.normal(0, 3, 153))
        fast.compute(a, *args)
        slow.compute(b, *args)
        for name in ("body_pos", "body_mat", "body_lin_vel", "body_ang_vel"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-12, rtol=0, err_msg=name)
        assert np.abs(a.body_lin_vel[1:]).max() > 0  # not vacuous: the bodies move


def test_compiled_observation_falls_back_to_numpy_for_the_checked_forms() -> None:
    # a wrong number of reference frames gets numpy_obs's own error, not an out-of-bounds write
    obs = CompiledObservation(teacher_spec())
    cloud = ObjectCloud(np.random.default_rng(1).normal(size=(NUM_POINTS, 3)))
    with pytest.raises(ObservationSpecError, match="reference frames"):
        obs.build(WorldState.empty(), [], cloud)


def test_compiled_targets_equal_the_numpy_path() -> None:
    spec_contract = ZeroPolicy("teacher").contract
    points = np.random.default_rng(2).normal(size=(NUM_POINTS, 3))
    fast, slow = (_controller(c, points, "box", "teacher") for c in (True, False))
    assert fast._compiled_targets is not None and slow._compiled_targets is None
    g = np.random.default_rng(3)
    clip = spec_contract.action_clip
    for scale in (0.1, 1.0, 3.0 * clip):  # inside and beyond the clip
        actions = (g.normal(size=(1, 153)) * scale).astype(np.float32)
        # joint 0 at a zero rotation (Rodrigues' small-angle branch)
        actions[0, :3] = -fast._offset[:3] / fast._scale[:3]
        a, b = fast.targets_from_actions(actions), slow.targets_from_actions(actions)
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)
    with pytest.raises(Exception, match="shape"):
        fast.targets_from_actions(np.zeros((1, 152), np.float32))
