"""Object names a clip may refer to, and the project's own primitive objects.

Clips name their object (InterMimic: from the file name). A name outside this table is an
error unless the user points at an asset file of that name.
"""

from __future__ import annotations

# The 15 OMOMO objects InterMimic ships URDFs or meshes for.
OMOMO_OBJECTS: tuple[str, ...] = (
    "clothesstand", "floorlamp", "largebox", "largetable", "monitor", "mop", "plasticbox",
    "smallbox", "smalltable", "suitcase", "trashcan", "tripod", "vacuum", "whitechair", "woodchair",
)

# Primitive boxes the project builds itself (full extents in metres, x y z); "box" is the object
# of the bundled example clip, so the main job runs without any downloaded asset.
# The example's box is tall and narrow so a standing humanoid grips its side faces with both hands
# (0.34 m apart, about shoulder width) without a deep squat.
PRIMITIVE_BOXES: dict[str, tuple[float, float, float]] = {"box": (0.30, 0.34, 0.60)}
# Density of each primitive (kg/m^3) when the caller gives none: the example box weighs 2.5 kg.
PRIMITIVE_DENSITY: dict[str, float] = {"box": 2.5 / (0.30 * 0.34 * 0.60)}

KNOWN_OBJECTS: tuple[str, ...] = OMOMO_OBJECTS + tuple(PRIMITIVE_BOXES)
