"""The observation as one spec: a table of named terms, their sizes and reference offsets.

The same spec builds the observation in training (``HOIEnv``), prints its layout
(``intermimic obs-layout``), is written into the exported policy's contract, and builds the
observation in the ROS policy node. A policy trained with one spec refuses to run with another.

An observation is ``len(ref_offsets)`` blocks, one per reference frame offset Δ (the reference
``Δ`` frames ahead of the current one). Every block has the same terms in the same order. Each
block is one token for the Transformer student. The per-block layout follows upstream
InterMimic (1599 dims) so that dims match its published configs; the content of upstream's
buggy terms is fixed (see each term's ``note``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from intermimic_policy.embodiment.smplx_body import (
    CONTACT_BODIES,
    KEY_BODIES,
    NO_HAND_BODIES,
    NUM_BODIES,
)
from intermimic_policy.errors import IntermimicError

if TYPE_CHECKING:
    from intermimic_policy.embodiment.description import EmbodimentSpec

SPEC_VERSION = 1

# what a term reads: "sim" = simulated state only, "ref" = the reference frame at t + Δ only,
# "both" = the difference or relation of the two.
SOURCES = ("sim", "ref", "both")


@dataclass(frozen=True)
class ObsTerm:
    name: str
    dim: int
    source: str
    note: str = ""


# The canonical block (1599 dims for SMPL-X). Names are the keys of the term functions in
# ``intermimic_policy.observation.terms``. "h" is the inverse heading of the simulated root.
def block_terms(num_bodies: int, num_key: int, num_contact: int, num_no_hand: int) -> tuple[ObsTerm, ...]:
    """The canonical block's terms for a body of ``num_bodies`` bodies and the given subset sizes
    (SMPL-X: :data:`HOI_BLOCK_TERMS`; a robot: ``embodiment_spec``)."""
    nb, nk, nc, nr = num_bodies, num_key, num_contact, num_no_hand
    return (
        ObsTerm("root_height", 1, "sim", "root z"),
        ObsTerm("local_body_pos", 3 * (nb - 1), "sim", "h (p_b - p_root), non-root bodies"),
        ObsTerm("local_body_rot", 6 * nb, "sim", "tan-norm of h q_b"),
        ObsTerm("local_body_vel", 3 * nb, "sim", "h v_b"),
        ObsTerm("local_body_ang_vel", 3 * nb, "sim", "h w_b"),
        ObsTerm("body_contact", nc, "sim", "contact flag of each contact body"),
        ObsTerm("key_pos_error", 3 * nk, "both", "h (p_ref,k - p_k)"),
        ObsTerm("body_rot_error", 6 * nr, "both", "tan-norm of h (q_ref q^-1) h^-1: world-frame error seen from the heading frame "
                "(upstream mixes body and heading frames, so its value changes when the scene turns)"),
        ObsTerm("contact_error", nc, "both", "c_ref ((c_ref + 1)/2 - c): 1 = missing or unwanted"),
        ObsTerm("ref_local_key_pos", 3 * nk, "ref", "reference key bodies in the reference root frame "
                "(upstream reads simulated positions here by mistake)"),
        ObsTerm("ref_local_body_rot", 6 * nr, "ref", "tan-norm of h q_ref"),
        ObsTerm("key_vel_error", 3 * nk, "both", "h (v_ref,k - v_k)"),
        ObsTerm("body_ang_vel_error", 3 * nr, "both", "h (w_ref - w), true angular velocities"),
        ObsTerm("object_vel", 3, "sim", "h v_obj"),
        ObsTerm("object_ang_vel", 3, "sim", "h w_obj"),
        ObsTerm("object_pos_error", 3, "both", "h (p_ref,obj - p_obj)"),
        ObsTerm("object_rot_error", 6, "both", "tan-norm of h (q_ref,obj q_obj^-1) h^-1, heading-invariant as body_rot_error"),
        ObsTerm("object_vel_error", 3, "both", "h (v_ref,obj - v_obj)"),
        ObsTerm("object_ang_vel_error", 3, "both", "h (w_ref,obj - w_obj)"),
        ObsTerm("interaction_graph", 3 * nb, "sim", "f(h (p_b - nearest object point)), "
                "f(v) = v/|v| exp(-5|v|)"),
        ObsTerm("interaction_graph_error", 3 * nk, "both", "f(ig_ref,k) - f(ig_k), key bodies"),
    )


HOI_BLOCK_TERMS: tuple[ObsTerm, ...] = block_terms(NUM_BODIES, len(KEY_BODIES), len(CONTACT_BODIES),
                                                   len(NO_HAND_BODIES))


class ObservationSpecError(IntermimicError, ValueError):
    """An observation spec that is malformed or does not match another one."""


@dataclass(frozen=True)
class ObservationSpec:
    terms: tuple[ObsTerm, ...] = HOI_BLOCK_TERMS
    ref_offsets: tuple[int, ...] = (1, 16)
    version: int = SPEC_VERSION
    # layout of the per-body subsets the terms use; part of the contract
    key_bodies: tuple[int, ...] = KEY_BODIES
    contact_bodies: tuple[int, ...] = CONTACT_BODIES
    no_hand_bodies: tuple[int, ...] = NO_HAND_BODIES
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ObservationSpecError(f"duplicate observation terms: {names}")
        for t in self.terms:
            if t.dim <= 0:
                raise ObservationSpecError(f"observation term {t.name!r} has dim {t.dim}")
            if t.source not in SOURCES:
                raise ObservationSpecError(f"observation term {t.name!r} has source {t.source!r}")
        if not self.ref_offsets or any(d < 0 for d in self.ref_offsets):
            raise ObservationSpecError(f"reference offsets must be non-negative, got {self.ref_offsets}")

    @property
    def num_bodies(self) -> int:
        """Bodies of the embodiment this spec observes (from ``local_body_rot``: 6 per body)."""
        for t in self.terms:
            if t.name == "local_body_rot":
                return t.dim // 6
        return NUM_BODIES

    @property
    def block_dim(self) -> int:
        return sum(t.dim for t in self.terms)

    @property
    def num_tokens(self) -> int:
        return len(self.ref_offsets)

    @property
    def dim(self) -> int:
        return self.block_dim * self.num_tokens

    @property
    def max_offset(self) -> int:
        return max(self.ref_offsets)

    def term_slices(self) -> dict[str, slice]:
        """Slices of each term inside one block."""
        out, start = {}, 0
        for t in self.terms:
            out[t.name] = slice(start, start + t.dim)
            start += t.dim
        return out

    def layout(self) -> list[dict[str, object]]:
        """One row per (offset, term): where it sits in the flat observation."""
        rows: list[dict[str, object]] = []
        start = 0
        for token, delta in enumerate(self.ref_offsets):
            for t in self.terms:
                rows.append({"token": token, "ref_offset": delta, "term": t.name, "start": start,
                             "dim": t.dim, "source": t.source})
                start += t.dim
        return rows

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "ref_offsets": list(self.ref_offsets),
            "terms": [{"name": t.name, "dim": t.dim, "source": t.source} for t in self.terms],
            "key_bodies": list(self.key_bodies),
            "contact_bodies": list(self.contact_bodies),
            "no_hand_bodies": list(self.no_hand_bodies),
            "block_dim": self.block_dim,
            "dim": self.dim,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ObservationSpec:
        try:
            notes = {t.name: t.note for t in HOI_BLOCK_TERMS}
            return cls(
                terms=tuple(ObsTerm(t["name"], int(t["dim"]), t["source"], notes.get(t["name"], ""))
                            for t in d["terms"]),
                ref_offsets=tuple(int(x) for x in d["ref_offsets"]),
                version=int(d["version"]),
                key_bodies=tuple(d["key_bodies"]),
                contact_bodies=tuple(d["contact_bodies"]),
                no_hand_bodies=tuple(d["no_hand_bodies"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ObservationSpecError(f"malformed observation spec: {exc}") from exc

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def differences(self, other: ObservationSpec) -> list[str]:
        """Human-readable list of every way ``other`` differs from this spec (empty = equal)."""
        diffs = []
        if self.version != other.version:
            diffs.append(f"spec version {other.version} != {self.version}")
        if self.ref_offsets != other.ref_offsets:
            diffs.append(f"reference offsets {list(other.ref_offsets)} != {list(self.ref_offsets)}")
        mine = [(t.name, t.dim) for t in self.terms]
        theirs = [(t.name, t.dim) for t in other.terms]
        if mine != theirs:
            missing = sorted(set(n for n, _ in mine) - set(n for n, _ in theirs))
            extra = sorted(set(n for n, _ in theirs) - set(n for n, _ in mine))
            dims = [f"{n}: {dict(theirs)[n]} != {d}" for n, d in mine if n in dict(theirs) and
                    dict(theirs)[n] != d]
            if missing:
                diffs.append(f"missing terms {missing}")
            if extra:
                diffs.append(f"unknown terms {extra}")
            if dims:
                diffs.append("term dims differ (" + ", ".join(dims) + ")")
            if not (missing or extra or dims):
                diffs.append("term order differs")
        for key in ("key_bodies", "contact_bodies", "no_hand_bodies"):
            if getattr(self, key) != getattr(other, key):
                diffs.append(f"{key} differ")
        return diffs


def teacher_spec() -> ObservationSpec:
    """Teacher and MLP student: reference 1 and 16 frames ahead (3198 dims)."""
    return ObservationSpec(ref_offsets=(1, 16))


def student_spec() -> ObservationSpec:
    """Transformer student: four tokens, reference 0, 1, 4 and 16 frames ahead (6396 dims)."""
    return ObservationSpec(ref_offsets=(0, 1, 4, 16))


def embodiment_spec(embodiment: EmbodimentSpec, ref_offsets: tuple[int, ...] = (1, 16)) -> ObservationSpec:
    """The canonical observation of ``embodiment`` (its body count and subsets) at ``ref_offsets``.
    For the SMPL-X humanoid this equals :func:`teacher_spec` / :func:`student_spec`."""
    e = embodiment
    return ObservationSpec(
        terms=block_terms(e.num_bodies, len(e.key_bodies), len(e.contact_bodies), len(e.no_hand_bodies)),
        ref_offsets=tuple(ref_offsets), key_bodies=e.key_bodies, contact_bodies=e.contact_bodies,
        no_hand_bodies=e.no_hand_bodies)
