"""Worker of tests/test_student_ddp.py: student updates over ONE fixed global batch, split over the
ranks torchrun starts. Rank 0 saves the resulting parameters, normaliser and gate to argv[1]."""

from __future__ import annotations

import sys

import torch

from intermimic_policy.observation.spec import student_spec
from training.networks import StudentTransformer
from training.normalizer import RunningNormalizer
from training.ppo.policy import TeacherPolicy
from training.student import dist as D
from training.student.config import ScheduleConfig, StudentConfig, StudentPPOConfig
from training.student.schedule import PPOGate
from training.student.trainer import Batch, update

GLOBAL = 48  # samples in the global batch


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = D.init_from_env("cpu")
    spec = student_spec()
    torch.manual_seed(info.rank + 100)  # different init on each rank: broadcast must fix it
    policy = TeacherPolicy(StudentTransformer(spec, d_model=32, layers=1, heads=2, ff=64, critic_hidden=(32,)),
                           RunningNormalizer(spec.dim))
    D.broadcast_module(policy, info)
    # PPO on from the first minibatch, so every loss term (expert, value, surrogate, bounds) acts
    cfg = StudentConfig(ppo=StudentPPOConfig(num_learning_epochs=2, minibatch_size=GLOBAL, learning_rate=1e-3),
                        schedule=ScheduleConfig(critic_warmup_start=0, ppo_min_iteration=0, ev_track_from=0,
                                                ev_threshold=-1e9, ev_streak=0, ppo_ramp_steps=2))
    opt = torch.optim.Adam(policy.trainable_parameters(), lr=cfg.ppo.learning_rate)
    gate = PPOGate()
    g = torch.Generator().manual_seed(7)
    full = Batch(torch.randn(GLOBAL, spec.dim, generator=g) * 2 + 1, torch.randn(GLOBAL, 153, generator=g) * 0.05,
                 torch.randn(GLOBAL, generator=g) + 200.0, torch.randn(GLOBAL, generator=g),
                 torch.randn(GLOBAL, generator=g), torch.randn(GLOBAL, 153, generator=g) * 0.3)
    share = GLOBAL // info.world_size
    rows = slice(info.rank * share, (info.rank + 1) * share)
    mine = Batch(*(getattr(full, f)[rows] for f in ("obs", "actions", "log_prob", "returns", "advantages",
                                                     "teacher_mean")))
    for it in range(1, 4):
        update(policy, opt, mine, cfg, gate, it, info, torch.Generator().manual_seed(it))
    if info.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in policy.state_dict().items()},
                    "gate": gate.state_dict()}, out)
    D.shutdown(info)


if __name__ == "__main__":
    main(sys.argv[1])
