"""Training checkpoints: atomic, weights-only, layout-checked, resumable bit for bit."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.observation.spec import ObservationSpec, teacher_spec
from training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from training.networks import TeacherActorCritic
from training.normalizer import RunningNormalizer

SPEC = teacher_spec()


def _small() -> tuple[TeacherActorCritic, RunningNormalizer, torch.optim.Adam]:
    net = TeacherActorCritic(SPEC.dim, hidden=(16, 16))
    norm = RunningNormalizer(SPEC.dim)
    return net, norm, torch.optim.Adam(net.parameters(), lr=1e-3)


def _train_step(net: TeacherActorCritic, norm: RunningNormalizer, opt: torch.optim.Optimizer) -> None:
    """A step that consumes python, numpy and torch randomness, like a rollout + update does."""
    obs = torch.randn(8, SPEC.dim) + float(np.random.rand()) + random.random()
    norm.update(obs)
    actions, _, _ = net.act(norm(obs))
    log_prob, value, _ = net.evaluate(norm(obs), actions.detach())
    loss = -(log_prob.mean()) + value.square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _save(path: Path, net, norm, opt, iteration: int, spec: ObservationSpec = SPEC) -> Path:
    return save_checkpoint(
        path, model_state=net.state_dict(), normalizer_state=norm.state_dict(),
        optimizer_state=opt.state_dict(), iteration=iteration, rng_state=capture_rng_state(),
        config={"ppo": {"lr": 1e-3}, "clips": ["a", "b"]}, obs_spec=spec, kind="teacher",
        model_hash="abc123", extra={"network": net.arch(), "history": [1.0, 2.0]},
    )


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, norm, opt = _small()
    _train_step(net, norm, opt)
    path = _save(tmp_path / "ckpt.pt", net, norm, opt, iteration=7)
    ckpt = load_checkpoint(path, expected_spec=SPEC, expected_kind="teacher")
    assert ckpt.iteration == 7 and ckpt.kind == "teacher" and ckpt.model_hash == "abc123"
    assert ckpt.obs_spec.differences(SPEC) == []
    assert ckpt.config == {"ppo": {"lr": 1e-3}, "clips": ["a", "b"]}
    assert ckpt.extra["network"]["hidden"] == [16, 16]
    for k, v in net.state_dict().items():
        assert torch.equal(ckpt.model_state[k], v)
    assert torch.equal(ckpt.normalizer_state["var"], norm.var)
    opt2 = torch.optim.Adam(TeacherActorCritic(SPEC.dim, hidden=(16, 16)).parameters(), lr=1e-3)
    assert ckpt.optimizer_state is not None
    opt2.load_state_dict(ckpt.optimizer_state)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    # no temporary files are left next to the checkpoint
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_resumed_run_reaches_the_same_state(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    net, norm, opt = _small()
    for _ in range(2):
        _train_step(net, norm, opt)
    path = _save(tmp_path / "mid.pt", net, norm, opt, iteration=2)
    for _ in range(3):
        _train_step(net, norm, opt)
    reference = {k: v.clone() for k, v in net.state_dict().items()}

    # a fresh process-like start: different RNG, fresh modules, then resume
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    net2, norm2, opt2 = _small()
    ckpt = load_checkpoint(path, expected_spec=SPEC)
    assert ckpt.optimizer_state is not None and ckpt.rng_state is not None
    net2.load_state_dict(ckpt.model_state)
    norm2.load_state_dict(ckpt.normalizer_state)
    opt2.load_state_dict(ckpt.optimizer_state)
    restore_rng_state(ckpt.rng_state)
    for _ in range(3):
        _train_step(net2, norm2, opt2)
    for k, v in net2.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert torch.equal(norm2.mean, norm.mean)


def test_other_observation_layout_is_refused_with_its_differences(tmp_path: Path) -> None:
    net, norm, opt = _small()
    path = _save(tmp_path / "c.pt", net, norm, opt, iteration=0)
    other = ObservationSpec(ref_offsets=(1, 4))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected_spec=other)
    assert "reference offsets [1, 16] != [1, 4]" in str(err.value)
    assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="expected a student"):
        load_checkpoint(path, expected_kind="student")


def test_corrupt_truncated_and_foreign_files_fail_cleanly(tmp_path: Path) -> None:
    net, norm, opt = _small()
    good = _save(tmp_path / "good.pt", net, norm, opt, iteration=0)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": net.state_dict()}, foreign)
    for bad, words in ((truncated, "not a readable checkpoint"), (garbage, "not a readable checkpoint"),
                       (foreign, "not an intermimic checkpoint"), (tmp_path / "missing.pt", "not found")):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value) and words in str(err.value)


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_never_executed(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "intermimic-checkpoint", "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights only"):
        load_checkpoint(evil)


def test_save_refuses_objects_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    net, norm, opt = _small()
    path = _save(tmp_path / "c.pt", net, norm, opt, iteration=3)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"\['extra'\]\['arr'\] is a ndarray"):
        save_checkpoint(path, model_state=net.state_dict(), normalizer_state=norm.state_dict(),
                        optimizer_state=None, iteration=4, rng_state=None, config={}, obs_spec=SPEC,
                        kind="teacher", model_hash="x", extra={"arr": np.zeros(3)})
    assert path.read_bytes() == before
    with pytest.raises(CheckpointError, match="kind"):
        save_checkpoint(path, model_state={}, normalizer_state={}, optimizer_state=None, iteration=0,
                        rng_state=None, config={}, obs_spec=SPEC, kind="critic", model_hash="x")
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]
