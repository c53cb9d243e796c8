"""``intermimic eval`` (PD replay on real clips, JSON report) and ``intermimic obs-layout``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from intermimic_policy import cli
from intermimic_policy.motion.io import load_motion, save_motion
from intermimic_policy.sim.evaluate import (
    EvalError,
    EvalSettings,
    PDReplayPolicy,
    evaluate,
    load_policy,
    register_policy_loader,
)

CLIP = "OMOMO_new/sub2_largetable_000.pt"
FIELDS = ("clip", "frames", "success", "duration_s", "E_h_cm", "E_o_cm")


@pytest.fixture(scope="module")
def short_clips(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real clips cut short: 12 frames (PD replay gets through) and 90 (it loses the table)."""
    clip = load_motion(motions_root / CLIP)
    folder = tmp_path_factory.mktemp("clips")
    easy = save_motion(clip.slice(0, 12), folder / "easy.npz")
    hard = save_motion(clip.slice(0, 90), folder / "hard.npz")
    return easy, hard


def test_eval_cli_writes_the_report(short_clips: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    easy, hard = short_clips
    out = tmp_path / "report.json"
    code = cli.main(["eval", "--policy", "pd-replay", str(easy), str(hard), "--json", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "E_h_cm" in printed and "pd-replay" in printed
    report = json.loads(out.read_text())
    for key in ("success_rate", "mean_duration_s", "E_h_cm", "E_o_cm", "clips"):
        assert key in report
    rows = {r["frames"]: r for r in report["clips"]}
    assert set(rows) == {12, 90}
    for r in rows.values():
        assert all(k in r for k in FIELDS)
        assert 0.0 < r["duration_s"] <= (r["frames"] - 1) / 30 + 1e-9
        assert 0.0 < r["E_h_cm"] < 100.0 and 0.0 <= r["E_o_cm"] < 100.0
    # success = the clip's last frame reached without a failure, and then the duration is the clip's
    assert rows[12]["success"] is True and rows[12]["duration_s"] == pytest.approx(11 / 30)
    assert rows[90]["success"] is False and rows[90]["duration_s"] < 89 / 30
    assert report["success_rate"] == pytest.approx(0.5)
    assert report["mean_duration_s"] == pytest.approx((rows[12]["duration_s"] + rows[90]["duration_s"]) / 2)
    assert rows[90]["endings"] and "clip_end" not in rows[90]["endings"]


def test_attempts_are_deterministic_and_loaders_pluggable(short_clips: tuple[Path, Path]) -> None:
    easy, _ = short_clips
    clip = load_motion(easy)
    report = evaluate([clip], PDReplayPolicy(), EvalSettings(attempts=3, max_worlds=2, progress=False))
    row = report.clips[0]
    assert row["attempts"] == 3 and row["successes"] == 3
    assert row["E_h_cm_std"] == pytest.approx(0.0, abs=1e-9)  # same start, same physics, same policy

    class Still:
        name = "still"
        config_overrides: dict[str, Any] = {}

        def reset(self, env: Any, seed: int) -> None:
            pass

        def act(self, env: Any, obs: torch.Tensor) -> torch.Tensor:  # hold the reset pose
            return env.targets_to_action(env.motion_library.initial_state(env.clip, env.start_frame).joint_rotvec)

    register_policy_loader("still", lambda arg: Still() if arg == "still" else None)
    assert isinstance(load_policy("still"), Still)
    still = evaluate([clip], load_policy("still"), EvalSettings(progress=False))
    assert still.policy == "still"
    assert still.clips[0]["E_h_cm"] > report.clips[0]["E_h_cm"]  # not following the clip costs accuracy
    with pytest.raises(EvalError, match="nope.onnx.*not found"):  # .onnx files have a loader now
        load_policy("nope.onnx")


def test_eval_cli_subject_skeleton(short_clips: tuple[Path, Path], tmp_path: Path) -> None:
    easy, _ = short_clips
    reports = {}
    for skeleton in ("default", "subject"):
        out = tmp_path / f"{skeleton}.json"
        args = ["eval", str(easy), "--skeleton", skeleton, "--json", str(out), "--no-progress"]
        assert cli.main(args) == 0
        reports[skeleton] = json.loads(out.read_text())
    assert reports["subject"]["skeleton"] == "subject" and reports["default"]["skeleton"] == "default"
    assert reports["subject"]["model_hashes"] != reports["default"]["model_hashes"]
    # the subject's FK is the clip's: tracking its bodies starts (and stays) closer
    assert reports["subject"]["E_h_cm"] < reports["default"]["E_h_cm"]
    trained = PDReplayPolicy(config_overrides={"skeleton": "default"})
    with pytest.raises(EvalError, match="trained with skeleton 'default', not 'subject'"):
        evaluate([load_motion(easy)], trained, EvalSettings(skeleton="subject", progress=False))


def test_eval_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", str(tmp_path / "missing.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and err.count("\n") == 1
    assert cli.main(["eval", "--policy", "bogus", str(tmp_path), "--no-progress"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("student, dim", [(False, 3198), (True, 6396)])
def test_obs_layout(student: bool, dim: int, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["obs-layout", "--json"] + (["--student"] if student else [])
    assert cli.main(args) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["layout"]
    assert data["spec"]["dim"] == dim == sum(r["dim"] for r in rows)
    assert all(a["start"] + a["dim"] == b["start"] for a, b in zip(rows, rows[1:]))
    assert cli.main(["obs-layout"] + (["--student"] if student else [])) == 0
    text = capsys.readouterr().out
    assert f"{dim} dims" in text and "interaction_graph_error" in text
