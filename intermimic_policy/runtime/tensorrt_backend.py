"""TensorRT backend: builds a serialized engine from the exported ONNX, cached by content hash.

Kept small on purpose: this machine has neither TensorRT nor a GPU, so none of this runs in the
test suite (``tensorrt_unavailable_reason`` and the loader's errors are what is tested). Device
buffers come from torch's CUDA allocator (imported lazily: the CPU runtime never needs torch).
Engines are specific to the GPU and TensorRT version, so the cache key includes both.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.contract import PolicyContract
from intermimic_policy.runtime.base import PolicyFile, PolicyLoadError, check_actions, check_observation

MAX_BATCH = 4096


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can run here, else the reason in words."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install tensorrt)"
    try:
        import torch
    except ImportError:
        return "the TensorRT backend needs torch with CUDA for device buffers"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "intermimic" / "tensorrt"


class TensorRTPolicy:
    """``Policy`` on a TensorRT engine (dynamic batch 1..MAX_BATCH, fp16 optional)."""

    def __init__(self, policy_file: PolicyFile, *, fp16: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                 max_batch: int = MAX_BATCH) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise PolicyLoadError(f"{policy_file.path}: TensorRT backend unavailable: {reason}")
        import tensorrt as trt
        import torch

        self.contract: PolicyContract = policy_file.contract
        self.backend_name = "tensorrt-fp16" if fp16 else "tensorrt"
        self.source = str(policy_file.path)
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        device = torch.cuda.get_device_name()
        key = hashlib.sha256(policy_file.model_bytes + f"|{trt.__version__}|{device}|{fp16}|{max_batch}".encode())
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        engine_path = cache / f"{key.hexdigest()[:24]}.engine"
        if engine_path.is_file():
            blob = engine_path.read_bytes()
        else:
            blob = self._build(trt, policy_file, fp16, max_batch)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = engine_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, engine_path)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise PolicyLoadError(f"{self.source}: cached TensorRT engine {engine_path} is unusable; delete it")
        self._context: Any = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self.max_batch = max_batch

    def _build(self, trt: Any, policy_file: PolicyFile, fp16: bool, max_batch: int) -> bytes:
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(policy_file.model_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise PolicyLoadError(f"{policy_file.path}: TensorRT cannot parse the model: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        d = self.contract.input_dim
        profile.set_shape(self.contract.input_name, (1, d), (1, d), (max_batch, d))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise PolicyLoadError(f"{policy_file.path}: TensorRT engine build failed")
        return bytes(engine)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = check_observation(obs, self.contract, self.source)
        if x.shape[0] > self.max_batch:
            raise PolicyLoadError(f"{self.source}: batch {x.shape[0]} exceeds the engine's {self.max_batch}")
        with torch.cuda.stream(self._stream):
            xin = torch.from_numpy(x).cuda(non_blocking=False)
            out = torch.empty((x.shape[0], self.contract.output_dim), dtype=torch.float32, device="cuda")
            self._context.set_input_shape(self.contract.input_name, tuple(xin.shape))
            check_actions(np.empty(tuple(self._context.get_tensor_shape(self.contract.output_name)), np.float32),
                          x.shape[0], self.contract, self.source)
            self._context.set_tensor_address(self.contract.input_name, xin.data_ptr())
            self._context.set_tensor_address(self.contract.output_name, out.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise PolicyLoadError(f"{self.source}: TensorRT execution failed")
            self._stream.synchronize()
        return out.cpu().numpy()
