"""Run independent jobs (one teacher each): sequentially, in local processes, or on Ray.

Teachers share nothing while training, so they fan out over an existing engine instead of a
scheduler of our own: ``concurrent.futures`` with spawned processes on one machine, or one Ray
remote task per job on a cluster (``ray.init(address=...)``). A failing job does not stop the
others (their checkpoints stay usable); the failures are raised together at the end.

On Ray, the output folder must be on storage every node sees, and the ``intermimic`` package
must be installed on the nodes (as with any Ray task).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from intermimic_policy.errors import IntermimicError
from intermimic_policy.interrupt import ignore_sigint
from training.config import JobsConfig

J = TypeVar("J")
R = TypeVar("R")


class JobError(IntermimicError, RuntimeError):
    """One or more jobs failed; the message lists each job and its error."""


def _job_name(job: Any, index: int) -> str:
    return str(getattr(job, "name", f"job {index}"))


def _raise_failures(jobs: Sequence[Any], errors: dict[int, BaseException]) -> None:
    if errors:
        lines = [f"{_job_name(jobs[i], i)}: {type(e).__name__}: {e}" for i, e in sorted(errors.items())]
        raise JobError(f"{len(errors)} of {len(jobs)} job(s) failed: " + "; ".join(lines))


def run_sequential(fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
    results: list[Any] = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    for i, job in enumerate(jobs):
        try:
            results[i] = fn(job)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported with the job's name below
            errors[i] = exc
    _raise_failures(jobs, errors)
    return results


def run_processes(fn: Callable[[J], R], jobs: Sequence[J], workers: int) -> list[R]:
    """One spawned process per job, ``workers`` at a time (spawn: no forked torch/OpenMP state)."""
    ctx = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=ctx, initializer=ignore_sigint)
    try:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for future, i in futures.items():
            try:
                results[i] = future.result()
            except Exception as exc:  # noqa: BLE001
                errors[i] = exc
    except KeyboardInterrupt:  # workers ignore SIGINT: stop them here (each resumes from its checkpoint)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    _raise_failures(jobs, errors)
    return results


def run_ray(fn: Callable[[J], R], jobs: Sequence[J], address: str | None, cpus_per_job: float = 1.0,
            gpus_per_job: float = 0.0) -> list[R]:
    """One Ray remote task per job; connects to ``address`` (or starts a local Ray)."""
    try:
        import ray
    except ImportError:
        raise JobError("jobs.mode 'ray' needs Ray: pip install 'intermimic[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    remote = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(fn)
    refs = [remote.remote(job) for job in jobs]
    results: list[Any] = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    for i, ref in enumerate(refs):
        try:
            results[i] = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - ray wraps the task's error
            errors[i] = getattr(exc, "cause", None) or exc
    _raise_failures(jobs, errors)
    return results


def run_jobs(fn: Callable[[J], R], jobs: Sequence[J], cfg: JobsConfig) -> list[R]:
    """Run ``fn`` on every job the way ``cfg.mode`` says; results come back in job order."""
    if not jobs:
        return []
    if cfg.mode == "sequential":
        return run_sequential(fn, jobs)
    if cfg.mode == "processes":
        return run_processes(fn, jobs, cfg.workers)
    if cfg.mode == "ray":
        return run_ray(fn, jobs, cfg.ray_address, cfg.cpus_per_job, cfg.gpus_per_job)
    raise JobError(f"unknown jobs.mode {cfg.mode!r}")
