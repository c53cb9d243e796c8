"""ONNX export of the teacher MLP and the Transformer student, with contract and golden pairs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from intermimic_policy.contract import GOLDEN_KEY, GoldenPairs, PolicyContract, expected_contract
from intermimic_policy.observation.spec import ObservationSpec, student_spec, teacher_spec
from training import export as export_mod
from training.checkpoint import save_checkpoint
from training.cli import main
from training.export import (
    ExportConfig,
    ExportError,
    ExportResult,
    PolicyGraph,
    export_checkpoint,
    export_policy,
)
from training.networks import PolicyNetwork, StudentTransformer, TeacherActorCritic
from training.normalizer import RunningNormalizer

HASH = "test-humanoid"


def _trained_normalizer(dim: int, seed: int) -> RunningNormalizer:
    gen = torch.Generator().manual_seed(seed)
    norm = RunningNormalizer(dim)
    norm.update(torch.randn(64, dim, generator=gen) * 3 + torch.linspace(-2, 2, dim))
    return norm


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, PolicyGraph, ExportResult]]:
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    nets: dict[str, tuple[PolicyNetwork, ObservationSpec]] = {"teacher": (TeacherActorCritic(teacher_spec().dim), teacher_spec()),
            "student": (StudentTransformer(student_spec()), student_spec())}
    result: dict[str, tuple[Path, PolicyGraph, ExportResult]] = {}
    for kind, (net, spec) in nets.items():
        norm = _trained_normalizer(spec.dim, seed=1)
        r = export_policy(net, norm, out / f"{kind}.onnx", spec=spec, model_hash=HASH, config_digest="cfg")
        assert r.path.is_file() and r.exporter == "dynamo" and r.max_error <= 1e-4
        result[kind] = (r.path, PolicyGraph(net, norm).eval(), r)
    return result


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_parity_with_dynamic_batch(exported, kind: str) -> None:
    path, graph, _ = exported[kind]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["obs"] and [o.name for o in model.graph.output] == ["actions"]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    session = _session(path)
    rng = np.random.default_rng(5)
    for batch in (1, 7):
        x = (rng.normal(size=(batch, graph.normalizer.dim)) * 4).astype(np.float32)
        with torch.no_grad():
            want = graph(torch.from_numpy(x)).numpy()
        got = session.run(["actions"], {"obs": x})[0]
        assert got.shape == (batch, 153)
        assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_golden_pairs_and_contract_travel_in_the_file(exported, kind: str) -> None:
    path, graph, _ = exported[kind]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    golden = GoldenPairs.from_metadata(meta[GOLDEN_KEY])
    assert golden.inputs.shape == (3, graph.normalizer.dim)
    with torch.no_grad():
        assert np.array_equal(golden.outputs, graph(torch.from_numpy(golden.inputs)).numpy())
    assert golden.max_error(_session(path).run(None, {"obs": golden.inputs})[0]) <= 1e-4
    # the normaliser is baked in: the golden inputs are raw, and some are clamped by it
    z = (golden.inputs - graph.normalizer.mean.numpy()) / np.sqrt(graph.normalizer.var.numpy() + 1e-5)
    assert (np.abs(z) > 5).any()

    contract = PolicyContract.from_metadata(meta, source=str(path))
    spec = teacher_spec() if kind == "teacher" else student_spec()
    assert contract.kind == kind and contract.config_digest == "cfg"
    assert contract.to_dict() | {"normalization": None, "config_digest": ""} == \
        expected_contract(kind, spec=spec, model_hash=HASH).to_dict()
    assert contract.normalization is not None
    assert np.array_equal(np.asarray(contract.normalization.var), graph.normalizer.var.numpy())


def test_export_from_checkpoint_reproduces_the_network(tmp_path: Path) -> None:
    torch.manual_seed(2)
    spec = teacher_spec()
    net, norm = TeacherActorCritic(spec.dim, hidden=(32, 16)), _trained_normalizer(spec.dim, seed=2)
    ckpt = save_checkpoint(tmp_path / "c.pt", model_state=net.state_dict(), normalizer_state=norm.state_dict(),
                           optimizer_state=None, iteration=10, rng_state=None, config={"lr": 2e-5},
                           obs_spec=spec, kind="teacher", model_hash=HASH, extra={"network": net.arch()},
                           contract=expected_contract("teacher", model_hash=HASH))
    r = export_checkpoint(ckpt, tmp_path / "out" / "p.onnx")
    assert r.contract.model_hash == HASH and r.contract.config_digest == export_mod.config_digest({"lr": 2e-5})
    x = np.random.default_rng(0).normal(size=(4, spec.dim)).astype(np.float32)
    with torch.no_grad():
        want = PolicyGraph(net, norm).eval()(torch.from_numpy(x)).numpy()
    assert np.abs(_session(r.path).run(None, {"obs": x})[0] - want).max() <= 1e-5
    # a checkpoint whose network config does not fit its weights fails with the file named
    bad = save_checkpoint(tmp_path / "bad.pt", model_state=net.state_dict(), normalizer_state=norm.state_dict(),
                          optimizer_state=None, iteration=0, rng_state=None, config={}, obs_spec=spec,
                          kind="teacher", model_hash=HASH, extra={"network": {"type": "teacher_mlp", "hidden": [8]}})
    with pytest.raises(ExportError, match="bad.pt: model state does not fit"):
        export_checkpoint(bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def _tiny() -> tuple[TeacherActorCritic, RunningNormalizer]:
    torch.manual_seed(3)
    return TeacherActorCritic(teacher_spec().dim, hidden=(8,)), _trained_normalizer(teacher_spec().dim, 3)


def test_parity_failure_fails_the_export_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    real = export_mod._to_onnx

    def broken_exporter(graph, example, opset):
        model, name = real(graph, example, opset)
        weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        arr = onnx.numpy_helper.to_array(weight).copy()
        arr.flat[0] += 0.5  # an exporter bug that changes one weight
        weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
        return model, name

    monkeypatch.setattr(export_mod, "_to_onnx", broken_exporter)
    net, norm = _tiny()
    out = tmp_path / "p.onnx"
    with pytest.raises(ExportError, match="parity failed"):
        export_policy(net, norm, out, spec=teacher_spec(), model_hash=HASH)
    assert os.listdir(tmp_path) == []


def test_legacy_exporter_is_the_fallback(tmp_path: Path, monkeypatch) -> None:
    real = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated dynamo exporter failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    net, norm = _tiny()
    r = export_policy(net, norm, tmp_path / "p.onnx", spec=teacher_spec(), model_hash=HASH)
    assert r.exporter == "legacy" and r.max_error <= 1e-4
    got = _session(r.path).run(None, {"obs": np.zeros((7, 3198), np.float32)})[0]
    assert got.shape == (7, 153)


def test_cli_export_random_and_policy_info_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "student.onnx"
    assert main(["export", "--init", "random", "--kind", "student", "--out", str(out), "--seed", "4",
                 "--model-hash", HASH]) == 0
    assert "student policy" in capsys.readouterr().out
    assert main(["policy", "info", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    contract = PolicyContract.from_metadata(meta)
    assert printed == contract.to_dict()
    assert PolicyContract.from_dict(printed) == contract
    assert main(["policy", "info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "6396" in text and "[0, 1, 4, 16]" in text and "golden pairs reproduced" in text
    # argument errors are one line, exit status 2
    assert main(["export", "--init", "random", "--out", str(out)]) == 2
    assert "needs --kind" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_export_refuses_a_network_of_another_layout(tmp_path: Path) -> None:
    net, norm = _tiny()
    with pytest.raises(ExportError, match="do not match the observation spec"):
        export_policy(net, norm, tmp_path / "p.onnx", spec=student_spec(), model_hash=HASH,
                      config=ExportConfig())
