"""TensorRT backend: builds a serialized engine from the exported ONNX, cached by content hash.

Device buffers come from torch's CUDA allocator (imported lazily: the CPU runtime never needs
torch). Engines are specific to the model, the GPU, the TensorRT version and the build settings,
so the cache key is the SHA-256 of all of them. A cache file carries that key and the SHA-256 of
the engine inside it, and is written atomically: a file from another model or GPU, a truncated
or altered one is never deserialized; it is reported and rebuilt. The cache functions are pure
file code and are tested without a GPU; the engine build and run need TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.atomic import atomic_output
from intermimic_policy.contract import PolicyContract
from intermimic_policy.runtime.base import PolicyFile, PolicyLoadError, check_actions, check_observation

MAX_BATCH = 4096
CACHE_MAGIC = b"INTERMIMIC-TRT-ENGINE\n"
CACHE_FORMAT = 1
_HEADER_LEN = struct.Struct("<I")
_MAX_HEADER = 64 * 1024

_log = logging.getLogger(__name__)


class EngineCacheError(PolicyLoadError):
    """A cache file that must not be used (other key, corrupt, truncated); the text says which."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; ``digest`` names and checks the cache file."""

    model_sha256: str
    tensorrt_version: str
    device: str  # GPU name and compute capability
    fp16: bool
    max_batch: int

    def digest(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **self.__dict__}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def for_model(cls, model_bytes: bytes, tensorrt_version: str, device: str, fp16: bool,
                  max_batch: int) -> EngineKey:
        return cls(hashlib.sha256(model_bytes).hexdigest(), tensorrt_version, device, bool(fp16), int(max_batch))


def cache_path(cache_dir: str | os.PathLike[str], key: EngineKey) -> Path:
    return Path(cache_dir) / f"{key.digest()[:32]}.engine"


def write_engine_cache(path: str | os.PathLike[str], key: EngineKey, engine: bytes) -> Path:
    """Write ``engine`` with its key and SHA-256 (atomically: readers see the old file or the new)."""
    header = json.dumps({"format": CACHE_FORMAT, "key": key.digest(), "engine_sha256": hashlib.sha256(engine).hexdigest(),
                         "engine_bytes": len(engine), **key.__dict__}).encode()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as handle:
        handle.write(CACHE_MAGIC + _HEADER_LEN.pack(len(header)) + header)
        handle.write(engine)
    return target


def read_engine_cache(path: str | os.PathLike[str], key: EngineKey) -> bytes:
    """The engine in ``path`` if it was built for ``key`` and is intact, else :class:`EngineCacheError`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise EngineCacheError(f"{p}: cannot read the TensorRT engine cache ({exc.strerror or exc})") from exc
    if not data.startswith(CACHE_MAGIC) or len(data) < len(CACHE_MAGIC) + _HEADER_LEN.size:
        raise EngineCacheError(f"{p}: not an intermimic TensorRT engine cache file")
    start = len(CACHE_MAGIC) + _HEADER_LEN.size
    (size,) = _HEADER_LEN.unpack_from(data, len(CACHE_MAGIC))
    if size > _MAX_HEADER or start + size > len(data):
        raise EngineCacheError(f"{p}: engine cache header is truncated or corrupt")
    try:
        header = json.loads(data[start:start + size])
        expected_sha, expected_len = str(header["engine_sha256"]), int(header["engine_bytes"])
        file_key = str(header["key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineCacheError(f"{p}: engine cache header is truncated or corrupt") from exc
    if file_key != key.digest():
        raise EngineCacheError(f"{p}: engine cache was built for another model, GPU, TensorRT version or "
                               f"settings (key {file_key[:16]}, expected {key.digest()[:16]})")
    engine = data[start + size:]
    if len(engine) != expected_len:
        raise EngineCacheError(f"{p}: engine cache is truncated ({len(engine)} of {expected_len} engine bytes)")
    if hashlib.sha256(engine).hexdigest() != expected_sha:
        raise EngineCacheError(f"{p}: engine cache is corrupt (SHA-256 of the engine does not match its header)")
    return engine


def cached_engine(cache_dir: str | os.PathLike[str], key: EngineKey, build: Any) -> tuple[bytes, Path, bool]:
    """(engine, its cache path, whether it came from the cache): a valid cached engine, else
    ``build()``'s, written to the cache. An unusable cache file is reported and replaced."""
    path = cache_path(cache_dir, key)
    if path.is_file():
        try:
            return read_engine_cache(path, key), path, True
        except EngineCacheError as exc:
            _log.warning("%s; rebuilding it", exc)
    engine = bytes(build())
    write_engine_cache(path, key, engine)
    return engine, path, False


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
        major, minor = torch.cuda.get_device_capability()
        key = EngineKey.for_model(policy_file.model_bytes, str(trt.__version__),
                                  f"{torch.cuda.get_device_name()} sm_{major}{minor}", fp16, max_batch)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        blob, engine_path, _ = cached_engine(cache, key, lambda: self._build(trt, policy_file, fp16, max_batch))
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
