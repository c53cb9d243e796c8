"""The deployment contract: built from the single sources of truth, serialised, compared."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from intermimic_policy.contract import (
    ContractError,
    ContractMismatch,
    GoldenPairs,
    NormalizationStats,
    PolicyContract,
    check_compatible,
    default_model_hash,
    expected_contract,
    require_compatible,
)
from intermimic_policy.embodiment.smplx_body import DOF_NAMES, action_offset_scale, dof_arrays
from intermimic_policy.observation.spec import HOI_BLOCK_TERMS, ObservationSpec, ObsTerm

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
