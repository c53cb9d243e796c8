"""``intermimic humanoid build``: write the humanoid MJCF for the default or a subject skeleton.

The subject comes from a clip (its own bone lengths, :func:`skeleton_from_motion`) or from
SMPL-X shape parameters (:func:`skeleton_from_smplx`). The file is written atomically and a
mass and bone summary is printed, so a user sees at once how far the subject is from default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from intermimic_policy.embodiment.mjcf import humanoid_mjcf, humanoid_model, standing_height
from intermimic_policy.embodiment.skeleton import Skeleton, default_skeleton
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, KEY_BODIES
from intermimic_policy.errors import IntermimicError


def register(subparsers: argparse._SubParsersAction) -> None:
    humanoid = subparsers.add_parser("humanoid", help="build the SMPL-X humanoid MJCF")
    sub = humanoid.add_subparsers(dest="humanoid_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="write the humanoid MJCF (default or subject-specific)")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--from-clip", metavar="CLIP", help="estimate the skeleton from a clip (.pt/.npz)")
    source.add_argument("--smplx-model", metavar="PATH", help="SMPL-X .npz file or folder of SMPLX_<GENDER>.npz")
    build.add_argument("--betas", metavar="B", type=float, nargs="+", help="SMPL-X shape parameters")
    build.add_argument("--gender", default="neutral", choices=("neutral", "male", "female"))
    build.add_argument("--no-fit-feet", action="store_true", help="keep the foot boxes as scaled, do not fit them to the floor")
    build.add_argument("--out", required=True, metavar="FILE.xml", help="output MJCF path")
    build.set_defaults(func=_build)


def _skeleton(args: argparse.Namespace) -> Skeleton:
    fit = not args.no_fit_feet
    if args.betas is not None and args.smplx_model is None:
        raise IntermimicError("--betas needs --smplx-model")
    if args.from_clip:
        from intermimic_policy.embodiment.smplx_shape import skeleton_from_motion
        from intermimic_policy.motion.io import load_motion

        return skeleton_from_motion(load_motion(args.from_clip), fit_feet=fit)
    if args.smplx_model:
        from intermimic_policy.embodiment.smplx_shape import skeleton_from_smplx

        return skeleton_from_smplx(args.smplx_model, args.betas or [0.0], args.gender, fit_feet=fit)
    return default_skeleton()


def summary(skeleton: Skeleton) -> str:
    """Mass, standing height and key-bone lengths against the default skeleton."""
    ref = default_skeleton()
    lengths, ref_lengths = skeleton.bone_lengths(), ref.bone_lengths()
    lines = [
        f"skeleton {skeleton.name}  hash {skeleton.content_hash()[:16]}",
        f"  mass {skeleton.mass():.2f} kg (default {ref.mass():.2f} kg), "
        f"standing root height {standing_height(skeleton):.3f} m",
        "  bone            length m  default m  ratio",
    ]
    for b in KEY_BODIES:
        ratio = lengths[b] / ref_lengths[b]
        lines.append(f"  {BODY_NAMES[b]:<14}  {lengths[b]:8.4f}  {ref_lengths[b]:9.4f}  {ratio:5.2f}")
    finger = [b for b in range(len(BODY_NAMES)) if b not in KEY_BODIES and b != 0]
    ratios = lengths[finger] / ref_lengths[finger]
    lines.append(f"  fingers (30)    ratio {np.min(ratios):.2f}..{np.max(ratios):.2f}")
    for key, value in sorted(skeleton.meta.items()):
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def _build(args: argparse.Namespace) -> int:
    from intermimic_policy.atomic import atomic_output

    skeleton = _skeleton(args)
    humanoid_model(skeleton)  # refuse to write a model that does not compile
    out = Path(args.out)
    with atomic_output(out) as handle:
        handle.write(humanoid_mjcf(skeleton).encode())
    print(summary(skeleton))
    print(f"wrote {out}")
    return 0
