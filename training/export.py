"""Export a policy to ONNX: normaliser + actor mean in one graph, with its contract inside.

The graph maps raw observations ``obs [batch, D]`` (float32, dynamic batch) to the action mean
``actions [batch, 153]``. The mean is exported *unclamped*; the consumer clamps it to
``[-action_clip, action_clip]`` before the PD map (``PolicyContract.pd_targets``), as upstream's
player clamps it (spec 8.1).

What makes the file trustworthy:

* the ``PolicyContract`` is the one the checkpoint stores (built from the training environment's
  config and skeleton: rates, action map, observation, object points, skeleton table); export only
  adds the normaliser statistics and the config digest, and stores it with seeded golden
  input/output pairs in ``metadata_props``;
* after export, ONNX Runtime runs the final file on the golden inputs and a batch of 7; the
  export fails if any output is farther than ``tolerance`` (1e-4) from torch;
* ``onnx.checker`` validates the graph, and the file is written atomically.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript); the legacy TorchScript
exporter is the fallback when it fails. The Transformer's fused fast path is disabled for both.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from intermimic_policy.atomic import atomic_output
from intermimic_policy.contract import (
    GOLDEN_KEY,
    GoldenPairs,
    NormalizationStats,
    PolicyContract,
    expected_contract,
)
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.spec import ObservationSpec, student_spec, teacher_spec
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.policy_contract import env_contract
from training.checkpoint import Checkpoint, load_checkpoint
from training.networks import (
    NetworkError,
    PolicyNetwork,
    StudentTransformer,
    TeacherActorCritic,
    build_network,
    default_arch,
    export_mode,
)
from training.normalizer import RunningNormalizer

INPUT_NAME = "obs"
OUTPUT_NAME = "actions"
_log = logging.getLogger(__name__)


class ExportError(IntermimicError):
    """An export that failed or produced a graph that does not reproduce the torch policy."""


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 17
    golden_count: int = 3
    golden_seed: int = 0
    tolerance: float = 1e-4  # max abs error torch vs ONNX Runtime, on golden pairs and a batch of 7


@dataclass(frozen=True)
class ExportResult:
    path: Path
    contract: PolicyContract
    exporter: str  # "dynamo" or "legacy"
    opset: int
    max_error: float  # torch vs ONNX Runtime, max abs over all checked outputs
    size_bytes: int


class PolicyGraph(nn.Module):
    """What is exported: raw observation -> normaliser -> actor mean."""

    def __init__(self, network: PolicyNetwork, normalizer: RunningNormalizer, prior: nn.Module | None = None) -> None:
        super().__init__()
        self.network = network
        self.normalizer = normalizer
        self.prior = prior  # training.reference_prior (actions relative to the reference pose)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.network.actor_mean(self.normalizer(obs))
        return mean if self.prior is None else mean + self.prior(obs)


def config_digest(config: Mapping[str, Any]) -> str:
    """Stable short hash of a training config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _kind_of(network: PolicyNetwork) -> str:
    kind = getattr(network, "policy_kind", None)  # e.g. the MLP student (training.student.networks)
    return kind if kind else ("student" if isinstance(network, StudentTransformer) else "teacher")


def golden_inputs(normalizer: RunningNormalizer, count: int, seed: int) -> torch.Tensor:
    """Seeded observations spread over the normaliser's range (2 sigma, so some get clamped)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(count, normalizer.dim, generator=gen, dtype=torch.float64)
    return (normalizer.mean.cpu() + 2.0 * torch.sqrt(normalizer.var.cpu()) * z).float()


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """The exporters print progress and warnings; keep them for the error message only."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _to_onnx(graph: PolicyGraph, example: torch.Tensor, opset: int) -> tuple[onnx.ModelProto, str]:
    errors = []
    with export_mode(), torch.no_grad():
        try:
            with _quiet():
                program = torch.onnx.export(
                    graph, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    opset_version=opset, optimize=True,
                    dynamic_shapes={"obs": {0: torch.export.Dim("batch", min=1)}},
                )
            assert program is not None
            return program.model_proto, "dynamo"
        except Exception as exc:  # the fallback below handles any exporter failure
            errors.append(f"dynamo exporter: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            _log.warning("dynamo ONNX export failed (%s); falling back to the legacy exporter", errors[-1])
        try:
            with tempfile.TemporaryDirectory() as tmp, _quiet():
                legacy_path = os.path.join(tmp, "policy.onnx")
                torch.onnx.export(
                    graph, (example,), legacy_path, dynamo=False, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME], opset_version=opset, do_constant_folding=True,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
                return onnx.load(legacy_path), "legacy"
        except Exception as exc:
            errors.append(f"legacy exporter: {type(exc).__name__}: {exc}")
    raise ExportError("ONNX export failed with both exporters: " + " | ".join(errors))


def _check_io(model: onnx.ModelProto, input_dim: int, output_dim: int) -> None:
    def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in value_info.type.tensor_type.shape.dim]

    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"exported graph has inputs {[i.name for i in inputs]} and outputs "
                          f"{[o.name for o in model.graph.output]}, expected ['obs'] and ['actions']")
    din, dout = dims(inputs[0]), dims(model.graph.output[0])
    if len(din) != 2 or din[1] != input_dim or isinstance(din[0], int) and din[0] > 0:
        raise ExportError(f"exported input shape {din}, expected [batch, {input_dim}] with dynamic batch")
    if len(dout) != 2 or dout[1] != output_dim:
        raise ExportError(f"exported output shape {dout}, expected [batch, {output_dim}]")


def _parity(model_bytes: bytes, graph: PolicyGraph, inputs: torch.Tensor, tolerance: float) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {exc}") from exc
    worst = 0.0
    with torch.no_grad():
        expected = graph(inputs).numpy()
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
    worst = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    if not np.isfinite(actual).all() or worst > tolerance:
        raise ExportError(f"torch vs ONNX Runtime parity failed: max abs error {worst:.3g} > {tolerance:g}")
    return worst


def export_policy(
    network: PolicyNetwork,
    normalizer: RunningNormalizer,
    out: str | os.PathLike[str],
    *,
    contract: PolicyContract | None = None,
    spec: ObservationSpec | None = None,
    model_hash: str | None = None,
    config_digest: str = "",
    config: ExportConfig | None = None,
    provenance: Mapping[str, Any] | None = None,
    prior: nn.Module | None = None,
) -> ExportResult:
    """Export ``normalizer`` + ``network``'s actor mean to ``out`` with ``contract`` and golden pairs.

    ``contract`` is the training environment's (``HOIEnv.policy_contract``, kept in checkpoints);
    without one, ``spec``/``model_hash`` give the default environment's (tests, benchmarks).
    ``provenance``: plain JSON data recorded in the contract (how the policy was trained).
    """
    cfg = config or ExportConfig()
    kind = _kind_of(network)
    if contract is None:
        if spec is None:
            raise ExportError("export_policy needs the policy's contract (or an observation spec)")
        contract = expected_contract(kind, spec=spec, model_hash=model_hash)
    elif spec is not None and spec != contract.observation:
        raise ExportError("export_policy: the observation spec given differs from the contract's")
    if contract.kind != kind:
        raise ExportError(f"the contract is a {contract.kind} policy's, the network a {kind}")
    spec = contract.observation
    if network.obs_dim != spec.dim or normalizer.dim != spec.dim:
        raise ExportError(f"network ({network.obs_dim}) and normaliser ({normalizer.dim}) dims do not "
                          f"match the observation spec ({spec.dim})")
    norm = NormalizationStats(tuple(normalizer.mean.tolist()), tuple(normalizer.var.tolist()),
                              normalizer.eps, normalizer.clip, float(normalizer.count))
    contract = replace(contract, config_digest=config_digest or contract.config_digest, normalization=norm)
    if provenance:
        contract = replace(contract, provenance=dict(provenance))
    if network.action_dim != contract.output_dim:
        raise ExportError(f"network outputs {network.action_dim} actions, the contract has "
                          f"{contract.output_dim} joints")
    # copies: the caller's modules keep their device, mode and float64 statistics
    graph = PolicyGraph(copy.deepcopy(network).cpu().float(), copy.deepcopy(normalizer).cpu(),
                        None if prior is None else copy.deepcopy(prior).cpu()).eval()

    gold_in = golden_inputs(graph.normalizer, cfg.golden_count, cfg.golden_seed)
    with torch.no_grad():
        gold_out = graph(gold_in)
    golden = GoldenPairs(gold_in.numpy(), gold_out.numpy(), atol=cfg.tolerance)

    model, exporter = _to_onnx(graph, gold_in[:2] if len(gold_in) >= 2 else gold_in.repeat(2, 1), cfg.opset)
    _check_io(model, spec.dim, contract.output_dim)
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=GOLDEN_KEY, value=golden.to_metadata())
    model.doc_string = (f"intermimic {kind} policy: obs [batch, {spec.dim}] -> actions [batch, "
                        f"{contract.output_dim}] (unclamped mean; clamp to +-{contract.action_clip})")
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
    model_bytes = model.SerializeToString()

    check = torch.cat([gold_in, golden_inputs(graph.normalizer, 7, cfg.golden_seed + 1)])
    max_error = _parity(model_bytes, graph, check, cfg.tolerance)

    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as handle:
        handle.write(model_bytes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), cfg.opset)
    return ExportResult(target, contract, exporter, int(opset), max_error, len(model_bytes))


def network_from_checkpoint(path: str | os.PathLike[str]) -> tuple[PolicyNetwork, RunningNormalizer, Any]:
    """Rebuild (network, normaliser, checkpoint) from a training checkpoint."""
    ckpt = load_checkpoint(path)
    arch = ckpt.extra.get("network") or ckpt.config.get("network")
    if not (isinstance(arch, dict) and "type" in arch):
        arch = default_arch(ckpt.kind)
    try:
        network = build_network(arch, ckpt.obs_spec)
    except NetworkError as exc:
        raise ExportError(f"{path}: {exc}") from exc
    if _kind_of(network) != ckpt.kind:
        raise ExportError(f"{path}: checkpoint kind {ckpt.kind!r} but network type {arch['type']!r}")
    normalizer = RunningNormalizer(ckpt.obs_spec.dim)
    for label, module, state in (("model", network, ckpt.model_state),
                                 ("normalizer", normalizer, ckpt.normalizer_state)):
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ExportError(f"{path}: {label} state does not fit the {arch['type']} network: "
                              f"{str(exc).splitlines()[0]} ...") from exc
    return network, normalizer, ckpt


def checkpoint_contract(ckpt: Checkpoint) -> PolicyContract:
    """The contract a checkpoint stores; for one saved without (a default-skeleton run), the one its
    recorded environment config gives, built by the same function training uses."""
    if ckpt.contract is not None:
        return ckpt.contract
    env = ckpt.config.get("env_config")
    if not isinstance(env, dict) or env.get("skeleton", "default") != "default":
        raise ExportError(f"{ckpt.path}: checkpoint stores no policy contract (and no default-skeleton "
                          "environment config to build one from); save it with contract=env.policy_contract()")
    env = dict(env)
    if "upstream_action_scale" in env:  # round-1 checkpoints named the action-map flag so
        env["upstream_action_map"] = env.pop("upstream_action_scale")
    contract = env_contract(HOIEnvConfig.from_dict(env), None, ckpt.kind)
    if contract.observation != ckpt.obs_spec or contract.model_hash != ckpt.model_hash:
        raise ExportError(f"{ckpt.path}: checkpoint's environment config does not match its observation spec "
                          "or humanoid; it stores no contract to export")
    return contract


def export_checkpoint(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, config: ExportConfig | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export a checkpoint with the contract it stores (rates, action map, skeleton, points)."""
    from training.reference_prior import build_prior

    network, normalizer, ckpt = network_from_checkpoint(path)
    env_cfg = ckpt.config.get("env_config") or {}
    upstream = bool(env_cfg.get("upstream_action_map", env_cfg.get("upstream_action_scale", False)))
    prior = build_prior(str(ckpt.extra.get("action_prior", "none")), ckpt.obs_spec, upstream)
    return export_policy(network, normalizer, out, contract=checkpoint_contract(ckpt),
                         config_digest=config_digest(ckpt.config), config=config, provenance=provenance,
                         prior=prior)


def random_policy(kind: str, seed: int = 0, spec: ObservationSpec | None = None,
                  action_dim: int | None = None) -> tuple[PolicyNetwork, RunningNormalizer, ObservationSpec]:
    """A freshly initialised network (seeded) with identity normalisation: for smoke tests of the
    deployment path before any training. ``action_dim`` None: the SMPL-X humanoid's DOFs."""
    if kind not in ("teacher", "student"):
        raise ExportError(f"policy kind {kind!r} is not 'teacher' or 'student'")
    spec = spec or (teacher_spec() if kind == "teacher" else student_spec())
    torch.manual_seed(seed)
    if action_dim is None:
        network: PolicyNetwork = TeacherActorCritic(spec.dim) if kind == "teacher" else StudentTransformer(spec)
    else:
        network = (TeacherActorCritic(spec.dim, action_dim) if kind == "teacher"
                   else StudentTransformer(spec, action_dim=action_dim))
    return network, RunningNormalizer(spec.dim), spec


def export_random(
    kind: str, out: str | os.PathLike[str], *, seed: int = 0, model_hash: str | None = None,
    config: ExportConfig | None = None, env_config: HOIEnvConfig | None = None, robot: str | None = None,
) -> ExportResult:
    """An untrained policy with the contract of ``env_config`` (default: the default environment
    with the kind's observation); ``model_hash`` names another humanoid (no table is carried);
    ``robot`` (e.g. ``g1``) exports for that robot's embodiment instead of the SMPL-X humanoid."""
    if robot is not None:
        if env_config is not None or model_hash is not None:
            raise ExportError("export_random: --robot names the body; give no env_config or model hash with it")
        base = teacher_spec() if kind == "teacher" else student_spec()
        env = HOIEnvConfig(robot=robot, obs_spec=base)  # the robot's observation at the kind's offsets
        network, normalizer, spec = random_policy(kind, seed, env.obs_spec, env.embodiment.num_dofs)
        return export_policy(network, normalizer, out, contract=env_contract(env, None, kind),
                             config_digest=config_digest({"init": "random", "kind": kind, "seed": seed,
                                                          "robot": robot}), config=config)
    network, normalizer, spec = random_policy(kind, seed)
    env = env_config if env_config is not None else HOIEnvConfig(obs_spec=spec)
    if env.obs_spec != spec:
        raise ExportError(f"export_random: env_config's observation is not the {kind} preset")
    contract = env_contract(env, None, kind)
    if model_hash is not None and model_hash != contract.model_hash:
        contract = replace(contract, model_hash=model_hash, skeleton=None)
    return export_policy(network, normalizer, out, contract=contract,
                         config_digest=config_digest({"init": "random", "kind": kind, "seed": seed}),
                         config=config)
