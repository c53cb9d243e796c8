"""One embodiment description for the SMPL-X humanoid and for a robot (G1 from its URDF + YAML)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.contract import (
    EMBODIMENT,
    ContractError,
    DeploymentExpectation,
    build_contract,
    check_deployment,
    preset_spec,
)
from intermimic_policy.embodiment import joint_convert, smplx_body
from intermimic_policy.embodiment.description import (
    SMPLX,
    EmbodimentError,
    embodiment_for,
    robot_name,
    smplx_embodiment,
)
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.spec import embodiment_spec, student_spec, teacher_spec
from intermimic_policy.sim.env_config import EnvConfigError, HOIEnvConfig


def test_smplx_embodiment_is_the_smplx_table() -> None:
    e = smplx_embodiment()
    kp, kd, lo, hi = smplx_body.dof_arrays()
    assert e.name == SMPLX == EMBODIMENT
    assert (e.num_bodies, e.num_joints, e.num_dofs) == (smplx_body.NUM_BODIES, smplx_body.NUM_JOINTS,
                                                         smplx_body.NUM_DOFS)
    assert e.dof_names == smplx_body.DOF_NAMES and e.body_names == smplx_body.BODY_NAMES
    assert np.array_equal(e.kp, kp) and np.array_equal(e.kd, kd)
    assert np.array_equal(e.lower, lo) and np.array_equal(e.upper, hi)
    assert e.key_bodies == smplx_body.KEY_BODIES and e.contact_bodies == smplx_body.CONTACT_BODIES
    assert e.non_hand_contact_bodies == smplx_body.NON_HAND_CONTACT_BODIES
    for flag in (False, True):
        for a, b in zip(e.action_offset_scale(flag), smplx_body.action_offset_scale(flag)):
            assert np.array_equal(a, b)
    # the observation built from the embodiment IS the existing preset (same digest)
    assert embodiment_spec(e, (1, 16)).digest() == teacher_spec().digest()
    assert embodiment_spec(e, (0, 1, 4, 16)).digest() == student_spec().digest()


def test_g1_embodiment_from_urdf_and_yaml(data_root: Path) -> None:
    e = embodiment_for("g1")
    assert e.name == "robot:g1" and robot_name(e.name) == "g1"
    assert e.num_dofs == e.num_joints == 43 and e.dofs_per_joint == 1
    assert e.body_names[0] == "pelvis" and len(set(e.body_names)) == e.num_bodies
    assert e.dof_names[0] == "left_hip_pitch_joint" and "right_hand_thumb_2_joint" in e.dof_names
    # gains by the YAML's regexes, effort limits from the URDF
    i = e.dof_names.index("left_knee_joint")
    assert (e.kp[i], e.kd[i]) == (500.0, 50.0)
    assert np.isfinite(e.effort_limit).all() and (e.effort_limit > 0).all()
    # hands mirror each other and contain the palm; feet are the ankle roll links
    names = [e.body_names[b] for b in e.left_hand_bodies]
    assert "left_hand_palm_link" in names and all(n.startswith("left_") for n in names)
    assert [e.body_names[b].replace("right_", "left_") for b in e.right_hand_bodies] == names
    assert [e.body_names[b] for b in e.foot_bodies] == ["left_ankle_roll_link", "right_ankle_roll_link"]
    assert 0 not in e.key_bodies and e.no_hand_bodies[0] == 0
    # hinge axes are unit vectors; rotvec <-> angle round trip
    assert np.allclose(np.linalg.norm(e.joint_axes, axis=1), 1.0)
    q = torch.linspace(-1.0, 1.0, e.num_dofs, dtype=torch.float64).reshape(1, -1)
    rv = joint_convert.rotvec_from_hinge_angles(e, q)
    assert rv.shape == (1, e.num_joints, 3)
    assert torch.allclose(joint_convert.hinge_angles_from_rotvec(e, rv), q)
    spec = embodiment_spec(e)
    assert spec.num_bodies == e.num_bodies and ObservationBuilder(spec).dim == spec.dim != teacher_spec().dim


def test_contract_takes_g1_sizes_from_its_embodiment(data_root: Path) -> None:
    e = embodiment_for("g1")
    spec = preset_spec("teacher", e.name)
    c = build_contract("teacher", obs_spec=spec, skeleton=None, object_points=64, control_hz=30.0,
                       physics_hz=240.0, upstream_action_map=False, embodiment=e.name)
    assert c.joint_names == e.dof_names and c.output_dim == 43 and c.input_dim == spec.dim
    assert c.skeleton is None and c.model_hash == e.model_hash
    offset, scale = e.action_offset_scale()
    assert np.allclose(c.pd_targets(np.ones(43, dtype=np.float32)), offset + scale, atol=1e-6)
    assert np.allclose(c.pd_targets(-np.ones(43, dtype=np.float32)), e.lower, atol=1e-5)
    # a G1 runtime accepts it; an SMPL-X runtime refuses it, naming the embodiment
    assert check_deployment(c, DeploymentExpectation(kind="teacher", embodiment=e.name)) == []
    problems = check_deployment(c, DeploymentExpectation(kind="teacher"))
    assert any("embodiment" in p for p in problems) and any("joint set differs" in p for p in problems)
    with pytest.raises(ContractError, match="skeleton"):
        from intermimic_policy.embodiment.skeleton import default_skeleton

        build_contract("teacher", obs_spec=spec, skeleton=default_skeleton(), object_points=64, control_hz=30.0,
                       physics_hz=240.0, upstream_action_map=False, embodiment=e.name)
    with pytest.raises(ContractError, match="upstream_action_map"):
        build_contract("teacher", obs_spec=spec, skeleton=None, object_points=64, control_hz=30.0,
                       physics_hz=240.0, upstream_action_map=True, embodiment=e.name)


def test_unknown_embodiments_are_refused_with_one_line() -> None:
    with pytest.raises(EmbodimentError, match="unknown embodiment"):
        robot_name("nao")
    with pytest.raises(EmbodimentError, match="unknown robot"):
        embodiment_for("no_such_robot")
    with pytest.raises(ContractError, match="unknown robot"):
        preset_spec("teacher", "robot:no_such_robot")


def test_env_config_builds_the_robot_observation(data_root: Path) -> None:
    cfg = HOIEnvConfig(robot="g1", num_worlds=1)
    e = embodiment_for("g1")
    assert cfg.embodiment is e and cfg.obs_spec == embodiment_spec(e, (1, 16))
    again = HOIEnvConfig.from_dict(cfg.to_dict())
    assert again.obs_spec == cfg.obs_spec and again.robot == "g1"
    assert "robot" not in HOIEnvConfig().to_dict()  # SMPL-X configs (and their digests) unchanged
    with pytest.raises(EnvConfigError, match="SMPL-X humanoid settings"):
        HOIEnvConfig(robot="g1", upstream_action_map=True)
    with pytest.raises(EnvConfigError, match="unknown robot"):
        HOIEnvConfig(robot="no_such_robot")
