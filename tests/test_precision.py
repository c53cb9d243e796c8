"""Declared precisions: the runtime loads a reduced-precision policy only when its contract declares
that precision with a passing closed-loop acceptance, and refuses every other combination.

Real parts: the shipped fp32 policy, ONNX Runtime's own dynamic int8 quantization of it, the real
loader. (The closed-loop acceptance itself runs ``sim.evaluate``: ``runtime.quantize_cli``.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from intermimic_policy.contract import ContractError, GoldenPairs, PrecisionAcceptance
from intermimic_policy.runtime.base import PolicyLoadError, graph_precision, read_policy_file
from intermimic_policy.runtime.loader import load_policy
from intermimic_policy.runtime.onnxruntime_backend import OnnxRuntimePolicy
from intermimic_policy.runtime.quantize_cli import quantized_graph, with_contract

SHIPPED = Path(__file__).resolve().parents[1] / "intermimic_policy" / "assets" / "policies" / "example_teacher.onnx"


def _acceptance(**changes: object) -> PrecisionAcceptance:
    base = PrecisionAcceptance(reference_sha256="0" * 64, clip="example", reference_success=True, success=True,
                               reference_e_h_cm=4.46, e_h_cm=4.9, tolerance_cm=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def int8_parts() -> tuple:
    src = read_policy_file(SHIPPED)
    model = quantized_graph(src)
    assert src.golden is not None
    candidate = OnnxRuntimePolicy(dataclasses.replace(src, model_bytes=model.SerializeToString()))
    golden = GoldenPairs(src.golden.inputs, candidate(src.golden.inputs), atol=src.golden.atol)
    return src, model, golden


def test_graph_precision_tells_fp32_from_int8(int8_parts: tuple) -> None:
    import onnx

    src, model, _ = int8_parts
    assert graph_precision(onnx.load_model_from_string(src.model_bytes)) == "fp32"
    assert graph_precision(model) == "int8"


def test_acceptance_needs_the_same_success_and_e_h_within_tolerance() -> None:
    assert _acceptance().passed
    assert not _acceptance(success=False).passed
    assert not _acceptance(e_h_cm=5.47).passed
    assert _acceptance(e_h_cm=3.47).passed
    assert not _acceptance(e_h_cm=float("nan")).passed


def test_contract_refuses_a_reduced_precision_without_a_passing_acceptance() -> None:
    contract = read_policy_file(SHIPPED).contract
    assert contract.precision == "fp32" and "precision" not in contract.to_dict()  # fp32 files unchanged
    with pytest.raises(ContractError, match="without the closed-loop acceptance"):
        dataclasses.replace(contract, precision="int8")
    with pytest.raises(ContractError, match="acceptance failed.*success False"):
        dataclasses.replace(contract, precision="int8", precision_acceptance=_acceptance(success=False))
    with pytest.raises(ContractError, match="precision 'int4' is not one of"):
        dataclasses.replace(contract, precision="int4")


def test_loader_runs_an_int8_graph_its_contract_declares(int8_parts: tuple, tmp_path: Path) -> None:
    src, model, golden = int8_parts
    contract = dataclasses.replace(src.contract, precision="int8", precision_acceptance=_acceptance())
    path = tmp_path / "int8.onnx"
    path.write_bytes(with_contract(model, contract, golden))
    policy = load_policy(path, backend="onnxruntime")  # golden pairs of the int8 graph reproduce
    assert policy.contract.precision == "int8" and policy.contract.precision_acceptance == _acceptance()
    # int8 is not fp32: the fp32 outputs are off by more than the golden tolerance
    assert src.golden is not None
    assert np.abs(policy(src.golden.inputs) - src.golden.outputs).max() > src.golden.atol


def test_loader_refuses_a_precision_the_contract_does_not_declare(int8_parts: tuple, tmp_path: Path) -> None:
    src, model, golden = int8_parts
    # an int8 graph under the fp32 contract (e.g. quantized by hand, acceptance skipped)
    sneaky = tmp_path / "sneaky.onnx"
    sneaky.write_bytes(with_contract(model, src.contract, golden))
    with pytest.raises(PolicyLoadError, match="graph computes in int8 but its contract declares fp32"):
        load_policy(sneaky, backend="onnxruntime")
    # an fp32 graph whose contract claims int8
    import onnx

    fp32 = onnx.load_model_from_string(src.model_bytes)
    claims = tmp_path / "claims.onnx"
    assert src.golden is not None
    claims.write_bytes(with_contract(fp32, dataclasses.replace(src.contract, precision="int8",
                                                               precision_acceptance=_acceptance()), src.golden))
    with pytest.raises(PolicyLoadError, match="graph computes in fp32 but its contract declares int8"):
        load_policy(claims, backend="onnxruntime")
    # an fp16 engine of a contract that declares fp32 (refused before any GPU is looked for)
    with pytest.raises(PolicyLoadError, match="fp16 engine was asked for, but the contract declares fp32"):
        load_policy(SHIPPED, backend="tensorrt", fp16=True)


INT8 = SHIPPED.with_name("example_teacher_int8.onnx")


def test_shipped_int8_policy_is_the_accepted_quantization_of_the_shipped_fp32_one() -> None:
    """The int8 asset declares int8 with a passing acceptance against THIS fp32 file, and it holds:
    run closed loop on the example clip again, it has the recorded success and an E_h within the
    stated tolerance of the fp32 policy's (``intermimic eval --example`` on both)."""
    import hashlib

    from intermimic_policy.runtime.quantize_cli import closed_loop
    from intermimic_policy.sim.evaluate import load_onnx_policy

    int8 = load_policy(INT8, backend="onnxruntime")
    a = int8.contract.precision_acceptance
    assert int8.contract.precision == "int8" and a is not None and a.passed
    assert a.reference_sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert a.tolerance_cm <= 1.0 and a.reference_success
    success, e_h = closed_loop(load_onnx_policy(str(INT8)))
    ref_success, ref_e_h = closed_loop(load_onnx_policy(str(SHIPPED)))
    assert success == a.reference_success == ref_success
    # ONNX Runtime picks its kernels by the CPU's instruction set (AVX2, AVX-512, VNNI for int8) and
    # 150 closed-loop steps amplify their last-bit differences (a host with AVX-512 VNNI: fp32 E_h
    # 3.724 against the recorded 3.717, int8 3.657 against 3.452), so the record holds on another
    # host within the tolerance, measured against the fp32 policy on the same host, not bit for bit
    assert abs(e_h - ref_e_h) <= a.tolerance_cm
    assert abs(e_h - a.e_h_cm) <= a.tolerance_cm and abs(ref_e_h - a.reference_e_h_cm) <= a.tolerance_cm
