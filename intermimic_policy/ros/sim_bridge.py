"""The simulation bridge node: the training environment's physics, driven by PD targets over ROS.

What it runs is ``HOIEnv`` itself (one world, the same scene, backend, rates and reset path as
training and evaluation), reset to the clip's reference state at ``start_offset``. What it does
not run is the environment's action map: the policy node already turned actions into hinge-angle
PD targets, so the bridge hands them straight to the backend, whose position actuators do PD at
physics rate (240 Hz) for one control tick.

Each tick it publishes, with one stamp (the tick's sim time): ``/clock``, the humanoid state
(``JointState`` with the 153 hinge DOFs, ``Odometry`` for the root), the object pose
(``PoseStamped``) and the contacts (``ContactState``). After each step it records E_h / E_o
against the reference frame of the new tick with the same metric code as training
(``sim.metrics.step_errors``), and on exit writes them with the trajectory (``--record``:
an ``.npz`` that is also a valid clip for ``intermimic replay``) and a summary (``--summary``).

Timing:

* lockstep: sim time advances only when targets stamped with the current tick's stamp arrive,
  so a run is deterministic whatever the machine's load. While waiting, the tick's ``/clock`` is
  re-sent every ``republish_s`` (the streamer re-sends its window on it), and its state at once
  when a new subscriber matches (a late or restarted policy node) and otherwise with a backoff
  from ``republish_s`` doubling to ``republish_max_s``: a policy node that waits on another
  input (a dead reference stream) must see the tick's state age, or its watchdog never fires.
  ``lockstep_timeout_s`` > 0 steps on with the last targets after that long (a missed tick).
* real time: after the first targets arrive, steps at the control rate on the wall clock with
  the newest targets; a tick with no fresh targets since the previous one counts as missed.

Before the first targets arrive the simulation does not advance: it holds the initial pose.

Gains: the simulated actuators are the model's position actuators with ``smplx_body``'s gains,
the physics training used. ``PDTargets`` gains that differ (e.g. the policy node's extra
damping while holding) and non-zero velocity / effort terms cannot be applied per tick without
leaving that physics; they are counted (``gain_overrides_ignored``, ``feedforward_ignored``)
and logged once.

Run: ``intermimic_sim_bridge --config config/sim_hoi.yaml [--clip CLIP | --example] [--lockstep]
[--duration S] [--record FILE.npz] [--summary FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intermimic_policy.atomic import atomic_output
from intermimic_policy.embodiment import joint_convert
from intermimic_policy.embodiment.smplx_body import PHYSICS_HZ, dof_arrays
from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.hoi_motion import ARRAY_FIELDS, HOIMotion
from intermimic_policy.motion.npz_format import FORMAT_TAG, FORMAT_VERSION
from intermimic_policy.motion.validate import validate_motion
from intermimic_policy.ros import node_params
from intermimic_policy.ros.messages_convert import (
    BASE_FRAME,
    WORLD_FRAME,
    TargetSample,
    load_clip,
    parse_pd_targets,
    pd_targets_order,
    state_messages,
)
from intermimic_policy.ros.msgs import time_from_ns
from intermimic_policy.ros.msgs.diagnostic_msgs import DiagnosticArray, DiagnosticStatus
from intermimic_policy.ros.msgs.geometry_msgs import PoseStamped
from intermimic_policy.ros.msgs.intermimic_msgs import ContactState, PDTargets
from intermimic_policy.ros.msgs.nav_msgs import Odometry
from intermimic_policy.ros.msgs.rosgraph_msgs import Clock
from intermimic_policy.ros.msgs.sensor_msgs import JointState
from intermimic_policy.ros.node_common import NodeLifetime, status_array
from intermimic_policy.ros.node_main import StopFlag, add_common_arguments, exit_process, run_main
from intermimic_policy.ros.node_state import MessageRejected, NonFiniteInput
from intermimic_policy.ros.topics import Topics, validate_prefix
from intermimic_policy.sim.metrics import step_errors
from intermimic_policy.sim.state import SimState

logger = logging.getLogger("intermimic.ros.sim_bridge")

SECTION = "sim_bridge"
STATUS_NAME = "intermimic/sim_bridge"
LATENCY_WINDOW = 4096


# -- configuration ---------------------------------------------------------------------------------
# one topic table for every node (``ros.topics``); the old name stays for callers
BridgeTopics = Topics


@dataclass(frozen=True)
class SimBridgeConfig:
    """The ``sim_bridge`` section (plus the ``common`` keys it shares with the other nodes)."""

    clip: str = ""  # clip file (any format load_motion reads); "" with example: the bundled clip
    example: bool = False
    start_offset: int = 0  # clip frame the simulation is reset to (the streamer starts there too)
    loop: bool = False  # the reference of tick k wraps around the clip (as the streamer's loop)
    lockstep: bool = False
    domain_id: int | None = None
    transport: str = "auto"
    node_name: str = "sim_bridge"
    namespace: str = "/"
    backend: str = "mujoco"  # HOIEnv backend
    threads: int = 1  # simulator threads (one world)
    physics_hz: float = PHYSICS_HZ  # PD and physics rate, as in training (smplx_body, defined once)
    control_hz: float = 0.0  # 0: the clip's frame rate (the policy runs at the data rate)
    # the policy the launch runs (``common.policy``): its contract must declare this bridge's rates,
    # else the bridge refuses to start (a policy trained at 120 Hz physics does not run at 240)
    policy: str = ""
    object_density: float | None = None  # None: the object asset's (as the training default)
    # robustness settings (sim.perturb), "KEY=VALUE,KEY=VALUE": object_mass, object_friction,
    # floor_friction scales and action_delay (ticks the targets wait); obs noise and pushes are
    # `intermimic eval --perturb` settings
    perturb: str = ""
    # Sim time of tick 0. Not 0: a zero stamp means "unstamped" to ROS tools and to the policy
    # node's stamp matching, and every state message must carry its tick's stamp.
    clock_start_s: float = 1.0
    republish_s: float = 0.1  # wall seconds between re-sends of the clock (and state) while waiting
    republish_max_s: float = 2.0  # lockstep: the state re-send backoff doubles up to this
    lockstep_timeout_s: float = 0.0  # > 0: step on with the last targets after this wait (missed)
    duration_s: float = 0.0  # sim seconds to run, then stop stepping; 0: until stopped
    # after duration_s: exit (true), or keep publishing the last state until stopped (a launcher
    # reads the other nodes' final status while their inputs are still fresh)
    exit_when_done: bool = True
    record: str = ""  # .npz to write the per-tick errors and the trajectory to on exit
    summary: str = ""  # .json to write the run's summary to on exit
    status_hz: float = 2.0
    world_frame: str = WORLD_FRAME
    base_frame: str = BASE_FRAME
    # real time: targets older than this make the bridge hold the measured pose (a robot's
    # command watchdog); 0 disables. Lockstep never steps without targets, so it never applies.
    targets_timeout_s: float = 0.25
    topic_prefix: str = ""  # prepended to every topic name (two runs on one host never cross)
    topics: Topics = field(default_factory=Topics)
    # the body simulated: "" = the SMPL-X humanoid; a robot name (config/robots/<name>.yaml), whose
    # clip is a retargeted robot motion; JointState / PDTargets then carry that robot's joints
    robot: str = ""

    def validate(self, source: str = "sim bridge config") -> SimBridgeConfig:
        def bad(key: str, why: str) -> node_params.ParamError:
            return node_params.ParamError(f"{source}: {SECTION}.{key} {why}")

        if bool(self.clip) == self.example:
            raise bad("clip", "and example: give exactly one clip (common.clip, --clip) or example: true")
        if self.start_offset < 0:
            raise bad("start_offset", f"must be >= 0, got {self.start_offset}")
        for key in ("physics_hz", "status_hz", "republish_s", "republish_max_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise bad(key, f"must be a positive number, got {value}")
        why = validate_prefix(self.topic_prefix)
        if why:
            raise bad("topic_prefix", why)
        for key in ("control_hz", "lockstep_timeout_s", "duration_s", "clock_start_s", "targets_timeout_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise bad(key, f"must be a finite number >= 0, got {value}")
        if self.threads < 1:
            raise bad("threads", f"must be >= 1, got {self.threads}")
        try:
            pert = self.perturbation()
        except IntermimicError as exc:
            raise bad("perturb", f"is not usable: {exc}") from exc
        if pert.obs_noise or pert.push:
            raise bad("perturb", "supports object_mass, object_friction, floor_friction and action_delay; "
                                 "obs_noise and push are evaluated by `intermimic eval --perturb`")
        for key in ("record", "summary"):
            path = getattr(self, key)
            if path and not Path(path).parent.is_dir() and str(Path(path).parent) != "":
                raise bad(key, f"names a file in a folder that does not exist: {path}")
        return self


    def perturbation(self) -> Any:
        from intermimic_policy.sim.perturb import parse_perturb

        return parse_perturb([p for p in self.perturb.split(",") if p.strip()])


def load_bridge_config(path: str | None, **overrides: Any) -> SimBridgeConfig:
    return node_params.load_params(path, SECTION, SimBridgeConfig, **overrides)


def _lift_and_height(recording: Recording) -> dict[str, float]:
    """How high the object got above where it started (cm) and the lowest root height (m)."""
    if not len(recording):
        return {"object_lift_cm": float("nan"), "root_height_min_m": float("nan")}
    return {"object_lift_cm": float((recording.object_z_max - recording.object_z0) * 100.0),
            "root_height_min_m": float(recording.root_z_min)}


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


# -- the simulation --------------------------------------------------------------------------------
@dataclass
class Recording:
    """One row per simulated state: tick 0 (the reset) and every tick after a step.

    The per-tick series are compact arrays (8 bytes a value, not a Python float each) and the
    summary's extremes are kept as running values, so a long run without ``record`` grows by
    ~1.4 KB a second at 30 Hz; full state copies (``states``) only when a record is asked for.
    """

    time_s: array[float] = field(default_factory=lambda: array("d"))
    frame: array[int] = field(default_factory=lambda: array("q"))
    e_h: array[float] = field(default_factory=lambda: array("d"))
    e_o: array[float] = field(default_factory=lambda: array("d"))
    fresh: array[int] = field(default_factory=lambda: array("b"))
    round_trip_ms: array[float] = field(default_factory=lambda: array("d"))
    states: list[dict[str, np.ndarray]] = field(default_factory=list)
    object_z0: float = float("nan")
    object_z_max: float = -math.inf
    root_z_min: float = math.inf

    def __len__(self) -> int:
        return len(self.time_s)


def check_policy_rates(config: SimBridgeConfig, control_hz: float) -> None:
    """Refuse a policy whose contract declares other rates than this bridge runs (its own config)."""
    if not config.policy or not Path(config.policy).is_file():
        return  # no policy to check here (the policy node refuses a missing file, naming it)
    from intermimic_policy.runtime.base import read_policy_file

    contract = read_policy_file(config.policy).contract
    own = f"robot:{config.robot}" if config.robot else "smplx_humanoid"
    if contract.embodiment != own:
        raise node_params.ParamError(f"{SECTION}: policy {config.policy} drives {contract.embodiment!r}, this "
                                     f"bridge simulates {own!r} (sim_bridge.robot)")
    wrong = [f"{name}: the policy declares {declared:g} Hz, this bridge runs {own:g} Hz"
             for name, declared, own in (("physics_hz", contract.physics_hz, config.physics_hz),
                                         ("control_hz", contract.control_hz, control_hz))
             if abs(float(declared) - float(own)) > 1e-9 * max(1.0, abs(float(own)))]
    if wrong:
        raise node_params.ParamError(f"{SECTION}: policy {config.policy} does not fit this bridge: " + "; ".join(wrong))


class BridgeCore:
    """The simulation side of the bridge, with no transport: reset, step with targets, measure."""

    def __init__(self, motion: HOIMotion, config: SimBridgeConfig) -> None:
        from intermimic_policy.sim.env import HOIEnv
        from intermimic_policy.sim.env_config import eval_config

        self.config = config
        self.motion = motion
        if config.start_offset >= motion.num_frames:
            raise node_params.ParamError(f"{SECTION}.start_offset {config.start_offset} is past the clip's "
                                         f"last frame {motion.num_frames - 1}")
        self.control_hz = config.control_hz or float(motion.fps)
        # the simulated trajectory is kept only when it is asked for (a 30-min soak with a duration
        # kept ~0.2 MB a second of state copies nobody read: the summary needs running extremes)
        self.keep_states = bool(config.record)
        check_policy_rates(config, self.control_hz)
        from intermimic_policy.motion.robot_motion import RobotMotion

        if isinstance(motion, RobotMotion) != bool(config.robot):
            raise node_params.ParamError(
                f"{SECTION}: clip {motion.name or '?'} is " + (f"a robot motion ({motion.robot})" if isinstance(
                    motion, RobotMotion) else "an SMPL-X clip") + ", the bridge simulates "
                + (f"robot {config.robot!r}" if config.robot else "the SMPL-X humanoid (set sim_bridge.robot)"))
        env_config = eval_config(num_worlds=1, backend=config.backend, threads=config.threads,
                                 physics_hz=config.physics_hz, control_hz=self.control_hz,
                                 object_density=config.object_density,
                                 perturb=config.perturbation(), robot=config.robot or None)
        self.env = HOIEnv(env_config, [motion])
        self.embodiment = self.env.embodiment
        self._delay_line: list[np.ndarray] = []  # targets waiting out perturb action_delay
        self.backend = self.env.groups[0].backend
        self._clip = torch.zeros(1, dtype=torch.long)
        self.points = self.env.motion_library.points_of(self._clip)
        if config.robot:
            kp, kd = self.embodiment.kp, self.embodiment.kd
        else:
            kp, kd, _, _ = dof_arrays()
        self.model_kp, self.model_kd = np.asarray(kp, np.float64), np.asarray(kd, np.float64)
        self.tick = 0
        self.physics_failures = 0
        self.recording = Recording()
        self.reset()

    # -- time ---------------------------------------------------------------------------------
    def frame_of_tick(self, tick: int) -> int:
        """The reference frame tick ``tick`` tracks (wrapping with ``loop``, else clamped)."""
        f = self.config.start_offset + tick
        n = self.motion.num_frames
        return f % n if self.config.loop else min(f, n - 1)

    def stamp_ns(self, tick: int | None = None) -> int:
        k = self.tick if tick is None else tick
        return int(round(self.config.clock_start_s * 1e9)) + int(round(k * 1e9 / self.control_hz))

    # -- state --------------------------------------------------------------------------------
    def reset(self, frame: int | None = None) -> None:
        """Put the world into the reference state of ``frame`` (default: ``start_offset``, tick 0)."""
        start = self.config.start_offset if frame is None else frame
        self.env.reset(env_ids=torch.zeros(1, dtype=torch.long), clip_ids=self._clip,
                       start_frames=torch.tensor([start]))
        self._refresh()
        if frame is None:
            self.tick = 0
            self.recording = Recording()
            self._record(fresh=False, round_trip_ms=float("nan"))
        self.targets = self.angles.copy()  # hold the initial pose until targets arrive
        self._delay_line = []

    def _refresh(self) -> None:
        self.sim: SimState = self.env.sim_state()
        get_data = getattr(self.backend, "get_data", None)
        layout = getattr(self.backend, "layout", None)
        if get_data is not None and layout is not None:
            data = get_data(0)  # the simulator's own hinge coordinates, not a round trip
            self.angles = np.array(data.qpos[layout.joint_qpos_adr], dtype=np.float64)
            self.rates = np.array(data.qvel[layout.joint_qvel_adr], dtype=np.float64)
        else:
            emb = self.embodiment
            angles = joint_convert.hinge_angles_from_rotvec(emb, self.sim.joint_rotvec[:1].double())
            rates = joint_convert.hinge_rates_from_angular_velocity(emb, angles, self.sim.joint_ang_vel[:1].double())
            self.angles, self.rates = angles[0].numpy(), rates[0].numpy()

    def errors(self) -> tuple[float, float]:
        """(E_h, E_o) in metres of the current state against the current tick's reference frame."""
        ref = self.env.motion_library.frames(self._clip, torch.tensor([self.frame_of_tick(self.tick)]))
        e_h, e_o = step_errors(self.sim, ref, self.points, key_bodies=self.embodiment.key_bodies)
        return float(e_h[0]), float(e_o[0])

    def _record(self, fresh: bool, round_trip_ms: float) -> None:
        e_h, e_o = self.errors()
        r = self.recording
        r.time_s.append(self.stamp_ns() * 1e-9)
        r.frame.append(self.frame_of_tick(self.tick))
        r.e_h.append(e_h)
        r.e_o.append(e_o)
        r.fresh.append(fresh)
        r.round_trip_ms.append(round_trip_ms)
        s = self.sim
        object_z, root_z = float(s.object_pos[0, 2]), float(s.body_pos[0, 0, 2])
        if len(r) == 1:
            r.object_z0 = object_z
        r.object_z_max, r.root_z_min = max(r.object_z_max, object_z), min(r.root_z_min, root_z)
        if not self.keep_states:
            return  # no --record: no per-tick copies of the state (soak: no growth)
        r.states.append({
            "body_pos": s.body_pos[0].numpy().copy(), "body_rot": s.body_rot[0].numpy().copy(),
            "joint_rotvec": s.joint_rotvec[0].numpy().copy(), "object_pos": s.object_pos[0].numpy().copy(),
            "object_rot": s.object_rot[0].numpy().copy(), "contact": s.body_contact[0].numpy().copy(),
            "object_contact": s.body_object_contact[0].numpy().copy(), "joint_pos": self.angles.copy(),
        })

    def state_messages(self) -> Any:
        c = self.config
        return state_messages(self.sim, self.angles, self.rates, self.stamp_ns(), 0, c.world_frame, c.base_frame,
                              self.embodiment if c.robot else None)

    # -- stepping -----------------------------------------------------------------------------
    def step(self, targets: np.ndarray | None, fresh: bool = True, round_trip_ms: float = float("nan")) -> None:
        """One control tick holding ``targets`` (hinge angles [153]; None: the previous ones)."""
        if targets is not None:
            self.targets = np.asarray(targets, dtype=np.float64)
        applied = self.targets
        delay = self.env.config.perturb.action_delay
        if delay:
            self._delay_line.append(self.targets)
            applied = self._delay_line[0]  # the targets of `delay` ticks ago (the first ones until then)
            del self._delay_line[:-delay]
        self.backend.step(torch.from_numpy(applied).unsqueeze(0))
        self.tick += 1
        if bool(self.backend.failed()[0]):
            self.physics_failures += 1
            logger.error("physics became unstable at tick %d; resetting to the reference frame %d",
                         self.tick, self.frame_of_tick(self.tick))
            self.reset(self.frame_of_tick(self.tick))
        else:
            self._refresh()
        self._record(fresh, round_trip_ms)

    # -- results ------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Mean / max E_h and E_o over the stepped ticks (cm), as evaluation averages per step."""
        e_h = np.asarray(self.recording.e_h[1:]) * 100.0
        e_o = np.asarray(self.recording.e_o[1:]) * 100.0

        def stat(x: np.ndarray, fn: Callable[[np.ndarray], Any]) -> float:
            return float(fn(x)) if x.size else float("nan")

        return {"E_h_cm": stat(e_h, np.mean), "E_o_cm": stat(e_o, np.mean),
                "E_h_cm_max": stat(e_h, np.max), "E_o_cm_max": stat(e_o, np.max)}

    def recorded_motion(self) -> HOIMotion:
        """The simulated trajectory as a clip (contact labels: +1 in contact, -1 not)."""
        r = self.recording
        if not r.states:
            raise IntermimicError("sim_bridge: no trajectory was kept (set record)")
        st = {k: np.stack([s[k] for s in r.states]) for k in r.states[0]}
        if self.config.robot:
            return self._recorded_robot_motion(st)  # type: ignore[return-value]
        contact = np.where(st["contact"], 1, -1).astype(np.int8)
        motion = HOIMotion(
            fps=self.control_hz, root_pos=st["body_pos"][:, 0].astype(np.float32),
            root_rot=st["body_rot"][:, 0].astype(np.float32), joint_rotvec=st["joint_rotvec"].astype(np.float32),
            body_pos=st["body_pos"].astype(np.float32), body_rot=st["body_rot"].astype(np.float32),
            object_pos=st["object_pos"].astype(np.float32), object_rot=st["object_rot"].astype(np.float32),
            object_name=self.motion.object_name, body_contact=contact,
            object_contact=np.asarray(st["object_contact"].any(axis=1), dtype=bool),
            name=f"{self.motion.name or 'clip'}_closed_loop", source="intermimic.sim_bridge",
            meta={"reference": self.motion.name, "start_offset": str(self.config.start_offset),
                  "lockstep": str(self.config.lockstep).lower()},
        )
        return validate_motion(motion, "closed-loop recording", min_frames=1)

    def _recorded_robot_motion(self, st: dict[str, np.ndarray]) -> Any:
        """A robot run as a ``RobotMotion`` (hand labels: +1 when a hand body touches the object,
        else -1; feet: planted when in contact)."""
        from intermimic_policy.motion.robot_motion import RobotMotion

        ref: Any = self.motion  # a RobotMotion (the bridge was built for a robot)
        emb = self.embodiment
        hands = np.stack([np.where(st["object_contact"][:, list(ids)].any(1), 1, -1)
                          for ids in (emb.left_hand_bodies, emb.right_hand_bodies)], axis=1).astype(np.int8)
        feet = st["contact"][:, list(emb.foot_bodies)].astype(bool)
        if feet.shape[1] != len(ref.foot_names):
            feet = np.zeros((feet.shape[0], len(ref.foot_names)), dtype=bool)
        return RobotMotion(
            fps=self.control_hz, robot=ref.robot, joint_names=tuple(emb.dof_names),
            root_pos=st["body_pos"][:, 0].astype(np.float64), root_rot=st["body_rot"][:, 0].astype(np.float64),
            joint_pos=st["joint_pos"].astype(np.float64), object_pos=st["object_pos"].astype(np.float64),
            object_rot=st["object_rot"].astype(np.float64), object_name=ref.object_name,
            hand_names=tuple(ref.hand_names), hand_contact=hands,
            foot_names=tuple(ref.foot_names), foot_contact=feet,
            name=f"{ref.name or 'clip'}_closed_loop", source="intermimic.sim_bridge",
            meta={"reference": ref.name, "start_offset": str(self.config.start_offset),
                  "lockstep": str(self.config.lockstep).lower()},
        )

    def write_record(self, path: str | Path) -> Path:
        """An ``.npz`` that ``load_motion`` reads as the simulated clip (a robot's: a robot motion that
        ``load_robot_motion`` reads), plus per-tick arrays: ``E_h``/``E_o`` (m, row 0 = the reset
        state), ``reference_frame``, ``tick_time_s``, ``fresh_targets``, ``round_trip_ms``."""
        motion = self.recorded_motion()
        r = self.recording
        if self.config.robot:
            from intermimic_policy.motion.robot_motion import save_robot_motion

            p = save_robot_motion(motion, path)  # type: ignore[arg-type]
            with np.load(p, allow_pickle=False) as z:
                robot_arrays: dict[str, Any] = {k: z[k] for k in z.files}
            robot_arrays.update({
                "E_h": np.asarray(r.e_h, np.float64), "E_o": np.asarray(r.e_o, np.float64),
                "reference_frame": np.asarray(r.frame, np.int64), "tick_time_s": np.asarray(r.time_s, np.float64),
                "fresh_targets": np.asarray(r.fresh, bool), "round_trip_ms": np.asarray(r.round_trip_ms, np.float64)})
            with atomic_output(p) as handle:
                np.savez(handle, **robot_arrays)
            return p
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT_TAG), "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "fps": np.array(motion.fps, dtype=np.float64), "meta_json": np.array(json.dumps(motion.meta)),
            "object_name": np.array(motion.object_name), "name": np.array(motion.name),
            "source": np.array(motion.source),
            "E_h": np.asarray(r.e_h, np.float64), "E_o": np.asarray(r.e_o, np.float64),
            "reference_frame": np.asarray(r.frame, np.int64), "tick_time_s": np.asarray(r.time_s, np.float64),
            "fresh_targets": np.asarray(r.fresh, bool), "round_trip_ms": np.asarray(r.round_trip_ms, np.float64),
        }
        for key in ARRAY_FIELDS:
            arrays[key] = np.ascontiguousarray(getattr(motion, key))
        p = Path(path)
        with atomic_output(p) as handle:
            np.savez(handle, **arrays)
        return p

    def close(self) -> None:
        self.env.close()


# -- the node --------------------------------------------------------------------------------------
@dataclass
class BridgeCounters:
    ticks: int = 0  # control ticks simulated
    missed_ticks: int = 0  # ticks stepped without fresh targets
    targets_received: int = 0
    unmatched_targets: int = 0  # lockstep: valid targets whose stamp is not the current tick's
    rejected_targets: int = 0  # invalid PDTargets (wrong size, unknown names, NaN...)
    gain_overrides_ignored: int = 0
    feedforward_ignored: int = 0
    state_publishes: int = 0
    target_timeouts: int = 0  # real time: entries into the damped hold (the targets went stale)
    hold_ticks: int = 0  # ticks stepped holding the pose measured when the targets went stale


class SimBridgeNode(NodeLifetime):
    """The bridge on a ROS transport. Drive it with :meth:`run`, or :meth:`poll` step by step."""

    def __init__(self, config: SimBridgeConfig, motion: HOIMotion | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from intermimic_policy.ros.transport import make_node

        self.config = config
        self.clock = clock
        self.core = BridgeCore(motion if motion is not None else load_clip(config.clip, config.example), config)
        self.max_ticks = int(round(config.duration_s * self.core.control_hz)) if config.duration_s > 0 else 0
        self.counters = BridgeCounters()
        self._order = pd_targets_order(self.core.embodiment.dof_names)
        self._warned: set[str] = set()
        self.node = make_node(config.node_name, backend=config.transport, domain_id=config.domain_id,
                              namespace=config.namespace)
        t = config.topics.prefixed(config.topic_prefix)
        try:
            self.pub_clock = self.node.create_publisher(t.clock, Clock, "reliable")
            self.pub_joints = self.node.create_publisher(t.joint_states, JointState, "reliable")
            self.pub_odom = self.node.create_publisher(t.odom, Odometry, "reliable")
            self.pub_object = self.node.create_publisher(t.object_pose, PoseStamped, "reliable")
            self.pub_contacts = self.node.create_publisher(t.contacts, ContactState, "reliable")
            self.pub_status = self.node.create_publisher(t.bridge_status, DiagnosticArray, "reliable")
            self.sub_targets = self.node.create_subscription(t.pd_targets, PDTargets, self._on_targets, "reliable")
            self.node.create_timer(1.0 / config.status_hz, self.publish_status)
        except BaseException:
            self.node.destroy()
            self.core.close()
            raise
        self.latest: TargetSample | None = None  # newest valid targets
        self.ready: TargetSample | None = None  # lockstep: targets for the current tick
        self._fresh = False  # real time: targets arrived since the previous tick
        self._targets_at: float | None = None  # real time: when the newest targets arrived
        self.holding: np.ndarray | None = None  # real time: the pose held since the targets went stale
        self.started = False  # real time: the first targets arrived
        self._next_tick = 0.0
        self._published_at: float | None = None  # first publish of the current tick's state
        self._last_publish = -math.inf
        self._last_clock = -math.inf
        self._resend_interval = config.republish_s
        self._subscribers: tuple[int, ...] = ()
        self._tick_started = self.clock()
        self.round_trips_ms: list[float] = []
        self.done = False
        self.finished = False
        self.wall_started = self.clock()
        self._first_step_at: float | None = None  # the first tick's step (the peers are up)
        self._done_at: float | None = None
        self.publish_state()

    # -- inputs -------------------------------------------------------------------------------
    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(text)

    def _on_targets(self, msg: PDTargets) -> None:
        try:
            sample = parse_pd_targets(msg, self._order)
        except MessageRejected as exc:
            self.counters.rejected_targets += 1
            kind = "non-finite" if isinstance(exc, NonFiniteInput) else "invalid"
            logger.warning("rejected %s PD targets (%d so far): %s", kind, self.counters.rejected_targets, exc)
            return
        self.counters.targets_received += 1
        if (sample.kp is not None and not np.allclose(sample.kp, self.core.model_kp)) or \
                (sample.kd is not None and not np.allclose(sample.kd, self.core.model_kd)):
            self.counters.gain_overrides_ignored += 1
            self._warn_once("gains", "PD targets carry gains that differ from the simulated actuators' "
                                     "(training's); the simulation keeps its own gains")
        if any(v is not None and np.any(v != 0) for v in (sample.velocity, sample.effort)):
            self.counters.feedforward_ignored += 1
            self._warn_once("feedforward", "PD targets carry velocity/effort terms; the simulated position "
                                           "actuators apply positions only")
        if self.config.lockstep:
            if sample.stamp_ns != self.core.stamp_ns():
                self.counters.unmatched_targets += 1
                return
            self.ready = sample
        self.latest = sample
        self._fresh = True
        self._targets_at = self.clock()
        if self.holding is not None:
            logger.info("targets are back after a hold of %d ticks", self.counters.hold_ticks)
            self.holding = None

    # -- outputs ------------------------------------------------------------------------------
    def publish_clock(self) -> None:
        self.pub_clock.publish(Clock(clock=time_from_ns(self.core.stamp_ns())))
        self._last_clock = self.clock()

    def publish_state(self) -> None:
        """Publish the current tick's clock and state (again, if already sent: same stamp)."""
        now = self.clock()
        msgs = self.core.state_messages()
        self.publish_clock()
        self.pub_odom.publish(msgs.odom)
        self.pub_object.publish(msgs.object_pose)
        self.pub_contacts.publish(msgs.contacts)
        self.pub_joints.publish(msgs.joint_state)  # last: the policy node answers on joint states
        self.counters.state_publishes += 1
        if self._published_at is None:
            self._published_at = now
        self._last_publish = now

    def _advance(self, sample: TargetSample | None, fresh: bool) -> None:
        now = self.clock()
        # the round trip ends when the targets arrived, not when the tick that uses them starts
        # (real time steps on its own period: measured at the step it read ~a period, 27 ms at 30 Hz)
        arrived = self._targets_at
        rt = ((arrived - self._published_at) * 1e3
              if fresh and self._published_at is not None and arrived is not None and arrived >= self._published_at
              else float("nan"))
        if fresh and math.isfinite(rt) and self.core.tick > 0:  # tick 0 also waits for the peers to start
            self.round_trips_ms.append(rt)
            if len(self.round_trips_ms) > LATENCY_WINDOW:
                del self.round_trips_ms[: len(self.round_trips_ms) - LATENCY_WINDOW]
        if self._first_step_at is None:
            self._first_step_at = now
        self.core.step(None if sample is None else sample.position, fresh, rt)
        self.counters.ticks += 1
        self.counters.missed_ticks += int(not fresh)
        self.ready = None
        self._fresh = False
        self._published_at = None
        self._tick_started = now
        self._resend_interval = self.config.republish_s
        self.publish_state()
        if self.max_ticks and self.counters.ticks >= self.max_ticks:
            self.done = True
            self._done_at = self.clock()
            self.finish()

    def poll(self, timeout_s: float = 0.05) -> bool:
        """One pass of the loop: serve messages for up to ``timeout_s``, step when due.
        Returns False once the configured duration has been simulated (and ``exit_when_done``)."""
        c = self.config
        if self.done and c.exit_when_done:
            return False
        now = self.clock()
        if self.done:
            self._resend(now, backoff=False)  # hold the last state, stepping no more
            wait = self._last_publish + c.republish_s - now
        elif c.lockstep:
            if self.ready is not None:
                self._advance(self.ready, True)
                return not (self.done and c.exit_when_done)
            if c.lockstep_timeout_s > 0 and now - self._tick_started >= c.lockstep_timeout_s:
                self._warn_once("timeout", f"no targets for {c.lockstep_timeout_s:g} s: stepping on with the "
                                           "last targets (counted as missed ticks)")
                self._advance(self.latest, False)
                return not (self.done and c.exit_when_done)
            self._resend(now, backoff=True)
            wait = min(self._last_clock + c.republish_s, self._last_publish + self._resend_interval) - now
            self.node.spin_once(max(0.0, min(timeout_s, wait)))
            return True
        else:
            if not self.started and self._fresh:
                self.started = True
                self._next_tick = now
            if self.started:
                if now >= self._next_tick:
                    self._next_tick += 1.0 / self.core.control_hz
                    if self._next_tick < now - 1.0 / self.core.control_hz:  # far behind: do not burst
                        self._next_tick = now
                    self._advance_real_time(now)
                    return not (self.done and c.exit_when_done)
                wait = self._next_tick - now
            else:
                self._resend(now, backoff=False)  # holding the initial pose until targets arrive
                wait = self._last_publish + c.republish_s - now
        self.node.spin_once(max(0.0, min(timeout_s, wait)))
        return True

    def _advance_real_time(self, now: float) -> None:
        """One wall-clock tick: the newest targets, or, once they are older than
        ``targets_timeout_s``, the pose measured at that moment (a robot's command watchdog: the
        position actuators' damping brings the body to rest there instead of chasing old targets)."""
        timeout = self.config.targets_timeout_s
        if self.holding is None and timeout > 0 and self._targets_at is not None and \
                now - self._targets_at > timeout and not self._fresh:
            self.holding = self.core.angles.copy()
            self.counters.target_timeouts += 1
            logger.warning("no PD targets for %.2f s: holding the measured pose", now - self._targets_at)
        if self.holding is not None:
            self.counters.hold_ticks += 1
            self._advance(TargetSample(self.core.stamp_ns(), self.holding, None, None, None, None), False)
        else:
            self._advance(self.latest, self._fresh)

    def _resend(self, now: float, backoff: bool) -> None:
        """While not stepping: the state at once when a subscriber appeared, else every
        ``republish_s`` (``backoff``: doubling up to ``republish_max_s``, see the module docstring);
        the clock every ``republish_s``."""
        counts = tuple(p.subscription_count() for p in (self.pub_joints, self.pub_odom, self.pub_object,
                                                          self.pub_contacts))
        grew = any(a > b for a, b in zip(counts, self._subscribers)) or len(counts) != len(self._subscribers)
        self._subscribers = counts
        if grew:
            self._resend_interval = self.config.republish_s
        if grew or now - self._last_publish >= self._resend_interval:
            self.publish_state()
            if backoff and not grew:
                self._resend_interval = min(2 * self._resend_interval, self.config.republish_max_s)
        elif now - self._last_clock >= self.config.republish_s:
            self.publish_clock()

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        while not stop() and self.poll(0.05):
            pass

    # -- status and results -------------------------------------------------------------------
    def status_values(self) -> dict[str, str]:
        k = self.counters
        core = self.core
        if self.done:
            mode = "done"
        elif self.config.lockstep:
            waiting = self.ready is None and self.clock() - self._tick_started > 1.0
            mode = "waiting_for_targets" if waiting or self.counters.ticks == 0 else "running"
        elif self.holding is not None:
            mode = "holding_stale_targets"
        else:
            mode = "running" if self.started else "holding_initial_pose"
        e_h = core.recording.e_h[-1] * 100 if len(core.recording) else float("nan")
        values = {
            "mode": mode, "lockstep": str(self.config.lockstep).lower(), "tick": str(core.tick),
            "sim_time_s": f"{core.stamp_ns() * 1e-9:.6f}", "frame": str(core.frame_of_tick(core.tick)),
            "control_hz": f"{core.control_hz:g}", "physics_failures": str(core.physics_failures),
            "E_h_cm_last": f"{e_h:.4f}", "waiting_s": f"{self.clock() - self._tick_started:.3f}",
            "round_trip_ms_p50": f"{_percentile(self.round_trips_ms, 50):.3f}",
            "round_trip_ms_p99": f"{_percentile(self.round_trips_ms, 99):.3f}",
            f"malformed.{self.sub_targets.topic}": str(self.sub_targets.malformed),
        }
        values.update({f"{name}": f"{v:.4f}" for name, v in core.metrics().items()})
        values.update({name: str(v) for name, v in vars(k).items()})
        return values

    def publish_status(self) -> None:
        values = self.status_values()
        level = DiagnosticStatus.OK if values["physics_failures"] == "0" else DiagnosticStatus.WARN
        self.pub_status.publish(status_array(name=STATUS_NAME, hardware_id=self.config.node_name, level=level,
                                             message=values["mode"], values=values, stamp=self.node.stamp()))

    def summary(self) -> dict[str, Any]:
        """What a run did: counts, errors (cm), latencies, rates, the clip."""
        core = self.core
        end = self._done_at if self._done_at is not None else self.clock()
        wall = end - self._first_step_at if self._first_step_at is not None else 0.0
        sim_s = core.tick / core.control_hz
        return {
            "ticks": self.counters.ticks, "missed_ticks": self.counters.missed_ticks,
            **core.metrics(),
            "round_trip_ms_p50": _percentile(self.round_trips_ms, 50),
            "round_trip_ms_p99": _percentile(self.round_trips_ms, 99),
            "rejected_targets": self.counters.rejected_targets,
            "malformed_targets": self.sub_targets.malformed,
            "unmatched_targets": self.counters.unmatched_targets,
            "gain_overrides_ignored": self.counters.gain_overrides_ignored,
            "feedforward_ignored": self.counters.feedforward_ignored,
            "target_timeouts": self.counters.target_timeouts, "hold_ticks": self.counters.hold_ticks,
            "physics_failures": core.physics_failures,
            "clip": core.motion.name, "clip_frames": core.motion.num_frames,
            "object": core.motion.object_name, "start_offset": self.config.start_offset,
            "lockstep": self.config.lockstep, "control_hz": core.control_hz,
            # wall time from the first step (tick 0 also waits for the peers to start) to the last
            "physics_hz": self.config.physics_hz, "sim_time_s": sim_s, "wall_time_s": wall,
            "startup_s": (self._first_step_at or end) - self.wall_started,
            "real_time_factor": sim_s / wall if wall > 0 else float("nan"),
            "E_h_cm_per_tick": [round(e * 100, 6) for e in core.recording.e_h[1:]],
            **_lift_and_height(core.recording),
        }

    def finish(self) -> dict[str, Any]:
        """Write the record and summary files that were asked for; return the summary."""
        self.finished = True
        result = self.summary()
        if self.config.record:
            self.core.write_record(self.config.record)
            logger.info("recorded %d states to %s", len(self.core.recording), self.config.record)
        if self.config.summary:
            with atomic_output(self.config.summary) as handle:
                handle.write(json.dumps(result, indent=2, allow_nan=True).encode())
        self.publish_status()
        self.pub_status.wait_for_all_acked(0.3)  # bounded: a signal must end the node within 1 s
        return result

    def destroy(self) -> None:
        super().destroy()
        self.core.close()


# -- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intermimic_sim_bridge",
                                description="Simulate the HOI environment driven by PD targets over ROS 2.")
    add_common_arguments(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--clip", default=None, help="clip file to reset to and measure against")
    src.add_argument("--example", action="store_true", default=None, help="use the bundled example clip")
    p.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=None,
                   help="advance only when the targets for the current tick arrived")
    p.add_argument("--duration", type=float, default=None, help="sim seconds to run, then exit")
    p.add_argument("--record", default=None, help="write errors and trajectory to this .npz on exit")
    p.add_argument("--summary", default=None, help="write the run summary to this .json on exit")
    p.add_argument("--robot", default=None, help="simulate this robot (config/robots/<name>.yaml; overrides the config)")
    return p


def _run(args: argparse.Namespace, params_file: str | None, stop: StopFlag) -> None:
    overrides: dict[str, Any] = {"lockstep": args.lockstep, "duration_s": args.duration,
                                 "record": args.record, "summary": args.summary,
                                 "domain_id": args.domain_id, "transport": args.transport,
                                 **({"robot": args.robot} if args.robot else {})}
    if args.clip:  # "" (an empty launch argument): the config's clip
        overrides.update(clip=args.clip, example=False)
    elif args.example:
        overrides.update(clip="", example=True)
    config = load_bridge_config(args.config or params_file, **overrides)
    torch.set_num_threads(1)  # one world: extra intra-op threads only contend with the simulator
    with SimBridgeNode(config) as bridge:
        logger.info("simulating %s (%d frames, object %s) from frame %d at %g Hz control / %g Hz physics; "
                    "lockstep=%s, transport %s", bridge.core.motion.name, bridge.core.motion.num_frames,
                    bridge.core.motion.object_name, config.start_offset, bridge.core.control_hz,
                    config.physics_hz, config.lockstep, bridge.node.backend)
        bridge.run(stop=stop)
        result = bridge.summary() if bridge.finished else bridge.finish()
        logger.info("%d ticks (%d missed, %d holding), E_h %.2f cm, E_o %.2f cm", result["ticks"],
                    result["missed_ticks"], result["hold_ticks"], result["E_h_cm"], result["E_o_cm"])


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("sim_bridge", build_parser(), _run, argv)


if __name__ == "__main__":
    exit_process(main())
