"""Clip loaders bound what they read: expected archive members only, each within a byte budget
checked before decompression, and no tensor that expands a few stored bytes into a full table.

Each malicious file here is small on disk; before the limits the loaders inflated or allocated
hundreds of MB to GB for them (a 1.4 MB .npz: 1.3 GB, a 2.3 MB .pt: 4.9 GB, a 1.7 kB .pt: 2 GB).
The memory test runs the loader in a fresh interpreter and reads its peak RSS.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.motion.hoi_motion import MotionError
from intermimic_policy.motion.intermimic_pt import WIDTH, save_intermimic_pt
from intermimic_policy.motion.io import load_motion
from intermimic_policy.motion.npz_format import save_npz
from intermimic_policy.motion.validate import MAX_FRAMES
from tests.test_motion_io import synthetic_motion

BOMB_BYTES = 300 << 20  # inflates to 300 MB: over every per-member budget, cheap to deflate


def _write_zero_member(archive: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as handle:
        chunk = bytes(1 << 20)
        for _ in range(size // len(chunk)):
            handle.write(chunk)


def _rewrite(src_path: Path, out: Path, replace: dict[str, int], extra: dict[str, int] | None = None) -> Path:
    """Copy a zip, streaming zero-filled deflated members of the given sizes in place of ``replace``
    (matched by name suffix) and adding ``extra``."""
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED,
                                                            compresslevel=1) as dst:
        for info in src.infolist():
            size = next((n for suffix, n in replace.items() if info.filename.endswith(suffix)), None)
            if size is None:
                dst.writestr(info.filename, src.read(info.filename))
            else:
                _write_zero_member(dst, info.filename, size)
        for name, size in (extra or {}).items():
            _write_zero_member(dst, name, size)
    return out


def npz_with_junk(tmp: Path) -> Path:
    """A valid clip plus an unrelated member that inflates to 300 MB (the file is ~0.3 MB)."""
    return _rewrite(save_npz(synthetic_motion(), tmp / "clip.npz"), tmp / "junk.npz", {}, {"junk.npy": BOMB_BYTES})


def npz_with_oversized_array(tmp: Path) -> Path:
    """An expected member (body_pos) that inflates past its budget."""
    return _rewrite(save_npz(synthetic_motion(), tmp / "clip.npz"), tmp / "big.npz", {"body_pos.npy": BOMB_BYTES})


def pt_with_deflated_storage(tmp: Path) -> Path:
    """A torch.save file whose storage record is deflated and inflates to 300 MB."""
    small = tmp / "small.pt"
    torch.save(torch.zeros(4, WIDTH), small)
    return _rewrite(small, tmp / "sub2_largetable_000.pt", {"/data/0": BOMB_BYTES})


def pt_expanded(tmp: Path, frames: int) -> Path:
    """A 1.7 kB torch.save file holding one float viewed as [frames, 591] with zero strides."""
    out = tmp / "sub2_largetable_001.pt"
    torch.save(torch.zeros(1, 1).expand(frames, WIDTH), out)
    return out


_PEAK = """
import json, resource, sys
from intermimic_policy.motion.io import load_motion
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_motion(path); error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"path": path, "error": error, "grown_mb": grown}))
"""


def peak_growth(paths: list[Path]) -> list[dict]:
    """Load each path in one fresh interpreter: its error and how far peak RSS grew (MB) meanwhile."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _PEAK, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, cwd=root, env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(paths):]]


def test_small_malicious_files_are_refused_without_allocating(tmp_path: Path) -> None:
    builders = (npz_with_junk, pt_with_deflated_storage, lambda tmp: pt_expanded(tmp, 400_000))
    paths = []
    for i, build in enumerate(builders):
        (tmp_path / str(i)).mkdir()
        paths.append(build(tmp_path / str(i)))
        assert paths[-1].stat().st_size < 2 << 20
    for result in peak_growth(paths):
        assert result["error"] is not None and result["error"].startswith("MotionError"), result
        assert result["grown_mb"] < 50, result  # before the limits: 300 MB to 2 GB


@pytest.mark.parametrize(("build", "expected"), [
    (npz_with_junk, "unexpected archive member 'junk.npy'"),
    (npz_with_oversized_array, "'body_pos.npy' (body_pos) is 300.0 MB uncompressed, over the limit of"),
    (pt_with_deflated_storage, "(tensor storage) is 300.0 MB uncompressed, over the limit of"),
    (lambda tmp: pt_expanded(tmp, MAX_FRAMES + 1), f"over the limit of {MAX_FRAMES} frames"),
    (lambda tmp: pt_expanded(tmp, 100), "not stored contiguously"),
])
def test_refusal_is_one_line_naming_the_limit(tmp_path: Path, build, expected: str) -> None:
    path = build(tmp_path)
    with pytest.raises(MotionError) as info:
        load_motion(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and "\n" not in message
    assert expected in message, message


def test_npz_header_must_match_the_member_size(tmp_path: Path) -> None:
    """A .npy header declaring a huge shape over a few bytes is refused before numpy allocates it."""
    path = tmp_path / "clip.npz"
    save_npz(synthetic_motion(), path)
    forged = tmp_path / "forged.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (MAX_FRAMES, 52, 3)})
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = header.getvalue() + b"\0" * 64 if info.filename == "body_pos.npy" else src.read(info.filename)
            dst.writestr(info.filename, data)
    with pytest.raises(MotionError, match="declares a float32 array of shape .* truncated or forged"):
        load_motion(forged)


def test_extra_member_in_pt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sub2_largetable_000.pt"
    save_intermimic_pt(synthetic_motion(), path)
    prefix = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{prefix}/payload.bin", b"x" * 10)
    with pytest.raises(MotionError, match=r"unexpected archive member '.*/payload.bin'; expected only"):
        load_motion(path)


def test_legacy_torch_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sub2_largetable_000.pt"
    torch.save(torch.zeros(4, WIDTH), path, _use_new_zipfile_serialization=False)
    with pytest.raises(MotionError, match="legacy .* refused"):
        load_motion(path)


def test_valid_clips_still_load_within_the_limits(tmp_path: Path) -> None:
    motion = synthetic_motion()
    for name in ("sub2_largetable_000.pt", "clip.npz"):
        path = save_intermimic_pt(motion, tmp_path / name) if name.endswith(".pt") else save_npz(
            motion, tmp_path / name, compress=True)
        assert load_motion(path).num_frames == motion.num_frames
