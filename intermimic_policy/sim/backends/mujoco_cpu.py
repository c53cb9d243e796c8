"""The default backend: N MuJoCo worlds of one scene on CPU threads (``mujoco.batch.Batch``).

Why ``mujoco.batch`` (MuJoCo >= 4.0): it steps every world on its own C thread pool with the GIL
released, keeps one ``MjData`` per world (``persistent=True``: solver warm starts and contacts
survive between calls), and exposes state and derived fields as live ``[N, ...]`` numpy arrays,
so reset and state extraction are batched array ops with no per-world Python loop.
``benchmarks/bench_env.py`` compares it with ``mujoco.rollout`` and with a thread pool over
``MjData`` + ``mj_step``: all three step at the same physics rate here (the physics dominates),
and only the batch hands back derived fields without a per-world loop.

Timing: a control step is ``substeps`` calls of ``mj_step`` with the PD targets held (PD runs in
the position actuators at physics rate), then the position and velocity stages at the new state
(``mjSTAGE_VEL``, free in a persistent batch), so positions and velocities are current. Contact
sensors are acceleration-stage quantities: they describe the last physics substep (1/240 s
earlier), the contact the body felt during that substep, as upstream's net contact force tensor
does. After a reset the full ``mj_forward`` runs, so the first observation is never stale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch
from mujoco import batch as mjbatch
from torch import Tensor

from intermimic_policy.sim.backends.base import (
    BackendConfig,
    BackendError,
    StateIndex,
    check_targets,
    extract_state,
    instrument_scene,
    reset_vectors,
    sorted_env_ids,
    validate_reset_state,
)
from intermimic_policy.state.frames import InitialState, SimState


@dataclass(frozen=True)
class RawState:
    """A backend's raw per-world MuJoCo arrays ([N, ...] float64 numpy, live views)."""

    xpos: np.ndarray
    xquat: np.ndarray
    cvel: np.ndarray
    subtree_com: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    sensordata: np.ndarray
    failed: np.ndarray  # [N] bool, this step's physics failures


# warnings after which a world's state is not trustworthy (MuJoCo resets such a world itself)
_UNSTABLE = np.array([int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                              mujoco.mjtWarning.mjWARN_BADQACC)])


def as_slice(ids: np.ndarray) -> slice | np.ndarray:
    """``ids`` as a slice when they are consecutive (a view, no gather on every step), else as is."""
    ids = np.asarray(ids)
    if ids.ndim == 1 and ids.size and np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
        return slice(int(ids[0]), int(ids[0]) + ids.size)
    return ids


def default_threads(num_worlds: int) -> int:
    return max(1, min(num_worlds, os.cpu_count() or 1))


class MujocoCPUBackend:
    """N worlds of one scene, stepped by ``mujoco.batch.Batch`` on ``threads`` threads."""

    name = "mujoco"

    def __init__(self, scene: Any, config: BackendConfig) -> None:
        self.config = config
        self.num_worlds = config.num_worlds
        self.substeps = config.substeps
        self.physics_dt = 1.0 / config.physics_hz
        self.control_dt = 1.0 / config.control_hz
        self.device = torch.device(config.device)
        self.model_hash = str(getattr(scene, "content_hash", ""))
        self.model, self.layout = instrument_scene(scene, physics_dt=self.physics_dt)
        self.threads = config.threads or default_threads(self.num_worlds)
        self.batch = mjbatch.Batch(self.model, self.num_worlds, nthread=self.threads, persistent=True)
        b = self.batch
        self._qpos, self._qvel, self._ctrl = b.bind("qpos"), b.bind("qvel"), b.bind("ctrl")
        self._warmstart, self._time = b.bind("qacc_warmstart"), b.bind("time")
        self._outputs = {name: b.bind(name) for name in ("xpos", "xquat", "cvel", "subtree_com", "sensordata")}
        self._index = StateIndex(self.layout, torch.device("cpu"))
        self._actuators = as_slice(self.layout.actuator_ids)
        self._unstable = as_slice(_UNSTABLE)
        self._failed = np.zeros(self.num_worlds, dtype=bool)
        self._warning_counts = np.asarray(b.warning)  # live [N, warnings, 2] (index, count) view
        b.reset()  # model defaults (standing pose) + mj_forward
        self._ctrl[:, self._actuators] = self._qpos[:, self.layout.joint_qpos_adr]
        self._warnings = self._unstable_counts()

    def _unstable_counts(self) -> np.ndarray:
        return self._warning_counts[:, self._unstable, 1].sum(-1)  # (a new array: the counts are live)

    def reset(self, env_ids: Tensor, state: InitialState) -> None:
        ids, order = sorted_env_ids(env_ids, self.num_worlds)
        if ids.size == 0:
            return
        validate_reset_state(state, len(ids), self.layout.body.num_joints)
        qpos, qvel, ctrl = reset_vectors(self.layout, state.index(order))
        self._qpos[ids] = qpos.numpy()
        self._qvel[ids] = qvel.numpy()
        self._ctrl[ids] = ctrl.numpy()
        self._warmstart[ids] = 0.0
        self._time[ids] = 0.0
        try:
            self.batch.forward(ids)
        except mjbatch.SimulationError as exc:
            raise BackendError(f"MuJoCo rejected the reset state of worlds {exc.ids.tolist()}: {exc}") from exc
        self._failed[ids] = False
        self._warnings = self._unstable_counts()

    def step(self, pd_targets: Tensor) -> None:
        check_targets(pd_targets, self.num_worlds, self.layout.body.num_dofs)
        self.step_array(pd_targets.detach().to("cpu", torch.float64).numpy())

    def step_array(self, targets: np.ndarray) -> None:
        """:meth:`step` from hinge targets [N, dofs] as a float64 array (what ``sim.fused_step``
        computes): no tensor on the way."""
        if targets.shape != (self.num_worlds, self.layout.body.num_dofs):
            raise BackendError(f"PD targets have shape {targets.shape}, expected "
                               f"({self.num_worlds}, {self.layout.body.num_dofs})")
        if not np.isfinite(targets).all():
            raise BackendError("PD targets contain NaN or inf")
        self._ctrl[:, self._actuators] = targets
        self._failed[:] = False
        try:
            self.batch.step(nstep=self.substeps, stage=mujoco.mjtStage.mjSTAGE_VEL)
        except mjbatch.SimulationError as exc:  # those worlds keep their previous state
            self._failed[exc.ids] = True
        counts = self._unstable_counts()
        self._failed |= counts > self._warnings
        self._warnings = counts

    def failed(self) -> Tensor:
        return torch.from_numpy(self._failed.copy()).to(self.device)

    def state(self) -> SimState:
        raw = {k: torch.from_numpy(np.array(v)) for k, v in self._outputs.items()}
        s = extract_state(
            self._index,
            xpos=raw["xpos"], xquat=raw["xquat"], cvel=raw["cvel"], subtree_com=raw["subtree_com"],
            qpos=torch.from_numpy(np.array(self._qpos)), qvel=torch.from_numpy(np.array(self._qvel)),
            sensordata=raw["sensordata"], contact_threshold=self.config.contact_threshold,
        )
        return s if self.device.type == "cpu" else s.to(self.device)

    def raw_state(self) -> RawState:
        """The simulator's live arrays (views, rewritten by every step) and the failure flags:
        what ``sim.fused_step`` reads instead of :meth:`state`."""
        o = self._outputs
        return RawState(o["xpos"], o["xquat"], o["cvel"], o["subtree_com"], self._qpos, self._qvel, o["sensordata"],
                        self._failed)

    def get_data(self, world: int) -> mujoco.MjData:
        """World ``world``'s full ``MjData`` (a copy): for rendering and debugging."""
        return self.batch.get_data(int(world))

    def close(self) -> None:
        self.batch = None  # type: ignore[assignment]
