"""Offscreen rendering of a scene, a camera that follows the humanoid, video and contact sheets.

Why our own GL context instead of ``mujoco.Renderer``: ``mujoco.Renderer`` picks its GL backend
from ``MUJOCO_GL`` once, when ``mujoco`` is first imported (default glfw, which needs a display),
and the package imports ``mujoco`` long before a replay starts. Creating the context here lets
one process try EGL (headless GPU or Mesa) and then OSMesa (software), and report ONE clear line
when neither works, so the caller can still write its plots. The render calls are the same as
``mujoco.Renderer``'s (``mjv_updateScene``, ``mjr_render``, ``mjr_readPixels``).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from intermimic_policy.atomic import atomic_output
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import quaternion as quat

_DISABLED = ("disable", "disabled", "off", "false", "0")


class RenderUnavailable(IntermimicError):
    """No OpenGL context could be created for offscreen rendering (the message says why)."""


def gl_backends() -> tuple[str, ...]:
    """Backends to try, from ``MUJOCO_GL``: egl or osmesa alone if named, none if disabled."""
    value = os.environ.get("MUJOCO_GL", "").strip().lower()
    if value in _DISABLED:
        return ()
    if value in ("egl", "osmesa"):
        return (value,)
    return ("egl", "osmesa")


def _make_gl_context(backend: str, width: int, height: int) -> Any:
    previous = os.environ.get("PYOPENGL_PLATFORM")
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        else:
            raise RenderUnavailable(f"unknown GL backend {backend!r}")
        ctx = GLContext(width, height)
        ctx.make_current()
        return ctx
    except BaseException:
        # Leave PyOpenGL's platform choice as it was, so the next backend can still be tried.
        if previous is None:
            os.environ.pop("PYOPENGL_PLATFORM", None)
        else:
            os.environ["PYOPENGL_PLATFORM"] = previous
        raise


class OffscreenRenderer:
    """Renders RGB frames of ``model`` offscreen. Use as a context manager, or call :meth:`close`."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int) -> None:
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise IntermimicError(
                f"render size {width}x{height} exceeds the scene's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight} (SceneConfig.offscreen_*)"
            )
        backends = gl_backends()
        if not backends:
            raise RenderUnavailable(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} disables OpenGL")
        errors = []
        self._gl: Any = None
        for backend in backends:
            try:
                self._gl = _make_gl_context(backend, width, height)
                self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
                mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._ctx)
                self.backend = backend
                break
            except Exception as exc:  # each backend fails in its own way (ImportError, GLError, FatalError)
                errors.append(f"{backend}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                self._free_gl()
        else:
            raise RenderUnavailable("no OpenGL for offscreen rendering (" + "; ".join(errors) + ")")
        self.model = model
        self.width, self.height = width, height
        self._scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom))
        self._option = mujoco.MjvOption()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, data: mujoco.MjData, camera: mujoco.MjvCamera | str | int = -1) -> np.ndarray:
        """An RGB image [H, W, 3] uint8 of ``data`` seen from ``camera`` (free camera or model camera)."""
        cam = camera if isinstance(camera, mujoco.MjvCamera) else self._fixed_camera(camera)
        self._gl.make_current()
        mujoco.mjv_updateScene(self.model, data, self._option, None, cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, None, self._rect, self._ctx)
        return np.flipud(self._rgb).copy()

    def _fixed_camera(self, camera: str | int) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) if isinstance(camera, str) else camera
        if isinstance(camera, str) and cid < 0:
            raise IntermimicError(f"scene has no camera named {camera!r}")
        if cid >= 0:
            cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = cid
        else:
            mujoco.mjv_defaultFreeCamera(self.model, cam)
        return cam

    def _free_gl(self) -> None:
        if self._gl is not None:
            with contextlib.suppress(Exception):
                self._gl.free()
            self._gl = None

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None and self._gl is not None:
            with contextlib.suppress(Exception):
                self._gl.make_current()
                self._ctx.free()
        self._ctx = None
        self._free_gl()

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- camera ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowCameraConfig:
    """Free camera aimed between the humanoid and the object; angles in degrees.

    By default the azimuth is set from the humanoid's heading over the clip's first second, so the
    camera looks at the body's front-left three-quarter side whatever way the clip faces.
    """

    azimuth: float | None = None  # absolute azimuth; None: from the humanoid's heading
    azimuth_from_front: float = 35.0  # degrees around the body from straight in front
    elevation: float = -18.0
    min_distance: float = 2.8
    max_distance: float = 6.0
    object_weight: float = 0.35  # how far the aim point leans from the pelvis to the object
    smoothing_s: float = 0.5  # moving-average window of the aim point, seconds
    height: float = 0.85  # aim height above the floor, m


@dataclass(frozen=True)
class CameraPath:
    lookat: np.ndarray  # [T, 3] per clip frame
    distance: float
    azimuth: float
    elevation: float

    def camera(self, frame: int) -> mujoco.MjvCamera:
        return free_camera(self.lookat[frame], self.distance, self.azimuth, self.elevation)


def follow_camera_path(
    root_pos: np.ndarray,
    object_pos: np.ndarray | None,
    fps: float,
    cfg: FollowCameraConfig | None = None,
    root_rot: np.ndarray | None = None,
) -> CameraPath:
    """A camera path that keeps humanoid and object in frame, smoothed in time.

    Distance (fitting the largest humanoid-object spread of the clip) and angles are fixed over
    the clip, which keeps the picture steady; only the aim point glides with the body.
    ``root_rot`` (xyzw) sets the azimuth from the humanoid's heading when ``cfg.azimuth`` is None.
    """
    c = cfg or FollowCameraConfig()
    root = np.asarray(root_pos, dtype=np.float64)
    aim = root.copy()
    spread = 0.0
    if object_pos is not None:
        obj = np.asarray(object_pos, dtype=np.float64)
        aim[:, :2] = (1.0 - c.object_weight) * root[:, :2] + c.object_weight * obj[:, :2]
        spread = float(np.linalg.norm(root[:, :2] - obj[:, :2], axis=1).max())
    aim[:, 2] = c.height
    window = max(1, int(round(c.smoothing_s * fps)))
    if window > 1 and len(aim) > 1:
        pad = window // 2
        padded = np.concatenate([np.repeat(aim[:1], pad, 0), aim, np.repeat(aim[-1:], window - 1 - pad, 0)])
        kernel = np.ones(window) / window
        aim = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(3)], axis=1)
    distance = float(np.clip(1.9 + 1.2 * spread, c.min_distance, c.max_distance))
    if c.azimuth is not None:
        azimuth = c.azimuth
    elif root_rot is not None:
        first = torch.from_numpy(np.asarray(root_rot[: max(1, int(fps))], dtype=np.float64))
        yaw = quat.heading_angle(first).numpy()
        heading = math.degrees(math.atan2(np.sin(yaw).mean(), np.cos(yaw).mean()))
        # MuJoCo's free camera looks along azimuth; facing the body means looking against its heading.
        azimuth = heading + 180.0 + c.azimuth_from_front
    else:
        azimuth = 180.0 + c.azimuth_from_front
    return CameraPath(aim, distance, azimuth, c.elevation)


def free_camera(lookat: Sequence[float], distance: float, azimuth: float, elevation: float) -> mujoco.MjvCamera:
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = lookat
    cam.distance = distance
    cam.azimuth = azimuth
    cam.elevation = elevation
    return cam


# -- outputs -----------------------------------------------------------------------------------


class VideoWriter:
    """Streams frames into ``path`` (MP4 via imageio-ffmpeg; GIF if ``.gif`` or no ffmpeg).

    Frames go to a temporary file in the same folder that replaces ``path`` on :meth:`close`,
    so a crash never leaves a truncated video under the final name.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, fmt: str = "mp4") -> None:
        import imageio.v2 as iio

        if fmt not in ("mp4", "gif"):
            raise IntermimicError(f"video format must be mp4 or gif, got {fmt!r}")
        self.fps = float(fps)
        self.frames = 0
        self.format = fmt
        self.fallback_reason: str | None = None
        target = Path(path)
        writer = None
        if fmt == "mp4":
            try:
                import imageio_ffmpeg

                imageio_ffmpeg.get_ffmpeg_exe()
                self.path = target.with_suffix(".mp4")
                self._tmp = self._tmp_name(self.path)
                writer = iio.get_writer(self._tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                        quality=7, pixelformat="yuv420p", macro_block_size=16)
            except (ImportError, RuntimeError, OSError) as exc:
                self.fallback_reason = f"MP4 unavailable ({exc}); wrote GIF"
                self.format = "gif"
        if writer is None:
            self.path = target.with_suffix(".gif")
            self._tmp = self._tmp_name(self.path)
            writer = iio.get_writer(self._tmp, format="GIF", mode="I", duration=1000.0 / self.fps, loop=0)
        self._writer = writer

    @staticmethod
    def _tmp_name(path: Path) -> Path:
        return path.parent / f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> Path:
        self._writer.close()
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            raise IntermimicError(f"video {self.path}: no frames to write")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def video_writer(path: str | os.PathLike[str], fps: float, fmt: str = "mp4") -> Iterator[VideoWriter]:
    writer = VideoWriter(path, fps, fmt)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


def contact_sheet(frames: Sequence[np.ndarray], labels: Sequence[str] = (), columns: int = 4,
                  tile_width: int = 320) -> np.ndarray:
    """One image [H, W, 3] uint8: ``frames`` as a grid of tiles, each captioned with its label."""
    from PIL import Image, ImageDraw

    if not frames:
        raise IntermimicError("contact sheet needs at least one frame")
    h, w = frames[0].shape[:2]
    tile_h = max(1, int(round(h * tile_width / w)))
    columns = max(1, min(columns, len(frames)))
    rows = math.ceil(len(frames) / columns)
    sheet = Image.new("RGB", (columns * tile_width, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, frame in enumerate(frames):
        tile = Image.fromarray(np.asarray(frame, dtype=np.uint8)).resize((tile_width, tile_h), Image.Resampling.BILINEAR)
        x, y = (i % columns) * tile_width, (i // columns) * tile_h
        sheet.paste(tile, (x, y))
        if i < len(labels):
            draw.rectangle((x, y, x + 7 * len(labels[i]) + 8, y + 16), fill=(0, 0, 0))
            draw.text((x + 4, y + 2), labels[i], fill=(255, 255, 255))
    return np.asarray(sheet)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an RGB image atomically."""
    from PIL import Image

    with atomic_output(path) as handle:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(handle, format="PNG")
    return Path(path)
