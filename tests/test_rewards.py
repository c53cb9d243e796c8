"""Reward factors: 1 at zero error, falling with error, contact promotion and penalty."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from intermimic_policy.embodiment.smplx_body import (
    KEY_BODIES,
    LEFT_HAND_BODIES,
    NUM_BODIES,
    NUM_JOINTS,
    RIGHT_HAND_BODIES,
    body_index,
)
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.sim.rewards import (
    PrevVelocities,
    RewardConfigError,
    RewardWeights,
    body_pos_reward,
    compute_reward,
    hand_contact_reward,
    other_contact_reward,
    penalty_contact_reward,
)
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import nearest_point_vectors, object_points_world

N = 2


def scene(seed: int = 0) -> tuple[SimState, RefFrame, torch.Tensor]:
    """A random simulated state, the reference it tracks perfectly, and object points.

    No contacts, no labels, no forces: every factor must be exactly 1."""
    g = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g)

    sim = SimState(
        body_pos=r(N, NUM_BODIES, 3) * 0.4 + torch.tensor([0.0, 0.0, 1.0]),
        body_rot=quat.normalize(r(N, NUM_BODIES, 4)), body_lin_vel=r(N, NUM_BODIES, 3),
        body_ang_vel=r(N, NUM_BODIES, 3), joint_rotvec=r(N, NUM_JOINTS, 3) * 0.3,
        joint_ang_vel=r(N, NUM_JOINTS, 3), body_contact=torch.zeros(N, NUM_BODIES, dtype=torch.bool),
        body_object_contact=torch.zeros(N, NUM_BODIES, dtype=torch.bool),
        body_contact_force=torch.zeros(N, NUM_BODIES, 3), object_pos=r(N, 3) * 0.2 + torch.tensor([0.4, 0, 0.8]),
        object_rot=quat.normalize(r(N, 4)), object_lin_vel=r(N, 3), object_ang_vel=r(N, 3),
        object_contact=torch.zeros(N, dtype=torch.bool),
    )
    pts = r(N, 30, 3) * 0.2
    ref = RefFrame(
        body_pos=sim.body_pos.clone(), body_rot=sim.body_rot.clone(), body_lin_vel=sim.body_lin_vel.clone(),
        body_ang_vel=sim.body_ang_vel.clone(), object_pos=sim.object_pos.clone(),
        object_rot=sim.object_rot.clone(), object_lin_vel=sim.object_lin_vel.clone(),
        object_ang_vel=sim.object_ang_vel.clone(), body_contact=torch.zeros(N, NUM_BODIES),
        object_contact=torch.zeros(N, dtype=torch.bool),
        ig=nearest_point_vectors(sim.body_pos, object_points_world(pts, sim.object_pos, sim.object_rot)),
    )
    return sim, ref, pts


def reward(sim: SimState, ref: RefFrame, pts: torch.Tensor, weights: RewardWeights | None = None,
           steps: int = 10, prev: PrevVelocities | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    prev = prev if prev is not None else PrevVelocities.from_sim(sim)
    return compute_reward(sim, prev, ref, pts, weights or RewardWeights(), torch.full((N,), steps))


def test_all_factors_are_one_at_zero_error():
    sim, ref, pts = scene()
    r, terms = reward(sim, ref, pts)
    assert set(terms) == {"p", "r", "pv", "rv", "eg1", "op", "or", "opv", "orv", "eg2", "ig",
                          "cg_hand", "cg_other", "cg_all", "eg3"}
    for name, v in terms.items():
        torch.testing.assert_close(v, torch.ones(N), rtol=0, atol=2e-6, msg=name)
    torch.testing.assert_close(r, torch.ones(N), rtol=0, atol=1e-5)


def _perturbations(scale: float):
    """Name of the factor -> how to push the simulation away from the reference by ``scale``."""
    def body_pos(s: SimState) -> SimState:
        return replace(s, body_pos=s.body_pos + scale * torch.tensor([0.3, -0.2, 0.1]))

    def body_rot(s: SimState) -> SimState:
        turn = quat.from_rotvec(torch.tensor([scale, 0.0, 0.0])).expand_as(s.body_rot)
        return replace(s, body_rot=quat.multiply(s.body_rot, turn))

    def obj_pos(s: SimState) -> SimState:
        return replace(s, object_pos=s.object_pos + scale * torch.tensor([0.5, 0.2, 0.3]))

    def obj_rot(s: SimState) -> SimState:
        turn = quat.from_rotvec(torch.tensor([0.0, scale, 0.0])).expand_as(s.object_rot)
        return replace(s, object_rot=quat.multiply(s.object_rot, turn))

    return {
        "p": body_pos,
        "r": body_rot,
        "pv": lambda s: replace(s, body_lin_vel=s.body_lin_vel + scale),
        "rv": lambda s: replace(s, body_ang_vel=s.body_ang_vel + scale),
        "op": obj_pos,
        "or": obj_rot,
        "opv": lambda s: replace(s, object_lin_vel=s.object_lin_vel + scale),
        "orv": lambda s: replace(s, object_ang_vel=s.object_ang_vel + scale),
        "ig": obj_pos,
        "eg3": lambda s: replace(s, body_contact_force=s.body_contact_force + 100.0 * scale),
    }


@pytest.mark.parametrize("name", ["p", "r", "pv", "rv", "op", "or", "opv", "orv", "ig", "eg3"])
def test_each_factor_falls_as_its_error_grows(name):
    sim, ref, pts = scene(seed=1)
    weights = RewardWeights(pv=1.0, rv=1.0, orv=1.0, eg3=1e-6)
    values = []
    for scale in (0.0, 0.05, 0.2):
        moved = _perturbations(scale)[name](sim)
        values.append(reward(moved, ref, pts, weights)[1][name])
    assert torch.all(values[0] > 1 - 1e-5)
    assert torch.all(values[1] < values[0]) and torch.all(values[2] < values[1]), (name, values)
    assert torch.all(values[2] > 0)


def test_energy_factors_penalise_acceleration_after_the_warmup():
    sim, ref, pts = scene(seed=2)
    prev = PrevVelocities(sim.joint_ang_vel - 1.0, sim.object_lin_vel - 0.5, sim.object_ang_vel + 0.5)
    for steps, penalised in ((2, False), (3, True)):
        _, terms = reward(sim, ref, pts, steps=steps, prev=prev)
        for name in ("eg1", "eg2"):
            assert bool((terms[name] < 1.0).all()) == penalised, (name, steps)
    # acceleration (1 rad/s per 1/30 s = 30 rad/s^2 on every DOF): exp(-eg1 * 900)
    _, terms = reward(sim, ref, pts, steps=3, prev=prev)
    torch.testing.assert_close(terms["eg1"], torch.full((N,), float(torch.exp(torch.tensor(-2e-5 * 900.0)))))


def test_position_weight_follows_closeness_to_the_object_and_feet_always_count():
    sim, ref, pts = scene(seed=3)
    ig = torch.zeros_like(ref.ig)
    ig[..., 0] = 2.0  # every body 2 m from the object: weight exp(-10), hardly tracked
    far = replace(ref, ig=ig)
    near_ig = ig.clone()
    near_ig[:, body_index("L_Knee")] = 0.0  # the knee touches the object: weight 1

    def after_moving(body: str, r: RefFrame) -> torch.Tensor:
        pos = sim.body_pos.clone()
        pos[:, body_index(body), 0] += 0.3
        return body_pos_reward(replace(sim, body_pos=pos), r, 30.0)

    expected_full = torch.exp(torch.tensor(-30.0 * 0.09 / len(KEY_BODIES)))
    torch.testing.assert_close(after_moving("L_Knee", replace(ref, ig=near_ig)), expected_full.expand(N))
    assert torch.all(after_moving("L_Knee", far) > 0.9999)  # far knee: (almost) free in position
    for foot in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"):  # feet: weight 1 however far
        torch.testing.assert_close(after_moving(foot, far), expected_full.expand(N))


def _labels_and_contact(**kw: tuple[float, bool]) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.zeros(N, NUM_BODIES)
    contact = torch.zeros(N, NUM_BODIES, dtype=torch.bool)
    for body, (label, touching) in kw.items():
        labels[:, body_index(body)] = label
        contact[:, body_index(body)] = touching
    return labels, contact


def test_hand_promotion_is_bounded_and_rewards_touching():
    labels, contact = _labels_and_contact(L_Index3=(1.0, False))
    missing = hand_contact_reward(contact, labels, 5.0)
    assert torch.all((missing >= 0.5) & (missing < 1.0))
    torch.testing.assert_close(missing, torch.full((N,), 0.5 * (1 + float(torch.exp(torch.tensor(-5.0))))))
    contact[:, list(LEFT_HAND_BODIES)] = True
    torch.testing.assert_close(hand_contact_reward(contact, labels, 5.0), torch.ones(N))
    # half the hand touching is better than none
    contact[:, list(LEFT_HAND_BODIES[:8])] = False
    half = hand_contact_reward(contact, labels, 5.0)
    assert torch.all((half > missing) & (half < 1.0))
    # a hand without +1 labels is not asked to touch
    labels2, contact2 = _labels_and_contact(R_Wrist=(-1.0, False))
    torch.testing.assert_close(hand_contact_reward(contact2, labels2, 5.0), torch.ones(N))
    assert len(RIGHT_HAND_BODIES) == 16


def test_other_promotion_includes_the_right_arm():
    for body in ("R_Elbow", "R_Shoulder", "R_Thorax", "L_Elbow", "Torso"):
        labels, contact = _labels_and_contact(**{body: (1.0, False)})
        assert torch.all(other_contact_reward(contact, labels, 5.0) < 1.0), body
        contact[:, body_index(body)] = True
        torch.testing.assert_close(other_contact_reward(contact, labels, 5.0), torch.ones(N))


def test_penalty_hits_only_unwanted_contacts():
    labels, contact = _labels_and_contact(Head=(-1.0, True))
    torch.testing.assert_close(penalty_contact_reward(contact, labels, 3.0),
                               torch.full((N,), float(torch.exp(torch.tensor(-3.0 / NUM_BODIES)))))
    labels, contact = _labels_and_contact(Head=(-1.0, False), Chest=(0.0, True), L_Wrist=(1.0, True))
    torch.testing.assert_close(penalty_contact_reward(contact, labels, 3.0), torch.ones(N))


def test_contact_source_object_ignores_the_floor_any_does_not():
    sim, ref, pts = scene(seed=4)
    labels, floor = _labels_and_contact(L_Toe=(-1.0, True), R_Index3=(1.0, False))
    sim = replace(sim, body_contact=floor)  # the toe touches the floor, not the object
    ref = replace(ref, body_contact=labels)
    _, by_object = reward(sim, ref, pts, RewardWeights(contact_source="object"))
    _, by_any = reward(sim, ref, pts, RewardWeights(contact_source="any"))
    torch.testing.assert_close(by_object["cg_all"], torch.ones(N))
    assert torch.all(by_any["cg_all"] < 1.0)
    assert torch.all(by_object["cg_hand"] < 1.0)  # the wanted finger contact is missing either way
    # now the finger really holds the object
    obj_contact = torch.zeros(N, NUM_BODIES, dtype=torch.bool)
    obj_contact[:, list(RIGHT_HAND_BODIES)] = True
    _, holding = reward(replace(sim, body_object_contact=obj_contact), ref, pts)
    torch.testing.assert_close(holding["cg_hand"], torch.ones(N))


def test_reward_is_the_product_of_its_factors_and_zero_weights_give_one():
    sim, ref, pts = scene(seed=5)
    moved = replace(sim, body_pos=sim.body_pos + 0.05, object_pos=sim.object_pos - 0.1,
                    body_lin_vel=sim.body_lin_vel + 0.3)
    r, terms = reward(moved, ref, pts, RewardWeights(pv=0.5))
    prod = torch.ones(N)
    for v in terms.values():
        prod = prod * v
    torch.testing.assert_close(r, prod)
    zero = RewardWeights(**{k: 0.0 for k in ("p", "r", "op", "or_", "opv", "ig", "cg_hand", "cg_other",
                                               "cg_all", "eg1", "eg2", "eg3")})
    r0, _ = reward(moved, ref, pts, zero)
    torch.testing.assert_close(r0, torch.ones(N))


def test_weights_from_config_dict():
    w = RewardWeights.from_dict({"p": 10, "or": 0.3, "contact_source": "any"})
    assert (w.p, w.or_, w.contact_source, w.r) == (10.0, 0.3, "any", 1.5)
    assert RewardWeights.from_dict(w.to_dict()) == w
    with pytest.raises(RewardConfigError, match=r"\['cg1', 'posx'\]"):
        RewardWeights.from_dict({"p": 1, "cg1": 5, "posx": 2})
    with pytest.raises(RewardConfigError, match="'ig'"):
        RewardWeights.from_dict({"ig": -1})
    with pytest.raises(RewardConfigError, match="'op' must be a number"):
        RewardWeights.from_dict({"op": "lots"})
    with pytest.raises(RewardConfigError, match="contact_source"):
        RewardWeights(contact_source="floor")


def test_ig_error_matches_the_explicit_graph():
    from intermimic_policy.state.interaction_graph import ig_reward_error, interaction_graph
    g = torch.Generator().manual_seed(9)
    key, pts = torch.randn(3, 21, 3, generator=g), torch.randn(3, 50, 3, generator=g) * 0.3
    ref_key, ref_pts = key + 0.1 * torch.randn(3, 21, 3, generator=g), pts + 0.05 * torch.randn(3, 50, 3, generator=g)
    big, big_ref = interaction_graph(key, pts), interaction_graph(ref_key, ref_pts)  # [3, 21, 50, 3]
    w1 = 1 / (big ** 2).sum(-1).clamp_min(0.01)
    w2 = 1 / (big_ref ** 2).sum(-1).clamp_min(0.01)
    w = w1 / w1.sum((1, 2), keepdim=True) + w2 / w2.sum((1, 2), keepdim=True)
    expected = (((big - big_ref) ** 2).sum(-1) * w).sum((1, 2))
    torch.testing.assert_close(ig_reward_error(key, pts, ref_key, ref_pts), expected, rtol=1e-4, atol=1e-6)
    # moving the whole scene together leaves the graph, and so the factor, unchanged
    shift = torch.tensor([0.4, -0.3, 0.2])
    moved = ig_reward_error(key + shift, pts + shift, key, pts, pts[:, 0] + shift, pts[:, 0])
    assert moved.abs().max() < 1e-5
