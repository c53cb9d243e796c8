"""TensorRT engine cache, tested without a GPU: keyed by hash, checked by hash, written atomically."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from intermimic_policy.runtime import tensorrt_backend as trt_cache
from intermimic_policy.runtime.tensorrt_backend import (
    EngineCacheError,
    EngineKey,
    cache_path,
    cached_engine,
    read_engine_cache,
    write_engine_cache,
)

KEY = EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA H200 sm_90", False, 4096)
ENGINE = bytes(range(256)) * 40


def test_key_changes_with_everything_the_engine_depends_on() -> None:
    others = [EngineKey.for_model(b"other model", "10.3.0", "NVIDIA H200 sm_90", False, 4096),
              EngineKey.for_model(b"onnx model bytes", "10.4.0", "NVIDIA H200 sm_90", False, 4096),
              EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA L4 sm_89", False, 4096),
              EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA H200 sm_90", True, 4096),
              EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA H200 sm_90", False, 1)]
    digests = {KEY.digest(), *(k.digest() for k in others)}
    assert len(digests) == 1 + len(others)
    assert KEY.digest() == EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA H200 sm_90", False,
                                               4096).digest()


def test_round_trip(tmp_path: Path) -> None:
    path = write_engine_cache(cache_path(tmp_path / "cache", KEY), KEY, ENGINE)
    assert read_engine_cache(path, KEY) == ENGINE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def _damaged(tmp_path: Path, how: str) -> Path:
    path = write_engine_cache(tmp_path / "e.engine", KEY, ENGINE)
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[-100] ^= 0xFF
    elif how == "truncated":
        data = data[:-10]
    elif how == "header":
        data = data[:30]
    elif how == "foreign":
        data = bytearray(b"\x00" * 64)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("how", "expected"), [
    ("flipped", "corrupt (SHA-256 of the engine does not match"),
    ("truncated", "truncated"),  # the exact counts are checked below
    ("header", "header is truncated or corrupt"),
    ("foreign", "not an intermimic TensorRT engine cache file"),
])
def test_damaged_cache_is_refused_naming_the_problem(tmp_path: Path, how: str, expected: str) -> None:
    path = _damaged(tmp_path, how)
    if how == "truncated":
        expected = f"truncated ({len(ENGINE) - 10} of {len(ENGINE)} engine bytes)"
    with pytest.raises(EngineCacheError) as info:
        read_engine_cache(path, KEY)
    assert str(info.value).startswith(f"{path}:") and expected in str(info.value)


def test_cache_of_another_key_is_refused(tmp_path: Path) -> None:
    path = write_engine_cache(tmp_path / "e.engine", KEY, ENGINE)
    other = EngineKey.for_model(b"onnx model bytes", "10.3.0", "NVIDIA H200 sm_90", True, 4096)
    with pytest.raises(EngineCacheError, match="built for another model, GPU, TensorRT version or settings"):
        read_engine_cache(path, other)


def test_cached_engine_builds_once_and_rebuilds_a_damaged_file(tmp_path: Path, caplog) -> None:
    builds = []

    def build() -> bytes:
        builds.append(1)
        return ENGINE

    engine, path, hit = cached_engine(tmp_path, KEY, build)
    assert (engine, hit, len(builds)) == (ENGINE, False, 1)
    engine, _, hit = cached_engine(tmp_path, KEY, build)
    assert (engine, hit, len(builds)) == (ENGINE, True, 1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    engine, _, hit = cached_engine(tmp_path, KEY, build)
    assert (engine, hit, len(builds)) == (ENGINE, False, 2)
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert read_engine_cache(path, KEY) == ENGINE


def test_failed_write_keeps_the_old_cache_and_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    path = write_engine_cache(tmp_path / "e.engine", KEY, ENGINE)
    real = trt_cache.atomic_output

    @contextmanager
    def failing_after_header(target):  # type: ignore[no-untyped-def]
        with real(target) as handle:
            class Handle:
                def write(self, data: bytes) -> int:
                    if data is not ENGINE and not data.startswith(trt_cache.CACHE_MAGIC):
                        raise OSError("disk full")
                    return handle.write(data)
            yield Handle()

    monkeypatch.setattr(trt_cache, "atomic_output", failing_after_header)
    with pytest.raises(OSError, match="disk full"):
        trt_cache.write_engine_cache(path, KEY, b"new engine")  # the header goes out, the engine fails
    assert read_engine_cache(path, KEY) == ENGINE
    assert [p.name for p in tmp_path.iterdir()] == ["e.engine"]
