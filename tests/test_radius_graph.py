"""The tiled geodesic radius graph against brute force, on clustered points, poles and the antimeridian."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from geodata import clustered_lonlat
from pyproj import Geod

from mtg.kernels.geodesic import geodesic_distance
from mtg.kernels.radius_graph import (
    chord_radius,
    distance_callback,
    pair_distances,
    radius_graph,
    spatial_tiles,
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
def test_tiled_graph_equals_brute_force(pts, radius_factor, tile_points):
    seed, n, spread, regime = pts
    lon, lat = clustered_lonlat(seed, n, spread, regime)
    radius = spread * radius_factor
    i, j, d = radius_graph(lon, lat, radius, max_tile_points=tile_points)
    order = np.lexsort((j, i))
    i, j, d = i[order], j[order], d[order]
    bi, bj, bd = brute_force(lon, lat, radius)
    assert i.dtype == j.dtype == np.int64 and d.dtype == np.float64
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(j, bj)
    np.testing.assert_array_equal(d, bd)
    assert (i < j).all() and (d <= radius).all()


@settings(max_examples=60, deadline=None)
@given(points)
def test_tiles_own_every_point_once_and_halos_reach_the_chord(pts):
    seed, n, spread, regime = pts
    lon, lat = clustered_lonlat(seed, n, spread, regime)
    xyz = unit_vectors(lon, lat)
    chord = chord_radius(spread)
    tiles = spatial_tiles(xyz, chord, max_points=max(1, n // 5))
    owner = np.concatenate([t.owned for t in tiles])
    assert np.array_equal(np.sort(owner), np.arange(n)) and all(t.owned.size <= max(1, n // 5) for t in tiles)
    for tile in tiles:
        halo = tile.points[tile.n_owned :]
        assert not np.isin(halo, tile.owned).any() and (np.diff(tile.owned) > 0).all()
        lo, hi = xyz[tile.owned].min(axis=0), xyz[tile.owned].max(axis=0)
        gap = np.linalg.norm(np.maximum(lo - xyz, 0) + np.maximum(xyz - hi, 0), axis=1)
        expected = np.setdiff1d(np.flatnonzero(gap <= chord), tile.owned)
        assert np.array_equal(halo, expected)


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
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 2)]


@pytest.mark.parametrize(
    "lon, lat, radius",
    [([0.0, 1.0], [0.0, 91.0], 1.0), ([0.0, np.nan], [0.0, 0.0], 1.0), ([0.0], [0.0, 1.0], 1.0), ([0.0], [0.0], -1.0)],
)
def test_bad_input_raises(lon, lat, radius):
    with pytest.raises(ValueError):
        radius_graph(lon, lat, radius)
