"""A robot described by a URDF plus a mapping YAML: kinematics, limits, gains, sites, a MuJoCo model.

One :class:`RobotDescription` is the single source of truth for a robot: joint order (Pinocchio's
depth-first order of the URDF's actuated joints), position / velocity / effort limits (the URDF),
PD gains and default pose (the YAML), named sites (points on links), the SMPL-X body pairs that
retargeting tracks, and which sites touch the object (hands) or the floor (feet).

* Kinematics: Pinocchio with a free-flyer root, so the IK works in the robot's own tangent space.
* Simulation: :func:`intermimic_policy.sim.robot_scene.build_robot_scene` loads the *same* URDF into MuJoCo (``MjSpec``), adds a free
  joint on the root link, position actuators with the YAML gains and the URDF effort limits, and
  the floor / camera / object exactly as the humanoid scene does (``intermimic_policy.sim.scene``).
* Collision points: a fixed, seeded sample of points on every link's collision geometry, used to
  measure and avoid penetration of the floor and the object without a simulator.

Another robot needs only another YAML (see ``config/robots/g1.yaml``).
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pinocchio as pin
import trimesh

from intermimic_policy import config_io
from intermimic_policy.embodiment import smplx_body
from intermimic_policy.errors import IntermimicError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "robots"


class RobotError(IntermimicError, ValueError):
    """A robot description that cannot be used (bad YAML, missing URDF, unknown frame)."""


# -- the YAML ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    name: str
    link: str
    pos: tuple[float, float, float]


@dataclass(frozen=True)
class BodyPair:
    """Source SMPL-X body -> robot frame (link or site), with position and orientation weights."""

    body: str
    frame: str
    pos_weight: float = 1.0
    rot_weight: float = 0.0
    rot_offset: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    chain: str | None = None  # source body of an earlier pair: target = its target + robot length x source direction


@dataclass(frozen=True)
class HandContact:
    name: str
    site: str
    source_bodies: tuple[int, ...]  # SMPL-X body ids whose +1 labels mean "this hand touches"
    point: tuple[int, ...]  # SMPL-X body ids averaged into the source hand point
    chain: str | None = None  # pair body (the wrist) the free hand target hangs from
    normal: tuple[float, float, float] | None = None  # palm normal in the site's link frame


@dataclass(frozen=True)
class FootContact:
    name: str
    site: str  # sole centre
    link: str
    source_bodies: tuple[int, ...]


@dataclass(frozen=True)
class GainRule:
    match: str
    kp: float
    kd: float


@dataclass(frozen=True)
class RobotConfig:
    name: str
    urdf: Path
    root_link: str
    scale_rule: str  # "leg_length" | "fixed"
    scale_value: float | None
    robot_legs: tuple[tuple[str, ...], ...]
    gains: tuple[GainRule, ...]
    default_pose: dict[str, float]
    posture_weight: float
    posture_extra: dict[str, float]
    sites: tuple[Site, ...]
    pairs: tuple[BodyPair, ...]
    hands: tuple[HandContact, ...]
    feet: tuple[FootContact, ...]
    armature: float = 0.01
    dense_links: tuple[str, ...] = ()  # regexes: links whose every collision point the IK checks
    source: str = ""
    content_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise RobotError(f"{self.source}: no site {name!r}")


def _source_ids(spec: Any, where: str) -> tuple[int, ...]:
    """SMPL-X body ids from a list of names or one regex."""
    names = smplx_body.BODY_NAMES
    if isinstance(spec, str):
        ids = tuple(i for i, n in enumerate(names) if re.search(spec, n))
        if not ids:
            raise RobotError(f"{where}: regex {spec!r} matches no SMPL-X body")
        return ids
    out = []
    for n in spec:
        if n not in names:
            raise RobotError(f"{where}: {n!r} is not an SMPL-X body (one of {', '.join(names[:5])}, ...)")
        out.append(names.index(n))
    return tuple(out)


def _vec3(v: Any, where: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise RobotError(f"{where}: expected 3 finite numbers, got {v!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


def _unit3(v: Any, where: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.linalg.norm(a) > 0:
        raise RobotError(f"{where}: expected a non-zero 3-vector, got {v!r}")
    a = a / np.linalg.norm(a)
    return (float(a[0]), float(a[1]), float(a[2]))


def resolve_robot_yaml(robot: str | os.PathLike[str]) -> Path:
    """A robot name (``g1`` -> config/robots/g1.yaml) or a YAML path."""
    p = Path(robot)
    if p.suffix.lower() in (".yaml", ".yml"):
        if not p.is_file():
            raise RobotError(f"robot file {p} does not exist")
        return p
    cand = CONFIG_DIR / f"{robot}.yaml"
    if not cand.is_file():
        known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise RobotError(f"unknown robot {str(robot)!r}: no {cand}; known: {', '.join(known) or 'none'}")
    return cand


def _resolve_urdf(text: str, yaml_dir: Path) -> Path:
    p = Path(text).expanduser()
    candidates = [p] if p.is_absolute() else [yaml_dir / p]
    data = os.environ.get("INTERMIMIC_DATA")
    if data and not p.is_absolute():
        candidates.append(Path(data).expanduser() / p)
    for c in candidates:
        if c.is_file():
            return c
    hint = "" if data else " (set INTERMIMIC_DATA)"
    raise RobotError(f"robot URDF {text!r} not found in {[str(c) for c in candidates]}{hint}")


# The YAML as written (read strictly by config_io: unknown keys and wrong types are refused, the
# error naming the file and the dotted key); load_robot_config interprets it into a RobotConfig.


@dataclass(frozen=True)
class _ScaleYaml:
    rule: str = "leg_length"
    value: float | None = None
    robot_legs: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class _GainYaml:
    match: str
    kp: float
    kd: float


@dataclass(frozen=True)
class _SiteYaml:
    link: str
    pos: tuple[float, ...] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class _PairYaml:
    body: str
    frame: str
    pos: float = 1.0
    rot: float = 0.0
    rot_offset: tuple[tuple[float, ...], ...] | None = None
    chain: str | None = None


@dataclass(frozen=True)
class _HandYaml:
    name: str
    site: str
    source_bodies: str | tuple[str, ...]
    point: str | tuple[str, ...]
    chain: str | None = None
    normal: tuple[float, ...] | None = None


@dataclass(frozen=True)
class _FootYaml:
    name: str
    site: str
    link: str
    source_bodies: str | tuple[str, ...]


@dataclass(frozen=True)
class _RobotYaml:
    name: str
    urdf: str
    root_link: str
    pairs: tuple[_PairYaml, ...]
    scale: _ScaleYaml = field(default_factory=_ScaleYaml)
    gains: tuple[_GainYaml, ...] = ()
    default_pose: dict[str, Any] = field(default_factory=dict)
    posture_weight: float = 0.02
    posture_extra: dict[str, Any] = field(default_factory=dict)
    dense_links: tuple[str, ...] = ()
    sites: dict[str, Any] = field(default_factory=dict)
    hands: tuple[_HandYaml, ...] = ()
    feet: tuple[_FootYaml, ...] = ()
    armature: float = 0.01


def load_robot_config(robot: str | os.PathLike[str]) -> RobotConfig:
    path = resolve_robot_yaml(robot)
    w = str(path)
    try:
        doc = config_io.read_yaml(path)
        for key in ("name", "urdf", "root_link", "pairs"):
            if key not in doc:
                raise config_io.ConfigError(f"{w}: {key}: missing key")
        raw = config_io.from_dict(_RobotYaml, doc, w)
        sites = tuple(Site(str(n), (s := config_io.from_dict(_SiteYaml, v, w, f"sites.{n}")).link,
                           _vec3(s.pos, f"{w}: sites.{n}.pos")) for n, v in raw.sites.items())
        default_pose = {str(k): config_io.convert(float, v, w, f"default_pose.{k}") for k, v in raw.default_pose.items()}
        posture_extra = {str(k): config_io.convert(float, v, w, f"posture_extra.{k}") for k, v in raw.posture_extra.items()}
    except config_io.ConfigError as exc:
        raise RobotError(str(exc)) from None
    scale = raw.scale
    if scale.rule not in ("leg_length", "fixed"):
        raise RobotError(f"{w}: scale.rule must be leg_length or fixed, got {scale.rule!r}")
    if scale.rule == "fixed" and not (scale.value is not None and scale.value > 0):
        raise RobotError(f"{w}: scale.rule fixed needs a positive scale.value")
    if scale.rule == "leg_length" and not scale.robot_legs:
        raise RobotError(f"{w}: scale.rule leg_length needs scale.robot_legs (hip, knee, ankle frames per leg)")
    pairs: list[BodyPair] = []
    for i, p in enumerate(raw.pairs):
        rot = p.rot_offset if p.rot_offset is not None else BodyPair.rot_offset
        if np.asarray(rot).shape != (3, 3) or not np.allclose(np.asarray(rot) @ np.asarray(rot).T, np.eye(3), atol=1e-6):
            raise RobotError(f"{w}: pairs[{i}].rot_offset is not a 3x3 rotation matrix")
        _source_ids([p.body], f"{w}: pairs[{i}]")
        if p.chain is not None and p.chain not in [q.body for q in pairs]:
            raise RobotError(f"{w}: pairs[{i}].chain {p.chain!r} must name the body of an earlier pair")
        pairs.append(BodyPair(p.body, p.frame, p.pos, p.rot, rot, p.chain))
    hands = tuple(
        HandContact(h.name, h.site, _source_ids(h.source_bodies, f"{w}: hands[{i}].source_bodies"),
                    _source_ids(h.point, f"{w}: hands[{i}].point"), h.chain,
                    _unit3(h.normal, f"{w}: hands[{i}].normal") if h.normal is not None else None)
        for i, h in enumerate(raw.hands)
    )
    for h in hands:
        if h.chain is not None and h.chain not in [q.body for q in pairs]:
            raise RobotError(f"{w}: hand {h.name!r} chain {h.chain!r} must name the body of a pair")
    feet = tuple(FootContact(f.name, f.site, f.link, _source_ids(f.source_bodies, f"{w}: feet[{i}].source_bodies"))
                 for i, f in enumerate(raw.feet))
    return RobotConfig(
        name=raw.name, urdf=_resolve_urdf(raw.urdf, path.parent), root_link=raw.root_link,
        scale_rule=scale.rule, scale_value=scale.value, robot_legs=scale.robot_legs,
        gains=tuple(GainRule(g.match, g.kp, g.kd) for g in raw.gains),
        default_pose=default_pose, posture_weight=raw.posture_weight, posture_extra=posture_extra,
        sites=sites, pairs=tuple(pairs), hands=hands, feet=feet, armature=raw.armature,
        dense_links=raw.dense_links, source=w,
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    )


# -- the description ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CollisionPoints:
    """Points on the links' collision geometry: ``points[i]`` in the frame of ``frame_ids[i]``."""

    frame_ids: np.ndarray  # [N] Pinocchio frame id of the link each point sits on
    local: np.ndarray  # [N, 3]
    link_names: tuple[str, ...]  # [N]
    rank: np.ndarray  # [N] order within its link (farthest-point order: the first k are spread out)


class RobotDescription:
    """Pinocchio model + the YAML mapping. q = [root xyz, root quat xyzw, joints...] (Pinocchio)."""

    def __init__(self, config: RobotConfig, points_per_link: int = 24) -> None:
        self.config = config
        try:
            self.model = pin.buildModelFromUrdf(str(config.urdf), pin.JointModelFreeFlyer())
        except Exception as exc:  # Pinocchio raises ValueError / RuntimeError for bad URDFs
            raise RobotError(f"{config.urdf}: Pinocchio cannot read it: {exc}") from exc
        self.data = self.model.createData()
        m = self.model
        if m.joints[1].shortname() != "JointModelFreeFlyer":
            raise RobotError(f"{config.urdf}: expected a free-flyer root")
        for j in range(2, m.njoints):
            if m.joints[j].nq != 1 or m.joints[j].nv != 1:
                raise RobotError(f"{config.urdf}: joint {m.names[j]!r} is not a 1-DOF joint (only revolute/prismatic)")
        self.joint_names: tuple[str, ...] = tuple(m.names[j] for j in range(2, m.njoints))
        self.num_dofs = len(self.joint_names)
        self.lower = np.array(m.lowerPositionLimit[7:], dtype=np.float64)
        self.upper = np.array(m.upperPositionLimit[7:], dtype=np.float64)
        self.velocity_limit = np.array(m.velocityLimit[6:], dtype=np.float64)
        self.effort_limit = np.array(m.effortLimit[6:], dtype=np.float64)
        bad = ~(np.isfinite(self.lower) & np.isfinite(self.upper) & (self.upper > self.lower))
        if bad.any():
            raise RobotError(f"{config.urdf}: joints without position limits: {[self.joint_names[i] for i in np.where(bad)[0]]}")
        if not (self.velocity_limit > 0).all():
            raise RobotError(f"{config.urdf}: every joint needs a positive velocity limit")
        for s in config.sites:
            if not m.existFrame(s.link):
                raise RobotError(f"{config.source}: site {s.name!r} on unknown link {s.link!r}")
            link = m.getFrameId(s.link)
            fr = m.frames[link]
            placement = fr.placement * pin.SE3(np.eye(3), np.asarray(s.pos, dtype=np.float64))
            m.addFrame(pin.Frame(s.name, fr.parentJoint, link, placement, pin.FrameType.OP_FRAME))
        self.data = m.createData()
        for name in [p.frame for p in config.pairs] + [h.site for h in config.hands] + [f.site for f in config.feet] \
                + [f.link for f in config.feet] + [config.root_link] + [x for leg in config.robot_legs for x in leg]:
            if not m.existFrame(name):
                raise RobotError(f"{config.source}: unknown robot frame {name!r} (not a URDF link or a site)")
        self.gains_kp, self.gains_kd = self._gains()
        self.default_q = self._default_pose()
        self.posture_weights = self._posture_weights()
        self.collision_points = self._collision_points(points_per_link)

    # -- tables --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    def frame_id(self, name: str) -> int:
        if not self.model.existFrame(name):
            raise RobotError(f"robot {self.name}: unknown frame {name!r}")
        return int(self.model.getFrameId(name))

    def _gains(self) -> tuple[np.ndarray, np.ndarray]:
        kp, kd = np.zeros(self.num_dofs), np.zeros(self.num_dofs)
        for i, j in enumerate(self.joint_names):
            for rule in self.config.gains:
                if re.search(rule.match, j):
                    kp[i], kd[i] = rule.kp, rule.kd
                    break
            else:
                raise RobotError(f"{self.config.source}: no gain rule matches joint {j!r}")
        return kp, kd

    def _default_pose(self) -> np.ndarray:
        q = np.zeros(self.num_dofs)
        for i, j in enumerate(self.joint_names):
            for pattern, v in self.config.default_pose.items():
                if re.search(pattern, j):
                    q[i] = v
                    break
        return np.clip(q, self.lower, self.upper)

    def _posture_weights(self) -> np.ndarray:
        w = np.full(self.num_dofs, self.config.posture_weight)
        for i, j in enumerate(self.joint_names):
            for pattern, v in self.config.posture_extra.items():
                if re.search(pattern, j):
                    w[i] = v
                    break
        return w

    def neutral_q(self, height: float | None = None) -> np.ndarray:
        """Full configuration: default joints, identity root, root at ``height`` (default: feet on floor)."""
        q = pin.neutral(self.model)
        q[7:] = self.default_q
        if height is None:
            q[2] = 0.0
            q[2] = -self.lowest_point(q)
        else:
            q[2] = height
        return q

    # -- geometry ------------------------------------------------------------------------------
    def frame_positions(self, q: np.ndarray, names: list[str]) -> np.ndarray:
        pin.framesForwardKinematics(self.model, self.data, q)
        return np.array([self.data.oMf[self.frame_id(n)].translation for n in names])

    def points_world(self, q: np.ndarray | None = None) -> np.ndarray:
        """Collision points in the world [N, 3] (runs FK unless q is None: then uses self.data)."""
        if q is not None:
            pin.framesForwardKinematics(self.model, self.data, q)
        cp = self.collision_points
        out = np.empty_like(cp.local)
        for fid in np.unique(cp.frame_ids):
            sel = cp.frame_ids == fid
            M = self.data.oMf[int(fid)]
            out[sel] = cp.local[sel] @ M.rotation.T + M.translation
        return out

    def lowest_point(self, q: np.ndarray) -> float:
        return float(self.points_world(q)[:, 2].min())

    def leg_length(self) -> float:
        """Mean over legs of the summed segment lengths at the neutral pose."""
        q = pin.neutral(self.model)
        lengths = []
        for leg in self.config.robot_legs:
            p = self.frame_positions(q, list(leg))
            lengths.append(float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()))
        return float(np.mean(lengths))

    def _collision_points(self, per_link: int) -> CollisionPoints:
        """Seeded surface samples of each link's collision geometry (meshes and primitives)."""
        root = ET.parse(self.config.urdf).getroot()
        ids, local, names, rank = [], [], [], []
        for link in root.findall("link"):
            lname = link.get("name", "")
            geoms = link.findall("collision")
            if not geoms or not self.model.existFrame(lname):
                continue
            meshes = [m for m in (self._geometry_mesh(g) for g in geoms) if m is not None]
            if not meshes:
                continue
            mesh = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
            pts = _spread_points(mesh, per_link)  # type: ignore[arg-type]
            fid = self.model.getFrameId(lname)
            ids += [fid] * len(pts)
            local.append(pts)
            names += [lname] * len(pts)
            rank.append(np.arange(len(pts)))
        if not local:
            raise RobotError(f"{self.config.urdf}: no <collision> geometry on any link")
        return CollisionPoints(np.asarray(ids, dtype=np.int64), np.concatenate(local), tuple(names),
                               np.concatenate(rank))

    def _geometry_mesh(self, el: ET.Element) -> trimesh.Trimesh | None:
        g = el.find("geometry")
        if g is None or len(g) == 0:
            return None
        shape = g[0]
        if shape.tag == "mesh":
            path = (self.config.urdf.parent / shape.get("filename", "").replace("package://", "")).resolve()
            if not path.is_file():
                raise RobotError(f"{self.config.urdf}: collision mesh {path} does not exist")
            mesh = trimesh.load(str(path), force="mesh", process=False)  # type: ignore[assignment]
            s = [float(v) for v in shape.get("scale", "1 1 1").split()]
            mesh.apply_scale(s if len(s) == 3 else s[0])
        elif shape.tag == "box":
            mesh = trimesh.creation.box(extents=[float(v) for v in shape.get("size", "").split()])
        elif shape.tag == "cylinder":
            mesh = trimesh.creation.cylinder(radius=float(shape.get("radius", 0)), height=float(shape.get("length", 0)))
        elif shape.tag == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=2, radius=float(shape.get("radius", 0)))
        else:
            return None
        origin = el.find("origin")
        if origin is not None:
            xyz = [float(v) for v in origin.get("xyz", "0 0 0").split()]
            rpy = [float(v) for v in origin.get("rpy", "0 0 0").split()]
            T = np.eye(4)
            T[:3, :3] = pin.rpy.rpyToMatrix(*rpy)
            T[:3, 3] = xyz
            mesh.apply_transform(T)
        return mesh  # type: ignore[return-value]

    @cached_property
    def content_hash(self) -> str:
        h = hashlib.sha256(self.config.urdf.read_bytes())
        h.update(self.config.content_hash.encode())
        return h.hexdigest()[:16]


def _spread_points(mesh: trimesh.Trimesh, n: int) -> np.ndarray:
    """``n`` deterministic, well spread points on the surface (dense sample, farthest-point subset)."""
    dense, _ = trimesh.sample.sample_surface(mesh, max(20 * n, 200), seed=7)
    dense = np.concatenate([np.asarray(dense), np.asarray(mesh.vertices)[[np.argmin(mesh.vertices[:, 2])]]])
    chosen = [len(dense) - 1]  # always keep the lowest vertex (soles must not miss the floor)
    d = np.linalg.norm(dense - dense[chosen[0]], axis=1)
    for _ in range(min(n, len(dense)) - 1):
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(dense - dense[i], axis=1))
    return dense[chosen].astype(np.float64)


@dataclass(frozen=True, eq=False)
class Embodiment:
    """What an environment, a policy contract and the ROS nodes need to drive a body, in one place
    (joint table, gains, limits, rates, bodies for observations and contacts). Built from a robot
    description here; the SMPL-X humanoid's equivalent lives in ``smplx_body``."""

    name: str
    joint_names: tuple[str, ...]
    kp: np.ndarray
    kd: np.ndarray
    effort_limit: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    velocity_limit: np.ndarray
    default_pos: np.ndarray
    control_hz: float
    physics_hz: float
    root_body: str
    key_bodies: tuple[str, ...]  # tracked links (the YAML pairs), observation order
    contact_bodies: tuple[str, ...]  # links that touch the object (hands) and the floor (feet)
    content_hash: str

    @property
    def num_dofs(self) -> int:
        return len(self.joint_names)

    def action_offset_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Upstream's G1 action map (spec 11): offset = mid-range, scale = half-range."""
        return (self.lower + self.upper) / 2.0, (self.upper - self.lower) / 2.0


def embodiment(desc: RobotDescription) -> Embodiment:
    cfg = desc.config

    def link_of(frame: str) -> str:
        names = {s.name: s.link for s in cfg.sites}
        return names.get(frame, frame)

    key = tuple(dict.fromkeys(link_of(p.frame) for p in cfg.pairs))
    contact = tuple(dict.fromkeys([link_of(h.site) for h in cfg.hands] + [f.link for f in cfg.feet]))
    return Embodiment(
        name=desc.name, joint_names=desc.joint_names, kp=desc.gains_kp.copy(), kd=desc.gains_kd.copy(),
        effort_limit=desc.effort_limit.copy(), lower=desc.lower.copy(), upper=desc.upper.copy(),
        velocity_limit=desc.velocity_limit.copy(), default_pos=desc.default_q.copy(),
        control_hz=smplx_body.CONTROL_HZ, physics_hz=smplx_body.PHYSICS_HZ, root_body=cfg.root_link,
        key_bodies=key, contact_bodies=contact, content_hash=desc.content_hash,
    )


_CACHE: dict[tuple[str, str], RobotDescription] = {}


def load_robot(robot: str | os.PathLike[str]) -> RobotDescription:
    """The description for a robot name or YAML path (cached per file content)."""
    cfg = load_robot_config(robot)
    key = (cfg.source, cfg.content_hash)
    if key not in _CACHE:
        _CACHE[key] = RobotDescription(cfg)
    return _CACHE[key]


# -- MuJoCo ------------------------------------------------------------------------------------
