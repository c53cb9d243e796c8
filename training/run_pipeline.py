"""Run the training pipeline from one config: ``python training/run_pipeline.py --config FILE --out DIR``.

Stages run in pipeline order (``PIPELINE_ORDER``); each is a function in a registry, so the later
stages (reference distillation, student, evaluation, export) slot in with ``register_stage``.
Implemented now: ``teachers`` (one PPO teacher per configured clip subset, as independent jobs:
sequential, local processes or Ray; then each teacher and the PD-replay baseline are evaluated
on the teacher's clips) and ``export`` (each teacher checkpoint to ONNX with its deployment
contract and golden pairs, parity-checked against torch by ``training.export``).

Resumable: a stage that finished writes ``DIR/stages/<stage>.json`` (atomically, after its
outputs) with the digest of the settings it depends on; a rerun skips it, and refuses to skip a
stage finished with other settings. Inside the teachers stage a finished teacher is not
retrained and an interrupted one resumes from its last checkpoint; inside the export stage a
teacher whose ONNX file matches its checkpoint is not exported again. ``DIR/report.json`` gathers
every finished stage's outputs (for teachers: checkpoint, metrics, and the PD-replay baseline;
for export: the ONNX paths, model hashes and parity errors).

Without ``--clips`` and without ``clips`` in the config, the bundled example clip is used, so a
fresh machine without any dataset can run ``config/pipeline/smoke.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from intermimic_policy.errors import IntermimicError
from training.checkpoint import load_checkpoint
from training.config import ConfigError, PipelineConfig, digest, load_pipeline_config, to_dict
from training.export import ExportConfig, export_checkpoint
from training.jobs import run_jobs
from training.subsets import EXAMPLE_CLIP, ClipSubset, load_clips, resolve_clip_sources, select
from training.teacher import TeacherJob, run_teacher_job, write_json

# The stage order of the full pipeline. Stages not registered yet are planned (spec 9, 8.2, 10).
PIPELINE_ORDER: tuple[str, ...] = ("teachers", "distill", "student", "evaluate", "export")


class PipelineError(IntermimicError):
    """A pipeline that cannot run: unknown stage, finished with other settings, failed jobs."""


@dataclass
class PipelineContext:
    config: PipelineConfig
    config_path: Path | None
    out: Path
    clip_sources: list[str]
    progress: bool = True

    def stage_dir(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[PipelineContext], dict[str, Any]]  # returns the stage's outputs (JSON-safe)
    inputs: Callable[[PipelineContext], Any]  # what the stage's results depend on (digested)
    help: str = ""


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> None:
    if stage.name not in PIPELINE_ORDER:
        raise PipelineError(f"stage {stage.name!r} is not in the pipeline order {PIPELINE_ORDER}")
    STAGES[stage.name] = stage


# -- teachers -------------------------------------------------------------------------------------
def teacher_jobs(ctx: PipelineContext) -> list[TeacherJob]:
    """One job per configured teacher, with the clips its subset selects (decided here, up front)."""
    cfg = ctx.config
    clips = load_clips(ctx.clip_sources, cfg.clip_frames)
    out = ctx.out / "teachers"
    jobs = []
    for spec in cfg.teachers:
        chosen = select(ClipSubset.from_spec(spec), clips, teacher=spec.name)
        tcfg = cfg.teacher_config(spec)
        if cfg.jobs.mode == "processes" and tcfg.torch_threads is None:
            tcfg = replace(tcfg, torch_threads=max(1, (os.cpu_count() or 1) // cfg.jobs.workers))
        jobs.append(TeacherJob(spec.name, tcfg, tuple(c.source for c in chosen), cfg.clip_frames,
                               str(out / spec.name), ctx.progress and cfg.jobs.mode == "sequential"))
    return jobs


def _teachers_inputs(ctx: PipelineContext) -> Any:
    cfg = ctx.config
    return {"teacher": cfg.teacher, "teachers": cfg.teachers, "clips": ctx.clip_sources,
            "clip_frames": cfg.clip_frames}


def _metric_row(name: str, m: dict[str, Any] | None) -> str:
    if not m:
        return f"  {name:<12} (not evaluated)"
    pct = "nan" if m["success_rate"] is None or math.isnan(m["success_rate"]) else f"{100 * m['success_rate']:.0f}%"
    return (f"  {name:<12} success {pct:>5}  duration {m['mean_duration_s']:.2f} s  "
            f"E_h {m['E_h_cm']:.2f} cm  E_o {m['E_o_cm']:.2f} cm")


def run_teachers(ctx: PipelineContext) -> dict[str, Any]:
    jobs = teacher_jobs(ctx)
    print(f"teachers: {len(jobs)} job(s), mode {ctx.config.jobs.mode}: "
          + ", ".join(f"{j.name} ({len(j.clip_sources)} clip(s))" for j in jobs))
    results = run_jobs(run_teacher_job, jobs, ctx.config.jobs)
    teachers = []
    for r in results:
        teachers.append({
            "name": r["name"], "checkpoint": r["checkpoint"], "clips": r["clips"], "iterations": r["iterations"],
            "samples": r["samples"], "samples_per_s": r["samples_per_s"], "learning_curve": r["learning_curve"],
            "metrics": r["metrics"], "pd_replay": r["baseline"],
            "bc_samples": ((r.get("extra") or {}).get("bc_warmstart") or {}).get("samples", 0),
        })
        print(f"teacher {r['name']}: {r['checkpoint']}")
        print(_metric_row("teacher", r["metrics"]))
        print(_metric_row("pd-replay", r["baseline"]))
    return {"teachers": teachers}


register_stage(Stage("teachers", run_teachers, _teachers_inputs,
                     "train one PPO teacher per clip subset, evaluate it beside PD replay"))


# -- export ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finished_teachers(ctx: PipelineContext) -> list[dict[str, Any]]:
    marker = _read_marker(marker_path(ctx.out, "teachers"))
    if marker is None:
        raise PipelineError(f"stage 'export' needs the teachers stage: no {marker_path(ctx.out, 'teachers')}; "
                            "run the teachers stage into this --out first")
    teachers = (marker.get("outputs") or {}).get("teachers") or []
    if not teachers:
        raise PipelineError(f"{marker_path(ctx.out, 'teachers')}: lists no teacher checkpoints to export")
    return list(teachers)


def export_settings(checkpoint: Path) -> ExportConfig:
    """The contract's rates and action map as the teacher was trained (its env config), not defaults."""
    env = load_checkpoint(checkpoint).config.get("env_config") or {}
    base = ExportConfig()
    return replace(base, control_hz=float(env.get("control_hz", base.control_hz)),
                   physics_hz=float(env.get("physics_hz", base.physics_hz)),
                   upstream_action_map=bool(env.get("upstream_action_scale", base.upstream_action_map)))


def _export_inputs(ctx: PipelineContext) -> Any:
    marker = _read_marker(marker_path(ctx.out, "teachers"))
    return {"teachers": marker.get("digest") if marker else None, "export": ExportConfig()}


def code_revision() -> str:
    """The git commit of this code (with "+dirty" when the work tree has changes), or "unknown"."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def provenance(ctx: PipelineContext, teacher: dict[str, Any]) -> dict[str, Any]:
    """How an exported teacher was made: recorded in its contract (``provenance``)."""
    marker = _read_marker(marker_path(ctx.out, "teachers")) or {}
    return {"pipeline_config": str(ctx.config_path) if ctx.config_path else None,
            "pipeline_config_digest": digest(to_dict(ctx.config)), "teacher": teacher.get("name"),
            "clips": teacher.get("clips"), "samples": teacher.get("samples"),
            "bc_samples": teacher.get("bc_samples"), "iterations": teacher.get("iterations"),
            "teachers_wall_s": marker.get("wall_s"), "code_revision": code_revision()}


def run_export(ctx: PipelineContext) -> dict[str, Any]:
    """Each teacher checkpoint -> ``export/<name>.onnx`` (contract, golden pairs, parity-checked).

    Resumable per teacher: ``export/<name>.json`` is written after its ONNX file and records the
    SHA-256 of both; a rerun skips a teacher whose checkpoint and ONNX file still match it.
    """
    folder = ctx.stage_dir("export")
    exports = []
    for teacher in _finished_teachers(ctx):
        name, ckpt = teacher["name"], Path(teacher["checkpoint"])
        if not ckpt.is_file():
            raise PipelineError(f"teacher {name!r}: checkpoint {ckpt} is missing; rerun the teachers stage")
        onnx_path, record_path = folder / f"{name}.onnx", folder / f"{name}.json"
        ckpt_sha = _sha256(ckpt)
        try:
            record = _read_marker(record_path)
        except PipelineError:  # a torn or foreign record: export again
            record = None
        if (record is not None and record.get("checkpoint_sha256") == ckpt_sha and onnx_path.is_file()
                and record.get("onnx_sha256") == _sha256(onnx_path)):
            print(f"export {name}: {onnx_path} is up to date, skipping")
        else:
            result = export_checkpoint(ckpt, onnx_path, config=export_settings(ckpt),
                                       provenance=provenance(ctx, teacher))
            record = {"name": name, "checkpoint": str(ckpt), "onnx": str(result.path), "kind": result.contract.kind,
                      "model_hash": result.contract.model_hash, "contract_digest": result.contract.digest(),
                      "exporter": result.exporter, "opset": result.opset, "max_error": result.max_error,
                      "size_bytes": result.size_bytes, "checkpoint_sha256": ckpt_sha,
                      "onnx_sha256": _sha256(result.path)}
            write_json(record_path, record)
            print(f"export {name}: {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.exporter} exporter, "
                  f"parity {result.max_error:.1e})")
        exports.append(record)
    return {"exports": exports}


register_stage(Stage("export", run_export, _export_inputs,
                     "export every teacher checkpoint to ONNX with its deployment contract"))


# -- driver ---------------------------------------------------------------------------------------
def marker_path(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


def _read_marker(path: Path) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise PipelineError(f"{path}: unreadable stage marker ({exc}); delete it to rerun the stage") from exc
    return data if isinstance(data, dict) else None


def resolve_stages(names: Sequence[str]) -> list[str]:
    """Requested stages in pipeline order; unknown or not-yet-available names are an error."""
    for name in names:
        if name not in STAGES:
            planned = [s for s in PIPELINE_ORDER if s not in STAGES]
            raise PipelineError(f"unknown stage {name!r}; available: {', '.join(STAGES) or 'none'}"
                                + (f" (planned, not available yet: {', '.join(planned)})" if planned else ""))
    return [s for s in PIPELINE_ORDER if s in names]


def write_report(ctx: PipelineContext) -> Path:
    report: dict[str, Any] = {"config": str(ctx.config_path) if ctx.config_path else None,
                              "out": str(ctx.out), "clips": ctx.clip_sources, "stages": {}}
    for name in PIPELINE_ORDER:
        marker = _read_marker(marker_path(ctx.out, name))
        if marker is not None:
            report["stages"][name] = {"finished_at": marker.get("finished_at"), "digest": marker.get("digest")}
            report.update(marker.get("outputs") or {})
    path = ctx.out / "report.json"
    write_json(path, report)
    return path


def run_pipeline(config: PipelineConfig, out: str | Path, *, stages: Sequence[str] | None = None,
                 clips: Sequence[str] | None = None, config_path: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Run the requested stages (default: the config's) into ``out``; returns the report."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = resolve_stages(list(stages) if stages else list(config.stages))
    patterns = list(clips) if clips else list(config.clips)
    extra = [p for spec in config.teachers for p in spec.paths]
    sources = resolve_clip_sources((patterns or ([] if extra else [EXAMPLE_CLIP])) + extra)
    ctx = PipelineContext(config, Path(config_path) if config_path else None, out, sources, progress)
    for name in names:
        stage = STAGES[name]
        key = digest(stage.inputs(ctx))
        marker = _read_marker(marker_path(out, name))
        if marker is not None:
            if marker.get("digest") != key:
                raise PipelineError(
                    f"stage {name!r} in {out} finished with other settings or clips (digest {marker.get('digest')} "
                    f"!= {key}); use another --out, or delete {marker_path(out, name)} to redo it")
            print(f"stage {name}: already done ({marker_path(out, name)}), skipping")
            continue
        print(f"stage {name}: {stage.help}")
        t0 = time.perf_counter()
        outputs = stage.run(ctx)
        marker_path(out, name).parent.mkdir(parents=True, exist_ok=True)
        write_json(marker_path(out, name), {"stage": name, "digest": key, "outputs": to_dict(outputs),
                                            "wall_s": time.perf_counter() - t0,
                                            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_report(ctx)
    path = write_report(ctx)
    print(f"report: {path}")
    return json.loads(path.read_text())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="pipeline YAML (e.g. config/pipeline/smoke.yaml)")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--stages", nargs="+", metavar="STAGE",
                   help=f"stages to run (default: the config's); pipeline order: {', '.join(PIPELINE_ORDER)}")
    p.add_argument("--clips", nargs="+", metavar="PATH", help="clip files or globs (override the config's clips)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def show_progress(no_progress: bool) -> bool:
    """Progress bars only on a terminal and without --no-progress; otherwise every bar of this
    process is off (``TQDM_DISABLE``, which tqdm reads for bars made anywhere), so logs
    redirected to a file get lines, not thousands of carriage-return updates."""
    on = not no_progress and sys.stderr.isatty()
    if not on:
        os.environ["TQDM_DISABLE"] = "1"
    return on


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = show_progress(args.no_progress)
    try:
        config = load_pipeline_config(args.config)
        run_pipeline(config, args.out, stages=args.stages, clips=args.clips, config_path=args.config,
                     progress=progress)
    except (IntermimicError, ConfigError) as exc:
        print(f"run_pipeline: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"run_pipeline: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
