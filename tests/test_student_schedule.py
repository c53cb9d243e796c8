"""The DAgger -> PPO schedule: beta, loss weights by phase, the EV-gated PPO switch and its fallback."""

from __future__ import annotations

import math

import pytest
import yaml

from training.config import ConfigError, load_pipeline_config
from training.student.config import ScheduleConfig, StudentConfigError
from training.student.schedule import PPOGate, beta, explained_variance

UP = ScheduleConfig()  # upstream's numbers (spec 9.3)


def test_beta_holds_then_decays_linearly_to_zero():
    assert beta(UP, 0) == beta(UP, 500) == 1.0
    assert beta(UP, 501) == pytest.approx(1 - 1 / 5000)
    assert beta(UP, 3000) == pytest.approx(0.5)
    assert beta(UP, 5500) == 0.0 and beta(UP, 10**6) == 0.0
    quick = ScheduleConfig(beta_hold=2, beta_decay=4)
    assert [beta(quick, i) for i in range(8)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_loss_weights_by_phase_before_ppo():
    gate = PPOGate()
    w = gate.weights(UP, 100)
    assert (w.phase, w.ppo, w.value, w.bounds, w.expert) == ("dagger", 0.0, 0.0, 0.0, 1.0)
    w = gate.weights(UP, 5500)  # critic warm-up: value weight ramps to 5 over 1000 iterations
    assert w.phase == "critic_warmup" and w.value == pytest.approx(2.5) and w.expert == 1.0 and w.ppo == 0.0
    assert gate.weights(UP, 6500).value == pytest.approx(5.0)


def test_ppo_switch_waits_for_explained_variance_and_ramps():
    gate = PPOGate()
    for _ in range(50):  # EV is not tracked before ev_track_from, so PPO cannot start at 6500
        gate.observe(UP, 6500, 0.95)
    assert gate.ev_ma == 0.0 and gate.weights(UP, 6500).phase == "critic_warmup"
    ev, steps = 0.9, 0
    while gate.weights(UP, 7001).phase != "ppo":
        w = gate.weights(UP, 7001)
        gate.observe(UP, 7001, ev)
        gate.step(w)
        steps += 1
        assert steps < 1000
    # ev_ma = EV (1 - 0.99^m) crosses 0.6 at m = ceil(log(1/3) / log(0.99)) = 110, then a 3-streak
    crossing = math.ceil(math.log(1 - 0.6 / ev) / math.log(UP.ev_ema))
    assert steps == crossing + UP.ev_streak - 1
    first = gate.weights(UP, 7001)
    assert (first.ppo, first.value, first.bounds, first.expert) == (0.0, 5.0, 10.0, 1.0)
    for _ in range(2000):
        gate.observe(UP, 7001, ev)
        gate.step(gate.weights(UP, 7001))
    w = gate.weights(UP, 7001)
    assert gate.ppo_steps == 2000 and w.ppo == pytest.approx(0.5) and w.expert == pytest.approx(0.5)
    for _ in range(3000):
        gate.step(gate.weights(UP, 7001))
    w = gate.weights(UP, 7001)
    assert w.ppo == 1.0 and w.expert == pytest.approx(0.1)  # the expert-loss floor


def test_falling_explained_variance_falls_back_to_warmup_and_keeps_ppo_steps():
    cfg = ScheduleConfig(ppo_min_iteration=0, ev_track_from=0, ev_ema=0.0, ev_streak=2, critic_warmup_start=0)
    gate = PPOGate()
    changes = []
    for ev in (0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9):
        w = gate.weights(cfg, 10)
        gate.observe(cfg, 10, ev)
        changes.append(gate.step(w))
    # EV good twice -> PPO from the 3rd minibatch; EV drops -> warm-up; two good -> PPO again
    assert changes == ["critic_warmup", None, "ppo", None, None, "critic_warmup", None]
    assert gate.ppo_steps == 3 and gate.weights(cfg, 10).phase == "ppo"  # n persisted through the fallback
    restored = PPOGate()
    restored.load_state_dict(gate.state_dict())
    assert restored == gate


def test_explained_variance():
    assert explained_variance(4.0, 1.0) == 0.75
    assert explained_variance(0.0, 1.0) == 0.0


def test_schedule_settings_are_typed_and_checked(tmp_path):
    with pytest.raises(StudentConfigError, match="log_prob_of"):
        ScheduleConfig(log_prob_of="teacher")
    with pytest.raises(StudentConfigError, match="ev_ema"):
        ScheduleConfig(ev_ema=1.0)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"student": {"schedule": {"beta_hold": 3, "betta": 1}}}))
    with pytest.raises(ConfigError, match="student.schedule.*betta"):
        load_pipeline_config(path)
    path.write_text(yaml.safe_dump({"student": {"schedule": {"beta_hold": 3}, "network": {"type": "mlp"}}}))
    cfg = load_pipeline_config(path)
    assert cfg.student.schedule.beta_hold == 3 and cfg.student.network.type == "mlp"
