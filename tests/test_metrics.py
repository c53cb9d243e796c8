"""Tracking errors and per-attempt episode statistics."""

from __future__ import annotations

import math

import pytest
import torch

from intermimic_policy.embodiment.smplx_body import KEY_BODIES, NUM_BODIES, body_index
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.sim.metrics import EpisodeMetrics, human_error, object_error, step_errors
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import object_points_world


def test_human_error_is_the_mean_key_body_distance():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, NUM_BODIES, 3, generator=g)
    pos = ref.clone()
    pos[:, list(KEY_BODIES)] += torch.tensor([0.0, 0.06, 0.08])  # 0.1 m each
    torch.testing.assert_close(human_error(pos, ref), torch.full((2,), 0.1))
    pos2 = ref.clone()
    pos2[:, body_index("L_Index3")] += 5.0  # fingers are not key bodies
    pos2[0, KEY_BODIES[0]] += torch.tensor([0.21, 0.0, 0.0])
    torch.testing.assert_close(human_error(pos2, ref), torch.tensor([0.21 / len(KEY_BODIES), 0.0]))


def test_object_error_over_surface_points_sees_rotation():
    angle = torch.linspace(0, 2 * math.pi, 65)[:-1]
    ring = torch.stack([0.3 * torch.cos(angle), 0.3 * torch.sin(angle), torch.zeros(64)], -1)  # r = 0.3 m
    pts = ring.unsqueeze(0)
    ident = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    turned = quat.from_yaw(torch.tensor([math.pi]))
    a = object_points_world(pts, torch.zeros(1, 3), ident)
    b = object_points_world(pts, torch.zeros(1, 3), turned)
    torch.testing.assert_close(object_error(b, a), torch.tensor([0.6]))  # half a turn: 2 r
    c = object_points_world(pts, torch.tensor([[0.0, 0.0, 0.05]]), ident)
    torch.testing.assert_close(object_error(c, a), torch.tensor([0.05]))


def test_step_errors_from_states():
    n = 1
    z = torch.zeros(n, NUM_BODIES, 3)
    rot = torch.zeros(n, NUM_BODIES, 4)
    rot[..., 3] = 1
    orot = torch.tensor([[0.0, 0, 0, 1]])
    sim = SimState(z + 0.1, rot, z, z, torch.zeros(n, 51, 3), torch.zeros(n, 51, 3),
                   torch.zeros(n, NUM_BODIES, dtype=torch.bool), torch.zeros(n, NUM_BODIES, dtype=torch.bool),
                   z, torch.tensor([[0.0, 0.2, 0.0]]), orot, torch.zeros(n, 3), torch.zeros(n, 3),
                   torch.zeros(n, dtype=torch.bool))
    ref = RefFrame(z + torch.tensor([0.1, 0.1, 0.2]), rot, z, z, torch.zeros(n, 3), orot, torch.zeros(n, 3),
                   torch.zeros(n, 3), torch.zeros(n, NUM_BODIES), torch.zeros(n, dtype=torch.bool), z)
    e_h, e_o = step_errors(sim, ref, torch.randn(n, 10, 3))
    torch.testing.assert_close(e_h, torch.tensor([0.1]))
    torch.testing.assert_close(e_o, torch.tensor([0.2]))


def test_episode_metrics_count_every_attempt():
    m = EpisodeMetrics(torch.tensor([10, 20]), num_envs=3, fps=30.0, clip_names=["a", "b"])
    ids = torch.tensor([0, 1, 2])
    m.begin(ids, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]))
    for step in range(1, 10):
        m.step(torch.tensor([0.01, 0.03, 0.02]), torch.tensor([0.02, 0.04, 0.01]))
        if step == 4:  # world 1 fails at frame 4
            m.end(torch.tensor([1]), torch.tensor([4]), torch.tensor([True]))
    m.end(torch.tensor([0, 2]), torch.tensor([9, 9]), torch.tensor([False, False]))  # 2: time-out at 9 of 20
    s = m.summary()
    assert s["attempts"] == 3 and m.num_attempts == 3
    assert s["successes"] == 1
    assert s["success_rate"] == pytest.approx(1 / 3)
    assert s["mean_duration_s"] == pytest.approx((9 + 4 + 9) / 3 / 30.0)
    assert s["E_h_cm"] == pytest.approx((1.0 + 3.0 + 2.0) / 3)
    assert s["E_o_cm"] == pytest.approx((2.0 + 4.0 + 1.0) / 3)
    a, b = s["clips"]
    assert (a["clip"], a["frames"], a["attempts"], a["success_rate"]) == ("a", 10, 2, 0.5)
    assert a["E_h_cm"] == pytest.approx(2.0) and a["E_h_cm_std"] == pytest.approx(1.0)
    assert (b["clip"], b["attempts"], b["successes"]) == ("b", 1, 0)
    assert b["mean_duration_s"] == pytest.approx(0.3)
    # a second attempt on "b" that succeeds: per attempt, not best-of
    m.begin(torch.tensor([2]), torch.tensor([1]), torch.tensor([0]))
    m.step(torch.tensor([0.5]), torch.tensor([0.5]), env_ids=torch.tensor([2]))
    m.end(torch.tensor([2]), torch.tensor([19]), torch.tensor([False]))
    b = m.summary()["clips"][1]
    assert (b["attempts"], b["successes"], b["success_rate"]) == (2, 1, 0.5)
    assert b["E_h_cm"] == pytest.approx((2.0 + 50.0) / 2)


def test_steps_of_ended_worlds_are_ignored_and_ending_twice_is_harmless():
    m = EpisodeMetrics(torch.tensor([10]), num_envs=2)
    m.begin(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    m.step(torch.tensor([0.1, 0.1]), torch.tensor([0.1, 0.1]))
    m.end(torch.tensor([1]), torch.tensor([1]), torch.tensor([True]))
    m.step(torch.tensor([0.3, 9.0]), torch.tensor([0.3, 9.0]))  # world 1 is between episodes
    m.end(torch.tensor([0, 1]), torch.tensor([9, 9]), torch.tensor([False, False]))
    s = m.summary()
    assert s["attempts"] == 2
    assert s["E_h_cm"] == pytest.approx((20.0 + 10.0) / 2)
    empty = EpisodeMetrics(torch.tensor([10]), num_envs=1).summary()
    assert empty["attempts"] == 0 and math.isnan(empty["success_rate"]) and empty["clips"] == []
