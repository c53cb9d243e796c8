"""Observation terms and the builder, on hand-built states."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch

from intermimic_policy.embodiment.smplx_body import (
    CONTACT_BODIES,
    KEY_BODIES,
    NO_HAND_BODIES,
    NUM_BODIES,
    NUM_JOINTS,
)
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.observation.builder import ObservationBuilder, nonfinite_envs
from intermimic_policy.observation.spec import (
    HOI_BLOCK_TERMS,
    ObservationSpec,
    ObservationSpecError,
    ObsTerm,
    student_spec,
    teacher_spec,
)
from intermimic_policy.observation.terms import STANDARD_TERMS, block_terms, simulated_ig
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import nearest_point_vectors, object_points_world


def _unit_quats(g: torch.Generator, *shape: int) -> torch.Tensor:
    return quat.normalize(torch.randn(*shape, 4, generator=g))


def random_scene(n: int = 3, seed: int = 0, p: int = 40) -> tuple[SimState, RefFrame, torch.Tensor]:
    """A random simulated state, a different random reference and object points."""
    g = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g)

    body_pos = r(n, NUM_BODIES, 3) * 0.5 + torch.tensor([0.0, 0.0, 1.0])
    sim = SimState(
        body_pos=body_pos, body_rot=_unit_quats(g, n, NUM_BODIES), body_lin_vel=r(n, NUM_BODIES, 3),
        body_ang_vel=r(n, NUM_BODIES, 3), joint_rotvec=r(n, NUM_JOINTS, 3) * 0.3,
        joint_ang_vel=r(n, NUM_JOINTS, 3), body_contact=torch.rand(n, NUM_BODIES, generator=g) > 0.5,
        body_object_contact=torch.rand(n, NUM_BODIES, generator=g) > 0.7,
        body_contact_force=r(n, NUM_BODIES, 3), object_pos=r(n, 3) * 0.3 + torch.tensor([0.5, 0.0, 0.8]),
        object_rot=_unit_quats(g, n), object_lin_vel=r(n, 3), object_ang_vel=r(n, 3),
        object_contact=torch.rand(n, generator=g) > 0.5,
    )
    points = r(n, p, 3) * 0.2
    ref_body_pos = body_pos + r(n, NUM_BODIES, 3) * 0.1
    ref_obj_pos, ref_obj_rot = sim.object_pos + r(n, 3) * 0.1, _unit_quats(g, n)
    ig = nearest_point_vectors(ref_body_pos, object_points_world(points, ref_obj_pos, ref_obj_rot))
    ref = RefFrame(
        body_pos=ref_body_pos, body_rot=_unit_quats(g, n, NUM_BODIES), body_lin_vel=r(n, NUM_BODIES, 3),
        body_ang_vel=r(n, NUM_BODIES, 3), object_pos=ref_obj_pos, object_rot=ref_obj_rot,
        object_lin_vel=r(n, 3), object_ang_vel=r(n, 3),
        body_contact=torch.randint(-1, 2, (n, NUM_BODIES), generator=g).float(),
        object_contact=torch.rand(n, generator=g) > 0.5, ig=ig,
    )
    return sim, ref, points


def ref_equal_to(sim: SimState, points: torch.Tensor) -> RefFrame:
    """The reference a perfectly tracking simulation would have."""
    world = object_points_world(points, sim.object_pos, sim.object_rot)
    return RefFrame(
        body_pos=sim.body_pos.clone(), body_rot=sim.body_rot.clone(), body_lin_vel=sim.body_lin_vel.clone(),
        body_ang_vel=sim.body_ang_vel.clone(), object_pos=sim.object_pos.clone(),
        object_rot=sim.object_rot.clone(), object_lin_vel=sim.object_lin_vel.clone(),
        object_ang_vel=sim.object_ang_vel.clone(), body_contact=sim.body_contact.float(),
        object_contact=sim.object_contact.clone(), ig=nearest_point_vectors(sim.body_pos, world),
    )


def _yaw_scene(sim: SimState, ref: RefFrame, yaw: float, shift: torch.Tensor) -> tuple[SimState, RefFrame]:
    """Turn the whole scene (sim and reference) by ``yaw`` about z and move it by ``shift`` (xy)."""
    def rq(q: torch.Tensor) -> torch.Tensor:
        y = quat.from_yaw(torch.full(q.shape[:-1], yaw))
        return quat.multiply(y, q)

    def rv(v: torch.Tensor) -> torch.Tensor:
        return quat.rotate(quat.from_yaw(torch.full(v.shape[:-1], yaw)), v)

    sim2 = replace(sim, body_pos=rv(sim.body_pos) + shift, body_rot=rq(sim.body_rot),
                   body_lin_vel=rv(sim.body_lin_vel), body_ang_vel=rv(sim.body_ang_vel),
                   object_pos=rv(sim.object_pos) + shift, object_rot=rq(sim.object_rot),
                   object_lin_vel=rv(sim.object_lin_vel), object_ang_vel=rv(sim.object_ang_vel),
                   body_contact_force=rv(sim.body_contact_force))
    ref2 = replace(ref, body_pos=rv(ref.body_pos) + shift, body_rot=rq(ref.body_rot),
                   body_lin_vel=rv(ref.body_lin_vel), body_ang_vel=rv(ref.body_ang_vel),
                   object_pos=rv(ref.object_pos) + shift, object_rot=rq(ref.object_rot),
                   object_lin_vel=rv(ref.object_lin_vel), object_ang_vel=rv(ref.object_ang_vel),
                   ig=rv(ref.ig))
    return sim2, ref2


def _term(name: str, sim: SimState, ref: RefFrame, points: torch.Tensor) -> torch.Tensor:
    return block_terms(sim, ref, points)[name]


def _identity_root(sim: SimState) -> SimState:
    rot = sim.body_rot.clone()
    rot[:, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    return replace(sim, body_rot=rot)


# -- every term --------------------------------------------------------------------------------
def test_every_spec_term_has_a_function_with_the_spec_dim():
    sim, ref, pts = random_scene()
    assert {t.name for t in HOI_BLOCK_TERMS} == set(STANDARD_TERMS)
    for t in HOI_BLOCK_TERMS:
        out = _term(t.name, sim, ref, pts)
        assert out.shape == (3, t.dim), t.name
        assert torch.isfinite(out).all(), t.name


@pytest.mark.parametrize("spec,dim", [(teacher_spec(), 3198), (student_spec(), 6396)])
def test_builder_dims_and_token_order(spec, dim):
    sim, _, pts = random_scene()
    refs = [random_scene(seed=10 + i)[1] for i in range(spec.num_tokens)]
    obs = ObservationBuilder(spec).build(sim, refs, pts)
    assert obs.shape == (3, dim)
    # block i is computed from refs[i]: its key_pos_error equals the term on that reference
    sl = spec.term_slices()["key_pos_error"]
    for i, ref in enumerate(refs):
        block = obs[:, i * spec.block_dim:(i + 1) * spec.block_dim]
        torch.testing.assert_close(block[:, sl], _term("key_pos_error", sim, ref, pts))
    # sim-only terms are the same in every block, reference terms differ
    b = spec.block_dim
    rh = spec.term_slices()["local_body_pos"]
    torch.testing.assert_close(obs[:, rh], obs[:, b + rh.start:b + rh.stop])
    assert not torch.allclose(obs[:, sl], obs[:, b + sl.start:b + sl.stop])


def test_whole_observation_is_invariant_to_turning_and_moving_the_scene():
    sim, ref, pts = random_scene(n=4, seed=3)
    builder = ObservationBuilder(teacher_spec())
    obs = builder.build(sim, [ref, ref], pts)
    for yaw, shift in ((0.7, [0.0, 0.0, 0.0]), (-2.5, [3.0, -1.0, 0.0])):
        sim2, ref2 = _yaw_scene(sim, ref, yaw, torch.tensor(shift))
        obs2 = builder.build(sim2, [ref2, ref2], pts)
        torch.testing.assert_close(obs2, obs, atol=2e-5, rtol=1e-4)


def test_perfect_tracking_gives_zero_errors():
    sim, _, pts = random_scene(seed=5)
    ref = ref_equal_to(sim, pts)
    for name in ("key_pos_error", "key_vel_error", "body_ang_vel_error", "object_pos_error",
                 "object_vel_error", "object_ang_vel_error", "interaction_graph_error", "contact_error"):
        assert _term(name, sim, ref, pts).abs().max() < 1e-6, name
    ident = torch.tensor([1.0, 0, 0, 0, 0, 1.0])  # tan-norm of the identity rotation
    for name in ("body_rot_error", "object_rot_error"):
        out = _term(name, sim, ref, pts).reshape(3, -1, 6)
        torch.testing.assert_close(out, ident.expand_as(out), atol=1e-5, rtol=0)


def test_key_pos_error_puts_a_reference_offset_in_the_right_slot():
    sim, _, pts = random_scene(seed=6)
    sim = _identity_root(sim)
    ref = ref_equal_to(sim, pts)
    slot = 4
    body = KEY_BODIES[slot]
    ref.body_pos[:, body, 0] += 0.1
    out = _term("key_pos_error", sim, ref, pts).reshape(3, len(KEY_BODIES), 3)
    expected = torch.zeros_like(out)
    expected[:, slot, 0] = 0.1
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # with the character facing +y, world +x is its right: -y in the heading frame
    rot = sim.body_rot.clone()
    rot[:, 0] = quat.from_yaw(torch.full((3,), math.pi / 2))
    out = _term("key_pos_error", replace(sim, body_rot=rot), ref, pts).reshape(3, -1, 3)
    torch.testing.assert_close(out[:, slot], torch.tensor([0.0, -0.1, 0.0]).expand(3, 3), atol=1e-6, rtol=0)


def test_contact_error_marks_missing_and_unwanted_contacts_only():
    sim, _, pts = random_scene(n=1, seed=7)
    ref = ref_equal_to(sim, pts)
    a, b, c, d, e = CONTACT_BODIES[:5]
    labels = torch.zeros(1, NUM_BODIES)
    contact = torch.zeros(1, NUM_BODIES, dtype=torch.bool)
    labels[0, a] = 1.0  # must touch, does not -> 1
    labels[0, b] = -1.0
    contact[0, b] = True  # must not touch, does -> 1
    labels[0, c] = 1.0
    contact[0, c] = True  # must touch, does -> 0
    labels[0, d] = -1.0  # must not touch, does not -> 0
    contact[0, e] = True  # unknown label -> 0 whatever happens
    sim = replace(sim, body_contact=contact)
    ref = replace(ref, body_contact=labels)
    out = _term("contact_error", sim, ref, pts)[0]
    expected = torch.zeros(len(CONTACT_BODIES))
    expected[0] = expected[1] = 1.0
    torch.testing.assert_close(out, expected)
    flags = _term("body_contact", sim, ref, pts)[0]
    assert flags[[1, 2, 4]].tolist() == [1.0, 1.0, 1.0] and flags[[0, 3]].tolist() == [0.0, 0.0]


def test_ref_local_key_pos_reads_the_reference_not_the_simulation():
    sim, ref, pts = random_scene(seed=8)
    out = _term("ref_local_key_pos", sim, ref, pts)
    moved = replace(sim, body_pos=sim.body_pos + 0.3, body_rot=_unit_quats(torch.Generator().manual_seed(1),
                                                                          3, NUM_BODIES))
    torch.testing.assert_close(_term("ref_local_key_pos", moved, ref, pts), out)
    # reference key bodies relative to the reference root, in the reference heading frame
    h = quat.heading_inverse(ref.root_rot).unsqueeze(1).expand(-1, len(KEY_BODIES), -1)
    rel = ref.body_pos[:, list(KEY_BODIES)] - ref.body_pos[:, :1]
    torch.testing.assert_close(out, quat.rotate(h, rel).reshape(3, -1))


def test_interaction_graph_feature_of_a_known_distance():
    sim, _, _ = random_scene(n=1, seed=9)
    sim = _identity_root(sim)
    pts = torch.zeros(1, 1, 3)  # one object point at the object origin
    obj = torch.tensor([[0.0, 0.0, 0.0]])
    body_pos = sim.body_pos.clone()
    body_pos[0, 5] = torch.tensor([0.2, 0.0, 0.0])
    sim = replace(sim, body_pos=body_pos, object_pos=obj, object_rot=torch.tensor([[0.0, 0, 0, 1]]))
    ref = ref_equal_to(sim, pts)
    out = _term("interaction_graph", sim, ref, pts).reshape(NUM_BODIES, 3)
    torch.testing.assert_close(out[5], torch.tensor([math.exp(-1.0) * 0.2 / (0.2 + 1e-6), 0.0, 0.0]))
    assert torch.allclose(simulated_ig(sim, pts)[0, 5], torch.tensor([0.2, 0.0, 0.0]))


def test_velocity_and_no_hand_terms_use_the_right_bodies():
    sim, _, pts = random_scene(seed=11)
    sim = _identity_root(sim)
    ref = ref_equal_to(sim, pts)
    ref.body_ang_vel[:, NO_HAND_BODIES[-1]] += torch.tensor([0.0, 0.0, 2.0])
    ref.body_lin_vel[:, 20] += 5.0  # a finger: not a key body, not observed in key_vel_error
    out = _term("body_ang_vel_error", sim, ref, pts).reshape(3, -1, 3)
    torch.testing.assert_close(out[:, -1], torch.tensor([0.0, 0.0, 2.0]).expand(3, 3), atol=1e-6, rtol=0)
    assert out[:, :-1].abs().max() < 1e-6
    assert _term("key_vel_error", sim, ref, pts).abs().max() < 1e-6


# -- builder behaviour ---------------------------------------------------------------------------
def test_builder_refuses_an_unknown_term():
    spec = ObservationSpec(terms=HOI_BLOCK_TERMS + (ObsTerm("foot_pressure", 4, "sim"),))
    with pytest.raises(ObservationSpecError, match="foot_pressure"):
        ObservationBuilder(spec)


def test_builder_refuses_a_wrong_dim():
    terms = tuple(replace(t, dim=60) if t.name == "key_pos_error" else t for t in HOI_BLOCK_TERMS)
    with pytest.raises(ObservationSpecError, match="key_pos_error: spec says 60, term gives 63"):
        ObservationBuilder(ObservationSpec(terms=terms))


def test_builder_follows_the_spec_body_subsets():
    keys = KEY_BODIES[:10]
    terms = tuple(replace(t, dim=t.dim // len(KEY_BODIES) * 10) if t.name in (
        "key_pos_error", "ref_local_key_pos", "key_vel_error", "interaction_graph_error") else t
        for t in HOI_BLOCK_TERMS)
    spec = ObservationSpec(terms=terms, key_bodies=keys)
    sim, ref, pts = random_scene()
    assert ObservationBuilder(spec).build(sim, [ref, ref], pts).shape == (3, spec.dim)
    with pytest.raises(ObservationSpecError, match="key_pos_error"):
        ObservationBuilder(ObservationSpec(key_bodies=keys))


def test_builder_checks_reference_count_and_is_fresh_every_call():
    sim, ref, pts = random_scene()
    builder = ObservationBuilder(teacher_spec())
    with pytest.raises(ObservationSpecError, match="2 reference frames"):
        builder.build(sim, [ref], pts)
    obs1 = builder.build(sim, [ref, ref], pts)
    sim2, _, _ = random_scene(seed=42)
    obs2 = builder.build(sim2, [ref, ref], pts)
    assert not torch.allclose(obs1, obs2)
    torch.testing.assert_close(builder.build(sim, [ref, ref], pts), obs1, rtol=0, atol=0)


def test_nonfinite_envs_names_the_broken_worlds():
    sim, ref, pts = random_scene(n=4)
    pos = sim.body_pos.clone()
    pos[2, 7, 1] = float("nan")
    obs = ObservationBuilder(teacher_spec()).build(replace(sim, body_pos=pos), [ref, ref], pts)
    assert nonfinite_envs(obs).tolist() == [2]
    assert nonfinite_envs(obs[[0, 1, 3]]).numel() == 0


def test_state_fields_are_all_exercised():
    # guard: if SimState/RefFrame grow fields, the scene helpers above must set them
    assert {f.name for f in fields(SimState)} >= {"body_contact", "body_object_contact"}
    assert len(fields(RefFrame)) == 11
