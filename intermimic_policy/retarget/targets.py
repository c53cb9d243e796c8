"""Per-frame IK targets from an SMPL-X HOI clip: scaled body points, hand contacts, planted feet.

* Scale: source positions shrink (or grow) by ``s`` about the floor point under the source pelvis,
  so the robot walks the source's path while its limbs keep their proportions. The object keeps its
  size (the robot handles the real object) and its horizontal path; its height above where it starts
  is scaled by ``s``, or by the overhead-reach ratio where that is smaller (the G1's arms are short
  for its legs), so what the source lifts overhead the robot lifts to its own overhead reach.
* Hands: a hand is in contact when any of its source bodies is labelled +1. Its target is the object
  surface point nearest the source hand point, stored in the object frame (so it rides with the
  object), smoothed over the contact segment and projected back onto the surface. Around a segment
  the free hand target blends towards it over ``blend_frames`` so the hand arrives instead of jumping.
* Feet: planted when the source foot is low and slow (thresholds below); the retargeter then pins the
  robot sole where it first touched. A planted foot that creeps ``replant_distance`` from where it
  planted is unplanted for ``replant_frames`` and planted again (a small step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pinocchio as pin
import torch
from scipy.ndimage import uniform_filter1d
from scipy.spatial.transform import Rotation

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.embodiment.fk import bone_offsets_from_pose
from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.motion.hoi_motion import CONTACT_MUST_TOUCH, HOIMotion
from intermimic_policy.retarget.geometry import ObjectGeometry

_LEG = ("L_Hip", "L_Knee", "L_Ankle"), ("R_Hip", "R_Knee", "R_Ankle")


@dataclass(frozen=True)
class TargetConfig:
    blend_frames: int = 8  # hand approach / release ramp
    smooth_frames: int = 5  # moving average of the object-frame contact point within a segment
    foot_height: float = 0.05  # planted: foot body within this of its clip floor level (m)...
    foot_speed: float = 0.25  # ...and slower than this (m/s, horizontal)
    min_planted_frames: int = 3
    # A planted source foot that creeps (pivots, shuffles below foot_speed) this far from where it
    # planted is re-planted: unplanted for replant_frames (the robot's pinned sole steps after it),
    # then pinned where it lands. Pinned for good, the robot stays behind the source and its hands
    # lose the object (largetable_014: 10-25 cm).
    replant_distance: float = 0.05  # m, scaled source foot, horizontal
    replant_frames: int = 2
    scale_object_height: bool = True  # object height above its first frame scaled (else as the source)
    reach_height: bool = True  # ... by the overhead-reach ratio where it is below s (short arms lift less)


@dataclass(frozen=True, eq=False)
class ClipTargets:
    scale: float
    pos: np.ndarray  # [T, P, 3] scaled source positions of the paired bodies
    rot: np.ndarray  # [T, P, 3, 3] target rotation of the paired robot frames
    hand_contact: np.ndarray  # [T, H] bool (labelled +1)
    hand_label: np.ndarray  # [T, H] int8 source label summary (+1 touch, -1 all must-not, 0 else)
    hand_free: np.ndarray  # [T, H, 3] scaled source hand point
    hand_surface: np.ndarray  # [T, H, 3] world surface target (valid where hand_weight > 0)
    hand_surface_normal: np.ndarray  # [T, H, 3] world outward normal there
    hand_blend: np.ndarray  # [T, H] 0 = free target, 1 = surface target
    source_hand_dist: np.ndarray  # [T, H] source: min distance of labelled hand bodies to the surface
    foot_planted: np.ndarray  # [T, F] bool
    source_foot: np.ndarray  # [T, F, 3] scaled source foot point (mean of its bodies)
    object_pos: np.ndarray  # [T, 3] the robot's object path: height above its start scaled by s


def source_leg_length(motion: HOIMotion) -> float:
    ids = [[smplx_body.body_index(n) for n in leg] for leg in _LEG]
    lengths = [np.linalg.norm(np.diff(motion.body_pos[:, leg], axis=1), axis=2).sum(axis=1).mean() for leg in ids]
    return float(np.mean(lengths))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def source_rest_positions(motion: HOIMotion) -> np.ndarray:
    """[52, 3] the clip's own skeleton at rest (identity rotations), pelvis at the origin:
    per-bone offsets in the parent frame, median over frames, chained down the tree."""
    off = bone_offsets_from_pose(torch.from_numpy(motion.body_pos.astype(np.float64)),
                                 torch.from_numpy(motion.body_rot.astype(np.float64))).numpy()
    off = np.median(off, axis=0)
    rest = np.zeros((smplx_body.NUM_BODIES, 3))
    for b in range(1, smplx_body.NUM_BODIES):
        rest[b] = rest[smplx_body.PARENTS[b]] + off[b]
    return rest


def clip_scale(desc: RobotDescription, motion: HOIMotion) -> float:
    cfg = desc.config
    if cfg.scale_rule == "fixed":
        assert cfg.scale_value is not None
        return cfg.scale_value
    return desc.leg_length() / source_leg_length(motion)


def reach_scale(desc: RobotDescription, motion: HOIMotion) -> float:
    """Robot / source overhead reach (shoulder height above the sole plus arm length, first hand):
    what the source lifts overhead the robot lifts to its own overhead reach. Falls back to the
    leg-length scale when the YAML pairs no shoulder, elbow and wrist."""
    cfg = desc.config
    frames = {p.body: p.frame for p in cfg.pairs}
    if not cfg.hands or not cfg.feet:
        return clip_scale(desc, motion)
    hand = cfg.hands[0]
    side = smplx_body.BODY_NAMES[hand.point[0]][:2]  # "L_" / "R_"
    chain = [f"{side}Shoulder", f"{side}Elbow", f"{side}Wrist"]
    if not all(b in frames for b in chain):
        return clip_scale(desc, motion)
    p = desc.frame_positions(pin.neutral(desc.model), [frames[b] for b in chain] + [hand.site, cfg.feet[0].site])
    robot = p[0, 2] - p[4, 2] + float(np.linalg.norm(np.diff(p[:4], axis=0), axis=1).sum())
    rest = source_rest_positions(motion)
    ids = [smplx_body.body_index(b) for b in chain]
    hand_rest = rest[list(hand.point)].mean(axis=0)
    arm = float(np.linalg.norm(np.diff(np.vstack([rest[ids], hand_rest]), axis=0), axis=1).sum())
    ankle = smplx_body.body_index(f"{side}Ankle")
    floor = float(np.percentile(motion.body_pos[:, ankle, 2], 5))  # ankle height above the floor, standing
    source = rest[ids[0], 2] - rest[ankle, 2] + floor + arm
    return float(robot / source)


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.where(d == 1)[0].tolist(), np.where(d == -1)[0].tolist(), strict=True))


def split_creeping(mask: np.ndarray, xy: np.ndarray, distance: float, gap: int) -> np.ndarray:
    """``mask`` (planted frames) with ``gap`` frames cleared wherever the foot ``xy`` [T, 2] has
    moved more than ``distance`` from where its current planted run began (the run then restarts
    after the gap): a creeping foot becomes a series of small steps, each pinned where it lands."""
    out = mask.copy()
    for a, b in _segments(mask):
        anchor = a
        t = a
        while t < b:
            if np.linalg.norm(xy[t] - xy[anchor]) > distance:
                out[t : min(t + gap, b)] = False
                anchor = t = t + gap
                continue
            t += 1
    return out


def build_targets(desc: RobotDescription, motion: HOIMotion, geom: ObjectGeometry | None,
                  config: TargetConfig | None = None) -> ClipTargets:
    cfg = config or TargetConfig()
    t_n = motion.num_frames
    s = clip_scale(desc, motion)
    pelvis = motion.body_pos[:, 0].astype(np.float64)
    anchor = np.stack([pelvis[:, 0], pelvis[:, 1], np.zeros(t_n)], axis=1)[:, None]

    def scaled(p: np.ndarray) -> np.ndarray:
        return anchor + s * (p - anchor)

    body_pos = motion.body_pos.astype(np.float64)
    pairs = desc.config.pairs
    pair_ids = [smplx_body.body_index(p.body) for p in pairs]
    rots = Rotation.from_quat(motion.body_rot[:, pair_ids].reshape(-1, 4).astype(np.float64)).as_matrix()
    rots = rots.reshape(t_n, len(pair_ids), 3, 3)
    offsets = np.stack([np.asarray(p.rot_offset) for p in pairs])
    rot = np.einsum("tpij,pjk->tpik", rots, offsets)
    # Rest poses: robot frames at q = 0, source bodies from the clip's own bones (both pelvis-relative).
    robot_rest = desc.frame_positions(pin.neutral(desc.model), [p.frame for p in pairs])
    robot_rest -= desc.frame_positions(pin.neutral(desc.model), [desc.config.root_link])[0]
    src_rest = source_rest_positions(motion)
    pos = np.zeros((t_n, len(pairs), 3))
    index = {p.body: k for k, p in enumerate(pairs)}
    for k, p in enumerate(pairs):
        b = pair_ids[k]
        if p.chain is None:
            calib = robot_rest[k] - s * src_rest[b]  # rest offset, in the (rest = identity) body frame
            pos[:, k] = scaled(body_pos[:, [b]])[:, 0] + np.einsum("tij,j->ti", rots[:, k], calib)
        else:
            j = index[p.chain]
            length = float(np.linalg.norm(robot_rest[k] - robot_rest[j]))
            pos[:, k] = pos[:, j] + length * _unit(body_pos[:, b] - body_pos[:, pair_ids[j]])

    hands = desc.config.hands
    h_n = len(hands)
    labels = motion.body_contact
    contact = np.zeros((t_n, h_n), bool)
    hand_label = np.zeros((t_n, h_n), np.int8)
    free = np.zeros((t_n, h_n, 3))
    surf = np.zeros((t_n, h_n, 3))
    surf_n = np.zeros((t_n, h_n, 3))
    blend = np.zeros((t_n, h_n))
    src_dist = np.full((t_n, h_n), np.nan)
    obj_r = Rotation.from_quat(motion.object_rot.astype(np.float64)).as_matrix()
    obj_t = motion.object_pos.astype(np.float64)
    # The robot lifts what the source lifts by s times as much (a table raised to a person's chest
    # goes to the robot's chest); resting and horizontal positions stay, so nothing slides.
    robot_obj = obj_t.copy()
    s_obj = min(s, reach_scale(desc, motion)) if cfg.reach_height else s
    robot_obj[:, 2] = obj_t[0, 2] + s_obj * (obj_t[:, 2] - obj_t[0, 2]) if cfg.scale_object_height else obj_t[:, 2]
    for h, hand in enumerate(hands):
        lab = labels[:, list(hand.source_bodies)]
        contact[:, h] = (lab == CONTACT_MUST_TOUCH).any(axis=1) & motion.object_contact.astype(bool)
        hand_label[:, h] = np.where(contact[:, h], 1, np.where((lab == -1).all(axis=1), -1, 0))
        point = body_pos[:, list(hand.point)].mean(axis=1)
        if hand.chain is None:
            free[:, h] = scaled(point[:, None])[:, 0]
        else:
            j = index[hand.chain]
            q0 = pin.neutral(desc.model)
            site, base = desc.frame_positions(q0, [hand.site, pairs[j].frame])
            free[:, h] = pos[:, j] + float(np.linalg.norm(site - base)) * _unit(point - body_pos[:, pair_ids[j]])
        if geom is None or not contact[:, h].any():
            continue
        local = np.einsum("tji,tj->ti", obj_r, point - obj_t)  # source hand point, object frame
        # Source baseline: nearest labelled hand body to the surface.
        src = list(hand.source_bodies)
        tt, bb = np.nonzero(contact[:, h, None] & (labels[:, src] == CONTACT_MUST_TOUCH))  # all at once
        loc_b = np.einsum("nji,nj->ni", obj_r[tt], body_pos[tt, np.asarray(src)[bb]] - obj_t[tt])
        d = geom.surface.closest(loc_b)[1]
        np.fmin.at(src_dist[:, h], tt, d)  # NaN where no body touches: fmin keeps the distance
        c_local, _, _ = geom.surface.closest(local)
        for a, b in _segments(contact[:, h]):
            seg = c_local[a:b]
            if b - a > 1 and cfg.smooth_frames > 1:
                seg = uniform_filter1d(seg, size=min(cfg.smooth_frames, b - a), axis=0, mode="nearest")
            c_local[a:b] = seg
        c_local, _, c_normal = geom.surface.closest(c_local)
        # Outward normal: flip the face normal to point towards the source hand (meshes are not oriented).
        flip = np.sign(np.einsum("ti,ti->t", local - c_local, c_normal))
        c_normal = c_normal * np.where(flip == 0, 1.0, flip)[:, None]
        # Blend weights and, outside segments, the target of the nearest segment frame.
        idx = np.arange(t_n)
        on = np.where(contact[:, h])[0]
        nearest = on[np.clip(np.searchsorted(on, idx), 0, len(on) - 1)]
        prev = on[np.clip(np.searchsorted(on, idx) - 1, 0, len(on) - 1)]
        nearest = np.where(np.abs(prev - idx) < np.abs(nearest - idx), prev, nearest)
        gap = np.abs(nearest - idx)
        blend[:, h] = np.clip(1.0 - gap / max(cfg.blend_frames, 1), 0.0, 1.0)
        blend[contact[:, h], h] = 1.0
        loc = c_local[nearest]
        surf[:, h] = np.einsum("tij,tj->ti", obj_r, loc) + robot_obj
        surf_n[:, h] = np.einsum("tij,tj->ti", obj_r, c_normal[nearest])

    feet = desc.config.feet
    planted = np.zeros((t_n, len(feet)), bool)
    src_foot = np.zeros((t_n, len(feet), 3))
    for f, foot in enumerate(feet):
        pts = body_pos[:, list(foot.source_bodies)]  # [T, B, 3]
        floor = np.percentile(pts[..., 2], 5, axis=0)  # per body: its clip floor level
        low = (pts[..., 2] - floor < cfg.foot_height).any(axis=1)
        vel = np.zeros(t_n)
        if t_n > 1:  # horizontal speed of the foot's mean point (central differences)
            vel = np.linalg.norm(np.gradient(pts[..., :2].mean(axis=1), axis=0), axis=1) * motion.fps
        mask = low & (vel < cfg.foot_speed)
        src_foot[:, f] = scaled(pts.mean(axis=1)[:, None])[:, 0]
        mask = split_creeping(mask, src_foot[:, f, :2], cfg.replant_distance, cfg.replant_frames)
        for a, b in _segments(mask):
            if b - a < cfg.min_planted_frames:
                mask[a:b] = False
        planted[:, f] = mask
    return ClipTargets(s, pos, rot, contact, hand_label, free, surf, surf_n, blend, src_dist, planted, src_foot, robot_obj)
