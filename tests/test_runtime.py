"""The inference runtime: load_policy, contract checks at load, input checks, bad files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from intermimic_policy.contract import (
    GOLDEN_KEY,
    ContractMismatch,
    GoldenPairs,
    PolicyContract,
    expected_contract,
)
from intermimic_policy.observation.spec import ObservationSpec, teacher_spec
from intermimic_policy.runtime.base import (
    Policy,
    PolicyInputError,
    PolicyLoadError,
    PolicyOutputError,
    read_policy_file,
)
from intermimic_policy.runtime.loader import GoldenMismatch, load_policy
from intermimic_policy.runtime.tensorrt_backend import tensorrt_unavailable_reason
from training.export import PolicyGraph, export_policy
from training.networks import TeacherActorCritic
from training.normalizer import RunningNormalizer

HASH = "runtime-test-humanoid"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PolicyGraph]:
    torch.manual_seed(0)
    spec = teacher_spec()
    net = TeacherActorCritic(spec.dim, hidden=(64, 32))
    norm = RunningNormalizer(spec.dim)
    norm.update(torch.randn(32, spec.dim) * 2 + 1)
    path = tmp_path_factory.mktemp("runtime") / "teacher.onnx"
    export_policy(net, norm, path, spec=spec, model_hash=HASH)
    return path, PolicyGraph(net, norm).eval()


def _rewrite(src: Path, dst: Path, edit) -> Path:
    model = onnx.load(str(src))
    edit(model)
    dst.write_bytes(model.SerializeToString())
    return dst


def _set_meta(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


def test_load_and_run_matches_torch(teacher) -> None:
    path, graph = teacher
    policy = load_policy(path, backend="onnxruntime", expected=expected_contract("teacher", model_hash=HASH))
    assert isinstance(policy, Policy)
    assert policy.backend_name == "onnxruntime-cpu" and policy.contract.input_dim == 3198
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch, 3198))  # float64 in: converted
        with torch.no_grad():
            want = graph(torch.from_numpy(x).float()).numpy()
        got = policy(x)
        assert got.dtype == np.float32 and got.shape == (batch, 153)
        assert np.abs(got - want).max() <= 1e-5
    two = load_policy(path, backend="onnxruntime", threads=2, allow_spinning=False)
    assert np.abs(two(np.ones((3, 3198))) - policy(np.ones((3, 3198)))).max() <= 1e-5


def test_auto_backend_is_onnxruntime_without_tensorrt(teacher) -> None:
    policy = load_policy(teacher[0])
    expected = "tensorrt" if tensorrt_unavailable_reason() is None else "onnxruntime-cpu"
    assert policy.backend_name == expected


def test_bad_inputs_are_named(teacher) -> None:
    policy = load_policy(teacher[0], backend="onnxruntime")
    x = np.zeros((2, 3198), np.float32)
    x[1, 1599 + 1380 + 4] = np.nan
    with pytest.raises(PolicyInputError) as err:
        policy(x)
    msg = str(err.value)
    assert "NaN/inf" in msg and "row 1" in msg and "interaction_graph[4] of token 1 (ref +16)" in msg
    with pytest.raises(PolicyInputError, match=r"expected \[batch, 3198\].*obs\[None\]"):
        policy(np.zeros(3198, np.float32))
    with pytest.raises(PolicyInputError, match=r"shape \[1, 6396\]"):
        policy(np.zeros((1, 6396), np.float32))
    with pytest.raises(PolicyInputError, match="inf"):
        policy(np.full((1, 3198), np.inf, np.float32))


def test_contract_mismatch_at_load_lists_each_problem(teacher) -> None:
    other = ObservationSpec(ref_offsets=(1, 4))
    expected = dataclasses.replace(expected_contract("teacher", model_hash="robot-v2", spec=other),
                                   control_hz=60.0)
    with pytest.raises(ContractMismatch) as err:
        load_policy(teacher[0], expected=expected)
    msg = str(err.value)
    assert str(teacher[0]) in msg
    for part in ("model_hash", "control_hz: policy has 30, expected 60", "reference offsets [1, 16] != [1, 4]"):
        assert part in msg
    assert len(err.value.mismatches) == 3


def test_corrupt_truncated_and_foreign_files_fail_cleanly(teacher, tmp_path: Path) -> None:
    data = teacher[0].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for bad, words in ((truncated, "not a readable ONNX model"), (text, "not a readable ONNX model"),
                       (empty, "empty"), (tmp_path / "missing.onnx", "not found")):
        with pytest.raises(PolicyLoadError) as err:
            load_policy(bad)
        assert str(bad) in str(err.value) and words in str(err.value)
    # a valid ONNX model that is not an intermimic policy
    node = onnx.helper.make_node("Identity", ["obs"], ["actions"])
    vi = onnx.helper.make_tensor_value_info
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [node], "g", [vi("obs", onnx.TensorProto.FLOAT, [1, 3])], [vi("actions", onnx.TensorProto.FLOAT, [1, 3])]))
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(plain.SerializeToString())
    with pytest.raises(PolicyLoadError, match="foreign.onnx: not an intermimic policy"):
        load_policy(foreign)


def test_graph_that_disagrees_with_its_contract_is_refused(teacher, tmp_path: Path) -> None:
    student_meta = expected_contract("student", model_hash=HASH).to_metadata()
    lying = _rewrite(teacher[0], tmp_path / "lying.onnx", lambda m: _set_meta(m, student_meta))
    with pytest.raises(PolicyLoadError, match=r"graph input 'obs' has shape \['.*', 3198\], but the contract's "
                                              r"observation has 6396 dims"):
        read_policy_file(lying)


def test_changed_weights_fail_the_golden_check(teacher, tmp_path: Path) -> None:
    def tamper(model: onnx.ModelProto) -> None:
        weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        arr = onnx.numpy_helper.to_array(weight).copy()
        arr *= 1.1
        weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))

    tampered = _rewrite(teacher[0], tmp_path / "tampered.onnx", tamper)
    with pytest.raises(GoldenMismatch, match="does not reproduce the exported golden outputs"):
        load_policy(tampered, backend="onnxruntime")
    # the check can be skipped explicitly
    assert load_policy(tampered, backend="onnxruntime", verify_golden=False)(np.zeros((1, 3198))).shape == (1, 153)
    no_golden = _rewrite(teacher[0], tmp_path / "nogolden.onnx", lambda m: _set_meta(
        m, PolicyContract.from_metadata({p.key: p.value for p in m.metadata_props}).to_metadata()))
    with pytest.raises(GoldenMismatch, match="no golden pairs"):
        load_policy(no_golden, backend="onnxruntime")


def test_unavailable_backends_say_why(teacher) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        with pytest.raises(PolicyLoadError, match="TensorRT backend unavailable: " + reason.split(" (")[0]):
            load_policy(teacher[0], backend="tensorrt")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(PolicyLoadError, match="no CUDAExecutionProvider"):
            load_policy(teacher[0], backend="onnxruntime-cuda")
    with pytest.raises(PolicyLoadError, match="unknown policy backend 'cuda'"):
        load_policy(teacher[0], backend="cuda")
    with pytest.raises(PolicyLoadError, match="threads must be >= 1"):
        load_policy(teacher[0], threads=0, backend="onnxruntime")


def test_runtime_imports_neither_torch_nor_training() -> None:
    code = ("import sys, intermimic_policy.runtime.loader, intermimic_policy.runtime.commands; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('training')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def _one_column_graph(teacher_path: Path, dst: Path) -> Path:
    """A graph that declares [batch, 153] but really outputs [batch, 1] (the sum of the inputs),
    with the teacher's contract and golden outputs that broadcast that one value to every joint."""
    meta = {p.key: p.value for p in onnx.load(str(teacher_path)).metadata_props}
    golden = GoldenPairs.from_metadata(meta[GOLDEN_KEY])
    h = onnx.helper
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = h.make_graph([h.make_node("ReduceSum", ["obs", "axes"], ["actions"], keepdims=1)], "liar",
                         [h.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, ["batch", 3198])],
                         [h.make_tensor_value_info("actions", onnx.TensorProto.FLOAT, ["batch", 153])], [axes])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    sums = golden.inputs.sum(axis=1, keepdims=True, dtype=np.float32)
    meta[GOLDEN_KEY] = GoldenPairs(golden.inputs, np.repeat(sums, 153, axis=1), atol=1e-2).to_metadata()
    _set_meta(model, meta)
    dst.write_bytes(model.SerializeToString())
    return dst


def test_a_graph_whose_real_output_is_one_column_is_refused_at_load(teacher, tmp_path: Path) -> None:
    liar = _one_column_graph(teacher[0], tmp_path / "liar.onnx")
    assert read_policy_file(liar).output_shape == ("batch", 153)  # the declared shape fits the contract
    for verify in (True, False):
        with pytest.raises(PolicyOutputError, match=r"liar.onnx: graph output 'actions' has shape \[3, 1\] for a "
                                                     r"batch of 3, but the contract has 153 joints"):
            load_policy(liar, backend="onnxruntime", verify_golden=verify)


def test_a_graph_with_extra_outputs_is_refused(teacher, tmp_path: Path) -> None:
    def add_output(model: onnx.ModelProto) -> None:
        model.graph.output.append(onnx.helper.make_tensor_value_info("debug", onnx.TensorProto.FLOAT, ["batch", 1]))

    extra = _rewrite(teacher[0], tmp_path / "extra.onnx", add_output)
    with pytest.raises(PolicyLoadError, match=r"graph outputs \['actions', 'debug'\]; the contract declares exactly one"):
        read_policy_file(extra)


@pytest.mark.parametrize("value, cause", [("1e6", r"control_hz 1e\+06 Hz is outside the sane range 1\.\.1000 Hz"),
                                          ("Infinity", r".*control_hz.*(is not finite \(inf\)|Infinity is not allowed)")])
def test_a_policy_declaring_an_absurd_rate_is_refused_naming_the_cause(teacher, tmp_path: Path, value: str,
                                                                       cause: str) -> None:
    def edit(model: onnx.ModelProto) -> None:
        meta = {p.key: p.value for p in model.metadata_props}
        _set_meta(model, {**meta, "control_hz": value})

    fast = _rewrite(teacher[0], tmp_path / "fast.onnx", edit)
    with pytest.raises(PolicyLoadError, match=rf"fast\.onnx: (contract )?{cause}"):
        load_policy(fast, backend="onnxruntime")
