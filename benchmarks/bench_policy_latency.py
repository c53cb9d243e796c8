"""Single-sample policy latency: teacher MLP and Transformer student, ONNX Runtime vs torch eager.

Exports random-init policies (same graphs as trained ones) to a temporary folder, then times
``--calls`` single-observation calls after ``--warmup`` calls and prints median / p99 / max in
microseconds for each variant (p90 beside p99: on a shared machine p99 is the scheduler's):

* ``policy``: ``load_policy(...)(obs)``, the deployment path (input checks included);
* ``session``: the bare ``InferenceSession.run`` (what the checks cost = policy - session);
* ``iobinding``: ``run_with_iobinding`` into a preallocated output;
* graph optimisation levels and intra-op spinning on/off with 2 threads;
* ``int8 dynamic quant``: ``onnxruntime.quantization.quantize_dynamic`` (informational: its
  error exceeds the 1e-4 golden tolerance, so deployment does not use it);
* ``torch eager``: the exported ``PolicyGraph`` under ``torch.inference_mode`` with 1 thread.

Targets (1 thread): student p99 <= 1.0 ms, teacher p99 <= 0.3 ms. The machine may be shared: run
it when quiet, and use ``--repeat`` to see the spread.

    python benchmarks/bench_policy_latency.py [--calls 2000] [--repeat 3] [--kinds teacher student]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from intermimic_policy.runtime.loader import load_policy
from training.export import PolicyGraph, export_policy, random_policy

TARGET_P99_US = {"teacher": 300.0, "student": 1000.0}


def _time(fn: Callable[[], object], calls: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out / 1e3  # us


def _row(kind: str, label: str, us: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    flag = ""
    if label.startswith("policy ort 1 thread"):
        target = TARGET_P99_US[kind]
        flag = f"  (target p99 <= {target:.0f} us: {'met' if p99 <= target else 'MISSED'})"
    return f"  {kind:8s} {label:40s} median {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:8.1f}  max {us.max():9.1f} us{flag}"


def _session(path: Path, threads: int, level: str, spinning: bool) -> ort.InferenceSession:
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[level]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bench(kind: str, folder: Path, calls: int, warmup: int) -> list[str]:
    network, normalizer, spec = random_policy(kind, seed=0)
    path = folder / f"{kind}.onnx"
    export_policy(network, normalizer, path, spec=spec, model_hash="bench")
    obs = np.random.default_rng(0).normal(size=(1, spec.dim)).astype(np.float32)
    rows = []

    for threads in (1, 2):
        policy = load_policy(path, backend="onnxruntime", threads=threads)
        rows.append(_row(kind, f"policy ort {threads} thread{'s' if threads > 1 else ''}",
                         _time(partial(policy, obs), calls, warmup)))
    for threads, level, spinning in ((1, "all", True), (1, "basic", True), (1, "disable", True),
                                     (2, "all", False)):
        s = _session(path, threads, level, spinning)
        rows.append(_row(kind, f"session {threads}t opt={level} spin={int(spinning)}",
                         _time(partial(s.run, ["actions"], {"obs": obs}), calls, warmup)))
    s = _session(path, 1, "all", True)
    binding = s.io_binding()
    out = np.empty((1, 153), np.float32)
    binding.bind_cpu_input("obs", obs)
    binding.bind_output("actions", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    rows.append(_row(kind, "iobinding 1t opt=all", _time(lambda: s.run_with_iobinding(binding), calls, warmup)))

    # int8 dynamic quantisation: informational only, it breaks the 1e-4 golden-pair contract
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain, quant = folder / f"{kind}_plain.onnx", folder / f"{kind}_int8.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    quantize_dynamic(str(plain), str(quant), weight_type=QuantType.QInt8)
    q = _session(quant, 1, "all", True)
    err = float(np.abs(q.run(["actions"], {"obs": obs})[0] - s.run(["actions"], {"obs": obs})[0]).max())
    rows.append(_row(kind, f"int8 dynamic quant 1t (err {err:.1e})",
                     _time(lambda: q.run(["actions"], {"obs": obs}), calls, warmup)))

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    graph = PolicyGraph(network, normalizer).eval()
    x = torch.from_numpy(obs)
    with torch.inference_mode():
        rows.append(_row(kind, "torch eager 1 thread", _time(lambda: graph(x), calls, warmup)))
    torch.set_num_threads(previous)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=["teacher", "student"], choices=["teacher", "student"])
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's pre-processing advice
    if args.calls < 2000:
        parser.error("--calls must be >= 2000 for a meaningful p99")
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.calls} single-sample calls "
          f"after {args.warmup} warm-up, times in microseconds")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            if args.repeat > 1:
                print(f"run {r + 1}/{args.repeat}")
            for kind in args.kinds:
                for row in bench(kind, Path(tmp), args.calls, args.warmup):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
