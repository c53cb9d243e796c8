"""``HOIEnvConfig``: every setting of the HOI imitation environment, validated, with defaults.

Defaults follow upstream's teacher training (``omomo_train_new``, spec 2.4, 5.5, 6, 7) with the
rates this project decided: PD at 240 Hz inside the physics step, policy at the data's 30 Hz.
A config can come from YAML/JSON (:meth:`HOIEnvConfig.from_dict`): unknown keys are an error that
names them, never silently ignored (upstream ignores several keys, spec 13.3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from intermimic_policy.embodiment import smplx_body
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.spec import ObservationSpec, student_spec, teacher_spec
from intermimic_policy.sim.backends import BACKENDS
from intermimic_policy.sim.perturb import Perturbation, PerturbError
from intermimic_policy.sim.psi import PSIConfig
from intermimic_policy.sim.rewards import RewardConfigError, RewardWeights
from intermimic_policy.sim.terminations import TerminationConfig

if TYPE_CHECKING:
    from intermimic_policy.embodiment.description import EmbodimentSpec

# "start": reference frame 0. "random": a uniform frame (leaving ``min_episode_frames``).
# "hybrid": frame 0 with probability ``hybrid_init_prob``, else a uniform frame.
# "psi": frame 0 with probability ``hybrid_init_prob``, else a frame drawn with the PSI buffer's
# weights (frames with few good physical states first), starting from a PSI slot's state.
STATE_INITS: tuple[str, ...] = ("start", "random", "hybrid", "psi")
OBS_PRESETS = {"teacher": teacher_spec, "student": student_spec}
# "default": the project's skeleton table; "subject": fitted to the env's clips (sim.subject)
SKELETONS: tuple[str, ...] = ("default", "subject")


class EnvConfigError(IntermimicError, ValueError):
    """An environment configuration that cannot work, naming the setting and the problem."""


@dataclass(frozen=True)
class HOIEnvConfig:
    num_worlds: int = 16
    backend: str = "mujoco"  # "mujoco" | "warp" | "isaacgym"
    threads: int = 0  # CPU threads per backend; 0 = one per core (at most one per world)
    physics_hz: float = smplx_body.PHYSICS_HZ
    control_hz: float = smplx_body.CONTROL_HZ  # one control step per data frame
    obs_spec: ObservationSpec = field(default_factory=teacher_spec)
    expected_obs_dim: int | None = None  # e.g. a checkpoint's input size; checked at build
    reward: RewardWeights = field(default_factory=RewardWeights)
    termination: TerminationConfig = field(default_factory=TerminationConfig)
    psi: PSIConfig = field(default_factory=lambda: PSIConfig(slots=1))
    state_init: str = "hybrid"
    hybrid_init_prob: float = 0.1  # upstream teacher 0.1, student 0.5
    min_episode_frames: int = 30  # random / hybrid starts leave at least this many frames
    episode_cap: int | None = 300  # control steps per episode (upstream rolloutLength); None = clip end
    auto_reset: bool = True  # reset ended worlds inside step(); False for evaluation
    object_density: float | None = None  # kg/m^3; None = the asset's (upstream _new: 1000)
    num_object_points: int = 1024
    upstream_action_map: bool = False  # upstream's knee/finger action-map quirks (its checkpoints)
    contact_threshold: float = 0.1  # N, per force component (upstream)
    # torch intra-op threads while the env computes on CPU: the simulator already runs on its
    # own threads, and OpenMP threads competing with them for the same cores slow small tensor
    # ops down by 10-100x (measured on 2 cores). 0 leaves torch's setting alone.
    torch_threads: int = 1
    # Step the physics on a background thread, worlds in two blocks, while the main thread
    # computes the finished block's reward/observation (and the reference side of the step):
    # the simulator releases the GIL, so on CPU that work hides behind the physics. Results are
    # bit-identical either way. Off by default: it needs a spare core beside the simulator's
    # threads (see benchmarks/bench_env.py for when it pays).
    pipeline: bool = False
    # Compute everything a step derives from the new state (state, reward, terminations, errors,
    # hand counters, observation) in one compiled pass per backend (``sim.fused_step``) instead
    # of the torch terms: equal results, several times less per-step overhead at a few worlds.
    # Used only where it applies: the SMPL-X humanoid on CPU MuJoCo, PSI off, no pipeline, the
    # standard observation terms; elsewhere (and when off) the torch path runs.
    fused_cpu_step: bool = True
    # The humanoid: "default" (the project's skeleton table) or "subject" (one skeleton fitted
    # to all the env's clips, so FK matches their body positions and the feet meet their floor;
    # meant for the clips of one subject, e.g. one teacher's). A Skeleton passed to HOIEnv wins.
    skeleton: str = "default"
    # Robustness settings (sim.perturb): object mass/friction and floor friction scales, action
    # delay, observation noise, pushes. The default changes nothing.
    perturb: Perturbation = field(default_factory=Perturbation)
    seed: int = 0
    device: str = "cpu"
    # The body: None = the SMPL-X humanoid; a robot name (config/robots/<name>.yaml) or YAML path.
    # Clips are then that robot's retargeted motions (``intermimic retarget --robot``), and an
    # observation spec made for another body count is rebuilt for the robot at the same offsets.
    robot: str | None = None

    def __post_init__(self) -> None:
        if self.robot is not None:
            from intermimic_policy.embodiment.description import EmbodimentError, embodiment_for
            from intermimic_policy.observation.spec import embodiment_spec

            try:
                emb = embodiment_for(self.robot)
            except EmbodimentError as exc:
                raise EnvConfigError(f"environment config: robot {self.robot!r}: {exc}") from exc
            if self.obs_spec.num_bodies != emb.num_bodies:
                object.__setattr__(self, "obs_spec", embodiment_spec(emb, self.obs_spec.ref_offsets))
        self.validate()

    @property
    def embodiment(self) -> EmbodimentSpec:
        """The body this config simulates (``robot``, else the SMPL-X humanoid)."""
        from intermimic_policy.embodiment.description import embodiment_for

        return embodiment_for(self.robot)

    def validate(self) -> None:
        def bad(msg: str) -> EnvConfigError:
            return EnvConfigError(f"environment config: {msg}")

        if self.num_worlds < 1:
            raise bad(f"num_worlds must be >= 1, got {self.num_worlds}")
        if self.backend not in BACKENDS:
            raise bad(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.threads < 0:
            raise bad(f"threads must be >= 0, got {self.threads}")
        if not (self.physics_hz > 0 and self.control_hz > 0):
            raise bad(f"rates must be positive, got physics {self.physics_hz} Hz, control {self.control_hz} Hz")
        ratio = self.physics_hz / self.control_hz
        if abs(ratio - round(ratio)) > 1e-9:
            raise bad(f"physics_hz {self.physics_hz} is not a whole multiple of control_hz {self.control_hz}")
        if self.state_init not in STATE_INITS:
            raise bad(f"state_init must be one of {', '.join(STATE_INITS)}, got {self.state_init!r}")
        if self.state_init == "psi" and not self.psi.enabled:
            raise bad("state_init 'psi' needs a PSI buffer: set psi.slots >= 2")
        if not 0.0 <= self.hybrid_init_prob <= 1.0:
            raise bad(f"hybrid_init_prob must be in [0, 1], got {self.hybrid_init_prob}")
        if self.episode_cap is not None and self.episode_cap < 1:
            raise bad(f"episode_cap must be >= 1 or None, got {self.episode_cap}")
        if self.min_episode_frames < 1:
            raise bad(f"min_episode_frames must be >= 1, got {self.min_episode_frames}")
        if self.object_density is not None and not self.object_density > 0:
            raise bad(f"object_density must be positive, got {self.object_density}")
        if self.skeleton not in SKELETONS:
            raise bad(f"skeleton must be one of {', '.join(SKELETONS)}, got {self.skeleton!r}")
        if self.torch_threads < 0:
            raise bad(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.num_object_points < 1:
            raise bad(f"num_object_points must be >= 1, got {self.num_object_points}")
        if self.expected_obs_dim is not None and self.expected_obs_dim != self.obs_spec.dim:
            raise bad(f"observation spec gives {self.obs_spec.dim} dims (offsets "
                      f"{list(self.obs_spec.ref_offsets)}), expected {self.expected_obs_dim}")
        if self.robot is not None and (self.skeleton != "default" or self.upstream_action_map):
            raise bad("skeleton and upstream_action_map are SMPL-X humanoid settings; leave them at their "
                      f"defaults with robot {self.robot!r}")
        if self.termination.contact_source != self.reward.contact_source:
            raise bad(f"reward contact_source {self.reward.contact_source!r} differs from termination "
                      f"contact_source {self.termination.contact_source!r}")

    @property
    def substeps(self) -> int:
        return int(round(self.physics_hz / self.control_hz))

    def with_(self, **changes: Any) -> HOIEnvConfig:
        return replace(self, **changes)

    # -- dict round trip -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "obs_spec":
                out[f.name] = v.to_dict()
            elif f.name == "reward":
                out[f.name] = v.to_dict()
            elif f.name in ("termination", "psi", "perturb"):
                out[f.name] = asdict(v)
            elif f.name == "robot" and v is None:
                continue  # the SMPL-X humanoid: its configs (and their digests) stay as they were
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HOIEnvConfig:
        """From a mapping (YAML/JSON). ``obs_spec`` may be "teacher", "student" or a spec dict."""
        if not isinstance(d, dict):
            raise EnvConfigError(f"environment config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            raise EnvConfigError(f"environment config: unknown setting(s) {unknown}; known: {sorted(names)}")
        kwargs: dict[str, Any] = dict(d)
        if "obs_spec" in kwargs:
            kwargs["obs_spec"] = _obs_spec(kwargs["obs_spec"])
        if "reward" in kwargs and not isinstance(kwargs["reward"], RewardWeights):
            try:
                kwargs["reward"] = RewardWeights.from_dict(dict(kwargs["reward"]))
            except RewardConfigError as exc:
                raise EnvConfigError(f"environment config: {exc}") from exc
        for key, typ in (("termination", TerminationConfig), ("psi", PSIConfig)):
            if key in kwargs and not isinstance(kwargs[key], typ):
                kwargs[key] = _sub(typ, key, kwargs[key])
        if "perturb" in kwargs:
            try:
                kwargs["perturb"] = Perturbation.from_dict(kwargs["perturb"])
            except PerturbError as exc:
                raise EnvConfigError(f"environment config: {exc}") from exc
        return cls(**kwargs)


def _obs_spec(value: Any) -> ObservationSpec:
    if isinstance(value, ObservationSpec):
        return value
    if isinstance(value, str):
        if value not in OBS_PRESETS:
            raise EnvConfigError(f"environment config: obs_spec {value!r} is not one of {sorted(OBS_PRESETS)}")
        return OBS_PRESETS[value]()
    if isinstance(value, dict):
        return ObservationSpec.from_dict(value)
    raise EnvConfigError(f"environment config: obs_spec must be a preset name or a spec mapping, got {value!r}")


def _sub(typ: Any, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise EnvConfigError(f"environment config: {key} must be a mapping, got {value!r}")
    names = {f.name for f in fields(typ)}
    unknown = sorted(k for k in value if k not in names)
    if unknown:
        raise EnvConfigError(f"environment config: unknown {key} setting(s) {unknown}; known: {sorted(names)}")
    try:
        return typ(**value)
    except (TypeError, ValueError) as exc:
        raise EnvConfigError(f"environment config: {key}: {exc}") from exc


def default_config(**changes: Any) -> HOIEnvConfig:
    """Upstream-like teacher training settings (override any field by keyword)."""
    return HOIEnvConfig(**changes)


def eval_config(**changes: Any) -> HOIEnvConfig:
    """Evaluation: start at frame 0, run to the clip's end or a failure, no auto-reset (spec 10)."""
    base: dict[str, Any] = {"state_init": "start", "episode_cap": None, "auto_reset": False}
    base.update(changes)
    return HOIEnvConfig(**base)
