"""The simulation bridge: training's physics behind ROS messages.

In process with real MuJoCo (``HOIEnv``) and real Cyclone DDS on loopback (a test node plays the
policy node; topics carry a unique prefix per test). The full three-process loop is in
``test_closed_loop.py``.
"""

from __future__ import annotations

import json
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

from intermimic_policy.contract import default_model_hash, expected_contract
from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, DOF_NAMES
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.spec import teacher_spec
from intermimic_policy.ros import msgs
from intermimic_policy.ros.messages_convert import MotionFrames
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_config import PolicyNodeConfig
from intermimic_policy.ros.node_params import ParamError
from intermimic_policy.ros.policy_node import PolicyController
from intermimic_policy.ros.sim_bridge import (
    BridgeCore,
    BridgeTopics,
    SimBridgeConfig,
    SimBridgeNode,
    load_bridge_config,
)
from intermimic_policy.ros.sim_bridge import main as bridge_main
from intermimic_policy.ros.transport import Node, make_node

DOMAIN = 220 + os.getpid() % 12  # the transport tests use 100..219, the closed loop 1..80
STAMP0 = 1_000_000_000  # clock_start_s = 1.0
DT_NS = 33_333_333  # round(1e9 / 30)


@pytest.fixture(scope="module")
def motion() -> HOIMotion:
    return make_example_motion().slice(0, 40)


@pytest.fixture(scope="module")
def core(motion: HOIMotion) -> Iterator[BridgeCore]:
    c = BridgeCore(motion, SimBridgeConfig(clip="in-memory", record="kept.npz"))  # keeps the trajectory
    yield c
    c.close()


def _topics() -> BridgeTopics:
    p = f"/t{uuid.uuid4().hex[:10]}"
    return BridgeTopics(pd_targets=f"{p}/pd_targets", joint_states=f"{p}/joint_states", odom=f"{p}/odom",
                        object_pose=f"{p}/object_pose", contacts=f"{p}/contacts", clock=f"{p}/clock",
                        bridge_status=f"{p}/status")


def _reference_angles(motion: HOIMotion, frame: int) -> np.ndarray:
    return joint_map.hinge_angles_from_rotvec(torch.from_numpy(motion.joint_rotvec[frame]).double()).numpy()


# -- the simulation side, no transport ------------------------------------------------------------
class _FakePolicy:
    """A policy with the real teacher contract whose actions are all zero (the observation is
    what is tested here)."""

    backend_name = "fake"

    def __init__(self) -> None:
        self.contract = expected_contract("teacher", spec=teacher_spec(), model_hash=default_model_hash())

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros((obs.shape[0], len(DOF_NAMES)), dtype=np.float32)


def test_policy_node_rebuilds_the_environment_observation_from_bridge_messages(
        core: BridgeCore, motion: HOIMotion) -> None:
    """State messages -> the policy node's parsing -> the same observation as HOIEnv's."""
    core.reset()
    controller = PolicyController(PolicyNodeConfig(soft_start_s=0.0, max_slew_rad=0.0), _FakePolicy())
    frames = MotionFrames(motion)
    spec = core.env.obs_spec
    block = spec.dim // len(spec.ref_offsets)
    slices = spec.term_slices()
    velocity_terms = {n for n in slices if n.startswith("object_") and "vel" in n}
    for tick in range(6):
        now = time.monotonic()
        for i in range(tick, min(motion.num_frames, tick + 20)):
            controller.on_reference(frames.frame(i), now)
        m = core.state_messages()
        assert controller.on_odometry(m.odom, now) and controller.on_object_pose(m.object_pose, now)
        assert controller.on_contacts(m.contacts, now) and controller.on_joint_state(m.joint_state, now)
        core.env.t[:] = core.frame_of_tick(core.tick)
        expected = core.env.compute_observation().numpy()[0]
        got = controller.observation()[0]
        for name, sl in slices.items():
            err = max(np.abs(got[t * block + sl.start:t * block + sl.stop]
                             - expected[t * block + sl.start:t * block + sl.stop]).max()
                      for t in range(len(spec.ref_offsets)))
            # the node differences object poses over a tick for the object velocity (the sim knows
            # it exactly): they differ by what the velocity changes within 1/30 s (the box settles)
            assert err < (5e-2 if name in velocity_terms else 1e-4), (tick, name, err)
        result = controller.tick(time.monotonic(), msgs.ns_from_time(m.joint_state.header.stamp), matched=True)
        assert result.message is not None and result.mode == "running"
        core.step(np.asarray(result.message.position))


def test_pd_replay_tracks_the_clip_and_the_record_is_a_clip(core: BridgeCore, motion: HOIMotion,
                                                            tmp_path: Path) -> None:
    core.reset()
    assert core.tick == 0 and len(core.recording) == 1
    assert core.recording.e_h[0] < 1e-3  # reset onto the reference: the key bodies coincide
    np.testing.assert_allclose(core.angles, _reference_angles(motion, 0), atol=1e-5)
    for k in range(1, 11):
        core.step(_reference_angles(motion, k))  # targets: the reference of the tick being entered
    assert core.tick == 10 and core.frame_of_tick(core.tick) == 10
    metrics = core.metrics()
    assert 0.0 < metrics["E_h_cm"] < 5.0 and metrics["E_o_cm"] < 5.0
    assert core.stamp_ns() == STAMP0 + 10 * DT_NS + 3  # round(10 / 30 s), exact ns
    path = core.write_record(tmp_path / "rec.npz")
    clip = load_motion(path)
    assert clip.num_frames == 11 and clip.object_name == motion.object_name
    np.testing.assert_allclose(clip.body_pos[-1], core.sim.body_pos[0].numpy(), atol=1e-6)
    data = np.load(path)
    np.testing.assert_allclose(data["E_h"], core.recording.e_h)
    assert data["reference_frame"].tolist() == list(range(11))
    assert not data["fresh_targets"][0] and data["fresh_targets"][1:].all()


# -- the node over DDS -----------------------------------------------------------------------------
class Peer:
    """The test's stand-in for the policy node: receives the state, sends targets."""

    def __init__(self, topics: BridgeTopics) -> None:
        self.node: Node = make_node(f"peer_{uuid.uuid4().hex[:8]}", backend="cyclone", domain_id=DOMAIN)
        self.got: dict[str, list[Any]] = {k: [] for k in ("joints", "odom", "object", "contacts", "clock")}
        for key, topic, cls in (("joints", topics.joint_states, JointState), ("odom", topics.odom, Odometry),
                                ("object", topics.object_pose, PoseStamped),
                                ("contacts", topics.contacts, ContactState), ("clock", topics.clock, Clock)):
            self.node.create_subscription(topic, cls, self.got[key].append)
        self.targets = self.node.create_publisher(topics.pd_targets, PDTargets)

    def last_stamp(self) -> int:
        return msgs.ns_from_time(self.got["joints"][-1].header.stamp)


def _drive(bridge: SimBridgeNode, peer: Peer, until: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        bridge.poll(0.01)
        peer.node.spin_once(0.01)
    return until()


def _targets(stamp_ns: int, position: np.ndarray, names: list[str] | None = None, **kw: Any) -> PDTargets:
    return PDTargets(header=Header(stamp=msgs.time_from_ns(stamp_ns)), joint_names=names or list(DOF_NAMES),
                     position=[float(x) for x in position], **kw)


class NotUtf8(PDTargets):
    """A peer putting non-UTF-8 bytes in a string: valid CDR that Python cannot decode."""

    def serialize(self, *args: Any, **kwargs: Any) -> bytes:
        return PDTargets.serialize(self, *args, **kwargs).replace(b"abcd\x00", b"\xff\xfe\xfd\xfc\x00")


@pytest.fixture
def lockstep(motion: HOIMotion, tmp_path: Path) -> Iterator[tuple[SimBridgeNode, Peer]]:
    topics = _topics()
    config = SimBridgeConfig(clip="in-memory", lockstep=True, domain_id=DOMAIN, transport="cyclone",
                             topics=topics, record=str(tmp_path / "rec.npz"), summary=str(tmp_path / "sum.json"))
    bridge = SimBridgeNode(config, motion)
    peer = Peer(topics)
    try:
        yield bridge, peer
    finally:
        peer.node.destroy()
        bridge.destroy()


def test_lockstep_publishes_the_reset_state_and_waits_for_matching_targets(
        lockstep: tuple[SimBridgeNode, Peer], motion: HOIMotion) -> None:
    bridge, peer = lockstep
    assert _drive(bridge, peer, lambda: all(peer.got[k] for k in peer.got)), "no state from the bridge"
    js, odom, obj, contacts = (peer.got[k][-1] for k in ("joints", "odom", "object", "contacts"))
    assert all(msgs.ns_from_time(m.header.stamp) == STAMP0 for m in (js, odom, obj, contacts))
    assert msgs.ns_from_time(peer.got["clock"][-1].clock) == STAMP0
    assert list(js.name) == list(DOF_NAMES) and list(contacts.body_names) == list(BODY_NAMES)
    np.testing.assert_allclose(js.position, _reference_angles(motion, 0), atol=1e-5)
    p = odom.pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], motion.root_pos[0], atol=1e-5)
    q = obj.pose.position
    np.testing.assert_allclose([q.x, q.y, q.z], motion.object_pos[0], atol=1e-5)
    assert odom.child_frame_id == "pelvis" and odom.header.frame_id == "world"

    # no targets: sim time stands still while the tick's state is re-sent
    sent = bridge.counters.state_publishes
    _drive(bridge, peer, lambda: False, timeout=0.6)
    assert bridge.core.tick == 0 and bridge.counters.state_publishes > sent
    assert {peer.last_stamp()} == {STAMP0}

    hold = np.asarray(js.position)
    peer.targets.publish(_targets(STAMP0 + DT_NS, hold))  # a stamp that is not the current tick's
    assert _drive(bridge, peer, lambda: bridge.counters.unmatched_targets == 1)
    assert bridge.core.tick == 0
    peer.targets.publish(_targets(STAMP0, hold, kp=[1.0] * len(DOF_NAMES)))
    assert _drive(bridge, peer, lambda: peer.last_stamp() == STAMP0 + DT_NS)
    assert bridge.core.tick == 1 and bridge.counters.ticks == 1 and bridge.counters.missed_ticks == 0
    assert bridge.counters.gain_overrides_ignored == 1  # its own gains, as in training
    assert bridge.core.recording.e_h[-1] < 0.02  # holding the reset pose for 1/30 s


def test_bad_targets_are_counted_rejected_and_survived(lockstep: tuple[SimBridgeNode, Peer]) -> None:
    bridge, peer = lockstep
    assert _drive(bridge, peer, lambda: bool(peer.got["joints"]) and peer.targets.subscription_count() == 1)
    hold = np.asarray(peer.got["joints"][-1].position)
    bad = [
        _targets(STAMP0, hold[:10], names=list(DOF_NAMES[:10])),  # wrong size
        _targets(STAMP0, np.full(len(DOF_NAMES), np.nan)),  # NaN
        _targets(STAMP0, hold, names=["nope"] + list(DOF_NAMES[1:])),  # unknown joint
        _targets(STAMP0, hold, kd=[-1.0] * len(DOF_NAMES)),  # negative gain
        _targets(STAMP0, hold, velocity=[0.0] * 3),  # wrong-sized optional part
    ]
    for msg in bad:
        peer.targets.publish(msg)
    peer.targets.publish(NotUtf8(joint_names=["abcd"], position=[0.0]))
    assert _drive(bridge, peer, lambda: bridge.counters.rejected_targets == len(bad)
                  and bridge.sub_targets.malformed == 1), bridge.status_values()
    assert bridge.core.tick == 0 and bridge.counters.targets_received == 0
    status = bridge.status_values()
    assert status["rejected_targets"] == str(len(bad)) and status[f"malformed.{bridge.sub_targets.topic}"] == "1"
    # still alive: good targets step it
    peer.targets.publish(_targets(STAMP0, hold))
    assert _drive(bridge, peer, lambda: bridge.core.tick == 1)


def test_duration_ends_the_run_and_writes_record_and_summary(lockstep: tuple[SimBridgeNode, Peer],
                                                             tmp_path: Path) -> None:
    bridge, peer = lockstep
    bridge.max_ticks = 3
    for k in range(3):
        stamp = bridge.core.stamp_ns(k)
        assert _drive(bridge, peer, lambda: bool(peer.got["joints"]) and peer.last_stamp() == stamp)  # noqa: B023
        peer.targets.publish(_targets(stamp, np.asarray(peer.got["joints"][-1].position)))
        assert _drive(bridge, peer, lambda: bridge.core.tick == k + 1)  # noqa: B023
    assert bridge.done and bridge.finished and not bridge.poll(0.0)  # exit_when_done
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["ticks"] == 3 and summary["missed_ticks"] == 0 and len(summary["E_h_cm_per_tick"]) == 3
    assert load_motion(tmp_path / "rec.npz").num_frames == 4


def test_real_time_steps_on_the_wall_clock_and_counts_missed_ticks(motion: HOIMotion) -> None:
    topics = _topics()
    now = [100.0]
    config = SimBridgeConfig(clip="in-memory", lockstep=False, domain_id=DOMAIN, transport="cyclone", topics=topics,
                             duration_s=4 / 30, exit_when_done=False)
    bridge = SimBridgeNode(config, motion, clock=lambda: now[0])
    peer = Peer(topics)
    try:
        assert _drive(bridge, peer, lambda: bool(peer.got["joints"]) and peer.targets.subscription_count() == 1)
        now[0] += 1.0
        _drive(bridge, peer, lambda: False, timeout=0.2)
        assert bridge.core.tick == 0 and not bridge.started  # holds the initial pose until targets come
        hold = np.asarray(peer.got["joints"][-1].position)
        peer.targets.publish(_targets(0, hold))  # real time: any stamp is taken as the newest
        assert _drive(bridge, peer, lambda: bridge.core.tick == 1)
        assert bridge.counters.missed_ticks == 0
        bridge.poll(0.0)
        assert bridge.core.tick == 1  # the next tick is not due yet on the (frozen) clock
        now[0] += 1 / 30
        bridge.poll(0.0)
        assert bridge.core.tick == 2 and bridge.counters.missed_ticks == 1  # no fresh targets
        peer.targets.publish(_targets(0, hold))
        assert _drive(bridge, peer, lambda: bridge._fresh)
        now[0] += 1 / 30
        bridge.poll(0.0)
        assert bridge.core.tick == 3 and bridge.counters.missed_ticks == 1
        now[0] += 5.0  # far behind: one tick, not a burst of catch-up ticks
        bridge.poll(0.0)
        assert bridge.core.tick == 4 and bridge.done
        published = bridge.counters.state_publishes
        now[0] += 1.0
        assert bridge.poll(0.0) and bridge.core.tick == 4  # done, lingering: holds its last state
        assert bridge.counters.state_publishes > published
    finally:
        peer.node.destroy()
        bridge.destroy()


# -- configuration ---------------------------------------------------------------------------------
def test_config_errors_name_the_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("common: {example: true}\nsim_bridge: {physics_hz: 240, substeps: 8}\n")
    with pytest.raises(ParamError, match=r"bad\.yaml: sim_bridge\.substeps: unknown key\(s\)"):
        load_bridge_config(str(bad))
    bad.write_text("common: {example: true, clip: a.pt}\n")
    with pytest.raises(ParamError, match="exactly one clip"):
        load_bridge_config(str(bad))
    bad.write_text("common: {example: true}\nsim_bridge: {republish_s: -1}\n")
    with pytest.raises(ParamError, match="republish_s must be a positive number"):
        load_bridge_config(str(bad))
    ok = tmp_path / "ok.yaml"
    ok.write_text("common: {example: true, lockstep: true, topics: {pd_targets: /x/pd, status: /ignored}}\n"
                  "sim_bridge: {topics: {clock: /x/clock}}\n")
    config = load_bridge_config(str(ok), duration_s=2.0)
    assert config.lockstep and config.duration_s == 2.0
    assert config.topics.pd_targets == "/x/pd" and config.topics.clock == "/x/clock"
    assert config.topics.bridge_status == "/intermimic/sim_bridge/status"  # the policy node's status is not ours
    # the command line reports a bad file as one line, exit status 2
    assert bridge_main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sim_bridge: error:") and "republish_s" in err and len(err.strip().splitlines()) == 1


def test_start_offset_past_the_clip_is_refused(motion: HOIMotion) -> None:
    with pytest.raises(ParamError, match="start_offset 40 is past the clip's last frame 39"):
        BridgeCore(motion, replace(SimBridgeConfig(clip="x"), start_offset=40))


def test_a_bridge_at_another_physics_rate_refuses_the_policy(motion: HOIMotion, tmp_path: Path) -> None:
    """The bridge checks the policy's declared rates against its OWN configuration."""
    from training.export import export_random

    policy = tmp_path / "teacher.onnx"
    export_random("teacher", policy, seed=1)  # trained (declared) at 30 Hz control, 240 Hz physics
    with pytest.raises(ParamError, match=r"physics_hz: the policy declares 240 Hz, this bridge runs 120 Hz"):
        BridgeCore(motion, SimBridgeConfig(clip="in-memory", physics_hz=120.0, policy=str(policy)))
    ok = BridgeCore(motion, SimBridgeConfig(clip="in-memory", physics_hz=240.0, policy=str(policy)))
    ok.close()


def test_an_open_ended_run_keeps_no_per_tick_state_copies(motion: HOIMotion) -> None:
    """Soak finding: the bridge grew ~400 MB/h keeping a state copy per tick nobody asked for."""
    # nor a bounded one (duration_s, as the soak runs): its summary needs only running extremes
    for config in (SimBridgeConfig(clip="in-memory"), SimBridgeConfig(clip="in-memory", duration_s=60.0)):
        c = BridgeCore(motion, config)
        try:
            for _ in range(5):
                c.step(None)
            assert len(c.recording) == 6 and c.recording.states == []
            assert c.recording.e_h.itemsize == 8  # compact per-tick series, not Python floats
            z = float(c.sim.object_pos[0, 2])
            assert c.recording.object_z_max >= z and c.recording.root_z_min <= float(c.sim.body_pos[0, 0, 2])
        finally:
            c.close()
