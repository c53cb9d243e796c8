"""The student's tokens: one per reference frame offset, built by the training observation code.

The Transformer student reads its observation as ``[N, K, block]``: token k holds the observation
block of the reference ``spec.ref_offsets[k]`` frames ahead (spec 4.2: offsets 0, 1, 4, 16; the
current simulated state is repeated in every token). Training (``HOIEnv``), export (the contract's
observation spec) and the policy node (its reference buffer gives one ``RefFrame`` per offset) all
build it with ``ObservationBuilder``; these functions are the token view of that one code path, so
a deployment cannot assemble tokens differently from training.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.spec import ObservationSpec, ObservationSpecError, student_spec
from intermimic_policy.state.frames import RefFrame, SimState

_BUILDERS: dict[str, ObservationBuilder] = {}


def _builder(spec: ObservationSpec) -> ObservationBuilder:
    key = spec.digest()
    if key not in _BUILDERS:
        _BUILDERS[key] = ObservationBuilder(spec)
    return _BUILDERS[key]


def student_tokens(sim: SimState, refs: Sequence[RefFrame] | RefFrame, object_points: Tensor,
                   spec: ObservationSpec | None = None) -> Tensor:
    """Tokens [N, K, block] from the simulated state and the reference at each offset of ``spec``
    (default: the student spec). ``refs``: one ``RefFrame`` per offset, or the K frames stacked
    offset-major (``MotionLibrary.frames_at_offsets``)."""
    spec = spec or student_spec()
    obs = _builder(spec).build(sim, refs, object_points)
    return split_tokens(obs, spec)


def split_tokens(obs: Tensor, spec: ObservationSpec | None = None) -> Tensor:
    """Flat observations [N, K * block] -> tokens [N, K, block] (a view)."""
    spec = spec or student_spec()
    if obs.shape[-1] != spec.dim:
        raise ObservationSpecError(f"observation has {obs.shape[-1]} dims, the spec has {spec.dim} "
                                   f"({spec.num_tokens} tokens x {spec.block_dim})")
    return obs.reshape(*obs.shape[:-1], spec.num_tokens, spec.block_dim)


def flatten_tokens(tokens: Tensor) -> Tensor:
    """Tokens [N, K, block] -> the flat policy input [N, K * block] (what the exported graph takes)."""
    return tokens.reshape(*tokens.shape[:-2], tokens.shape[-2] * tokens.shape[-1])


def token_layout(spec: ObservationSpec | None = None) -> list[dict[str, int]]:
    """Where each token sits in the flat input: index, reference offset, start, stop."""
    spec = spec or student_spec()
    b = spec.block_dim
    return [{"token": k, "ref_offset": d, "start": k * b, "stop": (k + 1) * b} for k, d in enumerate(spec.ref_offsets)]
