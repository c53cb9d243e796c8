"""Quality of a retargeted clip, measured from the robot motion alone (plus the source baseline).

* ``contact_error_cm``: mean distance of a robot hand's contact site to the object surface (visual
  mesh), over the (frame, hand) pairs where the source hand is labelled in contact.
* ``source_contact_error_cm``: the same pairs on the source humanoid: distance of the nearest
  labelled hand body (joint centre) to the surface. The baseline the retargeter is compared with.
* ``foot_skate_cm_s``: mean horizontal speed of the robot's sole sites between consecutive frames
  where the foot is planted (both feet); ``source_foot_skate_cm_s`` the same for the source feet.
* ``penetration_cm``: max depth of any robot collision point below the floor or inside the object's
  convex parts (what the simulator collides with), split as floor / object; the link and frame of
  each maximum are reported (``*_penetration_link`` / ``*_penetration_frame``, -1: none) to find it.
* ``joint_limit_violations``: (frame, joint) entries outside the URDF position range, plus those whose
  speed exceeds the URDF velocity limit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pinocchio as pin
from scipy.spatial.transform import Rotation

from intermimic_policy.embodiment.robot import RobotDescription
from intermimic_policy.motion.robot_motion import RobotMotion
from intermimic_policy.retarget.geometry import ObjectGeometry, hull_depth
from intermimic_policy.retarget.targets import ClipTargets

LIMIT_TOL = 1e-6


def evaluate(desc: RobotDescription, motion: RobotMotion, targets: ClipTargets,
             geom: ObjectGeometry | None) -> dict[str, Any]:
    model, data = desc.model, desc.model.createData()
    q_all = motion.qpos()
    t_n = motion.num_frames
    hand_fid = [desc.frame_id(h.site) for h in desc.config.hands]
    foot_fid = [desc.frame_id(f.site) for f in desc.config.feet]
    hand_pos = np.zeros((t_n, len(hand_fid), 3))
    foot_pos = np.zeros((t_n, len(foot_fid), 3))
    floor_pen = 0.0
    obj_pen = 0.0
    floor_link = obj_link = ""
    floor_frame = obj_frame = -1
    obj_r = Rotation.from_quat(motion.object_rot.astype(np.float64)).as_matrix()
    obj_t = motion.object_pos.astype(np.float64)
    for t in range(t_n):
        pin.framesForwardKinematics(model, data, q_all[t])
        hand_pos[t] = [data.oMf[f].translation for f in hand_fid]
        foot_pos[t] = [data.oMf[f].translation for f in foot_fid]
        cp = desc.collision_points
        pts = np.empty_like(cp.local)
        for fid in np.unique(cp.frame_ids):
            sel = cp.frame_ids == fid
            M = data.oMf[int(fid)]
            pts[sel] = cp.local[sel] @ M.rotation.T + M.translation
        i = int(np.argmin(pts[:, 2]))
        if -pts[i, 2] > floor_pen:
            floor_pen, floor_link, floor_frame = float(-pts[i, 2]), cp.link_names[i], t
        if geom is not None:
            depth, _ = hull_depth(geom.hulls, (pts - obj_t[t]) @ obj_r[t])
            i = int(np.argmax(depth))
            if depth[i] > obj_pen:
                obj_pen, obj_link, obj_frame = float(depth[i]), cp.link_names[i], t

    robot_err: list[float] = []
    source_err: list[float] = []
    if geom is not None:
        tt, hh = np.nonzero(targets.hand_contact)
        if len(tt):
            local = np.einsum("nji,nj->ni", obj_r[tt], hand_pos[tt, hh] - obj_t[tt])
            robot_err = geom.surface.closest(local)[1].tolist()
            source_err = targets.source_hand_dist[tt, hh].tolist()

    # Skate: horizontal speed between consecutive frames where the foot is planted in both.
    both = targets.foot_planted[1:] & targets.foot_planted[:-1]
    skate = (np.linalg.norm(np.diff(foot_pos[..., :2], axis=0), axis=2) * motion.fps)[both]
    src_skate = (np.linalg.norm(np.diff(targets.source_foot[..., :2], axis=0), axis=2) * motion.fps)[both]

    qj = motion.joint_pos.astype(np.float64)
    pos_viol = int(((qj < desc.lower - LIMIT_TOL) | (qj > desc.upper + LIMIT_TOL)).sum())
    vel_viol = 0
    if t_n > 1:
        vel_viol = int((np.abs(np.diff(qj, axis=0)) * motion.fps > desc.velocity_limit * (1 + 1e-6) + LIMIT_TOL).sum())

    def mean_cm(x: list[float] | np.ndarray) -> float | None:
        return round(float(np.mean(x)) * 100.0, 3) if len(x) else None

    return {
        "frames": t_n,
        "scale": round(targets.scale, 4),
        "contact_frames": len(robot_err),
        "contact_error_cm": mean_cm(robot_err),
        "contact_error_max_cm": round(float(np.max(robot_err)) * 100, 3) if robot_err else None,
        "source_contact_error_cm": mean_cm(source_err),
        "foot_skate_cm_s": mean_cm(skate),
        "source_foot_skate_cm_s": mean_cm(src_skate),
        "planted_fraction": round(float(targets.foot_planted.mean()), 3),
        "penetration_cm": round(max(floor_pen, obj_pen, 0.0) * 100, 3),
        "floor_penetration_cm": round(max(floor_pen, 0.0) * 100, 3),
        "object_penetration_cm": round(max(obj_pen, 0.0) * 100, 3),
        "floor_penetration_link": floor_link,
        "object_penetration_link": obj_link,
        "floor_penetration_frame": floor_frame,
        "object_penetration_frame": obj_frame,
        "joint_limit_violations": pos_viol + vel_viol,
        "joint_position_violations": pos_viol,
        "joint_velocity_violations": vel_viol,
    }
