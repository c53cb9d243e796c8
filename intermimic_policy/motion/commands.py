"""``intermimic motion inspect|convert``: look at a clip, or rewrite it in another format.

Both go through :func:`intermimic_policy.motion.io.load_motion`, so a bad file ends as one
line on stderr with a non-zero exit (``cli.main`` prints :class:`MotionError`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy import jsonio
from intermimic_policy.motion.hoi_motion import HOIMotion, MotionError
from intermimic_policy.motion.intermimic_pt import VARIANTS
from intermimic_policy.motion.io import load_motion, save_motion


def summarize(motion: HOIMotion) -> dict[str, Any]:
    """A JSON-ready summary of a clip (what ``inspect --json`` prints)."""
    levels, counts = np.unique(motion.body_contact, return_counts=True)
    by_level = {str(int(k)): int(n) for k, n in zip(levels, counts)}
    return {
        "name": motion.name,
        "source": motion.source,
        "variant": motion.meta.get("variant"),
        "subject": motion.meta.get("subject"),
        "object": motion.object_name,
        "frames": motion.num_frames,
        "fps": float(motion.fps),
        "duration_s": float(motion.duration_s),
        "root_pos_first": [float(v) for v in motion.root_pos[0]],
        "object_pos_first": [float(v) for v in motion.object_pos[0]],
        "contact_frames": int(np.count_nonzero(motion.object_contact)),
        "body_contact_counts": {k: by_level.get(k, 0) for k in ("1", "-1", "0")},
        "meta": dict(motion.meta),
    }


def _text(summary: dict[str, Any], path: str) -> str:
    def vec(v: list[float]) -> str:
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"

    counts = summary["body_contact_counts"]
    total = max(1, sum(counts.values()))
    frames = summary["frames"]
    lines = [
        f"{path}",
        f"  clip      {summary['name']}  (source {summary['source'] or '-'}, variant {summary['variant'] or '-'}, "
        f"subject {summary['subject'] or '-'})",
        f"  object    {summary['object']}",
        f"  frames    {frames} at {summary['fps']:g} fps = {summary['duration_s']:.2f} s",
        f"  root      first position {vec(summary['root_pos_first'])} m",
        f"  object    first position {vec(summary['object_pos_first'])} m",
        f"  contact   object flag set in {summary['contact_frames']}/{frames} frames "
        f"({100.0 * summary['contact_frames'] / frames:.0f}%)",
        "  labels    "
        + ", ".join(f"{k:>2}: {counts[k]} ({100.0 * counts[k] / total:.0f}%)" for k in ("1", "-1", "0"))
        + "  (body x frame)",
    ]
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> int:
    motion = load_motion(args.clip, args.variant)
    summary = summarize(motion)
    if args.json:
        print(jsonio.dumps(summary, indent=None))
    else:
        print(_text(summary, args.clip))
    return 0


def _convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and not args.force:
        raise MotionError(f"{dst}: already exists (pass --force to overwrite)")
    if dst.exists() and src.resolve() == dst.resolve():
        raise MotionError(f"{dst}: output is the input file")
    motion = load_motion(src, args.variant)
    save_motion(motion, dst)
    print(f"wrote {dst} ({motion.num_frames} frames, object {motion.object_name})")
    return 0


def _import(args: argparse.Namespace) -> int:
    from intermimic_policy.motion.importers import import_motion

    dst = Path(args.out)
    if dst.suffix.lower() != ".npz":
        raise MotionError(f"{dst}: --out must be an .npz file")
    if dst.exists() and not args.force:
        raise MotionError(f"{dst}: already exists (pass --force to overwrite)")
    motion = import_motion(args.source, args.format, fps=args.fps, up=args.up, object_name=args.object,
                           model=args.model)
    save_motion(motion, dst)
    print(f"wrote {dst} ({motion.num_frames} frames at {motion.fps:g} fps, object {motion.object_name}, "
          f"body {motion.meta.get('body_model')}, contact labels {motion.meta.get('contact_labels')})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    motion = subparsers.add_parser("motion", help="inspect and convert HOI motion clips")
    sub = motion.add_subparsers(dest="motion_command", required=True, metavar="ACTION")

    inspect = sub.add_parser("inspect", help="print a summary of a clip (.pt or .npz)")
    inspect.add_argument("clip", help="clip file (.pt InterMimic layout, or .npz)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--variant", choices=VARIANTS, help="InterMimic .pt variant (default: detect)")
    inspect.set_defaults(func=_inspect)

    convert = sub.add_parser("convert", help="rewrite a clip as .npz or InterMimic .pt")
    convert.add_argument("input", help="clip to read (.pt or .npz)")
    convert.add_argument("output", help="file to write; the extension picks the format")
    convert.add_argument("--variant", choices=VARIANTS, help="variant of an input .pt (default: detect)")
    convert.add_argument("--force", action="store_true", help="overwrite an existing output")
    convert.set_defaults(func=_convert)

    from intermimic_policy.motion.importers import FORMATS as IMPORT_FORMATS

    imp = sub.add_parser("import", help="import SMPL-X / SMPL-H parameters or joint positions as a clip")
    imp.add_argument("source", help="source file (.npz, .npy or .pt; never unpickled)")
    imp.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="what the source holds")
    imp.add_argument("--out", required=True, help="clip to write (.npz)")
    imp.add_argument("--fps", type=float, help="source frame rate (default: from the file)")
    imp.add_argument("--up", choices=("y", "z"), help="source up axis (default: z for smplx/smplh, y for joints)")
    imp.add_argument("--object", help="object name from our table (default: from the file)")
    imp.add_argument("--model", help="SMPL-X / SMPL-H model .npz (file or folder); without it our skeleton table")
    imp.add_argument("--force", action="store_true", help="overwrite an existing output")
    imp.set_defaults(func=_import)
