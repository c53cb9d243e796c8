"""Early termination: falls, IET (human, object, interaction graph, lost hand contact), time-outs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from intermimic_policy.embodiment.smplx_body import KEY_BODIES, NUM_BODIES, NUM_JOINTS, body_index
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.sim.terminations import (
    FAILURE_REASONS,
    TerminationConfig,
    check_terminations,
    hand_contact_lost,
    update_hand_contact_lost,
)
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import nearest_point_vectors, object_points_world

N = 3


def scene() -> tuple[SimState, RefFrame, torch.Tensor]:
    """A standing-height state, the reference equal to it, and a small object next to it."""
    g = torch.Generator().manual_seed(0)
    body_pos = torch.randn(N, NUM_BODIES, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0])
    body_rot = quat.normalize(torch.randn(N, NUM_BODIES, 4, generator=g))
    z3 = torch.zeros(N, NUM_BODIES, 3)
    no = torch.zeros(N, NUM_BODIES, dtype=torch.bool)
    obj_rot = torch.tensor([0.0, 0.0, 0.0, 1.0]).repeat(N, 1)
    obj_pos = torch.tensor([0.3, 0.0, 1.0]).repeat(N, 1)
    sim = SimState(body_pos=body_pos, body_rot=body_rot, body_lin_vel=z3, body_ang_vel=z3,
                   joint_rotvec=torch.zeros(N, NUM_JOINTS, 3), joint_ang_vel=torch.zeros(N, NUM_JOINTS, 3),
                   body_contact=no, body_object_contact=no, body_contact_force=z3, object_pos=obj_pos,
                   object_rot=obj_rot, object_lin_vel=torch.zeros(N, 3), object_ang_vel=torch.zeros(N, 3),
                   object_contact=torch.zeros(N, dtype=torch.bool))
    pts = torch.randn(N, 25, 3, generator=g) * 0.1
    ref = RefFrame(body_pos=body_pos.clone(), body_rot=body_rot.clone(), body_lin_vel=z3, body_ang_vel=z3,
                   object_pos=obj_pos.clone(), object_rot=obj_rot.clone(), object_lin_vel=torch.zeros(N, 3),
                   object_ang_vel=torch.zeros(N, 3), body_contact=torch.zeros(N, NUM_BODIES),
                   object_contact=torch.zeros(N, dtype=torch.bool),
                   ig=nearest_point_vectors(body_pos, object_points_world(pts, obj_pos, obj_rot)))
    return sim, ref, pts


def check(sim: SimState, ref: RefFrame, pts: torch.Tensor, steps: int = 5, t: int = 20, frames: int = 100,
          counters: torch.Tensor | None = None, config: TerminationConfig | None = None,
          cap: int | None = None):
    return check_terminations(
        sim, ref, pts, torch.full((N,), t), torch.full((N,), frames), torch.full((N,), steps),
        counters if counters is not None else torch.zeros(N, 2, dtype=torch.long),
        config or TerminationConfig(), episode_cap=cap)


def _only(reasons: dict[str, torch.Tensor], name: str, rows: list[int]) -> None:
    for key, v in reasons.items():
        expected = [i in rows for i in range(N)] if key == name else [False] * N
        assert v.tolist() == expected, (key, v.tolist())


def test_tracking_state_does_not_end():
    sim, ref, pts = scene()
    reset, terminated, reasons = check(sim, ref, pts)
    assert not reset.any() and not terminated.any()
    assert set(reasons) == set(FAILURE_REASONS) | {"clip_end", "episode_cap"}


def test_fall_after_the_grace_steps_only():
    sim, ref, pts = scene()
    pos = sim.body_pos.clone()
    pos[1, 0, 2] = 0.2
    fallen = replace(sim, body_pos=pos)
    ref = replace(ref, body_pos=pos.clone())  # the reference lies down too: only the height matters
    reset, terminated, reasons = check(fallen, ref, pts, steps=2)
    assert reset.tolist() == terminated.tolist() == [False, True, False]
    _only(reasons, "fall", [1])
    reset, _, _ = check(fallen, ref, pts, steps=1)
    assert not reset.any()
    _, _, reasons = check(fallen, ref, pts, steps=2, config=TerminationConfig(fall_height=0.15))
    assert not reasons["fall"].any()


def test_human_deviation():
    sim, ref, pts = scene()
    for shift, ends in ((0.4, False), (0.6, True)):
        pos = sim.body_pos.clone()
        pos[0, list(KEY_BODIES), 2] -= shift  # vertical shift: keeps the object graph test quiet
        _, terminated, reasons = check(replace(sim, body_pos=pos), ref, pts)
        assert bool(reasons["human_deviation"][0]) == ends
        assert bool(terminated[0]) == ends


def test_object_deviation():
    sim, ref, pts = scene()
    for shift, ends in ((0.45, False), (0.55, True)):
        obj = sim.object_pos.clone()
        obj[2, 2] += shift
        _, terminated, reasons = check(replace(sim, object_pos=obj), ref, pts)
        assert bool(reasons["object_deviation"][2]) == ends
        assert bool(terminated[2]) == ends


def test_interaction_graph_deviation_ratio_test():
    sim, ref, pts = scene()
    wrist = body_index("L_Wrist")
    # the wrist right at the object in the reference: edges shorter than the 0.5 m floor
    ref_pos = ref.body_pos.clone()
    ref_pos[:, wrist] = ref.object_pos
    ref = replace(ref, body_pos=ref_pos)
    for move, ends in ((0.9, False), (1.2, True)):  # ratio = move / 0.5 against the limit 2
        pos = ref_pos.clone()
        pos[1, wrist, 2] += move
        _, terminated, reasons = check(replace(sim, body_pos=pos), ref, pts)
        assert bool(reasons["ig_deviation"][1]) == ends, move
        assert not reasons["human_deviation"].any()  # one body: the mean stays small
        assert bool(terminated[1]) == ends


def test_lost_hand_contact_terminates_on_frame_11_not_10():
    sim, ref, pts = scene()
    labels = torch.zeros(N, NUM_BODIES)
    labels[0, body_index("R_Index2")] = 1.0  # the reference holds the object with the right hand
    ref = replace(ref, body_contact=labels)
    counters = torch.zeros(N, 2, dtype=torch.long)
    ends = []
    for _ in range(11):
        counters = update_hand_contact_lost(counters, sim.body_object_contact, labels)
        _, terminated, reasons = check(sim, ref, pts, counters=counters)
        ends.append(bool(reasons["hand_contact_lost"][0]))
    assert counters[0].tolist() == [0, 11] and counters[1:].eq(0).all()
    assert ends == [False] * 10 + [True]
    assert terminated.tolist() == [True, False, False]
    # touching the object with any body of that hand resets the count
    touch = torch.zeros(N, NUM_BODIES, dtype=torch.bool)
    touch[0, body_index("R_Thumb1")] = True
    assert update_hand_contact_lost(counters, touch, labels)[0].tolist() == [0, 0]
    # floor contact does not count as holding the object (contact_source="object")
    floor = replace(sim, body_contact=touch)
    assert hand_contact_lost(update_hand_contact_lost(counters, floor.body_object_contact, labels), 10)[0]


def test_time_outs_reset_without_terminating():
    sim, ref, pts = scene()
    reset, terminated, reasons = check(sim, ref, pts, t=99, frames=100)
    assert reset.all() and not terminated.any() and reasons["clip_end"].all()
    reset, terminated, reasons = check(sim, ref, pts, t=98, frames=100)
    assert not reset.any()
    reset, terminated, reasons = check(sim, ref, pts, steps=300, cap=300)
    assert reset.all() and not terminated.any() and reasons["episode_cap"].all()


def test_nonfinite_state_terminates_instead_of_raising():
    sim, ref, pts = scene()
    vel = sim.object_lin_vel.clone()
    vel[2, 0] = float("inf")
    reset, terminated, reasons = check(replace(sim, object_lin_vel=vel), ref, pts, steps=0)
    assert terminated.tolist() == [False, False, True]
    _only(reasons, "nonfinite", [2])


def test_early_termination_switch_disables_only_iet():
    sim, ref, pts = scene()
    pos = sim.body_pos.clone() - torch.tensor([0.0, 0.0, 0.8])  # far from the reference and low
    cfg = TerminationConfig(early_termination=False)
    _, terminated, reasons = check(replace(sim, body_pos=pos), ref, pts, config=cfg)
    assert terminated.all() and reasons["fall"].all()
    assert not any(reasons[k].any() for k in ("human_deviation", "object_deviation", "ig_deviation"))
    with pytest.raises(ValueError, match="contact_source"):
        TerminationConfig(contact_source="ground")


def test_ig_ratio_matches_the_explicit_graph():
    from intermimic_policy.state.interaction_graph import ig_deviation_ratio, interaction_graph
    g = torch.Generator().manual_seed(4)
    key, pts = torch.randn(3, 21, 3, generator=g), torch.randn(3, 40, 3, generator=g) * 0.3
    ref_key, ref_pts = key + 0.3 * torch.randn(3, 21, 3, generator=g), pts + 0.1 * torch.randn(3, 40, 3, generator=g)
    big, big_ref = interaction_graph(key, pts), interaction_graph(ref_key, ref_pts)
    dev = (big - big_ref).norm(dim=-1)
    upstream = torch.maximum(dev / big_ref.norm(dim=-1).clamp_min(0.5), dev / big.norm(dim=-1).clamp_min(0.5))
    torch.testing.assert_close(ig_deviation_ratio(key, pts, ref_key, ref_pts, 0.5), upstream.amax((1, 2)),
                               rtol=1e-4, atol=1e-5)
