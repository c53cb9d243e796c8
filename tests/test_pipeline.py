"""run_pipeline: stages, skip on rerun, report.json, errors; subsets, YAML configs and job runners."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, JobsConfig, PipelineConfig, TeacherSpec, digest, load_pipeline_config
from training.jobs import JobError, run_jobs
from training.run_pipeline import PIPELINE_ORDER, main, marker_path, resolve_stages
from training.subsets import ClipSubset, SubsetError, load_clips, resolve_clip_sources, select, subject_of
from training.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "clip_frames": 30,
    "stages": ["teachers", "export"],
    "teacher": {
        "iterations": 2, "save_interval": 2, "seed": 1, "torch_threads": 1,
        "env": {"num_envs": 4, "overrides": {"episode_cap": 30}},
        "ppo": {"num_steps_per_env": 8, "num_learning_epochs": 1, "minibatch_size": 32, "hidden_dims": [32, 32]},
        "eval": {"max_clips": 1},
    },
    "teachers": [{"name": "all"}],
}


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    cfg = write_config(root / "tiny.yaml", TINY)
    out = root / "out"
    assert main(["--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return {"root": root, "cfg": cfg, "out": out}


def test_report_has_teacher_checkpoint_metrics_and_baseline(pipeline_run: dict):
    report = json.loads((pipeline_run["out"] / "report.json").read_text())
    assert report["clips"] == ["example"] and "teachers" in report["stages"]
    (teacher,) = report["teachers"]
    assert teacher["name"] == "all" and Path(teacher["checkpoint"]).is_file()
    assert Path(teacher["learning_curve"]).is_file() and teacher["iterations"] == 2
    for key in ("metrics", "pd_replay"):
        m = teacher[key]
        for field in ("success_rate", "mean_duration_s", "E_h_cm", "E_o_cm"):
            assert isinstance(m[field], float), (key, field)
        assert m["mean_duration_s"] > 0


def test_export_stage_writes_loadable_onnx_with_the_env_contract(pipeline_run: dict):
    import numpy as np
    import torch

    from intermimic_policy.runtime.loader import load_policy
    from intermimic_policy.sim.env import HOIEnv
    from training.eval_policy import load_checkpoint_policy
    from training.teacher import env_config

    report = json.loads((pipeline_run["out"] / "report.json").read_text())
    assert "export" in report["stages"]
    (teacher,), (exported,) = report["teachers"], report["exports"]
    assert exported["name"] == "all" and exported["checkpoint"] == teacher["checkpoint"]
    onnx_path = Path(exported["onnx"])
    assert onnx_path.suffix == ".onnx" and onnx_path.is_file() and exported["max_error"] <= 1e-4
    policy = load_policy(onnx_path, backend="onnxruntime")  # verifies the golden pairs too
    assert policy.contract.kind == "teacher"
    # the contract names the physics model the teacher was trained in
    config = load_pipeline_config(pipeline_run["cfg"])
    clips = load_clips(["example"], config.clip_frames)
    env = HOIEnv(env_config(config.teacher).with_(num_worlds=2, backend="mujoco"), [c.motion for c in clips])
    try:
        obs = env.reset()
        assert policy.contract.model_hash == env.humanoid_hash == exported["model_hash"]
        # and on the env's own observations the ONNX graph acts as the checkpoint does
        torch_policy = load_checkpoint_policy(teacher["checkpoint"])
        with torch.no_grad():
            expected = torch_policy.policy.action_mean(obs).numpy()
        got = np.asarray(policy(obs.numpy().astype(np.float32)))
        np.testing.assert_allclose(got, expected, atol=1e-4)
    finally:
        env.close()


def test_export_resumes_per_teacher_and_needs_teachers(pipeline_run: dict, capsys):
    out = pipeline_run["out"]
    onnx_path = out / "export" / "all.onnx"
    before = onnx_path.stat().st_mtime_ns
    marker_path(out, "export").unlink()  # as if interrupted after the ONNX file was written
    capsys.readouterr()
    assert main(["--config", str(pipeline_run["cfg"]), "--out", str(out), "--stages", "export",
                 "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out and onnx_path.stat().st_mtime_ns == before
    assert marker_path(out, "export").is_file()
    rc = main(["--config", str(pipeline_run["cfg"]), "--out", str(pipeline_run["root"] / "fresh"),
               "--stages", "export", "--no-progress"])
    assert rc == 2 and "needs the teachers stage" in capsys.readouterr().err


def test_rerun_skips_finished_stage(pipeline_run: dict, capsys):
    marker = marker_path(pipeline_run["out"], "teachers")
    ckpt = pipeline_run["out"] / "teachers" / "all" / "teacher.pt"
    before = (marker.stat().st_mtime_ns, ckpt.stat().st_mtime_ns)
    capsys.readouterr()
    assert main(["--config", str(pipeline_run["cfg"]), "--out", str(pipeline_run["out"]), "--no-progress"]) == 0
    assert "already done" in capsys.readouterr().out
    assert (marker.stat().st_mtime_ns, ckpt.stat().st_mtime_ns) == before


def test_rerun_with_other_settings_is_refused(pipeline_run: dict, capsys):
    changed = json.loads(json.dumps(TINY))
    changed["teacher"]["seed"] = 2
    cfg = write_config(pipeline_run["root"] / "changed.yaml", changed)
    assert main(["--config", str(cfg), "--out", str(pipeline_run["out"]), "--no-progress"]) == 2
    assert "finished with other settings" in capsys.readouterr().err


def test_unknown_stage_is_a_clear_error(pipeline_run: dict, capsys):
    rc = main(["--config", str(pipeline_run["cfg"]), "--out", str(pipeline_run["root"] / "x"), "--stages", "bogus"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown stage 'bogus'" in err and "available: teachers, distill, student, evaluate, export" in err
    # a stage whose inputs are missing names the stage to run first
    rc = main(["--config", str(pipeline_run["cfg"]), "--out", str(pipeline_run["root"] / "x"), "--stages", "distill"])
    assert rc == 2 and "needs the teachers stage" in capsys.readouterr().err
    assert resolve_stages(["export", "teachers"]) == ["teachers", "export"]
    assert PIPELINE_ORDER[0] == "teachers" and "export" in PIPELINE_ORDER


def test_interrupted_teacher_resumes_inside_the_pipeline(tmp_path: Path):
    data = json.loads(json.dumps(TINY))
    data["teacher"]["iterations"] = 4
    data["teacher"]["eval"] = {"enabled": False}
    cfg_path = write_config(tmp_path / "c.yaml", data)
    config = load_pipeline_config(cfg_path)
    # what an interrupted pipeline leaves behind: the teacher's folder with a checkpoint at 2
    clips = load_clips(["example"], config.clip_frames)
    tcfg = config.teacher_config(config.teachers[0])
    part = train_teacher("all", [c.motion for c in clips], tcfg, tmp_path / "out" / "teachers" / "all",
                         clip_sources=["example"], progress=False, until=2)
    assert part.iterations == 2
    assert main(["--config", str(cfg_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out" / "teachers" / "all" / "result.json").read_text())
    assert result["iterations"] == 4 and result["extra"]["resumed_from"] == 2


def test_pipeline_on_a_real_clip(motions_root: Path, tmp_path: Path):
    clip = motions_root / "OMOMO_new" / "sub2_largetable_000.pt"
    data = json.loads(json.dumps(TINY))
    data["teacher"]["iterations"] = 1
    data["teacher"]["save_interval"] = 1
    data["teacher"]["eval"] = {"enabled": False}
    data["teachers"] = [{"name": "sub2", "subject": "sub2", "object": "largetable"}]
    cfg = write_config(tmp_path / "real.yaml", data)
    assert main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--clips", str(clip),
                 "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["teachers"][0]["clips"] == [str(clip.resolve())]


# -- subsets ---------------------------------------------------------------------------------------
def test_subsets_by_subject_object_and_paths(motions_root: Path):
    folder = motions_root / "OMOMO_new"
    sources = resolve_clip_sources([str(folder / "sub2_largetable_00[01].pt"), str(folder / "sub2_woodchair_*.pt")])
    assert len(sources) == 2 + len(list(folder.glob("sub2_woodchair_*.pt")))
    clips = load_clips(sources[:2] + sources[-1:], frames=5)
    assert all(subject_of(c) == "sub2" for c in clips)
    assert len(select(ClipSubset(subject="sub2"), clips)) == 3
    chairs = select(ClipSubset(object="woodchair"), clips)
    assert [c.motion.object_name for c in chairs] == ["woodchair"]
    picked = select(ClipSubset(paths=("sub2_largetable_001.pt",)), clips)
    assert [Path(c.source).name for c in picked] == ["sub2_largetable_001.pt"]
    with pytest.raises(SubsetError, match="sub9"):
        select(ClipSubset(subject="sub9"), clips, teacher="t9")


def test_clip_sources_errors_name_the_pattern(tmp_path: Path):
    with pytest.raises(SubsetError, match="nothing_here"):
        resolve_clip_sources([str(tmp_path / "nothing_here_*.pt")])
    with pytest.raises(SubsetError, match="no such file"):
        resolve_clip_sources([str(tmp_path / "missing.pt")])
    os.environ.pop("INTERMIMIC_UNSET_VAR_FOR_TEST", None)
    with pytest.raises(ConfigError, match="INTERMIMIC_UNSET_VAR_FOR_TEST"):
        resolve_clip_sources(["$INTERMIMIC_UNSET_VAR_FOR_TEST/a.pt"])


# -- configs ---------------------------------------------------------------------------------------
def test_shipped_pipeline_configs_load():
    smoke = load_pipeline_config(REPO / "config" / "pipeline" / "smoke.yaml")
    default = load_pipeline_config(REPO / "config" / "pipeline" / "default.yaml")
    one_clip = load_pipeline_config(REPO / "config" / "pipeline" / "one_clip_cpu.yaml")
    assert smoke.clips == () and smoke.stages == ("teachers", "distill", "student", "evaluate", "export")
    assert smoke.teacher.bc_warmstart.enabled and one_clip.teacher.bc_warmstart.enabled
    ppo = default.teacher.ppo
    assert (ppo.learning_rate, ppo.num_learning_epochs, ppo.num_steps_per_env) == (2e-5, 6, 32)
    assert default.teacher.env.num_envs == 4096 and default.teachers[0].subject == "sub2"
    assert not default.teacher.bc_warmstart.enabled  # upstream trains teachers without it
    assert one_clip.clips[0].endswith("OMOMO_new/sub2_largetable_000.pt")


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path: Path):
    bad = write_config(tmp_path / "bad.yaml", {"teacher": {"ppo": {"gama": 0.9}}})
    with pytest.raises(ConfigError, match=r"bad.yaml.*teacher.ppo.*gama"):
        load_pipeline_config(bad)
    wrong = write_config(tmp_path / "wrong.yaml", {"teacher": {"iterations": "many"}})
    with pytest.raises(ConfigError, match="iterations.*integer"):
        load_pipeline_config(wrong)
    with pytest.raises(ConfigError, match="unique"):
        PipelineConfig(teachers=(TeacherSpec("a"), TeacherSpec("a")))
    with pytest.raises(ConfigError, match="jobs.mode"):
        JobsConfig(mode="slurm")
    assert digest(PipelineConfig()) == digest(PipelineConfig()) != digest(PipelineConfig(clip_frames=10))


# -- jobs ------------------------------------------------------------------------------------------
def test_jobs_sequential_and_processes_keep_order_and_collect_failures():
    jobs = [{"a": 1}, {"b": [2, 3]}, {"c": "x"}]
    expected = [digest(j) for j in jobs]
    assert run_jobs(digest, jobs, JobsConfig(mode="sequential")) == expected
    assert run_jobs(digest, jobs, JobsConfig(mode="processes", workers=2)) == expected
    from training.config import expand_path

    os.environ.pop("INTERMIMIC_UNSET_VAR_FOR_TEST", None)
    with pytest.raises(JobError, match=r"1 of 2 job\(s\) failed.*INTERMIMIC_UNSET_VAR_FOR_TEST"):
        run_jobs(expand_path, ["/tmp/ok", "$INTERMIMIC_UNSET_VAR_FOR_TEST/x"], JobsConfig(mode="processes"))


def test_jobs_on_a_local_ray_instance():
    import ray  # in the dev extra, so CI runs this
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        jobs = [{"a": 1}, {"b": 2}]
        assert run_jobs(digest, jobs, JobsConfig(mode="ray")) == [digest(j) for j in jobs]
    finally:
        ray.shutdown()
