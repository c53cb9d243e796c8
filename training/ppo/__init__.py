"""PPO for the InterMimic teachers, built on rsl_rl (see ``algorithm`` for what is ours)."""

from training.ppo.algorithm import InterMimicPPO, bounds_loss
from training.ppo.policy import TeacherPolicy
from training.ppo.runner import PPORunner

__all__ = ["InterMimicPPO", "PPORunner", "TeacherPolicy", "bounds_loss"]
