"""Scene assembly: indices, object inertia and frame, contact filtering, a resting object."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mujoco
import numpy as np
import pytest

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.motion.object_names import PRIMITIVE_BOXES
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.scene import SceneConfig, build_scene


@pytest.fixture(scope="module")
def box_scene():
    return build_scene(obj=load_object("box", density=400.0, num_points=64))


def test_humanoid_only_scene_indices() -> None:
    scene = build_scene()
    m = scene.model
    assert scene.object is None and scene.object_body_id is None and scene.object_qpos_adr is None
    assert scene.object_geom_ids.size == 0
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(i)) for i in scene.humanoid_body_ids]
    assert names == list(smplx_body.BODY_NAMES)
    assert m.jnt_type[m.body_jntadr[scene.humanoid_body_ids[0]]] == mujoco.mjtJoint.mjJNT_FREE
    assert scene.root_qpos_adr == m.jnt_qposadr[m.body_jntadr[scene.humanoid_body_ids[0]]]
    # DOF order: qpos/qvel addresses and actuators line up with smplx_body.DOF_NAMES.
    assert len(set(scene.joint_qpos_adr.tolist())) == smplx_body.NUM_DOFS
    for k in (0, 77, 152):
        j = int(np.flatnonzero(m.jnt_qposadr == scene.joint_qpos_adr[k])[0])
        assert mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) == smplx_body.DOF_NAMES[k]
        assert m.jnt_dofadr[j] == scene.joint_qvel_adr[k]
        assert m.actuator_trnid[scene.actuator_ids[k], 0] == j
    hum = scene.geom_humanoid_body >= 0
    np.testing.assert_array_equal(scene.humanoid_body_ids[scene.geom_humanoid_body[hum]], m.geom_bodyid[hum])
    assert scene.geom_humanoid_body[scene.floor_geom_id] == -1
    assert m.geom_type[scene.floor_geom_id] == mujoco.mjtGeom.mjGEOM_PLANE
    assert scene.content_hash == hashlib.sha256(scene.xml.encode()).hexdigest()
    again = mujoco.MjModel.from_xml_string(scene.xml)
    assert (again.nq, again.nbody, again.ngeom, again.nu) == (m.nq, m.nbody, m.ngeom, m.nu)
    assert build_scene().content_hash == scene.content_hash
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0
    assert build_scene(config=SceneConfig(timestep=1 / 120)).model.opt.timestep == pytest.approx(1 / 120)


def test_object_body_mass_inertia_and_indices(box_scene) -> None:
    m = box_scene.model
    ext = np.array(PRIMITIVE_BOXES["box"])
    mass = 400.0 * np.prod(ext)
    b = box_scene.object_body_id
    assert m.body_mass[b] == pytest.approx(mass, rel=1e-6)
    a, bb, c = ext
    expected = np.sort(mass / 12.0 * np.array([bb * bb + c * c, a * a + c * c, a * a + bb * bb]))
    np.testing.assert_allclose(np.sort(m.body_inertia[b]), expected, rtol=1e-6)
    j = m.body_jntadr[b]
    assert m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
    assert box_scene.object_qpos_adr == m.jnt_qposadr[j] and box_scene.object_qvel_adr == m.jnt_dofadr[j]
    assert box_scene.object_name == "box"
    # Collision parts collide with floor and humanoid; the visual mesh collides with nothing.
    for g in box_scene.object_geom_ids:
        assert (m.geom_contype[g], m.geom_conaffinity[g], m.geom_group[g]) == (1, 3, 3)
    visual = [g for g in np.flatnonzero(m.geom_bodyid == b) if g not in box_scene.object_geom_ids]
    assert len(visual) == 1 and (m.geom_contype[visual[0]], m.geom_conaffinity[visual[0]]) == (0, 0)
    # Density override rescales mass.
    heavier = build_scene(obj=box_scene.object, config=SceneConfig(object_density=800.0))
    assert heavier.model.body_mass[heavier.object_body_id] == pytest.approx(2 * mass, rel=1e-6)


def test_object_geoms_sit_where_the_pose_says(box_scene) -> None:
    """MuJoCo re-centres meshes; the placed geometry must still be the asset's, in the object frame."""
    m, d = box_scene.model, mujoco.MjData(box_scene.model)
    pos = np.array([0.3, -1.2, 0.9])
    quat_wxyz = np.array([np.cos(0.4), 0.0, np.sin(0.4) * 0.6, np.sin(0.4) * 0.8])
    o = box_scene.object_qpos_adr
    d.qpos[o:o + 3], d.qpos[o + 3:o + 7] = pos, quat_wxyz
    mujoco.mj_kinematics(m, d)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, quat_wxyz)
    expected = box_scene.object.vertices @ rot.reshape(3, 3).T + pos
    for g in np.flatnonzero(m.geom_bodyid == box_scene.object_body_id):
        mesh = m.geom_dataid[g]
        verts = m.mesh_vert[m.mesh_vertadr[mesh]:m.mesh_vertadr[mesh] + m.mesh_vertnum[mesh]]
        world = verts @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g]
        dist = np.linalg.norm(world[:, None] - expected[None], axis=-1).min(axis=1)
        assert dist.max() < 1e-6


def _contacts(model: mujoco.MjModel, qpos: np.ndarray) -> list[tuple[int, int]]:
    d = mujoco.MjData(model)
    d.qpos[:] = qpos
    mujoco.mj_forward(model, d)
    return [(int(c.geom1), int(c.geom2)) for c in d.contact[:d.ncon]]


def test_standing_humanoid_touches_floor_but_never_itself() -> None:
    scene = build_scene()
    pairs = _contacts(scene.model, scene.model.qpos0)
    assert pairs, "the standing humanoid should touch the floor"
    for g1, g2 in pairs:
        assert scene.floor_geom_id in (g1, g2)
        other = g2 if g1 == scene.floor_geom_id else g1
        assert smplx_body.BODY_NAMES[scene.geom_humanoid_body[other]] in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe")
    # Legs crossed into each other: overlapping geoms, still no self contact ...
    q = scene.model.qpos0.copy()
    q[scene.joint_qpos_adr[smplx_body.DOF_NAMES.index("L_Hip_x")]] = -0.2
    q[scene.joint_qpos_adr[smplx_body.DOF_NAMES.index("R_Hip_x")]] = 0.2
    hum = scene.geom_humanoid_body
    assert not [p for p in _contacts(scene.model, q) if hum[p[0]] >= 0 and hum[p[1]] >= 0]
    # ... while the same pose with self-collision switched on does collide (the check can fail).
    selfish = build_scene().model
    selfish.geom_conaffinity[hum >= 0] = 3
    selfish.body_conaffinity[:] = 3
    assert [p for p in _contacts(selfish, q) if hum[p[0]] >= 0 and hum[p[1]] >= 0]


def _drop(scene, height: float, seconds: float) -> tuple[mujoco.MjData, np.ndarray]:
    m, d = scene.model, mujoco.MjData(scene.model)
    o = scene.object_qpos_adr
    d.qpos[o:o + 3] = [1.5, 0.5, height]
    d.qpos[o + 3:o + 7] = [np.cos(0.3), np.sin(0.3), 0.0, 0.0]  # tilted, lands on an edge
    d.ctrl[scene.actuator_ids] = d.qpos[scene.joint_qpos_adr]  # hold the standing pose
    lowest = []
    for _ in range(int(seconds / m.opt.timestep)):
        mujoco.mj_step(m, d)
        lowest.append(min(_lowest_z(scene, d, g) for g in scene.object_geom_ids))
    return d, np.array(lowest)


def _lowest_z(scene, d: mujoco.MjData, g: int) -> float:
    m = scene.model
    mesh = m.geom_dataid[g]
    verts = m.mesh_vert[m.mesh_vertadr[mesh]:m.mesh_vertadr[mesh] + m.mesh_vertnum[mesh]]
    return float((verts @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g])[:, 2].min())


def test_dropped_box_comes_to_rest_on_the_floor(box_scene) -> None:
    d, lowest = _drop(box_scene, 0.8, 2.0)
    o = box_scene.object_qvel_adr
    assert o is not None
    assert np.linalg.norm(d.qvel[o:o + 6]) < 0.05
    assert lowest.min() > -0.02  # a brief soft-contact dip at impact, never through the floor
    assert abs(lowest[-1]) < 0.005  # resting on it
    # Resting on a face: the centre height is one of the half extents.
    z = d.qpos[box_scene.object_qpos_adr + 2]
    assert min(abs(z - h / 2) for h in PRIMITIVE_BOXES["box"]) < 0.005


def test_dropped_table_rests_on_its_parts(assets_root: Path) -> None:
    """A concave mesh (CoACD parts) lands and stays on the floor."""
    table = load_object("largetable", search_dirs=[assets_root / "objects"])
    scene = build_scene(obj=table)
    d, lowest = _drop(scene, 0.9, 2.5)
    o = scene.object_qvel_adr
    assert o is not None
    assert np.linalg.norm(d.qvel[o:o + 6]) < 0.1
    assert lowest.min() > -0.025 and abs(lowest[-1]) < 0.005
