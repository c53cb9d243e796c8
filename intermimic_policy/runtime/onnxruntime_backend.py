"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers on request.

Threads are capped (intra-op 1 by default, inter-op 1, sequential execution): ORT's default of
one thread per core makes a 30 Hz control loop stutter on a shared onboard CPU (holosoma PR #211,
lerobot PR #4264), and a single-sample MLP gains nothing from more threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from intermimic_policy.contract import PolicyContract
from intermimic_policy.runtime.base import PolicyFile, PolicyLoadError, check_actions, check_observation

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class OrtOptions:
    threads: int = 1  # intra-op threads
    device: str = "cpu"  # "cpu", "cuda" (CUDA EP) or "tensorrt" (TensorRT EP)
    graph_optimization: str = "all"
    allow_spinning: bool = True  # busy-wait of intra-op workers (only matters with threads > 1)


class OnnxRuntimePolicy:
    """``Policy`` on an ONNX Runtime ``InferenceSession``."""

    def __init__(self, policy_file: PolicyFile, options: OrtOptions | None = None) -> None:
        opts = options or OrtOptions()
        if opts.threads < 1:
            raise PolicyLoadError(f"onnxruntime threads must be >= 1, got {opts.threads}")
        if opts.device not in _PROVIDERS:
            raise PolicyLoadError(f"onnxruntime device {opts.device!r} is not one of {sorted(_PROVIDERS)}")
        if opts.graph_optimization not in _OPT_LEVELS:
            raise PolicyLoadError(f"graph_optimization {opts.graph_optimization!r} is not one of "
                                  f"{sorted(_OPT_LEVELS)}")
        providers = _PROVIDERS[opts.device]
        available = ort.get_available_providers()
        if providers[0] not in available:
            raise PolicyLoadError(f"{policy_file.path}: onnxruntime has no {providers[0]} (available: "
                                  f"{available}); install onnxruntime-gpu for CUDA/TensorRT")
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _OPT_LEVELS[opts.graph_optimization]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(policy_file.model_bytes, so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise PolicyLoadError(f"{policy_file.path}: onnxruntime cannot load the model: {exc}") from exc
        self.contract: PolicyContract = policy_file.contract
        self.backend_name = f"onnxruntime-{opts.device}"
        self.options = opts
        self.source = str(policy_file.path)
        self._input = self.contract.input_name
        self._outputs = [self.contract.output_name]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = check_observation(obs, self.contract, self.source)
        return check_actions(self._session.run(self._outputs, {self._input: x})[0], x.shape[0], self.contract,
                             self.source)

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()
