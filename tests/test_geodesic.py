"""The normal-section geodesic against Karney's algorithm (pyproj), its symmetry, zeros and the long-pair switch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from mtg.kernels.geodesic import ARC_LIMIT_M, condensed_distances, frame_distances, geodesic_distance, point_frames

GEOD = Geod(ellps="WGS84")


def random_pairs(seed: int, n: int, s_max: float):
    rng = np.random.default_rng(seed)
    lon1 = rng.uniform(-180, 180, n)
    lat1 = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lat1[: n // 20] = 90.0  # on the poles, near them and on the antimeridian
    lat1[n // 20 : n // 10] = -89.9999
    lon1[n // 10 : n // 5] = 180.0
    lon2, lat2, _ = GEOD.fwd(lon1, lat1, rng.uniform(0, 360, n), rng.uniform(0, s_max, n))
    return lon1, lat1, np.asarray(lon2), np.asarray(lat2)


@pytest.mark.parametrize("s_max, tolerance", [(2e4, 2e-8), (1e5, 5e-6), (ARC_LIMIT_M, 2e-4), (2e7, 2e-3)])
def test_agrees_with_karney(s_max, tolerance):
    """Below 1e-8 m up to 20 km (the radius graphs' range); Karney's own values beyond ARC_LIMIT_M."""
    lon1, lat1, lon2, lat2 = random_pairs(0, 100_000, s_max)
    ours = geodesic_distance(lon1, lat1, lon2, lat2)
    theirs = GEOD.inv(lon1, lat1, lon2, lat2)[2]
    assert np.abs(ours - theirs).max() < tolerance


def test_known_values():
    a = 6378137.0
    # One degree of the equator, a quarter meridian (to the millimetre), duplicates and the poles.
    np.testing.assert_allclose(geodesic_distance(0.0, 0.0, 1.0, 0.0), a * np.pi / 180, atol=1e-6)
    np.testing.assert_allclose(geodesic_distance(0.0, 0.0, 0.0, 90.0), 10_001_965.729, atol=1e-3)
    np.testing.assert_allclose(geodesic_distance([10.0, 0.0, 180.0], [20.0, 90.0, 0.0],
                                                 [10.0, 123.0, -180.0], [20.0, 90.0, 0.0]), 0.0, atol=0)
    assert geodesic_distance(12.5, -33.0, 12.5, -33.0) == 0.0
    # Across the antimeridian: 0.0002 degrees of the equator, not 359.9998.
    np.testing.assert_allclose(geodesic_distance(179.9999, 0.0, -179.9999, 0.0), a * np.pi / 180 * 2e-4, rtol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1e3, 5e4, 1e6]))
def test_symmetric_to_the_bit_and_pair_order_free(seed, s_max):
    lon1, lat1, lon2, lat2 = random_pairs(seed, 200, s_max)
    lon, lat = np.concatenate([lon1, lon2]), np.concatenate([lat1, lat2])
    frames = point_frames(lon, lat)
    k = np.arange(200)
    forward = frame_distances(frames, lon, lat, k, k + 200)
    assert np.array_equal(forward, frame_distances(frames, lon, lat, k + 200, k))
    assert np.array_equal(forward, geodesic_distance(lon1, lat1, lon2, lat2))


def test_broadcasting_and_bad_input():
    d = geodesic_distance(0.0, 0.0, np.array([[0.0, 1.0], [2.0, 3.0]]), 0.0)
    assert d.shape == (2, 2) and d[0, 0] == 0.0
    with pytest.raises(ValueError, match="latitudes"):
        geodesic_distance(0.0, 91.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        point_frames([np.nan], [0.0])


def test_condensed_matrix_equals_pair_distances_near_and_far():
    rng = np.random.default_rng(3)
    lon = np.concatenate([rng.uniform(10, 10.5, 30), rng.uniform(-180, 180, 20)])
    lat = np.concatenate([rng.uniform(-20, -19.5, 30), rng.uniform(-90, 90, 20)])
    i, j = np.triu_indices(lon.size, 1)
    expected = frame_distances(point_frames(lon, lat), lon, lat, i, j)
    assert np.array_equal(condensed_distances(lon, lat), expected)
    assert condensed_distances([1.0], [2.0]).size == 0
