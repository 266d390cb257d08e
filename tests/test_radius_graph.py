"""The geodesic radius graph against brute force with pyproj, on clustered points, poles and the antimeridian."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from geodata import clustered_lonlat
from pyproj import Geod

from mtg.kernels.radius_graph import (
    chord_radius,
    distance_callback,
    geodesic_distance,
    pair_distances,
    radius_graph,
    unit_vectors,
)

GEOD = Geod(ellps="WGS84")


def brute_force(lon, lat, radius):
    i, j = np.triu_indices(len(lon), 1)
    d = geodesic_distance(lon[i], lat[i], lon[j], lat[j])
    keep = d <= radius
    return i[keep], j[keep], d[keep]


points = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(1, 150),
    st.sampled_from([200.0, 5_000.0, 50_000.0]),
    st.sampled_from(["anywhere", "antimeridian", "pole"]),
)


@settings(max_examples=60, deadline=None)
@given(points, st.floats(0.05, 2.0), st.integers(1, 64))
def test_chunked_graph_equals_brute_force(pts, radius_factor, chunk_size):
    seed, n, spread, regime = pts
    lon, lat = clustered_lonlat(seed, n, spread, regime)
    radius = spread * radius_factor
    i, j, d = radius_graph(lon, lat, radius, chunk_size=chunk_size)
    bi, bj, bd = brute_force(lon, lat, radius)
    assert i.dtype == j.dtype == np.int64 and d.dtype == np.float64
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(j, bj)
    np.testing.assert_array_equal(d, bd)
    assert (i < j).all() and (d <= radius).all()


@settings(max_examples=60, deadline=None)
@given(points)
def test_chord_bound_is_conservative(pts):
    seed, n, spread, regime = pts
    lon, lat = clustered_lonlat(seed, n, spread, regime)
    i, j = np.triu_indices(len(lon), 1)
    d = pair_distances(lon, lat, i, j)
    xyz = unit_vectors(lon, lat)
    chord = np.linalg.norm(xyz[i] - xyz[j], axis=1)
    assert all(c <= chord_radius(s) for c, s in zip(chord.tolist(), d.tolist()))


@pytest.mark.parametrize("lat", [0.0, 45.0, 89.999, -89.999])
def test_chord_bound_along_meridians_and_parallels(lat):
    """Short meridian arcs at the equator are where the ellipsoid is flattest: the bound must still hold."""
    for dist in [1.0, 1e3, 1e5, 1e6, 1e7]:
        for az in [0.0, 90.0, 180.0, 45.0]:
            lon2, lat2, _ = GEOD.fwd(0.0, lat, az, dist)
            xyz = unit_vectors([0.0, lon2], [lat, lat2])
            assert np.linalg.norm(xyz[0] - xyz[1]) <= chord_radius(dist)


def test_geodesic_distance_known_values():
    a = 6378137.0
    # One degree of the equator, a quarter meridian (to the millimetre), duplicates and the poles.
    np.testing.assert_allclose(geodesic_distance(0.0, 0.0, 1.0, 0.0), a * np.pi / 180, atol=1e-6)
    np.testing.assert_allclose(geodesic_distance(0.0, 0.0, 0.0, 90.0), 10_001_965.729, atol=1e-3)
    np.testing.assert_array_equal(geodesic_distance([10.0, 0.0, 180.0], [20.0, 90.0, 0.0],
                                                    [10.0, 123.0, -180.0], [20.0, 90.0, 0.0]), 0.0)
    # Across the antimeridian: 0.0002 degrees of the equator, not 359.9998.
    np.testing.assert_allclose(geodesic_distance(179.9999, 0.0, -179.9999, 0.0), a * np.pi / 180 * 2e-4, rtol=1e-9)


def test_geodesic_distance_matches_pyproj_and_is_symmetric():
    rng = np.random.default_rng(0)
    lon1, lat1, lon2, lat2 = (rng.uniform(-180, 180, 1000), rng.uniform(-90, 90, 1000),
                              rng.uniform(-180, 180, 1000), rng.uniform(-90, 90, 1000))
    d = geodesic_distance(lon1, lat1, lon2, lat2)
    np.testing.assert_allclose(d, GEOD.inv(lon1, lat1, lon2, lat2)[2], atol=1e-3, rtol=0)
    np.testing.assert_allclose(d, geodesic_distance(lon2, lat2, lon1, lat1), atol=1e-6, rtol=0)


def test_distance_callback_matches_pair_distances():
    lon, lat = clustered_lonlat(1, 50, 1000.0, "pole")
    i, j = np.array([0, 3, 7]), np.array([5, 3, 49])
    np.testing.assert_array_equal(distance_callback(lon, lat)(i, j), pair_distances(lon, lat, i, j))


def test_empty_and_single_point():
    for lon in ([], [10.0]):
        i, j, d = radius_graph(lon, [0.0] * len(lon), 1000.0)
        assert i.size == j.size == d.size == 0


def test_antipodal_radius():
    lon, lat = np.array([0.0, 180.0, 90.0]), np.array([0.0, 0.0, 45.0])
    i, j, d = radius_graph(lon, lat, 3e7)
    assert i.tolist() == [0, 0, 1] and j.tolist() == [1, 2, 2]


@pytest.mark.parametrize(
    "lon, lat, radius",
    [([0.0, 1.0], [0.0, 91.0], 1.0), ([0.0, np.nan], [0.0, 0.0], 1.0), ([0.0], [0.0, 1.0], 1.0), ([0.0], [0.0], -1.0)],
)
def test_bad_input_raises(lon, lat, radius):
    with pytest.raises(ValueError):
        radius_graph(lon, lat, radius)
