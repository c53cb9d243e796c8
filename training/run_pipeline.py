"""Run the training pipeline from one config: ``python training/run_pipeline.py --config FILE --out DIR``.

Stages run in pipeline order (``PIPELINE_ORDER``); each is a function in a registry
(``register_stage``). ``--stages`` runs any prefix or any single stage over the outputs of the
earlier ones (read from their markers):

* ``teachers``: one PPO teacher per configured clip subset, as independent jobs (sequential,
  local processes or Ray); each teacher and the PD-replay baseline evaluated on its clips;
* ``distill``: each teacher tracks its clips from frame 0 with its mean action; the rollouts are
  written as refined clips (``.npz`` and InterMimic ``OMOMO_retarget`` ``.pt``) with a per-clip
  table and plots against the MoCap (``training.distill``);
* ``student``: the Transformer or MLP student trained DAgger -> PPO on the refined clips against
  the batched teachers, in-process or under ``torchrun`` (``training.student``);
* ``evaluate``: the student, its teachers and PD replay side by side, on the MoCap and on the
  refined references;
* ``export``: each teacher checkpoint and the student to ONNX with its deployment contract and
  golden pairs, parity-checked against torch by ``training.export``.

Resumable: a stage that finished writes ``DIR/stages/<stage>.json`` (atomically, after its
outputs) with the digest of the settings it depends on; a rerun skips it, and refuses to skip a
stage finished with other settings. Inside the teachers stage a finished teacher is not
retrained and an interrupted one resumes from its last checkpoint; inside the export stage a
policy whose ONNX file matches its checkpoint is not exported again, and a finished student run
is not retrained. ``DIR/report.json`` gathers every finished stage's outputs (teachers:
checkpoint, metrics and the PD-replay baseline; distill: ``refined`` clips and their table;
student: the checkpoint and its schedule phases; evaluate: the side-by-side table; export: the
ONNX paths, model hashes and parity errors).

Without ``--clips`` and without ``clips`` in the config, the bundled example clip is used, so a
fresh machine without any dataset can run ``config/pipeline/smoke.yaml``.
"""

from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C, even during the imports below, ends with one line and status 130
    from intermimic_policy.interrupt import run_module_main

    run_module_main("training.run_pipeline", "run_pipeline")

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
from training.config import ConfigError, PipelineConfig, digest, load_pipeline_config, to_dict
from training.export import ExportConfig, export_checkpoint
from training.jobs import run_jobs
from training.subsets import EXAMPLE_CLIP, ClipSubset, load_clips, resolve_clip_sources, select
from training.teacher import TeacherJob, run_teacher_job, write_json

# The stage order of the full pipeline (spec 9, 8.2, 10).
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

    def num(key: str, spec: str, scale: float = 1.0) -> str:  # NaN is null once read back from JSON
        v = m.get(key)
        return "nan" if v is None or math.isnan(v) else format(scale * v, spec)

    success = num("success_rate", ".0f", 100)
    return (f"  {name:<12} success {success + ('%' if success != 'nan' else ''):>5}  duration {num('mean_duration_s', '.2f')} s  "
            f"E_h {num('E_h_cm', '.2f')} cm  E_o {num('E_o_cm', '.2f')} cm")


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


# -- distill (reference distillation, spec 9.1) -----------------------------------------------------
def _marker_digest(ctx: PipelineContext, stage: str) -> str | None:
    marker = _read_marker(marker_path(ctx.out, stage))
    return marker.get("digest") if marker else None


def _stage_outputs(ctx: PipelineContext, stage: str, needed_by: str) -> dict[str, Any]:
    marker = _read_marker(marker_path(ctx.out, stage))
    if marker is None:
        raise PipelineError(f"stage {needed_by!r} needs the {stage} stage: no {marker_path(ctx.out, stage)}; "
                            f"run the {stage} stage into this --out first")
    return dict(marker.get("outputs") or {})


def _distill_inputs(ctx: PipelineContext) -> Any:
    return {"teachers": _marker_digest(ctx, "teachers"), "distill": ctx.config.distill,
            "clip_frames": ctx.config.clip_frames}


def run_distill(ctx: PipelineContext) -> dict[str, Any]:
    """Each teacher tracks its clips from frame 0 (mean action); the rollouts become refined clips."""
    from training.distill import counts, distill_teacher, load_mocap, table_markdown
    from training.eval_policy import load_checkpoint_policy

    cfg = ctx.config
    folder = ctx.stage_dir("distill")
    rows: list[dict[str, Any]] = []
    for teacher in _stage_outputs(ctx, "teachers", "distill").get("teachers") or []:
        name, sources = teacher["name"], list(teacher["clips"])
        motions = load_mocap(sources, cfg.clip_frames)
        policy = load_checkpoint_policy(teacher["checkpoint"], cfg.teacher.device)
        rows += distill_teacher(name, policy, motions, sources, folder / name, cfg.distill,
                                backend=cfg.teacher.env.backend, seed=cfg.teacher.seed, progress=ctx.progress)
    table = folder / "table.md"
    write_text(table, table_markdown(rows))
    n = counts(rows)
    print(f"distill: {len(rows)} clip(s): {n['complete']} complete, {n['prefix']} kept prefix(es), "
          f"{n['dropped']} dropped (early_termination={cfg.distill.early_termination}); table {table}")
    print(table.read_text(), end="")
    return {"refined": rows, "distill_counts": n, "distill_table": str(table)}


register_stage(Stage("distill", run_distill, _distill_inputs,
                     "teachers track their clips from frame 0; the rollouts become refined clips"))


# -- student (DAgger -> PPO, spec 9.2-9.4) ----------------------------------------------------------
def _student_inputs(ctx: PipelineContext) -> Any:
    return {"distill": _marker_digest(ctx, "distill"), "student": ctx.config.student,
            "clip_frames": ctx.config.clip_frames}


def student_job(ctx: PipelineContext) -> Any:
    from training.student.run import StudentJob

    teachers = _stage_outputs(ctx, "teachers", "student").get("teachers") or []
    rows = [r for r in _stage_outputs(ctx, "distill", "student").get("refined") or [] if r.get("npz")]
    if not rows:
        raise PipelineError("stage 'student': distillation kept no clip (all dropped); see the distill table")
    owned: dict[str, list[str]] = {}
    for r in rows:
        owned.setdefault(r["teacher"], []).append(r["clip"])
    return StudentJob(ctx.config.student, [r["npz"] for r in rows], [r["source"] for r in rows],
                      ctx.config.clip_frames, {t["name"]: t["checkpoint"] for t in teachers if t["name"] in owned},
                      owned, str(ctx.stage_dir("student")), ctx.progress)


def run_student(ctx: PipelineContext) -> dict[str, Any]:
    """Train the student in this process, or under torchrun with ``student.nproc`` processes."""
    import json
    import subprocess

    from training.student.run import RESULT_NAME, train_student

    job = student_job(ctx)
    nproc = ctx.config.student.nproc
    if nproc == 1:
        result = train_student(job)
    else:
        path = job.write(Path(job.out_dir) / "job.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "training.student.run", "--job", str(path)]
        print("student: " + " ".join(cmd))
        if subprocess.run(cmd, check=False).returncode != 0:
            raise PipelineError(f"student training under torchrun failed ({' '.join(cmd)})")
        result = json.loads((Path(job.out_dir) / RESULT_NAME).read_text())
    print(f"student: {result['checkpoint']} ({result['iterations']} iterations, phase {result['phase']}, "
          f"{result['samples_per_s']:.0f} samples/s)")
    return {"student": result}


register_stage(Stage("student", run_student, _student_inputs,
                     "train the student from the refined clips and the teachers (DAgger -> PPO)"))


# -- evaluate (student vs teachers vs PD replay, MoCap and refined references) -----------------------
def _evaluate_inputs(ctx: PipelineContext) -> Any:
    return {"student": _marker_digest(ctx, "student"), "evaluate": ctx.config.evaluate}


def run_evaluate(ctx: PipelineContext) -> dict[str, Any]:
    from intermimic_policy.motion.io import load_motion
    from intermimic_policy.sim.evaluate import EvalSettings, PDReplayPolicy, evaluate
    from training.distill import load_mocap
    from training.eval_policy import load_checkpoint_policy

    cfg = ctx.config
    student = _stage_outputs(ctx, "student", "evaluate")["student"]
    teachers = _stage_outputs(ctx, "teachers", "evaluate").get("teachers") or []
    rows = [r for r in _stage_outputs(ctx, "distill", "evaluate").get("refined") or [] if r.get("npz")]
    limit = cfg.evaluate.max_clips
    rows = rows[:limit] if limit is not None else rows
    settings = EvalSettings(backend=cfg.student.env.backend, device=cfg.student.device, seed=cfg.student.seed,
                            progress=ctx.progress, max_worlds=cfg.evaluate.max_worlds)
    refs = {"mocap": load_mocap([r["source"] for r in rows], cfg.clip_frames),
            "refined": [load_motion(r["npz"]) for r in rows]}
    student_policy = load_checkpoint_policy(student["checkpoint"], cfg.student.device)
    physics = {k: v for k, v in student_policy.config_overrides.items() if k != "obs_spec"}
    table: list[dict[str, Any]] = []

    def add(name: str, policy: Any, reference: str, keep: list[bool]) -> None:
        motions = [m for m, k in zip(refs[reference], keep) if k]
        if not motions:
            return
        summary = evaluate(motions, policy, settings).summary()
        table.append({"policy": name, "reference": reference, "clips": len(motions),
                      **{k: summary.get(k) for k in ("success_rate", "mean_duration_s", "E_h_cm", "E_o_cm")}})

    everyone = [True] * len(rows)
    for reference in ("mocap", "refined"):
        add("student", student_policy, reference, everyone)
        for t in teachers:
            add(f"teacher:{t['name']}", load_checkpoint_policy(t["checkpoint"], cfg.teacher.device), reference,
                [r["teacher"] == t["name"] for r in rows])
        add("pd_replay", PDReplayPolicy(config_overrides=physics), reference, everyone)
    lines = ["| policy | reference | clips | success | duration s | E_h cm | E_o cm |", "|" + "---|" * 7]
    for r in table:
        lines.append(f"| {r['policy']} | {r['reference']} | {r['clips']} | {100 * r['success_rate']:.0f}% | "
                     f"{r['mean_duration_s']:.2f} | {r['E_h_cm']:.2f} | {r['E_o_cm']:.2f} |")
    path = ctx.stage_dir("evaluate") / "table.md"
    write_text(path, "\n".join(lines) + "\n")
    print(path.read_text(), end="")
    return {"evaluation": table, "evaluation_table": str(path)}


register_stage(Stage("evaluate", run_evaluate, _evaluate_inputs,
                     "student, its teachers and PD replay side by side on MoCap and refined references"))


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


def _export_inputs(ctx: PipelineContext) -> Any:
    marker = _read_marker(marker_path(ctx.out, "teachers"))
    inputs = {"teachers": marker.get("digest") if marker else None, "export": ExportConfig()}
    if _read_marker(marker_path(ctx.out, "student")) is not None:
        inputs["student"] = _marker_digest(ctx, "student")
    return inputs


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
    policies = [(t["name"], t["checkpoint"], t) for t in _finished_teachers(ctx)]
    student = _read_marker(marker_path(ctx.out, "student"))
    if student is not None:  # the student too, once trained (kind: student, its token layout)
        policies.append(("student", (student.get("outputs") or {})["student"]["checkpoint"], {"name": "student"}))
    for name, path, made in policies:
        ckpt = Path(path)
        if not ckpt.is_file():
            raise PipelineError(f"{name!r}: checkpoint {ckpt} is missing; rerun the stage that trained it")
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
            # the contract stored in the checkpoint, plus how the policy was made
            result = export_checkpoint(ckpt, onnx_path, provenance=provenance(ctx, made))
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
                     "export every teacher checkpoint (and the student) to ONNX with its deployment contract"))


# -- driver ---------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> None:
    from intermimic_policy.motion.atomic import atomic_output

    with atomic_output(path) as handle:
        handle.write(text.encode())



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
    sys.exit(main())  # not reached: the guard at the top runs main
