"""The whole pipeline, teachers -> distill -> student -> evaluate -> export, on tiny budgets: on the
bundled example clip and on a real OMOMO clip; then the exported student runs in the closed loop
over DDS (``intermimic launch sim_hoi --policy student.onnx --lockstep``), every tick answered."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from intermimic_policy.cli import main as cli_main
from intermimic_policy.motion.io import load_motion
from intermimic_policy.runtime.base import read_policy_file
from training.run_pipeline import PIPELINE_ORDER, main

STAGES = list(PIPELINE_ORDER)
TINY = {
    "clip_frames": 30,
    "stages": STAGES,
    "teacher": {
        "iterations": 2, "save_interval": 2, "seed": 1, "torch_threads": 1,
        "env": {"num_envs": 4, "overrides": {"episode_cap": 30}},
        "ppo": {"num_steps_per_env": 8, "num_learning_epochs": 1, "minibatch_size": 32, "hidden_dims": [32, 32]},
        "eval": {"enabled": False},
    },
    "teachers": [{"name": "all"}],
    "distill": {"early_termination": "keep_prefix", "min_frames": 2},
    "student": {
        "iterations": 3, "save_interval": 3, "torch_threads": 1,
        "network": {"type": "transformer", "d_model": 32, "layers": 1, "heads": 2, "ff": 64, "critic_hidden": [32]},
        "env": {"num_envs": 4, "overrides": {"episode_cap": 30}},
        "ppo": {"num_steps_per_env": 8, "num_learning_epochs": 1, "minibatch_size": 16, "learning_rate": 1.0e-3},
        # every phase within 3 iterations: DAgger (1), critic warm-up (2), PPO from iteration 3
        "schedule": {"beta_hold": 1, "beta_decay": 1, "critic_warmup_start": 1, "critic_warmup_ramp": 1,
                     "ppo_min_iteration": 2, "ev_track_from": 1, "ev_threshold": -1.0e9, "ev_ema": 0.0,
                     "ev_streak": 1, "ppo_ramp_steps": 2},
    },
    "evaluate": {"max_clips": 1},
}


def _config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("student_pipeline")
    cfg = _config(root / "tiny.yaml", TINY)
    out = root / "out"
    assert main(["--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return {"cfg": cfg, "out": out, "report": json.loads((out / "report.json").read_text())}


def test_every_stage_reports_its_outputs(example_run: dict):
    report = example_run["report"]
    assert list(report["stages"]) == STAGES
    (refined,) = report["refined"]
    assert refined["status"] in ("complete", "prefix") and Path(refined["npz"]).is_file()
    assert load_motion(refined["npz"]).num_frames == refined["frames"] <= 30
    assert report["distill_counts"]["dropped"] == 0 and Path(report["distill_table"]).is_file()
    student = report["student"]
    assert Path(student["checkpoint"]).is_file() and student["iterations"] == 3
    assert [p["phase"] for p in student["phase_log"]][:2] == ["critic_warmup", "ppo"]
    assert student["network"]["type"] == "student_transformer" and student["network"]["layers"] == 1
    cells = {(r["policy"], r["reference"]) for r in report["evaluation"]}
    assert cells == {(p, r) for p in ("student", "teacher:all", "pd_replay") for r in ("mocap", "refined")}
    for row in report["evaluation"]:
        assert row["clips"] == 1 and row["mean_duration_s"] > 0 and row["E_h_cm"] >= 0


def test_student_onnx_says_student_and_its_token_layout(example_run: dict):
    exports = {e["name"]: e for e in example_run["report"]["exports"]}
    assert exports["student"]["kind"] == "student" and exports["all"]["kind"] == "teacher"
    assert exports["student"]["max_error"] < 1e-4
    contract = read_policy_file(exports["student"]["onnx"]).contract
    assert contract.kind == "student" and contract.ref_offsets == (0, 1, 4, 16)
    assert (contract.num_tokens, contract.block_dim, contract.input_dim) == (4, 1599, 6396)


def test_rerun_skips_and_single_stages_need_their_inputs(example_run: dict, tmp_path: Path, capsys):
    assert main(["--config", str(example_run["cfg"]), "--out", str(example_run["out"]), "--no-progress",
                 "--stages", "evaluate"]) == 0
    assert "stage evaluate: already done" in capsys.readouterr().out
    assert main(["--config", str(example_run["cfg"]), "--out", str(tmp_path / "fresh"), "--no-progress",
                 "--stages", "student"]) == 2
    assert "needs the teachers stage" in capsys.readouterr().err


def test_student_onnx_runs_in_the_closed_loop(example_run: dict, tmp_path: Path):
    onnx = next(e["onnx"] for e in example_run["report"]["exports"] if e["name"] == "student")
    report_file = tmp_path / "report.json"
    code = cli_main(["launch", "sim_hoi", "--example", "--policy", onnx, "--lockstep", "--duration", "1",
                     "--report", str(report_file), "--domain-id", str(150 + os.getpid() % 50),
                     "--transport", "cyclone", "--log-dir", str(tmp_path / "logs"), "--quiet", "--timeout", "150"])
    report = json.loads(report_file.read_text())
    assert code == 0, report.get("error")
    assert report["ok"] and report["ticks"] == 30 and report["missed_ticks"] == 0
    assert report["safe_hold_events"] == 0 and report["policy_node_status"]["published"] == "31"


def test_pipeline_on_a_real_omomo_clip(motions_root: Path, tmp_path: Path):
    clip = motions_root / "OMOMO_new" / "sub2_largetable_000.pt"
    data = json.loads(json.dumps(TINY))
    data["teachers"] = [{"name": "sub2", "subject": "sub2"}]
    data["student"]["network"] = {"type": "mlp", "mlp_hidden": [32]}
    cfg = _config(tmp_path / "real.yaml", data)
    out = tmp_path / "out"
    assert main(["--config", str(cfg), "--out", str(out), "--clips", str(clip), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["stages"]) == STAGES
    (refined,) = report["refined"]
    assert refined["source"] == str(clip.resolve())
    pt = load_motion(refined["pt"])
    assert pt.meta["variant"] == "OMOMO_retarget" and pt.num_frames == refined["frames"]
    exports = {e["name"]: e for e in report["exports"]}
    assert exports["student"]["kind"] == "student"  # the MLP student exports as a student too
    assert read_policy_file(exports["student"]["onnx"]).contract.input_dim == 6396
