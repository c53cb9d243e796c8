"""The deployment contract: built from the single sources of truth, serialised, compared."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

from intermimic_policy.contract import (
    ContractError,
    ContractMismatch,
    DeploymentExpectation,
    GoldenPairs,
    NormalizationStats,
    PolicyContract,
    build_contract,
    check_compatible,
    check_deployment,
    default_model_hash,
    expected_contract,
    require_compatible,
    require_deployable,
)
from intermimic_policy.embodiment.action_map import ActionShapeError, pd_targets
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.embodiment.smplx_body import DOF_NAMES, action_offset_scale, dof_arrays
from intermimic_policy.observation.spec import (
    HOI_BLOCK_TERMS,
    ObservationSpec,
    ObsTerm,
    student_spec,
    teacher_spec,
)

HASH = "humanoid-hash-1"


def _contract(kind: str = "teacher", **changes: Any) -> PolicyContract:
    return dataclasses.replace(expected_contract(kind, model_hash=HASH), **changes)


def test_expected_contract_comes_from_the_sources_of_truth() -> None:
    c = expected_contract("student", model_hash=HASH)
    kp, kd, _, _ = dof_arrays()
    offset, scale = action_offset_scale()
    assert c.joint_names == DOF_NAMES and c.output_dim == 153
    assert np.array_equal(c.kp, kp) and np.array_equal(c.kd, kd)
    assert np.allclose(c.action_offset, offset) and np.allclose(c.action_scale, scale)
    assert (c.input_dim, c.num_tokens, c.block_dim, c.ref_offsets) == (6396, 4, 1599, (0, 1, 4, 16))
    assert (c.control_hz, c.physics_hz, c.quaternion_convention) == (30.0, 240.0, "xyzw")
    assert expected_contract("teacher", model_hash=HASH).input_dim == 3198
    upstream = expected_contract("teacher", model_hash=HASH, upstream_action_map=True)
    assert upstream.action_scale[5] == 5.0 and c.action_scale[5] != 5.0
    # the default model hash is the default humanoid's content hash, stable across calls
    assert expected_contract("teacher").model_hash == default_model_hash()
    assert len(default_model_hash()) == 64


def test_metadata_round_trip_is_exact_and_json_per_key() -> None:
    rng = np.random.default_rng(0)
    norm = NormalizationStats(tuple(rng.normal(size=3198)), tuple(rng.uniform(0.1, 3, size=3198)), count=1234.0)
    c = _contract(normalization=norm, config_digest="cfg42")
    meta = c.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["kind"]) == "teacher"
    assert json.loads(meta["token_layout"]) == {"tokens": 2, "block_dim": 1599, "ref_offsets": [1, 16]}
    back = PolicyContract.from_metadata(meta)
    assert back == c
    assert back.normalization is not None and back.normalization.mean == norm.mean
    assert back.digest() == c.digest()
    assert check_compatible(back, c) == []
    # foreign metadata keys are ignored
    assert PolicyContract.from_metadata({**meta, "producer_note": "not json {"}) == c


def test_each_mismatch_is_named() -> None:
    expected = _contract()
    names = list(DOF_NAMES)
    names[0], names[1] = names[1], names[0]
    kp = list(expected.kp)
    kp[3] = 900.0
    offsets_spec = ObservationSpec(ref_offsets=(1, 8))
    dim_terms = tuple(ObsTerm(t.name, t.dim + 3, t.source) if t.name == "body_contact" else t for t in HOI_BLOCK_TERMS)
    cases: dict[str, dict[str, Any]] = {
        "joint order differs: first at index 0": {"joint_names": tuple(names)},
        "kp differs for 1 DOF(s) (policy vs expected: L_Knee_x: 900 != 800)": {"kp": tuple(kp)},
        "control_hz: policy has 60, expected 30": {"control_hz": 60.0},
        "observation: reference offsets [1, 8] != [1, 16]": {"observation": offsets_spec},
        "observation: term dims differ (body_contact: 34 != 31)": {"observation": ObservationSpec(terms=dim_terms)},
        "model_hash: policy has 'other', expected 'humanoid-hash-1'": {"model_hash": "other"},
        "kind: policy has 'student'": {"kind": "student"},
    }
    for message, change in cases.items():
        mismatches = check_compatible(_contract(**change), expected)
        assert any(message in m for m in mismatches), (message, mismatches)
    # the term-dim change also changes the input dim, and that is named too
    dims = check_compatible(_contract(observation=ObservationSpec(terms=dim_terms)), expected)
    assert any("input dim: policy has 3204, expected 3198" in m for m in dims)


def test_mismatch_error_lists_every_mismatch_at_once() -> None:
    bad = _contract(control_hz=50.0, physics_hz=200.0, model_hash="zzz",
                    observation=ObservationSpec(ref_offsets=(1, 4)))
    with pytest.raises(ContractMismatch) as err:
        require_compatible(bad, _contract(), source="policy robot.onnx")
    msg = str(err.value)
    assert msg.startswith("policy robot.onnx does not fit")
    for part in ("control_hz", "physics_hz", "model_hash", "reference offsets"):
        assert part in msg
    assert len(err.value.mismatches) == 4
    # gains within float32 round-off are not a mismatch
    close = _contract(kp=tuple(np.float32(v) * (1 + 1e-7) for v in _contract().kp))
    assert check_compatible(close, _contract()) == []


def test_malformed_contracts_fail_with_the_field_named() -> None:
    meta = _contract().to_metadata()
    with pytest.raises(ContractError, match="not an intermimic policy"):
        PolicyContract.from_metadata({"producer": "x"}, source="a.onnx")
    broken = {**meta, "kp": "[1, 2"}
    with pytest.raises(ContractError, match="metadata 'kp' is not JSON"):
        PolicyContract.from_metadata(broken)
    with pytest.raises(ContractError, match="kd has 152 values for 153 joints"):
        PolicyContract.from_metadata({**meta, "kd": json.dumps(list(range(152)))})
    with pytest.raises(ContractError, match="token layout"):
        PolicyContract.from_metadata({**meta, "token_layout": json.dumps({"tokens": 4, "block_dim": 1599,
                                                                          "ref_offsets": [1, 16]})})
    with pytest.raises(ContractError, match="is not the one this runtime reads"):
        PolicyContract.from_metadata({**meta, "contract_version": "99"})
    with pytest.raises(ContractError, match="missing"):
        PolicyContract.from_metadata({k: v for k, v in meta.items() if k != "model_hash"})


def test_pd_targets_clamp_then_map() -> None:
    c = _contract()
    a = np.zeros((2, 153), np.float32)
    a[0, 0], a[1, 0] = 3.0, -0.5
    t = c.pd_targets(a)
    assert t[0, 0] == pytest.approx(c.action_offset[0] + c.action_scale[0])
    assert t[1, 0] == pytest.approx(c.action_offset[0] - 0.5 * c.action_scale[0])
    assert np.allclose(t[:, 1], c.action_offset[1])


def test_golden_pairs_are_bit_exact() -> None:
    rng = np.random.default_rng(1)
    g = GoldenPairs(rng.normal(size=(3, 10)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32))
    back = GoldenPairs.from_metadata(g.to_metadata())
    assert np.array_equal(back.inputs, g.inputs) and np.array_equal(back.outputs, g.outputs)
    assert back.max_error(g.outputs) == 0.0
    with pytest.raises(ContractError, match="golden"):
        GoldenPairs.from_metadata('{"inputs": "!!", "input_shape": [1]}')


# -- issue 14: nothing in the file under test is believed ---------------------------------------
def test_absurd_rates_are_refused_when_the_contract_is_read() -> None:
    meta = _contract().to_metadata()
    with pytest.raises(ContractError, match=r"control_hz 1e\+06 Hz is outside the sane range 1\.\.1000 Hz"):
        PolicyContract.from_metadata({**meta, "control_hz": "1e6"}, source="fast.onnx")
    with pytest.raises(ContractError, match=r"control_hz 0\.001 Hz is outside"):
        PolicyContract.from_metadata({**meta, "control_hz": "0.001"})
    with pytest.raises(ContractError, match="physics_hz 250 is not a whole multiple of control_hz 30"):
        PolicyContract.from_metadata({**meta, "physics_hz": "250"})


@pytest.mark.parametrize("text,shown", [("Infinity", "inf"), ("-Infinity", "-inf"), ("NaN", "nan")])
def test_non_finite_rates_name_the_cause(text: str, shown: str) -> None:
    meta = _contract().to_metadata()
    with pytest.raises(ContractError, match=rf"^inf\.onnx: .*physics_hz.*(is not finite \({shown}\)|{text} is not allowed)"):
        PolicyContract.from_metadata({**meta, "physics_hz": text}, source="inf.onnx")
    with pytest.raises(ContractError, match="control_hz must be a number"):
        PolicyContract.from_metadata({**meta, "control_hz": '"30"'})
    with pytest.raises(ContractError, match="object_points must be an integer"):
        PolicyContract.from_metadata({**meta, "object_points": "1024.5"})


def test_runtime_expectations_come_from_its_own_configuration() -> None:
    policy = build_contract("teacher", obs_spec=teacher_spec(), skeleton=None, object_points=1024, control_hz=60.0,
                            physics_hz=240.0, upstream_action_map=False)
    assert policy.model_hash == default_model_hash() and policy.skeleton_model().content_hash() == policy.model_hash
    # a node configured for 30 Hz refuses a 60 Hz policy (it does not copy the policy's rate)
    problems = check_deployment(policy, DeploymentExpectation())
    assert problems == ["control_hz: policy has 60, expected 30"]
    # a bridge stepping physics at 120 Hz refuses a policy trained at 240 Hz
    assert check_deployment(policy, DeploymentExpectation(control_hz=60.0, physics_hz=120.0)) == [
        "physics_hz: policy has 240, expected 120"]
    assert check_deployment(policy, DeploymentExpectation(control_hz=60.0)) == []
    # action map, observation, embodiment, pinned skeleton and point count
    assert any("action_scale" in p for p in check_deployment(
        policy, DeploymentExpectation(control_hz=60.0, upstream_action_map=True)))
    assert any(p.startswith("observation:") for p in check_deployment(
        policy, DeploymentExpectation(control_hz=60.0, kind="teacher", obs_spec=student_spec())))
    assert check_deployment(policy, DeploymentExpectation(control_hz=60.0, embodiment="unitree_g1")) == [
        "unknown embodiment 'unitree_g1' (known: 'smplx_humanoid')"]
    assert check_deployment(policy, DeploymentExpectation(control_hz=60.0, model_hash="other")) == [
        f"model_hash: policy has {policy.model_hash!r}, expected 'other'"]
    with pytest.raises(ContractMismatch, match="object_points: policy has 1024, expected 64"):
        require_deployable(policy, DeploymentExpectation(control_hz=60.0, object_points=64), "p.onnx")
    # the runtime's own configuration is checked too
    for bad in (1e6, float("inf"), float("nan"), 0.0):
        with pytest.raises(ContractError, match="runtime configuration: control_hz"):
            DeploymentExpectation(control_hz=bad)


def test_skeleton_table_must_hash_to_the_model_hash() -> None:
    c = build_contract("teacher", obs_spec=teacher_spec(), skeleton=default_skeleton(), object_points=64,
                       control_hz=30.0, physics_hz=240.0, upstream_action_map=False)
    meta = c.to_metadata()
    assert PolicyContract.from_metadata(meta) == c
    table = json.loads(meta["skeleton"])
    table["offsets"][3][0] += 0.01  # a longer bone than the hash names
    with pytest.raises(ContractError, match="skeleton table hashes to"):
        PolicyContract.from_metadata({**meta, "skeleton": json.dumps(table)})
    with pytest.raises(ContractError, match="skeleton must be a table"):
        PolicyContract.from_metadata({**meta, "skeleton": "[1, 2]"})
    with pytest.raises(ContractError, match="no skeleton table"):
        _contract().skeleton_model()


def test_action_map_never_broadcasts_and_is_shared_by_numpy_and_torch() -> None:
    c = _contract()
    with pytest.raises(ActionShapeError, match=r"actions have shape \[4, 1\], expected \[153\] or \[batch, 153\]"):
        c.pd_targets(np.full((4, 1), 0.3, np.float32))
    with pytest.raises(ActionShapeError):
        c.pd_targets(np.zeros((2, 3, 153), np.float32))
    a = np.random.default_rng(0).uniform(-2, 2, size=(3, 153)).astype(np.float32)
    offset, scale = (np.asarray(x, np.float32) for x in (c.action_offset, c.action_scale))
    torch_targets = pd_targets(torch.from_numpy(a), torch.from_numpy(offset), torch.from_numpy(scale))
    assert np.array_equal(torch_targets.numpy(), c.pd_targets(a))
    with pytest.raises(ActionShapeError):
        pd_targets(torch.zeros(3, 1), torch.from_numpy(offset), torch.from_numpy(scale))
