"""One description of a body the stack can drive: the SMPL-X humanoid or a robot from its URDF.

The environment, observation spec, rewards, terminations, contract, export and ROS nodes take
every size and table from an :class:`EmbodimentSpec` (joint order, DOF count, gains, effort and
position limits, rates, the bodies observations / contacts / hands / feet use), never from a
literal. Two sources build one:

* :func:`smplx_embodiment` from ``smplx_body`` (52 bodies, 51 ball joints as 3 hinges each: 153
  DOFs). Its tables are exactly the ones the project used before, so nothing SMPL-X changes.
* :func:`robot_embodiment` from a :class:`~intermimic_policy.embodiment.robot.RobotDescription`
  (a URDF + ``config/robots/<name>.yaml``): one 1-DOF joint per DOF, bodies = the root link, the
  child link of every actuated joint and the links the YAML's hands/feet sites sit on.

State convention shared by both: a joint's local rotation is a rotation vector [3] (SMPL-X: the
data's; a robot hinge of angle q about its axis a: q a), its angular velocity a child-frame vector
[3] (a hinge: q' a). So ``SimState``/``InitialState`` keep one shape rule, [N, J, 3], for any body.

Numpy only (the deployment runtime imports it without torch); torch conversions between joint
rotation vectors and the simulator's hinge angles live in ``embodiment.joint_convert``.
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.errors import IntermimicError

if TYPE_CHECKING:
    from intermimic_policy.embodiment.robot import RobotDescription

SMPLX = "smplx_humanoid"  # the contract's embodiment name of the SMPL-X humanoid
ROBOT_PREFIX = "robot:"  # robots are named "robot:<yaml name>" in contracts


class EmbodimentError(IntermimicError, ValueError):
    """An embodiment that cannot be described or does not fit (unknown name, bad table)."""


@dataclass(frozen=True, eq=False)
class EmbodimentSpec:
    """Joint table, gains, limits, rates and the body subsets of one body. Body 0 is the root."""

    name: str  # SMPLX or "robot:<name>"
    body_names: tuple[str, ...]
    joint_names: tuple[str, ...]  # the state's joints (rotation vector each), non-root bodies' joints
    dof_names: tuple[str, ...]  # actuated DOFs, action / PD target order
    joint_axes: np.ndarray | None  # [J, 3] hinge axis per joint (child frame); None: 3 Euler hinges per joint
    kp: np.ndarray  # [D]
    kd: np.ndarray  # [D]
    effort_limit: np.ndarray  # [D] N*m (inf: unlimited)
    lower: np.ndarray  # [D] rad
    upper: np.ndarray  # [D] rad
    default_pos: np.ndarray  # [D] rad
    control_hz: float
    physics_hz: float
    key_bodies: tuple[int, ...]  # tracked in position (root excluded)
    contact_bodies: tuple[int, ...]  # whose contact flags are observed
    no_hand_bodies: tuple[int, ...]  # root + key bodies: rotations / angular velocities compared
    left_hand_bodies: tuple[int, ...]
    right_hand_bodies: tuple[int, ...]
    foot_bodies: tuple[int, ...]
    model_hash: str  # content hash of the body (robot: URDF + YAML; SMPL-X: the default skeleton)

    def __post_init__(self) -> None:
        d, b = len(self.dof_names), len(self.body_names)
        for key in ("kp", "kd", "effort_limit", "lower", "upper", "default_pos"):
            if np.asarray(getattr(self, key)).shape != (d,):
                raise EmbodimentError(f"embodiment {self.name}: {key} has shape {np.shape(getattr(self, key))}, "
                                      f"expected ({d},)")
        if self.joint_axes is not None and np.asarray(self.joint_axes).shape != (len(self.joint_names), 3):
            raise EmbodimentError(f"embodiment {self.name}: joint_axes must be [{len(self.joint_names)}, 3]")
        if len(self.left_hand_bodies) != len(self.right_hand_bodies):
            raise EmbodimentError(f"embodiment {self.name}: left and right hands need as many bodies "
                                  f"({len(self.left_hand_bodies)} != {len(self.right_hand_bodies)})")
        for key in ("key_bodies", "contact_bodies", "no_hand_bodies", "left_hand_bodies", "right_hand_bodies",
                    "foot_bodies"):
            ids = getattr(self, key)
            if any(not 0 <= i < b for i in ids):
                raise EmbodimentError(f"embodiment {self.name}: {key} must be body ids in [0, {b})")

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def num_bodies(self) -> int:
        return len(self.body_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_dofs(self) -> int:
        return len(self.dof_names)

    @property
    def dofs_per_joint(self) -> int:
        return 3 if self.joint_axes is None else 1

    @property
    def is_smplx(self) -> bool:
        return self.name == SMPLX

    @property
    def hand_bodies(self) -> tuple[int, ...]:
        return self.left_hand_bodies + self.right_hand_bodies

    @property
    def non_hand_contact_bodies(self) -> tuple[int, ...]:
        hands = set(self.hand_bodies)
        return tuple(i for i in self.contact_bodies if i not in hands)

    @property
    def initial_state_dim(self) -> int:
        """Flat reset-state size (root 13, joint rotations and velocities 2 x 3J, object 13)."""
        return 13 + 3 * self.num_joints * 2 + 13

    def body_index(self, name: str) -> int:
        try:
            return self.body_names.index(name)
        except ValueError:
            raise EmbodimentError(f"embodiment {self.name}: no body {name!r}") from None

    def action_offset_scale(self, upstream_action_map: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """target = offset + scale * a, a in [-1, 1]: the mid-range / half-range of each DOF
        (SMPL-X: ``smplx_body.action_offset_scale``, with upstream's quirks behind the flag)."""
        if self.is_smplx:
            return smplx_body.action_offset_scale(upstream_action_map)
        if upstream_action_map:
            raise EmbodimentError(f"embodiment {self.name}: upstream_action_map is an SMPL-X humanoid setting")
        return ((0.5 * (self.upper + self.lower)).astype(np.float32),
                (0.5 * (self.upper - self.lower)).astype(np.float32))


# -- SMPL-X ----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def smplx_embodiment() -> EmbodimentSpec:
    """The SMPL-X humanoid, from ``smplx_body`` (the tables every SMPL-X policy was trained with)."""
    from intermimic_policy.embodiment.skeleton import default_skeleton

    kp, kd, lo, hi = smplx_body.dof_arrays()
    b = smplx_body.body_index
    return EmbodimentSpec(
        name=SMPLX, body_names=smplx_body.BODY_NAMES, joint_names=smplx_body.JOINT_NAMES,
        dof_names=smplx_body.DOF_NAMES, joint_axes=None, kp=kp, kd=kd,
        effort_limit=np.full(smplx_body.NUM_DOFS, np.inf), lower=lo, upper=hi,
        default_pos=np.zeros(smplx_body.NUM_DOFS), control_hz=smplx_body.CONTROL_HZ,
        physics_hz=smplx_body.PHYSICS_HZ, key_bodies=smplx_body.KEY_BODIES,
        contact_bodies=smplx_body.CONTACT_BODIES, no_hand_bodies=smplx_body.NO_HAND_BODIES,
        left_hand_bodies=smplx_body.LEFT_HAND_BODIES, right_hand_bodies=smplx_body.RIGHT_HAND_BODIES,
        foot_bodies=(b("L_Ankle"), b("L_Toe"), b("R_Ankle"), b("R_Toe")),
        model_hash=default_skeleton().content_hash(),
    )


# -- robots ----------------------------------------------------------------------------------------
def _urdf_joints(urdf: os.PathLike[str] | str) -> dict[str, tuple[str, np.ndarray]]:
    """joint name -> (child link, unit axis in the child frame) from the URDF."""
    out = {}
    for j in ET.parse(urdf).getroot().findall("joint"):
        child = j.find("child")
        axis = j.find("axis")
        a = np.array([float(v) for v in (axis.get("xyz", "1 0 0") if axis is not None else "1 0 0").split()])
        n = np.linalg.norm(a)
        out[j.get("name", "")] = (child.get("link", "") if child is not None else "", a / n if n > 0 else a)
    return out


def robot_embodiment(desc: RobotDescription) -> EmbodimentSpec:
    """A robot's embodiment from its description (URDF + mapping YAML).

    Bodies, in Pinocchio's depth-first order: the root link, the child link of every actuated
    joint, and the links the YAML's hand / foot sites sit on. Key bodies: the links of the YAML's
    pairs (root excluded). A hand's bodies: the subtree of its ``chain`` pair's link (the wrist),
    so the left and right hands mirror each other. Contact bodies: key bodies, then the hand
    bodies, then the feet.
    """
    import pinocchio as pin

    cfg, m = desc.config, desc.model
    joints = _urdf_joints(cfg.urdf)
    missing = [j for j in desc.joint_names if j not in joints]
    if missing:
        raise EmbodimentError(f"{cfg.urdf}: joints {missing} not found")
    for j in desc.joint_names:
        jid = m.getJointId(j)
        if not m.joints[jid].shortname().startswith("JointModelR"):
            raise EmbodimentError(f"robot {desc.name}: joint {j!r} is not revolute (only hinges are simulated)")
    site_link = {s.name: s.link for s in cfg.sites}
    wanted = {cfg.root_link, *(joints[j][0] for j in desc.joint_names),
              *(site_link.get(h.site, h.site) for h in cfg.hands), *(f.link for f in cfg.feet)}
    body_frames = [f for f in m.frames if f.type == pin.FrameType.BODY and f.name in wanted]
    names = tuple(dict.fromkeys(f.name for f in body_frames))
    if names[0] != cfg.root_link:
        raise EmbodimentError(f"robot {desc.name}: root link {cfg.root_link!r} is not the first body")

    def idx(link: str) -> int:
        if link not in names:
            raise EmbodimentError(f"robot {desc.name}: {link!r} is not one of its bodies")
        return names.index(link)

    def link_of(frame: str) -> str:
        return site_link.get(frame, frame)

    key = tuple(dict.fromkeys(idx(link_of(p.frame)) for p in cfg.pairs if link_of(p.frame) != cfg.root_link))
    pair_frame = {p.body: link_of(p.frame) for p in cfg.pairs}

    def subtree(link: str) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(names) if _below(m, link, n))

    hands = []
    for h in cfg.hands:
        top = pair_frame.get(h.chain or "", link_of(h.site))
        hands.append(subtree(top))
    if len(hands) != 2:
        raise EmbodimentError(f"robot {desc.name}: the YAML must name two hands (left, right), got {len(hands)}")
    feet = tuple(idx(f.link) for f in cfg.feet)
    hand_all = hands[0] + hands[1]
    contact = tuple(dict.fromkeys(key + hand_all + feet))
    axes = np.stack([joints[j][1] for j in desc.joint_names])
    return EmbodimentSpec(
        name=ROBOT_PREFIX + desc.name, body_names=names, joint_names=desc.joint_names,
        dof_names=desc.joint_names, joint_axes=axes, kp=desc.gains_kp.copy(), kd=desc.gains_kd.copy(),
        effort_limit=desc.effort_limit.copy(), lower=desc.lower.copy(), upper=desc.upper.copy(),
        default_pos=desc.default_q.copy(), control_hz=smplx_body.CONTROL_HZ, physics_hz=smplx_body.PHYSICS_HZ,
        key_bodies=key, contact_bodies=contact, no_hand_bodies=(0, *key), left_hand_bodies=hands[0],
        right_hand_bodies=hands[1], foot_bodies=feet,
        model_hash=hashlib.sha256(f"{desc.content_hash}:{','.join(names)}".encode()).hexdigest(),
    )


def _below(model: object, top_link: str, link: str) -> bool:
    """Whether ``link`` is ``top_link`` or hangs from it (walks Pinocchio's frame parents)."""
    frames = model.frames  # type: ignore[attr-defined]
    fid = model.getFrameId(link)  # type: ignore[attr-defined]
    seen = set()
    while fid not in seen:
        seen.add(fid)
        f = frames[fid]
        if f.name == top_link:
            return True
        if f.parentFrame == fid:
            return False
        fid = f.parentFrame
    return False


def embodiment_for(name: str | None) -> EmbodimentSpec:
    """The embodiment of a robot name (``g1``, ``robot:g1``, a YAML path), or SMPL-X for None /
    ``smplx_humanoid``."""
    if name is None or name in ("", SMPLX, "smplx"):
        return smplx_embodiment()
    from intermimic_policy.embodiment.robot import RobotError

    robot = name[len(ROBOT_PREFIX):] if name.startswith(ROBOT_PREFIX) else name
    try:
        return _robot_cached(robot)
    except RobotError as exc:
        raise EmbodimentError(str(exc)) from exc


@lru_cache(maxsize=8)
def _robot_cached(robot: str) -> EmbodimentSpec:
    from intermimic_policy.embodiment.robot import load_robot

    return robot_embodiment(load_robot(robot))


def robot_name(embodiment: str) -> str | None:
    """The robot YAML name of a contract's embodiment string (None for the SMPL-X humanoid)."""
    if embodiment == SMPLX:
        return None
    if not embodiment.startswith(ROBOT_PREFIX):
        raise EmbodimentError(f"unknown embodiment {embodiment!r} (known: {SMPLX!r})")
    if not re.fullmatch(r"[\w.\-/]+", embodiment[len(ROBOT_PREFIX):]):
        raise EmbodimentError(f"unknown embodiment {embodiment!r}: 'robot:' must be followed by a robot name")
    return embodiment[len(ROBOT_PREFIX):]
