"""The contract of a policy trained in an environment: its config and skeleton -> ``build_contract``.

The only caller of :func:`intermimic_policy.contract.build_contract` with real training settings:
``HOIEnv.policy_contract`` (stored in every checkpoint) and export of an untrained policy.
"""

from __future__ import annotations

from intermimic_policy.contract import NormalizationStats, PolicyContract, build_contract
from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.sim.env_config import HOIEnvConfig


def env_contract(config: HOIEnvConfig, skeleton: Skeleton | None, kind: str, *, config_digest: str = "",
                 normalization: NormalizationStats | None = None) -> PolicyContract:
    """What a ``kind`` policy trained with ``config`` on ``skeleton`` (None: default) needs."""
    return build_contract(
        kind,
        obs_spec=config.obs_spec,
        skeleton=skeleton,
        object_points=config.num_object_points,
        control_hz=config.control_hz,
        physics_hz=config.physics_hz,
        upstream_action_map=config.upstream_action_map,
        embodiment=config.embodiment.name,
        config_digest=config_digest,
        normalization=normalization,
    )
