"""The G1 through training and export: ``run_pipeline.py`` with ``config/pipeline/g1_smoke.yaml``
trains a teacher on a retargeted OMOMO_new clip and exports it; ``intermimic export --init random
--robot g1`` writes an ONNX whose contract has the G1's joints and sizes (golden pairs checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from intermimic_policy.contract import DeploymentExpectation, PolicyContract, check_deployment
from intermimic_policy.embodiment.description import embodiment_for
from intermimic_policy.runtime.loader import load_policy
from tests.g1_clip import retargeted_g1_clip
from training.checkpoint import load_checkpoint
from training.cli import main as cli_main
from training.config import load_pipeline_config
from training.run_pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def g1_clip(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return retargeted_g1_clip(motions_root, tmp_path_factory.mktemp("g1"))


def test_g1_teacher_trains_and_exports_through_the_pipeline(g1_clip: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    emb = embodiment_for("g1")
    config = load_pipeline_config(REPO / "config" / "pipeline" / "g1_smoke.yaml")
    report = run_pipeline(config, tmp_path / "run", clips=[str(g1_clip)], progress=False)
    assert set(report["stages"]) >= {"teachers", "export"}
    ckpt = load_checkpoint(tmp_path / "run" / "teachers" / "g1" / "teacher.pt")
    c = ckpt.contract
    assert c is not None and c.embodiment == "robot:g1" and c.joint_names == emb.dof_names
    assert c.output_dim == 43 and c.input_dim == ckpt.obs_spec.dim and ckpt.obs_spec.num_bodies == emb.num_bodies
    assert c.model_hash == emb.model_hash and c.skeleton is None
    # the exported teacher carries the same contract and answers its golden pairs in ONNX Runtime
    onnx_path = tmp_path / "run" / "export" / "g1.onnx"
    policy = load_policy(onnx_path, backend="onnxruntime", expected=DeploymentExpectation(
        kind="teacher", embodiment="robot:g1", object_points=c.object_points))
    assert policy.contract.joint_names == emb.dof_names
    out = policy(np.zeros((1, c.input_dim), dtype=np.float32))
    assert out.shape == (1, 43) and np.isfinite(out).all()
    # `intermimic eval` runs the exported G1 policy on the G1's clips (its contract names the robot)
    capsys.readouterr()
    assert cli_main(["eval", str(g1_clip), "--policy", str(onnx_path), "--no-progress"]) == 0
    assert "policy onnx:g1.onnx: " in capsys.readouterr().out
    # and refuses it on SMPL-X clips, in one line
    assert cli_main(["eval", "--example", "--policy", str(onnx_path), "--no-progress"]) != 0
    assert "drives robot 'g1'" in capsys.readouterr().err


def test_export_random_robot_g1_cli(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb = embodiment_for("g1")
    out = tmp_path / "g1_teacher.onnx"
    assert cli_main(["export", "--init", "random", "--kind", "teacher", "--robot", "g1", "--out", str(out)]) == 0
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    c = PolicyContract.from_metadata(meta)
    assert c.embodiment == "robot:g1" and c.joint_names == emb.dof_names and c.output_dim == emb.num_dofs
    assert c.observation.num_bodies == emb.num_bodies and c.input_dim == c.observation.dim
    assert np.allclose(c.kp, emb.kp) and np.allclose(c.kd, emb.kd)
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims[-1] == 43
    # the loader verifies the golden pairs (verify_golden) and the G1 runtime expectation
    policy = load_policy(out, backend="onnxruntime", expected=DeploymentExpectation(kind="teacher",
                                                                                   embodiment="robot:g1"))
    assert policy.contract.digest() == c.digest()
    # an SMPL-X runtime refuses it, naming what differs
    problems = check_deployment(c, DeploymentExpectation(kind="teacher"))
    assert any("embodiment" in p for p in problems) and any("output dim" in p for p in problems)
    bad = ["export", "--init", "random", "--kind", "teacher", "--robot", "no_such_robot", "--out", str(tmp_path / "x.onnx")]
    assert cli_main(bad) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown robot 'no_such_robot'" in err[0] and not (tmp_path / "x.onnx").exists()
