"""``load_policy``: the one way deployment code opens a policy file.

Order of checks, cheapest first, each failing with an error that names the file:
file readable and ONNX -> contract present, self-consistent, rates sane -> graph input/output dims
equal the contract's -> contract fits the runtime's own configuration (``ContractMismatch`` lists
every mismatch) -> backend builds -> the graph runs once on the golden inputs and its real output
is exactly [N, joints] -> golden pairs reproduce (the weights are the ones that were exported).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from intermimic_policy.contract import (
    DeploymentExpectation,
    PolicyContract,
    require_compatible,
    require_deployable,
)
from intermimic_policy.runtime.base import Policy, PolicyLoadError, check_actions, read_policy_file
from intermimic_policy.runtime.onnxruntime_backend import OnnxRuntimePolicy, OrtOptions
from intermimic_policy.runtime.tensorrt_backend import TensorRTPolicy, tensorrt_unavailable_reason

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
# fp16 engines cannot meet the fp32 golden tolerance; they are checked against this one instead
FP16_GOLDEN_ATOL = 5e-2


class GoldenMismatch(PolicyLoadError):
    """The backend does not reproduce the outputs recorded at export (wrong weights or backend bug)."""


def resolve_backend(backend: str) -> str:
    """'auto' -> 'tensorrt' when TensorRT and a CUDA GPU are present, else 'onnxruntime'."""
    if backend not in BACKENDS:
        raise PolicyLoadError(f"unknown policy backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "tensorrt" if tensorrt_unavailable_reason() is None else "onnxruntime"
    return backend


def load_policy(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    expected: PolicyContract | DeploymentExpectation | None = None,
    threads: int = 1,
    verify_golden: bool = True,
    fp16: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    graph_optimization: str = "all",
    allow_spinning: bool = True,
) -> Policy:
    """Open an exported policy on a backend, after checking it against ``expected``: the runtime's
    own configuration (``DeploymentExpectation``) or a whole contract."""
    chosen = resolve_backend(backend)
    policy_file = read_policy_file(path)
    if isinstance(expected, DeploymentExpectation):
        require_deployable(policy_file.contract, expected, source=f"policy {Path(path)}")
    elif expected is not None:
        require_compatible(policy_file.contract, expected, source=f"policy {Path(path)}")
    if fp16 and policy_file.contract.precision != "fp16":
        raise PolicyLoadError(f"{policy_file.path}: an fp16 engine was asked for, but the contract declares "
                              f"{policy_file.contract.precision}: a precision the contract does not declare is refused")
    policy: Policy
    if chosen == "tensorrt":
        policy = TensorRTPolicy(policy_file, fp16=fp16, cache_dir=cache_dir)
    else:
        device = {"onnxruntime": "cpu", "onnxruntime-cuda": "cuda", "onnxruntime-tensorrt": "tensorrt"}[chosen]
        policy = OnnxRuntimePolicy(policy_file, OrtOptions(threads=threads, device=device,
                                                           graph_optimization=graph_optimization,
                                                           allow_spinning=allow_spinning))
    # run once on the golden inputs (zeros without them): the REAL output shape must be the contract's
    golden = policy_file.golden
    probe = golden.inputs if golden is not None else np.zeros((2, policy_file.contract.input_dim), np.float32)
    actions = check_actions(policy(probe), len(probe), policy_file.contract, str(policy_file.path))
    if verify_golden:
        if policy_file.golden is None:
            raise GoldenMismatch(f"{policy_file.path}: has no golden pairs to verify "
                                 "(re-export it, or pass verify_golden=False)")
        atol = FP16_GOLDEN_ATOL if fp16 and chosen == "tensorrt" else policy_file.golden.atol
        err = policy_file.golden.max_error(actions)
        if not err <= atol:
            raise GoldenMismatch(f"{policy_file.path}: backend {policy.backend_name} does not reproduce the "
                                 f"exported golden outputs (max abs error {err:.3g} > {atol:g})")
    return policy
