"""``HOIEnv``: the batched HOI imitation environment (InterMimic's task on MuJoCo).

One environment = N worlds, each tracking one reference clip (human + one object). It wires the
pieces other modules own: scenes (``sim.scene``), a simulator backend (``sim.backends``), the
reference (``sim.reference.MotionLibrary``), the observation builder, reward, terminations,
PSI and metrics. Everything is batched torch; nothing here loops over worlds in Python.

Mixed objects: worlds are split into contiguous blocks, one block and one backend per object
(upstream keeps env i on object i % n_obj). Why not all objects in one model, parked away: every
world would then carry every object's free body (6 DOF each in the mass matrix), their collision
geoms in the broadphase and their pairs in the contact sensors, so all worlds would pay for all
objects. One model per object keeps each world minimal; the cost is one backend call per object.

Per control step (30 Hz): actions in [-1, 1] -> rotation-vector targets (``smplx_body``
offset/scale) -> hinge-angle PD targets -> ``substeps`` physics steps -> state -> reward against
the reference at the new frame t, terminations, metrics, PSI recording -> observation of the
reference at t + each spec offset. Worlds that end are reset in the same call (auto-reset); the
observation returned for them is the fresh one after the reset (the pre-reset one is in
``info["terminal_obs"]``). After every reset the backend recomputes kinematics and contacts
before the observation is built, so no observation is stale (upstream quirk, spec 13.5).
A world whose observation is not finite is reset and counted (``nonfinite_resets``), never a crash.

Speed (``benchmarks/bench_env.py``): the step computes every quantity several consumers read ONCE
(``sim.env_step``): the reference at t and all observation offsets in one gather, one
interaction-graph pass that yields the observation's nearest-point vectors, the reward's graph
error and the early termination's deviation ratio, and E_h/E_o reused by the deviation tests.
``config.pipeline`` additionally overlaps that work with the physics (bit-identical results).
On CPU with a few worlds that torch work is dispatch-bound, so ``config.fused_cpu_step`` (on by
default where it applies, ``sim.fused_step``) runs the action map, the per-world terms and the
per-world bookkeeping as compiled loops instead: equal to the torch terms to float32 rounding.
``config.skeleton="subject"`` builds the humanoid from the clips' own bones (``sim.subject``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from intermimic_policy.contract import PolicyContract
from intermimic_policy.embodiment import joint_convert, mjcf, smplx_body
from intermimic_policy.embodiment.action_map import actions_for_targets, pd_targets
from intermimic_policy.embodiment.skeleton import Skeleton, default_skeleton
from intermimic_policy.errors import IntermimicError
from intermimic_policy.geometry import fast
from intermimic_policy.geometry import quaternion as quat
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.observation.builder import ObservationBuilder, nonfinite_envs
from intermimic_policy.observation.spec import ObservationSpec
from intermimic_policy.sim.backends import Backend, BackendConfig, make_backend
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.env_step import (
    Block,
    PhysicsRunner,
    ReferenceSide,
    StepPart,
    WorldsState,
    merge,
    reference_side,
    simulated_side,
)
from intermimic_policy.sim.fused_step import FusedStep, fused_step_applies
from intermimic_policy.sim.metrics import EpisodeMetrics
from intermimic_policy.sim.objects import ObjectAsset, load_object
from intermimic_policy.sim.policy_contract import env_contract
from intermimic_policy.sim.psi import PSIBuffer
from intermimic_policy.sim.reference import MotionLibrary
from intermimic_policy.sim.rewards import SMPLX_BODIES, PrevVelocities, RewardBodies
from intermimic_policy.sim.scene import Scene, SceneConfig, build_scene
from intermimic_policy.sim.subject import subject_skeleton
from intermimic_policy.state.frames import InitialState, RefFrame, SimState

logger = logging.getLogger(__name__)


class EnvError(IntermimicError, ValueError):
    """An environment that cannot be built or driven (clips, objects, worlds, actions)."""


@dataclass
class WorldGroup:
    """The worlds that share one object: a contiguous block of world ids and its backend."""

    object_name: str
    scene: Scene
    backend: Backend
    start: int
    stop: int
    clip_ids: Tensor  # library clip ids whose object this is

    @property
    def size(self) -> int:
        return self.stop - self.start


def cat_sim_states(states: Sequence[SimState]) -> SimState:
    if len(states) == 1:
        return states[0]
    return SimState(**{f.name: torch.cat([getattr(s, f.name) for s in states]) for f in fields(SimState)})


def _load_clips(motions: Sequence[HOIMotion | str | os.PathLike[str]]) -> list[HOIMotion]:
    from intermimic_policy.motion.io import load_motion

    out = [m if isinstance(m, HOIMotion) else load_motion(m) for m in motions]
    if not out:
        raise EnvError("HOIEnv needs at least one clip")
    return out


def _robot_description(robot: str) -> Any:
    from intermimic_policy.embodiment.robot import RobotError, load_robot

    try:
        return load_robot(robot)
    except RobotError as exc:
        raise EnvError(str(exc)) from exc


def _load_robot_clips(motions: Sequence[Any], desc: Any, emb: Any) -> list[Any]:
    from intermimic_policy.sim.robot_reference import robot_clips

    if not motions:
        raise EnvError("HOIEnv needs at least one clip")
    return robot_clips(motions, desc, emb)


@contextmanager
def torch_threads(n: int, device: torch.device) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads on CPU (0 or a GPU device: unchanged), then restore."""
    old = torch.get_num_threads()
    if n <= 0 or device.type != "cpu" or old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class HOIEnv:
    """N worlds tracking HOI clips. ``reset`` / ``step`` follow the gymnasium vector convention."""

    def __init__(
        self,
        config: HOIEnvConfig,
        motions: Sequence[HOIMotion | str | os.PathLike[str]],
        *,
        objects: Mapping[str, ObjectAsset] | None = None,
        skeleton: Skeleton | None = None,
    ) -> None:
        config.validate()
        self.config = cfg = config
        self.device = torch.device(cfg.device)
        self.embodiment = emb = cfg.embodiment
        self._robot = None if cfg.robot is None else _robot_description(cfg.robot)
        if self._robot is not None and skeleton is not None:
            raise EnvError(f"a skeleton is an SMPL-X humanoid setting; the environment runs robot {cfg.robot!r}")
        clips = _load_clips(motions) if self._robot is None else _load_robot_clips(motions, self._robot, emb)
        if cfg.obs_spec.num_bodies != emb.num_bodies:
            raise EnvError(f"observation spec observes {cfg.obs_spec.num_bodies} bodies, {emb.name} has {emb.num_bodies}")
        self.obs_builder = ObservationBuilder(cfg.obs_spec)
        names = sorted({m.object_name for m in clips})
        if len(names) > cfg.num_worlds:
            raise EnvError(f"{len(names)} objects ({', '.join(names)}) need at least as many worlds, "
                           f"got num_worlds={cfg.num_worlds}")
        assets = {n: self._object(n, clips, objects) for n in names}
        points = {n: a.points(cfg.num_object_points) for n, a in assets.items()}
        self.motion_library = MotionLibrary(clips, points, self.device, num_points=cfg.num_object_points)
        lib = self.motion_library
        self.skeleton = self._skeleton(skeleton, clips) if self._robot is None else None  # type: ignore[arg-type]
        pert = cfg.perturb
        scene_cfg = SceneConfig(object_density=cfg.object_density)
        if pert.floor_friction != 1.0:  # scale the friction the feet really get (see SceneConfig)
            pair = max(SceneConfig.floor_friction, mjcf.FRICTION[0])
            scene_cfg = dataclasses.replace(scene_cfg, floor_friction=pair * pert.floor_friction,
                                            floor_friction_priority=True)
        n = cfg.num_worlds
        # world blocks stepped one after the other (two when pipelined); a backend never spans two
        cuts = [0, n // 2, n] if cfg.pipeline and n >= 2 else [0, n]
        self.groups: list[WorldGroup] = []
        start = 0
        for name, size in zip(names, _split(n, len(names))):
            if self._robot is None:
                scene = build_scene(self.skeleton, assets[name], _perturbed_scene(scene_cfg, assets[name], pert))
            else:
                from intermimic_policy.sim.robot_reference import build_robot_env_scene

                scene = build_robot_env_scene(self._robot, emb, assets[name],
                                              _perturbed_scene(scene_cfg, assets[name], pert))
            clip_ids = torch.nonzero(lib.clip_object == lib.object_list.index(name)).flatten()
            bounds = sorted({start, start + size, *(c for c in cuts if start < c < start + size)})
            for a, b in zip(bounds[:-1], bounds[1:]):
                backend = make_backend(cfg.backend, scene, BackendConfig(
                    num_worlds=b - a, physics_hz=cfg.physics_hz, control_hz=cfg.control_hz, threads=cfg.threads,
                    contact_threshold=cfg.contact_threshold, device=cfg.device))
                self.groups.append(WorldGroup(name, scene, backend, a, b, clip_ids))
            start += size
        self._blocks = [Block(a, b, tuple((g.backend, g.start, g.stop) for g in self.groups if a <= g.start < b))
                        for a, b in zip(cuts[:-1], cuts[1:])]
        self._physics = PhysicsRunner(self._blocks, pipelined=cfg.pipeline)
        self.world_object = torch.cat([
            torch.full((g.size,), lib.object_list.index(g.object_name), dtype=torch.long) for g in self.groups
        ]).to(self.device)
        offset, scale = emb.action_offset_scale(cfg.upstream_action_map)
        self._action_offset = torch.from_numpy(offset).to(self.device)
        self._action_scale = torch.from_numpy(scale).to(self.device)
        self.dt = 1.0 / cfg.control_hz
        self._gen = torch.Generator().manual_seed(int(cfg.seed))
        self.clip = torch.zeros(n, dtype=torch.long, device=self.device)
        self.t = torch.zeros(n, dtype=torch.long, device=self.device)
        self.start_frame = torch.zeros(n, dtype=torch.long, device=self.device)
        self.steps = torch.zeros(n, dtype=torch.long, device=self.device)
        self.active = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.hand_lost = torch.zeros(n, 2, device=self.device)
        self.psi = PSIBuffer(lib.num_frames, emb.initial_state_dim, n, cfg.psi, self.device)
        self.metrics = EpisodeMetrics(lib.num_frames, n, lib.fps, lib.clip_names)
        self.nonfinite_resets = 0
        self.obs = torch.zeros(n, self.num_obs, device=self.device)
        self._prev: PrevVelocities | None = None
        # a world's object never changes (clips must use it), so neither do its surface points
        self._world_points = lib.points[self.world_object]
        self._key_bodies = torch.tensor(emb.key_bodies, dtype=torch.long, device=self.device)
        self._bodies = RewardBodies.of(emb) if self._robot is not None else SMPLX_BODIES
        self._ref_offsets = (0, *cfg.obs_spec.ref_offsets)  # reward/terminations at t, observation at t + d
        # perturbations (sim.perturb): per-world delay, noise and push sizes, redrawn at resets
        # when randomised; the delay line holds the last PD targets of every world
        self._delay = torch.full((n,), pert.action_delay, dtype=torch.long, device=self.device)
        self._noise = torch.full((n,), pert.obs_noise, device=self.device)
        self._push = torch.full((n,), pert.push, device=self.device)
        self._push_every = max(1, int(round(pert.push_interval_s * cfg.control_hz)))
        self._delay_line: Tensor | None = None
        # the compiled step where it applies (sim.fused_step); why not, otherwise
        self.fused_step_fallback = fused_step_applies(cfg, [g.backend for g in self.groups], self.psi.config.enabled)
        self._fused = None if self.fused_step_fallback is not None else FusedStep(
            cfg, lib, [(g.backend, g.start) for g in self.groups], self.world_object, self._bodies,  # type: ignore[misc]
            self.dt, (offset, scale))
        if self._fused is not None:
            self._fused.bind(self.clip, self.t, self.steps, self.active)
        self._no_ids = torch.zeros(0, dtype=torch.long, device=self.device)

    @property
    def fused_step_active(self) -> bool:
        """Whether steps run the compiled CPU path (``config.fused_cpu_step`` and it applies)."""
        return self._fused is not None

    def _skeleton(self, given: Skeleton | None, clips: Sequence[HOIMotion]) -> Skeleton | None:
        """The humanoid: ``given`` when the caller has one (e.g. a subject skeleton fitted to more
        clips than this env gets), else per ``config.skeleton``."""
        if given is not None or self.config.skeleton == "default":
            return given
        try:
            return subject_skeleton(clips)
        except IntermimicError as exc:
            raise EnvError(f"subject skeleton from {len(clips)} clip(s): {exc}") from exc

    @staticmethod
    def _object(name: str, clips: Sequence[HOIMotion], given: Mapping[str, ObjectAsset] | None) -> ObjectAsset:
        if given is not None and name in given:
            return given[name]
        try:
            return load_object(name)
        except IntermimicError as exc:
            users = [m.name or "?" for m in clips if m.object_name == name][:3]
            raise EnvError(f"object {name!r} of clip(s) {users}: {exc}") from exc

    # -- sizes and identity ---------------------------------------------------------------------
    @property
    def num_worlds(self) -> int:
        return self.config.num_worlds

    @property
    def num_obs(self) -> int:
        return self.obs_spec.dim

    @property
    def num_actions(self) -> int:
        return self.embodiment.num_dofs

    @property
    def obs_spec(self) -> ObservationSpec:
        return self.config.obs_spec

    @property
    def humanoid_hash(self) -> str:
        """Content hash of the humanoid this env simulates: what a policy contract names, so a
        deployment refuses a policy trained on another body (objects are not part of it)."""
        if self._robot is not None:
            return self.embodiment.model_hash
        return (self.skeleton or default_skeleton()).content_hash()

    def policy_contract(self, kind: str = "teacher") -> PolicyContract:
        """The deployment contract of a ``kind`` policy trained here (checkpoints store it)."""
        return env_contract(self.config, self.skeleton, kind)  # the config names the robot, if any

    @property
    def model_hash(self) -> str:
        """Content hash of the scene(s): equal hashes, equal physics models."""
        scenes = list(dict.fromkeys((g.object_name, g.scene.content_hash) for g in self.groups))
        if len(scenes) == 1:
            return scenes[0][1]
        text = "\n".join(f"{name}:{digest}" for name, digest in scenes)
        return hashlib.sha256(text.encode()).hexdigest()

    # -- state ----------------------------------------------------------------------------------
    def sim_state(self) -> SimState:
        """The current simulated state of all worlds."""
        return cat_sim_states([g.backend.state() for g in self.groups])

    def reference(self, offset: int = 0, env_ids: Tensor | None = None) -> RefFrame:
        """Each world's reference at its current frame + ``offset`` (clamped to the clip end)."""
        ids = self._ids(env_ids)
        return self.motion_library.frames(self.clip[ids], self.t[ids] + offset)

    def compute_observation(self, sim: SimState | None = None, env_ids: Tensor | None = None) -> Tensor:
        """Observation of worlds ``env_ids`` (default all) from ``sim`` (default the current state)."""
        with torch_threads(self.config.torch_threads, self.device):
            return self._observation(sim, env_ids)

    def _observation(self, sim: SimState | None, env_ids: Tensor | None) -> Tensor:
        ids = self._ids(env_ids)
        state = (sim if sim is not None else self.sim_state())
        if state.num_worlds != ids.numel():
            state = state.index(ids)
        refs = self.motion_library.frames_at_offsets(self.clip[ids], self.t[ids], self.obs_spec.ref_offsets)
        return self.obs_builder.build(state, refs, self._world_points[ids])

    def _ids(self, env_ids: Tensor | None) -> Tensor:
        if env_ids is None:
            return torch.arange(self.num_worlds, device=self.device)
        ids = torch.as_tensor(env_ids, device=self.device).long().reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_worlds):
            raise EnvError(f"world ids must be in [0, {self.num_worlds}), got {ids.tolist()}")
        return ids

    # -- reset ----------------------------------------------------------------------------------
    def reset(self, env_ids: Tensor | None = None, clip_ids: Tensor | None = None,
              start_frames: Tensor | None = None) -> Tensor:
        """Reset worlds ``env_ids`` (default all) and return the observation of ALL worlds.

        ``clip_ids`` / ``start_frames`` pick the clip and frame of each reset world (its clip
        must use the world's object); otherwise they follow ``config.state_init``.
        """
        with torch_threads(self.config.torch_threads, self.device):
            return self._reset(self._ids(env_ids), clip_ids, start_frames)

    def _reset(self, ids: Tensor, clip_ids: Tensor | None, start_frames: Tensor | None) -> Tensor:
        if ids.numel() == 0:
            return self.obs.clone()
        if clip_ids is None:
            clips = self._sample_clips(ids)
        else:
            clips = torch.as_tensor(clip_ids, device=self.device).long().reshape(-1)
            self._check_clips(ids, clips)
        if start_frames is None:
            frames = self._sample_frames(clips)
        else:
            frames = self.motion_library.clamp_frames(
                clips, torch.as_tensor(start_frames, device=self.device).long().reshape(-1))
        self._reset_worlds(ids, clips, frames)
        return self._noisy(self.obs.clone())

    def _check_clips(self, ids: Tensor, clips: Tensor) -> None:
        lib = self.motion_library
        if clips.shape != ids.shape:
            raise EnvError(f"{clips.numel()} clip ids for {ids.numel()} worlds")
        if clips.numel() and (int(clips.min()) < 0 or int(clips.max()) >= lib.num_clips):
            raise EnvError(f"clip ids must be in [0, {lib.num_clips}), got {clips.tolist()}")
        wrong = lib.clip_object[clips] != self.world_object[ids]
        if bool(wrong.any()):
            i = int(torch.nonzero(wrong)[0])
            raise EnvError(f"clip {lib.clip_names[int(clips[i])]!r} uses object "
                           f"{lib.object_names[int(clips[i])]!r}, but world {int(ids[i])} simulates "
                           f"{lib.object_list[int(self.world_object[ids[i]])]!r}")

    def _rand(self, n: int) -> Tensor:
        return torch.rand(n, generator=self._gen).to(self.device)

    def _sample_clips(self, ids: Tensor) -> Tensor:
        """Uniform among the clips of each world's object."""
        clips = torch.empty_like(ids)
        u = self._rand(ids.numel())
        for g in self.groups:
            mine = (ids >= g.start) & (ids < g.stop)
            pick = (u[mine] * g.clip_ids.numel()).long().clamp_max(g.clip_ids.numel() - 1)
            clips[mine] = g.clip_ids.to(self.device)[pick]
        return clips

    def _sample_frames(self, clips: Tensor) -> Tensor:
        cfg, lib = self.config, self.motion_library
        n = clips.numel()
        zeros = torch.zeros(n, dtype=torch.long, device=self.device)
        if cfg.state_init == "start":
            return zeros
        span = (lib.num_frames[clips] - cfg.min_episode_frames).clamp_min(1)
        uniform = (self._rand(n) * span).long().clamp_max(span - 1)
        if cfg.state_init == "random":
            return uniform
        first = self._rand(n) < cfg.hybrid_init_prob
        if cfg.state_init == "hybrid":
            return torch.where(first, zeros, uniform)
        weighted = self.psi.sample_start_frames(clips, generator=self._gen_for(self.psi.device))
        return torch.where(first, zeros, weighted.to(self.device))

    def _gen_for(self, device: torch.device) -> torch.Generator | None:
        return self._gen if device.type == "cpu" else None

    def _initial_states(self, clips: Tensor, frames: Tensor) -> InitialState:
        state = self.motion_library.initial_state(clips, frames)
        if self.config.state_init != "psi":
            return state
        _, flat = self.psi.sample(clips, frames, generator=self._gen_for(self.psi.device),
                                  reference=state.flatten())
        return InitialState.from_flat(flat.to(self.device), self.embodiment.num_joints)

    def _reset_worlds(self, ids: Tensor, clips: Tensor, frames: Tensor) -> None:
        running = ids[self.active[ids]]
        if running.numel():  # episodes cut short by the caller: truncated, not failed; no metrics attempt
            self.psi.on_episode_end(running, self.t[running], torch.zeros_like(running, dtype=torch.bool))
        state = self._initial_states(clips, frames)
        for g in self.groups:
            mine = (ids >= g.start) & (ids < g.stop)
            if bool(mine.any()):
                g.backend.reset(ids[mine] - g.start, state.index(mine))
        self.clip[ids], self.t[ids], self.start_frame[ids] = clips, frames, frames
        self.steps[ids] = 0
        self.hand_lost[ids] = 0.0
        self.active[ids] = True
        sim = self.sim_state()
        if self._prev is None:
            self._prev = PrevVelocities.from_sim(sim)
        else:
            fresh = PrevVelocities.from_sim(sim.index(ids))
            self._prev.joint_ang_vel[ids] = fresh.joint_ang_vel
            self._prev.object_lin_vel[ids] = fresh.object_lin_vel
            self._prev.object_ang_vel[ids] = fresh.object_ang_vel
        self._draw_perturbation(ids)
        self.psi.begin_episode(ids, clips, frames)
        self.psi.record(ids, clips, frames, InitialState.from_sim(sim.index(ids)).flatten())
        self.metrics.begin(ids, clips, frames)
        obs = self._observation(sim.index(ids), ids)
        bad = nonfinite_envs(obs)
        if bad.numel():
            # a reference frame that itself yields NaN cannot be fixed by resetting again
            logger.warning("non-finite observation right after resetting worlds %s (clips %s); zeroed",
                           ids[bad].tolist(), [self.motion_library.clip_names[int(c)] for c in clips[bad]])
            obs[bad] = torch.nan_to_num(obs[bad], nan=0.0, posinf=0.0, neginf=0.0)
        self.obs[ids] = obs

    # -- step -----------------------------------------------------------------------------------
    def action_to_targets(self, actions: Tensor) -> Tensor:
        """Hinge-angle PD targets [N, 153] for actions [N, 153] in [-1, 1] (clamped)."""
        with torch_threads(self.config.torch_threads, self.device):
            return self._action_to_targets(actions)

    def _action_to_targets(self, actions: Tensor) -> Tensor:
        a = actions.to(self.device, torch.float32)
        if self._robot is not None:  # a robot's action map gives hinge angles directly
            return pd_targets(a, self._action_offset, self._action_scale)
        rotvec = pd_targets(a, self._action_offset, self._action_scale).reshape(-1, smplx_body.NUM_JOINTS, 3)
        # = joint_map.hinge_angles_from_rotvec, bit for bit, with the few-op rotation matrix
        return fast.to_euler_xyz(quat.from_rotvec(rotvec)).reshape(-1, smplx_body.NUM_DOFS)

    def targets_to_action(self, joint_rotvec: Tensor) -> Tensor:
        """Actions [N, 153] whose targets are the joint rotation vectors [N, 51, 3] (clamped to [-1, 1])."""
        flat = joint_rotvec.reshape(joint_rotvec.shape[0], -1).to(self.device, torch.float32)
        if self._robot is not None:
            flat = joint_convert.hinge_angles_from_rotvec(self.embodiment, joint_rotvec.to(self.device, torch.float32))
        return actions_for_targets(flat, self._action_offset, self._action_scale)

    def pd_replay_actions(self) -> Tensor:
        """The no-learning baseline: actions whose PD targets are the reference joints at t + 1."""
        if self._fused is not None:
            return self._fused.pd_replay_actions()
        with torch_threads(self.config.torch_threads, self.device):
            return self.targets_to_action(self.motion_library.joint_rotvec(self.clip, self.t + 1))

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """One control step of every world: (obs, reward, terminated, truncated, info).

        Worlds that are not active (ended, with ``auto_reset=False``) still simulate but report
        zero reward and no new ends.
        """
        if self._fused is not None:  # the compiled path: torch threads matter only at episode ends
            return self._step(actions)
        with torch_threads(self.config.torch_threads, self.device):
            return self._step(actions)

    def _step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        n = self.num_worlds
        if tuple(actions.shape) != (n, self.num_actions):
            raise EnvError(f"actions have shape {tuple(actions.shape)}, expected ({n}, {self.num_actions})")
        if self._fused is not None:  # the compiled path (sim.fused_step): the same steps, fewer ops
            return self._fused_step(actions)
        if not bool(torch.isfinite(actions).all()):
            raise EnvError("actions contain NaN or inf")
        if self._prev is None:
            raise EnvError("call reset() before step()")
        targets = self._delayed(self._action_to_targets(actions))
        self._apply_pushes()
        t, steps = self.t + 1, self.steps + 1
        runner = self._physics
        runner.start(targets)
        part = self._torch_part(t, steps)
        self.t.copy_(t)
        self.steps.copy_(steps)
        self.hand_lost = part.hand_lost
        obs, reward, terms, reasons = part.obs, part.reward, part.terms, part.reasons
        e_h, e_o, reset, terminated = part.e_h, part.e_o, part.reset, part.terminated
        bad_obs = reasons["nonfinite_obs"]
        failed = reasons["physics_failure"] | bad_obs
        terminated = terminated | failed
        reset = reset | failed
        live = self.active.clone()
        if bool((bad_obs & live).any()):
            self._count_nonfinite(torch.nonzero(bad_obs & live).flatten())
        reward = torch.where(live & ~failed, torch.nan_to_num(reward, nan=0.0), torch.zeros_like(reward))
        live_ids = torch.nonzero(live).flatten()
        self.metrics.step(e_h, e_o)
        if part.psi_state is not None and live_ids.numel():
            self.psi.record(live_ids, self.clip[live_ids], self.t[live_ids], part.psi_state[live_ids],
                            reward[live_ids])
        self._prev = part.prev
        done = reset & live
        terminated = terminated & live
        truncated = done & ~terminated
        done_ids = torch.nonzero(done).flatten()
        info = self._info(terms, reasons, e_h, e_o, truncated, done_ids)
        self.obs = obs
        if done_ids.numel():
            self._end_episodes(done_ids, terminated, info)
        self.obs = torch.nan_to_num(self.obs, nan=0.0, posinf=0.0, neginf=0.0)
        return self._noisy(self.obs.clone()), reward, terminated, truncated, info

    def _fused_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """:meth:`_step` on the compiled path (``sim.fused_step``): the action map, the per-world
        terms and the per-world part of the bookkeeping are compiled (``t`` and ``steps`` advance in
        place); episode ends and resets run here as on the torch path."""
        assert self._fused is not None
        a = actions.detach().to("cpu", torch.float32).numpy()
        if not np.isfinite(a).all():
            raise EnvError("actions contain NaN or inf")
        if self._prev is None:
            raise EnvError("call reset() before step()")
        targets = self._fused.target_array(a)
        delayed = self._delayed(torch.from_numpy(targets)) if self.config.perturb.action_delay > 0 else None
        self._apply_pushes()
        if delayed is None:
            self._fused.step_physics(targets)  # arrays all the way to MuJoCo
        else:
            self._physics.start(delayed)
        out = self._fused.step(self.hand_lost, self._prev, self.metrics)
        self.hand_lost = out.hand_lost
        self._prev = out.prev
        if out.num_bad_live:
            self._count_nonfinite(torch.nonzero(out.reasons["nonfinite_obs"] & self.active).flatten())
        done_ids = torch.nonzero(out.done).flatten() if out.num_done else self._no_ids
        info = self._info(out.terms, out.reasons, out.e_h, out.e_o, out.truncated, done_ids)
        self.obs = out.obs
        if out.num_done:
            with torch_threads(self.config.torch_threads, self.device):
                self._end_episodes(done_ids, out.terminated, info)
        if out.num_nonfinite_obs:
            self.obs = torch.nan_to_num(self.obs, nan=0.0, posinf=0.0, neginf=0.0)
        return self._noisy(self.obs.clone()), out.reward, out.terminated, out.truncated, info

    def _count_nonfinite(self, bad_ids: Tensor) -> None:
        self.nonfinite_resets += int(bad_ids.numel())
        logger.warning("non-finite observation in worlds %s (clips %s); resetting them", bad_ids.tolist(),
                       [self.motion_library.clip_names[int(c)] for c in self.clip[bad_ids]])

    def _info(self, terms: Mapping[str, Tensor], reasons: Mapping[str, Tensor], e_h: Tensor, e_o: Tensor,
              truncated: Tensor, done_ids: Tensor) -> dict[str, Any]:
        return {"reward_terms": terms, "reasons": reasons, "E_h": e_h, "E_o": e_o, "time_outs": truncated,
                "episode_steps": self.steps.clone(), "frame": self.t.clone(), "clip": self.clip.clone(),
                "done_ids": done_ids}

    def _end_episodes(self, done_ids: Tensor, terminated: Tensor, info: dict[str, Any]) -> None:
        """Close the episodes of ``done_ids`` (PSI, metrics) and, with auto-reset, start new ones."""
        info["terminal_obs"] = self.obs[done_ids].clone()
        end, term = self.t[done_ids], terminated[done_ids]
        self.psi.on_episode_end(done_ids, end, term)
        self.metrics.end(done_ids, end, term)
        self.active[done_ids] = False
        if self.config.auto_reset:
            clips = self._sample_clips(done_ids)
            self._reset_worlds(done_ids, clips, self._sample_frames(clips))

    def _torch_part(self, t: Tensor, steps: Tensor) -> StepPart:
        """The per-world results of the step from the torch terms (``sim.env_step``), block by block."""
        runner = self._physics
        try:
            parts = []
            # the reference side needs no physics: with a pipeline it runs while the worlds step
            ref_sides = [self._reference_side(b.worlds, t) for b in self._blocks]
            for i, (block, ref_side) in enumerate(zip(self._blocks, ref_sides)):
                runner.wait(i)
                parts.append(self._simulated_side(block, ref_side, t, steps))
        finally:
            runner.settle()
        return merge(parts)

    # -- perturbations (sim.perturb) -------------------------------------------------------------
    def _draw_perturbation(self, ids: Tensor) -> None:
        pert = self.config.perturb
        if not pert.randomize:
            return
        u = self._rand(3 * ids.numel()).reshape(3, -1)
        self._delay[ids] = (u[0] * (pert.action_delay + 1)).long().clamp_max(pert.action_delay)
        self._noise[ids] = u[1] * pert.obs_noise
        self._push[ids] = u[2] * pert.push

    def _noisy(self, obs: Tensor) -> Tensor:
        if self.config.perturb.obs_noise <= 0.0:
            return obs
        noise = torch.randn(obs.shape, generator=self._gen).to(self.device)
        return obs + self._noise[:, None] * noise

    def _delayed(self, targets: Tensor) -> Tensor:
        """The PD targets of ``delay`` control steps ago (a world's first steps after a reset
        hold its first targets)."""
        depth = self.config.perturb.action_delay
        if depth <= 0:
            return targets
        if self._delay_line is None:
            self._delay_line = targets[None].repeat(depth + 1, 1, 1)
        line = torch.roll(self._delay_line, 1, dims=0)
        line[0] = targets
        fresh = self.steps == 0
        line[:, fresh] = targets[fresh]
        self._delay_line = line
        return line[self._delay.clamp(0, depth), torch.arange(targets.shape[0], device=self.device)]

    def _apply_pushes(self) -> None:
        """Every ``push_interval_s``, kick the root of live worlds horizontally by ``push`` m/s."""
        if self.config.perturb.push <= 0.0:
            return
        due = self.active & (self.steps > 0) & (self.steps % self._push_every == 0) & (self._push > 0)
        ids = torch.nonzero(due).flatten()
        if ids.numel() == 0:
            return
        angle = self._rand(ids.numel()) * (2.0 * np.pi)
        kick = torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)], -1) * self._push[ids, None]
        state = InitialState.from_sim(self.sim_state().index(ids))
        state.root_lin_vel = state.root_lin_vel + kick.to(state.root_lin_vel)
        for g in self.groups:
            mine = (ids >= g.start) & (ids < g.stop)
            if bool(mine.any()):
                g.backend.reset(ids[mine] - g.start, state.index(mine))

    def _reference_side(self, worlds: slice, t: Tensor) -> ReferenceSide:
        return reference_side(self.motion_library, self.clip[worlds], t[worlds], self.obs_spec.ref_offsets,
                              self._world_points[worlds], self._key_bodies, self.config.termination.ig_floor)

    def _simulated_side(self, block: Block, ref_side: ReferenceSide, t: Tensor, steps: Tensor) -> StepPart:
        w = block.worlds
        groups = [g for g in self.groups if block.start <= g.start < block.stop]
        sim = cat_sim_states([g.backend.state() for g in groups])
        failed = torch.cat([g.backend.failed().to(self.device) for g in groups])
        prev = self._prev
        assert prev is not None
        worlds = WorldsState(
            clip=self.clip[w], t=t[w], steps=steps[w], num_frames=self.motion_library.num_frames[self.clip[w]],
            hand_lost=self.hand_lost[w], points=self._world_points[w], failed=failed,
            prev=PrevVelocities(prev.joint_ang_vel[w], prev.object_lin_vel[w], prev.object_ang_vel[w]))
        return simulated_side(sim, ref_side, worlds, self.config, self.obs_builder, self.dt,
                              record_psi=self.psi.config.enabled, bodies=self._bodies)

    def close(self) -> None:
        self._physics.close()
        for g in self.groups:
            g.backend.close()


def _perturbed_scene(cfg: SceneConfig, asset: ObjectAsset, pert: Any) -> SceneConfig:
    """The scene settings with the object's mass and friction scaled (sim.perturb)."""
    if pert.object_mass == 1.0 and pert.object_friction == 1.0:
        return cfg
    density = (cfg.object_density if cfg.object_density is not None else asset.density) * pert.object_mass
    cfg = dataclasses.replace(cfg, object_density=density)
    if pert.object_friction != 1.0:  # the pair's friction (the humanoid's 0.9 wins unscaled), scaled
        base = cfg.object_friction if cfg.object_friction is not None else asset.friction
        cfg = dataclasses.replace(cfg, object_friction=max(base, mjcf.FRICTION[0]) * pert.object_friction,
                                  object_friction_priority=True)
    return cfg


def motion_state_at(motion: HOIMotion, frame: int) -> InitialState:
    """One clip frame as a one-world ``InitialState`` (for backends used without an env)."""
    def row(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(a[frame:frame + 1], dtype=np.float32))  # a copy: callers may edit it

    return InitialState(row(motion.root_pos), row(motion.root_rot), row(motion.root_lin_vel),
                        row(motion.root_ang_vel), row(motion.joint_rotvec), row(motion.joint_ang_vel),
                        row(motion.object_pos), row(motion.object_rot), row(motion.object_lin_vel),
                        row(motion.object_ang_vel))
