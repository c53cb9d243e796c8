"""Objects: primitives, meshes, URDFs, convex decomposition cache, surface points, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from intermimic_policy.errors import IntermimicError
from intermimic_policy.motion.object_names import PRIMITIVE_BOXES
from intermimic_policy.sim import objects
from intermimic_policy.sim.objects import DecompositionParams, ObjectError, load_object

# Coarse CoACD settings: the synthetic ring decomposes in well under a second.
FAST = DecompositionParams(resolution=1000, mcts_iterations=50, preprocess_resolution=30)


def _ring(path: Path, offset=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """A watertight, non-convex ring (annulus) with analytic volume, written as OBJ."""
    ring = trimesh.creation.annulus(r_min=0.1, r_max=0.2, height=0.1, sections=32)
    ring.apply_translation(offset)
    ring.export(path)
    return ring


def test_primitive_box_mass_inertia_and_points() -> None:
    ext = np.array(PRIMITIVE_BOXES["box"])
    asset = load_object("box", density=500.0, num_points=256)
    assert asset.source == "primitive:box" and len(asset.parts) == 1
    mass = 500.0 * np.prod(ext)
    assert asset.mass == pytest.approx(mass, rel=1e-9)
    a, b, c = ext
    expected = mass / 12.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
    np.testing.assert_allclose(np.diag(asset.inertia), expected, rtol=1e-9)
    np.testing.assert_allclose(asset.com, 0.0, atol=1e-12)
    # Points: the requested count, float32, all on the box surface, deterministic.
    pts = asset.surface_points
    assert pts.shape == (256, 3) and pts.dtype == np.float32
    on_face = np.isclose(np.abs(pts) / (ext / 2), 1.0, atol=1e-5).any(axis=1)
    assert on_face.all() and (np.abs(pts) <= ext / 2 + 1e-6).all()
    again = load_object("box", density=500.0, num_points=256)
    np.testing.assert_array_equal(pts, again.surface_points)
    assert asset.content_hash == again.content_hash
    assert load_object("box", density=600.0, num_points=256).content_hash != asset.content_hash
    # Farthest-point samples spread out: no two of them nearly coincide.
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts))
    assert d.min() > 0.01


def test_points_gives_exactly_n() -> None:
    asset = load_object("box", num_points=100)
    few = asset.points(10)
    assert few.shape == (10, 3)
    assert all((asset.surface_points == p).all(axis=1).any() for p in few)  # a subset
    many = asset.points(250)
    assert many.shape == (250, 3)
    np.testing.assert_array_equal(many[:100], asset.surface_points)
    np.testing.assert_array_equal(many[100:200], asset.surface_points)
    np.testing.assert_array_equal(asset.points(10), few)
    with pytest.raises(ObjectError):
        asset.points(0)


def test_nonconvex_mesh_is_decomposed_with_mass_from_volume(tmp_path: Path) -> None:
    ring = _ring(tmp_path / "ring.obj", offset=(1.0, 2.0, 3.0))
    asset = load_object(tmp_path / "ring.obj", density=800.0, cache_dir=tmp_path / "cache", decomposition=FAST)
    assert asset.name == "ring"
    # Object frame: origin at the mean of the mesh vertices.
    np.testing.assert_allclose(asset.vertices.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(asset.vertices + ring.vertices.mean(axis=0), ring.vertices, atol=1e-9)
    # Several convex parts, each within CoACD's limits, together close to the true volume.
    assert 2 <= len(asset.parts) <= FAST.max_convex_hull
    for v, f in asset.parts:
        part = trimesh.Trimesh(v, f)
        assert len(v) <= FAST.max_ch_vertex
        assert part.volume == pytest.approx(part.convex_hull.volume, rel=1e-6)
    exact = np.pi * (0.2**2 - 0.1**2) * 0.1
    assert asset.mass == pytest.approx(800.0 * exact, rel=0.05)
    # The ring is hollow: a hull would be ~33 % heavier.
    assert asset.mass < 800.0 * np.pi * 0.2**2 * 0.1 * 0.85


def test_decomposition_cache_hit_and_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coacd

    _ring(tmp_path / "ring.obj")
    cache = tmp_path / "cache"
    first = load_object(tmp_path / "ring.obj", cache_dir=cache, decomposition=FAST)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob(".*tmp"))
    with np.load(files[0], allow_pickle=False) as z:
        assert int(z["vertex_counts"].sum()) == len(z["vertices"])

    def boom(*args, **kwargs):
        raise AssertionError("CoACD ran although the decomposition is cached")

    monkeypatch.setattr(coacd, "run_coacd", boom)
    second = load_object(tmp_path / "ring.obj", cache_dir=cache, decomposition=FAST)
    assert second.content_hash == first.content_hash
    # Other parameters are another cache entry (so CoACD would run).
    with pytest.raises(AssertionError, match="CoACD ran"):
        load_object(tmp_path / "ring.obj", cache_dir=cache, decomposition=DecompositionParams(threshold=0.2))
    monkeypatch.undo()
    # A corrupt cache file is ignored and rewritten.
    files[0].write_bytes(b"not an npz")
    third = load_object(tmp_path / "ring.obj", cache_dir=cache, decomposition=FAST)
    assert third.mass == pytest.approx(first.mass, rel=1e-9)
    with np.load(files[0], allow_pickle=False) as z:
        assert "faces" in z


def test_urdf_scale_origin_and_sample_points(tmp_path: Path) -> None:
    mesh_dir = tmp_path / "objects" / "crate"
    mesh_dir.mkdir(parents=True)
    box = trimesh.creation.box(extents=(0.2, 0.1, 0.1))
    box.export(mesh_dir / "crate.obj")
    stored = np.random.default_rng(0).uniform(-0.05, 0.05, size=(340, 3))
    np.save(mesh_dir / "sample_points.npy", stored)
    (tmp_path / "crate.urdf").write_text(
        '<robot name="crate"><link name="baseLink"><collision><origin xyz="0.5 0 0" rpy="0 0 0"/>'
        '<geometry><mesh filename="objects/crate/crate.obj" scale="2 2 2"/></geometry></collision>'
        "</link></robot>"
    )
    asset = load_object("crate", search_dirs=[tmp_path], cache_dir=tmp_path / "cache")
    assert asset.source == str(tmp_path / "crate.urdf")
    np.testing.assert_allclose(np.ptp(asset.vertices, axis=0), [0.4, 0.2, 0.2], atol=1e-9)
    assert asset.mass == pytest.approx(1000.0 * 0.4 * 0.2 * 0.2, rel=1e-6)
    # The stored points follow the mesh: scaled by 2, shifted with it into the object frame.
    assert asset.surface_points.shape == (340, 3)
    centre = 0.5 * np.array([1.0, 0.0, 0.0]) + 2.0 * np.asarray(box.vertices).mean(axis=0)
    np.testing.assert_allclose(asset.surface_points, 2.0 * stored + [0.5, 0, 0] - centre, atol=1e-6)


def test_search_dirs_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(tmp_path / "cube.stl")
    monkeypatch.setenv("INTERMIMIC_OBJECTS", str(tmp_path))
    monkeypatch.delenv("INTERMIMIC_DATA", raising=False)
    assert objects.find_object_file("cube") == tmp_path / "cube.stl"
    asset = load_object("cube", num_points=32, cache_dir=tmp_path / "cache")
    assert asset.mass == pytest.approx(1.0, rel=1e-6)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ObjectError, match="unknown object 'flyingcarpet'"):
        load_object("flyingcarpet", search_dirs=[tmp_path])
    (tmp_path / "missing.urdf").write_text(
        '<robot name="m"><link name="l"><collision><geometry><mesh filename="nowhere/missing.obj"/>'
        "</geometry></collision></link></robot>"
    )
    with pytest.raises(ObjectError, match="missing.obj"):
        load_object(tmp_path / "missing.urdf")
    (tmp_path / "broken.urdf").write_text("<robot><link>")
    with pytest.raises(ObjectError, match="broken.urdf"):
        load_object(tmp_path / "broken.urdf")
    (tmp_path / "garbage.obj").write_bytes(b"\x00\x01 this is not a mesh \xff")
    with pytest.raises(ObjectError, match="garbage.obj"):
        load_object(tmp_path / "garbage.obj")
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    with pytest.raises(ObjectError, match="nan.obj"):
        load_object(tmp_path / "nan.obj")
    with pytest.raises(ObjectError, match="does not exist"):
        load_object(tmp_path / "absent.obj")
    box_dir = tmp_path / "objects" / "badpts"
    box_dir.mkdir(parents=True)
    trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(box_dir / "badpts.obj")
    np.save(box_dir / "sample_points.npy", np.full((5, 3), np.nan))
    with pytest.raises(ObjectError, match="sample_points.npy"):
        load_object("badpts", search_dirs=[tmp_path])
    with pytest.raises(IntermimicError, match="density"):
        load_object("box", density=-1.0)


def test_shared_table_asset(assets_root: Path) -> None:
    """The real OMOMO table: object frame, stored points on the surface, a concave mass."""
    asset = load_object("largetable", search_dirs=[assets_root / "objects"])
    mesh = trimesh.Trimesh(asset.vertices, asset.faces, process=False)
    np.testing.assert_allclose(asset.vertices.mean(axis=0), 0.0, atol=1e-6)
    assert asset.surface_points.shape == (340, 3)
    from scipy.spatial import cKDTree

    dense, _ = trimesh.sample.sample_surface(mesh, 200_000, seed=0)
    closest, _ = cKDTree(dense).query(asset.surface_points.astype(np.float64))
    assert np.median(closest) < 0.01 and closest.max() < 0.03
    assert 2 <= len(asset.parts) <= DecompositionParams().max_convex_hull
    # Legs and top only: far lighter than its 0.14 m^3 convex hull (spec 3.1 upper bound).
    assert 5.0 < asset.mass < 0.5 * 1000.0 * mesh.convex_hull.volume
    assert all(len(v) <= DecompositionParams().max_ch_vertex for v, _ in asset.parts)
