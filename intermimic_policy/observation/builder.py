"""Build the flat observation of an ``ObservationSpec`` from a simulated state and reference frames.

The one builder used by the training environment, the exporter's golden pairs and the ROS policy
node, so train and deploy cannot compute different observations. It checks the spec against the
term functions once, at construction (unknown term or wrong size -> ``ObservationSpecError``),
and then only concatenates: one block per reference offset, in the spec's offset order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import Tensor

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.observation.spec import ObservationSpec, ObservationSpecError
from intermimic_policy.observation.terms import (
    STANDARD_TERMS,
    TERM_FUNCTIONS,
    ObsContext,
    compute_terms,
    make_context,
    simulated_ig,
)
from intermimic_policy.state.frames import RefFrame, SimState


def nonfinite_envs(obs: Tensor) -> Tensor:
    """Ids of the worlds whose observation holds NaN or inf (the env resets them; training goes on)."""
    return torch.nonzero(~torch.isfinite(obs).all(dim=-1), as_tuple=False).flatten()


def _neutral_state(n: int = 1, num_bodies: int = NUM_BODIES) -> tuple[SimState, RefFrame, Tensor]:
    """A small valid scene (identity rotations, bodies spread out) to probe each term's size."""
    NUM_BODIES = num_bodies  # noqa: N806 - the body count of the spec being probed
    body_pos = torch.arange(NUM_BODIES * 3, dtype=torch.float32).reshape(1, NUM_BODIES, 3).repeat(n, 1, 1)
    body_pos = body_pos * 0.01
    body_rot = torch.zeros(n, NUM_BODIES, 4)
    body_rot[..., 3] = 1.0
    zeros3 = torch.zeros(n, NUM_BODIES, 3)
    obj_rot = torch.zeros(n, 4)
    obj_rot[:, 3] = 1.0
    sim = SimState(
        body_pos=body_pos, body_rot=body_rot, body_lin_vel=zeros3, body_ang_vel=zeros3,
        joint_rotvec=torch.zeros(n, NUM_JOINTS, 3), joint_ang_vel=torch.zeros(n, NUM_JOINTS, 3),
        body_contact=torch.zeros(n, NUM_BODIES, dtype=torch.bool),
        body_object_contact=torch.zeros(n, NUM_BODIES, dtype=torch.bool),
        body_contact_force=zeros3, object_pos=torch.ones(n, 3), object_rot=obj_rot,
        object_lin_vel=torch.zeros(n, 3), object_ang_vel=torch.zeros(n, 3),
        object_contact=torch.zeros(n, dtype=torch.bool),
    )
    ref = RefFrame(
        body_pos=body_pos, body_rot=body_rot, body_lin_vel=zeros3, body_ang_vel=zeros3,
        object_pos=torch.ones(n, 3), object_rot=obj_rot, object_lin_vel=torch.zeros(n, 3),
        object_ang_vel=torch.zeros(n, 3), body_contact=torch.zeros(n, NUM_BODIES),
        object_contact=torch.zeros(n, dtype=torch.bool), ig=zeros3,
    )
    points = torch.randn(n, 8, 3, generator=torch.Generator().manual_seed(0))
    return sim, ref, points


class ObservationBuilder:
    """Validated, stateless builder of ``spec``'s observation.

    The standard terms come from :func:`~.terms.compute_terms` (all blocks in a few batched ops);
    terms registered in ``TERM_FUNCTIONS`` beyond them are called per block.
    """

    def __init__(self, spec: ObservationSpec) -> None:
        self.spec = spec
        known = STANDARD_TERMS | set(TERM_FUNCTIONS)
        unknown = [t.name for t in spec.terms if t.name not in known]
        if unknown:
            raise ObservationSpecError(f"observation spec has terms with no function: {unknown} "
                                       f"(known: {sorted(known)})")
        nb = spec.num_bodies
        for key in ("key_bodies", "contact_bodies", "no_hand_bodies"):
            ids = getattr(spec, key)
            if not ids or any(not 0 <= int(i) < nb for i in ids):
                raise ObservationSpecError(f"observation spec {key} must be body ids in [0, {nb}), "
                                           f"got {list(ids)}")
        self._ids: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
        sim, ref, points = _neutral_state(num_bodies=nb)
        ig_sim = simulated_ig(sim, points)
        ctx = self._context(sim, ref, ig_sim)
        standard = compute_terms(sim, ref, ig_sim, 1, *self._body_ids(sim.body_pos.device))
        wrong = []
        for t in spec.terms:
            got = (standard[t.name] if t.name in STANDARD_TERMS else TERM_FUNCTIONS[t.name](ctx)).shape[-1]
            if got != t.dim:
                wrong.append(f"{t.name}: spec says {t.dim}, term gives {got}")
        if wrong:
            raise ObservationSpecError("observation spec term dims do not match: " + "; ".join(wrong))

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _context(self, sim: SimState, ref: RefFrame, ig_sim: Tensor) -> ObsContext:
        s = self.spec
        return make_context(sim, ref, ig_sim=ig_sim, key_bodies=s.key_bodies,
                            contact_bodies=s.contact_bodies, no_hand_bodies=s.no_hand_bodies)

    def _body_ids(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._ids:
            s = self.spec
            self._ids[device] = tuple(  # type: ignore[assignment]
                torch.tensor(x, dtype=torch.long, device=device)
                for x in (s.key_bodies, s.contact_bodies, s.no_hand_bodies))
        return self._ids[device]

    def build(self, sim: SimState, refs: Sequence[RefFrame] | RefFrame, object_points: Tensor, *,
              ig_sim: Tensor | None = None) -> Tensor:
        """Observation [N, spec.dim]: one block per ``spec.ref_offsets`` entry (``refs[i]`` is the
        reference at t + ``ref_offsets[i]``), each block the spec's terms in order.

        ``refs`` may also be ONE ``RefFrame`` of K*N rows, the K frames stacked offset-major (what
        ``MotionLibrary.frames_at_offsets`` returns). ``object_points`` are each world's
        object-frame surface points [N, P, 3]; ``ig_sim`` [N, 52, 3] the simulated nearest-point
        vectors when the caller has them already (``sim.interaction_graph.interaction_geometry``).
        Non-finite values are passed through; find them with :func:`nonfinite_envs`.
        """
        if isinstance(refs, RefFrame):
            return self.build_stacked(sim, refs, object_points, ig_sim=ig_sim)
        if len(refs) != self.spec.num_tokens:
            raise ObservationSpecError(f"observation needs {self.spec.num_tokens} reference frames "
                                       f"(offsets {list(self.spec.ref_offsets)}), got {len(refs)}")
        n = sim.num_worlds
        for i, r in enumerate(refs):
            if r.num_worlds != n:
                raise ValueError(f"reference frame {i} has {r.num_worlds} worlds, state has {n}")
        stacked = refs[0] if len(refs) == 1 else RefFrame(
            **{f.name: torch.cat([getattr(r, f.name) for r in refs]) for f in fields(RefFrame)})
        return self.build_stacked(sim, stacked, object_points, ig_sim=ig_sim)

    def build_stacked(self, sim: SimState, refs: RefFrame, object_points: Tensor, *,
                      ig_sim: Tensor | None = None) -> Tensor:
        """:meth:`build` with the K reference frames stacked offset-major in one ``RefFrame`` of
        K*N rows (what ``MotionLibrary.frames_at_offsets`` returns)."""
        n, k = sim.num_worlds, self.spec.num_tokens
        if refs.num_worlds != k * n:
            raise ObservationSpecError(f"observation needs {k} reference frames (offsets "
                                       f"{list(self.spec.ref_offsets)}) of {n} worlds stacked, "
                                       f"got {refs.num_worlds} rows")
        if object_points.dim() != 3 or object_points.shape[0] != n or object_points.shape[2] != 3:
            raise ValueError(f"object_points must be [{n}, P, 3], got {list(object_points.shape)}")
        if ig_sim is None:
            ig_sim = simulated_ig(sim, object_points)
        key, contact, no_hand = self._body_ids(sim.body_pos.device)
        values = compute_terms(sim, refs, ig_sim, k, key, contact, no_hand)
        others = [t.name for t in self.spec.terms if t.name not in STANDARD_TERMS]
        per_block: list[dict[str, Tensor]] = [{} for _ in range(k)]
        if others:  # terms registered beyond the standard set: their own functions, per block
            for i in range(k):
                ctx = self._context(sim, refs.index(slice(i * n, (i + 1) * n)), ig_sim)
                per_block[i] = {name: TERM_FUNCTIONS[name](ctx) for name in others}
        pieces: list[Tensor] = []
        for i in range(k):
            for t in self.spec.terms:
                if t.name in per_block[i]:
                    pieces.append(per_block[i][t.name])
                    continue
                v = values[t.name]
                pieces.append(v if v.dim() == 2 else v[i])
        return torch.cat(pieces, dim=-1)
