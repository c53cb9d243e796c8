"""Quality of the importers and the contact labels over the OMOMO_new clips.

For each clip:

* joints round trip: the 22 SMPL joints written at 20 fps y-up (with the object as rotation
  matrices), imported back at 30 fps; mean / max joint error (cm) against the original frames;
* SMPL-X round trip: the clip written as SMPL-X parameters (y-up), imported without a model;
  largest joint rotation error (degrees);
* contact labels from geometry (the clip's own skeleton) against the shipped labels: agreement.

    INTERMIMIC_DATA=../shared/data python benchmarks/bench_motion_import.py [--clips N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp
from tqdm import tqdm

from intermimic_policy.embodiment.smplx_shape import skeleton_from_motion
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion import contact_labels as cl
from intermimic_policy.motion.importers import import_motion
from intermimic_policy.motion.importers.common import Y_UP_TO_Z_UP
from intermimic_policy.motion.importers.joints import BODY_OF_SMPL22
from intermimic_policy.motion.importers.smpl_params import smpl_params_from_motion
from intermimic_policy.motion.io import find_motion_files, load_motion


def joints_round_trip(clip, folder: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    t30 = np.arange(clip.num_frames) / clip.fps
    t20 = np.arange(int(t30[-1] * 20 + 1e-9) + 1) / 20.0
    c = t20 * clip.fps
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, clip.num_frames - 1)
    w = (c - i0)[:, None]
    j = clip.body_pos[:, list(BODY_OF_SMPL22)].astype(np.float64)
    j20 = (1 - w[:, :, None]) * j[i0] + w[:, :, None] * j[i1]
    o20 = (1 - w) * clip.object_pos[i0] + w * clip.object_pos[i1]
    r20 = Slerp(t30, Rotation.from_quat(clip.object_rot.astype(np.float64)))(t20)
    back = Y_UP_TO_Z_UP.T
    src = folder / f"{clip.name}_joints.npz"
    np.savez(src, joints=j20 @ back.T, fps=np.array(20.0), object_pos=o20 @ back.T,
             object_rot=(Rotation.from_matrix(back) * r20).as_matrix(), object_name=np.array(clip.object_name))
    out = import_motion(src, "joints", up="y")
    n = min(out.num_frames, clip.num_frames)
    err = np.linalg.norm(out.body_pos[:n, list(BODY_OF_SMPL22)] - clip.body_pos[:n, list(BODY_OF_SMPL22)], axis=-1)
    return 100 * float(err.mean()), 100 * float(err.max())


def smplx_round_trip(clip, folder: Path) -> float:  # type: ignore[no-untyped-def]
    src = folder / f"{clip.name}_smplx.npz"
    np.savez(src, **smpl_params_from_motion(clip, "smplx", up="y"))
    out = import_motion(src, "smplx", up="y")
    a = quat.from_rotvec(torch.from_numpy(out.joint_rotvec.astype(np.float64)))
    b = quat.from_rotvec(torch.from_numpy(clip.joint_rotvec.astype(np.float64)))
    return float(np.degrees(quat.angle_between(a, b).numpy()).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=0, help="first N clips (0: all)")
    args = p.parse_args()
    root = Path(os.environ.get("INTERMIMIC_DATA", "../shared/data")) / "motions" / "OMOMO_new"
    files = find_motion_files(root)
    files = files[: args.clips] if args.clips else files
    rows = []
    ours_all, theirs_all = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for f in tqdm(files, desc="clips"):
            clip = load_motion(f)
            mean_cm, max_cm = joints_round_trip(clip, Path(tmp))
            rot_deg = smplx_round_trip(clip, Path(tmp))
            sk = skeleton_from_motion(clip)
            pts = cl.object_surface_points(clip.object_name, cl.ContactLabelConfig().num_points)
            lab = cl.label_contacts(sk.geoms, clip.body_pos, clip.body_rot, pts, clip.object_pos, clip.object_rot,
                                    clip.fps)
            ours_all.append(lab)
            theirs_all.append(clip.body_contact)
            rows.append((clip.name, mean_cm, max_cm, rot_deg, cl.agreement(lab, clip.body_contact)["all"]))
    print(f"{'clip':28s} {'joints mean cm':>14s} {'max cm':>8s} {'smplx deg':>10s} {'labels %':>9s}")
    for name, a, b, c, d in rows:
        print(f"{name:28s} {a:14.2f} {b:8.2f} {c:10.4f} {100 * d:9.1f}")
    arr = np.array([r[1:] for r in rows])
    score = cl.agreement(np.concatenate(ours_all), np.concatenate(theirs_all))
    print(f"all {len(rows)} clips: joints round trip mean {arr[:, 0].mean():.2f} cm (worst clip {arr[:, 0].max():.2f}, "
          f"worst joint {arr[:, 1].max():.2f}); smplx rotations max {arr[:, 2].max():.4f} deg; contact labels "
          f"{100 * score['all']:.1f} % (+1 {100 * score['1']:.1f}, -1 {100 * score['-1']:.1f}, 0 {100 * score['0']:.1f})")


if __name__ == "__main__":
    main()
