"""Minimum geodesic distances of mixed geometries and their radius graph, against independent references.

The distance reference projects a pair with PROJ's own azimuthal equidistant projection (``pyproj.Transformer``,
not the geodesic-based plane of the module), densifies the boundaries there every metre, returns 0 when the two
intersect and otherwise the least ``pyproj.Geod.inv`` distance over all pairs of densified vertices (pairs screened
with a planar k-d tree by a margin that the projection's scale bounds make safe).
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from conftest import shared_file
from geodata import clustered_lonlat
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyproj import Geod, Transformer
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree
from scipy.spatial.distance import squareform
from shapely.geometry import MultiPolygon, Point, Polygon, box

from mtg.kernels.geodesic import geodesic_distance
from mtg.kernels.geometry_graph import (
    centres_and_reaches,
    geometry_distance,
    geometry_distance_callback,
    geometry_pair_distances,
    geometry_radius_graph,
)
from mtg.kernels.hac import sparse_hac

GEOD = Geod(ellps="WGS84")
DEMO = ("maus_tang_combined_demo", "mining_polygons_combined_demo.gpkg")


def reference_distance(a, b, step_m: float = 1.0) -> float:
    """Densified brute force in a PROJ aeqd plane centred on the mean of all vertices (see the module doc)."""
    xy = np.vstack([shapely.get_coordinates(a), shapely.get_coordinates(b)])
    lam, phi = np.radians(xy[:, 0]), np.radians(xy[:, 1])
    v = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).sum(axis=1)
    lon0, lat0 = np.degrees(np.arctan2(v[1], v[0])), np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))
    plane = Transformer.from_crs("EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +ellps=WGS84", always_xy=True)

    def project(g):
        return shapely.transform(g, lambda c: np.column_stack(plane.transform(c[:, 0], c[:, 1])))

    pa, pb = project(a), project(b)
    if pa.intersects(pb):
        return 0.0

    def vertices(g):
        return shapely.get_coordinates(shapely.segmentize(shapely.boundary(g) if g.geom_type != "Point" else g,
                                                          step_m))

    va, vb = vertices(pa), vertices(pb)
    tb = cKDTree(vb)
    nearest = tb.query(va)[0].min()
    # plane length / geodesic length lies in [1, 1.001] within ~500 km of the centre: a wider margin is safe
    pairs = cKDTree(va).query_ball_tree(tb, nearest * 1.001 + 1.0)
    ia = np.repeat(np.arange(len(va)), [len(p) for p in pairs])
    ib = np.fromiter((k for p in pairs for k in p), dtype=np.int64, count=ia.size)
    la, pa_ = plane.transform(va[ia, 0], va[ia, 1], direction="INVERSE")
    lb, pb_ = plane.transform(vb[ib, 0], vb[ib, 1], direction="INVERSE")
    return float(np.min(GEOD.inv(la, pa_, lb, pb_)[2]))


def blob(rng, lon, lat, size_m, parts=1):
    """A star-shaped polygon (or multipolygon) of a few vertices around a lon/lat point, built with geodesics."""
    polys = []
    for p in range(parts):
        clon, clat = (lon, lat) if p == 0 else GEOD.fwd(lon, lat, rng.uniform(0, 360), 3 * size_m)[:2]
        k = int(rng.integers(3, 8))
        px, py, _ = GEOD.fwd(np.full(k, clon), np.full(k, clat), np.sort(rng.uniform(0, 360, k)),
                             rng.uniform(0.3, 1.0, k) * size_m)
        polys.append(Polygon(np.column_stack([px, py])))
    return polys[0] if parts == 1 else MultiPolygon(polys)


def random_geometry(rng, lon, lat, max_size_m):
    kind = rng.integers(0, 3)
    if kind == 0:
        return Point(lon, lat)
    return blob(rng, lon, lat, rng.uniform(20.0, max_size_m), parts=int(kind))


# ---------------------------------------------------------------------------------------------- distances


@settings(max_examples=40, deadline=None)
@given(st.floats(-180, 180), st.floats(-90, 90), st.floats(0, 360), st.floats(0, 2e7))
@example(0.0, 9.191082098028413e-165, 0.0, 0.0)  # a subnormal chord: its curvature terms underflow to 0
def test_point_to_point_is_the_point_geodesic(lon, lat, az, s):
    lon2, lat2, _ = GEOD.fwd(lon, lat, az, s)
    ours = geometry_distance(Point(lon, lat), Point(lon2, lat2))
    assert ours == geodesic_distance(lon, lat, lon2, lat2)
    assert abs(ours - GEOD.inv(lon, lat, lon2, lat2)[2]) < 2e-3


def test_touching_overlapping_and_nested_give_zero_and_holes_do_not():
    square = box(10, 45, 10.01, 45.01)
    assert geometry_distance(Point(10.005, 45.005), square) == 0.0  # point in polygon
    # a point on a lon/lat-straight edge: edges are straight in the local plane, micrometres away here
    assert geometry_distance(Point(10.01, 45.005), square) < 1e-3
    assert geometry_distance(square, box(10.01, 45, 10.02, 45.01)) == 0.0  # shared edge
    assert geometry_distance(square, box(10.005, 45.005, 10.02, 45.02)) == 0.0  # overlap
    assert geometry_distance(square, box(10.002, 45.002, 10.003, 45.003)) == 0.0  # contained
    multi = MultiPolygon([box(11, 45, 11.01, 45.01), box(10.009, 45.009, 10.012, 45.012)])
    assert geometry_distance(multi, square) == 0.0  # one part overlaps
    holed = Polygon(box(10, 45, 10.1, 45.1).exterior.coords, [box(10.04, 45.04, 10.06, 45.06).exterior.coords])
    d = geometry_distance(Point(10.05, 45.05), holed)  # a point in the hole is 0.01 degrees from the hole's rim
    assert d == pytest.approx(reference_distance(Point(10.05, 45.05), holed), abs=1.0)
    assert 700 < d < 800


def test_distance_runs_to_the_nearest_edge_not_the_centroid():
    d = geometry_distance(Point(10.02, 45.005), box(10, 45, 10.01, 45.01))
    assert d == pytest.approx(GEOD.inv(10.01, 45.005, 10.02, 45.005)[2], abs=0.01)


@pytest.mark.parametrize(
    "a, b",
    [
        (box(179.985, -0.005, 179.995, 0.005), box(-179.995, -0.005, -179.985, 0.005)),  # either side of 180
        (Polygon([(179.99, 10), (-179.99, 10), (-179.99, 10.01), (179.99, 10.01)]), Point(179.9, 10.005)),  # across
        (box(179.98, 10.0, 179.99, 10.01), Point(-179.98, 10.005)),
        (box(-30.0, 89.990, 30.0, 89.992), box(150.0, 89.990, 170.0, 89.992)),  # on either side of the north pole
        (Point(0.0, -90.0), box(10.0, -89.95, 10.5, -89.94)),  # from the south pole
        (Polygon([(0, 89.9), (120, 89.9), (240, 89.9)]), Point(45, 89.5)),  # a triangle around the pole
    ],
)
def test_antimeridian_and_poles_agree_with_the_reference(a, b):
    got, ref = geometry_distance(a, b), reference_distance(a, b)
    assert got > 0 and abs(got - ref) < 1.0
    assert geometry_distance(b, a) == pytest.approx(got, abs=1e-6)


def test_polygon_around_the_pole_contains_it():
    assert geometry_distance(Polygon([(0, 89.9), (120, 89.9), (240, 89.9)]), Point(77, 90)) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["anywhere", "antimeridian", "pole"]), st.floats(0, 50_000))
def test_distances_agree_with_the_densified_reference_to_a_metre(seed, regime, separation):
    rng = np.random.default_rng(seed)
    (lon,), (lat,) = clustered_lonlat(seed, 1, 0.0, regime)
    a = random_geometry(rng, lon, lat, 3_000.0)
    lon2, lat2, _ = GEOD.fwd(lon, lat, rng.uniform(0, 360), separation)
    b = random_geometry(rng, lon2, lat2, 3_000.0)
    got, ref = geometry_distance(a, b), reference_distance(a, b)
    assert abs(got - ref) < 1.0, (a.wkt, b.wkt, got, ref)


def test_pair_distances_and_callback_match_the_scalar_function():
    rng = np.random.default_rng(3)
    geoms = [random_geometry(rng, 20 + rng.normal(0, 0.1), -5 + rng.normal(0, 0.1), 2_000.0) for _ in range(12)]
    i, j = np.triu_indices(12, 1)
    each = np.array([geometry_distance(geoms[a], geoms[b]) for a, b in zip(i, j)])
    np.testing.assert_allclose(geometry_pair_distances(geoms, i, j), each, rtol=0, atol=1e-6)
    np.testing.assert_allclose(geometry_distance_callback(geoms)(j, i), each, rtol=0, atol=1e-6)
    assert geometry_pair_distances(geoms, [], []).shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        geometry_pair_distances([Point(0, 0), Polygon()], [0], [1])


def test_reach_covers_every_vertex():
    rng = np.random.default_rng(0)
    geoms = [random_geometry(rng, lon, 89.99 if k % 2 else 0.0, 50_000.0) for k, lon in
             enumerate(rng.uniform(-180, 180, 20))]
    centres, reaches = centres_and_reaches(geoms)
    for g, c, r in zip(geoms, centres, reaches):
        lon, lat = shapely.get_coordinates(g).T
        v = np.stack([np.cos(np.radians(lat)) * np.cos(np.radians(lon)),
                      np.cos(np.radians(lat)) * np.sin(np.radians(lon)), np.sin(np.radians(lat))], axis=1)
        assert np.arccos(np.clip(v @ c, -1, 1)).max() <= r
        assert r == 0.0 if g.geom_type == "Point" else r > 0


# ---------------------------------------------------------------------------------------------- graph


def brute_force(geoms, radius):
    ai, aj = np.triu_indices(len(geoms), 1)
    every = geometry_pair_distances(geoms, ai, aj)
    keep = every <= radius
    return ai[keep], aj[keep], every[keep]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.sampled_from(["anywhere", "antimeridian", "pole"]),
       st.floats(1_000, 20_000), st.integers(1, 16), st.sampled_from([300.0, 5_000.0, 20_000.0]))
def test_graph_equals_brute_force_on_mixed_geometries(seed, n, regime, radius, chunk_size, max_size):
    lon, lat = clustered_lonlat(seed, n, 30_000.0, regime, per_cluster=8)
    rng = np.random.default_rng(seed)
    geoms = [random_geometry(rng, x, y, max_size) for x, y in zip(lon, lat)]
    i, j, d = geometry_radius_graph(geoms, radius, chunk_size=chunk_size)
    assert i.dtype == j.dtype == np.int64 and d.dtype == np.float64
    ei, ej, ed = brute_force(geoms, radius)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(j, ej)
    np.testing.assert_allclose(d, ed, rtol=0, atol=1e-6)


def test_graph_of_zero_and_one_geometries_and_bad_arguments():
    for geoms in ([], [box(0, 0, 1, 1)]):
        i, j, d = geometry_radius_graph(geoms, 1_000.0)
        assert i.size == j.size == d.size == 0 and i.dtype == np.int64
    with pytest.raises(ValueError):
        geometry_radius_graph([Point(0, 0), Point(1, 1)], -1.0)
    with pytest.raises(ValueError):
        geometry_radius_graph([Point(0, 0), Point(1, 1)], 1.0, chunk_size=0)


@pytest.fixture(scope="module")
def demo_polygons():
    import geopandas as gpd

    frame = gpd.read_file(shared_file(*DEMO))
    assert frame.crs.to_epsg() == 4326
    return list(frame.geometry)


def test_real_polygons_graph_equals_brute_force_and_the_reference(demo_polygons):
    geoms = demo_polygons
    for radius in (20_000.0, 50_000.0):
        i, j, d = geometry_radius_graph(geoms, radius, chunk_size=17)
        ei, ej, ed = brute_force(geoms, radius)
        np.testing.assert_array_equal(np.stack([i, j]), np.stack([ei, ej]))
        np.testing.assert_allclose(d, ed, rtol=0, atol=1e-6)
        assert len(i) > 0
    for a, b, dist in zip(i, j, d):  # every pair within 50 km against the densified reference
        assert abs(dist - reference_distance(geoms[a], geoms[b])) < 1.0, (a, b)


def test_sparse_hac_on_real_polygons_equals_dense_scipy(demo_polygons):
    geoms = demo_polygons
    n, h_max = len(geoms), 50_000.0
    cuts = [1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0]
    i, j, d = geometry_radius_graph(geoms, h_max)
    dense = np.zeros((n, n))
    ai, aj = np.triu_indices(n, 1)
    dense[ai, aj] = dense[aj, ai] = geometry_pair_distances(geoms, ai, aj)
    checked = 0
    for method in ("single", "complete", "average"):
        callback = geometry_distance_callback(geoms) if method == "average" else None
        result = sparse_hac(n, i, j, d, h_max, method, cuts, exact_distance=callback)
        z = linkage(squareform(dense, checks=False), method)
        for k, cut in enumerate(cuts):
            if result.ambiguous[k]:
                continue
            expected = fcluster(z, cut, criterion="distance")
            ours = result.labels[k]
            assert len(set(zip(ours, expected))) == len(set(ours)) == len(set(expected)), (method, cut)
            checked += 1
        assert len(set(result.labels[-1])) < n  # the largest cut does merge some polygons
    assert checked >= 12


REAL_POLYGON_SETS = {
    "swiss_quarries": ("stdl_mineral_extraction_sites", "swisstlm3d", "mes_swisstlm3d_swissimage2020.shp"),
    "earth_genome_2022": ("stdl_mineral_extraction_sites", "earthgenome_artisanal_brazil",
                          "artisanal-mes_Earth-Genome_detections-2022.shp"),
    "amazon_mining_watch_2024": ("amazon_mining_watch", "yearly_website_layers", "mining_202400_simplified.geojson"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_POLYGON_SETS))
def test_sparse_hac_on_real_polygon_sets_equals_dense_scipy(name):
    """The 70 polygons nearest to the first one of each set (any CRS in, lon/lat used), every linkage, four cuts."""
    import geopandas as gpd

    frame = gpd.read_file(shared_file(*REAL_POLYGON_SETS[name])).to_crs("EPSG:4326")
    centres = frame.geometry.representative_point()
    order = np.argsort(GEOD.inv(np.full(len(frame), centres.x.iloc[0]), np.full(len(frame), centres.y.iloc[0]),
                                centres.x.to_numpy(), centres.y.to_numpy())[2])
    geoms = list(frame.geometry.iloc[order[:70]])
    h_max, cuts = 5_000.0, [500.0, 1_000.0, 2_000.0, 5_000.0]
    i, j, d = geometry_radius_graph(geoms, h_max)
    n = len(geoms)
    ai, aj = np.triu_indices(n, 1)
    dense = np.zeros((n, n))
    dense[ai, aj] = dense[aj, ai] = geometry_pair_distances(geoms, ai, aj)
    keep = dense[ai, aj] <= h_max
    np.testing.assert_array_equal(np.stack([i, j]), np.stack([ai[keep], aj[keep]]))
    assert 0 < keep.sum() < keep.size  # the subset clusters, but not into one blob
    for method in ("single", "complete", "average"):
        result = sparse_hac(n, i, j, d, h_max, method, cuts,
                            exact_distance=geometry_distance_callback(geoms) if method == "average" else None)
        z = linkage(squareform(dense, checks=False), method)
        for k, cut in enumerate(cuts):
            if result.ambiguous[k]:
                continue
            expected = fcluster(z, cut, criterion="distance")
            assert len(set(zip(result.labels[k], expected))) == len(set(expected)) == len(set(result.labels[k])), \
                (name, method, cut)
