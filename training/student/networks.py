"""Student networks: the Transformer of spec 8.2 (``training.networks.StudentTransformer``, one
token per reference frame) or an MLP over the same flat input, chosen by ``StudentNetConfig``."""

from __future__ import annotations

from collections.abc import Sequence

from intermimic_policy.embodiment.smplx_body import NUM_DOFS
from intermimic_policy.observation.spec import ObservationSpec
from training.networks import PolicyNetwork, StudentTransformer, TeacherActorCritic
from training.student.config import StudentNetConfig


class StudentMLP(TeacherActorCritic):
    """The MLP student (upstream ``omomo_all.yaml``): actor and critic MLPs on the flat observation.

    Same body as the teacher MLP; ``policy_kind`` makes export write ``kind: student``."""

    policy_kind = "student"

    def __init__(self, obs_dim: int, action_dim: int = NUM_DOFS, hidden: Sequence[int] = (1024, 1024, 512),
                 init_log_std: float = -2.9) -> None:
        super().__init__(obs_dim, action_dim, hidden, init_log_std)

    def arch(self) -> dict[str, object]:
        return {**super().arch(), "type": "student_mlp"}


def build_student(cfg: StudentNetConfig, spec: ObservationSpec) -> PolicyNetwork:
    if cfg.type == "mlp":
        return StudentMLP(spec.dim, NUM_DOFS, cfg.mlp_hidden, cfg.init_log_std)
    return StudentTransformer(spec, cfg.d_model, cfg.layers, cfg.heads, cfg.ff, NUM_DOFS, cfg.critic_hidden,
                              cfg.init_log_std)
