"""Perturbations (sim.perturb): parsing, and what each one does to a real HOIEnv."""

from __future__ import annotations

import mujoco
import pytest
import torch

from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import EnvConfigError, HOIEnvConfig, eval_config
from intermimic_policy.sim.perturb import Perturbation, PerturbError, parse_perturb


@pytest.fixture(scope="module")
def clip():
    return make_example_motion().slice(0, 40)


def _env(clip, **pert) -> HOIEnv:
    return HOIEnv(eval_config(num_worlds=1, threads=1, perturb=Perturbation(**pert)), [clip])


def _start(env: HOIEnv) -> torch.Tensor:
    return env.reset(torch.zeros(1, dtype=torch.long), clip_ids=torch.zeros(1, dtype=torch.long),
                     start_frames=torch.zeros(1, dtype=torch.long))


def test_parse_perturb_reads_key_values_and_refuses_bad_ones() -> None:
    p = parse_perturb(["object_mass=1.2", "object_friction=0.8", "action_delay=2", "obs_noise=0.01", "push=0.3"])
    assert (p.object_mass, p.object_friction, p.action_delay, p.obs_noise, p.push) == (1.2, 0.8, 2, 0.01, 0.3)
    assert p.changed() == {"object_mass": 1.2, "object_friction": 0.8, "action_delay": 2, "obs_noise": 0.01,
                           "push": 0.3}
    for bad, why in (("mass=2", "unknown key"), ("object_mass", "KEY=VALUE"), ("object_mass=-1", "positive"),
                     ("action_delay=1.5", "int"), ("obs_noise=x", "float")):
        with pytest.raises(PerturbError, match=why):
            parse_perturb([bad])
    with pytest.raises(EnvConfigError, match="unknown setting"):
        HOIEnvConfig.from_dict({"perturb": {"gravity": 2.0}})
    assert HOIEnvConfig.from_dict({"perturb": {"object_mass": 1.2}}).perturb.object_mass == 1.2


def test_mass_and_friction_scales_reach_the_model(clip) -> None:
    plain, heavy = _env(clip), _env(clip, object_mass=1.2, object_friction=0.8, floor_friction=0.5)
    try:
        def body_mass(env: HOIEnv) -> float:
            m = env.groups[0].scene.model
            return float(m.body_mass[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object")])

        assert body_mass(heavy) == pytest.approx(1.2 * body_mass(plain), rel=1e-6)
        mp, mh = plain.groups[0].scene.model, heavy.groups[0].scene.model
        obj = [i for i in range(mp.ngeom) if (mujoco.mj_id2name(mp, mujoco.mjtObj.mjOBJ_GEOM, i) or "").startswith("object_part")]
        # MuJoCo takes the larger friction of a pair: the scaled geom must win its pairs with the
        # humanoid (priority 1), scaling the friction the hands and feet really get (0.9 unscaled)
        hand = max(float(mp.geom_friction[i, 0]) for i in range(mp.ngeom) if mp.geom_bodyid[i] != 0
                   and not (mujoco.mj_id2name(mp, mujoco.mjtObj.mjOBJ_GEOM, i) or "").startswith("object"))
        pair_obj = max(float(mp.geom_friction[obj[0], 0]), hand)
        assert mh.geom_friction[obj[0], 0] == pytest.approx(0.8 * pair_obj)
        assert mh.geom_priority[obj[0]] == 1 and mp.geom_priority[obj[0]] == 0
        pair_floor = max(float(mp.geom_friction[0, 0]), hand)
        assert mh.geom_friction[0, 0] == pytest.approx(0.5 * pair_floor)  # the floor
        assert mh.geom_priority[0] == 1 and mp.geom_priority[0] == 0
    finally:
        plain.close()
        heavy.close()


def test_action_delay_applies_the_targets_of_earlier_steps(clip) -> None:
    delayed, plain = _env(clip, action_delay=1), _env(clip)
    try:
        _start(delayed)
        _start(plain)
        a = delayed.pd_replay_actions()
        b = torch.zeros_like(a)
        delayed.step(a)  # first step: its own targets (nothing earlier)
        delayed.step(b)  # second step: still a's targets
        plain.step(a)
        plain.step(a)
        torch.testing.assert_close(delayed.sim_state().body_pos, plain.sim_state().body_pos)
        delayed.step(b)  # now b's
        plain.step(a)
        assert float((delayed.sim_state().body_pos - plain.sim_state().body_pos).abs().max()) > 1e-4
    finally:
        delayed.close()
        plain.close()


def test_observation_noise_and_pushes(clip) -> None:
    noisy, plain = _env(clip, obs_noise=0.05), _env(clip)
    pushed = _env(clip, push=0.5, push_interval_s=1.0 / 30.0)
    try:
        diff = _start(noisy) - _start(plain)
        assert 0.04 < float(diff.std()) < 0.06
        _start(pushed)
        a = pushed.pd_replay_actions()
        pushed.step(a)
        plain.step(a)
        pushed.step(a)  # the kick lands before this step
        plain.step(a)
        v_push, v_plain = pushed.sim_state().body_lin_vel[0, 0], plain.sim_state().body_lin_vel[0, 0]
        assert float((v_push - v_plain)[:2].norm()) > 0.1
    finally:
        noisy.close()
        plain.close()
        pushed.close()
