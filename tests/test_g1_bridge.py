"""The simulation bridge runs the G1: JointState with the G1's joint names, PDTargets for its joints
(any order), ContactState over its bodies; SMPL-X targets and clips are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intermimic_policy.embodiment.description import embodiment_for
from intermimic_policy.motion.robot_motion import load_robot_motion
from intermimic_policy.ros import node_params
from intermimic_policy.ros.messages_convert import load_clip, parse_pd_targets, pd_targets_order
from intermimic_policy.ros.msgs import time_from_ns
from intermimic_policy.ros.msgs.intermimic_msgs import PDTargets
from intermimic_policy.ros.msgs.std_msgs import Header
from intermimic_policy.ros.node_state import MessageRejected
from intermimic_policy.ros.sim_bridge import BridgeCore, SimBridgeConfig
from tests.g1_clip import retargeted_g1_clip


@pytest.fixture(scope="module")
def g1_clip(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return retargeted_g1_clip(motions_root, tmp_path_factory.mktemp("g1"))


@pytest.fixture(scope="module")
def core(g1_clip: Path):  # type: ignore[no-untyped-def]
    c = BridgeCore(load_clip(str(g1_clip)), SimBridgeConfig(clip=str(g1_clip), robot="g1").validate())
    yield c
    c.close()


def test_g1_bridge_publishes_the_g1_joint_state(core: BridgeCore, g1_clip: Path) -> None:
    emb = embodiment_for("g1")
    msgs = core.state_messages()
    assert msgs.joint_state.name == list(emb.dof_names) and len(msgs.joint_state.position) == 43
    assert msgs.contacts.body_names == list(emb.body_names)
    motion = load_robot_motion(g1_clip)
    q0 = np.clip(motion.joint_pos[0], emb.lower, emb.upper)
    assert np.allclose(msgs.joint_state.position, q0, atol=1e-5)  # reset to the clip's first frame
    assert np.allclose(core.model_kp, emb.kp)
    e_h, e_o = core.errors()
    assert e_h < 1e-3 and e_o < 1e-2


def test_g1_bridge_steps_on_pd_targets_for_its_joints(core: BridgeCore, g1_clip: Path) -> None:
    emb = embodiment_for("g1")
    motion = load_robot_motion(g1_clip)
    order = pd_targets_order(emb.dof_names)
    perm = np.random.default_rng(0).permutation(43)  # any joint order is accepted
    for tick in range(1, 11):
        q = np.clip(motion.joint_pos[tick], emb.lower, emb.upper)
        msg = PDTargets(header=Header(stamp=time_from_ns(core.stamp_ns(tick))),
                        joint_names=[emb.dof_names[i] for i in perm], position=q[perm].tolist())
        sample = parse_pd_targets(msg, order)
        assert np.allclose(sample.position, q)
        core.step(sample.position)
    assert core.tick == 10 and core.physics_failures == 0
    m = core.metrics()
    assert np.isfinite(m["E_h_cm"]) and m["E_h_cm"] < 20.0  # PD replay over 10 ticks stays near the clip
    js = core.state_messages().joint_state
    assert np.allclose(js.position, core.angles) and not np.allclose(js.position, np.clip(
        motion.joint_pos[0], emb.lower, emb.upper))
    # the SMPL-X humanoid's targets are refused, naming the problem
    with pytest.raises(MessageRejected, match="153 names, expected 43"):
        from intermimic_policy.embodiment.smplx_body import DOF_NAMES

        parse_pd_targets(PDTargets(joint_names=list(DOF_NAMES), position=[0.0] * 153), order)


def test_g1_bridge_records_a_robot_motion(g1_clip: Path, tmp_path: Path) -> None:
    emb = embodiment_for("g1")
    motion = load_robot_motion(g1_clip)
    core = BridgeCore(motion, SimBridgeConfig(clip=str(g1_clip), robot="g1", record=str(tmp_path / "g1_run.npz")))
    try:
        for tick in range(1, 6):
            core.step(np.clip(motion.joint_pos[tick], emb.lower, emb.upper))
        out = core.write_record(tmp_path / "g1_run.npz")
    finally:
        core.close()
    rec = load_robot_motion(out)  # the recording is a robot motion: replay and the env read it
    assert rec.robot == "g1" and rec.joint_names == emb.dof_names and rec.num_frames == 6
    assert np.allclose(rec.joint_pos[0], np.clip(motion.joint_pos[0], emb.lower, emb.upper), atol=1e-5)
    assert rec.hand_names == motion.hand_names and set(np.unique(rec.hand_contact)) <= {-1, 1}
    with np.load(out) as z:
        assert z["E_h"].shape == (6,) and z["E_h"][0] < 1e-3 and z["reference_frame"].tolist() == list(range(6))


def test_bridge_refuses_a_clip_of_another_body(g1_clip: Path, motions_root: Path) -> None:
    smplx = str(motions_root / "OMOMO_new" / "sub2_largetable_000.pt")
    with pytest.raises(node_params.ParamError, match="SMPL-X clip"):
        BridgeCore(load_clip(smplx), SimBridgeConfig(clip=smplx, robot="g1"))
    with pytest.raises(node_params.ParamError, match="robot motion"):
        BridgeCore(load_clip(str(g1_clip)), SimBridgeConfig(clip=str(g1_clip)))
