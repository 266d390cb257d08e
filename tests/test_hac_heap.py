"""The compiled complete/average linkage engine against the pure-Python ``PairHeap`` (tests/pair_heap.py) and against scipy."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mtg.kernels.hac_heap import RTOL
from pair_heap import PairHeap
from mtg.kernels.hac_heap import _heapsort, _sort_bucket, heap_linkage
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist, squareform


def pair_heap(n, i, j, d, h_max, average, fetch):
    """``PairHeap`` (tests/pair_heap.py) on the whole graph as one component, edges sorted by (lo, hi) as ``sparse_hac`` gives them."""
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo))
    heap = PairHeap(n, lo[order], hi[order], np.asarray(d, float)[order], h_max, average, fetch)
    rows, ties = heap.run()
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4), np.asarray(ties, dtype=np.float64), heap.n_fetched


def radius_graph(x, h_max):
    """Every pair within h_max (Euclidean), with its distance."""
    pairs = cKDTree(x).query_pairs(h_max, output_type="ndarray").astype(np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.sqrt(((x[i] - x[j]) ** 2).sum(axis=1))
    keep = d <= h_max
    return i[keep], j[keep], d[keep]


def scrambled(rng, i, j, d):
    """The edges in random order, each with its endpoints in random order."""
    order = rng.permutation(i.size)
    i, j, d = i[order], j[order], d[order]
    swap = rng.random(i.size) < 0.5
    return np.where(swap, j, i), np.where(swap, i, j), d


def euclidean(x):
    def fetch(a, b):
        return np.sqrt(((x[a] - x[b]) ** 2).sum(axis=1))

    return fetch


def assert_same(ours, theirs):
    rows, ties, n_fetched = ours
    ref_rows, ref_ties, ref_fetched = theirs
    assert rows.shape == ref_rows.shape
    np.testing.assert_array_equal(rows, ref_rows)  # node ids, sizes and heights bitwise
    np.testing.assert_array_equal(ties, ref_ties)
    assert n_fetched == ref_fetched


def labels_at(rows, n, cut):
    """Flat clusters of the points after the merges at heights <= cut (merges in order, as rows give them)."""
    parent = np.arange(2 * n)
    for k, (a, b, h, _) in enumerate(rows):
        if h <= cut:
            parent[int(a)] = parent[int(b)] = n + k
    labels = np.empty(n, dtype=np.int64)
    for p in range(n):
        r = p
        while parent[r] != r:
            r = parent[r]
        labels[p] = r
    return labels


def same_partition(a, b):
    pairs = np.unique(np.stack([np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 160),
    st.integers(1, 12),
    st.integers(1, 4),
    st.floats(0.3, 1.3),
)
def test_equals_pair_heap_on_tie_heavy_planar_points(seed, n, side, n_groups, h_fraction):
    """Small integer coordinates (many ties, duplicates), several groups far apart (several components), h_max
    cutting average-linkage pairs so that distances are fetched: the same rows, ties and fetch count."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, side + 1, size=(n, 2)).astype(float) + 1000.0 * rng.integers(0, n_groups, size=(n, 1))
    h_max = h_fraction * side
    i, j, d = radius_graph(x, h_max)
    i2, j2, d2 = scrambled(rng, i, j, d)
    for average in (False, True):
        ours = heap_linkage(n, i2, j2, d2, h_max, average, euclidean(x))
        assert_same(ours, pair_heap(n, i, j, d, h_max, average, euclidean(x)))


def test_equals_pair_heap_on_a_larger_clustered_set():
    """Enough points and edges for the arrays to grow (heap, buckets, list pool, ties) and many bounds resolved."""
    rng = np.random.default_rng(11)
    n = 2500
    centres = rng.uniform(0, 50_000, size=(n // 50, 2))
    x = np.round((centres[rng.integers(0, len(centres), n)] + rng.normal(0, 3_000, size=(n, 2))) / 100) * 100
    h_max = 6_000.0
    i, j, d = radius_graph(x, h_max)
    i2, j2, d2 = scrambled(rng, i, j, d)
    for average in (False, True):
        ours = heap_linkage(n, i2, j2, d2, h_max, average, euclidean(x))
        theirs = pair_heap(n, i, j, d, h_max, average, euclidean(x))
        assert_same(ours, theirs)
        assert theirs[1].size > 0 and (theirs[2] > 0) == average


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 120), st.sampled_from(["complete", "average"]))
def test_heights_and_partitions_equal_scipy(seed, n, method):
    """Generic real coordinates: the merge heights up to h_max are scipy's, and so are the flat clusters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10, size=(n, 2)) + 60 * rng.integers(0, 3, size=(n, 1))
    h_max = float(rng.uniform(2, 25))
    i, j, d = radius_graph(x, h_max)
    rows, ties, n_fetched = heap_linkage(n, *scrambled(rng, i, j, d), h_max, method == "average", euclidean(x))
    assert (rows[:, 0] < rows[:, 1]).all() and (rows[:, 2] <= h_max * (1 + RTOL)).all()
    assert (rows[:, :2] < n + np.arange(len(rows))[:, None]).all()
    if method == "complete":
        assert n_fetched == 0
    if ties.size:
        return  # the partitions may then depend on scipy's merge order
    z = linkage(pdist(x), method)
    margin = h_max * (1 - 1e-6)
    ours = np.sort(rows[:, 2])
    theirs = z[:, 2]
    np.testing.assert_allclose(ours[ours < margin], theirs[theirs < margin], rtol=1e-9, atol=1e-12)
    for cut in (0.25 * h_max, 0.5 * h_max, 0.9 * h_max):
        if np.abs(theirs - cut).min() > 1e-6 * h_max:
            assert same_partition(labels_at(rows, n, cut), fcluster(z, cut, criterion="distance"))


def test_average_fetches_only_missing_pairs_beyond_h_max_and_never_twice():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))])
    dense = squareform(pdist(x))
    h_max = 3.0
    i, j, d = radius_graph(x, h_max)
    asked = []

    def fetch(a, b):
        assert a.dtype == np.int64 and b.dtype == np.int64 and (a < b).all()
        asked.append(np.stack([a, b]))
        return dense[a, b]

    ours = heap_linkage(80, i, j, d, h_max, True, fetch)
    asked = np.concatenate(asked, axis=1)
    assert ours[2] == asked.shape[1] > 0
    assert (dense[asked[0], asked[1]] > h_max).all()
    assert np.unique(asked[0] * 80 + asked[1]).size == asked.shape[1]
    assert_same(ours, pair_heap(80, i, j, d, h_max, True, lambda a, b: dense[a, b]))


def test_complete_never_fetches():
    def fetch(a, b):
        raise AssertionError("complete linkage fetched a distance")

    rows, ties, n_fetched = heap_linkage(4, [0, 1, 2], [1, 2, 3], [1.0, 1.0, 1.0], 1.5, False, fetch)
    assert n_fetched == 0 and ties.tolist() == [1.0]
    assert rows.tolist() == [[0.0, 1.0, 1.0, 2.0], [2.0, 3.0, 1.0, 2.0]]  # (0, 1) and (2, 3); the rest > h_max
    assert heap_linkage(4, [0, 1, 2], [1, 2, 3], [1.0, 1.0, 1.0], 1.5, False, None)[0].shape == (2, 4)


def test_conflicting_tie_is_reported():
    """a-b = b-c = 1, a-c = 2: which pair merges first depends on the order."""
    dense = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    for average in (False, True):
        rows, ties, _ = heap_linkage(3, [1, 0, 0], [2, 1, 2], [1.0, 1.0, 2.0], 2.0, average, lambda a, b: dense[a, b])
        assert ties.tolist() == [1.0]
        assert rows[0].tolist() == [0.0, 1.0, 1.0, 2.0]
        assert rows[1].tolist() == [2.0, 3.0, 1.5 if average else 2.0, 3.0]


def test_fetch_within_h_max_raises():
    with pytest.raises(ValueError, match="<= h_max for a pair missing"):
        heap_linkage(3, [0, 1], [1, 2], [1.0, 1.0], 2.0, True, lambda a, b: np.full(len(a), 1.5))
    with pytest.raises(ValueError, match="shape"):
        heap_linkage(3, [0, 1], [1, 2], [1.0, 1.0], 2.0, True, lambda a, b: np.full(len(a) + 1, 5.0))


def test_fetch_exception_propagates():
    def fetch(a, b):
        raise RuntimeError("no distances today")

    with pytest.raises(RuntimeError, match="no distances today"):
        heap_linkage(3, [0, 1], [1, 2], [1.0, 1.0], 2.0, True, fetch)
    # the engine is usable afterwards
    rows, _, n_fetched = heap_linkage(3, [0, 1], [1, 2], [1.0, 1.0], 2.0, True, lambda a, b: np.full(len(a), 2.5))
    assert n_fetched == 1 and rows[:, 2].tolist() == [1.0, 1.75]


def test_degenerate_inputs():
    empty = np.zeros(0, dtype=np.int64)
    for n in (0, 1, 5):
        rows, ties, n_fetched = heap_linkage(n, empty, empty, np.zeros(0), 1.0, True, lambda a, b: a + 9.0)
        assert rows.shape == (0, 4) and ties.size == 0 and n_fetched == 0
    # duplicates only, h_max = 0: every point merged at height 0, no ties
    i, j = np.triu_indices(6, 1)
    for average in (False, True):
        rows, ties, n_fetched = heap_linkage(6, i, j, np.zeros(i.size), 0.0, average, lambda a, b: a + 9.0)
        assert rows.shape == (5, 4) and (rows[:, 2] == 0).all() and rows[-1, 3] == 6 and ties.size == 0
        assert n_fetched == 0
    # int32 indices
    rows, _, _ = heap_linkage(2, np.array([0], np.int32), np.array([1], np.int32), [0.5], 1.0, False, None)
    assert rows.tolist() == [[0.0, 1.0, 0.5, 2.0]]


def test_bad_input_raises():
    fetch = lambda a, b: a + 9.0
    with pytest.raises(ValueError, match="more than once"):
        heap_linkage(3, [0, 1], [1, 0], [1.0, 1.0], 2.0, False, None)
    with pytest.raises(ValueError, match="self-loops"):
        heap_linkage(3, [0, 1], [1, 1], [1.0, 1.0], 2.0, False, None)
    with pytest.raises(ValueError, match="must lie in \\[0, 3\\)"):
        heap_linkage(3, [0], [3], [1.0], 2.0, False, None)
    with pytest.raises(ValueError, match="distances must lie"):
        heap_linkage(3, [0], [1], [2.5], 2.0, False, None)
    with pytest.raises(ValueError, match="needs fetch"):
        heap_linkage(3, [0], [1], [1.0], 2.0, True, None)
    with pytest.raises(ValueError, match="one length"):
        heap_linkage(3, [0, 1], [1], [1.0], 2.0, False, fetch)


def test_concurrent_calls_keep_their_callbacks():
    """Each call reaches its own callback, from several threads at once."""
    rng = np.random.default_rng(8)
    sets = [rng.normal(0, 1, size=(300, 2)) * s for s in (1.0, 1.5, 2.0, 2.5)]
    graphs = [radius_graph(x, 1.5) for x in sets]
    expected = [heap_linkage(300, *g, 1.5, True, euclidean(x)) for g, x in zip(graphs, sets)]
    results = [None] * len(sets)

    def work(k):
        results[k] = heap_linkage(300, *graphs[k], 1.5, True, euclidean(sets[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(sets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert_same(got, want)


def test_in_place_sorts():
    """The engine's own sorts (no numba sort, which is slow to compile): by (key, ab) on a range, int64 prefix."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        k = int(rng.integers(0, 120))
        val = rng.integers(0, 4, k).astype(float)
        ab = rng.permutation(10 * k + 1)[:k].astype(np.int64)
        lo = int(rng.integers(0, k + 1))
        hi = int(rng.integers(lo, k + 1))
        v2, ab2 = val.copy(), ab.copy()
        _sort_bucket(v2, ab2, lo, hi)
        order = np.lexsort((ab[lo:hi], val[lo:hi]))
        np.testing.assert_array_equal(v2[lo:hi], val[lo:hi][order])
        np.testing.assert_array_equal(ab2[lo:hi], ab[lo:hi][order])
        np.testing.assert_array_equal(ab2[hi:], ab[hi:])
        x = rng.integers(0, 30, k + 3)
        y = x.copy()
        _heapsort(y, k)
        np.testing.assert_array_equal(y[:k], np.sort(x[:k]))
        np.testing.assert_array_equal(y[k:], x[k:])
