"""`intermimic eval` of exported ONNX policies, on the example clip, with perturbations; the
launch report's success figures; provenance in the contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from intermimic_policy.cli import main
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.io import save_motion
from intermimic_policy.observation.spec import teacher_spec
from intermimic_policy.runtime.base import read_policy_file
from intermimic_policy.sim.evaluate import EvalSettings, evaluate, load_policy
from intermimic_policy.sim.perturb import Perturbation
from training.export import export_policy
from training.networks import TeacherActorCritic
from training.normalizer import RunningNormalizer


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from intermimic_policy.embodiment.skeleton import default_skeleton

    torch.manual_seed(0)
    spec = teacher_spec()
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_policy(TeacherActorCritic(spec.dim, hidden=(32,)), RunningNormalizer(spec.dim), out, spec=spec,
                  model_hash=default_skeleton().content_hash(), provenance={"samples": 123, "code_revision": "abc"})
    return out


def test_contract_carries_provenance(onnx_file: Path) -> None:
    contract = read_policy_file(onnx_file).contract
    assert contract.provenance == {"samples": 123, "code_revision": "abc"}


def test_onnx_policy_is_evaluated_closed_loop(onnx_file: Path) -> None:
    policy = load_policy(str(onnx_file))
    assert policy.name == "onnx:small.onnx" and policy.config_overrides["obs_spec"] == teacher_spec()
    clip = make_example_motion().slice(0, 12)
    report = evaluate([clip], policy, EvalSettings(progress=False, perturb=Perturbation(object_mass=1.2)))
    row = report.clips[0]
    assert row["attempts"] == 1 and 0.0 < row["duration_s"] <= 11 / 30 + 1e-6
    assert report.to_dict()["perturb"] == {"object_mass": 1.2}


def test_eval_cli_example_with_perturb(onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code = main(["eval", "--example", "--policy", "pd-replay", "--perturb", "object_friction=0.8",
                 "--perturb", "action_delay=1", "--no-progress", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["perturb"] == {"object_friction": 0.8, "action_delay": 1}
    assert data["clips"][0]["clip"] == "example_box_lift" and data["success_rate"] == 0.0  # PD replay falls
    assert main(["eval", "--example", "--perturb", "mass=2"]) == 2
    assert "unknown key 'mass'" in capsys.readouterr().err


def test_launch_outcome_judges_the_whole_clip(tmp_path: Path) -> None:
    from intermimic_policy.ros.launcher import _outcome

    motion = make_example_motion()
    clip = save_motion(motion, tmp_path / "clip.npz")
    ref = float((motion.object_pos[:, 2].max() - motion.object_pos[0, 2]) * 100)
    bridge = {"clip_frames": 150, "control_hz": 30.0, "start_offset": 0, "sim_time_s": 149 / 30,
              "object_lift_cm": ref - 2.0, "root_height_min_m": 0.85, "physics_failures": 0}
    good = {"ok": True, "E_h_cm": 4.0, "E_o_cm": 5.0, "missed_ticks": 0, "safe_hold_events": 0}
    out = _outcome(good, bridge, {"clip": str(clip)})
    assert out["success"] and out["clip_duration_s"] == pytest.approx(149 / 30)
    assert out["reference_lift_cm"] == pytest.approx(ref, abs=1e-3) and not out["fell"]
    for change in ({"object_lift_cm": 1.0}, {"root_height_min_m": 0.2}, {"sim_time_s": 3.5}):
        assert not _outcome(good, {**bridge, **change}, {"clip": str(clip)})["success"], change
    for change in ({"E_o_cm": 6.5}, {"missed_ticks": 1}, {"safe_hold_events": 1}, {"ok": False}):
        assert not _outcome({**good, **change}, bridge, {"clip": str(clip)})["success"], change
    assert np.isfinite(out["object_lift_cm"])
