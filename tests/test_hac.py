"""Sparse exact HAC against scipy's dense linkage + fcluster, on geodesic graphs and on tie-heavy integer data."""

import csv

import numpy as np
import pytest
from conftest import shared_file
from geodata import clustered_lonlat
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, is_valid_linkage, linkage
from scipy.spatial.distance import pdist, squareform

from mtg.kernels.geodesic import condensed_distances
from mtg.kernels.hac import sparse_hac
from mtg.kernels.radius_graph import distance_callback, pair_distances, radius_graph

METHODS = ["single", "complete", "average"]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings of the same points are one partition up to relabelling."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    pairs = np.unique(np.stack([np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def dense_condensed(lon, lat) -> np.ndarray:
    i, j = np.triu_indices(len(lon), 1)  # the order of scipy's condensed matrices
    return pair_distances(lon, lat, i, j)


def check_against_scipy(result, condensed, method, cuts, h_max):
    """Every cut not marked ambiguous equals scipy's partition; merge heights and linkages agree."""
    z = linkage(condensed, method)
    for k, cut in enumerate(cuts):
        if not result.ambiguous[k]:
            assert same_partition(result.labels[k], fcluster(z, cut, criterion="distance")), (method, cut)
        assert result.labels[k].min() == 0 and np.unique(result.labels[k]).size == result.labels[k].max() + 1
    ours = np.sort(np.concatenate([c.linkage[:, 2] for c in result.linkages] + [np.zeros(0)]))
    if not result.ambiguous.any():  # the same merge heights up to h_max (scipy's by its own rounding)
        theirs = z[:, 2][z[:, 2] <= h_max * (1 + 1e-9)]
        np.testing.assert_allclose(ours, theirs[: ours.size], rtol=1e-9, atol=0)
        assert abs(theirs.size - ours.size) <= (method == "average")
    for comp in result.linkages:
        check_component_linkage(comp, result, h_max)


def check_component_linkage(comp, result, h_max):
    z, m = comp.linkage, comp.members.size
    assert (np.diff(comp.members) > 0).all()
    assert (result.component[comp.members] == result.component[comp.members[0]]).all()
    assert z.shape[1] == 4 and z.shape[0] <= m - 1
    assert (z[:, 0] < z[:, 1]).all() and (np.diff(z[:, 2]) >= 0).all() and (z[:, 2] <= h_max).all()
    assert (z[:, :2] < m + np.arange(z.shape[0])[:, None]).all()  # children exist before their parent
    if z.shape[0] == m - 1:
        assert is_valid_linkage(z)
        for k, cut in enumerate(result.cuts):
            assert same_partition(fcluster(z, cut, criterion="distance"), result.labels[k][comp.members])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 150),
    st.sampled_from(["anywhere", "antimeridian", "pole"]),
    st.sampled_from([2_000.0, 20_000.0, 200_000.0]),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
)
def test_partitions_equal_scipy_on_geodesic_graphs(seed, n, regime, spread, cut_fractions):
    lon, lat = clustered_lonlat(seed, n, spread, regime, per_cluster=15, centre_span=30.0)
    h_max = spread * 0.7
    cuts = [0.0, h_max] + [f * h_max for f in cut_fractions]
    i, j, d = radius_graph(lon, lat, h_max)
    condensed = dense_condensed(lon, lat)
    for method in METHODS:
        result = sparse_hac(n, i, j, d, h_max, method, cuts, distance_callback(lon, lat))
        check_against_scipy(result, condensed, method, cuts, h_max)
        if method == "single":
            assert not result.ambiguous.any()


@pytest.mark.parametrize("regime", ["anywhere", "antimeridian", "pole"])
@pytest.mark.parametrize("method", METHODS)
def test_a_few_hundred_points(regime, method):
    lon, lat = clustered_lonlat(7, 300, 30_000.0, regime, per_cluster=15, centre_span=30.0)
    h_max = 20_000.0
    cuts = [0.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0]
    i, j, d = radius_graph(lon, lat, h_max)
    result = sparse_hac(lon.size, i, j, d, h_max, method, cuts, distance_callback(lon, lat))
    assert not result.ambiguous.any()  # generic real-valued distances: duplicates tie only at height 0
    check_against_scipy(result, dense_condensed(lon, lat), method, cuts, h_max)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 30), st.integers(1, 6), st.integers(1, 6))
def test_ties_on_integer_distances(seed, n, side, h_max):
    """Manhattan distances on a small grid: many ties and duplicates. Where no cut is marked ambiguous, the
    partition equals scipy's for every order of the points."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, side + 1, size=(n, 2)).astype(float)
    dense = squareform(pdist(x, "cityblock"))
    i, j = np.triu_indices(n, 1)
    keep = dense[i, j] <= h_max
    cuts = np.arange(h_max + 1.0)
    for method in METHODS:
        result = sparse_hac(n, i[keep], j[keep], dense[i, j][keep], h_max, method, cuts, lambda a, b: dense[a, b])
        assert method != "single" or not result.ambiguous.any()
        for _ in range(3):
            perm = rng.permutation(n)
            z = linkage(squareform(dense[np.ix_(perm, perm)]), method)
            for k, cut in enumerate(cuts):
                if not result.ambiguous[k]:
                    theirs = np.empty(n, dtype=np.int64)
                    theirs[perm] = fcluster(z, cut, criterion="distance")
                    assert same_partition(result.labels[k], theirs), (method, cut)


@pytest.mark.parametrize("method", ["complete", "average"])
def test_conflicting_tie_is_flagged_and_scipy_depends_on_point_order(method):
    """a-b = b-c = 1, a-c = 2: scipy merges whichever pair its nearest-neighbour chain meets first."""
    dense = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    forward = fcluster(linkage(squareform(dense), method), 1.0, criterion="distance")
    backward = fcluster(linkage(squareform(dense[::-1, ::-1]), method), 1.0, criterion="distance")[::-1]
    assert not same_partition(forward, backward)
    result = sparse_hac(3, [0, 1, 0], [1, 2, 2], [1.0, 1.0, 2.0], 2.0, method, [0.5, 1.0, 2.0],
                        lambda a, b: dense[a, b])
    assert result.ambiguous.tolist() == [False, True, True]
    assert result.tie_heights.tolist() == [1.0]
    assert result.labels[0].tolist() == [0, 1, 2] and result.labels[2].tolist() == [0, 0, 0]


def test_duplicates_tie_only_at_zero():
    x = np.array([[0.0], [0.0], [0.0], [3.0], [3.0], [10.0]])
    dense = squareform(pdist(x))
    i, j = np.triu_indices(6, 1)
    for method in METHODS:
        result = sparse_hac(6, i, j, dense[i, j], 10.0, method, [0.0, 3.5, 10.0], lambda a, b: dense[a, b])
        assert not result.ambiguous.any()
        assert result.labels.tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]


def test_average_fetches_only_missing_pairs_beyond_h_max():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(6, 1, (30, 2))])
    dense = squareform(pdist(x))
    i, j = np.triu_indices(60, 1)
    h_max = 4.0
    keep = dense[i, j] <= h_max
    asked = []

    def exact(a, b):
        asked.append(np.stack([a, b]))
        return dense[a, b]

    result = sparse_hac(60, i[keep], j[keep], dense[i, j][keep], h_max, "average", [1.0, 2.0, 4.0], exact)
    asked = np.concatenate(asked, axis=1) if asked else np.zeros((2, 0), dtype=np.int64)
    assert result.n_exact_distances == asked.shape[1]
    assert (dense[asked[0], asked[1]] > h_max).all()
    assert np.unique(np.minimum(*asked) * 60 + np.maximum(*asked)).size == asked.shape[1]  # never twice
    check_against_scipy(result, dense[i, j], "average", [1.0, 2.0, 4.0], h_max)


def test_singletons_and_empty_graph():
    result = sparse_hac(4, [], [], [], 5.0, "complete", [0.0, 5.0])
    assert result.labels.tolist() == [[0, 1, 2, 3]] * 2
    assert len(result.linkages) == 0 and result.component.tolist() == [0, 1, 2, 3]
    result = sparse_hac(4, [2], [1], [3.0], 5.0, "average", [2.0, 3.0], lambda a, b: np.full(len(a), 9.0))
    assert result.labels.tolist() == [[0, 1, 2, 3], [0, 1, 1, 2]]
    assert result.linkages[0].members.tolist() == [1, 2]
    assert result.linkages[0].linkage.tolist() == [[0.0, 1.0, 3.0, 2.0]]


@pytest.mark.parametrize("method", ["ward", "centroid", "median", "Ward"])
def test_methods_not_exact_on_a_sparse_graph_raise(method):
    with pytest.raises(ValueError, match=f"'{method.lower()}' is not exact on a sparse graph"):
        sparse_hac(2, [0], [1], [1.0], 2.0, method, [1.0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="needs exact_distance"):
        sparse_hac(2, [0], [1], [1.0], 2.0, "average", [1.0])
    with pytest.raises(ValueError, match="cuts must lie"):
        sparse_hac(2, [0], [1], [1.0], 2.0, "single", [3.0])
    with pytest.raises(ValueError, match="different distances"):
        sparse_hac(2, [0, 1], [1, 0], [1.0, 1.5], 2.0, "single", [1.0])
    with pytest.raises(ValueError, match="'weighted' .* not supported"):
        sparse_hac(2, [0], [1], [1.0], 2.0, "weighted", [1.0])
    with pytest.raises(ValueError, match="unknown linkage"):
        sparse_hac(2, [0], [1], [1.0], 2.0, "nearest", [1.0])
    with pytest.raises(ValueError, match="<= h_max for a pair missing"):  # a graph that lacks a pair within h_max
        sparse_hac(3, [0, 1], [1, 2], [1.0, 1.0], 2.0, "average", [2.0], lambda a, b: np.full(len(a), 1.5))


def icmm_points(n: int) -> tuple[np.ndarray, np.ndarray]:
    path = shared_file("icmm_global_mining_dataset", "icmm_global_mining_dataset_external.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [(r["Longitude"], r["Latitude"]) for r in csv.DictReader(f)]
    # Some coordinates are written with U+2212 MINUS SIGN.
    lonlat = np.array([[float(v.strip().replace("\u2212", "-")) for v in row]
                       for row in rows if all(v.strip() for v in row)])
    lonlat = lonlat[np.isfinite(lonlat).all(axis=1) & (np.abs(lonlat[:, 1]) <= 90)]
    pick = np.sort(np.random.default_rng(0).choice(len(lonlat), size=min(n, len(lonlat)), replace=False))
    return lonlat[pick, 0], lonlat[pick, 1]


@pytest.fixture(scope="module")
def icmm_dense():
    """Every ICMM mine point and their dense geodesic matrix (36 million pairs, ~30 s to build)."""
    lon, lat = icmm_points(10**6)
    return lon, lat, condensed_distances(lon, lat)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_all_icmm_mines_equal_scipy(method, icmm_dense):
    lon, lat, condensed = icmm_dense
    h_max, cuts = 20_000.0, [1_000.0, 5_000.0, 10_000.0, 20_000.0]
    i, j, d = radius_graph(lon, lat, h_max)
    result = sparse_hac(lon.size, i, j, d, h_max, method, cuts, distance_callback(lon, lat))
    assert lon.size == 8508 and not result.ambiguous.any()
    check_against_scipy(result, condensed, method, cuts, h_max)
