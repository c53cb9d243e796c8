"""Teacher smoke: train a few PPO iterations on a short clip in the real MuJoCo HOIEnv, reload the
checkpoint, evaluate it (library and CLI), and resume to bit-equal parameters."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from intermimic_policy.contract import default_model_hash
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import save_motion
from intermimic_policy.observation.spec import student_spec
from intermimic_policy.sim.evaluate import load_policy
from training.checkpoint import CheckpointError, load_checkpoint
from training.cli import main as cli_main
from training.config import BCWarmStartConfig, EnvSettings, EvalSettings, PPOConfig, TeacherTrainConfig
from training.eval_policy import CheckpointPolicy
from training.teacher import TeacherError, TeacherTrainer, checkpoints_in, train_teacher


@pytest.fixture(scope="module")
def clip() -> HOIMotion:
    return make_example_motion().slice(0, 40)


def tiny_config(**kw: Any) -> TeacherTrainConfig:
    base: dict[str, Any] = dict(
        iterations=4, save_interval=2, seed=3, keep_checkpoints=2, torch_threads=1,
        ppo=PPOConfig(num_steps_per_env=8, num_learning_epochs=2, minibatch_size=32, hidden_dims=(64, 64)),
        env=EnvSettings(num_envs=4, overrides={"episode_cap": 30}),
        eval=EvalSettings(max_clips=1),
        # the warm start is part of the run that must resume bit-equal
        bc_warmstart=BCWarmStartConfig(iterations=2, epochs=1, minibatch_size=32),
    )
    base.update(kw)
    return TeacherTrainConfig(**base)


@pytest.fixture(scope="module")
def runs(clip: HOIMotion, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted run and one run stopped at iteration 2 and resumed."""
    root = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config()
    full = train_teacher("full", [clip], cfg, root / "full", progress=False)
    # evaluation settings are not part of the run: the split run skips it to save time
    split_cfg = tiny_config(eval=EvalSettings(enabled=False))
    part = train_teacher("split", [clip], split_cfg, root / "split", progress=False, until=2)
    assert part.iterations == 2 and not (root / "split" / "teacher.pt").exists()
    assert part.checkpoint.endswith("iter_00000002.pt")
    resumed = train_teacher("split", [clip], split_cfg, root / "split", progress=False)
    assert full.extra["resumed_from"] == 0 and resumed.extra["resumed_from"] == 2
    assert resumed.extra["trained_iterations"] == 2
    return {"full": root / "full", "split": root / "split", "root": root}


def test_resumed_run_is_bit_equal_to_uninterrupted(runs: dict[str, Path]):
    a = load_checkpoint(runs["full"] / "teacher.pt", expected_kind="teacher")
    b = load_checkpoint(runs["split"] / "teacher.pt", expected_kind="teacher")
    assert a.iteration == b.iteration == 4
    assert a.model_state.keys() == b.model_state.keys()
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    for key in a.normalizer_state:
        assert torch.equal(a.normalizer_state[key], b.normalizer_state[key]), key
    ta = load_checkpoint(runs["full"] / "checkpoints" / "iter_00000004.pt")
    tb = load_checkpoint(runs["split"] / "checkpoints" / "iter_00000004.pt")
    assert ta.optimizer_state is not None and tb.optimizer_state is not None
    for sa, sb in zip(ta.optimizer_state["state"].values(), tb.optimizer_state["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # training moved the weights away from the initial ones, and the std stayed fixed
    first = load_checkpoint(runs["full"] / "checkpoints" / "iter_00000002.pt")
    assert not torch.equal(first.model_state["mu.weight"], a.model_state["mu.weight"])
    assert torch.allclose(a.model_state["log_std"], torch.full((153,), -2.9))


def test_outputs_of_a_finished_teacher(runs: dict[str, Path]):
    out = runs["full"]
    assert [i for i, _ in checkpoints_in(out / "checkpoints")] == [2, 4]
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    result = json.loads((out / "result.json").read_text())
    assert result["iterations"] == 4 and result["samples"] == 4 * 4 * 8
    for summary in (result["metrics"], result["baseline"]):
        assert set(summary) >= {"success_rate", "mean_duration_s", "E_h_cm", "E_o_cm"}
        assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_duration_s"] > 0
    final = load_checkpoint(out / "teacher.pt")
    assert final.optimizer_state is None and final.extra["network"]["type"] == "teacher_mlp"
    # the teacher and its baseline ran in the same physics model, the one it was trained in
    report = json.loads((out / "eval.json").read_text())
    assert report["teacher"]["model_hashes"] == report["pd_replay"]["model_hashes"]
    assert set(report["teacher"]["model_hashes"].values()) == {final.extra["scene_hash"]}
    # the checkpoint (and so the exported contract) names the humanoid, not the scene
    assert final.model_hash == default_model_hash()


def test_history_survives_resume(runs: dict[str, Path]):
    ckpt = load_checkpoint(runs["split"] / "checkpoints" / "iter_00000004.pt")
    iterations = [int(i) for i, _ in ckpt.extra["history"]["reward/mean"]]
    assert iterations == [1, 2, 3, 4]
    # the warm start's two rounds sit just before PPO's first iteration, and are not redone
    assert [int(i) for i, _ in ckpt.extra["history"]["bc/actor_mse"]] == [-1, 0]
    assert ckpt.extra["bc_warmstart"]["rounds"] == 2 and ckpt.extra["bc_warmstart"]["samples"] == 2 * 4 * 8


def test_warm_start_clones_pd_replay_in_the_real_env(clip: HOIMotion, tmp_path: Path):
    cfg = tiny_config(ppo=PPOConfig(num_steps_per_env=8, hidden_dims=(128, 128)), env=EnvSettings(num_envs=8),
                      bc_warmstart=BCWarmStartConfig(iterations=4, epochs=30, lr=1e-3, minibatch_size=64))
    trainer = TeacherTrainer("bc", [clip], cfg, tmp_path, progress=False)
    try:
        env = trainer.env

        def imitation_error() -> float:
            obs = env.reset(start_frames=torch.tensor([0, 5, 10, 15, 20, 25, 30, 35]),
                            clip_ids=torch.zeros(8, dtype=torch.long))
            with torch.no_grad():
                mean = trainer.policy.action_mean(obs)
            return float((mean - env.pd_replay_actions()).square().mean())

        before = imitation_error()
        result = trainer.warm_start()
        after = imitation_error()
    finally:
        trainer.close()
    assert result.samples == 4 * 8 * 8
    assert after < 0.2 * before, (before, after)
    assert trainer.bc_summary is not None and trainer.bc_summary["rounds"] == 4
    assert math.isfinite(trainer.bc_summary["final_critic_mse"])


def test_checkpoint_reloads_and_evaluates_deterministically(runs: dict[str, Path], clip: HOIMotion):
    from intermimic_policy.sim.evaluate import EvalSettings as Settings
    from intermimic_policy.sim.evaluate import evaluate

    policy = load_policy(str(runs["full"] / "teacher.pt"))
    assert isinstance(policy, CheckpointPolicy)
    obs = torch.randn(3, policy.policy.obs_dim)
    env: Any = _FakeEnv()  # act() only reads env.device
    a1, a2 = policy.act(env, obs), policy.act(env, obs)
    assert torch.equal(a1, a2) and a1.shape == (3, 153) and float(a1.abs().max()) <= 1.0
    settings = Settings(progress=False)
    r1 = evaluate([clip], policy, settings).summary()
    r2 = evaluate([clip], policy, settings).summary()
    assert r1["mean_duration_s"] == r2["mean_duration_s"] and r1["E_h_cm"] == r2["E_h_cm"]


class _FakeEnv:
    device = torch.device("cpu")


def test_intermimic_eval_cli_with_checkpoint(runs: dict[str, Path], clip: HOIMotion, capsys):
    clip_file = runs["root"] / "clip.npz"
    save_motion(clip, clip_file)
    report = runs["root"] / "eval.json"
    rc = cli_main(["eval", "--policy", str(runs["full"] / "teacher.pt"), str(clip_file), "--no-progress",
                   "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0 and "teacher:teacher.pt@4" in out and "E_h" in out
    data = json.loads(report.read_text())
    assert data["clips_evaluated"] == 1 and "success_rate" in data
    rc = cli_main(["eval", "--policy", str(runs["root"] / "missing.pt"), str(clip_file), "--no-progress"])
    assert rc == 2 and "checkpoint file not found" in capsys.readouterr().err


def test_other_layout_and_corrupt_checkpoints_fail_clearly(runs: dict[str, Path]):
    with pytest.raises(CheckpointError, match="observation layout does not match"):
        load_checkpoint(runs["full"] / "teacher.pt", expected_spec=student_spec())
    bad = runs["root"] / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_policy(str(bad))


def test_resume_refuses_a_run_with_other_settings(runs: dict[str, Path], clip: HOIMotion):
    trainer = TeacherTrainer("split", [clip], tiny_config(seed=4), runs["split"], progress=False)
    try:
        with pytest.raises(TeacherError, match="other settings"):
            trainer.restore_latest()
    finally:
        trainer.close()
