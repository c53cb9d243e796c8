"""Clip I/O: every shipped clip loads, our formats round-trip, bad files fail with one clear line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.embodiment.smplx_body import BODY_NAMES, NUM_BODIES, NUM_JOINTS
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import ARRAY_FIELDS, HOIMotion, MotionError
from intermimic_policy.motion.intermimic_pt import load_intermimic_pt, save_intermimic_pt
from intermimic_policy.motion.io import find_motion_files, load_motion, load_motions, save_motion
from intermimic_policy.motion.npz_format import FORMAT_TAG, FORMAT_VERSION, load_npz, save_npz
from intermimic_policy.motion.object_names import KNOWN_OBJECTS

FOLDERS = ("OMOMO", "OMOMO_new", "OMOMO_retarget")


def raw_table(path: Path) -> np.ndarray:
    """The file's tensor, read here independently of the loader under test."""
    return torch.load(path, weights_only=True).detach().numpy()


def synthetic_motion(frames: int = 12, seed: int = 0, dtype: type = np.float32) -> HOIMotion:
    """A valid clip with random poses and consistent labels (no data files needed)."""
    rng = np.random.default_rng(seed)

    def unit_quats(*shape: int) -> np.ndarray:
        r = torch.from_numpy(rng.normal(size=(*shape, 3)))
        return quat.from_rotvec(r).numpy().astype(dtype)

    labels = rng.integers(-1, 2, size=(frames, NUM_BODIES)).astype(np.int8)
    return HOIMotion(
        fps=30.0,
        root_pos=rng.normal(size=(frames, 3)).astype(dtype),
        root_rot=unit_quats(frames),
        joint_rotvec=rng.normal(size=(frames, NUM_JOINTS, 3)).astype(dtype),
        body_pos=rng.normal(size=(frames, NUM_BODIES, 3)).astype(dtype),
        body_rot=unit_quats(frames, NUM_BODIES),
        object_pos=rng.normal(size=(frames, 3)).astype(dtype),
        object_rot=unit_quats(frames),
        object_name="largetable",
        body_contact=labels,
        object_contact=(labels == 1).any(axis=1),
        name="synthetic",
        source="test",
        meta={"note": "unicode ✓", "k": "v"},
    )


def synthetic_table(frames: int = 12) -> np.ndarray:
    """A valid [T, 591] float32 table written column by column from the spec (section 1.2)."""
    m = synthetic_motion(frames)
    t = np.zeros((frames, 591), dtype=np.float32)
    t[:, 0:3], t[:, 3:7] = m.root_pos, m.root_rot
    t[:, 9:162] = m.joint_rotvec.reshape(frames, -1)
    t[:, 162:318] = m.body_pos.reshape(frames, -1)
    t[:, 318:321], t[:, 321:325] = m.object_pos, m.object_rot
    t[:, 330] = m.object_contact
    t[:, 331:383] = m.body_contact
    t[:, 383:591] = m.body_rot.reshape(frames, -1)
    return t


def all_clips(motions_root: Path) -> dict[str, list[Path]]:
    clips = {folder: sorted((motions_root / folder).glob("*.pt")) for folder in FOLDERS}
    for folder, files in clips.items():
        assert files, f"no clips in {motions_root / folder}"
    return clips


# -- every shipped clip --------------------------------------------------------------------------


def test_every_shipped_clip_loads_and_matches_the_raw_columns(motions_root: Path) -> None:
    clips = all_clips(motions_root)
    frames: dict[str, dict[str, int]] = {folder: {} for folder in FOLDERS}
    labels: dict[str, dict[str, np.ndarray]] = {folder: {} for folder in FOLDERS}
    for folder, files in clips.items():
        for path in files:
            m = load_intermimic_pt(path)
            raw = raw_table(path)
            skip = 1 if folder == "OMOMO_retarget" else 0
            rows = raw[skip:]
            t = rows.shape[0]
            assert m.num_frames == t and m.fps == 30.0
            assert m.meta["variant"] == folder and m.meta["subject"] == path.stem.split("_")[0]
            assert m.object_name == path.stem.split("_")[-2] and m.object_name in KNOWN_OBJECTS
            assert m.joint_rotvec.shape == (t, 51, 3) and m.body_rot.shape == (t, 52, 4)
            assert m.body_contact.dtype == np.int8 and m.object_contact.dtype == np.bool_
            assert set(np.unique(m.body_contact)) <= {-1, 0, 1}
            for q in (m.root_rot, m.body_rot, m.object_rot):
                assert np.abs(np.linalg.norm(q.astype(np.float64), axis=-1) - 1.0).max() < 1e-4
            # layout against the spec's column table, sliced here by hand
            np.testing.assert_array_equal(m.root_pos, rows[:, 0:3])
            np.testing.assert_array_equal(m.joint_rotvec.reshape(t, -1), rows[:, 9:162])
            np.testing.assert_array_equal(m.object_rot, rows[:, 321:325])
            np.testing.assert_array_equal(m.body_rot.reshape(t, -1), rows[:, 383:591])
            np.testing.assert_array_equal(m.body_contact, np.round(rows[:, 331:383]))
            np.testing.assert_array_equal(m.object_contact, np.round(rows[:, 330]) == 1)
            # spec 1.2: body row 0 is the root
            np.testing.assert_allclose(m.body_pos[:, 0], m.root_pos, atol=1e-6)
            np.testing.assert_allclose(np.abs((m.body_rot[:, 0] * m.root_rot).sum(-1)), 1.0, atol=1e-5)
            # measured on all three folders: (any +1 body label) <=> object flag
            np.testing.assert_array_equal((m.body_contact == 1).any(axis=1), m.object_contact)
            frames[folder][path.name] = t
            labels[folder][path.name] = m.body_contact
    for name, n in frames["OMOMO"].items():
        assert frames["OMOMO_retarget"][name] == n - 1
        # spec 1.4: retarget labels are OMOMO's, shifted by the dropped empty frame
        np.testing.assert_array_equal(labels["OMOMO_retarget"][name], labels["OMOMO"][name][1:])
    assert frames["OMOMO_new"] == frames["OMOMO"]


def test_variant_detected_from_content_and_overridable(motions_root: Path, tmp_path: Path) -> None:
    retarget = sorted((motions_root / "OMOMO_retarget").glob("*.pt"))[0]
    plain = motions_root / "OMOMO" / retarget.name
    shutil.copy(retarget, tmp_path / retarget.name)
    m = load_intermimic_pt(tmp_path / retarget.name)
    assert m.meta["variant"] == "OMOMO_retarget" and m.meta["variant_from"] == "content"
    np.testing.assert_array_equal(m.body_pos, load_intermimic_pt(retarget).body_pos)
    with pytest.raises(MotionError, match=r"frame 0 is empty.*OMOMO_retarget"):
        load_intermimic_pt(retarget, variant="OMOMO")
    (tmp_path / "other").mkdir()
    shutil.copy(plain, tmp_path / "other" / plain.name)
    m = load_motion(tmp_path / "other" / plain.name)
    assert m.meta["variant"] == "OMOMO" and m.num_frames == raw_table(plain).shape[0]
    forced = load_motion(tmp_path / "other" / plain.name, variant="OMOMO_retarget")
    assert forced.num_frames == m.num_frames - 1
    np.testing.assert_array_equal(forced.root_pos, m.root_pos[1:])
    with pytest.raises(MotionError, match="unknown variant"):
        load_intermimic_pt(plain, variant="BEHAVE")
    (tmp_path / "OMOMO_retarget").mkdir()
    shutil.copy(plain, tmp_path / "OMOMO_retarget" / plain.name)
    with pytest.raises(MotionError, match="folder says OMOMO_retarget but frame 0 is not empty"):
        load_motion(tmp_path / "OMOMO_retarget" / plain.name)


def test_load_motions_reads_a_folder(motions_root: Path) -> None:
    files = find_motion_files(motions_root / "OMOMO_new")
    assert len(files) == len(list((motions_root / "OMOMO_new").glob("*.pt")))
    motions = load_motions(files[:3], progress=False)
    assert [m.name for m in motions] == [f.stem for f in files[:3]]


# -- velocities ----------------------------------------------------------------------------------


def test_angular_velocity_is_right_across_the_pi_wrap() -> None:
    """A constant-rate spin that passes pi several times: true rate everywhere, every frame."""
    frames, fps, step = 40, 30.0, 0.45  # rad per frame: 18 rad in total
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    angles = step * np.arange(frames)
    rotvec = angles[:, None] * axis  # grows past pi: its length is not the wrapped angle
    q = quat.from_rotvec(torch.from_numpy(rotvec)).numpy().astype(np.float32)
    base = synthetic_motion(frames)
    m = HOIMotion(
        fps=fps, root_pos=base.root_pos, root_rot=q,
        joint_rotvec=np.repeat(rotvec[:, None], NUM_JOINTS, 1).astype(np.float32),
        body_pos=base.body_pos, body_rot=np.repeat(q[:, None], NUM_BODIES, 1),
        object_pos=base.object_pos, object_rot=q, object_name="largetable",
        body_contact=base.body_contact, object_contact=base.object_contact,
    )
    expected = axis * step * fps
    for w in (m.body_ang_vel.reshape(-1, 3), m.root_ang_vel, m.object_ang_vel, m.joint_ang_vel.reshape(-1, 3)):
        assert np.isfinite(w).all()
        np.testing.assert_allclose(w, np.broadcast_to(expected, w.shape), atol=1e-3)
    # the upstream formula (difference of stored rotation vectors) fails on the same data
    stored = quat.to_rotvec(torch.from_numpy(q.astype(np.float64))).numpy()
    upstream = np.diff(stored, axis=0) * fps
    assert np.abs(upstream - expected).max() > 1.0


def test_real_clip_velocities_are_finite(motions_root: Path) -> None:
    m = load_motion(sorted((motions_root / "OMOMO_new").glob("*.pt"))[0])
    for w in (m.body_ang_vel, m.body_lin_vel, m.object_ang_vel, m.joint_ang_vel, m.root_lin_vel):
        assert w.shape[0] == m.num_frames and np.isfinite(w).all()
    # a human wrist moves at most a few metres per second
    assert np.linalg.norm(m.body_lin_vel[:, BODY_NAMES.index("L_Wrist")], axis=-1).max() < 10.0


# -- round trips ---------------------------------------------------------------------------------


def assert_bit_exact(a: HOIMotion, b: HOIMotion) -> None:
    for key in ARRAY_FIELDS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype, key
        assert x.shape == y.shape, key
        assert np.array_equal(x, y), key
        assert x.tobytes() == y.tobytes(), key
    assert (a.fps, a.object_name, a.name, a.source, a.meta) == (b.fps, b.object_name, b.name, b.source, b.meta)
    assert a.identical(b)


@pytest.mark.parametrize("compress", [False, True])
def test_npz_round_trip_of_a_real_clip_is_bit_exact(motions_root: Path, tmp_path: Path, compress: bool) -> None:
    m = load_motion(sorted((motions_root / "OMOMO_retarget").glob("*.pt"))[-1])
    out = save_npz(m, tmp_path / "clip.npz", compress=compress)
    assert_bit_exact(m, load_npz(out))
    assert_bit_exact(m, load_motion(out))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]  # no temp files left behind


def test_npz_round_trip_keeps_dtypes_and_strings(tmp_path: Path) -> None:
    m = synthetic_motion(7, seed=3, dtype=np.float64)
    back = load_npz(save_motion(m, tmp_path / "x.npz"))
    assert back.root_pos.dtype == np.float64
    assert_bit_exact(m, back)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert str(z["format"]) == FORMAT_TAG and int(z["format_version"]) == FORMAT_VERSION
        assert json.loads(str(z["meta_json"])) == m.meta


def test_pt_round_trip_rewrites_the_original_tensor(motions_root: Path, tmp_path: Path) -> None:
    for folder in ("OMOMO_new", "OMOMO_retarget"):
        src = sorted((motions_root / folder).glob("*.pt"))[1]
        m = load_motion(src)
        (tmp_path / folder).mkdir()
        out = save_intermimic_pt(m, tmp_path / folder / src.name)
        # the written file is the shipped file, bit for bit (retarget: empty row 0 restored)
        np.testing.assert_array_equal(raw_table(out), raw_table(src))
        back = load_motion(out)
        for key in ARRAY_FIELDS:
            assert np.array_equal(getattr(back, key), getattr(m, key)) and getattr(back, key).dtype == getattr(m, key).dtype
        assert (back.object_name, back.fps, back.name, back.meta) == (m.object_name, m.fps, m.name, m.meta)


def test_pt_writer_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    m = synthetic_motion()
    with pytest.raises(MotionError, match="file name must carry the object"):
        save_intermimic_pt(m, tmp_path / "clip.pt")
    with pytest.raises(MotionError, match="fixed at 30 fps"):
        save_intermimic_pt(dataclasses.replace(m, fps=60.0), tmp_path / "sub1_largetable_000.pt")
    out = save_motion(m, tmp_path / "sub1_largetable_000.pt")
    back = load_motion(out)
    assert back.meta["subject"] == "sub1" and back.meta["clip_index"] == "000"
    for key in ARRAY_FIELDS:
        assert np.array_equal(getattr(back, key), getattr(m, key))


def test_near_unit_quaternions_are_normalised(tmp_path: Path) -> None:
    table = synthetic_table()
    table[4, 3:7] *= 1.0005
    path = tmp_path / "sub2_largetable_001.pt"
    torch.save(torch.from_numpy(table), path)
    m = load_motion(path)
    assert abs(np.linalg.norm(m.root_rot[4].astype(np.float64)) - 1.0) < 1e-6
    np.testing.assert_array_equal(m.root_rot[5], table[5, 3:7])  # unit rows are left untouched


# -- bad input -----------------------------------------------------------------------------------


def _write_pt(tmp: Path, table: np.ndarray | torch.Tensor, name: str = "sub2_largetable_000.pt") -> Path:
    path = tmp / name
    torch.save(torch.as_tensor(table), path)
    return path


def _mutated(change: Callable[[np.ndarray], None], name: str = "sub2_largetable_000.pt"):
    def build(tmp: Path) -> Path:
        table = synthetic_table()
        change(table)
        return _write_pt(tmp, table, name)

    return build


def _truncated(tmp: Path) -> Path:
    good = _write_pt(tmp, synthetic_table(), "good.pt")
    data = good.read_bytes()
    path = tmp / "sub2_largetable_000.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _zip_not_tensor(tmp: Path) -> Path:
    path = tmp / "sub2_largetable_000.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a tensor")
    return path


def _npz_with(tmp: Path, **changes) -> Path:
    path = save_npz(synthetic_motion(), tmp / "clip.npz")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    np.savez(path, **data)
    return path


def _set(index, value) -> Callable[[np.ndarray], None]:
    def change(t: np.ndarray) -> None:
        t[index] = value

    return change


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return build


def _torch_object(obj: object) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "sub2_largetable_000.pt"
        torch.save(obj, path)
        return path

    return build


def _directory(tmp: Path) -> Path:
    (tmp / "d.pt").mkdir()
    return tmp / "d.pt"


def _foreign_npz(tmp: Path) -> Path:
    np.savez(tmp / "clip.npz", a=np.zeros(3))
    return tmp / "clip.npz"


def _truncated_npz(tmp: Path) -> Path:
    full = save_npz(synthetic_motion(), tmp / "full.npz").read_bytes()
    return _bytes("clip.npz", full[:3000])(tmp)


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda tmp: tmp / "sub2_largetable_404.pt", "file not found"),
    "directory": (_directory, "is a directory"),
    "empty": (_bytes("sub2_largetable_000.pt", b""), "file is empty"),
    "truncated": (_truncated, "truncated or corrupt zip archive"),
    "text_named_pt": (_bytes("sub2_largetable_000.pt", b"hello, world\n"), "not a PyTorch file"),
    "zip_not_tensor": (_zip_not_tensor, "not a torch.save file"),
    "dict_not_tensor": (_torch_object({"a": torch.zeros(3)}), "contains a dict"),
    "width_590": (_torch_object(torch.from_numpy(synthetic_table()[:, :590])), "shape [12, 590]"),
    "one_dim": (_torch_object(torch.from_numpy(synthetic_table()[0])), "expected [T, 591]"),
    "int_tensor": (_torch_object(torch.zeros(12, 591, dtype=torch.int32)), "dtype torch.int32"),
    "one_frame": (_torch_object(torch.from_numpy(synthetic_table()[:1])), "too few frames (1)"),
    "nan": (_mutated(_set((5, 162 + 3 * 17 + 1), np.nan)), "NaN in body_pos at body L_Wrist at frame 5"),
    "inf": (_mutated(_set((2, 319), np.inf)), "infinite value in object_pos at frame 2"),
    "nan_label": (_mutated(_set((3, 331), np.nan)), "NaN in body_contact"),
    "zero_quaternion": (_mutated(_set((6, slice(383 + 4 * 9, 383 + 4 * 10)), 0.0)),
                        "zero-norm quaternion in body_rot at body Torso at frame 6"),
    "non_unit_quaternion": (_mutated(_set((3, slice(321, 325)), 0.6)), "object_rot at frame 3"),
    "label_2": (_mutated(_set((8, 331 + 4), 2.0)), "body_contact has label 2.0 at body L_Toe at frame 8"),
    "flag_3": (_mutated(_set((1, 330), 3.0)), "object_contact has label 3.0 at frame 1"),
    "unknown_object": (_mutated(lambda t: None, "sub2_spaceship_000.pt"), "unknown object 'spaceship'"),
    "no_object_in_name": (_mutated(lambda t: None, "clip.pt"), "cannot tell the object"),
    "npz_newer_version": (lambda tmp: _npz_with(tmp, format_version=np.array(FORMAT_VERSION + 1)),
                          f"format_version {FORMAT_VERSION + 1} is newer"),
    "npz_foreign": (_foreign_npz, "not an intermimic motion file"),
    "npz_pickled": (lambda tmp: _npz_with(tmp, name=np.array([{"x": 1}], dtype=object)), "cannot be read"),
    "npz_label_dtype": (lambda tmp: _npz_with(tmp, body_contact=np.zeros((12, 52), np.float32)),
                        "body_contact has dtype float32"),
    "npz_nan": (lambda tmp: _npz_with(tmp, root_pos=np.full((12, 3), np.nan, np.float32)),
                "NaN in root_pos at frame 0"),
    "npz_short_array": (lambda tmp: _npz_with(tmp, object_pos=np.zeros((11, 3), np.float32)),
                        "object_pos has shape (11, 3), expected (12, 3)"),
    "npz_truncated": (_truncated_npz, "cannot be read"),
    "csv_extension": (_bytes("clip.csv", b"1,2,3"), "unsupported extension '.csv'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_gives_one_line_error_naming_file_and_problem(kind: str, tmp_path: Path) -> None:
    build, expected = BAD_FILES[kind]
    path = build(tmp_path)
    with pytest.raises(MotionError) as info:
        load_motion(path)
    message = str(info.value)
    assert message.startswith(str(path) + ":"), message
    assert "\n" not in message
    assert expected in message, message


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    good = save_npz(synthetic_motion(), tmp_path / "clip.npz")
    before = good.read_bytes()

    def disk_full(handle, **arrays) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_npz(synthetic_motion(seed=1), good)
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]
    with pytest.raises(MotionError, match="unknown object"):  # invalid clips are never written
        save_npz(dataclasses.replace(synthetic_motion(), object_name="spaceship"), tmp_path / "new.npz")
    assert not (tmp_path / "new.npz").exists()
