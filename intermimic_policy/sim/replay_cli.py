"""``intermimic replay``: watch a clip kinematically in MuJoCo (video, contact sheet, plots)."""

from __future__ import annotations

import argparse
import sys

from intermimic_policy.errors import IntermimicError


def _replay(args: argparse.Namespace) -> int:
    from intermimic_policy.sim.objects import load_object
    from intermimic_policy.sim.replay import ReplayConfig, replay_motion

    if args.example == (args.clip is not None):
        raise IntermimicError("replay needs exactly one of CLIP or --example")
    from intermimic_policy.motion.robot_motion import is_robot_motion_file

    if args.clip is not None and is_robot_motion_file(args.clip):  # a retargeted robot motion
        from intermimic_policy.retarget.replay import replay_robot_motion

        summary = replay_robot_motion(args.clip, args.out, args.width, args.height, args.stride, args.format,
                                      progress=not args.quiet)
        print(f"video: {summary['video'] or 'none: ' + summary.get('video_reason', '')}; plot: {summary['plot']}")
        return 0
    if args.example:
        from intermimic_policy.motion.example import make_example_motion

        motion = make_example_motion()
    else:
        from intermimic_policy.motion.io import load_motion

        motion = load_motion(args.clip)
    config = ReplayConfig(width=args.width, height=args.height, stride=args.stride, video_format=args.format,
                          skeleton=args.skeleton, progress=not args.quiet)
    obj = load_object(args.object) if args.object else None
    result = replay_motion(motion, args.out, config, obj=obj)
    if result.object_reason:
        print(f"intermimic replay: replaying without the object: {result.object_reason}", file=sys.stderr)
    if result.video is None:
        print(f"intermimic replay: no video: {result.video_reason}; wrote plots only", file=sys.stderr)
    else:
        print(f"video: {result.video} ({result.frames} frames, {result.gl_backend})")
    if result.contact_sheet is not None:
        print(f"contact sheet: {result.contact_sheet}")
    for plot in result.plots:
        print(f"plot: {plot}")
    print(f"summary: {result.summary}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay", help="kinematic replay of a clip in MuJoCo: video, contact sheet, contact plot",
        description="Replay a clip kinematically in MuJoCo with its object and write a video (MP4, or GIF), "
                    "a PNG contact sheet, a contact-label / hand-object distance plot and summary.json.",
    )
    p.add_argument("clip", nargs="?", default=None, help="clip file (.pt InterMimic or .npz)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--example", action="store_true", help="replay the bundled example clip (no file needed)")
    p.add_argument("--skeleton", choices=("default", "clip"), default="default",
                   help="humanoid: the default skeleton, or bones fitted to the clip's body positions")
    p.add_argument("--object", default=None, help="object name, URDF or mesh overriding the clip's object")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--stride", type=int, default=1, help="render every Nth frame (video stays real time)")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)
