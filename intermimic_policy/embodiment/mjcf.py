"""MJCF generator for the SMPL-X humanoid, from a :class:`Skeleton`.

Decisions (issue "Foundation"), and why:

* Each non-root body has three hinges ``{Body}_x/_y/_z`` about local x, y, z, nested in that
  order (intrinsic x->y->z Euler), anchored at the body origin, in ``smplx_body.DOF_NAMES``
  order. MuJoCo's native ``position`` actuators (one per hinge, named like the joint) then do the
  PD inside the physics step, implicit in kv with ``implicitfast``, so batched rollouts need no
  Python callback. The rotation is the same as Isaac Gym's spherical joint; see ``joint_map``.
* kp/kv from ``smplx_body.joint_gains``; armature 0.02; no joint ``stiffness`` (in MuJoCo that is
  a spring to qpos0, not PD) and no joint damping (kv already is the D term).
* Finger joints keep their limits (and the actuator ctrlrange equals the range); the +-180 deg
  body joints are unlimited, because a limit at +-pi on an Euler angle would only add wrap
  artefacts.
* Root: freejoint ``Pelvis`` on body ``Pelvis``; body names are ``smplx_body.BODY_NAMES``. The
  Pelvis rests at the skeleton's standing height, so qpos0 is a standing pose.
* Self-collision off as upstream: humanoid geoms contype=2 conaffinity=1; floors and objects use
  contype=1 conaffinity=3 (:data:`WORLD_CONTYPE`, :data:`WORLD_CONAFFINITY`), so the humanoid
  touches them but never itself. condim 3, margin 0.001 (upstream), friction 0.9 (upstream's
  ground friction; MuJoCo takes the max of the pair).
* option: timestep 1/240 s (PD at physics rate kept the humanoid standing where 120 Hz did not),
  integrator implicitfast, gravity -9.81 z. The model compiles alone: scenes add floor/objects.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import torch

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.embodiment.fk import forward_kinematics, geom_bottom_z
from intermimic_policy.embodiment.skeleton import Skeleton, default_skeleton
from intermimic_policy.errors import IntermimicError

TIMESTEP = 1.0 / smplx_body.PHYSICS_HZ
HUMANOID_CONTYPE = 2
HUMANOID_CONAFFINITY = 1
WORLD_CONTYPE = 1
WORLD_CONAFFINITY = 3
FRICTION = (0.9, 0.005, 0.0001)
MARGIN = 0.001
ARMATURE = 0.02
_RGBA = "0.8 0.6 0.4 1"


def _f(*values: float) -> str:
    return " ".join(np.format_float_positional(float(v), precision=9, trim="-") for v in values)


def standing_height(skeleton: Skeleton) -> float:
    """Root height at which the zero pose's lowest geom touches z = 0."""
    zero = torch.zeros(smplx_body.NUM_JOINTS, 3, dtype=torch.float64)
    root_rot = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    pos, rot = forward_kinematics(skeleton.offsets, torch.zeros(3, dtype=torch.float64), root_rot, zero)
    return float(-geom_bottom_z(skeleton.geoms, pos, rot).min())


def _geom_element(parent: ET.Element, name: str, skeleton: Skeleton, body: int) -> None:
    g = skeleton.geoms[body]
    attrs = {"name": name, "type": g.kind, "density": _f(g.density), "size": _f(*g.size)}
    if g.fromto is not None:
        attrs["fromto"] = _f(*g.fromto)
    else:
        attrs["pos"] = _f(*g.pos)
    ET.SubElement(parent, "geom", attrs)


def humanoid_mjcf(skeleton: Skeleton | None = None, model_name: str | None = None) -> str:
    """MJCF XML text of the humanoid built from ``skeleton`` (default: :func:`default_skeleton`)."""
    sk = skeleton if skeleton is not None else default_skeleton()
    _, _, lower, upper = smplx_body.dof_arrays()
    root = ET.Element("mujoco", {"model": model_name or f"smplx_humanoid_{sk.name}"})
    ET.SubElement(root, "compiler", {"angle": "radian", "autolimits": "true"})
    ET.SubElement(root, "option", {"timestep": repr(TIMESTEP), "integrator": "implicitfast",
                                   "gravity": "0 0 -9.81"})
    default = ET.SubElement(root, "default")
    ET.SubElement(default, "joint", {"type": "hinge", "armature": _f(ARMATURE), "damping": "0",
                                     "stiffness": "0"})
    ET.SubElement(default, "geom", {
        "contype": str(HUMANOID_CONTYPE), "conaffinity": str(HUMANOID_CONAFFINITY), "condim": "3",
        "margin": _f(MARGIN), "friction": _f(*FRICTION), "rgba": _RGBA,
    })
    worldbody = ET.SubElement(root, "worldbody")
    elements: list[ET.Element] = []
    for b, name in enumerate(smplx_body.BODY_NAMES):
        if b == 0:
            el = ET.SubElement(worldbody, "body", {"name": name, "pos": _f(0, 0, standing_height(sk))})
            ET.SubElement(el, "freejoint", {"name": name})
        else:
            el = ET.SubElement(elements[smplx_body.PARENTS[b]], "body",
                               {"name": name, "pos": _f(*sk.offsets[b])})
            for axis_i, axis in enumerate(smplx_body.AXES):
                dof = 3 * (b - 1) + axis_i
                attrs = {"name": f"{name}_{axis}", "axis": _f(*np.eye(3)[axis_i])}
                if _limited(lower[dof], upper[dof]):
                    attrs["range"] = _f(lower[dof], upper[dof])
                ET.SubElement(el, "joint", attrs)
        _geom_element(el, name, sk, b)
        elements.append(el)
    actuator = ET.SubElement(root, "actuator")
    for dof, dof_name in enumerate(smplx_body.DOF_NAMES):
        gains = smplx_body.joint_gains(smplx_body.JOINT_NAMES[dof // 3])
        attrs = {"name": dof_name, "joint": dof_name, "kp": _f(gains.kp), "kv": _f(gains.kd)}
        if _limited(lower[dof], upper[dof]):
            attrs["ctrlrange"] = _f(lower[dof], upper[dof])
        ET.SubElement(actuator, "position", attrs)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _limited(lo: float, hi: float) -> bool:
    return not (lo <= -math.pi + 1e-9 and hi >= math.pi - 1e-9)


def humanoid_spec(skeleton: Skeleton | None = None) -> mujoco.MjSpec:
    """The humanoid as an editable ``MjSpec`` (scenes attach floor and objects to it)."""
    return mujoco.MjSpec.from_string(humanoid_mjcf(skeleton))


def humanoid_model(skeleton: Skeleton | None = None) -> mujoco.MjModel:
    """The compiled humanoid alone (no floor)."""
    try:
        return mujoco.MjModel.from_xml_string(humanoid_mjcf(skeleton))
    except ValueError as exc:  # pragma: no cover - only for hand-edited skeletons
        raise IntermimicError(f"humanoid MJCF does not compile: {exc}") from exc
