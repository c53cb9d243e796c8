"""The fused CPU step: the per-world work of ``HOIEnv.step`` as compiled passes, for the few-world
CPU environment (the sim bridge, small CPU training runs).

Why: with 1-8 worlds the torch step is dispatch-bound (hundreds of tiny ops cost ~4-6 ms per step,
more than the physics of a world). Here the action map is one compiled pass, and
:func:`sim.fused_kernels.step_worlds` does, per backend, everything ``env_step.simulated_side``
returns (state, reward factors, terminations, E_h/E_o, hand counters, the observation through
``observation.compiled_obs``) and the per-world part of the env's bookkeeping (masked reward,
episode ends, metric sums), reading the simulator's arrays and the motion library's table in
place and writing fresh arrays that are handed back as tensors (no copies). Episode ends, resets,
perturbations and logging stay in ``HOIEnv``.

It applies (:func:`fused_step_applies`) to the SMPL-X humanoid on the CPU MuJoCo backend with an
object in every scene, PSI off, no pipeline and an observation spec of the standard terms
(``observation.numpy_obs.NUMPY_TERMS``). Everything else, robots, MuJoCo Warp, GPU devices, PSI
recording, the pipelined step and custom observation terms, runs the torch path, which stays the
definition (tests/test_env_fused_step.py checks the two equal on real clips). Perturbations act
outside this part of the step, so they are covered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from intermimic_policy.embodiment.smplx_body import NUM_BODIES, NUM_JOINTS
from intermimic_policy.observation.compiled_obs import CompiledObservation, available
from intermimic_policy.observation.numpy_obs import NUMPY_TERMS
from intermimic_policy.observation.spec import ObservationSpec
from intermimic_policy.sim import fused_kernels as kern
from intermimic_policy.sim import rewards, terminations
from intermimic_policy.sim.backends.mujoco_cpu import MujocoCPUBackend
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.metrics import EpisodeMetrics
from intermimic_policy.sim.reference import MotionLibrary
from intermimic_policy.sim.rewards import PrevVelocities, RewardBodies, _row_weights

# RefFrame fields the kernels read, in the order of their ``fo`` offsets
_TABLE_FIELDS = ("body_pos", "body_rot", "body_lin_vel", "body_ang_vel", "object_pos", "object_rot",
                 "object_lin_vel", "object_ang_vel", "body_contact", "ig")


def fused_step_applies(config: HOIEnvConfig, backends: Sequence[object], psi_enabled: bool) -> str | None:
    """None when the fused step covers this environment, else why not (it then runs torch)."""
    if not config.fused_cpu_step:
        return "fused_cpu_step is off"
    if not available():
        return "numba is not installed"
    if config.device != "cpu" or config.backend != "mujoco":
        return f"backend {config.backend!r} on {config.device!r} (the fused step is CPU MuJoCo only)"
    if config.robot is not None:
        return f"robot {config.robot!r} (the fused step is the SMPL-X humanoid's)"
    if config.pipeline:
        return "the pipelined step"
    if psi_enabled:
        return "PSI recording"
    spec = config.obs_spec
    if spec.num_bodies != NUM_BODIES or any(t.name not in NUMPY_TERMS for t in spec.terms):
        return "an observation spec with terms beyond the standard ones"
    if not all(isinstance(b, MujocoCPUBackend) and b.layout.has_object for b in backends):
        return "a scene without an object"
    return None


@dataclass(frozen=True)
class _BackendRows:
    """One backend and the kernel arguments that describe its model: the layout's index arrays
    (bodies, their roots, hinge addresses, contact sensors, the object), the contact threshold and
    the env world id of each backend row."""

    backend: MujocoCPUBackend
    args: tuple[Any, ...]
    worlds: slice  # its rows among the env's worlds


class FusedStep:
    """Computes a :class:`StepPart` for all worlds with :func:`fused_kernels.step_worlds`."""

    def __init__(self, config: HOIEnvConfig, library: MotionLibrary, groups: Sequence[tuple[MujocoCPUBackend, int]],
                 world_object: torch.Tensor, bodies: RewardBodies, dt: float,
                 action_offset_scale: tuple[np.ndarray, np.ndarray]) -> None:
        if rewards._ROWS != kern.ERROR_ROWS:
            raise AssertionError("sim.fused_kernels mirrors compute_reward's rows: update it")  # pragma: no cover
        if kern.REASON_NAMES != (*terminations.FAILURE_REASONS, *terminations.TIMEOUT_REASONS, "physics_failure",
                                 "nonfinite_obs"):
            raise AssertionError("sim.fused_kernels mirrors check_terminations' reasons: update it")  # pragma: no cover
        self.config = cfg = config
        self.num_worlds = cfg.num_worlds
        self.dt = float(dt)
        self._rows = [self._backend_rows(b, start, cfg.contact_threshold) for b, start in groups]
        self._table = library.frame_table.numpy()
        offsets = library.field_offsets()
        self._fo = np.array([offsets[f] for f in _TABLE_FIELDS], dtype=np.int64)
        self._max_frames = int(library.max_frames)
        self._num_frames = library.num_frames.numpy().astype(np.int64)
        self._points = np.ascontiguousarray(library.points.numpy())
        self._cloud_pts = np.ascontiguousarray(self._points.astype(np.float64))
        self._leaves = _stacked_leaves(self._cloud_pts)
        self._world_object = world_object.numpy().astype(np.int64)
        self._obs_offsets = np.array(cfg.obs_spec.ref_offsets, dtype=np.int64)
        self._key = np.array(bodies.key, dtype=np.int64)
        foot = np.zeros(bodies.num_bodies, dtype=np.bool_)
        foot[list(bodies.feet)] = True
        self._foot = foot
        if len(bodies.left_hand) != len(bodies.right_hand):
            raise ValueError("the fused step needs hands of equal body counts")
        self._hands = np.array([bodies.left_hand, bodies.right_hand], dtype=np.int64)
        self._non_hand = np.array(bodies.non_hand_contact, dtype=np.int64)
        self._neg_weights = _row_weights(cfg.reward, torch.float32, torch.device("cpu")).numpy()[:, 0].copy()
        self._obs = _ObservationConstants(cfg.obs_spec)
        self._action_offset, self._action_scale = (np.ascontiguousarray(x, dtype=np.float32) for x in action_offset_scale)
        self._joint_rotvec = library.joint_rotvec_table.numpy()
        self._settings_args = self._settings()
        self._metrics_of: EpisodeMetrics | None = None
        self._metrics: tuple[np.ndarray, ...] = ()
        self._jav_shape = (self.num_worlds, NUM_JOINTS, 3)
        self._term_index = {name: i for i, name in enumerate(kern.TERM_NAMES)}
        self._reason_index = {name: i for i, name in enumerate(kern.REASON_NAMES)}
        self._handed: tuple[tuple[torch.Tensor, np.ndarray], ...] = ()  # last step's tensors and their arrays

    def bind(self, clip: torch.Tensor, t: torch.Tensor, steps: torch.Tensor, active: torch.Tensor) -> None:
        """The env's per-world tensors that live as long as it (updated in place, never replaced):
        :meth:`step` reads them, and advances ``t`` and ``steps``, through numpy views."""
        self._clip, self._t, self._steps, self._active = (x.numpy() for x in (clip, t, steps, active))

    def _metric_views(self, metrics: EpisodeMetrics) -> tuple[np.ndarray, ...]:
        """Numpy views of ``metrics``' sums, kept while the env keeps that object (callers may
        start a fresh ``EpisodeMetrics``, e.g. ``training.vec_env`` at every full reset)."""
        if metrics is not self._metrics_of:
            self._metrics_of = metrics
            self._metrics = tuple(x.numpy() for x in metrics.accumulators())
        return self._metrics

    def targets(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Hinge-angle PD targets [N, 153] (float64) of actions [N, 153]: ``HOIEnv.action_to_targets``
        to float32 rounding (the rotation vectors are the same floats; the angles come from float64)."""
        a = actions.detach().to("cpu", torch.float32).numpy() if isinstance(actions, torch.Tensor) else actions
        return torch.from_numpy(self.target_array(a))

    def target_array(self, actions: np.ndarray) -> np.ndarray:
        """:meth:`targets` of float32 actions [N, 153], as an array."""
        a = np.ascontiguousarray(actions, dtype=np.float32)
        out = np.empty((a.shape[0], a.shape[1]))
        kern.hinge_targets(a, self._action_offset, self._action_scale, np.float32(1.0), out)
        return out

    def step_physics(self, targets: np.ndarray) -> None:
        """Step every backend on its rows of ``targets`` [N, 153] (:meth:`target_array`): the
        physics of a step whose targets need no delay line, with no tensor on the way."""
        for g in self._rows:
            g.backend.step_array(targets[g.worlds])

    def pd_replay_actions(self) -> torch.Tensor:
        """``HOIEnv.pd_replay_actions`` of the bound worlds (the same float32 operations), compiled."""
        out = np.empty((self.num_worlds, self._action_offset.shape[0]), np.float32)
        kern.replay_actions(self._joint_rotvec, self._clip, self._t, self._num_frames, self._action_offset,
                            self._action_scale, out)
        return torch.from_numpy(out)

    @staticmethod
    def _backend_rows(backend: MujocoCPUBackend, start: int, threshold: float) -> _BackendRows:
        lay = backend.layout
        i64 = np.int64
        return _BackendRows(backend, (
            lay.humanoid_body_ids.astype(i64), lay.body_rootid[lay.humanoid_body_ids].astype(i64),
            lay.joint_qpos_adr.astype(i64), lay.joint_qvel_adr.astype(i64), lay.any_contact_adr.astype(i64),
            lay.object_contact_adr.astype(i64), int(lay.object_body_id), int(lay.body_rootid[lay.object_body_id]),
            float(threshold), np.arange(start, start + backend.num_worlds, dtype=i64)),
            slice(start, start + backend.num_worlds))

    def _settings(self) -> tuple[Any, ...]:
        """The kernel arguments fixed for the env's life, from ``world_object`` to the observation's."""
        cfg, term, o = self.config, self.config.termination, self._obs
        return (self._world_object, self._table, self._max_frames, self._fo, self._obs_offsets, self._points,
                self._cloud_pts, *self._leaves, self._key, self._foot, self._hands, self._non_hand,
                self._neg_weights, cfg.reward.contact_source == "object", self.dt, float(term.fall_height),
                float(term.key_body_dev), float(term.object_dev), float(term.ig_ratio), float(term.ig_floor),
                int(term.hand_contact_lost_frames), int(term.grace_steps), bool(term.early_termination),
                -1 if cfg.episode_cap is None else int(cfg.episode_cap),
                o.key, o.nh, o.contact, o.lay, o.sim_at, o.blk_at, o.blk_size, o.ig_at, o.blk_extra, o.tail, o.x,
                o.work, o.index, o.refs)

    def _numpy_of(self, tensors: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, ...]:
        """Numpy views of ``tensors``: the arrays this object handed back last step when they are
        the same tensors (the usual case: the env passes its last outcome back), else ``.numpy()``."""
        last = self._handed
        if len(last) == len(tensors) and all(t is h for t, (h, _) in zip(tensors, last)):
            return tuple(a for _, a in last)
        return tuple(t.numpy() for t in tensors)

    def step(self, hand_lost: torch.Tensor, prev: PrevVelocities, metrics: EpisodeMetrics) -> FusedOutcome:
        """The step's per-world results for all worlds, from the backends' current state: advances
        the bound ``t`` and ``steps`` by one and adds to ``metrics``' sums (in place); ``hand_lost``
        and ``prev`` are the counters and velocities after the last step.

        Every result is a fresh tensor over a fresh array (nothing is overwritten by a later step);
        the reward factors and termination reasons are :class:`NamedRows` of one tensor each."""
        self._t += 1
        self._steps += 1
        n, o = self.num_worlds, self._obs
        f32 = np.float32
        obs = np.empty((n, o.dim), f32)
        floats = np.empty((18, n), f32)  # reward, e_h, e_o, the reward factors
        flags = np.empty((13, n), np.bool_)  # termination reasons; done, terminated, truncated
        jav = np.empty(self._jav_shape, f32)
        vel = np.empty((2, n, 3), f32)  # object linear, angular velocity
        lost = np.empty((n, 2), f32)
        state = (self._clip, self._t, self._steps, self._num_frames,
                 *self._numpy_of((hand_lost, prev.joint_ang_vel, prev.object_lin_vel, prev.object_ang_vel)))
        tail = (self._active, *self._metric_views(metrics), obs, floats[0], floats[3:18], flags[:10],
                flags[10], flags[11], flags[12], lost, floats[1], floats[2], jav, vel[0], vel[1])
        n_done = n_bad_live = n_bad = 0
        for g in self._rows:
            raw = g.backend.raw_state()
            done, bad_live, bad = kern.step_worlds(
                raw.xpos, raw.xquat, raw.cvel, raw.subtree_com, raw.qpos, raw.qvel, raw.sensordata, *g.args, *state,
                raw.failed, *self._settings_args, *tail)
            n_done += done
            n_bad_live += bad_live
            n_bad += bad
        # one tensor per result (each ~1.5 us to make): rows are sliced from the arrays, and the
        # factors and reasons stay one tensor each until someone reads them by name
        tt = torch.from_numpy
        out = FusedOutcome(
            obs=tt(obs), reward=tt(floats[0]), terms=NamedRows(kern.TERM_NAMES, self._term_index, tt(floats[3:18])),
            reasons=NamedRows(kern.REASON_NAMES, self._reason_index, tt(flags[:10])), done=tt(flags[10]),
            terminated=tt(flags[11]), truncated=tt(flags[12]), hand_lost=tt(lost), e_h=tt(floats[1]),
            e_o=tt(floats[2]), prev=PrevVelocities(tt(jav), tt(vel[0]), tt(vel[1])), num_done=n_done,
            num_bad_live=n_bad_live, num_nonfinite_obs=n_bad)
        p = out.prev
        self._handed = ((out.hand_lost, lost), (p.joint_ang_vel, jav), (p.object_lin_vel, vel[0]),
                        (p.object_ang_vel, vel[1]))
        return out


class NamedRows(Mapping[str, torch.Tensor]):
    """Rows of one [K, n] tensor by name, each a view made when it is read: a step reports 15
    reward factors and 10 termination reasons, and making 25 tensors nobody reads cost more than
    the compiled work of a world (``info["reward_terms"]``, ``info["reasons"]``)."""

    __slots__ = ("_index", "_names", "rows")

    def __init__(self, names: tuple[str, ...], index: dict[str, int], rows: torch.Tensor) -> None:
        self._names, self._index, self.rows = names, index, rows

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.rows[self._index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"NamedRows({dict(self)!r})"


@dataclass(slots=True)
class FusedOutcome:
    """A fused step's results: what ``HOIEnv.step`` returns per world, already masked to the
    running worlds (reward, terminated, truncated, done), and counts for the rare paths."""

    obs: torch.Tensor  # [n, D] (non-finite values passed through)
    reward: torch.Tensor  # [n] 0 where the world is not running or failed
    terms: Mapping[str, torch.Tensor]  # reward factors, [n] each
    reasons: Mapping[str, torch.Tensor]  # termination reasons, [n] bool each
    done: torch.Tensor  # [n] bool: running worlds whose episode ends
    terminated: torch.Tensor  # [n] bool: ... in failure
    truncated: torch.Tensor  # [n] bool: ... by a time-out
    hand_lost: torch.Tensor  # [n, 2]
    e_h: torch.Tensor
    e_o: torch.Tensor
    prev: PrevVelocities
    num_done: int
    num_bad_live: int  # running worlds whose observation is not finite
    num_nonfinite_obs: int


def _stacked_leaves(clouds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every object's ``fused_kernels.cloud_leaves`` as arrays [objects, ...]: points in leaf order,
    the order, leaf starts, box lows and highs (objects with fewer leaves padded with empty ones,
    whose boxes are never near)."""
    parts = [kern.cloud_leaves(c) for c in clouds]
    nl = max(len(p[1]) - 1 for p in parts)
    npts = clouds.shape[1]
    pts, order = np.empty_like(clouds), np.empty((len(parts), npts), np.int64)
    starts = np.full((len(parts), nl + 1), npts, np.int64)
    lo, hi = np.full((len(parts), nl, 3), np.inf), np.full((len(parts), nl, 3), -np.inf)
    for i, (o, s, a, b) in enumerate(parts):
        pts[i], order[i] = clouds[i][o], o
        starts[i, :len(s)] = s
        lo[i, :len(a)], hi[i, :len(b)] = a, b
    return pts, order, starts, lo, hi


class _ObservationConstants:
    """:class:`CompiledObservation`'s layout constants and one world's workspaces."""

    def __init__(self, spec: ObservationSpec) -> None:
        c = CompiledObservation(spec)
        self.dim = spec.dim
        self.key, self.nh, self.contact = c._key64, c._nh64, c._c64
        self.lay, self.sim_at, self.blk_at = c._lay, c._sim_at, c._blk_at
        self.blk_size, self.ig_at, self.blk_extra, self.tail = int(c._blk.size), int(c._ig_at), int(c._blk_extra), int(c._tail)
        self.x, self.work, self.index = c._x, c.work, c._index64
        self.refs = np.zeros((len(spec.ref_offsets), c._ref_len))
