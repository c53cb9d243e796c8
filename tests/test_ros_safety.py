"""The policy node's safety functions, one by one, and its parameter file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intermimic_policy.ros.node_config import NodeConfigError, config_from_dict, load_node_config
from intermimic_policy.ros.safety import (
    check_staleness,
    clamp_slew,
    clamp_to_limits,
    hold_command,
    nonfinite_fields,
    soft_start_alpha,
    soft_start_blend,
)

NAMES = ("A_x", "A_y", "A_z", "B_x")


def test_stale_and_missing_inputs_are_named() -> None:
    timeouts = {"reference": 0.5, "joint_states": 0.2, "contacts": 0.0}
    fresh = check_staleness({"reference": 9.8, "joint_states": 9.9}, 10.0, timeouts)
    assert fresh.ok and fresh.describe() == "inputs fresh"
    stale = check_staleness({"reference": 9.4, "joint_states": 9.9}, 10.0, timeouts)
    assert not stale.ok and stale.stale == ("reference",) and stale.missing == ()
    assert "stale reference" in stale.describe()
    # an input with timeout 0 is optional: never missing, never stale
    missing = check_staleness({"reference": None, "joint_states": 9.9, "contacts": None}, 10.0, timeouts)
    assert missing.missing == ("reference",) and missing.stale == ()
    # exactly at the timeout is still fresh; just past it is stale
    assert check_staleness({"joint_states": 9.75}, 10.0, {"joint_states": 0.25}).ok
    assert not check_staleness({"joint_states": 9.74}, 10.0, {"joint_states": 0.25}).ok


def test_hold_keeps_the_pose_with_zero_velocity_and_more_damping() -> None:
    pose = np.array([0.1, -0.2, 0.3, 0.4])
    kp, kd = np.array([100.0, 100.0, 50.0, 10.0]), np.array([10.0, 10.0, 5.0, 1.0])
    cmd = hold_command(pose, kp, kd, 3.0)
    np.testing.assert_array_equal(cmd.position, pose)
    np.testing.assert_array_equal(cmd.velocity, np.zeros(4))
    np.testing.assert_array_equal(cmd.kp, kp)
    np.testing.assert_array_equal(cmd.kd, 3.0 * kd)
    pose[0] = 9.0  # the command is a copy
    assert cmd.position[0] == 0.1
    with pytest.raises(ValueError, match="kd scale"):
        hold_command(pose, kp, kd, 0.5)


def test_soft_start_blend_endpoints_and_midpoint() -> None:
    start, target = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 1.0, 1.0, -2.0])
    np.testing.assert_array_equal(soft_start_blend(start, target, 0.0, 2.0), start)
    np.testing.assert_array_equal(soft_start_blend(start, target, 2.0, 2.0), target)
    np.testing.assert_array_equal(soft_start_blend(start, target, 5.0, 2.0), target)
    np.testing.assert_allclose(soft_start_blend(start, target, 0.5, 2.0), 0.75 * start + 0.25 * target)
    assert soft_start_alpha(-1.0, 2.0) == 0.0 and soft_start_alpha(1.0, 0.0) == 1.0  # 0 s: no blending


def test_joint_limit_clamp_reports_the_joints_it_clipped() -> None:
    lower, upper = np.array([-1.0, -1.0, -0.5, 0.0]), np.array([1.0, 1.0, 0.5, 0.2])
    inside = clamp_to_limits(np.array([0.5, -1.0, 0.5, 0.1]), lower, upper, NAMES)
    assert inside.count == 0 and inside.names == ()
    out = clamp_to_limits(np.array([1.5, 0.0, -0.7, 0.3]), lower, upper, NAMES)
    np.testing.assert_array_equal(out.values, [1.0, 0.0, -0.5, 0.2])
    assert out.clipped == (0, 2, 3) and out.names == ("A_x", "A_z", "B_x")
    with pytest.raises(ValueError, match="shapes"):
        clamp_to_limits(np.zeros(3), lower, upper, NAMES)


def test_slew_clamp_limits_the_step_per_tick_and_reports() -> None:
    prev = np.array([0.0, 0.0, 1.0, 1.0])
    r = clamp_slew(np.array([0.05, -0.3, 1.2, 1.0]), prev, 0.1, NAMES)
    np.testing.assert_allclose(r.values, [0.05, -0.1, 1.1, 1.0])
    assert r.names == ("A_y", "A_z")
    # no previous command, or a limit of 0: unchanged
    assert clamp_slew(np.array([5.0, 0, 0, 0]), None, 0.1, NAMES).count == 0
    assert clamp_slew(np.array([5.0, 0, 0, 0]), prev, 0.0, NAMES).count == 0


def test_nonfinite_values_are_found_by_name() -> None:
    assert nonfinite_fields({"obs": np.zeros(3), "actions": [1.0, 2.0], "skip": None}) == ()
    bad = nonfinite_fields({"obs": np.array([0.0, np.nan]), "actions": np.array([np.inf]), "ok": 1.0})
    assert bad == ("obs", "actions")


# ------------------------------------------------------------------------------------ config
def test_config_reads_common_then_its_own_section_and_ros_parameter_form(tmp_path: Path) -> None:
    doc = {
        "common": {"domain_id": 7, "lockstep": True, "policy": "p.onnx", "clip": "ignored.pt",
                   "topics": {"reference": "/common/ref", "clock": "/clock"}},
        "policy_node": {"ros__parameters": {"kind": "student", "soft_start_s": 0.5,
                                            "timeouts": {"reference_s": 0.3},
                                            "topics": {"pd_targets": "/own/targets"}}},
    }
    cfg = config_from_dict(doc, "t.yaml")
    assert (cfg.domain_id, cfg.lockstep, cfg.policy, cfg.kind, cfg.soft_start_s) == (7, True, "p.onnx", "student", 0.5)
    assert cfg.topics.reference == "/common/ref" and cfg.topics.pd_targets == "/own/targets"
    assert cfg.timeouts.reference_s == 0.3 and cfg.timeouts.state_s == 0.25  # defaults kept
    f = tmp_path / "n.yaml"
    f.write_text("policy_node:\n  threads: 2\n")
    assert load_node_config(f, policy="x.onnx").policy == "x.onnx"


@pytest.mark.parametrize("section, match", [
    ({"kidn": "teacher"}, r"bad.yaml: policy_node.kidn: unknown key\(s\)"),
    ({"timeouts": {"reference_s": -1.0}}, "timeouts.reference_s must be a finite number"),
    ({"timeouts": {"state_s": 0.0}}, "cannot be 0"),
    ({"status_hz": 20.0}, "within 1..5 Hz"),
    ({"lockstep": "yes"}, "must be true or false"),
    ({"kind": "robot"}, "must be one of"),
    ({"hold_kd_scale": 0.5}, "never lowers damping"),
    ({"control_hz": 1e6}, "control_hz"),  # the node's own rates: finite, 1..1000 Hz (never the policy's)
    ({"warm_lead_ms": 40.0}, r"warm_lead_ms must be .* within \[0, one control period\)"),  # 30 Hz: 33 ms
    ({"warm_lead_ms": -1.0}, "warm_lead_ms"),
])
def test_bad_parameters_name_the_key(section: dict, match: str) -> None:
    with pytest.raises(NodeConfigError, match=match):
        config_from_dict({"policy_node": section}, "bad.yaml")


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="cannot read"):
        load_node_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy_node: [unclosed\n")
    with pytest.raises(NodeConfigError, match="broken.yaml: not valid YAML"):
        load_node_config(broken)
