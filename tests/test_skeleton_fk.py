"""Skeleton table, torch FK and the rotvec <-> hinge map, checked against the shared clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment import joint_map
from intermimic_policy.embodiment.fk import (
    bone_offsets_from_pose,
    forward_kinematics,
    geom_bottom_z,
    local_joint_rotvec,
)
from intermimic_policy.embodiment.skeleton import Skeleton, SkeletonError, default_skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES
from intermimic_policy.geometry import quaternion as quat


def _raw_clip(path: Path, drop_first: bool) -> dict[str, torch.Tensor]:
    """The 591-column layout read straight from the file (spec 1.2), independent of the loaders."""
    x = torch.load(path, weights_only=True).detach().double()
    if drop_first:
        x = x[1:]
    return {
        "root_pos": x[:, 0:3],
        "root_rot": x[:, 3:7],
        "rotvec": x[:, 9:162].reshape(-1, 51, 3),
        "body_pos": x[:, 162:318].reshape(-1, 52, 3),
        "body_rot": x[:, 383:591].reshape(-1, 52, 4),
    }


def _retarget_clips(motions_root: Path) -> list[Path]:
    clips = sorted((motions_root / "OMOMO_retarget").glob("*.pt"))
    assert clips, "no OMOMO_retarget clips in the shared data"
    return clips


def test_default_table_matches_the_body_order_and_reference_mass() -> None:
    sk = default_skeleton()
    assert sk.offsets.shape == (52, 3) and sk.offsets.dtype == np.float64
    assert len(sk.geoms) == 52
    assert abs(sk.mass() - 74.07) / 74.07 < 0.02
    kinds = {BODY_NAMES[b]: g.kind for b, g in enumerate(sk.geoms)}
    assert kinds["Pelvis"] == kinds["Head"] == "sphere"
    for name in ("L_Ankle", "R_Ankle", "L_Toe", "R_Toe", "L_Wrist", "R_Wrist"):
        assert kinds[name] == "box"
    assert sum(k == "capsule" for k in kinds.values()) == 52 - 8
    assert not sk.offsets.flags.writeable


def test_content_hash_follows_content_not_name() -> None:
    a, b = default_skeleton(), default_skeleton()
    assert a.content_hash() == b.content_hash()
    renamed = Skeleton(a.offsets, a.geoms, name="other")
    assert renamed.content_hash() == a.content_hash()
    moved = a.offsets.copy()
    moved[3, 2] += 1e-4
    assert Skeleton(moved, a.geoms).content_hash() != a.content_hash()


def test_bad_skeletons_are_refused_with_a_clear_message() -> None:
    sk = default_skeleton()
    with pytest.raises(SkeletonError, match="shape"):
        Skeleton(np.zeros((51, 3)), sk.geoms)
    bad = sk.offsets.copy()
    bad[5, 0] = np.nan
    with pytest.raises(SkeletonError, match="NaN"):
        Skeleton(bad, sk.geoms)
    with pytest.raises(SkeletonError, match="52"):
        Skeleton(sk.offsets, sk.geoms[:-1])


def test_fk_reproduces_every_retarget_clip_within_1mm(motions_root: Path) -> None:
    offsets = default_skeleton().offsets
    worst_pos, worst_rot = 0.0, 0.0
    for path in _retarget_clips(motions_root):
        c = _raw_clip(path, drop_first=True)
        pos, rot = forward_kinematics(offsets, c["root_pos"], c["root_rot"], c["rotvec"])
        worst_pos = max(worst_pos, float((pos - c["body_pos"]).norm(dim=-1).max()))
        worst_rot = max(worst_rot, float(quat.angle_between(rot, quat.normalize(c["body_rot"])).max()))
    assert worst_pos < 1e-3, worst_pos
    assert worst_rot < 1e-3, worst_rot


def test_offsets_estimated_from_retarget_clip_equal_the_table(motions_root: Path) -> None:
    c = _raw_clip(_retarget_clips(motions_root)[0], drop_first=True)
    est = bone_offsets_from_pose(c["body_pos"], c["body_rot"]).median(dim=0).values
    assert np.abs(est.numpy() - default_skeleton().offsets).max() < 1e-3


def test_local_joint_rotvec_inverts_fk_and_fk_broadcasts() -> None:
    g = torch.Generator().manual_seed(0)
    rotvec = (torch.rand(4, 5, 51, 3, generator=g, dtype=torch.float64) - 0.5) * 2.0
    root_rot = quat.normalize(torch.randn(4, 5, 4, generator=g, dtype=torch.float64))
    root_pos = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    pos, rot = forward_kinematics(default_skeleton().offsets, root_pos, root_rot, rotvec)
    assert pos.shape == (4, 5, 52, 3) and rot.shape == (4, 5, 52, 4)
    back = local_joint_rotvec(rot)
    err = quat.angle_between(quat.from_rotvec(back), quat.from_rotvec(rotvec))
    assert float(err.max()) < 1e-9
    # one sample alone gives the same answer as inside the batch
    pos1, _ = forward_kinematics(default_skeleton().offsets, root_pos[2, 3], root_rot[2, 3], rotvec[2, 3])
    assert torch.allclose(pos1, pos[2, 3], atol=1e-12)
    # bone lengths are preserved by any pose
    from intermimic_policy.embodiment.smplx_body import PARENTS

    lengths = (pos[..., 1:, :] - pos[..., list(PARENTS[1:]), :]).norm(dim=-1)
    assert torch.allclose(lengths, torch.from_numpy(default_skeleton().bone_lengths()[1:]).expand_as(lengths))


def test_fk_has_gradients_and_rejects_wrong_shapes() -> None:
    rotvec = torch.zeros(51, 3, dtype=torch.float64, requires_grad=True)
    pos, _ = forward_kinematics(
        default_skeleton().offsets, torch.zeros(3, dtype=torch.float64),
        torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), rotvec,
    )
    pos[BODY_NAMES.index("L_Wrist"), 2].backward()
    assert rotvec.grad is not None and float(rotvec.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="joint_rotvec"):
        forward_kinematics(default_skeleton().offsets, torch.zeros(3), torch.zeros(4), torch.zeros(52, 3))


def test_hinge_angles_round_trip_to_the_same_rotation() -> None:
    g = torch.Generator().manual_seed(1)
    rotvec = (torch.rand(64, 51, 3, generator=g, dtype=torch.float64) - 0.5) * 5.0
    angles = joint_map.hinge_angles_from_rotvec(rotvec)
    assert angles.shape == (64, 153)
    # the three nested hinges x->y->z rebuild the same rotation
    e = angles.reshape(64, 51, 3)
    qx = quat.from_rotvec(torch.nn.functional.pad(e[..., 0:1], (0, 2)))
    qy = quat.from_rotvec(torch.nn.functional.pad(e[..., 1:2], (1, 1)))
    qz = quat.from_rotvec(torch.nn.functional.pad(e[..., 2:3], (2, 0)))
    nested = quat.multiply(quat.multiply(qx, qy), qz)
    assert float(quat.angle_between(nested, quat.from_rotvec(rotvec)).max()) < 1e-9
    back = joint_map.rotvec_from_hinge_angles(angles)
    assert float(quat.angle_between(quat.from_rotvec(back), quat.from_rotvec(rotvec)).max()) < 1e-9


def test_hinge_rates_match_finite_differences_of_the_rotation() -> None:
    g = torch.Generator().manual_seed(2)
    angles = (torch.rand(8, 153, generator=g, dtype=torch.float64) - 0.5) * 2.0
    rates = torch.randn(8, 153, generator=g, dtype=torch.float64)
    h = 1e-6
    q0 = quat.from_euler_xyz(angles.reshape(8, 51, 3))
    q1 = quat.from_euler_xyz((angles + h * rates).reshape(8, 51, 3))
    omega_fd = quat.to_rotvec(quat.multiply(quat.conjugate(q0), q1)) / h
    omega = joint_map.angular_velocity_from_hinge_rates(angles, rates)
    assert torch.allclose(omega, omega_fd, atol=1e-5)
    back = joint_map.hinge_rates_from_angular_velocity(angles, omega)
    assert torch.allclose(back, rates, atol=1e-9)


def test_qpos_round_trip() -> None:
    g = torch.Generator().manual_seed(3)
    root_pos = torch.randn(6, 3, generator=g, dtype=torch.float64)
    root_rot = quat.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64))
    rotvec = (torch.rand(6, 51, 3, generator=g, dtype=torch.float64) - 0.5)
    qpos = joint_map.qpos_from_pose(root_pos, root_rot, rotvec)
    assert qpos.shape == (6, joint_map.NQ)
    p, r, v = joint_map.pose_from_qpos(qpos)
    assert torch.allclose(p, root_pos)
    assert float(quat.angle_between(r, root_rot).max()) < 1e-9
    assert torch.allclose(v, rotvec, atol=1e-9)


def test_geom_bottom_of_a_rotated_box_is_exact() -> None:
    sk = default_skeleton()
    pos, rot = forward_kinematics(
        sk.offsets, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), torch.zeros(51, 3, dtype=torch.float64),
    )
    bottom = geom_bottom_z(sk.geoms, pos, rot)
    ankle = BODY_NAMES.index("L_Ankle")
    g = sk.geoms[ankle]
    assert float(bottom[ankle]) == pytest.approx(float(pos[ankle, 2]) + g.pos[2] - g.size[2])
    # rotate the whole body 90 deg about x: the box's y half extent now points down
    q = quat.from_rotvec(torch.tensor([np.pi / 2, 0, 0], dtype=torch.float64))
    pos, rot = forward_kinematics(sk.offsets, torch.zeros(3, dtype=torch.float64), q,
                                  torch.zeros(51, 3, dtype=torch.float64))
    bottom = geom_bottom_z(sk.geoms, pos, rot)
    centre = pos[ankle] + quat.rotate(q, torch.tensor(g.pos, dtype=torch.float64))
    assert float(bottom[ankle]) == pytest.approx(float(centre[2]) - g.size[1])


# -- subject skeletons from clips ---------------------------------------------------------------

SUBJECT_CLIPS = ("sub2_largetable_000.pt", "sub2_largetable_011.pt", "sub2_woodchair_004.pt")


def _pose_tensors(motion) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    return tuple(
        torch.from_numpy(np.asarray(a, dtype=np.float64))
        for a in (motion.root_pos, motion.root_rot, motion.joint_rotvec, motion.body_pos)
    )


@pytest.mark.parametrize("clip", SUBJECT_CLIPS)
def test_subject_skeleton_tracks_its_clip_and_puts_feet_on_the_floor(motions_root: Path, clip: str) -> None:
    from intermimic_policy.embodiment.smplx_shape import FOOT_BODIES, skeleton_from_motion
    from intermimic_policy.motion.io import load_motion

    motion = load_motion(motions_root / "OMOMO_new" / clip)
    root_pos, root_rot, rotvec, body_pos = _pose_tensors(motion)
    default, subject = default_skeleton(), skeleton_from_motion(motion)
    assert subject.content_hash() != default.content_hash()
    errors, feet = {}, {}
    for key, sk in (("default", default), ("subject", subject)):
        pos, rot = forward_kinematics(sk.offsets, root_pos, root_rot, rotvec)
        errors[key] = float((pos - body_pos).norm(dim=-1).mean())
        early = geom_bottom_z(sk.geoms, pos[:30], rot[:30])[:, list(FOOT_BODIES)]
        feet[key] = early.min(dim=-1).values  # lowest foot point per early frame
    # spec 1.3: the default skeleton misses the subject's positions by ~3 cm on average
    assert errors["default"] > 0.02
    assert errors["subject"] < 2e-3 and errors["subject"] < errors["default"] / 10
    # default feet float above the floor; the subject's stand on it in every early frame
    assert float(feet["default"].min()) > 0.03
    assert float(feet["subject"].abs().max()) < 0.025
    assert float(feet["subject"].abs().median()) < 0.01


def test_subject_skeleton_is_robust_to_outlier_frames(motions_root: Path) -> None:
    from intermimic_policy.embodiment.fk import bone_offsets_from_pose as offsets_of
    from intermimic_policy.embodiment.smplx_shape import robust_offsets

    c = _raw_clip(motions_root / "OMOMO_new" / SUBJECT_CLIPS[0], drop_first=False)
    per_frame = offsets_of(c["body_pos"], quat.normalize(c["body_rot"]))
    clean = robust_offsets(per_frame)
    corrupted = per_frame.clone()
    corrupted[::7] += 0.3  # one frame in seven is garbage
    assert np.abs(robust_offsets(corrupted) - clean).max() < 1e-3
    assert np.abs(corrupted.mean(0).numpy() - clean).max() > 0.01  # a plain mean would not be


def test_subject_humanoid_compiles_and_matches_its_clip_in_mujoco(motions_root: Path) -> None:
    import mujoco

    from intermimic_policy.embodiment.mjcf import humanoid_model
    from intermimic_policy.embodiment.smplx_shape import skeleton_from_motion
    from intermimic_policy.motion.io import load_motion

    motion = load_motion(motions_root / "OMOMO_new" / SUBJECT_CLIPS[1])
    m = humanoid_model(skeleton_from_motion(motion))
    d = mujoco.MjData(m)
    root_pos, root_rot, rotvec, body_pos = _pose_tensors(motion)
    qpos = joint_map.qpos_from_pose(root_pos, root_rot, rotvec).numpy()
    for t in range(0, motion.num_frames, max(1, motion.num_frames // 6)):
        d.qpos[:] = qpos[t]
        mujoco.mj_kinematics(m, d)
        assert np.linalg.norm(d.xpos[1:] - body_pos[t].numpy(), axis=-1).max() < 1e-3


# -- skeletons from SMPL-X shape parameters ------------------------------------------------------

_SMPLX_PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)
_PER_JOINT = 4  # vertices per joint in the synthetic model


def _write_synthetic_smplx(path: Path, beta0_shift: np.ndarray) -> np.ndarray:
    """A tiny SMPL-X-layout model: 4 vertices around each of the 55 joints, the J_regressor the
    mean of a joint's 4 vertices, and beta 0 moving joint j by ``beta0_shift[j]`` (SMPL-X frame).
    The template joints are the default skeleton's rest joints. Returns those joints [55, 3]."""
    from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, SMPLX_TO_OURS

    sk = default_skeleton()
    zero = torch.zeros(51, 3, dtype=torch.float64)
    ours, _ = forward_kinematics(sk.offsets, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                                 torch.tensor([0.0, 0, 0, 1], dtype=torch.float64), zero)
    joints = np.zeros((55, 3))
    joints[list(SMPLX_JOINT_OF_BODY)] = ours.numpy() @ SMPLX_TO_OURS  # ours = M s  ->  s = M^T ours
    head = joints[15]
    joints[22:25] = head + np.array([[0.0, -0.05, 0.08], [0.03, 0.03, 0.09], [-0.03, 0.03, 0.09]])
    spread = np.array([[0.01, 0, 0], [-0.01, 0, 0], [0, 0.01, 0], [0, -0.01, 0]])
    v_template = (joints[:, None, :] + spread[None]).reshape(-1, 3)
    nv = v_template.shape[0]
    owner = np.repeat(np.arange(55), _PER_JOINT)
    j_regressor = np.zeros((55, nv))
    j_regressor[owner, np.arange(nv)] = 1.0 / _PER_JOINT
    shapedirs = np.zeros((nv, 3, 20))  # 10 shape + 10 expression coefficients
    shapedirs[:, :, 0] = beta0_shift[owner]
    weights = np.zeros((nv, 55))
    weights[np.arange(nv), owner] = 1.0
    kintree = np.array([[2**32 - 1 if p < 0 else p for p in _SMPLX_PARENTS], list(range(55))], dtype=np.int64)
    faces = np.array([[4 * j, 4 * j + 1, 4 * j + 2] for j in range(55)], dtype=np.int64)
    np.savez(
        path, v_template=v_template, shapedirs=shapedirs, posedirs=np.zeros((nv, 3, 54 * 9)),
        J_regressor=j_regressor, weights=weights, kintree_table=kintree, f=faces,
        hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
        hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=np.arange(5, dtype=np.int64), lmk_bary_coords=np.full((5, 3), 1.0 / 3.0),
    )
    return joints


def _smplx_library_joints(path: Path, betas: np.ndarray) -> np.ndarray:
    """Rest joints as the smplx library computes them from the same file (the reference)."""
    import smplx
    from smplx.lbs import lbs

    model = smplx.SMPLX(str(path), ext="npz", num_betas=10, use_pca=False, flat_hand_mean=True)
    b = torch.zeros(1, 10)
    b[0, : len(betas)] = torch.as_tensor(betas, dtype=torch.float32)
    pose = torch.zeros(1, 55 * 3)
    _, joints = lbs(b, pose, model.v_template, model.shapedirs, model.posedirs, model.J_regressor,
                    model.parents, model.lbs_weights)
    return joints[0].double().numpy()


def _offsets_from_smplx_joints(joints: np.ndarray) -> np.ndarray:
    from intermimic_policy.embodiment.smplx_body import PARENTS
    from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, SMPLX_TO_OURS

    ours = joints[list(SMPLX_JOINT_OF_BODY)] @ SMPLX_TO_OURS.T
    out = np.zeros((52, 3))
    out[1:] = ours[1:] - ours[list(PARENTS[1:])]
    return out


def test_smplx_joint_map_preserves_the_tree() -> None:
    from intermimic_policy.embodiment.smplx_body import PARENTS
    from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, SMPLX_TO_OURS

    assert len(set(SMPLX_JOINT_OF_BODY)) == 52
    for b in range(1, 52):
        assert _SMPLX_PARENTS[SMPLX_JOINT_OF_BODY[b]] == SMPLX_JOINT_OF_BODY[PARENTS[b]], BODY_NAMES[b]
    assert np.isclose(np.linalg.det(SMPLX_TO_OURS), 1.0)  # a rotation, not a mirror


def test_skeleton_from_smplx_matches_the_smplx_library(tmp_path: Path) -> None:
    from intermimic_policy.embodiment.smplx_shape import skeleton_from_smplx

    rng = np.random.default_rng(0)
    shift = rng.normal(scale=0.02, size=(55, 3))
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    template = _write_synthetic_smplx(path, shift)

    # betas = 0: the template joints, i.e. the default skeleton's bones
    zero = skeleton_from_smplx(path, np.zeros(10))
    np.testing.assert_allclose(zero.offsets, _offsets_from_smplx_joints(template), atol=1e-9)
    np.testing.assert_allclose(zero.offsets[1:], default_skeleton().offsets[1:], atol=1e-6)
    np.testing.assert_allclose(_smplx_library_joints(path, np.zeros(10)), template, atol=1e-5)

    # a nonzero beta moves each joint by beta * its synthetic shape direction
    betas = np.array([1.5, 0.0, 0.0])
    moved = skeleton_from_smplx(tmp_path, betas, gender="neutral")  # a folder works too
    expected = _offsets_from_smplx_joints(template + 1.5 * shift)
    np.testing.assert_allclose(moved.offsets, expected, atol=1e-9)
    np.testing.assert_allclose(moved.offsets, _offsets_from_smplx_joints(_smplx_library_joints(path, betas)),
                               atol=1e-5)
    assert moved.content_hash() != zero.content_hash()
    assert moved.meta["betas"] == "1.5,0,0"


def test_skeleton_from_smplx_feet_reach_the_sole(tmp_path: Path) -> None:
    from intermimic_policy.embodiment.smplx_shape import FOOT_BODIES, skeleton_from_smplx

    path = tmp_path / "model.npz"
    template = _write_synthetic_smplx(path, np.zeros((55, 3)))
    sk = skeleton_from_smplx(path, [0.0])
    pos, rot = forward_kinematics(sk.offsets, torch.zeros(3, dtype=torch.float64),
                                  torch.tensor([0.0, 0, 0, 1], dtype=torch.float64),
                                  torch.zeros(51, 3, dtype=torch.float64))
    lowest = float(geom_bottom_z(sk.geoms, pos, rot)[list(FOOT_BODIES)].min())
    sole = float(template[:, 1].min() - 0.01) - float(template[0, 1])  # lowest vertex (y up), root-relative
    assert lowest == pytest.approx(sole, abs=1e-6)


def test_smplx_errors_name_the_file(tmp_path: Path) -> None:
    from intermimic_policy.embodiment.smplx_shape import SMPLXModelError, skeleton_from_smplx
    from intermimic_policy.errors import IntermimicError

    missing = tmp_path / "nowhere" / "SMPLX_MALE.npz"
    with pytest.raises(IntermimicError, match="SMPLX_MALE.npz"):
        skeleton_from_smplx(missing, [0.0])
    with pytest.raises(SMPLXModelError, match="SMPLX_FEMALE.npz"):
        skeleton_from_smplx(tmp_path, [0.0], gender="female")
    pkl = tmp_path / "SMPLX_NEUTRAL.pkl"
    pkl.write_bytes(b"not read")
    with pytest.raises(SMPLXModelError, match="pickle"):
        skeleton_from_smplx(pkl, [0.0])
    bad = tmp_path / "bad.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(SMPLXModelError, match="shapedirs"):
        skeleton_from_smplx(bad, [0.0])
    good = tmp_path / "good.npz"
    _write_synthetic_smplx(good, np.zeros((55, 3)))
    with pytest.raises(SMPLXModelError, match="betas"):
        skeleton_from_smplx(good, np.zeros(11))
