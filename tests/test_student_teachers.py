"""Teacher batching: one vmapped call over stacked parameters equals calling each teacher alone."""

from __future__ import annotations

import pytest
import torch

from training.networks import TeacherActorCritic
from training.normalizer import RunningNormalizer
from training.ppo.policy import TeacherPolicy
from training.student.teachers import TeacherBank, TeacherBankError, teacher_of_clips


def _teacher(seed: int, dim: int = 24) -> TeacherPolicy:
    torch.manual_seed(seed)
    net = TeacherActorCritic(dim, 153, (32, 16))
    for p in net.parameters():  # non-zero biases too, so a wrong teacher cannot match by chance
        p.data.normal_(0, 0.3)
    norm = RunningNormalizer(dim)
    norm.update(torch.randn(50, dim, dtype=torch.float64) * (seed + 1) + seed)
    return TeacherPolicy(net, norm).eval()


def test_batched_teachers_equal_each_teacher_alone():
    teachers = [_teacher(s) for s in range(3)]
    bank = TeacherBank(teachers, ["a", "b", "c"])
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(11, 24, generator=gen) * 3
    ids = torch.tensor([2, 0, 0, 2, 2, 2, 0, 2, 0, 2, 2])  # unbalanced, teacher 1 has no world
    got = bank.means(obs, ids)
    with torch.no_grad():
        want = torch.stack([teachers[int(k)].action_mean(obs[i:i + 1])[0] for i, k in enumerate(ids)])
        wrong = torch.stack([teachers[(int(k) + 1) % 3].action_mean(obs[i:i + 1])[0] for i, k in enumerate(ids)])
    assert got.shape == (11, 153)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - wrong).abs().max() > 1e-2
    # every world on one teacher, and one world alone
    torch.testing.assert_close(bank.means(obs, torch.ones(11, dtype=torch.long)),
                               teachers[1].action_mean(obs).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bank.means(obs[:1], torch.tensor([1])), teachers[1].action_mean(obs[:1]).detach(),
                               atol=1e-5, rtol=1e-5)


def test_teacher_samples_are_clamped_around_the_mean():
    bank = TeacherBank([_teacher(0)])
    mean = torch.zeros(1000, 153)
    a = bank.sample(mean, torch.Generator().manual_seed(1))
    assert a.abs().max() <= 1.0 and a.std().item() == pytest.approx(float(torch.exp(torch.tensor(-2.9))), rel=0.05)


def test_clip_without_teacher_is_an_error_listing_them():
    assert teacher_of_clips(["x", "y"], {"t1": ["x"], "t2": ["y", "z"]}) == [0, 1]
    with pytest.raises(TeacherBankError, match=r"no teacher for clip\(s\) \['y', 'w'\]"):
        teacher_of_clips(["x", "y", "w"], {"t1": ["x"]})


def test_teachers_of_other_architectures_cannot_be_batched():
    other = TeacherPolicy(TeacherActorCritic(24, 153, (8,)), RunningNormalizer(24))
    with pytest.raises(TeacherBankError, match="architecture"):
        TeacherBank([_teacher(0), other])
