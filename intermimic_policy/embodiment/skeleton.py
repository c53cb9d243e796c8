"""The project's own SMPL-X humanoid skeleton: bone offsets and collision geoms, as a table.

Why a table we own: the upstream ``omomo.xml`` is a derived SMPL-X asset we may not ship, and a
readable table is what a subject-specific skeleton, the MJCF generator and FK all share. The
numbers reproduce upstream's PHC-derived humanoid (InterMimic, spec 2.1):

* offsets: estimated from ``OMOMO_retarget`` body positions (exact FK of upstream's skeleton):
  ``offset_b = R_parent^T (p_b - p_parent)``, median over all frames (spread < 1e-5 m), rounded
  to 0.1 mm;
* geoms: one per body, Pelvis and Head spheres, ankles/toes/wrists boxes, all else capsules
  (limb capsules span 20 %..80 % of the bone to the child), sizes as measured on the upstream
  model, densities as spec 2.1 (kg/m^3).

Frames: every body frame is parallel to its parent's at zero joint rotation (no body quats), so a
body's world rotation is the product of its ancestors' joint rotations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from intermimic_policy.embodiment.smplx_body import BODY_NAMES, NUM_BODIES, PARENTS
from intermimic_policy.errors import IntermimicError

GeomKind = Literal["sphere", "capsule", "box"]


class SkeletonError(IntermimicError, ValueError):
    """A skeleton that cannot be built into a humanoid (wrong shape, non-finite, bad geom)."""


@dataclass(frozen=True)
class Geom:
    """One collision geom in its body's frame.

    sphere: ``size=(radius,)`` centred at ``pos``; capsule: ``size=(radius,)`` between the two
    points of ``fromto``; box: ``size`` = half extents, centred at ``pos`` (axis-aligned).
    """

    kind: GeomKind
    size: tuple[float, ...]
    density: float
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fromto: tuple[float, float, float, float, float, float] | None = None

    def __post_init__(self) -> None:
        expected = {"sphere": 1, "capsule": 1, "box": 3}
        if self.kind not in expected:
            raise SkeletonError(f"geom kind must be sphere, capsule or box, got {self.kind!r}")
        if len(self.size) != expected[self.kind] or not all(np.isfinite(self.size)) or min(self.size) <= 0:
            raise SkeletonError(f"{self.kind} geom has invalid size {self.size}")
        if (self.kind == "capsule") != (self.fromto is not None):
            raise SkeletonError("a capsule needs fromto, and only a capsule has one")
        if not self.density > 0:
            raise SkeletonError(f"geom density must be positive, got {self.density}")

    def points(self) -> np.ndarray:
        """The geom's anchor points in the body frame: centre, or the capsule's two ends [N, 3]."""
        if self.fromto is not None:
            return np.asarray(self.fromto, dtype=np.float64).reshape(2, 3)
        return np.asarray(self.pos, dtype=np.float64).reshape(1, 3)

    def with_points(self, points: np.ndarray, size_scale: float = 1.0) -> Geom:
        """A copy with new anchor points (as :meth:`points` returns) and sizes scaled."""
        p = [float(v) for v in np.asarray(points, dtype=np.float64).reshape(-1)]
        size = tuple(float(s) * size_scale for s in self.size)
        if self.fromto is not None:
            return Geom(self.kind, size, self.density, fromto=(p[0], p[1], p[2], p[3], p[4], p[5]))
        return Geom(self.kind, size, self.density, pos=(p[0], p[1], p[2]))

    def volume(self) -> float:
        if self.kind == "sphere":
            return 4.0 / 3.0 * np.pi * self.size[0] ** 3
        if self.kind == "box":
            return float(8.0 * np.prod(self.size))
        r = self.size[0]
        length = float(np.linalg.norm(np.subtract(self.fromto[3:], self.fromto[:3])))  # type: ignore[index]
        return float(np.pi * r * r * length + 4.0 / 3.0 * np.pi * r**3)

    def mass(self) -> float:
        return self.density * self.volume()


def _sphere(radius: float, density: float) -> Geom:
    return Geom("sphere", (radius,), density)


def _capsule(a: tuple[float, float, float], b: tuple[float, float, float], radius: float, density: float) -> Geom:
    return Geom("capsule", (radius,), density, fromto=(*a, *b))


def _box(pos: tuple[float, float, float], half: tuple[float, float, float], density: float) -> Geom:
    return Geom("box", half, density, pos=pos)


# Densities (kg/m^3), upstream's: heavier pelvis/hips/knees and trunk stand in for the soft tissue
# the thin primitives leave out, so the total mass matches a 74 kg adult.
_D_PELVIS = 1000.0 / 0.216
_D_HIP = 1000.0 / 0.49
_D_KNEE = 1000.0 / 0.81
_D_TRUNK = 1100.0
_D_BODY = 1000.0

# body, offset from the parent body's origin in the parent frame (m), collision geom (body frame)
DEFAULT_TABLE: tuple[tuple[str, tuple[float, float, float], Geom], ...] = (
    ("Pelvis", (0.0000, 0.0000, 0.0000), _sphere(0.1056, _D_PELVIS)),
    ("L_Hip", (-0.0111, 0.0758, -0.0952), _capsule((-0.0049, 0.0044, -0.0778), (-0.0195, 0.0175, -0.3112), 0.0590, _D_HIP)),
    ("L_Knee", (-0.0244, 0.0218, -0.3890), _capsule((-0.0042, -0.0018, -0.0811), (-0.0167, -0.0071, -0.3246), 0.0564, _D_KNEE)),
    ("L_Ankle", (-0.0209, -0.0089, -0.4057), _box((0.0566, 0.0115, -0.0234), (0.0909, 0.0502, 0.0216), _D_BODY)),
    ("L_Toe", (0.1133, 0.0231, -0.0468), _box((0.0576, -0.0115, 0.0227), (0.0194, 0.0493, 0.0209), _D_BODY)),
    ("R_Hip", (-0.0128, -0.0753, -0.1017), _capsule((-0.0035, -0.0051, -0.0770), (-0.0140, -0.0203, -0.3079), 0.0588, _D_HIP)),
    ("R_Knee", (-0.0175, -0.0254, -0.3849), _capsule((-0.0035, 0.0006, -0.0794), (-0.0139, 0.0026, -0.3175), 0.0564, _D_KNEE)),
    ("R_Ankle", (-0.0174, 0.0032, -0.3968), _box((0.0535, -0.0091, -0.0250), (0.0909, 0.0502, 0.0216), _D_BODY)),
    ("R_Toe", (0.1071, -0.0181, -0.0500), _box((0.0545, 0.0091, 0.0243), (0.0194, 0.0493, 0.0209), _D_BODY)),
    ("Torso", (-0.0311, -0.0057, 0.1110), _capsule((-0.0054, 0.0055, 0.0570), (-0.0066, 0.0067, 0.0697), 0.0817, _D_TRUNK)),
    ("Spine", (-0.0120, 0.0122, 0.1267), _capsule((0.0179, -0.0033, 0.0207), (0.0218, -0.0040, 0.0253), 0.0686, _D_TRUNK)),
    ("Chest", (0.0397, -0.0073, 0.0460), _capsule((-0.0173, -0.0012, 0.0701), (-0.0212, -0.0015, 0.0857), 0.1145, _D_TRUNK)),
    ("Neck", (-0.0552, -0.0060, 0.2172), _capsule((0.0033, 0.0019, 0.0295), (0.0132, 0.0076, 0.1180), 0.0437, _D_BODY)),
    ("Head", (0.0165, 0.0095, 0.1475), _sphere(0.1054, _D_BODY)),
    ("L_Thorax", (-0.0266, 0.0574, 0.1273), _capsule((-0.0063, 0.0186, 0.0105), (-0.0250, 0.0743, 0.0420), 0.0564, _D_BODY)),
    ("L_Shoulder", (-0.0313, 0.0928, 0.0525), _capsule((-0.0057, 0.0560, -0.0112), (-0.0228, 0.2241, -0.0448), 0.0533, _D_BODY)),
    ("L_Elbow", (-0.0285, 0.2802, -0.0560), _capsule((0.0012, 0.0473, 0.0019), (0.0047, 0.1894, 0.0075), 0.0418, _D_BODY)),
    ("L_Wrist", (0.0059, 0.2367, 0.0094), _box((-0.0022, 0.0456, -0.0084), (0.0414, 0.0444, 0.0076), _D_BODY)),
    ("L_Index1", (0.0212, 0.1070, -0.0141), _capsule((0.0001, 0.0061, -0.0021), (0.0006, 0.0246, -0.0082), 0.0093, _D_BODY)),
    ("L_Index2", (0.0007, 0.0307, -0.0103), _capsule((-0.0004, 0.0015, -0.0043), (-0.0017, 0.0059, -0.0170), 0.0076, _D_BODY)),
    ("L_Index3", (-0.0021, 0.0074, -0.0213), _capsule((0.0000, 0.0019, -0.0039), (-0.0001, 0.0075, -0.0154), 0.0067, _D_BODY)),
    ("L_Middle1", (-0.0028, 0.1143, -0.0116), _capsule((-0.0010, 0.0054, -0.0029), (-0.0039, 0.0214, -0.0116), 0.0096, _D_BODY)),
    ("L_Middle2", (-0.0048, 0.0268, -0.0145), _capsule((-0.0004, 0.0013, -0.0046), (-0.0017, 0.0051, -0.0184), 0.0071, _D_BODY)),
    ("L_Middle3", (-0.0021, 0.0063, -0.0230), _capsule((0.0000, 0.0017, -0.0042), (-0.0001, 0.0067, -0.0168), 0.0064, _D_BODY)),
    ("L_Pinky1", (-0.0428, 0.0880, -0.0204), _capsule((-0.0012, 0.0024, -0.0028), (-0.0047, 0.0097, -0.0110), 0.0071, _D_BODY)),
    ("L_Pinky2", (-0.0058, 0.0122, -0.0138), _capsule((-0.0001, 0.0008, -0.0037), (-0.0005, 0.0033, -0.0149), 0.0064, _D_BODY)),
    ("L_Pinky3", (-0.0006, 0.0042, -0.0186), _capsule((0.0003, 0.0012, -0.0033), (0.0011, 0.0049, -0.0133), 0.0051, _D_BODY)),
    ("L_Ring1", (-0.0267, 0.1018, -0.0147), _capsule((-0.0005, 0.0048, -0.0032), (-0.0019, 0.0191, -0.0126), 0.0082, _D_BODY)),
    ("L_Ring2", (-0.0023, 0.0239, -0.0158), _capsule((0.0001, 0.0009, -0.0047), (0.0003, 0.0036, -0.0187), 0.0073, _D_BODY)),
    ("L_Ring3", (0.0004, 0.0045, -0.0234), _capsule((0.0005, 0.0013, -0.0043), (0.0019, 0.0052, -0.0171), 0.0061, _D_BODY)),
    ("L_Thumb1", (0.0287, 0.0444, -0.0230), _capsule((0.0022, 0.0044, -0.0035), (0.0089, 0.0176, -0.0139), 0.0123, _D_BODY)),
    ("L_Thumb2", (0.0112, 0.0220, -0.0174), _capsule((0.0011, 0.0048, -0.0018), (0.0044, 0.0191, -0.0071), 0.0093, _D_BODY)),
    ("L_Thumb3", (0.0055, 0.0239, -0.0088), _capsule((0.0015, 0.0052, -0.0014), (0.0060, 0.0207, -0.0055), 0.0088, _D_BODY)),
    ("R_Thorax", (-0.0337, -0.0595, 0.1228), _capsule((-0.0048, -0.0201, 0.0110), (-0.0192, -0.0804, 0.0439), 0.0576, _D_BODY)),
    ("R_Shoulder", (-0.0240, -0.1005, 0.0549), _capsule((-0.0042, -0.0541, -0.0101), (-0.0167, -0.2164, -0.0402), 0.0538, _D_BODY)),
    ("R_Elbow", (-0.0208, -0.2705, -0.0503), _capsule((-0.0008, -0.0474, 0.0010), (-0.0030, -0.1897, 0.0040), 0.0420, _D_BODY)),
    ("R_Wrist", (-0.0038, -0.2372, 0.0050), _box((-0.0014, -0.0449, -0.0080), (0.0414, 0.0416, 0.0078), _D_BODY)),
    ("R_Index1", (0.0229, -0.1057, -0.0132), _capsule((0.0001, -0.0061, -0.0021), (0.0006, -0.0246, -0.0082), 0.0093, _D_BODY)),
    ("R_Index2", (0.0007, -0.0307, -0.0103), _capsule((-0.0004, -0.0015, -0.0043), (-0.0017, -0.0059, -0.0170), 0.0076, _D_BODY)),
    ("R_Index3", (-0.0021, -0.0074, -0.0213), _capsule((0.0000, -0.0011, -0.0039), (-0.0001, -0.0043, -0.0154), 0.0068, _D_BODY)),
    ("R_Middle1", (-0.0011, -0.1130, -0.0107), _capsule((-0.0010, -0.0054, -0.0029), (-0.0039, -0.0214, -0.0116), 0.0096, _D_BODY)),
    ("R_Middle2", (-0.0048, -0.0268, -0.0145), _capsule((-0.0004, -0.0013, -0.0046), (-0.0017, -0.0051, -0.0184), 0.0071, _D_BODY)),
    ("R_Middle3", (-0.0021, -0.0063, -0.0230), _capsule((0.0000, -0.0009, -0.0042), (-0.0001, -0.0035, -0.0168), 0.0064, _D_BODY)),
    ("R_Pinky1", (-0.0411, -0.0867, -0.0196), _capsule((-0.0012, -0.0024, -0.0028), (-0.0047, -0.0097, -0.0110), 0.0071, _D_BODY)),
    ("R_Pinky2", (-0.0058, -0.0122, -0.0138), _capsule((-0.0001, -0.0008, -0.0037), (-0.0005, -0.0033, -0.0149), 0.0064, _D_BODY)),
    ("R_Pinky3", (-0.0006, -0.0042, -0.0186), _capsule((0.0003, -0.0004, -0.0033), (0.0011, -0.0017, -0.0133), 0.0052, _D_BODY)),
    ("R_Ring1", (-0.0250, -0.1005, -0.0139), _capsule((-0.0005, -0.0048, -0.0032), (-0.0019, -0.0191, -0.0126), 0.0082, _D_BODY)),
    ("R_Ring2", (-0.0023, -0.0238, -0.0158), _capsule((0.0001, -0.0009, -0.0047), (0.0003, -0.0036, -0.0187), 0.0073, _D_BODY)),
    ("R_Ring3", (0.0004, -0.0045, -0.0234), _capsule((0.0005, -0.0005, -0.0043), (0.0019, -0.0020, -0.0171), 0.0061, _D_BODY)),
    ("R_Thumb1", (0.0304, -0.0430, -0.0222), _capsule((0.0022, -0.0044, -0.0035), (0.0089, -0.0176, -0.0139), 0.0123, _D_BODY)),
    ("R_Thumb2", (0.0112, -0.0220, -0.0174), _capsule((0.0011, -0.0048, -0.0018), (0.0044, -0.0191, -0.0071), 0.0093, _D_BODY)),
    ("R_Thumb3", (0.0055, -0.0239, -0.0088), _capsule((0.0015, -0.0044, -0.0014), (0.0060, -0.0175, -0.0055), 0.0091, _D_BODY)),
)


@dataclass(frozen=True, eq=False)
class Skeleton:
    """Bone offsets [52, 3] (m, parent frame, row 0 unused = zeros) and one geom per body."""

    offsets: np.ndarray
    geoms: tuple[Geom, ...]
    name: str = "default"
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        offsets = np.array(self.offsets, dtype=np.float64)
        if offsets.shape != (NUM_BODIES, 3):
            raise SkeletonError(f"skeleton {self.name!r}: offsets have shape {offsets.shape}, expected (52, 3)")
        if not np.isfinite(offsets).all():
            raise SkeletonError(f"skeleton {self.name!r}: offsets contain NaN or inf")
        if len(self.geoms) != NUM_BODIES:
            raise SkeletonError(f"skeleton {self.name!r}: {len(self.geoms)} geoms, expected one per body (52)")
        offsets[0] = 0.0
        offsets.setflags(write=False)
        object.__setattr__(self, "offsets", offsets)

    def bone_lengths(self) -> np.ndarray:
        """Length of each body's offset from its parent [52] (0 for the root)."""
        return np.linalg.norm(self.offsets, axis=-1)

    def mass(self) -> float:
        return float(sum(g.mass() for g in self.geoms))

    def content_hash(self) -> str:
        """SHA-256 of what shapes the model (offsets and geoms, not the name): equal models, equal hash."""
        payload = {
            "offsets": np.round(self.offsets, 9).tolist(),
            "geoms": [
                [g.kind, list(g.size), g.density, list(g.pos), list(g.fromto or ())] for g in self.geoms
            ],
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "offsets": self.offsets.tolist(),
            "geoms": [
                {"kind": g.kind, "size": list(g.size), "density": g.density, "pos": list(g.pos),
                 "fromto": None if g.fromto is None else list(g.fromto)}
                for g in self.geoms
            ],
        }

    @classmethod
    def from_dict(cls, d: object, source: str = "skeleton") -> Skeleton:
        """Inverse of :meth:`to_dict`; a malformed table is a ``SkeletonError`` naming ``source``."""
        try:
            assert isinstance(d, dict), f"expected a mapping, got {type(d).__name__}"
            geoms = tuple(
                Geom(str(g["kind"]), tuple(float(x) for x in g["size"]), float(g["density"]),  # type: ignore[arg-type]
                     tuple(float(x) for x in g["pos"]),  # type: ignore[arg-type]
                     None if g.get("fromto") is None else tuple(float(x) for x in g["fromto"]))  # type: ignore[arg-type]
                for g in d["geoms"])
            return cls(offsets=np.asarray(d["offsets"], dtype=np.float64), geoms=geoms, name=str(d.get("name", "")))
        except SkeletonError as exc:
            raise SkeletonError(f"{source}: {exc}") from exc
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SkeletonError(f"{source}: malformed skeleton table: {exc}") from exc


def default_skeleton() -> Skeleton:
    """The upstream-equivalent humanoid (74.07 kg), the skeleton of ``OMOMO_retarget`` clips."""
    assert tuple(row[0] for row in DEFAULT_TABLE) == BODY_NAMES
    offsets = np.array([row[1] for row in DEFAULT_TABLE], dtype=np.float64)
    return Skeleton(offsets=offsets, geoms=tuple(row[2] for row in DEFAULT_TABLE), name="default")


def children(body: int) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(PARENTS) if p == body)
