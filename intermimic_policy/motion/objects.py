"""Rigid objects for the scene: mesh, convex collision parts, mass properties, surface points.

Why each choice:

* Object frame = the mean of the mesh vertices, because that is the pose the clips store
  (spec 1.2 / 3.1); the loader subtracts it so every consumer shares one frame.
* Collision: MuJoCo collides meshes through their convex hulls, and tables and chairs are not
  convex, so non-convex meshes are split with CoACD (upstream used V-HACD, <= 64 hulls). The
  decomposition takes seconds to tens of seconds, so it is cached on disk, keyed by the mesh
  content and the parameters (``npz``, read with ``allow_pickle=False``, written atomically).
* Mass = density x volume of the convex parts (upstream: density x V-HACD volume; there is no
  ``<inertial>`` in the URDFs). Inertia is the exact polyhedral inertia of the parts (trimesh).
* Surface points: the asset folder's ``sample_points.npy`` when present (fixed, versioned, and
  independent of the trimesh version, spec 3.2), else deterministic farthest-point samples.
  :meth:`ObjectAsset.points` hands out exactly N points because batched terms need one count.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from intermimic_policy.atomic import atomic_output
from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.object_names import PRIMITIVE_BOXES, PRIMITIVE_DENSITY

logger = logging.getLogger(__name__)

DEFAULT_FRICTION = 0.6  # upstream's object shape friction (spec 3.1)
SURFACE_SEED = 2024  # upstream's sampling seed
MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")
_CACHE_FORMAT = 1


class ObjectError(IntermimicError, ValueError):
    """An object that cannot be loaded: unknown name, missing or unreadable mesh, bad URDF."""


@dataclass(frozen=True)
class DecompositionParams:
    """CoACD settings. Defaults keep <= 32 hulls of <= 64 vertices each (cheap MuJoCo collision)
    and finish a 30k-face chair in ~20 s on one core (see benchmarks/object_decomposition.py)."""

    threshold: float = 0.05  # concavity tolerance (smaller = more, tighter hulls)
    max_convex_hull: int = 32
    preprocess_resolution: int = 40
    resolution: int = 2000
    mcts_nodes: int = 20
    mcts_iterations: int = 100
    mcts_max_depth: int = 3
    decimate: bool = True  # enforce max_ch_vertex (CoACD ignores it otherwise)
    max_ch_vertex: int = 64
    seed: int = 0


Part = tuple[np.ndarray, np.ndarray]  # (vertices [V, 3] float64, faces [F, 3] int32)


@dataclass(frozen=True, eq=False)
class ObjectAsset:
    """One rigid object, everything in the object frame (origin = mean of the mesh vertices)."""

    name: str
    vertices: np.ndarray  # [V, 3] float64 visual mesh
    faces: np.ndarray  # [F, 3] int32
    parts: tuple[Part, ...]  # convex collision parts
    density: float  # kg/m^3
    mass: float  # kg
    com: np.ndarray  # [3] centre of mass
    inertia: np.ndarray  # [3, 3] about the centre of mass, object-frame axes
    friction: float
    surface_points: np.ndarray  # [P, 3] float32
    source: str  # file the mesh came from, or "primitive:<name>"
    content_hash: str

    @property
    def volume(self) -> float:
        return self.mass / self.density

    @property
    def bounds(self) -> np.ndarray:
        """[2, 3] min/max corner of the visual mesh."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    def points(self, n: int) -> np.ndarray:
        """Exactly ``n`` surface points [n, 3] float32, deterministic.

        Fewer than stored: farthest-point subset (spreads them over the surface). More than
        stored: the stored set repeated in order (upstream pads by repeating the first points).
        """
        if n < 1:
            raise ObjectError(f"object {self.name!r}: asked for {n} surface points, need at least 1")
        p = self.surface_points
        if n <= len(p):
            return p[farthest_point_indices(p, n)]
        return p[np.arange(n) % len(p)]


# -- public entry point ------------------------------------------------------------------------


def load_object(
    name_or_path: str | os.PathLike[str],
    *,
    search_dirs: list[str | os.PathLike[str]] | None = None,
    density: float | None = None,
    num_points: int = 1024,
    cache_dir: str | os.PathLike[str] | None = None,
    decomposition: DecompositionParams | None = None,
    friction: float = DEFAULT_FRICTION,
) -> ObjectAsset:
    """Load an object by URDF/mesh path, by name from the search dirs, or a built-in primitive.

    Search dirs default to ``$INTERMIMIC_OBJECTS`` (os.pathsep-separated) then
    ``$INTERMIMIC_DATA/assets/objects``; a name ``n`` matches ``n.urdf``, ``objects/n/n.obj``,
    ``n/n.obj`` or ``n.obj`` there. Primitive names (``PRIMITIVE_BOXES``) need no file.
    """
    if density is None:  # a primitive's own density, else upstream's 1000 kg/m^3
        density = PRIMITIVE_DENSITY.get(os.fspath(name_or_path), 1000.0)
    if not (np.isfinite(density) and density > 0):
        raise ObjectError(f"object {name_or_path!s}: density must be positive, got {density}")
    if num_points < 1:
        raise ObjectError(f"object {name_or_path!s}: num_points must be >= 1, got {num_points}")
    params = decomposition or DecompositionParams()
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".urdf", *MESH_SUFFIXES) or path.is_file():
        return _load_file(path, density, num_points, cache_dir, params, friction)
    if text in PRIMITIVE_BOXES:
        return _load_primitive(text, density, num_points, friction)
    found = find_object_file(text, search_dirs)
    if found is None:
        dirs = [str(d) for d in _search_dirs(search_dirs)]
        raise ObjectError(
            f"unknown object {text!r}: not a primitive ({', '.join(PRIMITIVE_BOXES)}) and no "
            f"{text}.urdf or mesh in {dirs or 'any search dir (set INTERMIMIC_OBJECTS or INTERMIMIC_DATA)'}"
        )
    return _load_file(found, density, num_points, cache_dir, params, friction, name=text)


def find_object_file(name: str, search_dirs: list[str | os.PathLike[str]] | None = None) -> Path | None:
    """The URDF or mesh file that ``name`` resolves to in the search dirs, or None."""
    for root in _search_dirs(search_dirs):
        candidates = [root / f"{name}.urdf"]
        for suffix in MESH_SUFFIXES:
            candidates += [root / "objects" / name / f"{name}{suffix}", root / name / f"{name}{suffix}",
                           root / f"{name}{suffix}"]
        for c in candidates:
            if c.is_file():
                return c
    return None


def _search_dirs(search_dirs: list[str | os.PathLike[str]] | None) -> list[Path]:
    if search_dirs is not None:
        return [Path(d).expanduser() for d in search_dirs]
    dirs: list[Path] = []
    env = os.environ.get("INTERMIMIC_OBJECTS")
    if env:
        dirs += [Path(d).expanduser() for d in env.split(os.pathsep) if d]
    data = os.environ.get("INTERMIMIC_DATA")
    if data:
        dirs.append(Path(data).expanduser() / "assets" / "objects")
    return dirs


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "intermimic" / "objects"


# -- loading -----------------------------------------------------------------------------------


def _load_primitive(name: str, density: float, num_points: int, friction: float) -> ObjectAsset:
    box = trimesh.creation.box(extents=PRIMITIVE_BOXES[name])
    vertices = np.asarray(box.vertices, dtype=np.float64)
    faces = np.asarray(box.faces, dtype=np.int32)
    points = _sample_surface(vertices, faces, num_points)
    return _assemble(name, vertices, faces, ((vertices, faces),), density, friction, points,
                     f"primitive:{name}")


def _load_file(
    path: Path,
    density: float,
    num_points: int,
    cache_dir: str | os.PathLike[str] | None,
    params: DecompositionParams,
    friction: float,
    name: str | None = None,
) -> ObjectAsset:
    if not path.is_file():
        raise ObjectError(f"object file {path} does not exist")
    if path.suffix.lower() == ".urdf":
        vertices, faces, mesh_path, transform = _read_urdf(path)
    else:
        vertices, faces = read_mesh(path)
        mesh_path, transform = path, np.eye(4)
    centre = vertices.mean(axis=0)
    vertices = vertices - centre
    obj_name = name or path.stem
    parts = convex_parts(vertices, faces, params, cache_dir, label=obj_name)
    sample_file = mesh_path.parent / "sample_points.npy"
    if sample_file.is_file():
        points = _read_sample_points(sample_file, transform) - centre
    else:
        points = _sample_surface(vertices, faces, num_points)
    return _assemble(obj_name, vertices, faces, parts, density, friction, points, str(path))


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float64 [V, 3], faces int32 [F, 3]) of a mesh file, validated."""
    if not path.is_file():
        raise ObjectError(f"mesh file {path} does not exist")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ObjectError(f"mesh file {path} cannot be read: {exc}") from exc
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(vertices) < 4 or len(faces) < 4 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ObjectError(f"mesh file {path} has no usable triangles ({len(vertices)} vertices, {len(faces)} faces)")
    if not np.isfinite(vertices).all():
        raise ObjectError(f"mesh file {path} has NaN or infinite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ObjectError(f"mesh file {path} has face indices outside its {len(vertices)} vertices")
    if float(np.ptp(vertices, axis=0).max()) <= 0.0:
        raise ObjectError(f"mesh file {path} is degenerate (all vertices coincide)")
    return vertices, faces.astype(np.int32)


def _read_urdf(path: Path) -> tuple[np.ndarray, np.ndarray, Path, np.ndarray]:
    """Collision geometry of a single-link URDF, in the link frame (meshes and primitives)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ObjectError(f"URDF {path} cannot be parsed: {exc}") from exc
    links = root.findall("link")
    if len(links) != 1:
        raise ObjectError(f"URDF {path}: expected one rigid <link>, found {len(links)}")
    elements = links[0].findall("collision") or links[0].findall("visual")
    if not elements:
        raise ObjectError(f"URDF {path}: link has no <collision> or <visual> geometry")
    meshes: list[trimesh.Trimesh] = []
    mesh_path: Path | None = None
    transform = np.eye(4)
    for el in elements:
        origin = _origin(el.find("origin"), path)
        geometry = el.find("geometry")
        if geometry is None or len(geometry) == 0:
            raise ObjectError(f"URDF {path}: <{el.tag}> has no <geometry>")
        shape = geometry[0]
        if shape.tag == "mesh":
            filename = shape.get("filename", "")
            if filename.startswith("file://"):
                filename = filename[len("file://"):]
            if "://" in filename:
                raise ObjectError(f"URDF {path}: mesh {filename!r} uses an unsupported URI scheme")
            file = (path.parent / filename).resolve()
            if not file.is_file():
                raise ObjectError(f"URDF {path}: mesh {filename!r} not found at {file}")
            scale = _floats(shape.get("scale", "1 1 1"), 3, path, "mesh scale")
            v, f = read_mesh(file)
            m = trimesh.Trimesh(v * scale, f, process=False)
            if mesh_path is None:
                mesh_path = file
                transform = origin @ np.diag([*scale, 1.0])
        elif shape.tag == "box":
            m = trimesh.creation.box(extents=_floats(shape.get("size", ""), 3, path, "box size"))
        elif shape.tag == "sphere":
            m = trimesh.creation.icosphere(subdivisions=3, radius=_floats(shape.get("radius", ""), 1, path, "radius")[0])
        elif shape.tag == "cylinder":
            r = _floats(shape.get("radius", ""), 1, path, "radius")[0]
            h = _floats(shape.get("length", ""), 1, path, "length")[0]
            m = trimesh.creation.cylinder(radius=r, height=h, sections=32)
        else:
            raise ObjectError(f"URDF {path}: unsupported geometry <{shape.tag}>")
        m.apply_transform(origin)
        meshes.append(m)
    merged: trimesh.Trimesh = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]  # type: ignore[assignment]
    return (np.asarray(merged.vertices, dtype=np.float64), np.asarray(merged.faces, dtype=np.int32),
            mesh_path or path, transform)


def _origin(el: ET.Element | None, path: Path) -> np.ndarray:
    t = np.eye(4)
    if el is None:
        return t
    xyz = _floats(el.get("xyz", "0 0 0"), 3, path, "origin xyz")
    rpy = _floats(el.get("rpy", "0 0 0"), 3, path, "origin rpy")
    t[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix()  # URDF rpy: fixed axes x, y, z
    t[:3, 3] = xyz
    return t


def _floats(text: str, n: int, path: Path, what: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise ObjectError(f"URDF {path}: {what} {text!r} is not numeric") from exc
    if values.shape != (n,) or not np.isfinite(values).all():
        raise ObjectError(f"URDF {path}: {what} {text!r} needs {n} finite numbers")
    return values


def _read_sample_points(file: Path, transform: np.ndarray) -> np.ndarray:
    try:
        points = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ObjectError(f"surface points {file} cannot be read: {exc}") from exc
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 1:
        raise ObjectError(f"surface points {file} have shape {points.shape}, expected [P, 3]")
    if not np.isfinite(points).all():
        raise ObjectError(f"surface points {file} contain NaN or inf")
    points = np.asarray(points, dtype=np.float64)
    return points @ transform[:3, :3].T + transform[:3, 3]


# -- geometry ----------------------------------------------------------------------------------


def farthest_point_indices(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of ``n`` farthest-point samples of ``points`` [P, 3], starting at ``start``."""
    p = np.asarray(points, dtype=np.float64)
    n = min(n, len(p))
    idx = np.empty(n, dtype=np.int64)
    idx[0] = start
    dist = np.sum((p - p[start]) ** 2, axis=1)
    for i in range(1, n):
        idx[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.sum((p - p[idx[i]]) ** 2, axis=1))
    return idx


def _sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int) -> np.ndarray:
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    dense, _ = trimesh.sample.sample_surface(mesh, max(20 * n, 20000), seed=SURFACE_SEED)
    dense = np.asarray(dense, dtype=np.float64)
    start = int(np.argmax(np.sum(dense**2, axis=1)))  # the point farthest from the origin
    return dense[farthest_point_indices(dense, n, start)]


def _is_convex(vertices: np.ndarray, faces: np.ndarray) -> bool:
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    if not mesh.is_watertight:
        return False
    hull = mesh.convex_hull
    return abs(hull.volume - mesh.volume) <= 1e-3 * hull.volume


def convex_parts(
    vertices: np.ndarray,
    faces: np.ndarray,
    params: DecompositionParams,
    cache_dir: str | os.PathLike[str] | None = None,
    label: str = "mesh",
) -> tuple[Part, ...]:
    """Convex collision parts of a mesh: the hull itself if the mesh is convex, else CoACD (cached)."""
    if _is_convex(vertices, faces):
        hull = trimesh.Trimesh(vertices, faces, process=True).convex_hull
        return ((np.asarray(hull.vertices, dtype=np.float64), np.asarray(hull.faces, dtype=np.int32)),)
    import coacd  # deferred: a native library, only needed for non-convex meshes

    key = _cache_key(vertices, faces, params, _coacd_version())
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    file = folder / f"{_safe(label)}-{key[:20]}.npz"
    cached = _read_cache(file)
    if cached is not None:
        return cached
    logger.info("convex decomposition of %s (first time; cached in %s)", label, file)
    from tqdm import tqdm

    coacd.set_log_level("error")
    with tqdm(total=1, desc=f"convex decomposition of {label}", unit="mesh", leave=False) as bar:
        raw = coacd.run_coacd(coacd.Mesh(vertices, faces), **asdict(params))
        bar.update(1)
    parts = []
    for v, _ in raw:
        hull = trimesh.Trimesh(np.asarray(v, dtype=np.float64)).convex_hull  # consistent outward winding
        if hull.volume > 1e-12:
            parts.append((np.asarray(hull.vertices, dtype=np.float64), np.asarray(hull.faces, dtype=np.int32)))
    if not parts:
        raise ObjectError(f"object {label}: convex decomposition produced no solid part")
    _write_cache(file, tuple(parts))
    return tuple(parts)


def _coacd_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coacd")
    except PackageNotFoundError:
        return "unknown"


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40] or "mesh"


def _cache_key(vertices: np.ndarray, faces: np.ndarray, params: DecompositionParams, version: str) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int32).tobytes())
    h.update(json.dumps({"params": asdict(params), "coacd": version, "format": _CACHE_FORMAT},
                        sort_keys=True).encode())
    return h.hexdigest()


def _read_cache(file: Path) -> tuple[Part, ...] | None:
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            verts, faces = z["vertices"], z["faces"]
            nv, nf = z["vertex_counts"], z["face_counts"]
        if nv.sum() != len(verts) or nf.sum() != len(faces) or not np.isfinite(verts).all():
            raise ValueError("inconsistent part counts")
        parts = []
        for v, f in zip(np.split(verts, np.cumsum(nv)[:-1]), np.split(faces, np.cumsum(nf)[:-1])):
            if len(f) == 0 or f.min() < 0 or f.max() >= len(v):
                raise ValueError("face index out of range")
            parts.append((v.astype(np.float64), f.astype(np.int32)))
        return tuple(parts)
    except (ValueError, KeyError, OSError) as exc:
        logger.warning("ignoring corrupt decomposition cache %s (%s); recomputing", file, exc)
        return None


def _write_cache(file: Path, parts: tuple[Part, ...]) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(
            buf,
            vertices=np.concatenate([v for v, _ in parts]),
            faces=np.concatenate([f for _, f in parts]).astype(np.int32),
            vertex_counts=np.array([len(v) for v, _ in parts], dtype=np.int64),
            face_counts=np.array([len(f) for _, f in parts], dtype=np.int64),
        )
        with atomic_output(file) as handle:
            handle.write(buf.getvalue())
    except OSError as exc:  # a read-only cache must not stop the load
        logger.warning("cannot write decomposition cache %s: %s", file, exc)


def mass_properties(parts: tuple[Part, ...], density: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(mass, centre of mass [3], inertia about it [3, 3]) of the union of convex parts.

    Overlaps between parts count twice; CoACD parts barely overlap, so the error is small.
    """
    masses, coms, inertias = [], [], []
    for v, f in parts:
        m = trimesh.Trimesh(v, f, process=False)
        vol = float(m.volume)
        if vol <= 0:
            m = m.convex_hull
            vol = float(m.volume)
        masses.append(density * vol)
        coms.append(np.asarray(m.center_mass, dtype=np.float64))
        inertias.append(density * np.asarray(m.moment_inertia, dtype=np.float64))  # trimesh: unit density
    mass = float(sum(masses))
    if not mass > 0:
        raise ObjectError("object has zero volume: its collision parts are flat")
    com = np.sum([mi * ci for mi, ci in zip(masses, coms)], axis=0) / mass
    inertia = np.zeros((3, 3))
    for mi, ci, ii in zip(masses, coms, inertias):
        d = ci - com
        inertia += ii + mi * (np.dot(d, d) * np.eye(3) - np.outer(d, d))  # parallel-axis theorem
    return mass, com, 0.5 * (inertia + inertia.T)


def _assemble(
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    parts: tuple[Part, ...],
    density: float,
    friction: float,
    points: np.ndarray,
    source: str,
) -> ObjectAsset:
    mass, com, inertia = mass_properties(parts, density)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    h = hashlib.sha256()
    h.update(json.dumps({"name": name, "density": density, "friction": friction}, sort_keys=True).encode())
    for a in (vertices, faces, pts, *[x for part in parts for x in part]):
        h.update(np.ascontiguousarray(a).tobytes())
    arrays = [vertices, faces, com, inertia, pts] + [x for part in parts for x in part]
    for a in arrays:
        a.setflags(write=False)
    return ObjectAsset(
        name=name, vertices=vertices, faces=faces, parts=parts, density=float(density), mass=mass,
        com=com, inertia=inertia, friction=float(friction), surface_points=pts, source=source,
        content_hash=h.hexdigest(),
    )
