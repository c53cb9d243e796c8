"""Importers: SMPL-X / SMPL-H parameters and joint positions -> clips at the control rate.

* joint positions of an OMOMO clip written at 20 fps y-up import back within 2 cm mean joint
  error of the original at 30 fps (IK on a skeleton fitted to the source);
* SMPL-X parameters written from a clip import back to the same rotations, through our skeleton
  table without a model file and through the ``smplx`` package with one (a synthetic model file
  from ``test_skeleton_fk``), the clip's meta saying which;
* bad files end in one line naming the problem, and nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp
from test_skeleton_fk import _write_synthetic_smplx

from intermimic_policy.cli import main as cli_main
from intermimic_policy.embodiment.smplx_shape import SMPLX_JOINT_OF_BODY, SMPLX_TO_OURS
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.importers import import_motion
from intermimic_policy.motion.importers.common import FOOT_JOINT_HEIGHT_M, Y_UP_TO_Z_UP
from intermimic_policy.motion.importers.joints import BODY_OF_SMPL22
from intermimic_policy.motion.importers.smpl_params import smpl_params_from_motion
from intermimic_policy.motion.io import load_motion

CLIP = "sub2_largetable_000.pt"


@pytest.fixture(scope="module")
def clip(motions_root: Path):  # type: ignore[no-untyped-def]
    return load_motion(motions_root / "OMOMO_new" / CLIP)


def _rotation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    qa = quat.from_rotvec(torch.from_numpy(np.asarray(a, np.float64)))
    qb = quat.from_rotvec(torch.from_numpy(np.asarray(b, np.float64)))
    return np.degrees(quat.angle_between(qa, qb).numpy())


def _write_joints_20fps_y_up(clip, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The clip's 22 SMPL joints and its object, resampled to 20 fps and turned to y-up."""
    t30 = np.arange(clip.num_frames) / clip.fps
    t20 = np.arange(int(t30[-1] * 20 + 1e-9) + 1) / 20.0
    c = t20 * clip.fps
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, clip.num_frames - 1)
    w = (c - i0)[:, None]
    joints = clip.body_pos[:, list(BODY_OF_SMPL22)].astype(np.float64)
    j20 = (1 - w[:, :, None]) * joints[i0] + w[:, :, None] * joints[i1]
    obj20 = (1 - w) * clip.object_pos[i0] + w * clip.object_pos[i1]
    rot20 = Slerp(t30, Rotation.from_quat(clip.object_rot.astype(np.float64)))(t20)
    to_y_up = Y_UP_TO_Z_UP.T
    np.savez(path, joints=j20 @ to_y_up.T, fps=np.array(20.0), object_pos=obj20 @ to_y_up.T,
             object_rot=(Rotation.from_matrix(to_y_up) * rot20).as_matrix(), object_name=np.array("largetable"))


def test_joint_positions_round_trip_within_2cm(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "hoi_joints.npz"
    _write_joints_20fps_y_up(clip, src)
    out = tmp_path / "imported.npz"
    assert cli_main(["motion", "import", str(src), "--format", "joints", "--up", "y", "--out", str(out)]) == 0
    motion = load_motion(out)
    assert motion.fps == 30.0 and motion.meta["body_model"] == "ik" and motion.meta["source_fps"] == "20"
    n = min(motion.num_frames, clip.num_frames)
    assert n >= clip.num_frames - 1
    tracked = list(BODY_OF_SMPL22)
    err = np.linalg.norm(motion.body_pos[:n, tracked] - clip.body_pos[:n, tracked], axis=-1)
    print(f"joints round trip: mean {100 * err.mean():.2f} cm, max {100 * err.max():.2f} cm")
    assert err.mean() < 0.02
    # the object came back from y-up rotation matrices
    assert np.abs(motion.object_pos[:n] - clip.object_pos[:n]).max() < 0.03
    obj_err = np.degrees(quat.angle_between(torch.from_numpy(motion.object_rot[:n].astype(np.float64)),
                                            torch.from_numpy(clip.object_rot[:n].astype(np.float64))).numpy())
    assert obj_err.max() < 1.0
    # twist is smooth: no joint turns by more than 30 degrees between frames
    steps = _rotation_error_deg(motion.joint_rotvec[1:], motion.joint_rotvec[:-1])
    assert steps.max() < 30.0, steps.max()
    # hands neutral: finger joints carry no rotation
    assert np.abs(motion.joint_rotvec[:, 17:32]).max() < 1e-6
    # the floor rule: the lowest foot joint in the first second at the stated height
    assert motion.meta["contact_labels"] == "geometry"
    assert (motion.body_contact == 1).any() and (motion.body_contact == -1).any()
    assert FOOT_JOINT_HEIGHT_M == pytest.approx(float(motion.body_pos[:30, [3, 4, 7, 8], 2].min()), abs=1e-5)

    # the same source in HOI-Diff's layout: joints (22, 3, T), object (T, 6) axis-angle + translation
    with np.load(src) as data:
        hoidiff = {"motion": data["joints"].transpose(1, 2, 0), "fps": data["fps"], "object_name": data["object_name"],
                   "motion_obj": np.concatenate([Rotation.from_matrix(data["object_rot"]).as_rotvec(),
                                                 data["object_pos"]], axis=1)}
    np.savez(tmp_path / "hoidiff.npz", **hoidiff)
    again = import_motion(tmp_path / "hoidiff.npz", "joints", up="y")
    np.testing.assert_allclose(again.body_pos, motion.body_pos, atol=1e-4)
    np.testing.assert_allclose(again.object_pos, motion.object_pos, atol=1e-4)


def test_smplx_params_round_trip_without_model(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "amass_like.npz"
    params = smpl_params_from_motion(clip, "smplx", up="y")
    params["pose_hand"] = params["poses"][:, 25 * 3:]  # also as AMASS splits it
    np.savez(src, **params)
    motion = import_motion(src, "smplx", up="y")
    assert motion.meta["body_model"] == "skeleton-table" and motion.num_frames == clip.num_frames
    err = _rotation_error_deg(motion.joint_rotvec, clip.joint_rotvec)
    assert err.max() < 0.01, err.max()
    root = np.degrees(quat.angle_between(torch.from_numpy(motion.root_rot.astype(np.float64)),
                                         torch.from_numpy(clip.root_rot.astype(np.float64))).numpy())
    assert root.max() < 0.01
    # positions: the pelvis where it was, up to the floor shift
    diff = motion.root_pos.astype(np.float64) - clip.root_pos
    assert np.abs(diff[:, :2]).max() < 1e-5 and np.ptp(diff[:, 2]) < 1e-5
    assert diff[0, 2] == pytest.approx(float(motion.meta["floor_shift_m"]), abs=1e-4)

    # SMPL-H layout (156 values) and the root_orient / pose_body split give the same clip
    h = smpl_params_from_motion(clip, "smplh", up="z")
    split = {"trans": h["trans"], "root_orient": h["poses"][:, :3], "pose_body": h["poses"][:, 3:66],
             "pose_hand": h["poses"][:, 66:], "mocap_framerate": h["mocap_framerate"],
             "object_pos": h["object_pos"], "object_rot": Rotation.from_quat(h["object_rot"]).as_rotvec(),
             "object_name": h["object_name"]}
    np.savez(tmp_path / "smplh.npz", **split)
    motion_h = import_motion(tmp_path / "smplh.npz", "smplh")
    assert _rotation_error_deg(motion_h.joint_rotvec, clip.joint_rotvec).max() < 0.01
    np.testing.assert_allclose(motion_h.body_pos, motion.body_pos, atol=1e-4)


def test_smplx_model_file_is_used_when_given(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With a model file the ``smplx`` package poses the body: positions follow the subject's
    shape (betas), and equal what the library itself computes."""
    import smplx

    rng = np.random.default_rng(1)
    model_file = tmp_path / "SMPLX_NEUTRAL.npz"
    _write_synthetic_smplx(model_file, rng.normal(scale=0.03, size=(55, 3)))
    short = clip.slice(0, 40)
    params = smpl_params_from_motion(short, "smplx", up="y")
    params["betas"] = np.array([1.5, 0.0])
    np.savez(tmp_path / "subject.npz", **params)

    with_model = import_motion(tmp_path / "subject.npz", "smplx", up="y", model=model_file)
    without = import_motion(tmp_path / "subject.npz", "smplx", up="y")
    assert with_model.meta["body_model"] == "smplx" and with_model.meta["model_file"] == model_file.name
    assert without.meta["body_model"] == "skeleton-table"
    assert float(with_model.meta["model_fk_max_err_m"]) < 1e-5
    # same rotations either way
    assert _rotation_error_deg(with_model.joint_rotvec, short.joint_rotvec).max() < 0.01
    # positions: the library's own joints (turned z-up), up to the floor shift
    from smplx.lbs import lbs

    model = smplx.SMPLX(str(model_file), ext="npz", num_betas=2, use_pca=False, flat_hand_mean=True,
                        dtype=torch.float64)
    p = torch.from_numpy(params["poses"])
    betas = torch.tensor([[1.5, 0.0]], dtype=torch.float64).expand(len(p), 2)
    _, joints = lbs(betas, p, model.v_template, model.shapedirs, model.posedirs, model.J_regressor, model.parents,
                    model.lbs_weights)
    ref = joints[:, :55].numpy() + params["trans"][:, None]
    ref_ours = ref[:, list(SMPLX_JOINT_OF_BODY)] @ Y_UP_TO_Z_UP.T
    shift = np.array([0.0, 0.0, float(with_model.meta["floor_shift_m"])])
    np.testing.assert_allclose(with_model.body_pos, ref_ours + shift, atol=1e-4)
    # the subject's shape differs from our table: the bodies are elsewhere without the model
    assert np.abs(without.body_pos - with_model.body_pos).max() > 0.01
    assert np.isclose(np.linalg.det(SMPLX_TO_OURS), 1.0)


def test_bad_files_get_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npz"
    cases: dict[str, tuple[dict[str, object] | None, str]] = {
        "pickled.npy": (None, "pickled"),
        "no_pose.npz": ({"trans": np.zeros((5, 3))}, "no pose"),
        "short.npz": ({"joints": np.zeros((5, 17, 3)), "fps": 20.0}, "expected (T, 22, 3)"),
        "nan.npz": ({"joints": np.full((5, 22, 3), np.nan), "fps": 20.0}, "NaN"),
        "nofps.npz": ({"joints": np.zeros((5, 22, 3)), "object_name": "largetable"}, "--fps"),
        "noobj.npz": ({"joints": np.zeros((5, 22, 3)), "fps": 20.0}, "--object"),
        "zeros.npz": ({"joints": np.zeros((5, 22, 3)), "fps": 20.0, "object_name": "largetable"}, "cm long"),
        "badrot.npz": ({"joints": np.zeros((5, 22, 3)), "fps": 20.0, "object_name": "largetable",
                        "object_pos": np.zeros((5, 3)), "object_rot": np.zeros((5, 4))}, "unit quaternion"),
    }
    for name, (arrays, expected) in cases.items():
        path = tmp_path / name
        if arrays is None:
            np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            np.savez(path, **arrays)  # type: ignore[arg-type]
        code = cli_main(["motion", "import", str(path), "--format", "joints" if "pose" not in name else "smplx",
                         "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and expected in err and name in err, err
    assert not out.exists()
    with pytest.raises(MotionError, match="never"):
        np.savez(tmp_path / "objs.npz", joints=np.array([None, 1], dtype=object))
        import_motion(tmp_path / "objs.npz", "joints", fps=20, object_name="largetable")
