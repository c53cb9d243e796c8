"""Student training resumes exactly: a run interrupted at iteration 2 and resumed to 4 ends with
the same parameters, normaliser, schedule gate and phase log as one that never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.spec import teacher_spec
from intermimic_policy.sim.env_config import HOIEnvConfig
from training.checkpoint import save_checkpoint
from training.networks import TeacherActorCritic
from training.normalizer import RunningNormalizer
from training.student.config import (
    ScheduleConfig,
    StudentConfig,
    StudentEnvSettings,
    StudentNetConfig,
    StudentPPOConfig,
)
from training.student.trainer import StudentError, StudentTrainer


@pytest.fixture(scope="module")
def setup(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    clip = load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt").slice(0, 30)
    torch.manual_seed(0)
    spec = teacher_spec()
    net = TeacherActorCritic(spec.dim, 153, (16,))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, model_state=net.state_dict(), normalizer_state=RunningNormalizer(spec.dim).state_dict(),
                    optimizer_state=None, iteration=1, rng_state=None,
                    config={"env_config": HOIEnvConfig(num_worlds=1).to_dict()}, obs_spec=spec, kind="teacher",
                    model_hash="test", extra={"network": net.arch()})
    cfg = StudentConfig(
        iterations=4, save_interval=2, torch_threads=1,
        network=StudentNetConfig(d_model=16, layers=1, heads=2, ff=32, critic_hidden=(16,)),
        ppo=StudentPPOConfig(num_steps_per_env=4, num_learning_epochs=1, minibatch_size=8, learning_rate=1e-3),
        schedule=ScheduleConfig(beta_hold=1, beta_decay=2, critic_warmup_start=1, critic_warmup_ramp=1,
                                ppo_min_iteration=2, ev_track_from=1, ev_threshold=-1e9, ev_ema=0.0, ev_streak=1,
                                ppo_ramp_steps=4),
        env=StudentEnvSettings(num_envs=2, overrides={"episode_cap": 20, "threads": 1}))
    return {"clip": clip, "teacher": str(path), "cfg": cfg}


def _trainer(setup: dict, out: Path, cfg: StudentConfig | None = None) -> StudentTrainer:
    clip = setup["clip"]
    return StudentTrainer(cfg or setup["cfg"], [clip], [clip], {"t": setup["teacher"]}, {"t": [clip.name]}, out,
                          progress=False)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(setup: dict, tmp_path: Path):
    full = _trainer(setup, tmp_path / "full")
    full.train()
    part = _trainer(setup, tmp_path / "part")
    part.train(until=2)
    part.close()
    resumed = _trainer(setup, tmp_path / "part")
    assert resumed.restore_latest() == 2 and resumed.gate.phase == "critic_warmup"
    resumed.train()
    for key, value in full.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[key]), key
    assert resumed.gate == full.gate and resumed.gate.phase == "ppo"
    assert resumed.phase_log == full.phase_log and [p["phase"] for p in full.phase_log] == ["critic_warmup", "ppo"]
    history = resumed.logger.state() if resumed.logger else {}
    assert [it for it, _ in history["schedule/phase"]] == [1, 2, 3, 4]  # logged on every iteration, resumed too
    full.close()
    resumed.close()
    other = StudentConfig(**{**setup["cfg"].__dict__, "seed": 5})
    with pytest.raises(StudentError, match="other settings"):
        _trainer(setup, tmp_path / "part", other).train()
