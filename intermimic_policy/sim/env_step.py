"""One control step's computations, split into the parts that can overlap the physics.

``HOIEnv.step`` is: physics, then everything the new state implies (reward, terminations,
metrics, observation), then bookkeeping (PSI, episode ends, resets). Split here:

* :func:`reference_side` depends only on each world's clip and frame, so it can run while the
  physics steps: the reference at t and at every observation offset (one gather), and the
  reference half of the interaction graph;
* :func:`simulated_side` needs the new state of a block of worlds and computes everything
  per-world the step returns, each shared quantity once (:class:`InteractionGeometry`);
* :func:`merge` concatenates the parts of consecutive world blocks.

:class:`PhysicsRunner` steps blocks of worlds, inline or on a background thread: the simulator's
C threads release the GIL, so while block B steps the main thread computes block A's part
(``HOIEnvConfig.pipeline``). Every op here gives a world the same result whatever block it is
computed in (tests check the pipelined environment bit for bit against the plain one).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.sim.backends import Backend
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.metrics import step_errors
from intermimic_policy.sim.reference import MotionLibrary
from intermimic_policy.sim.rewards import SMPLX_BODIES, PrevVelocities, RewardBodies, compute_reward
from intermimic_policy.sim.terminations import (
    check_terminations,
    hand_contact_source,
    update_hand_contact_lost,
)
from intermimic_policy.state.frames import InitialState, RefFrame, SimState
from intermimic_policy.state.interaction_graph import (
    ReferenceGeometry,
    interaction_geometry,
    object_points_world,
    reference_geometry,
)


@dataclass(frozen=True)
class ReferenceSide:
    """A block's reference for one step: frame t (reward, terminations) and t + each offset."""

    ref: RefFrame  # [n] at t
    obs_refs: RefFrame  # [K n] at t + each observation offset, offset-major
    geometry: ReferenceGeometry


def reference_side(library: MotionLibrary, clip: Tensor, t: Tensor, obs_offsets: Sequence[int],
                   points: Tensor, key_ids: Tensor, ig_floor: float) -> ReferenceSide:
    """The reference side of worlds tracking ``clip`` [n] at frame ``t`` [n]; ``points`` [n,P,3]
    their object-frame surface points, ``key_ids`` the key bodies (``KEY_BODIES``)."""
    n = clip.shape[0]
    refs = library.frames_at_offsets(clip, t, (0, *obs_offsets))
    ref, obs_refs = refs.index(slice(0, n)), refs.index(slice(n, None))
    geometry = reference_geometry(ref.body_pos.index_select(1, key_ids),
                                  object_points_world(points, ref.object_pos, ref.object_rot),
                                  ref.object_pos, ig_floor)
    return ReferenceSide(ref, obs_refs, geometry)


@dataclass
class StepPart:
    """Everything per-world a step computes from the new state, for a block of n worlds."""

    obs: Tensor  # [n, D]
    reward: Tensor  # [n] raw product of the factors (masking happens in the bookkeeping)
    terms: dict[str, Tensor]  # reward factors, [n] each
    reasons: dict[str, Tensor]  # termination reasons, [n] bool each
    reset: Tensor  # [n] bool, before the failure checks
    terminated: Tensor  # [n] bool, before the failure checks
    hand_lost: Tensor  # [n, 2] updated counters
    e_h: Tensor  # [n]
    e_o: Tensor  # [n]
    prev: PrevVelocities  # velocities for the next step's energy factors
    psi_state: Tensor | None  # [n, 332] the state PSI records, when PSI is on


@dataclass(frozen=True)
class WorldsState:
    """What the env tracks per world, for a block (views into the env's tensors)."""

    clip: Tensor
    t: Tensor  # the new frame
    steps: Tensor  # steps since the reset, after this step
    num_frames: Tensor
    hand_lost: Tensor
    prev: PrevVelocities
    points: Tensor  # [n,P,3] object frame
    failed: Tensor  # [n] bool physics failure in this step


def simulated_side(sim: SimState, ref_side: ReferenceSide, worlds: WorldsState, config: HOIEnvConfig,
                   builder: ObservationBuilder, dt: float, record_psi: bool,
                   bodies: RewardBodies = SMPLX_BODIES) -> StepPart:
    """Reward, terminations, errors and observation of a block of worlds from its new state
    (``bodies``: the embodiment's body subsets, default the SMPL-X humanoid's)."""
    cfg, ref = config, ref_side.ref
    geometry = interaction_geometry(
        sim.body_pos, object_points_world(worlds.points, sim.object_pos, sim.object_rot), sim.object_pos,
        bodies.key, ref_side.geometry)
    reward, terms = compute_reward(sim, worlds.prev, ref, worlds.points, cfg.reward, worlds.steps, dt,
                                   geometry=geometry, bodies=bodies)
    hand_lost = update_hand_contact_lost(worlds.hand_lost, hand_contact_source(sim, cfg.termination),
                                         ref.body_contact, (bodies.left_hand, bodies.right_hand))
    e_h, e_o = step_errors(sim, ref, worlds.points, geometry=geometry, key_bodies=bodies.key)
    reset, terminated, reasons = check_terminations(
        sim, ref, worlds.points, worlds.t, worlds.num_frames, worlds.steps, hand_lost, cfg.termination,
        cfg.episode_cap, geometry=geometry, errors=(e_h, e_o), key_bodies=bodies.key)
    reasons["physics_failure"] = worlds.failed
    obs = builder.build(sim, ref_side.obs_refs, worlds.points, ig_sim=geometry.nearest)
    reasons["nonfinite_obs"] = ~torch.isfinite(obs).all(dim=-1)
    psi_state = InitialState.from_sim(sim).flatten() if record_psi else None
    return StepPart(obs, reward, terms, reasons, reset, terminated, hand_lost, e_h, e_o,
                    PrevVelocities.from_sim(sim), psi_state)


def merge(parts: Sequence[StepPart]) -> StepPart:
    """The parts of consecutive world blocks as one (concatenated in block order)."""
    if len(parts) == 1:
        return parts[0]

    def cat(xs: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(xs))

    def cat_dict(ds: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {k: cat([d[k] for d in ds]) for k in ds[0]}

    psi = [p.psi_state for p in parts]
    return StepPart(
        obs=cat([p.obs for p in parts]), reward=cat([p.reward for p in parts]),
        terms=cat_dict([p.terms for p in parts]), reasons=cat_dict([p.reasons for p in parts]),
        reset=cat([p.reset for p in parts]), terminated=cat([p.terminated for p in parts]),
        hand_lost=cat([p.hand_lost for p in parts]), e_h=cat([p.e_h for p in parts]),
        e_o=cat([p.e_o for p in parts]),
        prev=PrevVelocities(**{f.name: cat([getattr(p.prev, f.name) for p in parts])
                               for f in fields(PrevVelocities)}),
        psi_state=None if any(x is None for x in psi) else cat([x for x in psi if x is not None]),
    )


@dataclass(frozen=True)
class Block:
    """A contiguous range of worlds [start, stop) and the backends that simulate exactly it."""

    start: int
    stop: int
    backends: tuple[tuple[Backend, int, int], ...]  # (backend, its first world, its last world + 1)

    @property
    def worlds(self) -> slice:
        return slice(self.start, self.stop)


class PhysicsRunner:
    """Steps the blocks' backends, in order: inline, or on one background thread (``pipelined``).

    ``start(targets)`` queues every block; ``wait(i)`` blocks until block i has stepped (and
    re-raises its error). In pipelined mode the physics of all blocks runs back to back on the
    worker while the caller computes on the blocks already done. ``settle()`` waits for whatever
    is still running (after an error), so no physics outlives the step that started it.
    """

    def __init__(self, blocks: Sequence[Block], pipelined: bool) -> None:
        self.blocks = tuple(blocks)
        self.pipelined = pipelined
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []

    @staticmethod
    def _run(block: Block, targets: Tensor) -> None:
        for backend, start, stop in block.backends:
            backend.step(targets[start:stop])

    def start(self, targets: Tensor) -> None:
        if not self.pipelined:
            for b in self.blocks:
                self._run(b, targets)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intermimic-physics")
        self._futures = [self._pool.submit(self._run, b, targets) for b in self.blocks]

    def wait(self, block: int) -> None:
        if self._futures:
            self._futures[block].result()

    def settle(self) -> None:
        for f in self._futures:
            try:
                f.result()
            except Exception:  # noqa: BLE001 - already reported by wait(), or moot after another error
                pass
        self._futures = []

    def close(self) -> None:
        self.settle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
