"""The deployment contract: everything a runtime must agree on with the policy it runs.

Peers each invented an encoding (CSV, YAML, JSON sidecars) and users keep feeding policies
observations of the wrong size or layout. Here the contract is built in ONE place,
:func:`build_contract`, from what the policy was trained with (the environment's rates, action
map, observation spec and object point count, and the humanoid's skeleton table); training stores
it in the checkpoint, export copies it into the ONNX file's ``metadata_props`` (one key per field,
each value JSON text).

A runtime never takes its expectations from the file it checks: it describes its OWN
configuration as a :class:`DeploymentExpectation` (rates, embodiment, action map, observation,
optionally the skeleton hash and point count), and :func:`check_deployment` lists every way the
policy's contract differs; ``ContractMismatch`` refuses the model. What the policy needs from the
runtime and the runtime cannot know by itself (the subject skeleton's table, the surface point
count) is read from the contract: :meth:`PolicyContract.skeleton_model`, ``object_points``.

The exported graph outputs the *unclamped* action mean; the consumer clamps it to
``[-action_clip, action_clip]`` and maps it to PD targets (``embodiment.action_map.pd_targets``,
the same function the training environment uses).

Numpy only: the deployment runtime imports this without torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from intermimic_policy import __version__
from intermimic_policy.embodiment import smplx_body
from intermimic_policy.embodiment.action_map import pd_targets
from intermimic_policy.embodiment.description import (
    EmbodimentError,
    EmbodimentSpec,
    embodiment_for,
    robot_name,
)
from intermimic_policy.embodiment.smplx_body import DOF_NAMES, action_offset_scale, dof_arrays
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.spec import (
    ObservationSpec,
    ObservationSpecError,
    embodiment_spec,
    student_spec,
    teacher_spec,
)

if TYPE_CHECKING:
    from intermimic_policy.embodiment.skeleton import Skeleton

CONTRACT_VERSION = 2
KINDS = ("teacher", "student")
QUAT_CONVENTION = "xyzw"
EMBODIMENT = "smplx_humanoid"  # = embodiment.description.SMPLX; robots are "robot:<name>"
GOLDEN_KEY = "golden_pairs"
# relative tolerance for gains and the action map: float32 round trips, never a real change
GAIN_RTOL = 1e-5
# rates a contract may declare (Hz): a control loop outside this range is a mistake or an attack
RATE_RANGE_HZ = (1.0, 1000.0)
DEFAULT_OBJECT_POINTS = 1024


class ContractError(IntermimicError, ValueError):
    """A contract that is malformed or missing (names the source and the field)."""


class ContractMismatch(IntermimicError):
    """A policy whose contract does not fit the expected one; the message lists every mismatch."""

    def __init__(self, mismatches: Sequence[str], source: str = "policy") -> None:
        self.mismatches = list(mismatches)
        self.source = source
        lines = "\n".join(f"  - {m}" for m in self.mismatches)
        super().__init__(f"{source} does not fit the expected contract "
                         f"({len(self.mismatches)} mismatch{'es' if len(self.mismatches) != 1 else ''}):\n"
                         f"{lines}")


# The arithmetic a policy may run at. fp32 is the exported graph; a reduced precision (an int8
# graph from ``runtime.quantize_cli``, an fp16 engine) is only deployable when the contract declares it
# together with the closed-loop check it passed (``PrecisionAcceptance``): the golden tolerance of
# fp32 says nothing about whether a quantized policy still completes its clip.
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class PrecisionAcceptance:
    """A reduced precision's closed-loop equivalence check against the fp32 policy it came from:
    same success on ``clip`` and E_h within ``tolerance_cm`` of the fp32 policy's."""

    reference_sha256: str  # the fp32 policy file it was compared against
    clip: str
    reference_success: bool
    success: bool
    reference_e_h_cm: float
    e_h_cm: float
    tolerance_cm: float

    @property
    def passed(self) -> bool:
        return (self.success == self.reference_success and math.isfinite(self.e_h_cm)
                and math.isfinite(self.reference_e_h_cm)
                and abs(self.e_h_cm - self.reference_e_h_cm) <= self.tolerance_cm)

    def describe(self) -> str:
        return (f"on {self.clip}: success {self.success} (fp32 {self.reference_success}), E_h {self.e_h_cm:.2f} cm "
                f"(fp32 {self.reference_e_h_cm:.2f} cm, tolerance {self.tolerance_cm:g} cm)")

    def to_dict(self) -> dict[str, object]:
        return {"reference_sha256": self.reference_sha256, "clip": self.clip,
                "reference_success": self.reference_success, "success": self.success,
                "reference_e_h_cm": self.reference_e_h_cm, "e_h_cm": self.e_h_cm, "tolerance_cm": self.tolerance_cm}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> PrecisionAcceptance:
        return cls(reference_sha256=str(d["reference_sha256"]), clip=str(d["clip"]),
                   reference_success=bool(d["reference_success"]), success=bool(d["success"]),
                   reference_e_h_cm=_number(d["reference_e_h_cm"], "reference_e_h_cm"),
                   e_h_cm=_number(d["e_h_cm"], "e_h_cm"), tolerance_cm=_number(d["tolerance_cm"], "tolerance_cm"))


@dataclass(frozen=True)
class NormalizationStats:
    """Observation normaliser baked into the graph; informational (the graph already applies it)."""

    mean: tuple[float, ...]
    var: tuple[float, ...]
    eps: float = 1e-5
    clip: float = 5.0
    count: float = 1.0

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "var": list(self.var), "eps": self.eps, "clip": self.clip,
                "count": self.count}

    @classmethod
    def from_dict(cls, d: Mapping) -> NormalizationStats:
        return cls(tuple(float(x) for x in d["mean"]), tuple(float(x) for x in d["var"]),
                   float(d["eps"]), float(d["clip"]), float(d.get("count", 1.0)))


def _refuse_non_finite(token: str) -> None:
    raise ValueError(f"{token} is not allowed (values must be finite numbers)")


def default_model_hash() -> str:
    """Content hash of the project's default SMPL-X humanoid (the skeleton table)."""
    from intermimic_policy.embodiment.skeleton import default_skeleton

    return default_skeleton().content_hash()


def created_by() -> str:
    return f"intermimic {__version__}"


def _floats(values: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


@dataclass(frozen=True)
class PolicyContract:
    """What a policy was trained with and what it needs from its runtime."""

    kind: str
    joint_names: tuple[str, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    action_offset: tuple[float, ...]
    action_scale: tuple[float, ...]
    observation: ObservationSpec
    model_hash: str
    object_points: int = DEFAULT_OBJECT_POINTS  # object surface points the observation was computed from
    skeleton: Mapping[str, object] | None = None  # the humanoid's table (Skeleton.to_dict); hash = model_hash
    config_digest: str = ""
    control_hz: float = smplx_body.CONTROL_HZ
    physics_hz: float = smplx_body.PHYSICS_HZ
    action_clip: float = 1.0
    quaternion_convention: str = QUAT_CONVENTION
    embodiment: str = EMBODIMENT
    normalization: NormalizationStats | None = None
    input_name: str = "obs"
    output_name: str = "actions"
    contract_version: int = CONTRACT_VERSION
    created_by: str = field(default_factory=created_by)
    # Where the policy came from (plain JSON data, not compared by check_compatible): e.g. the
    # pipeline config digest, training samples, wall time and code revision of a shipped policy.
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    # the arithmetic the graph is accepted at (``PRECISIONS``) and, below fp32, the check it passed
    precision: str = "fp32"
    precision_acceptance: PrecisionAcceptance | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ContractError(f"contract kind {self.kind!r} is not one of {KINDS}")
        if self.precision not in PRECISIONS:
            raise ContractError(f"contract precision {self.precision!r} is not one of {PRECISIONS}")
        if self.precision != "fp32":
            a = self.precision_acceptance
            if a is None:
                raise ContractError(f"contract declares precision {self.precision} without the closed-loop "
                                    "acceptance it must pass (make it with python -m intermimic_policy.runtime.quantize_cli)")
            if not a.passed:
                raise ContractError(f"contract declares precision {self.precision}, but its closed-loop acceptance "
                                    f"failed ({a.describe()})")
        n = len(self.joint_names)
        for name in ("kp", "kd", "action_offset", "action_scale"):
            values = getattr(self, name)
            if len(values) != n:
                raise ContractError(f"contract {name} has {len(values)} values for {n} joints")
            if not all(math.isfinite(v) for v in values):
                raise ContractError(f"contract {name} contains NaN or inf")
        if len(set(self.joint_names)) != n:
            raise ContractError("contract joint_names contain duplicates")
        problem = rate_problem(self.control_hz, self.physics_hz)
        if problem:
            raise ContractError(f"contract {problem}")
        if isinstance(self.object_points, bool) or not isinstance(self.object_points, int) or self.object_points < 1:
            raise ContractError(f"contract object_points must be a positive integer, got {self.object_points!r}")
        if not (isinstance(self.action_clip, (int, float)) and math.isfinite(self.action_clip)
                and self.action_clip > 0):
            raise ContractError(f"contract action_clip must be a positive finite number, got {self.action_clip!r}")
        if self.skeleton is not None:
            from intermimic_policy.embodiment.skeleton import SkeletonError

            try:
                digest = self.skeleton_model().content_hash()
            except SkeletonError as exc:
                raise ContractError(f"contract skeleton: {exc}") from exc
            if digest != self.model_hash:
                raise ContractError(f"contract skeleton table hashes to {digest[:12]}..., but its model_hash "
                                    f"is {self.model_hash[:12]}...")
        if self.normalization is not None:
            d = self.input_dim
            if len(self.normalization.mean) != d or len(self.normalization.var) != d:
                raise ContractError(f"contract normalization stats have {len(self.normalization.mean)} "
                                    f"values for an input of {d} dims")

    # ---- derived layout -------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.observation.dim

    @property
    def output_dim(self) -> int:
        return len(self.joint_names)

    @property
    def num_tokens(self) -> int:
        return self.observation.num_tokens

    @property
    def block_dim(self) -> int:
        return self.observation.block_dim

    @property
    def ref_offsets(self) -> tuple[int, ...]:
        return self.observation.ref_offsets

    def pd_targets(self, actions: np.ndarray) -> np.ndarray:
        """Clamp the policy output to +-action_clip and map it to joint targets (rad); the shape must
        be [A] or [B, A] exactly (``ActionShapeError`` otherwise, nothing is broadcast)."""
        return pd_targets(np.asarray(actions, dtype=np.float32), np.asarray(self.action_offset, dtype=np.float32),
                          np.asarray(self.action_scale, dtype=np.float32), self.action_clip)

    def skeleton_model(self) -> Skeleton:
        """The humanoid the policy was trained on, rebuilt from the contract's table."""
        from intermimic_policy.embodiment.skeleton import Skeleton

        if self.skeleton is None:
            raise ContractError("contract carries no skeleton table (only its hash); re-export the policy")
        return Skeleton.from_dict(dict(self.skeleton), source="contract skeleton")

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """The full contract as plain JSON data (what ``policy info --json`` prints)."""
        return {
            "contract_version": self.contract_version,
            "kind": self.kind,
            "embodiment": self.embodiment,
            "joint_names": list(self.joint_names),
            "kp": list(self.kp),
            "kd": list(self.kd),
            "action_offset": list(self.action_offset),
            "action_scale": list(self.action_scale),
            "action_clip": self.action_clip,
            "control_hz": self.control_hz,
            "physics_hz": self.physics_hz,
            "observation": self.observation.to_dict(),
            "object_points": self.object_points,
            "token_layout": {"tokens": self.num_tokens, "block_dim": self.block_dim,
                             "ref_offsets": list(self.ref_offsets)},
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
            "quaternion_convention": self.quaternion_convention,
            "model_hash": self.model_hash,
            "skeleton": None if self.skeleton is None else dict(self.skeleton),
            "config_digest": self.config_digest,
            "input": {"name": self.input_name, "dim": self.input_dim, "dtype": "float32"},
            "output": {"name": self.output_name, "dim": self.output_dim, "dtype": "float32"},
            "created_by": self.created_by,
            "provenance": dict(self.provenance),
            # fp32 contracts stay exactly what they were before precisions existed
            **({} if self.precision == "fp32" else {
                "precision": self.precision,
                "precision_acceptance": None if self.precision_acceptance is None
                else self.precision_acceptance.to_dict()}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object], source: str = "contract") -> PolicyContract:
        """Inverse of ``to_dict``; checks that the redundant fields (dims, token layout) agree."""
        required = ("contract_version", "kind", "joint_names", "kp", "kd", "action_offset",
                    "action_scale", "control_hz", "physics_hz", "observation", "object_points", "model_hash")
        missing = [k for k in required if k not in d]
        if missing:
            raise ContractError(f"{source}: contract is missing {missing}")
        try:
            version = int(d["contract_version"])  # type: ignore[call-overload]
            if version != CONTRACT_VERSION:
                raise ContractError(f"{source}: contract version {version} is not the one this runtime "
                                    f"reads ({CONTRACT_VERSION}); re-export the policy with this intermimic")
            skeleton = d.get("skeleton")
            if skeleton is not None and not isinstance(skeleton, Mapping):
                raise ContractError(f"{source}: contract skeleton must be a table, got {type(skeleton).__name__}")
            spec = ObservationSpec.from_dict(d["observation"])  # type: ignore[arg-type]
            norm = d.get("normalization")
            inp = d.get("input") or {}
            out = d.get("output") or {}
            contract = cls(
                kind=str(d["kind"]),
                joint_names=tuple(str(n) for n in d["joint_names"]),  # type: ignore[attr-defined]
                kp=_floats(d["kp"]),  # type: ignore[arg-type]
                kd=_floats(d["kd"]),  # type: ignore[arg-type]
                action_offset=_floats(d["action_offset"]),  # type: ignore[arg-type]
                action_scale=_floats(d["action_scale"]),  # type: ignore[arg-type]
                observation=spec,
                model_hash=str(d["model_hash"]),
                object_points=_int(d["object_points"], "object_points"),
                skeleton=skeleton,
                config_digest=str(d.get("config_digest", "")),
                control_hz=_number(d["control_hz"], "control_hz"),
                physics_hz=_number(d["physics_hz"], "physics_hz"),
                action_clip=_number(d.get("action_clip", 1.0), "action_clip"),
                quaternion_convention=str(d.get("quaternion_convention", QUAT_CONVENTION)),
                embodiment=str(d.get("embodiment", EMBODIMENT)),
                normalization=None if norm is None else NormalizationStats.from_dict(norm),  # type: ignore[arg-type]
                input_name=str(inp.get("name", "obs")),  # type: ignore[attr-defined]
                output_name=str(out.get("name", "actions")),  # type: ignore[attr-defined]
                contract_version=version,
                created_by=str(d.get("created_by", "unknown")),
                provenance=dict(d.get("provenance") or {}),  # type: ignore[call-overload]
                precision=str(d.get("precision", "fp32")),
                precision_acceptance=None if d.get("precision_acceptance") is None
                else PrecisionAcceptance.from_dict(d["precision_acceptance"]),  # type: ignore[arg-type]
            )
        except ContractError as exc:
            if str(exc).startswith(f"{source}:"):
                raise
            raise ContractError(f"{source}: {exc}") from exc
        except (ObservationSpecError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContractError(f"{source}: malformed contract: {exc}") from exc
        try:
            problems = contract._redundancy_problems(d)
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. "input": {"dim": null}
            raise ContractError(f"{source}: malformed contract: {exc}") from exc
        if problems:
            raise ContractError(f"{source}: inconsistent contract: " + "; ".join(problems))
        return contract

    def _redundancy_problems(self, d: Mapping[str, object]) -> list[str]:
        problems = []
        layout = d.get("token_layout")
        if isinstance(layout, Mapping):
            if (int(layout.get("tokens", -1)), int(layout.get("block_dim", -1))) != (self.num_tokens,
                                                                                      self.block_dim):
                problems.append(f"token layout {layout.get('tokens')} x {layout.get('block_dim')} != "
                                f"observation {self.num_tokens} x {self.block_dim}")
            if list(layout.get("ref_offsets", [])) != list(self.ref_offsets):
                problems.append(f"token ref_offsets {layout.get('ref_offsets')} != observation "
                                f"{list(self.ref_offsets)}")
        for key, dim in (("input", self.input_dim), ("output", self.output_dim)):
            entry = d.get(key)
            if isinstance(entry, Mapping) and "dim" in entry and int(entry["dim"]) != dim:
                problems.append(f"{key} dim {entry['dim']} != {dim}")
        obs = d.get("observation")
        if isinstance(obs, Mapping) and "dim" in obs and int(obs["dim"]) != self.input_dim:
            problems.append(f"observation dim {obs['dim']} != sum of its terms {self.input_dim}")
        return problems

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: one key per top-level field, each value JSON text."""
        return {key: json.dumps(value, separators=(",", ":")) for key, value in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "policy") -> PolicyContract:
        if "contract_version" not in meta or "kind" not in meta:
            raise ContractError(f"{source}: not an intermimic policy (no contract in its metadata)")
        decoded: dict[str, object] = {}
        names = {f.name for f in fields(cls)} | {"token_layout", "input", "output", "observation"}
        for key, text in meta.items():
            if key not in names:
                continue  # other tools' metadata, golden pairs
            try:
                decoded[key] = json.loads(text, parse_constant=_refuse_non_finite)
            except ValueError as exc:  # JSONDecodeError, and NaN/Infinity (not JSON, never a valid setting)
                raise ContractError(f"{source}: metadata {key!r} is not JSON: {exc}") from exc
        return cls.from_dict(decoded, source)

    def digest(self) -> str:
        """Short content hash of the contract (stable across key order)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ---- building contracts: the one place ----------------------------------------------------------
def rate_problem(control_hz: float, physics_hz: float) -> str | None:
    """Why a (control, physics) rate pair cannot be right, or None: finite, within
    ``RATE_RANGE_HZ``, physics a whole multiple of control."""
    lo, hi = RATE_RANGE_HZ
    for name, value in (("control_hz", control_hz), ("physics_hz", physics_hz)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{name} is not finite ({value})"
        if not lo <= value <= hi:
            return f"{name} {value:g} Hz is outside the sane range {lo:g}..{hi:g} Hz"
    ratio = physics_hz / control_hz
    if abs(ratio - round(ratio)) > 1e-6:
        return f"physics_hz {physics_hz:g} is not a whole multiple of control_hz {control_hz:g}"
    return None


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"contract {name} must be a number, got {value!r}")
    return float(value)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"contract {name} must be an integer, got {value!r}")
    return value


def embodiment_of(embodiment: str) -> EmbodimentSpec:
    """The embodiment a contract names: ``smplx_humanoid`` or ``robot:<name>`` (its YAML)."""
    try:
        return embodiment_for(robot_name(embodiment))
    except EmbodimentError as exc:
        raise ContractError(str(exc)) from exc


def _embodiment_tables(embodiment: str, upstream_action_map: bool) -> tuple[tuple[str, ...], np.ndarray,
                                                                           np.ndarray, np.ndarray, np.ndarray]:
    """(joint names, kp, kd, action offset, action scale) of an embodiment, from its one table."""
    if embodiment != EMBODIMENT:
        emb = embodiment_of(embodiment)
        try:
            offset, scale = emb.action_offset_scale(upstream_action_map)
        except EmbodimentError as exc:
            raise ContractError(str(exc)) from exc
        return emb.dof_names, emb.kp, emb.kd, offset, scale
    kp, kd, _, _ = dof_arrays()
    offset, scale = action_offset_scale(upstream_action_map=upstream_action_map)
    return DOF_NAMES, kp, kd, offset, scale


def build_contract(
    kind: str,
    *,
    obs_spec: ObservationSpec,
    skeleton: Skeleton | None,
    object_points: int,
    control_hz: float,
    physics_hz: float,
    upstream_action_map: bool,
    embodiment: str = EMBODIMENT,
    config_digest: str = "",
    normalization: NormalizationStats | None = None,
) -> PolicyContract:
    """THE contract of a policy trained with these settings (``sim.HOIEnv.policy_contract`` passes
    its config and skeleton; ``skeleton=None`` = the default humanoid). Everything else (joints,
    gains, action map) comes from the embodiment's table."""
    from intermimic_policy.embodiment.skeleton import default_skeleton

    if kind not in KINDS:
        raise ContractError(f"policy kind {kind!r} is not one of {KINDS}")
    names, kp, kd, offset, scale = _embodiment_tables(embodiment, upstream_action_map)
    if embodiment != EMBODIMENT:  # a robot: its URDF + mapping hash names the body, no skeleton table
        if skeleton is not None:
            raise ContractError(f"a skeleton table belongs to the SMPL-X humanoid, not to {embodiment!r}")
        return PolicyContract(
            kind=kind, joint_names=names, kp=_floats(kp), kd=_floats(kd), action_offset=_floats(offset),
            action_scale=_floats(scale), observation=obs_spec, model_hash=embodiment_of(embodiment).model_hash,
            object_points=int(object_points), skeleton=None, config_digest=config_digest,
            control_hz=float(control_hz), physics_hz=float(physics_hz), embodiment=embodiment,
            normalization=normalization)
    body = skeleton if skeleton is not None else default_skeleton()
    return PolicyContract(
        kind=kind,
        joint_names=names,
        kp=_floats(kp),
        kd=_floats(kd),
        action_offset=_floats(offset),
        action_scale=_floats(scale),
        observation=obs_spec,
        model_hash=body.content_hash(),
        object_points=int(object_points),
        skeleton=body.to_dict(),
        config_digest=config_digest,
        control_hz=float(control_hz),
        physics_hz=float(physics_hz),
        embodiment=embodiment,
        normalization=normalization,
    )


def expected_contract(
    kind: str,
    *,
    spec: ObservationSpec | None = None,
    model_hash: str | None = None,
    control_hz: float = smplx_body.CONTROL_HZ,
    physics_hz: float = smplx_body.PHYSICS_HZ,
    upstream_action_map: bool = False,
    config_digest: str = "",
    normalization: NormalizationStats | None = None,
    object_points: int = DEFAULT_OBJECT_POINTS,
) -> PolicyContract:
    """:func:`build_contract` with the default humanoid, or only ``model_hash`` naming another one
    (then no table is carried). For tests and tools; runtimes use :func:`check_deployment`."""
    contract = build_contract(
        kind, obs_spec=spec if spec is not None else preset_spec(kind), skeleton=None,
        object_points=object_points, control_hz=control_hz, physics_hz=physics_hz,
        upstream_action_map=upstream_action_map, config_digest=config_digest, normalization=normalization)
    if model_hash is not None and model_hash != contract.model_hash:
        contract = replace(contract, model_hash=model_hash, skeleton=None)
    return contract


def preset_spec(kind: str, embodiment: str = EMBODIMENT) -> ObservationSpec:
    """The observation spec a policy of ``kind`` uses by default (on ``embodiment``)."""
    if kind not in KINDS:
        raise ContractError(f"policy kind {kind!r} is not one of {KINDS}")
    spec = teacher_spec() if kind == "teacher" else student_spec()
    if embodiment != EMBODIMENT:
        spec = embodiment_spec(embodiment_of(embodiment), spec.ref_offsets)
    return spec


# ---- what a runtime is configured for, and the check ----------------------------------------------
@dataclass(frozen=True)
class DeploymentExpectation:
    """A runtime's OWN configuration (node, bridge, evaluation), never read from the policy file.

    ``model_hash`` "" accepts the skeleton the contract carries (its table must hash to its
    ``model_hash``, which the contract checks on parsing); ``object_points`` 0 accepts the
    contract's count; ``obs_spec`` None means the preset of ``kind``.
    """

    kind: str = "teacher"
    control_hz: float = smplx_body.CONTROL_HZ
    physics_hz: float = smplx_body.PHYSICS_HZ
    embodiment: str = EMBODIMENT
    upstream_action_map: bool = False
    obs_spec: ObservationSpec | None = None
    model_hash: str = ""
    object_points: int = 0

    def __post_init__(self) -> None:
        problem = rate_problem(self.control_hz, self.physics_hz)
        if problem:
            raise ContractError(f"runtime configuration: {problem}")
        if self.object_points < 0:
            raise ContractError(f"runtime configuration: object_points must be >= 0, got {self.object_points}")


def check_deployment(contract: PolicyContract, runtime: DeploymentExpectation) -> list[str]:
    """Every way ``contract`` does not fit ``runtime``'s configuration; empty when it fits."""
    try:
        names, kp, kd, offset, scale = _embodiment_tables(runtime.embodiment, runtime.upstream_action_map)
    except ContractError as exc:
        return [str(exc)]
    try:
        spec = runtime.obs_spec if runtime.obs_spec is not None else preset_spec(runtime.kind, runtime.embodiment)
    except ContractError as exc:
        return [str(exc)]
    expected = PolicyContract(
        kind=runtime.kind, joint_names=names, kp=_floats(kp), kd=_floats(kd), action_offset=_floats(offset),
        action_scale=_floats(scale), observation=spec,
        model_hash=runtime.model_hash or contract.model_hash,
        object_points=runtime.object_points or contract.object_points,
        control_hz=float(runtime.control_hz), physics_hz=float(runtime.physics_hz), embodiment=runtime.embodiment)
    return check_compatible(contract, expected)


def require_deployable(contract: PolicyContract, runtime: DeploymentExpectation, source: str = "policy") -> None:
    """Raise ``ContractMismatch`` listing every way ``contract`` does not fit ``runtime``."""
    mismatches = check_deployment(contract, runtime)
    if mismatches:
        raise ContractMismatch(mismatches, source)


def _compare_per_joint(label: str, names: Sequence[str], actual: Sequence[float],
                       expected: Sequence[float], rtol: float) -> str | None:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return None  # joint count mismatch is reported once, by the caller
    bad = np.flatnonzero(~np.isclose(a, e, rtol=rtol, atol=1e-9))
    if bad.size == 0:
        return None
    examples = ", ".join(f"{names[i]}: {a[i]:g} != {e[i]:g}" for i in bad[:3])
    more = f" and {bad.size - 3} more" if bad.size > 3 else ""
    return f"{label} differs for {bad.size} DOF(s) (policy vs expected: {examples}{more})"


def _joint_order_problem(actual: Sequence[str], expected: Sequence[str]) -> str | None:
    if list(actual) == list(expected):
        return None
    sa, se = set(actual), set(expected)
    if sa == se:
        i = next(i for i, (x, y) in enumerate(zip(actual, expected)) if x != y)
        return (f"joint order differs: first at index {i}, policy has {actual[i]!r} where "
                f"{expected[i]!r} is expected")
    parts = [f"joint set differs ({len(actual)} policy joints, {len(expected)} expected)"]
    if se - sa:
        parts.append(f"missing {sorted(se - sa)[:5]}")
    if sa - se:
        parts.append(f"unknown {sorted(sa - se)[:5]}")
    return ", ".join(parts)


def check_compatible(actual: PolicyContract, expected: PolicyContract, *,
                     gain_rtol: float = GAIN_RTOL) -> list[str]:
    """Every way ``actual`` (the policy's contract) fails ``expected``; empty when it fits.

    Normalisation stats, config digest and ``created_by`` are informational and not compared.
    """
    out: list[str] = []

    def neq(label: str, a: object, e: object) -> None:
        if a != e:
            out.append(f"{label}: policy has {a!r}, expected {e!r}")

    neq("contract_version", actual.contract_version, expected.contract_version)
    neq("kind", actual.kind, expected.kind)
    neq("embodiment", actual.embodiment, expected.embodiment)
    problem = _joint_order_problem(actual.joint_names, expected.joint_names)
    if problem:
        out.append(problem)
    names = expected.joint_names
    for label in ("kp", "kd", "action_offset", "action_scale"):
        p = _compare_per_joint(label, names, getattr(actual, label), getattr(expected, label), gain_rtol)
        if p:
            out.append(p)
    for label in ("control_hz", "physics_hz", "action_clip"):
        a, e = getattr(actual, label), getattr(expected, label)
        if not math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9):
            out.append(f"{label}: policy has {a:g}, expected {e:g}")
    neq("object_points", actual.object_points, expected.object_points)
    neq("quaternion_convention", actual.quaternion_convention, expected.quaternion_convention)
    out.extend(f"observation: {d}" for d in expected.observation.differences(actual.observation))
    neq("model_hash", actual.model_hash, expected.model_hash)
    neq("input name", actual.input_name, expected.input_name)
    neq("output name", actual.output_name, expected.output_name)
    neq("input dim", actual.input_dim, expected.input_dim)
    neq("output dim", actual.output_dim, expected.output_dim)
    return out


def require_compatible(actual: PolicyContract, expected: PolicyContract, source: str = "policy") -> None:
    """Raise ``ContractMismatch`` listing every mismatch, if any."""
    mismatches = check_compatible(actual, expected)
    if mismatches:
        raise ContractMismatch(mismatches, source)


# ---- golden input/output pairs ---------------------------------------------------------------
def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _unb64(text: str, shape: Sequence[int]) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    return np.frombuffer(raw, dtype="<f4").reshape(tuple(shape)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class GoldenPairs:
    """Seeded observations and the exporting framework's outputs, checked again on every load.

    Stored bit-exact (little-endian float32, base64) so a re-run compares with the true values.
    """

    inputs: np.ndarray  # [N, input_dim] float32
    outputs: np.ndarray  # [N, output_dim] float32
    atol: float = 1e-4

    def __post_init__(self) -> None:
        if self.inputs.ndim != 2 or self.outputs.ndim != 2 or len(self.inputs) != len(self.outputs):
            raise ContractError(f"golden pairs need [N, D] inputs and [N, A] outputs, got "
                                f"{self.inputs.shape} and {self.outputs.shape}")

    def to_metadata(self) -> str:
        return json.dumps({"dtype": "float32", "atol": self.atol,
                           "input_shape": list(self.inputs.shape), "output_shape": list(self.outputs.shape),
                           "inputs": _b64(self.inputs), "outputs": _b64(self.outputs)})

    @classmethod
    def from_metadata(cls, text: str, source: str = "policy") -> GoldenPairs:
        try:
            d = json.loads(text)
            return cls(_unb64(d["inputs"], d["input_shape"]), _unb64(d["outputs"], d["output_shape"]),
                       float(d.get("atol", 1e-4)))
        except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError, binascii.Error are ValueErrors
            raise ContractError(f"{source}: malformed golden pairs: {exc}") from exc

    def max_error(self, outputs: np.ndarray) -> float:
        return float(np.max(np.abs(np.asarray(outputs, dtype=np.float64) - self.outputs)))
