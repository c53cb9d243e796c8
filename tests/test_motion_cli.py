"""``intermimic motion inspect|convert``: real clips, real processes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy import cli
from intermimic_policy.embodiment.smplx_body import JOINT_NAMES
from intermimic_policy.motion.io import load_motion

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "intermimic_policy.cli", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def raw_table(path: Path) -> np.ndarray:
    return torch.load(path, weights_only=True).detach().numpy()


def expected_summary(path: Path, drop_first: bool) -> dict:
    """What inspect must report, computed from the raw tensor by hand (spec 1.2 columns)."""
    raw = raw_table(path)[1 if drop_first else 0 :]
    labels = np.round(raw[:, 331:383])
    return {
        "frames": raw.shape[0],
        "duration_s": (raw.shape[0] - 1) / 30.0,
        "root_pos_first": raw[0, 0:3].tolist(),
        "object_pos_first": raw[0, 318:321].tolist(),
        "contact_frames": int((raw[:, 330].round() == 1).sum()),
        "body_contact_counts": {str(k): int((labels == k).sum()) for k in (1, -1, 0)},
        "object": path.stem.split("_")[-2],
        "subject": path.stem.split("_")[0],
    }


def check_summary(got: dict, want: dict) -> None:
    assert got["frames"] == want["frames"]
    assert got["fps"] == 30.0
    assert got["duration_s"] == pytest.approx(want["duration_s"])
    np.testing.assert_allclose(got["root_pos_first"], want["root_pos_first"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["object_pos_first"], want["object_pos_first"], rtol=0, atol=1e-6)
    assert got["contact_frames"] == want["contact_frames"]
    assert got["body_contact_counts"] == want["body_contact_counts"]
    assert sum(got["body_contact_counts"].values()) == want["frames"] * 52
    assert (got["object"], got["subject"]) == (want["object"], want["subject"])


def test_inspect_json_in_a_real_process(motions_root: Path) -> None:
    clip = sorted((motions_root / "OMOMO_new").glob("*woodchair*.pt"))[0]
    result = run_cli("motion", "inspect", str(clip), "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    check_summary(got, expected_summary(clip, drop_first=False))
    assert got["variant"] == "OMOMO_new" and got["name"] == clip.stem


@pytest.mark.parametrize("folder", ["OMOMO", "OMOMO_retarget"])
def test_inspect_json_other_variants(motions_root: Path, folder: str, capsys) -> None:
    clip = sorted((motions_root / folder).glob("*.pt"))[-1]
    assert cli.main(["motion", "inspect", str(clip), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    check_summary(got, expected_summary(clip, drop_first=folder == "OMOMO_retarget"))
    assert got["variant"] == folder


def test_inspect_text_summary(motions_root: Path, capsys) -> None:
    clip = sorted((motions_root / "OMOMO").glob("*largetable*.pt"))[0]
    assert cli.main(["motion", "inspect", str(clip)]) == 0
    out = capsys.readouterr().out
    assert "largetable" in out and f"{raw_table(clip).shape[0]} at 30 fps" in out


def test_convert_pt_to_npz_and_back(motions_root: Path, tmp_path: Path, capsys) -> None:
    clip = sorted((motions_root / "OMOMO_new").glob("*.pt"))[2]
    npz = tmp_path / "clip.npz"
    back = tmp_path / clip.name
    assert cli.main(["motion", "convert", str(clip), str(npz)]) == 0
    assert cli.main(["motion", "convert", str(npz), str(back)]) == 0
    np.testing.assert_array_equal(raw_table(back), raw_table(clip))
    assert load_motion(npz).identical(load_motion(clip))
    capsys.readouterr()
    assert cli.main(["motion", "convert", str(clip), str(npz)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["motion", "convert", str(npz), str(tmp_path / "clip.pt")]) == 2  # object not in name
    assert "file name must carry the object" in capsys.readouterr().err


def _good_table() -> np.ndarray:
    t = np.zeros((10, 591), dtype=np.float32)
    t[:, 6] = 1.0  # identity root
    t[:, 324] = 1.0  # identity object
    t[:, 383 + 3 : 591 : 4] = 1.0  # identity bodies
    t[:, 331:383] = -1.0
    return t


def _bad_pt(tmp: Path, kind: str) -> Path:
    path = tmp / "sub2_largetable_000.pt"
    table = _good_table()
    if kind == "truncated":
        torch.save(torch.from_numpy(table), path)
        path.write_bytes(path.read_bytes()[:700])
        return path
    if kind == "text":
        path.write_text("not a tensor\n")
        return path
    if kind == "width_590":
        table = table[:, :590]
    elif kind == "nan":
        table[4, 100] = np.nan
    elif kind == "zero_quaternion":
        table[2, 3:7] = 0.0
    elif kind == "unknown_object":
        path = tmp / "sub2_spaceship_000.pt"
    torch.save(torch.from_numpy(np.ascontiguousarray(table)), path)
    return path


def test_good_synthetic_file_is_accepted(tmp_path: Path) -> None:
    """The bad files below differ from this one by exactly their defect."""
    assert load_motion(_bad_pt(tmp_path, "none")).num_frames == 10


@pytest.mark.parametrize("kind", ["truncated", "width_590", "nan"])
def test_bad_file_in_a_real_process_is_one_line_without_traceback(kind: str, tmp_path: Path) -> None:
    path = _bad_pt(tmp_path, kind)
    result = run_cli("motion", "inspect", str(path), "--json")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"intermimic: error: {path}:")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "truncated or corrupt"),
        ("text", "not a PyTorch file"),
        ("width_590", "[10, 590]"),
        ("nan", f"NaN in joint_rotvec at joint {JOINT_NAMES[(100 - 9) // 3]} at frame 4"),
        ("zero_quaternion", "zero-norm quaternion in root_rot at frame 2"),
        ("unknown_object", "unknown object 'spaceship'"),
    ],
)
def test_bad_file_exit_code_and_message(kind: str, expected: str, tmp_path: Path, capsys) -> None:
    path = _bad_pt(tmp_path, kind)
    assert cli.main(["motion", "inspect", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and err.startswith(f"intermimic: error: {path}:") and expected in err


def test_bad_npz_version_and_variant_misuse(tmp_path: Path, capsys) -> None:
    good = _bad_pt(tmp_path, "none")
    npz = tmp_path / "clip.npz"
    assert cli.main(["motion", "convert", str(good), str(npz)]) == 0
    with np.load(npz, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["format_version"] = np.array(99)
    np.savez(npz, **data)
    capsys.readouterr()
    assert cli.main(["motion", "inspect", str(npz)]) == 2
    assert "format_version 99 is newer" in capsys.readouterr().err
    assert cli.main(["motion", "inspect", str(good), "--variant", "OMOMO_retarget"]) == 0
    assert "9 at 30 fps" in capsys.readouterr().out  # forced variant drops row 0
