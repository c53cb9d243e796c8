"""Policy networks and the observation normaliser."""

from __future__ import annotations

import math

import pytest
import torch

from intermimic_policy.observation.spec import ObservationSpec, student_spec, teacher_spec
from training.networks import (
    NetworkError,
    StudentTransformer,
    TeacherActorCritic,
    build_network,
    export_mode,
    sinusoidal_encoding,
)
from training.normalizer import NormalizerError, RunningNormalizer


@pytest.fixture(scope="module")
def teacher() -> TeacherActorCritic:
    torch.manual_seed(0)
    return TeacherActorCritic(teacher_spec().dim)


@pytest.fixture(scope="module")
def student() -> StudentTransformer:
    torch.manual_seed(0)
    return StudentTransformer(student_spec()).eval()


def test_teacher_shapes_fixed_std_and_zero_biases(teacher: TeacherActorCritic) -> None:
    obs = torch.randn(5, 3198)
    assert teacher(obs).shape == (5, 153)
    assert teacher.value(obs).shape == (5,)
    widths = [m.out_features for m in teacher.actor_mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [1024, 1024, 512]
    assert teacher.critic_mlp is not teacher.actor_mlp
    # the std is fixed: a buffer of exp(-2.9), not a trainable parameter
    assert torch.allclose(teacher.std, torch.full((153,), math.exp(-2.9)))
    assert all("log_std" not in name for name, _ in teacher.named_parameters())
    assert "log_std" in teacher.state_dict()
    for m in teacher.modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
    # actor and critic parameter groups are disjoint and cover everything trainable
    actor = {id(p) for p in teacher.actor_parameters()}
    critic = {id(p) for p in teacher.critic_parameters()}
    assert not actor & critic
    assert actor | critic == {id(p) for p in teacher.parameters()}


def test_act_and_evaluate_match_a_normal_distribution(teacher: TeacherActorCritic) -> None:
    obs = torch.randn(4, 3198)
    gen = torch.Generator().manual_seed(3)
    actions, log_prob, mean = teacher.act(obs, generator=gen)
    dist = torch.distributions.Normal(mean, teacher.std.expand_as(mean))
    assert torch.allclose(log_prob, dist.log_prob(actions).sum(-1), atol=1e-3)
    assert not torch.equal(actions, mean)
    # the sample noise has the fixed std
    assert 0.03 < float((actions - mean).detach().std()) < 0.08
    lp2, value, mean2 = teacher.evaluate(obs, actions)
    assert torch.allclose(lp2, log_prob) and torch.equal(mean2, mean) and value.shape == (4,)
    det, _, _ = teacher.act(obs, deterministic=True)
    assert torch.equal(det, mean)
    assert torch.allclose(teacher.entropy(), dist.entropy()[0].sum())


def test_sinusoidal_encoding_is_the_standard_table() -> None:
    table = sinusoidal_encoding(4, 256)
    for pos in range(4):
        for i in (0, 1, 7, 127):
            w = 1.0 / (10000.0 ** (2 * i / 256))
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(pos * w), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * w), abs=1e-6)
    # not upstream's transposed table (whose token 0 would be sin(c) over channels c)
    assert torch.all(table[0, 0::2] == 0)


def test_student_reads_the_token_of_offset_one(student: StudentTransformer) -> None:
    assert student.output_token == 1
    obs = torch.randn(3, 6396)
    with torch.no_grad():
        out = student(obs)
        assert out.shape == (3, 153)
        # the output depends on every token (attention), but the read-out is token 1's position
        changed = obs.clone()
        changed[:, 3 * 1599:] += 1.0
        assert not torch.allclose(student(changed), out)
        h = student.encoder(student.embed(obs.reshape(3, 4, 1599)) + student.pos_code)
        assert torch.allclose(student.mu(h[:, 1]), out, atol=1e-5)
    assert student.value(obs).shape == (3,)
    assert student.critic_mlp[0].in_features == 6396
    no_one = StudentTransformer(ObservationSpec(ref_offsets=(0, 4)), d_model=32, layers=1, heads=2, ff=32)
    assert no_one.output_token == 0


def test_student_eval_fast_path_and_export_mode_agree(student: StudentTransformer) -> None:
    obs = torch.randn(2, 6396)
    with torch.no_grad():
        fast = student(obs)
        previous = torch.backends.mha.get_fastpath_enabled()
        with export_mode():
            assert not torch.backends.mha.get_fastpath_enabled()
            slow = student(obs)
        assert torch.backends.mha.get_fastpath_enabled() == previous
    assert torch.allclose(fast, slow, atol=1e-4)


def test_build_network_from_arch_rebuilds_the_same_shapes(teacher: TeacherActorCritic,
                                                          student: StudentTransformer) -> None:
    t2 = build_network(teacher.arch(), teacher_spec())
    t2.load_state_dict(teacher.state_dict())
    s2 = build_network(student.arch(), student_spec())
    s2.load_state_dict(student.state_dict())
    with pytest.raises(NetworkError, match="unknown network type"):
        build_network({"type": "rnn"}, teacher_spec())
    with pytest.raises(NetworkError, match="obs_dim"):
        build_network(teacher.arch(), student_spec())
    with pytest.raises(NetworkError, match="divisible"):
        StudentTransformer(student_spec(), d_model=30, heads=4)


# ---- normaliser --------------------------------------------------------------------------
def test_normalizer_statistics_converge_and_are_float64() -> None:
    torch.manual_seed(0)
    norm = RunningNormalizer(3)
    assert norm.mean.dtype == torch.float64 and norm.var.dtype == torch.float64
    true_mean = torch.tensor([3.0, -1.0, 0.0])
    true_std = torch.tensor([2.0, 0.5, 1.0])
    for _ in range(20):
        norm.update(true_mean + true_std * torch.randn(2000, 3))
    assert torch.allclose(norm.mean.float(), true_mean, atol=0.05)
    assert torch.allclose(norm.var.float(), true_std**2, rtol=0.05)
    assert norm.count.item() == 40001  # the prior pseudo-count of 1 (upstream) plus the samples


def test_normalizer_merge_equals_one_pass_over_all_data() -> None:
    """Chunked updates give the same mean, and the variance of the pooled data."""
    torch.manual_seed(1)
    data = torch.randn(3000, 4, dtype=torch.float64) * 3 + 2
    chunked, single = RunningNormalizer(4), RunningNormalizer(4)
    for chunk in data.split(500):
        chunked.update(chunk)
    single.update(data)
    assert torch.allclose(chunked.mean, single.mean, atol=1e-12)
    # the prior sample (mean 0, var 1, count 1) barely moves 3000 samples
    assert torch.allclose(chunked.var, data.var(0), rtol=5e-3)
    assert torch.allclose(single.var, chunked.var, rtol=3e-3)  # unbiased per-chunk variances


def test_normalize_clamps_and_uses_eps_inside_the_sqrt() -> None:
    norm = RunningNormalizer(2)
    norm.load_stats(torch.tensor([1.0, 0.0]), torch.tensor([4.0, 0.0]), count=10)
    x = torch.tensor([[3.0, 0.0], [100.0, 1e-3]])
    y = norm(x)
    assert y.dtype == torch.float32
    assert y[0, 0].item() == pytest.approx(2.0 / math.sqrt(4.0 + 1e-5), rel=1e-6)
    assert y[0, 1].item() == 0.0
    assert y[1, 0].item() == 5.0  # clamped
    assert y[1, 1].item() == pytest.approx(min(5.0, 1e-3 / math.sqrt(1e-5)), rel=1e-5)
    with pytest.raises(NormalizerError, match="NaN"):
        norm.update(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    with pytest.raises(NormalizerError, match=r"\[N, 2\]"):
        norm.update(torch.zeros(4, 3))
    state = norm.state_dict()
    other = RunningNormalizer(2)
    other.load_state_dict(state)
    assert torch.equal(other(x), y)
