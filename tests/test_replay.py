"""Kinematic state, hand-object distances, offscreen replay (video, contact sheet, plot), no-GL path."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as iio
import mujoco
import numpy as np
import pytest
import torch
from PIL import Image

from intermimic_policy.cli import main as cli_main
from intermimic_policy.embodiment import smplx_body
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.sim import kinematic, render
from intermimic_policy.sim.objects import load_object
from intermimic_policy.sim.replay import ReplayConfig, replay_motion
from intermimic_policy.sim.scene import build_scene

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example():
    return make_example_motion()


@pytest.fixture(scope="module")
def box_scene():
    return build_scene(obj=load_object("box", num_points=64))


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return quat.angle_between(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def test_kinematic_state_matches_clip_fk(example, box_scene) -> None:
    d = mujoco.MjData(box_scene.model)
    for f in range(0, example.num_frames, 7):
        kinematic.set_kinematic_state(box_scene, d, example, f)
        pos = d.xpos[box_scene.humanoid_body_ids]
        assert np.abs(pos - example.body_pos[f]).max() < 1e-3
        rot = quat.wxyz_to_xyzw(torch.from_numpy(d.xquat[box_scene.humanoid_body_ids].copy())).numpy()
        assert _angle(rot, example.body_rot[f].astype(np.float64)).max() < 1e-3
        b = box_scene.object_body_id
        np.testing.assert_allclose(d.xpos[b], example.object_pos[f], atol=1e-6)
        obj_rot = quat.wxyz_to_xyzw(torch.from_numpy(d.xquat[b].copy())).numpy()
        assert _angle(obj_rot, example.object_rot[f].astype(np.float64)) < 1e-5
    with pytest.raises(Exception, match="frame 999"):
        kinematic.set_kinematic_state(box_scene, d, example, 999)


def test_kinematic_velocity_reproduces_body_angular_velocity(example, box_scene) -> None:
    """Hinge rates + free-joint local angular velocity give the clip's world body velocities."""
    d = mujoco.MjData(box_scene.model)
    errors = []
    for f in range(10, example.num_frames - 10, 20):
        kinematic.set_kinematic_state(box_scene, d, example, f, velocity=True)
        mujoco.mj_forward(box_scene.model, d)
        for i, b in enumerate(box_scene.humanoid_body_ids):
            v = np.zeros(6)
            mujoco.mj_objectVelocity(box_scene.model, d, mujoco.mjtObj.mjOBJ_BODY, int(b), v, 0)
            errors.append(np.linalg.norm(v[:3] - example.body_ang_vel[f, i]))
        np.testing.assert_allclose(d.qvel[box_scene.root_qvel_adr:box_scene.root_qvel_adr + 3],
                                   example.root_lin_vel[f], atol=1e-6)
    scale = np.abs(example.body_ang_vel).max()
    assert scale > 0.5  # the clip moves
    assert np.median(errors) < 0.005 and np.max(errors) < 0.05  # rad/s


def test_retargeted_clip_body_positions_exact(motions_root: Path) -> None:
    """OMOMO_retarget is upstream's simulated humanoid: our scene reproduces its bodies (< 1 mm)."""
    clip = load_motion(motions_root / "OMOMO_retarget" / "sub2_largetable_000.pt")
    scene = build_scene()
    d = mujoco.MjData(scene.model)
    qpos = kinematic.motion_qpos(scene, clip)
    worst = 0.0
    for f in range(clip.num_frames):
        kinematic.set_qpos(scene, d, qpos[f])
        worst = max(worst, float(np.abs(d.xpos[scene.humanoid_body_ids] - clip.body_pos[f]).max()))
    assert worst < 1e-3


def test_hand_distance_search_equals_brute_force(example, box_scene) -> None:
    d = mujoco.MjData(box_scene.model)
    held = np.flatnonzero(example.object_contact)
    assert held.size and not example.object_contact[0]
    for f in (0, int(held[len(held) // 2]), example.num_frames - 1):
        kinematic.set_kinematic_state(box_scene, d, example, f)
        fast = kinematic.hand_object_distances(box_scene, d)
        for k, side in enumerate(("left", "right")):
            brute = min(mujoco.mj_geomDistance(box_scene.model, d, int(a), int(b), 10.0, None)
                        for a in kinematic.hand_geom_ids(box_scene, side) for b in box_scene.object_geom_ids)
            assert fast[k] == pytest.approx(brute, abs=1e-9)
    kinematic.set_kinematic_state(box_scene, d, example, int(held[len(held) // 2]))
    assert max(kinematic.hand_object_distances(box_scene, d)) < 0.02  # both palms on the box
    kinematic.set_kinematic_state(box_scene, d, example, 0)
    assert min(kinematic.hand_object_distances(box_scene, d)) > 0.1
    assert np.isnan(kinematic.hand_object_distances(build_scene(), mujoco.MjData(build_scene().model))).all()


def _colour_fractions(image: np.ndarray) -> tuple[float, float]:
    """Fractions of (orange humanoid, blue object) pixels."""
    rgb = image.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    orange = (r > b + 50) & (r > g + 15)
    blue = (b > r + 40) & (b > g + 10)
    return float(orange.mean()), float(blue.mean())


def _video_frames(path: Path) -> list[np.ndarray]:
    return [np.asarray(f) for f in iio.mimread(path, memtest=False)]


def test_replay_example_writes_video_sheet_and_plot(example, tmp_path: Path) -> None:
    result = replay_motion(example, tmp_path, ReplayConfig(width=320, height=240, stride=3, progress=False))
    assert result.video_reason is None and result.gl_backend in ("egl", "osmesa")
    expected = math.ceil(example.num_frames / 3)
    assert result.frames == expected
    assert result.video == tmp_path / "replay.mp4" and result.video.stat().st_size > 1000
    frames = _video_frames(result.video)
    assert len(frames) == expected and frames[0].shape == (240, 320, 3)
    # Camera framing: every sampled frame shows the humanoid and the box.
    for frame in frames[:: max(1, len(frames) // 5)]:
        human, box = _colour_fractions(frame)
        assert human > 0.005 and box > 0.002
    assert result.contact_sheet is not None
    sheet = np.asarray(Image.open(result.contact_sheet).convert("RGB"))
    assert sheet.std() > 20.0
    assert min(_colour_fractions(sheet)) > 0.002
    plot = np.asarray(Image.open(result.plots[0]).convert("RGB"))
    assert plot.shape[0] > 500 and plot.std() > 20.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == expected and summary["video"] == "replay.mp4"
    assert summary["video_reason"] is None and summary["plots"] == ["contacts.png"]
    assert summary["hand_object_distance"]["right"]["mean_when_touch_m"] < 0.02
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_replay_real_clip_strided(motions_root: Path, tmp_path: Path) -> None:
    clip = load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt")
    cfg = ReplayConfig(width=320, height=240, stride=15, skeleton="clip", progress=False)
    result = replay_motion(clip, tmp_path, cfg)
    expected = math.ceil(clip.num_frames / 15)
    assert result.video is not None and result.contact_sheet is not None
    assert result.frames == expected and len(_video_frames(result.video)) == expected
    assert min(_colour_fractions(np.asarray(Image.open(result.contact_sheet).convert("RGB")))) > 0.002
    # The labels agree with the geometry: hands labelled +1 touch the table, -1 are away from it.
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skeleton"] == "clip" and summary["object"] == "largetable"
    stats = summary["hand_object_distance"]
    for side in ("left", "right"):
        assert stats[side]["mean_when_touch_m"] < 0.03
        assert stats[side]["mean_when_away_m"] > 0.15
    assert result.hand_distance.shape == (clip.num_frames, 2)


def test_replay_without_object_mesh_still_replays(example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERMIMIC_OBJECTS", str(tmp_path / "no_assets"))
    monkeypatch.delenv("INTERMIMIC_DATA", raising=False)
    clip = dataclasses.replace(example, object_name="monitor")
    result = replay_motion(clip, tmp_path / "out", ReplayConfig(width=160, height=120, stride=50, progress=False))
    assert result.object_reason is not None and "monitor" in result.object_reason
    assert np.isnan(result.hand_distance).all() and result.plots[0].is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["object"] is None and "monitor" in summary["object_reason"]
    assert summary["hand_object_distance"]["left"]["mean_when_away_m"] is None


def test_replay_without_gl_subprocess_writes_plots_and_says_why(tmp_path: Path) -> None:
    env = dict(os.environ, MUJOCO_GL="disable")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "intermimic_policy.cli", "replay", "--example", "--out", str(out),
         "--stride", "10", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "no video" in ln]
    assert len(lines) == 1 and "MUJOCO_GL" in lines[0] and "plots only" in lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["video"] is None and "MUJOCO_GL" in summary["video_reason"]
    assert summary["contact_sheet"] is None
    assert (out / "contacts.png").stat().st_size > 1000
    assert not list(out.glob("*.mp4")) and not list(out.glob("*.gif"))


def test_renderer_reports_every_failed_backend(monkeypatch: pytest.MonkeyPatch, box_scene) -> None:
    def fail(backend: str, width: int, height: int):
        raise RuntimeError(f"cannot open {backend} display")

    monkeypatch.setattr(render, "_make_gl_context", fail)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    with pytest.raises(render.RenderUnavailable, match="egl: cannot open egl.*osmesa: cannot open osmesa"):
        render.OffscreenRenderer(box_scene.model, 64, 48)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert render.gl_backends() == ("osmesa",)
    monkeypatch.setenv("MUJOCO_GL", "off")
    assert render.gl_backends() == ()


def test_video_writer_gif_and_abort(tmp_path: Path) -> None:
    frames = [np.full((32, 48, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    with render.video_writer(tmp_path / "clip", fps=10, fmt="gif") as w:
        for f in frames:
            w.append(f)
    assert w.path == tmp_path / "clip.gif" and len(_video_frames(w.path)) == 3
    with pytest.raises(RuntimeError, match="stop"):
        with render.video_writer(tmp_path / "broken", fps=10) as w2:
            w2.append(frames[0])
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif"]


def test_follow_camera_faces_the_body() -> None:
    t = 60
    root = np.zeros((t, 3))
    root[:, 0] = np.linspace(0.0, 1.0, t)
    yaw = torch.full((t,), math.pi / 2, dtype=torch.float64)
    path = render.follow_camera_path(root, root + [1.0, 0.0, 0.0], 30.0, render.FollowCameraConfig(),
                                     quat.from_yaw(yaw).numpy())
    assert path.azimuth % 360 == pytest.approx((90 + 180 + 35) % 360)
    assert path.lookat.shape == (t, 3) and np.all(np.diff(path.lookat[:, 0]) >= -1e-12)
    assert 0.0 < path.lookat[0, 0] < 1.0 and path.lookat[-1, 0] < 2.0


def test_cli_replay_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["replay", "--out", str(tmp_path)]) == 2
    assert "exactly one of CLIP or --example" in capsys.readouterr().err
    assert cli_main(["replay", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
    assert smplx_body.NUM_BODIES == 52
