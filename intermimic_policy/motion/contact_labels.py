"""Per-body contact labels from geometry, for sources that ship none (generators, SMPL files).

InterMimic's labels (spec 1.2, 5.4) have three levels: +1 the body must touch the object
(contact promotion), -1 it must not (penalised), 0 do not care. Its data was labelled from the
SMPL-X mesh: +1 within a few mm of the object, -1 farther than 0.1 m, feet standing on the floor
never -1. We have no mesh, so each body is its collision geom (sphere, capsule or box of the
skeleton), and:

* distance = from the geom's surface to the nearest object surface point;
* relative speed = of the body against the object's surface point nearest to it (a body sliding
  fast past the object is passing by, not holding it);
* +1 only for bodies about as close as the frame's closest body (InterMimic promotes the
  segments within 5 mm of the closest distance; our geoms are coarser, so 1.5 cm);
* levels with hysteresis, so labels do not flicker at a threshold: +1 is entered below
  ``touch_on_m`` (and slow) and left above ``touch_off_m``; -1 is entered above ``far_on_m`` and
  left below ``far_off_m``;
* hands are labelled as InterMimic's data labels them, per segment group (the four fingers
  together, the wrist with the thumb), by the group's nearest body;
* a foot (ankle, toe) on the floor or standing still is never -1, and never +1 (it touches the
  floor too, which InterMimic's labels cannot tell from the object).

The object flag of a frame is "any body +1" (spec 1.2: the two coincide in the data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from intermimic_policy.embodiment.skeleton import Geom
from intermimic_policy.embodiment.smplx_body import BODY_NAMES, NUM_BODIES, body_index
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import MotionError

FOOT_BODIES: tuple[int, ...] = tuple(body_index(n) for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"))


def _hand_groups() -> tuple[tuple[int, ...], ...]:
    groups = []
    for side in ("L_", "R_"):
        fingers = tuple(body_index(f"{side}{f}{k}") for f in ("Index", "Middle", "Pinky", "Ring") for k in (1, 2, 3))
        palm = (body_index(f"{side}Wrist"),) + tuple(body_index(f"{side}Thumb{k}") for k in (1, 2, 3))
        groups += [fingers, palm]
    return tuple(groups)


HAND_GROUPS: tuple[tuple[int, ...], ...] = _hand_groups()


@dataclass(frozen=True)
class ContactLabelConfig:
    """Thresholds (m, m/s). Defaults chosen against the labels shipped in ``OMOMO_new``."""

    touch_on_m: float = 0.03
    touch_off_m: float = 0.05
    far_on_m: float = 0.10
    far_off_m: float = 0.08
    max_slip_mps: float = 1.0
    relative_m: float = 0.015  # +1 only within this of the frame's closest body (InterMimic: 5 mm on the mesh)
    foot_floor_m: float = 0.01  # a foot whose lowest point is below this is on the floor
    foot_still_mps: float = 0.2  # ... or slower than this is standing
    num_points: int = 4096  # object surface points the distance is measured to

    def __post_init__(self) -> None:
        if not (0 < self.touch_on_m <= self.touch_off_m < self.far_off_m <= self.far_on_m):
            raise ValueError("contact thresholds must satisfy 0 < touch_on <= touch_off < far_off <= far_on")


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of points p [T, P, 3] to segments a-b [T, 3]."""
    ab = (b - a).unsqueeze(1)
    ap = p - a.unsqueeze(1)
    s = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (ap - s.unsqueeze(-1) * ab).norm(dim=-1)


def geom_distance(g: Geom, pos: torch.Tensor, rot: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Signed distance [T, P] of world points [T, P, 3] to a body's geom at pose pos [T,3], rot [T,4]."""
    if g.kind == "box":
        centre = pos + quat.rotate(rot, torch.as_tensor(g.pos, dtype=pos.dtype).expand_as(pos))
        local = quat.rotate_inverse(rot.unsqueeze(1).expand(*points.shape[:2], 4), points - centre.unsqueeze(1))
        q = local.abs() - torch.as_tensor(g.size, dtype=pos.dtype)
        return q.clamp_min(0.0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0.0)
    ends = torch.as_tensor(g.points(), dtype=pos.dtype)
    world = pos.unsqueeze(1) + quat.rotate(rot.unsqueeze(1).expand(-1, len(ends), 4), ends.expand(len(pos), -1, 3))
    if g.kind == "sphere":
        return (points - world[:, :1]).norm(dim=-1) - g.size[0]
    return _segment_distance(points, world[:, 0], world[:, 1]) - g.size[0]


def body_object_distance(geoms: Sequence[Geom], body_pos: np.ndarray, body_rot: np.ndarray,
                         object_points: np.ndarray, object_pos: np.ndarray, object_rot: np.ndarray,
                         fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(distance [T, 52] of each body's geom to the object surface, relative speed [T, 52])."""
    bp = torch.from_numpy(np.asarray(body_pos, np.float64))
    br = quat.normalize(torch.from_numpy(np.asarray(body_rot, np.float64)))
    op = torch.from_numpy(np.asarray(object_pos, np.float64))
    orot = quat.normalize(torch.from_numpy(np.asarray(object_rot, np.float64)))
    pts = torch.from_numpy(np.asarray(object_points, np.float64))
    t = bp.shape[0]
    world = op.unsqueeze(1) + quat.rotate(orot.unsqueeze(1).expand(t, len(pts), 4), pts.expand(t, -1, 3))
    obj_lin = quat.finite_difference_velocity(op, fps)
    obj_ang = quat.finite_difference_angular_velocity(orot, fps)
    body_lin = quat.finite_difference_velocity(bp.transpose(0, 1), fps).transpose(0, 1)
    dist = torch.empty(t, NUM_BODIES, dtype=torch.float64)
    speed = torch.empty_like(dist)
    rows = torch.arange(t)
    for b, g in enumerate(geoms):
        d = geom_distance(g, bp[:, b], br[:, b], world)
        k = d.argmin(dim=1)
        dist[:, b] = d[rows, k]
        near = world[rows, k]
        v_obj = obj_lin + torch.cross(obj_ang, near - op, dim=-1)
        speed[:, b] = (body_lin[:, b] - v_obj).norm(dim=-1)
    return dist.numpy(), speed.numpy()


def _step(state: int, d: float, slip: bool, c: ContactLabelConfig) -> int:
    if state == 1 and d < c.touch_off_m and not slip:
        return 1
    if state == -1 and d > c.far_off_m:
        return -1
    if d < c.touch_on_m and not slip:
        return 1
    if d > c.far_on_m:
        return -1
    return 0


def levels_with_hysteresis(dist: np.ndarray, speed: np.ndarray, c: ContactLabelConfig) -> np.ndarray:
    """Three levels [T, N] from distance and relative speed [T, N], per column over time."""
    t, n = dist.shape
    out = np.zeros((t, n), dtype=np.int8)
    slip = speed > c.max_slip_mps
    for j in range(n):
        state = 0
        for i in range(t):
            state = _step(state, float(dist[i, j]), bool(slip[i, j]), c)
            out[i, j] = state
    return out


def label_contacts(geoms: Sequence[Geom], body_pos: np.ndarray, body_rot: np.ndarray, object_points: np.ndarray,
                   object_pos: np.ndarray, object_rot: np.ndarray, fps: float,
                   config: ContactLabelConfig | None = None) -> np.ndarray:
    """Labels [T, 52] int8 in {-1, 0, +1} (see the module docstring)."""
    from intermimic_policy.embodiment.fk import geom_bottom_z

    c = config or ContactLabelConfig()
    if len(geoms) != NUM_BODIES:
        raise ValueError(f"expected {NUM_BODIES} geoms, got {len(geoms)}")
    dist, speed = body_object_distance(geoms, body_pos, body_rot, object_points, object_pos, object_rot, fps)
    # hand groups: one label per group, from the group's nearest body
    for group in HAND_GROUPS:
        idx = list(group)
        k = dist[:, idx].argmin(axis=1)
        rows = np.arange(len(dist))
        dist[:, idx] = dist[rows, np.asarray(idx)[k]][:, None]
        speed[:, idx] = speed[rows, np.asarray(idx)[k]][:, None]
    # the frame's closest body sets the contact level: a body much farther than it is not touching
    closest = dist.min(axis=1, keepdims=True)
    relative = np.where(dist > closest + c.relative_m, np.maximum(dist, c.touch_off_m + 1e-6), dist)
    labels = levels_with_hysteresis(relative, speed, c)
    bp = torch.from_numpy(np.asarray(body_pos, np.float64))
    bottoms = geom_bottom_z(geoms, bp, quat.normalize(torch.from_numpy(np.asarray(body_rot, np.float64)))).numpy()
    foot_speed = np.linalg.norm(quat.finite_difference_velocity(bp.transpose(0, 1), fps).transpose(0, 1).numpy(),
                                axis=-1)
    for b in FOOT_BODIES:
        grounded = (bottoms[:, b] < c.foot_floor_m) | (foot_speed[:, b] < c.foot_still_mps)
        labels[grounded & (labels[:, b] == -1), b] = 0
        labels[labels[:, b] == 1, b] = 0  # feet touch the floor too: never promoted
    return labels


def object_surface_points(object_name: str, num_points: int) -> np.ndarray:
    """The object's surface points [P, 3] in its frame, or a MotionError saying why not."""
    from intermimic_policy.errors import IntermimicError
    from intermimic_policy.motion.objects import load_object

    try:
        asset = load_object(object_name, num_points=num_points)
    except IntermimicError as exc:
        raise MotionError(f"no object geometry for contact labels: {exc}") from exc
    return np.asarray(asset.points(num_points), dtype=np.float64)


def label_clip_arrays(geoms: Sequence[Geom], body_pos: np.ndarray, body_rot: np.ndarray, object_pos: np.ndarray,
                      object_rot: np.ndarray, object_name: str, fps: float,
                      config: ContactLabelConfig | None = None) -> np.ndarray:
    c = config or ContactLabelConfig()
    points = object_surface_points(object_name, c.num_points)
    return label_contacts(geoms, body_pos, body_rot, points, object_pos, object_rot, fps, c)


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Fraction of (frame, body) labels equal, overall and per reference level."""
    out = {"all": float((ours == reference).mean())}
    for level in (-1, 0, 1):
        mask = reference == level
        out[str(level)] = float((ours[mask] == level).mean()) if mask.any() else float("nan")
    return out


__all__ = ["BODY_NAMES", "ContactLabelConfig", "HAND_GROUPS", "agreement", "label_clip_arrays", "label_contacts"]
