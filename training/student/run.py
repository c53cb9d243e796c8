"""One student run from a job file; also the ``torchrun`` entry point.

``python -m torch.distributed.run --standalone --nproc_per_node=N -m training.student.run --job JOB.json``

The job names the refined clips (``.npz``), their MoCap sources (same order and names), the
teacher checkpoints and the clips each teacher owns, the student config and the output folder.
Every rank loads the same job; rank 0 writes checkpoints, the final ``student.pt``,
``learning_curve.png`` and, last, ``result.json`` (the marker that the run is done).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import digest, from_dict, to_dict
from training.student.config import StudentConfig

RESULT_NAME = "result.json"


@dataclass
class StudentJob:
    config: StudentConfig
    refined: list[str]  # refined clip files (.npz)
    mocap: list[str]  # their MoCap sources (paths or "example"), same order
    clip_frames: int | None
    teachers: dict[str, str]  # teacher name -> checkpoint
    teacher_clips: dict[str, list[str]]  # teacher name -> clip names it owns
    out_dir: str
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return digest({"config": self.config, "refined": self.refined, "mocap": self.mocap,
                       "clip_frames": self.clip_frames, "teachers": self.teachers})

    def write(self, path: Path) -> Path:
        from training.teacher import write_json

        write_json(path, to_dict(self))
        return path

    @classmethod
    def read(cls, path: str | Path) -> StudentJob:
        return from_dict(cls, json.loads(Path(path).read_text()), where=str(path))


def load_result(job: StudentJob) -> dict[str, Any] | None:
    path = Path(job.out_dir) / RESULT_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if data.get("job_key") == job.key() and data.get("iterations") == job.config.iterations else None


def train_student(job: StudentJob, *, until: int | None = None) -> dict[str, Any]:
    """Train (or resume) the student of ``job``; returns (and on rank 0 writes) the result record."""
    from intermimic_policy.motion.io import load_motion
    from training.distill import load_mocap
    from training.student import dist as D
    from training.student.trainer import StudentTrainer
    from training.teacher import write_json

    done = load_result(job)
    if done is not None:
        return done
    info = D.init_from_env(job.config.device)
    refined = [load_motion(p) for p in job.refined]
    mocap = load_mocap(job.mocap, job.clip_frames)
    t0 = time.perf_counter()
    trainer = StudentTrainer(job.config, refined, mocap, job.teachers, job.teacher_clips, job.out_dir, info=info,
                             progress=job.progress)
    try:
        perf = trainer.train(until=until)
        result: dict[str, Any] = {"iterations": trainer.iteration, "resumed_from": int(perf["start"]),
                                  "samples": perf["samples"], "samples_per_s": perf["samples_per_s"],
                                  "world_size": info.world_size, "phase": trainer.gate.phase,
                                  "phase_log": trainer.phase_log, "gate": trainer.gate.state_dict(),
                                  "network": trainer.policy.net.arch(), "job_key": job.key()}
        if trainer.iteration >= job.config.iterations and info.is_main:
            final, png = trainer.finish()
            result.update({"checkpoint": str(final), "learning_curve": str(png),
                           "wall_s": time.perf_counter() - t0})
            write_json(Path(job.out_dir) / RESULT_NAME, result)
        D.barrier(info)
        return result
    finally:
        trainer.close()
        D.shutdown(info)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="training.student.run", description=__doc__.splitlines()[0])
    p.add_argument("--job", required=True, help="job JSON written by the pipeline's student stage")
    p.add_argument("--until", type=int, default=None, help="stop after this iteration (resumable)")
    args = p.parse_args(argv)
    train_student(StudentJob.read(args.job), until=args.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
