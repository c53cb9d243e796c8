"""How fast clips load: InterMimic ``.pt`` versus our ``.npz`` (plain and compressed).

Loads every clip under a folder (default ``$INTERMIMIC_DATA/motions``) ``--repeats`` times with
the full, validating loaders, and prints clips/s and frames/s per format, plus bare
``torch.load`` as the floor. The ``.npz`` copies are written to a temporary folder.

    python benchmarks/bench_motion_loading.py [--root DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from intermimic_policy.motion.io import find_motion_files, load_motion
from intermimic_policy.motion.npz_format import save_npz


def timed(label: str, paths: list[Path], load: Callable[[Path], int], repeats: int) -> None:
    frames = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for p in paths:
            frames += load(p)
    elapsed = time.perf_counter() - start
    size_mb = sum(p.stat().st_size for p in paths) / 2**20
    clips = len(paths) * repeats
    print(
        f"{label:<28} {clips / elapsed:9.1f} clips/s {frames / elapsed:12.0f} frames/s "
        f"{1e3 * elapsed / clips:7.2f} ms/clip   {size_mb:6.1f} MiB on disk"
    )


def main() -> int:
    default_root = Path(os.environ.get("INTERMIMIC_DATA", ".")) / "motions"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root, help="folder searched for .pt clips")
    parser.add_argument("--repeats", type=int, default=3, help="passes over all clips per format")
    args = parser.parse_args()

    pt_files = [p for p in find_motion_files(args.root) if p.suffix == ".pt"]
    if not pt_files:
        print(f"no .pt clips under {args.root}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    print(f"{len(pt_files)} clips under {args.root}, {args.repeats} passes, torch threads 1")

    with tempfile.TemporaryDirectory() as tmp:
        motions = [load_motion(p) for p in tqdm(pt_files, desc="reading", unit="clip")]
        npz, npz_z = [], []
        for i, m in enumerate(tqdm(motions, desc="writing .npz", unit="clip")):
            npz.append(save_npz(m, Path(tmp) / f"{i:04d}.npz"))
            npz_z.append(save_npz(m, Path(tmp) / f"{i:04d}_z.npz", compress=True))

        def bare(p: Path) -> int:
            return int(torch.load(p, weights_only=True).shape[0])

        def full(p: Path) -> int:
            return load_motion(p).num_frames

        timed("torch.load only (.pt)", pt_files, bare, args.repeats)
        timed("load_motion .pt", pt_files, full, args.repeats)
        timed("load_motion .npz", npz, full, args.repeats)
        timed("load_motion .npz compressed", npz_z, full, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
