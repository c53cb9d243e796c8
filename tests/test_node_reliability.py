"""Issue 14's findings on the nodes, one test each (each failed before its fix):

* an object name from the wire is never opened: unknown names are counted and the node holds;
* windows, the frame buffer and the generator store are capped by configuration;
* stale, out-of-order and duplicate stamps are rejected/ignored; a clock restart is reported;
* topic prefixes keep two runs apart;
* the bridge holds the measured pose when its targets go stale, reports it, resumes when a
  restarted policy node sends again, and stops within 1 s of SIGINT with the policy node gone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from intermimic_policy.contract import default_model_hash, expected_contract
from intermimic_policy.embodiment.smplx_body import DOF_NAMES
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.observation.numpy_obs import ObjectCloud
from intermimic_policy.observation.spec import teacher_spec
from intermimic_policy.ros import messages_convert as convert
from intermimic_policy.ros import reference_buffer
from intermimic_policy.ros.launcher import NODES, start_process, stop_processes
from intermimic_policy.ros.motion_streamer import GeneratorSource
from intermimic_policy.ros.msgs.intermimic_msgs import HOIWindow
from intermimic_policy.ros.node_config import PolicyNodeConfig, load_node_config
from intermimic_policy.ros.node_params import ParamError
from intermimic_policy.ros.node_state import MessageRejected, StampGuard
from intermimic_policy.ros.policy_core import PolicyController
from intermimic_policy.ros.topics import Topics

REPO = Path(__file__).resolve().parents[1]
DT_NS = round(1e9 / 30)


class ZeroPolicy:
    def __init__(self) -> None:
        self.contract = expected_contract("teacher", spec=teacher_spec(), model_hash=default_model_hash())
        self.backend_name = "zeros"

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros((obs.shape[0], len(DOF_NAMES)), dtype=np.float32)


@pytest.fixture(scope="module")
def motion():  # type: ignore[no-untyped-def]
    return make_example_motion()


def _controller(**kw: object) -> PolicyController:
    g = np.random.default_rng(0)
    config = replace(PolicyNodeConfig(soft_start_s=0.0, max_slew_rad=0.0, num_object_points=64), **kw)  # type: ignore[arg-type]
    return PolicyController(config.validate(), ZeroPolicy(), {"box": ObjectCloud(g.normal(size=(64, 3)))})  # type: ignore[arg-type]


def _state(ctl: PolicyController, motion, k: int, stamp_ns: int) -> list[bool]:  # type: ignore[no-untyped-def]
    angles = np.zeros(153)
    msgs = (convert.joint_state_message(angles, np.zeros(153), stamp_ns),
            convert.odometry_message(motion.root_pos[k], motion.root_rot[k], np.zeros(3), np.zeros(3), stamp_ns),
            convert.pose_stamped_message(motion.object_pos[k], motion.object_rot[k], stamp_ns),
            convert.contact_state_message(np.zeros(52, bool), np.zeros(52, bool), np.zeros((52, 3)), stamp_ns))
    return [on(m, 0.0) for m, on in zip(msgs, (ctl.on_joint_state, ctl.on_odometry, ctl.on_object_pose,
                                               ctl.on_contacts))]  # type: ignore[operator]


def test_an_object_name_is_never_a_path_and_an_unknown_one_holds(motion, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import intermimic_policy.sim.objects as objects

    def no_loading(*args: object, **kw: object) -> None:
        raise AssertionError("an object was loaded from a name received on the wire")

    monkeypatch.setattr(objects, "load_object", no_loading)
    ctl = _controller()
    frames = convert.MotionFrames(motion)
    for k in range(25):
        assert ctl.on_reference(frames.frame(k), 0.0)
    assert _state(ctl, motion, 0, DT_NS) == [True] * 4
    assert ctl.tick(0.0, DT_NS).mode == "running"
    mesh = tmp_path / "evil.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    before = set(tmp_path.iterdir())
    evil = frames.frame(25)
    evil.object_name = str(mesh)
    assert not ctl.on_reference(evil, 0.0)
    assert ctl.counters.unknown_objects == 1 and ctl.counters.rejected["reference"] == 1
    assert set(tmp_path.iterdir()) == before  # nothing probed, decomposed or cached
    _state(ctl, motion, 1, 2 * DT_NS)
    result = ctl.tick(0.0, 2 * DT_NS)
    assert result.mode == "safe_hold" and "not in the object table" in result.reason and result.message is not None
    assert ctl.on_reference(frames.frame(26), 0.0)  # a known object again: the fault clears
    assert "reference" not in ctl.faults


def test_windows_buffers_and_generator_stores_are_capped(motion, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    frames = convert.MotionFrames(motion)
    big = HOIWindow(start_frame=0, frames=[frames.frame(0)] * 10_000)
    parsed = []
    real = reference_buffer.parse_hoi_frame
    monkeypatch.setattr(reference_buffer, "parse_hoi_frame", lambda *a, **k: parsed.append(1) or real(*a, **k))
    with pytest.raises(MessageRejected, match="10000 frames, more than the cap of 128"):
        reference_buffer.parse_hoi_window(big, 30.0)
    assert parsed == []  # refused before any frame was parsed
    ctl = _controller(max_window_frames=64, max_buffered_frames=40)
    assert not ctl.on_window(HOIWindow(start_frame=0, frames=[frames.frame(k) for k in range(65)]), 0.0)
    for k in range(100):
        ctl.on_reference(frames.frame(k), 0.0)
    assert len(ctl.buffer._frames) <= 42 and ctl.buffer.dropped_frames == 100 - 41
    store = GeneratorSource(max_stored_frames=20, max_window_frames=30)
    store.add(convert.hoi_window([frames.frame(k) for k in range(30)]))
    assert len(store.store) == 20 and store.dropped_frames == 10
    with pytest.raises(ParamError, match="max_buffered_frames"):
        PolicyNodeConfig(max_buffered_frames=10**9).validate()


def test_old_duplicate_and_restarted_stamps(motion) -> None:  # type: ignore[no-untyped-def]
    ctl = _controller()
    base = 100 * 10**9
    assert _state(ctl, motion, 0, base + 10 * DT_NS) == [True] * 4
    newest = ctl.joints
    assert _state(ctl, motion, 0, base + 10 * DT_NS) == [False] * 4  # the same stamp again: ignored
    assert ctl.counters.duplicates == 4
    assert _state(ctl, motion, 0, base + 9 * DT_NS) == [False] * 4  # older: rejected, never replaces the newer
    assert ctl.counters.out_of_order == 4 and ctl.joints is newest and ctl.counters.rejected["joint_states"] == 1
    assert _state(ctl, motion, 0, base + 11 * DT_NS) == [True] * 4
    # a clock that restarts (a restarted simulator or robot) is reported and followed
    assert ctl.on_joint_state(convert.joint_state_message(np.zeros(153), np.zeros(153), 5), 0.0)
    assert ctl.counters.clock_jumps == 1 and ctl.joints is not None and ctl.joints.stamp_ns == 5
    guard = StampGuard(["a"], stale_s=1.0, jump_s=10.0)  # a small step back, three times: a restart
    assert [guard.check("a", s) for s in (100, 200, 150, 160, 170, 180)] == \
        ["ok", "ok", "out_of_order", "out_of_order", "jump", "ok"]
    guard = StampGuard(["a", "b"], stale_s=1.0, jump_s=10.0)
    assert guard.check("a", 5 * 10**9) == "ok" and guard.check("b", 3 * 10**9) == "stale"


def test_topic_prefix_separates_runs(tmp_path: Path) -> None:
    t = Topics().prefixed("/run1")
    assert t.pd_targets == "/run1/intermimic/pd_targets" and t.clock == "/run1/clock"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("common:\n  topic_prefix: /run2\n")
    assert load_node_config(cfg).topic_prefix == "/run2"
    cfg.write_text("common:\n  topic_prefix: 'bad prefix'\n")
    with pytest.raises(ParamError, match="topic_prefix"):
        load_node_config(cfg)


def test_bridge_holds_on_stale_targets_survives_a_policy_restart_and_stops_on_sigint(motion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from intermimic_policy.motion.io import save_motion
    from training.export import export_random

    clip = tmp_path / "clip.npz"
    save_motion(motion, clip)
    policy = tmp_path / "teacher.onnx"
    export_random("teacher", policy, seed=3)
    summary = tmp_path / "summary.json"
    doc = yaml.safe_load((REPO / "config" / "sim_hoi.yaml").read_text())
    doc["common"].update(domain_id=1 + (os.getpid() % 20) * 4 + 2, transport="cyclone", lockstep=False,
                         example=False, clip=str(clip), policy=str(policy), topic_prefix=f"/rel{os.getpid()}", loop=True)
    doc["sim_bridge"].update(summary=str(summary), targets_timeout_s=0.25)
    config = tmp_path / "sim_hoi.yaml"
    config.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(name: str, n: int = 0):  # type: ignore[no-untyped-def]
        spec = next(s for s in NODES if s.name == name)
        return start_process(name, [sys.executable, "-m", spec.module, "--config", str(config)],
                             tmp_path / f"{name}_{n}.log", env)

    procs = [start("motion_streamer"), start("sim_bridge"), start("policy_node")]
    bridge = procs[1]

    def wait_log(proc, text: str, timeout: float, times: int = 1) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.log_path.read_text().count(text) >= times:
                return
            assert proc.popen.poll() is None, proc.log_tail(20)
            time.sleep(0.2)
        raise AssertionError(f"{proc.name}: no {text!r} after {timeout} s:\n{proc.log_tail(20)}")

    try:
        wait_log(bridge, "simulating", 90)
        wait_log(procs[2], "policy teacher.onnx", 90)
        time.sleep(5)  # a few seconds of real-time running
        assert all(p.popen.poll() is None for p in procs), [p.log_tail(10) for p in procs]
        os.kill(procs[2].popen.pid, signal.SIGKILL)  # the policy node dies mid-run
        procs[2].popen.wait()
        wait_log(bridge, "holding the measured pose", 10)
        procs.append(start("policy_node", 1))  # and comes back
        wait_log(bridge, "targets are back", 60)
        os.kill(procs[-1].popen.pid, signal.SIGKILL)  # gone again; then Ctrl-C to the bridge
        procs[-1].popen.wait()
        wait_log(bridge, "holding the measured pose", 10, times=2)
        t0 = time.monotonic()
        os.kill(bridge.popen.pid, signal.SIGINT)
        bridge.popen.wait(timeout=10)
        stopped_in = time.monotonic() - t0
    finally:
        stop_processes(procs, 5.0)
    assert bridge.popen.returncode == 0 and stopped_in < 1.0, (stopped_in, bridge.log_tail(10))
    result = json.loads(summary.read_text())
    assert result["target_timeouts"] >= 2 and result["hold_ticks"] > 0
