"""The generated humanoid MJCF: structure, gains, masses, collisions and FK parity in MuJoCo."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from intermimic_policy.embodiment import joint_map, smplx_body
from intermimic_policy.embodiment.mjcf import (
    WORLD_CONAFFINITY,
    WORLD_CONTYPE,
    humanoid_mjcf,
    humanoid_model,
    humanoid_spec,
)
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.geometry import quaternion as quat


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return humanoid_model()


@pytest.fixture(scope="module")
def upstream(assets_root: Path) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(assets_root / "smplx" / "omomo.xml"))


def _body(m: mujoco.MjModel, name: str) -> int:
    return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)


def test_structure_names_and_order(model: mujoco.MjModel) -> None:
    assert model.nbody == 53  # world + 52
    assert tuple(model.body(i).name for i in range(1, 53)) == smplx_body.BODY_NAMES
    assert model.njnt == 154 and model.nq == 160 and model.nv == 159 and model.nu == 153
    assert model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE and model.joint(0).name == "Pelvis"
    hinges = tuple(model.joint(i).name for i in range(1, 154))
    assert hinges == smplx_body.DOF_NAMES
    assert all(model.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE for i in range(1, 154))
    # hinge axis k of every body is that body's local x, y or z, anchored at the body origin
    np.testing.assert_array_equal(model.jnt_axis[1:], np.tile(np.eye(3), (51, 1)))
    np.testing.assert_array_equal(model.jnt_pos[1:], 0.0)
    assert tuple(model.actuator(i).name for i in range(153)) == smplx_body.DOF_NAMES
    # actuator i drives DOF i
    np.testing.assert_array_equal(model.actuator_trnid[:, 0], np.arange(1, 154))


def test_gains_limits_armature_and_options(model: mujoco.MjModel) -> None:
    kp, kd, lower, upper = smplx_body.dof_arrays()
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], kp)
    np.testing.assert_allclose(model.actuator_biasprm[:, 1], -kp)
    np.testing.assert_allclose(model.actuator_biasprm[:, 2], -kd)
    np.testing.assert_allclose(model.dof_armature[6:], 0.02)
    np.testing.assert_array_equal(model.jnt_stiffness, 0.0)
    np.testing.assert_array_equal(model.dof_damping, 0.0)
    finger = np.array([any(k in n for k in ("Index", "Middle", "Pinky", "Ring", "Thumb"))
                       for n in smplx_body.DOF_NAMES])
    limited = model.jnt_limited[1:].astype(bool)
    np.testing.assert_array_equal(limited, finger)
    np.testing.assert_allclose(model.jnt_range[1:][finger], np.stack([lower, upper], 1)[finger])
    np.testing.assert_array_equal(model.actuator_ctrllimited.astype(bool), finger)
    np.testing.assert_allclose(model.actuator_ctrlrange[finger], model.jnt_range[1:][finger])
    assert model.opt.timestep == pytest.approx(1 / 240)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    np.testing.assert_allclose(model.opt.gravity, [0, 0, -9.81])
    np.testing.assert_array_equal(model.geom_contype, 2)
    np.testing.assert_array_equal(model.geom_conaffinity, 1)
    np.testing.assert_array_equal(model.geom_condim, 3)
    np.testing.assert_allclose(model.geom_margin, 0.001)


def test_offsets_and_masses_match_upstream(model: mujoco.MjModel, upstream: mujoco.MjModel) -> None:
    for name in smplx_body.BODY_NAMES[1:]:
        ours, theirs = model.body_pos[_body(model, name)], upstream.body_pos[_body(upstream, name)]
        assert np.abs(ours - theirs).max() < 1e-3, name
    for name in smplx_body.BODY_NAMES:
        ours, theirs = model.body_mass[_body(model, name)], upstream.body_mass[_body(upstream, name)]
        assert ours == pytest.approx(theirs, rel=0.01), name
    total = float(model.body_mass.sum())
    assert total == pytest.approx(74.07, rel=0.02)
    assert total == pytest.approx(float(upstream.body_mass.sum()), rel=0.01)


def _scene(floor: bool) -> tuple[mujoco.MjModel, mujoco.MjData]:
    spec = humanoid_spec()
    if floor:
        spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[5, 5, 0.1], name="floor",
                                contype=WORLD_CONTYPE, conaffinity=WORLD_CONAFFINITY)
    m = spec.compile()
    return m, mujoco.MjData(m)


def test_self_collision_is_off_but_floor_contact_is_on() -> None:
    m, d = _scene(floor=True)
    # cross the left thigh through the right one (hip x rotation swings the leg towards -y)
    d.qpos[:3] = [0.0, 0.0, 2.0]
    d.qpos[7 + smplx_body.DOF_NAMES.index("L_Hip_x")] = -0.35
    mujoco.mj_forward(m, d)
    lk = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "L_Hip")
    rk = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "R_Hip")
    assert mujoco.mj_geomDistance(m, d, lk, rk, 1.0, None) < -0.01  # the geoms really overlap
    assert d.ncon == 0
    # lower the body into the floor: contacts appear, and all of them are with the floor
    d.qpos[2] = 0.8
    mujoco.mj_forward(m, d)
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert d.ncon > 0
    assert all(floor in (c.geom1, c.geom2) for c in d.contact[: d.ncon])


def test_model_compiles_alone_and_stands_at_qpos0() -> None:
    m, d = _scene(floor=True)
    mujoco.mj_forward(m, d)
    # qpos0: lowest geom touches z = 0 (within the contact margin)
    lowest = min(
        mujoco.mj_geomDistance(m, d, mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor"), g, 1.0, None)
        for g in range(1, m.ngeom)
    )
    assert abs(lowest) < 1e-6


def test_position_actuator_drives_its_hinge() -> None:
    spec = humanoid_spec()
    spec.option.gravity = [0.0, 0.0, 0.0]
    m = spec.compile()
    d = mujoco.MjData(m)
    elbow = smplx_body.DOF_NAMES.index("L_Elbow_y")
    d.ctrl[elbow] = 0.6
    for _ in range(480):
        mujoco.mj_step(m, d)
    assert d.qpos[7 + elbow] == pytest.approx(0.6, abs=0.03)
    others = np.delete(d.qpos[7:], elbow)
    assert np.abs(others).max() < 0.05


def test_mujoco_kinematics_reproduce_retarget_clips(model: mujoco.MjModel, motions_root: Path) -> None:
    clips = sorted((motions_root / "OMOMO_retarget").glob("*.pt"))
    assert clips
    d = mujoco.MjData(model)
    worst_pos, worst_rot = 0.0, 0.0
    for path in clips:
        x = torch.load(path, weights_only=True).detach().double()[1:]
        frames = np.linspace(0, x.shape[0] - 1, 8).astype(int)
        x = x[frames]
        qpos = joint_map.qpos_from_pose(x[:, 0:3], x[:, 3:7], x[:, 9:162].reshape(-1, 51, 3)).numpy()
        body_pos = x[:, 162:318].reshape(-1, 52, 3).numpy()
        body_rot = x[:, 383:591].reshape(-1, 52, 4)
        for i in range(len(frames)):
            d.qpos[:] = qpos[i]
            mujoco.mj_kinematics(model, d)
            worst_pos = max(worst_pos, float(np.linalg.norm(d.xpos[1:] - body_pos[i], axis=-1).max()))
            xquat = quat.wxyz_to_xyzw(torch.from_numpy(d.xquat[1:].copy()))
            worst_rot = max(worst_rot, float(quat.angle_between(xquat, quat.normalize(body_rot[i])).max()))
    assert worst_pos < 1e-3, worst_pos
    assert worst_rot < 1e-3, worst_rot


def test_mjcf_text_is_deterministic_and_self_contained() -> None:
    a, b = humanoid_mjcf(), humanoid_mjcf(default_skeleton())
    assert a == b
    assert "omomo" not in a and "stiffness=\"0\"" in a


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_builds_default_and_subject_humanoids(tmp_path: Path, motions_root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from intermimic_policy.cli import main

    out = tmp_path / "default.xml"
    assert main(["humanoid", "build", "--out", str(out)]) == 0
    assert out.read_text() == humanoid_mjcf()
    assert "74.07 kg" in capsys.readouterr().out

    clip = motions_root / "OMOMO_new" / "sub2_largetable_000.pt"
    subject = tmp_path / "subject.xml"
    assert main(["humanoid", "build", "--from-clip", str(clip), "--out", str(subject)]) == 0
    printed = capsys.readouterr().out
    assert "L_Knee" in printed and "mass" in printed
    m = mujoco.MjModel.from_xml_path(str(subject))
    assert m.nu == 153
    assert not np.allclose(m.body_pos[2:], humanoid_model().body_pos[2:], atol=1e-3)
    assert [p.name for p in tmp_path.iterdir()] and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_cli_errors_are_one_line_and_leave_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from intermimic_policy.cli import main

    out = tmp_path / "x.xml"
    assert main(["humanoid", "build", "--smplx-model", str(tmp_path / "missing.npz"), "--betas", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.npz" in err and len(err.strip().splitlines()) == 1
    assert main(["humanoid", "build", "--betas", "1", "--out", str(out)]) == 2
    assert "--smplx-model" in capsys.readouterr().err
    bad_clip = tmp_path / "broken.pt"
    bad_clip.write_bytes(b"\x00" * 10)
    assert main(["humanoid", "build", "--from-clip", str(bad_clip), "--out", str(out)]) == 2
    assert "broken.pt" in capsys.readouterr().err
    assert not out.exists()
    assert main(["humanoid", "build", "--out", str(tmp_path / "no_such_dir" / "x.xml")]) == 2
