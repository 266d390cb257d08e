"""Tiled graph + sharded clustering equals sparse HAC on the whole graph, in process and on a LocalCluster."""

import numpy as np
import pytest
from geodata import clustered_lonlat
from hypothesis import given, settings
from hypothesis import strategies as st

from mtg.kernels.hac import sparse_hac
from mtg.kernels.radius_graph import distance_callback, radius_graph
from mtg.pipeline.sharded_linking import cluster_points

METHODS = ["single", "complete", "average"]


def whole_graph(lon, lat, h_max, method, cuts):
    i, j, d = radius_graph(lon, lat, h_max)
    return sparse_hac(lon.size, i, j, d, h_max, method, cuts, distance_callback(lon, lat))


def assert_same(ours, theirs):
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    np.testing.assert_array_equal(ours.component, theirs.component)
    np.testing.assert_array_equal(ours.ambiguous, theirs.ambiguous)
    assert ours.n_edges == theirs.n_edges and len(ours.linkages) == len(theirs.linkages)
    for a, b in zip(ours.linkages, theirs.linkages):  # equal-height merges may pair up differently
        np.testing.assert_array_equal(a.members, b.members)
        assert a.linkage.shape == b.linkage.shape
        np.testing.assert_allclose(a.linkage[:, 2], b.linkage[:, 2], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.sampled_from(["anywhere", "antimeridian", "pole"]),
       st.integers(1, 80), st.integers(1, 120))
def test_tiles_and_shards_change_nothing(seed, n, regime, tile_points, shard_points):
    lon, lat = clustered_lonlat(seed, n, 8_000.0, regime, per_cluster=20, centre_span=20.0)
    h_max, cuts = 6_000.0, [0.0, 1_500.0, 6_000.0]
    for method in METHODS:
        ours = cluster_points(lon, lat, h_max, method, cuts, tile_points=tile_points, shard_points=shard_points)
        assert_same(ours, whole_graph(lon, lat, h_max, method, cuts))


def test_bad_method_and_empty_input():
    with pytest.raises(ValueError, match="ward"):
        cluster_points([0.0], [0.0], 10.0, "ward", [5.0])
    empty = cluster_points([], [], 10.0, "average", [5.0])
    assert empty.labels.shape == (1, 0) and len(empty.linkages) == 0


@pytest.mark.slow
def test_local_cluster_equals_in_process():
    """Two worker processes build 8 tiles and cluster 5 shards; the client sees forests and shard results only."""
    distributed = pytest.importorskip("distributed")
    lon, lat = clustered_lonlat(7, 6_000, 8_000.0, "anywhere", per_cluster=40, centre_span=3.0)
    h_max, cuts = 6_000.0, [1_000.0, 3_000.0, 6_000.0]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        for method in METHODS:
            ours = cluster_points(lon, lat, h_max, method, cuts, client=client, tile_points=800, shard_points=1_500)
            assert_same(ours, whole_graph(lon, lat, h_max, method, cuts))
