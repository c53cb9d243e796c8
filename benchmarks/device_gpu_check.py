"""GPU figures in one short run: MuJoCo Warp env throughput, policy latency, training on Warp.

Meant for a lent GPU machine with little time on it (``benchmarks/device_gpu_check.sh`` runs
each part under a hard time limit); every measurement is written to a JSON file as soon as it
is taken, and a failing measurement records its error and the run goes on.

* ``env``: for the example box clip and one OMOMO clip, per number of worlds: the raw physics of
  ``MujocoWarpBackend`` (graph-replayed substeps; physics steps/s = worlds x substeps / s) and
  ``HOIEnv.step`` control steps/s with PD-replay actions; then the CPU backend (``mujoco.batch``
  and ``HOIEnv``) on the machine's cores for comparison.
* ``latency``: the random-init teacher ONNX (what ``intermimic export --init random --kind
  teacher`` writes) at batch 1: TensorRT and ONNX Runtime's CUDA EP where installed, torch CUDA
  (eager and CUDA-graph replay, numpy in and out), ONNX Runtime CPU with 1 thread.
* ``train``: the one-clip teacher recipe (``config/pipeline/one_clip_cpu.yaml``) on MuJoCo Warp
  (device cuda, more worlds), logging samples/s, success, E_h and episode duration against
  wall time until a time budget is spent.

    python benchmarks/device_gpu_check.py env --out env.json [--worlds 256 1024] [--device cuda]
    python benchmarks/device_gpu_check.py latency --out latency.json
    python benchmarks/device_gpu_check.py train --out train.json --budget-s 150
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intermimic_policy.motion.io import load_motion

RESULT: dict[str, Any] = {}


def _save(out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(RESULT, indent=1, default=float))
    os.replace(tmp, out)


def _attempt(out: Path, key: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; store its result (or its error) under ``key`` and save at once."""
    t0 = time.perf_counter()
    try:
        value = fn()
        RESULT[key] = value
        print(f"[{time.perf_counter() - t0:6.1f}s] {key}: {value}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a benchmark records the failure and goes on
        value = None
        RESULT[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(f"[{time.perf_counter() - t0:6.1f}s] {key}: FAILED {type(exc).__name__}: {exc}", flush=True)
    _save(out)
    return value


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _clips(omomo: str | None) -> dict[str, Any]:
    from intermimic_policy.motion.example import make_example_motion

    clips = {"example_box": make_example_motion()}
    if omomo:
        clips["omomo_" + Path(omomo).stem] = load_motion(omomo)
    return clips


# -- env ---------------------------------------------------------------------------------------


def warp_env_rates(clip: Any, worlds: int, steps: int, device: str) -> dict[str, float]:
    """Raw Warp physics and HOIEnv rates for one clip and world count."""
    from intermimic_policy.sim.env import HOIEnv
    from intermimic_policy.sim.env_config import HOIEnvConfig

    cfg = HOIEnvConfig(num_worlds=worlds, backend="warp", device=device, state_init="start", episode_cap=None)
    t0 = time.perf_counter()
    env = HOIEnv(cfg, [clip])
    env.reset()
    actions = env.pd_replay_actions()
    env.step(actions)  # captures the CUDA graph (and compiles kernels the first time)
    _sync(device)
    setup_s = time.perf_counter() - t0
    backend = env.groups[0].backend
    substeps = backend.substeps
    targets = backend._ctrl[:, backend._actuators].clone()  # hold the current pose: physics only
    backend.step(targets)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        backend.step(targets)
    _sync(device)
    raw = worlds * steps / (time.perf_counter() - t)
    env.reset()
    env.step(env.pd_replay_actions())
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(env.pd_replay_actions())
    _sync(device)
    rate = worlds * steps / (time.perf_counter() - t)
    failed = int(backend.failed().sum())
    env.close()
    del env, backend
    torch.cuda.empty_cache() if device.startswith("cuda") else None
    return {"worlds": worlds, "setup_s": round(setup_s, 2), "physics_control_steps_per_s": raw,
            "physics_steps_per_s": raw * substeps, "env_control_steps_per_s": rate,
            "env_over_physics": rate / raw, "substeps": substeps, "failed_worlds": failed}


def cpu_env_rates(clip: Any, worlds: int, steps: int, threads: int) -> dict[str, float]:
    """CPU backend: raw ``mujoco.batch`` physics and HOIEnv, same clip and world count."""
    import bench_env  # benchmarks/ is on sys.path when this file runs as a script

    model, qpos, qvel, ctrl = bench_env.physics_inputs(clip, worlds, steps)
    raw = bench_env.bench_batch(model, qpos, qvel, ctrl, worlds, threads)
    env = bench_env.bench_env(clip, worlds, threads, steps)
    return {"worlds": worlds, "threads": threads, "physics_control_steps_per_s": raw,
            "physics_steps_per_s": raw * bench_env.SUBSTEPS, "env_control_steps_per_s": env,
            "env_over_physics": env / raw}


def run_env(args: argparse.Namespace) -> None:
    RESULT["host"] = {"cpus": os.cpu_count(), "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        import mujoco
        import mujoco_warp
        import warp

        RESULT["host"].update(mujoco=mujoco.__version__, mujoco_warp=mujoco_warp.__version__, warp=warp.__version__)
    except Exception as exc:  # noqa: BLE001
        RESULT["host"]["import_error"] = repr(exc)
    clips = _clips(args.clip)
    deadline = time.perf_counter() + args.budget_s
    for worlds in args.worlds:  # worlds outer: a short budget still covers both scenes
        for name, clip in clips.items():
            if time.perf_counter() > deadline:
                RESULT[f"warp/{name}/{worlds}"] = {"skipped": "time budget spent"}
                continue
            _attempt(args.out, f"warp/{name}/{worlds}", lambda c=clip, w=worlds: warp_env_rates(c, w, args.steps,
                                                                                                 args.device))
    for name, clip in clips.items():
        for worlds in args.cpu_worlds:
            _attempt(args.out, f"cpu/{name}/{worlds}",
                     lambda c=clip, w=worlds: cpu_env_rates(c, w, args.cpu_steps, args.cpu_threads))


# -- latency -----------------------------------------------------------------------------------


def _percentiles(fn: Callable[[], object], calls: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    us = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        us[i] = (clock() - t0) / 1e3
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99), "max_us": float(us.max()),
            "calls": calls}


def run_latency(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    from intermimic_policy.runtime.loader import load_policy
    from training.export import PolicyGraph, export_policy, random_policy

    RESULT["host"] = {"onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
                      "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        import tensorrt

        RESULT["host"]["tensorrt"] = tensorrt.__version__
    except ImportError as exc:
        RESULT["host"]["tensorrt"] = f"not installed ({exc})"
    folder = Path(tempfile.mkdtemp())
    network, normalizer, spec = random_policy("teacher", seed=0)
    path = folder / "teacher.onnx"
    export_policy(network, normalizer, path, spec=spec, model_hash="bench")
    obs = np.random.default_rng(0).normal(size=(1, spec.dim)).astype(np.float32)
    RESULT["model"] = {"kind": "teacher", "obs_dim": spec.dim, "onnx_bytes": path.stat().st_size}
    n, w = args.calls, args.warmup

    def ort_policy(backend: str, **kw: Any) -> dict[str, float]:
        policy = load_policy(path, backend=backend, **kw)
        return _percentiles(lambda: policy(obs), n, w)

    _attempt(args.out, "onnxruntime_cpu_1thread", lambda: ort_policy("onnxruntime", threads=1))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        _attempt(args.out, "onnxruntime_cuda_ep", lambda: ort_policy("onnxruntime-cuda"))
    else:
        RESULT["onnxruntime_cuda_ep"] = {"skipped": "CUDAExecutionProvider not in this onnxruntime"}
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        _attempt(args.out, "onnxruntime_tensorrt_ep", lambda: ort_policy("onnxruntime-tensorrt"))
    if isinstance(RESULT["host"]["tensorrt"], str) and RESULT["host"]["tensorrt"].startswith("not"):
        RESULT["tensorrt_fp32"] = RESULT["tensorrt_fp16"] = {"skipped": RESULT["host"]["tensorrt"]}
    else:
        _attempt(args.out, "tensorrt_fp32", lambda: ort_policy("tensorrt", cache_dir=folder))
        _attempt(args.out, "tensorrt_fp16", lambda: ort_policy("tensorrt", fp16=True, cache_dir=folder))

    graph = PolicyGraph(network, normalizer).eval()
    torch.set_num_threads(1)
    with torch.inference_mode():
        x = torch.from_numpy(obs)
        RESULT["torch_cpu_eager_1thread"] = _percentiles(lambda: graph(x).numpy(), n, w)
        if torch.cuda.is_available():
            g = graph.cuda()

            def eager() -> np.ndarray:
                return g(torch.from_numpy(obs).cuda()).cpu().numpy()

            _attempt(args.out, "torch_cuda_eager", lambda: _percentiles(eager, n, w))
            static_in = torch.zeros(1, spec.dim, device="cuda")
            pinned_in = torch.zeros(1, spec.dim).pin_memory()
            for _ in range(3):
                g(static_in)
            torch.cuda.synchronize()
            cg = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cg):
                static_out = g(static_in)
            pinned_out = torch.zeros(static_out.shape).pin_memory()

            def replay() -> np.ndarray:
                pinned_in.numpy()[:] = obs
                static_in.copy_(pinned_in, non_blocking=True)
                cg.replay()
                pinned_out.copy_(static_out, non_blocking=True)
                torch.cuda.current_stream().synchronize()
                return pinned_out.numpy()

            _attempt(args.out, "torch_cuda_graph", lambda: _percentiles(replay, n, w))
            for batch in (1024, 4096):
                xb = torch.randn(batch, spec.dim, device="cuda")

                def batched(xb: torch.Tensor = xb) -> None:
                    g(xb)
                    torch.cuda.synchronize()

                _attempt(args.out, f"torch_cuda_eager_batch{batch}",
                         lambda b=batched: _percentiles(b, max(200, n // 10), 20))
    _save(args.out)


# -- train -------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> None:
    import dataclasses

    from training.config import load_pipeline_config, to_dict
    from training.logging_utils import TrainingLogger
    from training.teacher import TeacherTrainer, boundary_seed, evaluate_teacher

    pipeline = load_pipeline_config(args.config)
    cfg = pipeline.teacher
    cfg.device = args.device
    cfg.torch_threads = None
    cfg.env = dataclasses.replace(cfg.env, num_envs=args.worlds, backend=args.backend)
    if args.bc_rounds is not None:
        cfg.bc_warmstart = dataclasses.replace(cfg.bc_warmstart, iterations=args.bc_rounds)
    if args.minibatch is not None:
        cfg.ppo = dataclasses.replace(cfg.ppo, minibatch_size=args.minibatch)
    cfg.iterations = 10_000
    clip = load_motion(args.clip)
    RESULT["setup"] = {"clip": Path(args.clip).name, "frames": clip.num_frames, "config": to_dict(cfg),
                       "samples_per_iteration": cfg.samples_per_iteration}
    curve: list[dict[str, float]] = []
    RESULT["curve"] = curve
    t0 = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp())
    trainer = TeacherTrainer("gpu_one_clip", [clip], cfg, out_dir, progress=False)
    RESULT["setup"]["build_s"] = time.perf_counter() - t0
    trainer.logger = TrainingLogger(None, 0, {})
    _save(args.out)
    try:
        if cfg.bc_warmstart.enabled and cfg.bc_warmstart.iterations > 0:
            t = time.perf_counter()
            trainer.warm_start()
            RESULT["bc_warmstart"] = {**(trainer.bc_summary or {}), "wall_s_measured": time.perf_counter() - t}
            _save(args.out)
        trainer.runner.reset(seed=boundary_seed(cfg.seed, 0))
        samples = cfg.bc_samples
        while time.perf_counter() - t0 < args.budget_s:
            stats = trainer.runner.learn_iteration()
            samples += trainer.runner.samples_per_iteration
            trainer.logger.log(trainer.runner.iteration, stats)
            row = {"iteration": trainer.runner.iteration, "wall_s": time.perf_counter() - t0, "samples": samples,
                   "samples_per_s": stats.get("perf/samples_per_s"),
                   "env_samples_per_s": stats.get("perf/env_samples_per_s"),
                   "reward_mean": stats.get("reward/mean"),
                   "success": trainer.logger.last("episode/success"),
                   "E_h_m": trainer.logger.last("metrics/E_h"), "E_o_m": trainer.logger.last("metrics/E_o"),
                   "episode_length_steps": trainer.logger.last("episode/length")}
            row["duration_s"] = row["episode_length_steps"] / cfg.env.overrides.get("control_hz", 30.0)
            curve.append(row)
            print(json.dumps(row), flush=True)
            _save(args.out)
        final = trainer.save(out_dir / "final.pt", with_optimizer=False)
    finally:
        trainer.close()
    RESULT["train_wall_s"] = time.perf_counter() - t0
    if args.eval:
        def ev() -> dict[str, Any]:
            teacher, baseline = evaluate_teacher(final, [clip], cfg, progress=False)
            keys = ("success_rate", "mean_duration_s", "E_h_cm", "E_o_cm")
            return {"teacher": {k: teacher.get(k) for k in keys}, "pd_replay": {k: baseline.get(k) for k in keys}}

        _attempt(args.out, "eval", ev)
    _save(args.out)


# -- report ------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 0) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:,.{digits}f}"


def _bc_text(bc: Any) -> str:
    if not isinstance(bc, dict):
        return "off"
    return (f"{bc.get('rounds')} DAgger rounds, {_fmt(bc.get('samples'))} samples in {_fmt(bc.get('wall_s'), 1)} s, "
            f"final action MSE {bc.get('final_dagger_mse', float('nan')):.1e}")


def run_report(args: argparse.Namespace) -> None:
    """Merge the parts' JSON files into one and write a short markdown table beside it."""
    merged = {p.stem: json.loads(p.read_text()) for p in args.inputs if p.is_file()}
    merged["meta"] = {"note": args.note} if args.note else {}
    args.out.write_text(json.dumps(merged, indent=1, default=float))
    lines = [f"# GPU figures ({args.title})", ""]
    if args.note:
        lines += [args.note, ""]
    env = merged.get("env", {})
    if env:
        lines += ["## MuJoCo Warp vs CPU backend (world control steps/s; physics steps/s = x8 substeps)", "",
                  "| backend | scene | worlds | raw physics ctrl steps/s | physics steps/s | HOIEnv ctrl steps/s "
                  "| env / physics | setup s |", "|---|---|---|---|---|---|---|---|"]
        for key, v in env.items():
            if "/" not in key:
                continue
            kind, scene, worlds = key.split("/")
            if not isinstance(v, dict) or "error" in v or "skipped" in v:
                why = (v or {}).get("error") or (v or {}).get("skipped") if isinstance(v, dict) else v
                lines.append(f"| {kind} | {scene} | {worlds} | {str(why)[:90]} | | | | |")
                continue
            label = kind if kind == "warp" else f"cpu {v.get('threads')} threads"
            lines.append(f"| {label} | {scene} | {worlds} | {_fmt(v['physics_control_steps_per_s'])} "
                         f"| {_fmt(v['physics_steps_per_s'])} | {_fmt(v['env_control_steps_per_s'])} "
                         f"| {_fmt(100 * v['env_over_physics'])}% | {_fmt(v.get('setup_s'), 1)} |")
        lines.append("")
    lat = merged.get("latency", {})
    if lat:
        lines += ["## Teacher policy latency, batch 1 (microseconds)", "",
                  "| runtime | p50 | p99 | max |", "|---|---|---|---|"]
        for key, v in lat.items():
            if key in ("host", "model") or not isinstance(v, dict):
                continue
            if "p50_us" in v:
                lines.append(f"| {key} | {_fmt(v['p50_us'], 1)} | {_fmt(v['p99_us'], 1)} | {_fmt(v['max_us'], 1)} |")
            else:
                lines.append(f"| {key} | {str(v.get('skipped') or v.get('error'))[:100]} | | |")
        lines.append("")
    train = merged.get("train", {})
    curve = train.get("curve") or []
    if train:
        setup = train.get("setup", {})
        lines += ["## One-clip teacher training on MuJoCo Warp", "",
                  f"clip {setup.get('clip')}, {setup.get('samples_per_iteration')} samples per PPO iteration, "
                  f"env build {_fmt(setup.get('build_s'), 1)} s; warm start: {_bc_text(train.get('bc_warmstart'))}. "
                  "success, E_h and duration are over the episodes that ended in the iteration (training "
                  "episodes, stochastic actions, hybrid starts), samples include the warm start's.", "",
                  "| iteration | wall s | samples | samples/s | success % | E_h cm | duration s |",
                  "|---|---|---|---|---|---|---|"]
        step = max(1, len(curve) // 12)
        for row in curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else []):
            lines.append(f"| {row['iteration']} | {_fmt(row['wall_s'], 1)} | {_fmt(row['samples'])} "
                         f"| {_fmt(row['samples_per_s'])} | {_fmt(100 * row['success'], 2)} "
                         f"| {_fmt(100 * row['E_h_m'] if isinstance(row['E_h_m'], float) else None, 1)} "
                         f"| {_fmt(row['duration_s'], 2)} |")
        ev = train.get("eval")
        if isinstance(ev, dict) and "error" in ev:
            lines += ["", f"final deterministic evaluation failed: `{ev['error']}` "
                          f"(at `{ev.get('traceback', '').strip().splitlines()[-3].strip()}`)"]
        elif ev:
            lines += ["", f"final deterministic evaluation: `{json.dumps(ev, default=float)}`"]
        for key in ("error", "traceback"):
            if key in train:
                lines += ["", f"{key}: `{str(train[key])[-400:]}`"]
        lines.append("")
    args.md.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    e = sub.add_parser("env")
    e.add_argument("--worlds", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    e.add_argument("--steps", type=int, default=20, help="timed control steps per measurement")
    e.add_argument("--device", default="cuda")
    e.add_argument("--budget-s", type=float, default=1e9, help="skip Warp sizes once this is spent")
    e.add_argument("--cpu-worlds", type=int, nargs="*", default=[256, 1024])
    e.add_argument("--cpu-steps", type=int, default=8)
    e.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    lat = sub.add_parser("latency")
    lat.add_argument("--calls", type=int, default=2000)
    lat.add_argument("--warmup", type=int, default=200)
    t = sub.add_parser("train")
    t.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config/pipeline/one_clip_cpu.yaml"))
    t.add_argument("--worlds", type=int, default=2048)
    t.add_argument("--device", default="cuda")
    t.add_argument("--backend", default="warp", help="warp | mujoco (the CPU backend, for a local check)")
    t.add_argument("--budget-s", type=float, default=150.0, help="stop starting PPO iterations after this")
    t.add_argument("--bc-rounds", type=int, default=None)
    t.add_argument("--minibatch", type=int, default=None)
    t.add_argument("--no-eval", dest="eval", action="store_false")
    r = sub.add_parser("report")
    r.add_argument("inputs", type=Path, nargs="+", help="env.json latency.json train.json")
    r.add_argument("--md", type=Path, required=True)
    r.add_argument("--title", default="NVIDIA H200")
    r.add_argument("--note", default="")
    for p in (e, t):
        p.add_argument("--clip", default=None, help="an OMOMO clip (.pt)")
    for p in (e, lat, t, r):
        p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.part == "train" and not args.clip:
        ap.error("train needs --clip")
    part = {"env": run_env, "latency": run_latency, "train": run_train, "report": run_report}[args.part]
    try:
        part(args)
    except Exception as exc:
        if args.part != "report":  # keep what was measured, with the reason it stopped
            RESULT["error"] = f"{type(exc).__name__}: {exc}"
            RESULT["traceback"] = traceback.format_exc()[-3000:]
            _save(args.out)
        raise


if __name__ == "__main__":
    main()
