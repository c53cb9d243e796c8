"""Policy networks: the teacher MLP actor-critic and the Transformer student (spec 8.1, 8.2).

Both take the *normalised* observation (see ``training.normalizer``) and share one interface:

* ``forward(obs_norm)`` / ``actor_mean(obs_norm)``: the action mean [B, 153] (what is exported);
* ``act(obs_norm, deterministic=False)``: sampled actions, their log-probability and the mean;
* ``evaluate(obs_norm, actions)``: log-probability, value and mean, for the PPO loss;
* ``value(obs_norm)``: the critic [B].

The action std is fixed (log-std -2.9, a buffer, not a parameter) as upstream's ``fixed_sigma``.
``arch()`` returns the constructor arguments as plain data so a checkpoint can rebuild the net.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from intermimic_policy.embodiment.smplx_body import NUM_DOFS
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.spec import ObservationSpec

_LOG_2PI = math.log(2.0 * math.pi)


class NetworkError(IntermimicError, ValueError):
    """A network configuration or state dict that cannot be built or loaded."""


def _mlp(in_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, int(width)), nn.ReLU()]
        in_dim = int(width)
    return nn.Sequential(*layers)


def _zero_biases(module: nn.Module) -> None:
    """Upstream rl_games keeps PyTorch's weight init and zeroes every Linear bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class _GaussianPolicy(nn.Module):
    """Fixed-std diagonal Gaussian head shared by the teacher and the student."""

    log_std: torch.Tensor

    def __init__(self, action_dim: int, init_log_std: float) -> None:
        super().__init__()
        self.action_dim = int(action_dim)
        self.register_buffer("log_std", torch.full((self.action_dim,), float(init_log_std)))

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp()

    def actor_mean(self, obs_norm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def value(self, obs_norm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return self.actor_mean(obs_norm)

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - mean) / self.std
        return -0.5 * (z.square() + _LOG_2PI).sum(-1) - self.log_std.sum()

    def act(
        self, obs_norm: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(actions, log_prob, mean); ``deterministic`` returns the mean as the action."""
        mean = self.actor_mean(obs_norm)
        if deterministic:
            actions = mean
        else:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            actions = mean + self.std * noise
        return actions, self.log_prob(mean, actions), mean

    def evaluate(
        self, obs_norm: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_prob [B], value [B], mean [B, A]) of given actions under the current policy."""
        mean = self.actor_mean(obs_norm)
        return self.log_prob(mean, actions), self.value(obs_norm), mean

    def entropy(self) -> torch.Tensor:
        """Entropy of the fixed Gaussian (a constant; upstream leaves it out of the loss)."""
        return (0.5 * (1.0 + _LOG_2PI) + self.log_std).sum()

    def actor_modules(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    def critic_modules(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    def actor_parameters(self) -> Iterator[nn.Parameter]:
        for m in self.actor_modules():
            yield from m.parameters()

    def critic_parameters(self) -> Iterator[nn.Parameter]:
        for m in self.critic_modules():
            yield from m.parameters()


class TeacherActorCritic(_GaussianPolicy):
    """Separate actor and critic MLPs (ReLU), linear mean and value heads (spec 8.1)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int = NUM_DOFS,
        hidden: Sequence[int] = (1024, 1024, 512),
        init_log_std: float = -2.9,
    ) -> None:
        super().__init__(action_dim, init_log_std)
        if obs_dim <= 0 or not hidden or any(int(h) <= 0 for h in hidden):
            raise NetworkError(f"teacher network needs obs_dim > 0 and positive hidden sizes, got "
                               f"obs_dim={obs_dim}, hidden={list(hidden)}")
        self.obs_dim = int(obs_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.init_log_std = float(init_log_std)
        self.actor_mlp = _mlp(self.obs_dim, self.hidden)
        self.mu = nn.Linear(self.hidden[-1], self.action_dim)
        self.critic_mlp = _mlp(self.obs_dim, self.hidden)
        self.value_head = nn.Linear(self.hidden[-1], 1)
        _zero_biases(self)

    def actor_mean(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return self.mu(self.actor_mlp(obs_norm))

    def value(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_mlp(obs_norm)).squeeze(-1)

    def actor_modules(self) -> tuple[nn.Module, ...]:
        return (self.actor_mlp, self.mu)

    def critic_modules(self) -> tuple[nn.Module, ...]:
        return (self.critic_mlp, self.value_head)

    def arch(self) -> dict[str, object]:
        return {"type": "teacher_mlp", "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                "hidden": list(self.hidden), "init_log_std": self.init_log_std}


def sinusoidal_encoding(num_positions: int, d_model: int) -> torch.Tensor:
    """Standard table [positions, d_model]: PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i),
    w_i = 10000^(-2i/d). Upstream indexes its table transposed (spec 8.2); this one is correct."""
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return table.float()


class StudentTransformer(_GaussianPolicy):
    """One token per reference offset: Linear(block, d) + position code -> TransformerEncoder
    (post-norm, GELU, no dropout) -> the token of offset 1 (else token 0) -> Linear(d, 153).
    The critic is an MLP on the flat observation (spec 8.2)."""

    pos_code: torch.Tensor

    def __init__(
        self,
        spec: ObservationSpec,
        d_model: int = 256,
        layers: int = 3,
        heads: int = 4,
        ff: int = 512,
        action_dim: int = NUM_DOFS,
        critic_hidden: Sequence[int] = (256,),
        init_log_std: float = -2.9,
    ) -> None:
        super().__init__(action_dim, init_log_std)
        if d_model <= 0 or d_model % heads != 0 or d_model % 2 != 0:
            raise NetworkError(f"student d_model={d_model} must be even and divisible by heads={heads}")
        if layers <= 0 or ff <= 0 or not critic_hidden:
            raise NetworkError(f"student needs layers > 0, ff > 0 and a critic, got layers={layers}, "
                               f"ff={ff}, critic_hidden={list(critic_hidden)}")
        self.spec = spec
        self.num_tokens = spec.num_tokens
        self.block_dim = spec.block_dim
        self.obs_dim = spec.dim
        self.d_model, self.layers, self.heads, self.ff = int(d_model), int(layers), int(heads), int(ff)
        self.critic_hidden = tuple(int(h) for h in critic_hidden)
        self.init_log_std = float(init_log_std)
        self.output_token = spec.ref_offsets.index(1) if 1 in spec.ref_offsets else 0
        self.embed = nn.Linear(self.block_dim, self.d_model)
        self.register_buffer("pos_code", sinusoidal_encoding(self.num_tokens, self.d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(
            self.d_model, self.heads, self.ff, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=False,
        )
        # enable_nested_tensor=False: nested tensors only help padded batches and break export
        self.encoder = nn.TransformerEncoder(layer, self.layers, enable_nested_tensor=False)
        self.mu = nn.Linear(self.d_model, self.action_dim)
        self.critic_mlp = _mlp(self.obs_dim, self.critic_hidden)
        self.value_head = nn.Linear(self.critic_hidden[-1], 1)
        for m in (self.embed, self.mu, self.critic_mlp, self.value_head):
            _zero_biases(m)

    def actor_mean(self, obs_norm: torch.Tensor) -> torch.Tensor:
        tokens = obs_norm.reshape(obs_norm.shape[0], self.num_tokens, self.block_dim)
        h = self.encoder(self.embed(tokens) + self.pos_code)
        return self.mu(h[:, self.output_token])

    def value(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_mlp(obs_norm)).squeeze(-1)

    def actor_modules(self) -> tuple[nn.Module, ...]:
        return (self.embed, self.encoder, self.mu)

    def critic_modules(self) -> tuple[nn.Module, ...]:
        return (self.critic_mlp, self.value_head)

    def arch(self) -> dict[str, object]:
        return {"type": "student_transformer", "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                "d_model": self.d_model, "layers": self.layers, "heads": self.heads, "ff": self.ff,
                "critic_hidden": list(self.critic_hidden), "init_log_std": self.init_log_std}


PolicyNetwork = TeacherActorCritic | StudentTransformer


def build_network(arch: dict, spec: ObservationSpec) -> PolicyNetwork:
    """Rebuild a network from ``arch()`` output and the observation spec it was trained on."""
    kind = arch.get("type")
    try:
        if kind == "teacher_mlp":
            if int(arch.get("obs_dim", spec.dim)) != spec.dim:
                raise NetworkError(f"teacher obs_dim {arch['obs_dim']} != observation spec dim {spec.dim}")
            return TeacherActorCritic(spec.dim, int(arch.get("action_dim", NUM_DOFS)),
                                      tuple(arch.get("hidden", (1024, 1024, 512))),
                                      float(arch.get("init_log_std", -2.9)))
        if kind == "student_mlp":  # the MLP student (training.student.networks)
            from training.student.networks import StudentMLP

            return StudentMLP(spec.dim, int(arch.get("action_dim", NUM_DOFS)),
                              tuple(arch.get("hidden", (1024, 1024, 512))), float(arch.get("init_log_std", -2.9)))
        if kind == "student_transformer":
            return StudentTransformer(spec, int(arch.get("d_model", 256)), int(arch.get("layers", 3)),
                                      int(arch.get("heads", 4)), int(arch.get("ff", 512)),
                                      int(arch.get("action_dim", NUM_DOFS)),
                                      tuple(arch.get("critic_hidden", (256,))),
                                      float(arch.get("init_log_std", -2.9)))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, NetworkError):
            raise
        raise NetworkError(f"malformed network config {arch}: {exc}") from exc
    raise NetworkError(f"unknown network type {kind!r} (expected 'teacher_mlp', 'student_transformer' or 'student_mlp')")


def default_arch(kind: str) -> dict[str, object]:
    """Upstream's architecture for a policy kind ("teacher" or "student")."""
    if kind == "teacher":
        return {"type": "teacher_mlp"}
    if kind == "student":
        return {"type": "student_transformer"}
    raise NetworkError(f"unknown policy kind {kind!r} (expected 'teacher' or 'student')")


@contextlib.contextmanager
def export_mode() -> Iterator[None]:
    """Disable the fused MHA / encoder fast path (``aten::_transformer_encoder_layer_fwd``), which
    exporters cannot lower (pytorch/pytorch#94434); restores the previous setting."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
