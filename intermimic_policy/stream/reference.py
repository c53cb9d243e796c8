"""The reference generator: windows cut from a clip, as a motion generator would send them.

For tests and the docs: a separate process that behaves like a live generator, with what makes
real ones hard to consume, each switchable:

* its own frame rate (``fps``: the clip is resampled, slerp for rotations);
* time warping (``warp_s``): stream time t plays clip time ``t + warp_s sin(2 pi t / warp_period_s)``;
* plan noise (``noise_m``): each window's human is shifted by its own random offset, so
  consecutive windows disagree where they overlap (the consumer cross-fades);
* delivery: jitter, dropped windows and a stall come from the runner (``stream.runner``).

Run: ``python -m intermimic_policy.stream.reference --clip CLIP [--fps 20] [--window 1.5]
[--warp 0.1] [--noise 0.01] [--lockstep] [--jitter 0.05] [--drop 3]``, or
``intermimic stream --generator intermimic_policy.stream.reference:example``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.importers.common import slerp
from intermimic_policy.stream.runner import (
    GeneratedWindow,
    add_run_arguments,
    install_stop_on_signals,
    run_from_args,
)


@dataclass(frozen=True)
class ReferenceGeneratorConfig:
    window_s: float = 1.5  # planned horizon of each window
    fps: float = 0.0  # the generator's frame rate (0: the clip's)
    warp_s: float = 0.0
    warp_period_s: float = 2.0
    noise_m: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise IntermimicError(f"window must be positive, got {self.window_s}")
        if self.warp_s and 2 * math.pi * abs(self.warp_s) / self.warp_period_s >= 1.0:
            raise IntermimicError("warp too strong: clip time would run backwards "
                                  f"(need 2 pi warp / period < 1, got {2 * math.pi * abs(self.warp_s) / self.warp_period_s:.2f})")


def sample_motion(motion: HOIMotion, clip_frames: np.ndarray, fps: float) -> HOIMotion:
    """``motion`` at fractional frame numbers (exact copies at whole ones), as a clip at ``fps``."""
    c = np.clip(np.asarray(clip_frames, dtype=np.float64), 0.0, motion.num_frames - 1)
    i0 = np.minimum(np.floor(c + 1e-9).astype(np.int64), motion.num_frames - 1)
    i1 = np.minimum(i0 + 1, motion.num_frames - 1)
    w = np.where(c - i0 < 1e-9, 0.0, c - i0)
    exact = w == 0.0

    def lerp(a: np.ndarray) -> np.ndarray:
        ww = w.reshape(-1, *([1] * (a.ndim - 1)))
        out = ((1 - ww) * a[i0].astype(np.float64) + ww * a[i1].astype(np.float64)).astype(a.dtype)
        out[exact] = a[i0[exact]]
        return out

    def qs(a: np.ndarray) -> np.ndarray:
        q0 = torch.from_numpy(a[i0].astype(np.float64))
        q1 = torch.from_numpy(a[i1].astype(np.float64))
        ww = torch.from_numpy(w).reshape(-1, *([1] * (q0.ndim - 1)))
        out = slerp(q0, q1, ww).numpy().astype(a.dtype)
        out[exact] = a[i0[exact]]
        return out

    jq = quat.from_rotvec(torch.from_numpy(motion.joint_rotvec.astype(np.float64))).numpy()
    joints = quat.to_rotvec(torch.from_numpy(qs(jq).astype(np.float64))).numpy().astype(np.float32)
    joints[exact] = motion.joint_rotvec[i0[exact]]
    nearest = np.where(w < 0.5, i0, i1)
    return replace(
        motion, fps=float(fps), root_pos=lerp(motion.root_pos), root_rot=qs(motion.root_rot), joint_rotvec=joints,
        body_pos=lerp(motion.body_pos), body_rot=qs(motion.body_rot), object_pos=lerp(motion.object_pos),
        object_rot=qs(motion.object_rot), body_contact=motion.body_contact[nearest],
        object_contact=motion.object_contact[nearest])


class ClipWindowGenerator:
    """``generate(time_s)`` for :func:`stream.runner.run` (see the module docstring)."""

    def __init__(self, motion: HOIMotion, config: ReferenceGeneratorConfig | None = None) -> None:
        self.motion = motion
        self.config = config or ReferenceGeneratorConfig()
        self.fps = self.config.fps or motion.fps
        self.rng = np.random.default_rng(self.config.seed)
        self.done = False

    def clip_time(self, t: np.ndarray) -> np.ndarray:
        c = self.config
        if not c.warp_s:
            return t
        return t + c.warp_s * np.sin(2 * math.pi * t / c.warp_period_s)

    def __call__(self, time_s: float) -> GeneratedWindow | None:
        if self.done:
            return None
        start = int(math.floor(max(time_s, 0.0) * self.fps + 1e-6))
        count = int(round(self.config.window_s * self.fps)) + 1
        stream_t = (start + np.arange(count)) / self.fps
        clip_t = self.clip_time(stream_t)
        last = self.motion.duration_s
        inside = clip_t <= last + 1e-9
        end = not inside.all()
        if end:
            keep = max(int(inside.sum()), 1)
            clip_t, end = clip_t[:keep], True
            clip_t[-1] = min(clip_t[-1], last)
            self.done = True
        chunk = sample_motion(self.motion, clip_t * self.motion.fps, self.fps)
        if self.config.noise_m > 0:
            shift = self.rng.normal(0.0, self.config.noise_m, 3).astype(np.float32)
            chunk = replace(chunk, root_pos=chunk.root_pos + shift, body_pos=chunk.body_pos + shift)
        return GeneratedWindow(chunk, start, end)


_EXAMPLE: ClipWindowGenerator | None = None


def example(time_s: float) -> GeneratedWindow | None:
    """A generator over the bundled example clip at 20 fps (``intermimic stream --generator
    intermimic_policy.stream.reference:example``)."""
    global _EXAMPLE
    if _EXAMPLE is None:
        from intermimic_policy.motion.example import make_example_motion

        _EXAMPLE = ClipWindowGenerator(make_example_motion(), ReferenceGeneratorConfig(fps=20.0))
    return _EXAMPLE(time_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intermimic_reference_generator", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--clip", help="clip to cut windows from (any format load_motion reads)")
    src.add_argument("--example", action="store_true", help="the bundled example clip")
    p.add_argument("--fps", type=float, default=0.0, help="generator frame rate (0: the clip's)")
    p.add_argument("--window", type=float, default=1.5, help="seconds planned per window")
    p.add_argument("--warp", type=float, default=0.0, help="time-warp amplitude (s)")
    p.add_argument("--warp-period", type=float, default=2.0)
    p.add_argument("--noise", type=float, default=0.0, help="per-window position noise (m, std)")
    add_run_arguments(p)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="[%(levelname)s] %(name)s: %(message)s")
    stop = install_stop_on_signals()
    try:
        from intermimic_policy.ros.messages_convert import load_clip

        motion = load_clip(args.clip or "", example=args.example)
        gen = ClipWindowGenerator(motion, ReferenceGeneratorConfig(
            window_s=args.window, fps=args.fps, warp_s=args.warp, warp_period_s=args.warp_period,
            noise_m=args.noise, seed=args.seed))
        stats = run_from_args(gen, args, stop)
    except IntermimicError as exc:
        print(f"reference_generator: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"reference_generator: {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
