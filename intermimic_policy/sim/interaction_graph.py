"""Moved to :mod:`intermimic_policy.state.interaction_graph`; kept so older imports still work."""

from intermimic_policy.state.interaction_graph import (
    CHUNK_ELEMENTS,
    IG_DECAY,
    IG_EPS,
    InteractionGeometry,
    ReferenceGeometry,
    ig_deviation_ratio,
    ig_feature,
    ig_reward_error,
    interaction_geometry,
    interaction_graph,
    nearest_point_vectors,
    object_points_world,
    reference_geometry,
)

__all__ = ["CHUNK_ELEMENTS", "IG_DECAY", "IG_EPS", "InteractionGeometry", "ReferenceGeometry", "ig_deviation_ratio",
           "ig_feature", "ig_reward_error", "interaction_geometry", "interaction_graph", "nearest_point_vectors",
           "object_points_world", "reference_geometry"]
