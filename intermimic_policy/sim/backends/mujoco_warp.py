"""The same backend on MuJoCo Warp: thousands of worlds on a GPU, or a few on Warp's CPU device.

It compiles the same instrumented scene as the CPU backend (:func:`instrument_scene`), keeps every
world in one ``mujoco_warp.Data``, and reads state through zero-copy torch views of Warp's arrays
(``wp.to_torch``), so state extraction is the same torch code on the same device.

Timing matches the CPU backend exactly: after a reset the full forward pass runs; a control step
is ``substeps`` rounds of ``step2`` (actuation, constraint solve, acceleration-stage sensors,
integration) then ``step1`` (position and velocity stages at the new state). ``step1`` zeroes
the sensor array, so the contact sensors of the last substep are copied aside before it.

Physics is float32 here (float64 on the CPU backend) and the solvers differ in detail, so
trajectories agree closely but not bitwise; ``tests/test_backends.py`` measures how closely.
On a CUDA device the substep loop is captured once as a CUDA graph and replayed (launching
hundreds of small kernels per substep from Python would dominate otherwise). That path follows
MuJoCo Warp's own benchmark script but is not exercised by this repository's CPU-only tests.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import torch
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

# Per-world capacities. A standing humanoid makes ~8-16 contacts, one holding a multi-hull table
# up to ~60; pyramidal condim-3 contacts take 4 constraint rows each, plus finger joint limits.
DEFAULT_NCONMAX = 192
DEFAULT_NJMAX = 1024


def _import_warp() -> tuple[Any, Any]:
    try:
        import mujoco_warp as mjw
        import warp as wp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError("backend 'warp' needs the optional packages mujoco-warp and warp-lang "
                           "(pip install 'intermimic[warp]')") from exc
    return wp, mjw


class MujocoWarpBackend:
    """N worlds of one scene in MuJoCo Warp, on ``config.device`` ("cpu" or "cuda:K")."""

    name = "warp"

    def __init__(
        self,
        scene: Any,
        config: BackendConfig,
        nconmax: int = DEFAULT_NCONMAX,
        njmax: int = DEFAULT_NJMAX,
        cuda_graph: bool = True,
    ) -> None:
        wp, mjw = _import_warp()
        self._wp, self._mjw = wp, mjw
        self.config = config
        self.num_worlds = config.num_worlds
        self.substeps = config.substeps
        self.physics_dt = 1.0 / config.physics_hz
        self.control_dt = 1.0 / config.control_hz
        self.device = torch.device(config.device)
        self.model_hash = str(getattr(scene, "content_hash", ""))
        self.model, self.layout = instrument_scene(scene, physics_dt=self.physics_dt)
        wp.config.log_level = max(int(wp.config.log_level), int(wp.LOG_WARNING))  # no per-kernel load lines
        wp.init()
        self._wp_device = wp.get_device(str(self.device) if self.device.type == "cuda" else "cpu")
        if self.device.type == "cuda" and not self._wp_device.is_cuda:  # pragma: no cover
            raise BackendError(f"Warp cannot use device {self.device}")
        data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, data)
        with wp.ScopedDevice(self._wp_device):
            self.m = mjw.put_model(self.model)
            self.d = mjw.put_data(self.model, data, nworld=self.num_worlds, nconmax=nconmax, njmax=njmax)
            self._contacts = wp.zeros_like(self.d.sensordata)
        self._use_graph = cuda_graph and self._wp_device.is_cuda
        self._graph: Any = None
        t = wp.to_torch
        self._qpos, self._qvel, self._ctrl = t(self.d.qpos), t(self.d.qvel), t(self.d.ctrl)
        self._warmstart = t(self.d.qacc_warmstart)
        self._views = {k: t(getattr(self.d, k)) for k in ("xpos", "xquat", "cvel", "subtree_com")}
        self._sensors = t(self._contacts)
        self._index = StateIndex(self.layout, self.device)
        self._actuators = torch.as_tensor(np.array(self.layout.actuator_ids), device=self.device)
        self._failed = torch.zeros(self.num_worlds, dtype=torch.bool, device=self.device)
        self._ctrl[:, self._actuators] = self._qpos[:, torch.as_tensor(np.array(self.layout.joint_qpos_adr), device=self.device)]
        self._forward()

    def _forward(self) -> None:
        with self._wp.ScopedDevice(self._wp_device):
            self._mjw.forward(self.m, self.d)
            self._wp.copy(self._contacts, self.d.sensordata)

    def _substeps(self) -> None:
        wp, mjw = self._wp, self._mjw
        for i in range(self.substeps):
            mjw.step2(self.m, self.d)
            if i == self.substeps - 1:
                wp.copy(self._contacts, self.d.sensordata)
            mjw.step1(self.m, self.d)

    def reset(self, env_ids: Tensor, state: InitialState) -> None:
        ids, order = sorted_env_ids(env_ids, self.num_worlds)
        if ids.size == 0:
            return
        validate_reset_state(state, len(ids), self.layout.body.num_joints)
        qpos, qvel, ctrl = reset_vectors(self.layout, state.index(order))
        rows = torch.as_tensor(ids.astype(np.int64), device=self.device)
        dtype = self._qpos.dtype
        self._qpos[rows] = qpos.to(self.device, dtype)
        self._qvel[rows] = qvel.to(self.device, dtype)
        self._ctrl[rows] = ctrl.to(self.device, dtype)
        self._warmstart[rows] = 0.0
        self._forward()  # every world: the others keep their state, their derived fields are recomputed
        self._failed[rows] = False

    def step(self, pd_targets: Tensor) -> None:
        check_targets(pd_targets, self.num_worlds, self.layout.body.num_dofs)
        targets = pd_targets.detach().to(self.device, self._ctrl.dtype)
        if not torch.isfinite(targets).all():
            raise BackendError("PD targets contain NaN or inf")
        self._ctrl[:, self._actuators] = targets
        wp = self._wp
        with wp.ScopedDevice(self._wp_device):
            if not self._use_graph:
                self._substeps()
            else:  # pragma: no cover - needs a CUDA device
                if self._graph is None:
                    with wp.ScopedCapture(device=self._wp_device) as capture:
                        self._substeps()
                    self._graph = capture.graph
                wp.capture_launch(self._graph)
        # Warp has no per-world error channel: flag worlds whose state stopped being finite
        self._failed = ~(torch.isfinite(self._qpos).all(-1) & torch.isfinite(self._qvel).all(-1))

    def failed(self) -> Tensor:
        return self._failed.clone()

    def state(self) -> SimState:
        if self.device.type == "cpu":
            self._wp.synchronize_device(self._wp_device)
        v = self._views
        return extract_state(
            self._index, xpos=v["xpos"], xquat=v["xquat"], cvel=v["cvel"], subtree_com=v["subtree_com"],
            qpos=self._qpos, qvel=self._qvel, sensordata=self._sensors,
            contact_threshold=self.config.contact_threshold,
        )

    def close(self) -> None:
        self._graph = None
