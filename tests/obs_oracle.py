"""The observation terms written one small function each: the tests' independent oracle.

The library computes every term in a few batched ops (``observation.terms.compute_terms``); these
are the same definitions written term by term from quaternions (spec 4.1), so a mistake in the
batched rewriting shows up as a difference. ``ObsContext``/``make_context`` are the library's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.observation.terms import ObsContext
from intermimic_policy.state.interaction_graph import ig_feature


# -- helpers -------------------------------------------------------------------------------------
def _expand(h: Tensor, like: Tensor) -> Tensor:
    """Per-world h [N,4] broadcast to per-body [N,B,4] when ``like`` is per body."""
    return h.unsqueeze(1).expand(-1, like.shape[1], -1) if like.dim() == 3 else h


def _rot(h: Tensor, v: Tensor) -> Tensor:
    """Rotate per-world vectors v [N,B,3] (or [N,3]) by per-world quaternions h [N,4]."""
    return quat.rotate(_expand(h, v), v)


def _mul(h: Tensor, q: Tensor) -> Tensor:
    return quat.multiply(_expand(h, q), q)


def _conj_by_heading(h: Tensor, q: Tensor) -> Tensor:
    """h q h^-1: a world-frame rotation expressed in the heading frame."""
    hx = _expand(h, q)
    return quat.multiply(quat.multiply(hx, q), quat.conjugate(hx))


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


# -- simulated-state terms -----------------------------------------------------------------------
def root_height(c: ObsContext) -> Tensor:
    return c.sim.body_pos[:, 0, 2:3]


def local_body_pos(c: ObsContext) -> Tensor:
    rel = c.sim.body_pos[:, 1:] - c.sim.body_pos[:, :1]
    return _flat(_rot(c.heading_inv, rel))


def local_body_rot(c: ObsContext) -> Tensor:
    return _flat(quat.to_tan_norm(_mul(c.heading_inv, c.sim.body_rot)))


def local_body_vel(c: ObsContext) -> Tensor:
    return _flat(_rot(c.heading_inv, c.sim.body_lin_vel))


def local_body_ang_vel(c: ObsContext) -> Tensor:
    return _flat(_rot(c.heading_inv, c.sim.body_ang_vel))


def body_contact(c: ObsContext) -> Tensor:
    """Simulated "any contact" flag (ground included, as upstream senses it) per contact body."""
    return c.sim.body_contact[:, c.contact_bodies].to(c.sim.body_pos.dtype)


def object_vel(c: ObsContext) -> Tensor:
    return _rot(c.heading_inv, c.sim.object_lin_vel)


def object_ang_vel(c: ObsContext) -> Tensor:
    return _rot(c.heading_inv, c.sim.object_ang_vel)


def interaction_graph(c: ObsContext) -> Tensor:
    return _flat(ig_feature(_rot(c.heading_inv, c.ig_sim)))


# -- reference and difference terms --------------------------------------------------------------
def key_pos_error(c: ObsContext) -> Tensor:
    k = c.key_bodies
    return _flat(_rot(c.heading_inv, c.ref.body_pos[:, k] - c.sim.body_pos[:, k]))


def body_rot_error(c: ObsContext) -> Tensor:
    b = c.no_hand_bodies
    diff = quat.multiply(c.ref.body_rot[:, b], quat.conjugate(c.sim.body_rot[:, b]))
    return _flat(quat.to_tan_norm(_conj_by_heading(c.heading_inv, diff)))


def contact_error(c: ObsContext) -> Tensor:
    """c_ref ((c_ref+1)/2 - c): 1 for a missing +1 contact or an unwanted -1 contact, else 0/-."""
    ids = c.contact_bodies
    label = c.ref.body_contact[:, ids].to(c.sim.body_pos.dtype)
    sim = c.sim.body_contact[:, ids].to(label.dtype)
    return label * ((label + 1.0) * 0.5 - sim)


def ref_local_key_pos(c: ObsContext) -> Tensor:
    k = c.key_bodies
    rel = c.ref.body_pos[:, k] - c.ref.body_pos[:, :1]
    return _flat(_rot(c.ref_heading_inv, rel))


def ref_local_body_rot(c: ObsContext) -> Tensor:
    return _flat(quat.to_tan_norm(_mul(c.heading_inv, c.ref.body_rot[:, c.no_hand_bodies])))


def key_vel_error(c: ObsContext) -> Tensor:
    k = c.key_bodies
    return _flat(_rot(c.heading_inv, c.ref.body_lin_vel[:, k] - c.sim.body_lin_vel[:, k]))


def body_ang_vel_error(c: ObsContext) -> Tensor:
    b = c.no_hand_bodies
    return _flat(_rot(c.heading_inv, c.ref.body_ang_vel[:, b] - c.sim.body_ang_vel[:, b]))


def object_pos_error(c: ObsContext) -> Tensor:
    return _rot(c.heading_inv, c.ref.object_pos - c.sim.object_pos)


def object_rot_error(c: ObsContext) -> Tensor:
    diff = quat.multiply(c.ref.object_rot, quat.conjugate(c.sim.object_rot))
    return quat.to_tan_norm(_conj_by_heading(c.heading_inv, diff))


def object_vel_error(c: ObsContext) -> Tensor:
    return _rot(c.heading_inv, c.ref.object_lin_vel - c.sim.object_lin_vel)


def object_ang_vel_error(c: ObsContext) -> Tensor:
    return _rot(c.heading_inv, c.ref.object_ang_vel - c.sim.object_ang_vel)


def interaction_graph_error(c: ObsContext) -> Tensor:
    """f(ig_ref,k) - f(ig_k): reference in its own heading frame, simulation in the simulated one."""
    k = c.key_bodies
    ref = ig_feature(_rot(c.ref_heading_inv, c.ref.ig[:, k]))
    sim = ig_feature(_rot(c.heading_inv, c.ig_sim[:, k]))
    return _flat(ref - sim)


TermFn = Callable[[ObsContext], Tensor]

ORACLE: dict[str, TermFn] = {
    "root_height": root_height,
    "local_body_pos": local_body_pos,
    "local_body_rot": local_body_rot,
    "local_body_vel": local_body_vel,
    "local_body_ang_vel": local_body_ang_vel,
    "body_contact": body_contact,
    "key_pos_error": key_pos_error,
    "body_rot_error": body_rot_error,
    "contact_error": contact_error,
    "ref_local_key_pos": ref_local_key_pos,
    "ref_local_body_rot": ref_local_body_rot,
    "key_vel_error": key_vel_error,
    "body_ang_vel_error": body_ang_vel_error,
    "object_vel": object_vel,
    "object_ang_vel": object_ang_vel,
    "object_pos_error": object_pos_error,
    "object_rot_error": object_rot_error,
    "object_vel_error": object_vel_error,
    "object_ang_vel_error": object_ang_vel_error,
    "interaction_graph": interaction_graph,
    "interaction_graph_error": interaction_graph_error,
}
