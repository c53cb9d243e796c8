"""The observation terms of ``spec.HOI_BLOCK_TERMS`` (spec 4.1): their one implementation.

Every term of every block comes from a handful of batched tensor ops (computed term by term, an
observation is hundreds of tiny torch ops per block, each costing microseconds of dispatch on CPU):

* every vector a term expresses in the simulated heading frame h ("h" is the inverse heading of
  the simulated root: the frame that turns with the character, so every term is invariant to a
  rotation of the whole scene about the vertical axis) is rotated in ONE matmul with h's 3x3
  matrix (sim-only vectors once per call, the reference/difference vectors of all blocks stacked
  in a second one);
* tan-norm features are columns of rotation matrices: tan(h q) = h (R_q e_x, R_q e_z), and the
  heading-conjugated error h (q_ref q^-1) h^-1 applied to e is h R_ref R_q^T h^T e;
* f(h v) = h f(v) for the interaction-graph feature (f keeps directions, scales by |v|).

Deviations from upstream (``compute_humanoid_observations_max``, ``compute_obj_observations``):

* ``ref_local_key_pos`` reads the REFERENCE key bodies relative to the reference root, in the
  reference heading frame (upstream reads simulated positions by mistake);
* ``body_rot_error`` / ``object_rot_error`` use the world-frame difference q_ref q^-1 expressed in
  the heading frame, h (q_ref q^-1) h^-1 (upstream mixes frames);
* reference angular velocities are true ones (see ``sim.reference``);
* everything comes from the state given, so nothing can be stale after a reset.

A slow term-by-term formulation lives in ``tests/obs_oracle.py`` as the tests' independent check.
Terms beyond the standard set can be registered in ``TERM_FUNCTIONS`` (one function of an
``ObsContext`` each); the builder calls them per block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import CONTACT_BODIES, KEY_BODIES, NO_HAND_BODIES
from intermimic_policy.geometry import fast
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.state.frames import RefFrame, SimState
from intermimic_policy.state.interaction_graph import ig_feature, nearest_point_vectors, object_points_world

# the terms :func:`compute_terms` computes (all of ``spec.HOI_BLOCK_TERMS``)
STANDARD_TERMS: frozenset[str] = frozenset({
    "root_height", "local_body_pos", "local_body_rot", "local_body_vel", "local_body_ang_vel",
    "body_contact", "object_vel", "object_ang_vel", "interaction_graph",
    "key_pos_error", "body_rot_error", "contact_error", "ref_local_key_pos", "ref_local_body_rot",
    "key_vel_error", "body_ang_vel_error", "object_pos_error", "object_rot_error", "object_vel_error",
    "object_ang_vel_error", "interaction_graph_error",
})
# Terms that read only the simulated state: equal in every block ([N, dim] from compute_terms).
SIM_ONLY_TERMS: frozenset[str] = frozenset({
    "root_height", "local_body_pos", "local_body_rot", "local_body_vel", "local_body_ang_vel",
    "body_contact", "object_vel", "object_ang_vel", "interaction_graph",
})


def simulated_ig(sim: SimState, object_points: Tensor) -> Tensor:
    """Simulated interaction-graph vectors (body - nearest object point), world frame, [N,52,3]."""
    world = object_points_world(object_points, sim.object_pos, sim.object_rot)
    return nearest_point_vectors(sim.body_pos, world, sim.object_pos)


def _ids(x: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(x, dtype=torch.long, device=device)


def block_terms(sim: SimState, ref: RefFrame, object_points: Tensor, *,
                key_bodies: tuple[int, ...] = KEY_BODIES, contact_bodies: tuple[int, ...] = CONTACT_BODIES,
                no_hand_bodies: tuple[int, ...] = NO_HAND_BODIES) -> dict[str, Tensor]:
    """Every standard term of ONE block (``ref`` the reference at t + offset), each [N, dim]."""
    dev = sim.body_pos.device
    values = compute_terms(sim, ref, simulated_ig(sim, object_points), 1, _ids(key_bodies, dev),
                           _ids(contact_bodies, dev), _ids(no_hand_bodies, dev))
    return {name: v if v.dim() == 2 else v[0] for name, v in values.items()}


# -- terms beyond the standard set -----------------------------------------------------------------
@dataclass(frozen=True)
class ObsContext:
    """Everything one block of a registered extra term reads. Build it with :func:`make_context`."""

    sim: SimState
    ref: RefFrame  # the reference at t + offset
    heading_inv: Tensor  # [N, 4] inverse heading of the simulated root
    ref_heading_inv: Tensor  # [N, 4] inverse heading of the reference root
    ig_sim: Tensor  # [N, 52, 3] simulated body minus nearest object point, world frame
    key_bodies: Tensor  # long ids
    contact_bodies: Tensor
    no_hand_bodies: Tensor


def make_context(sim: SimState, ref: RefFrame, object_points: Tensor | None = None, *,
                 ig_sim: Tensor | None = None,
                 key_bodies: tuple[int, ...] = KEY_BODIES,
                 contact_bodies: tuple[int, ...] = CONTACT_BODIES,
                 no_hand_bodies: tuple[int, ...] = NO_HAND_BODIES) -> ObsContext:
    """Context for one block; pass ``ig_sim`` to share it between blocks of the same state."""
    if ig_sim is None:
        if object_points is None:
            raise ValueError("make_context needs object_points or ig_sim")
        ig_sim = simulated_ig(sim, object_points)
    dev = sim.body_pos.device
    return ObsContext(sim=sim, ref=ref, heading_inv=quat.heading_inverse(sim.root_rot),
                      ref_heading_inv=quat.heading_inverse(ref.root_rot), ig_sim=ig_sim,
                      key_bodies=_ids(key_bodies, dev), contact_bodies=_ids(contact_bodies, dev),
                      no_hand_bodies=_ids(no_hand_bodies, dev))


TermFn = Callable[[ObsContext], Tensor]
# extra terms by name (empty: the standard terms are computed by compute_terms)
TERM_FUNCTIONS: dict[str, TermFn] = {}


# -- the standard terms, all blocks at once --------------------------------------------------------
def _tan_rows(m: Tensor) -> Tensor:
    """The tan-norm vectors (R e_x, R e_z) of rotation matrices [..., 3, 3] as rows [..., 2, 3]."""
    return m.transpose(-1, -2)[..., ::2, :]


def compute_terms(sim: SimState, refs: RefFrame, ig_sim: Tensor, num_blocks: int, key_bodies: Tensor,
                contact_bodies: Tensor, no_hand_bodies: Tensor) -> dict[str, Tensor]:
    """All terms for ``sim`` against ``refs``: K = ``num_blocks`` reference frames stacked
    offset-major in one ``RefFrame`` of K*N rows. ``ig_sim`` [N,52,3] the simulated nearest-point
    vectors (world frame)."""
    n = sim.num_worlds
    k, kb, nh = num_blocks, key_bodies.numel(), no_hand_bodies.numel()

    def blocks(x: Tensor) -> Tensor:
        return x.reshape(k, n, *x.shape[1:])

    pos, vel, ang = sim.body_pos, sim.body_lin_vel, sim.body_ang_vel
    r_pos, r_rot, r_vel, r_ang = (blocks(t) for t in (refs.body_pos, refs.body_rot, refs.body_lin_vel,
                                                       refs.body_ang_vel))
    r_opos, r_orot, r_ovel, r_oang = (blocks(t) for t in (refs.object_pos, refs.object_rot,
                                                           refs.object_lin_vel, refs.object_ang_vel))

    # -- rotations: every body and the object, simulated and reference (error bodies only) ---------
    nb = pos.shape[1]
    rot_sim = fast.to_matrix(torch.cat([sim.body_rot, sim.object_rot.unsqueeze(1)], dim=1))  # [N,B+1,3,3]
    h = fast.heading_matrix_of_rotation(rot_sim[:, 0])  # [N,3,3]
    h_t = h.transpose(1, 2)
    err_ids = torch.cat([no_hand_bodies, no_hand_bodies.new_full((1,), nb)])  # + the object
    # reference: error bodies, the object, and the root (for the reference heading)
    rot_ref = fast.to_matrix(torch.cat([r_rot.index_select(2, no_hand_bodies), r_orot.unsqueeze(2), r_rot[:, :, :1]],
                                       dim=2))

    # -- sim-only vectors, rotated once ------------------------------------------------------------
    sim_vecs = torch.cat([
        pos[:, 1:] - pos[:, :1],  # local_body_pos
        _tan_rows(rot_sim[:, :nb]).reshape(n, 2 * nb, 3),  # local_body_rot
        vel, ang,  # local_body_vel, local_body_ang_vel
        sim.object_lin_vel.unsqueeze(1), sim.object_ang_vel.unsqueeze(1),
        ig_sim,
    ], dim=1)
    sim_local = torch.matmul(sim_vecs, h_t)
    sizes = [nb - 1, 2 * nb, nb, nb, 1, 1, nb]
    local_pos, local_rot, local_vel, local_ang, obj_vel, obj_ang, ig_local = torch.split(sim_local, sizes, dim=1)
    # contiguous before the norm/exp: a strided view takes another kernel path for n > 1 than
    # for n = 1, and a world's features must not depend on how many worlds are computed at once
    ig_feat = ig_feature(ig_local.contiguous())  # [N,52,3]

    # -- reference / difference vectors of all blocks, rotated once ---------------------------------
    # (R_ref R^T) h^T e for e = e_x, e_z: rows u R (sim side), then times R_ref^T per block
    u = h[:, 0::2, :].unsqueeze(1)  # rows (h^T e_x, h^T e_z) [N,1,2,3]
    rel = torch.matmul(u, rot_sim.index_select(1, err_ids))  # [N,J,2,3]
    err_rows = torch.matmul(rel.unsqueeze(0), rot_ref[:, :, :-1].transpose(-1, -2))  # [K,N,J,2,3]
    nj = nh + 1
    blk_vecs = torch.cat([
        r_pos.index_select(2, key_bodies) - pos.index_select(1, key_bodies),  # key_pos_error
        err_rows.reshape(k, n, 2 * nj, 3),  # body_rot_error + object_rot_error
        _tan_rows(rot_ref[:, :, :nh]).reshape(k, n, 2 * nh, 3),  # ref_local_body_rot
        r_vel.index_select(2, key_bodies) - vel.index_select(1, key_bodies),  # key_vel_error
        r_ang.index_select(2, no_hand_bodies) - ang.index_select(1, no_hand_bodies),  # body_ang_vel_error
        torch.stack([r_opos - sim.object_pos, r_ovel - sim.object_lin_vel, r_oang - sim.object_ang_vel], dim=2),
    ], dim=2)
    blk_local = torch.matmul(blk_vecs, h_t)
    sizes = [kb, 2 * nh, 2, 2 * nh, kb, nh, 3]
    key_err, body_rot_err, obj_rot_err, ref_rot, key_vel_err, ang_err, obj_err = torch.split(blk_local, sizes, dim=2)

    # -- reference-only vectors, in the reference heading frame --------------------------------------
    h_ref_t = fast.heading_matrix_of_rotation(rot_ref[:, :, -1]).transpose(-1, -2)  # [K,N,3,3]
    ref_vecs = torch.cat([r_pos.index_select(2, key_bodies) - r_pos[:, :, :1],
                          blocks(refs.ig).index_select(2, key_bodies)], dim=2)
    ref_local_key, ref_ig = torch.matmul(ref_vecs, h_ref_t).split([kb, kb], dim=2)

    # -- contacts ------------------------------------------------------------------------------------
    contact = sim.body_contact.index_select(1, contact_bodies).to(pos.dtype)
    label = blocks(refs.body_contact).index_select(2, contact_bodies).to(pos.dtype)

    def flat(x: Tensor) -> Tensor:
        return x.flatten(-2)

    return {
        "root_height": pos[:, 0, 2:3],
        "local_body_pos": flat(local_pos),
        "local_body_rot": local_rot.reshape(n, -1),
        "local_body_vel": flat(local_vel),
        "local_body_ang_vel": flat(local_ang),
        "body_contact": contact,
        "object_vel": obj_vel.reshape(n, 3),
        "object_ang_vel": obj_ang.reshape(n, 3),
        "interaction_graph": flat(ig_feat),
        "key_pos_error": flat(key_err),
        "body_rot_error": body_rot_err.reshape(k, n, -1),
        "contact_error": label * ((label + 1.0) * 0.5 - contact),
        "ref_local_key_pos": flat(ref_local_key),
        "ref_local_body_rot": ref_rot.reshape(k, n, -1),
        "key_vel_error": flat(key_vel_err),
        "body_ang_vel_error": flat(ang_err),
        "object_pos_error": obj_err[:, :, 0],
        "object_rot_error": obj_rot_err.reshape(k, n, 6),
        "object_vel_error": obj_err[:, :, 1],
        "object_ang_vel_error": obj_err[:, :, 2],
        "interaction_graph_error": flat(ig_feature(ref_ig.contiguous()) - ig_feat.index_select(1, key_bodies)),
    }
