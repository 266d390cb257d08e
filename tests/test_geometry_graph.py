"""Minimum geodesic distances of mixed geometries and their radius graph, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from conftest import shared_file
from geodata import clustered_lonlat
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from shapely.geometry import Point, box

from mtg.kernels.geometry_graph import geometry_distance, geometry_pair_distances, geometry_radius_graph
from mtg.kernels.hac import sparse_hac

GEOD = Geod(ellps="WGS84")


def densified_distance(a, b, step_m: float = 5.0) -> float:
    """Reference: 0 if the lon/lat geometries intersect, else the least geodesic distance between boundary
    points spaced ``step_m`` apart along geodesic edges (an upper bound within ``step_m`` of the truth)."""
    if a.intersects(b):
        return 0.0

    def points(g):
        if g.geom_type == "Point":
            return np.array([[g.x, g.y]])
        out = []
        for ring in shapely.get_parts(shapely.boundary(g)):
            xy = shapely.get_coordinates(ring)
            for (x1, y1), (x2, y2) in zip(xy[:-1], xy[1:]):
                n = int(GEOD.inv(x1, y1, x2, y2)[2] // step_m)
                out.append([[x1, y1], *GEOD.npts(x1, y1, x2, y2, n)] if n else [[x1, y1]])
        return np.vstack(out)

    pa, pb = points(a), points(b)
    ia, ib = np.meshgrid(np.arange(len(pa)), np.arange(len(pb)), indexing="ij")
    return float(GEOD.inv(pa[ia.ravel(), 0], pa[ia.ravel(), 1], pb[ib.ravel(), 0], pb[ib.ravel(), 1])[2].min())


def test_points_polygons_touching_and_containment():
    assert geometry_distance(Point(10, 45), Point(10.01, 45)) == pytest.approx(GEOD.inv(10, 45, 10.01, 45)[2])
    square = box(10, 45, 10.01, 45.01)
    assert geometry_distance(Point(10.005, 45.005), square) == 0.0
    assert geometry_distance(square, box(10.01, 45, 10.02, 45.01)) == 0.0  # shared edge
    assert geometry_distance(square, box(10.002, 45.002, 10.003, 45.003)) == 0.0  # contained
    # a point beside the square's east edge: the distance runs to the edge, not to the centroid
    d = geometry_distance(Point(10.02, 45.005), square)
    assert d == pytest.approx(GEOD.inv(10.01, 45.005, 10.02, 45.005)[2], abs=1.0)


@pytest.mark.parametrize(
    "a, b",
    [
        (box(179.985, -0.005, 179.995, 0.005), box(-179.995, -0.005, -179.985, 0.005)),  # across the antimeridian
        (box(179.98, 10.0, 179.99, 10.01), Point(-179.98, 10.005)),
        (box(-30.0, 89.990, 30.0, 89.992), box(150.0, 89.990, 170.0, 89.992)),  # around the north pole
        (Point(0.0, -90.0), box(10.0, -89.95, 10.5, -89.94)),  # from the south pole
    ],
)
def test_antimeridian_and_poles_agree_with_the_densified_reference(a, b):
    got, ref = geometry_distance(a, b), densified_distance(a, b, step_m=2.0)
    assert 0 < got <= ref + 0.5 and ref - got < 1.0


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["anywhere", "antimeridian", "pole"]),
       st.floats(1_000, 20_000))
def test_graph_equals_brute_force_on_mixed_geometries(seed, regime, radius):
    lon, lat = clustered_lonlat(seed, 24, 15_000.0, regime, per_cluster=8)
    rng = np.random.default_rng(seed)
    geoms = []
    for k, (x, y) in enumerate(zip(lon, lat)):
        if k % 3 == 0 or abs(y) > 89.9:
            geoms.append(Point(x, y))
        else:  # a small quadrilateral a few hundred metres across around the point
            az = np.sort(rng.uniform(0, 360, 4))
            px, py, _ = GEOD.fwd(np.full(4, x), np.full(4, y), az, rng.uniform(100, 600, 4))
            geoms.append(shapely.Polygon(np.column_stack([px, py])).buffer(0) if max(px) - min(px) < 180
                         else Point(x, y))
    i, j, d = geometry_radius_graph(geoms, radius, chunk_size=7)
    n = len(geoms)
    ai, aj = np.triu_indices(n, 1)
    every = geometry_pair_distances(geoms, ai, aj)
    keep = every <= radius
    np.testing.assert_array_equal(i, ai[keep])
    np.testing.assert_array_equal(j, aj[keep])
    np.testing.assert_allclose(d, every[keep])


def test_real_polygons_graph_distances_and_average_linkage_equal_dense_scipy():
    import geopandas as gpd

    path = shared_file("maus_tang_combined_demo", "mining_polygons_combined_demo.gpkg")
    geoms = list(gpd.read_file(path).to_crs("EPSG:4326").geometry)[:40]
    radius = 50_000.0
    i, j, d = geometry_radius_graph(geoms, radius)
    assert len(i) > 0
    for a, b, dist in zip(i[:10], j[:10], d[:10]):  # independent reference on a sample of edges
        assert abs(dist - densified_distance(geoms[a], geoms[b], step_m=20.0)) < 20.0
    n = len(geoms)
    ai, aj = np.triu_indices(n, 1)
    dense = np.zeros((n, n))
    dense[ai, aj] = dense[aj, ai] = geometry_pair_distances(geoms, ai, aj)
    cuts = [5_000.0, 20_000.0, 50_000.0]
    from mtg.kernels.geometry_graph import geometry_distance_callback

    for method in ("single", "complete", "average"):
        result = sparse_hac(n, i, j, d, radius, method, cuts,
                            exact_distance=geometry_distance_callback(geoms) if method == "average" else None)
        z = linkage(squareform(dense, checks=False), method)
        for k, cut in enumerate(cuts):
            if result.ambiguous[k]:
                continue
            expected = fcluster(z, cut, criterion="distance")
            _, ours = np.unique(result.labels[k], return_inverse=True)
            pairs = {(a, b) for a, b in zip(ours, expected)}
            assert len(pairs) == len(set(ours)) == len(set(expected)), (method, cut)


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
    from mtg.kernels.geometry_graph import geometry_distance_callback

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
