"""Exact hierarchical agglomerative clustering (HAC) on a sparse distance graph.

The graph holds every pair of points with distance ``<= h_max``; pairs missing from it are known only to lie
further apart than ``h_max``. For single, complete and average linkage the flat clusters at any cut ``t <= h_max``
depend only on merges at heights ``<= t``, so they can be found component by component on the graph and equal
``scipy.cluster.hierarchy.fcluster(linkage(dense, method), t, criterion="distance")`` up to relabelling.

Per component:

* single linkage: Kruskal on the edges sorted by distance;
* complete and average linkage: a priority queue of cluster pairs keyed by a lower bound of their linkage
  distance, popped in order; a pair is merged when its key is its exact distance, so it is a global minimum.
  Each adjacent cluster pair keeps ``(known count, known max or sum)`` over the point pairs whose distances are
  known; merging adds the states (Lance-Williams on sums and counts). A complete-linkage pair with a missing point
  pair is further apart than ``h_max`` and never merges. An average-linkage pair with ``m`` of its
  ``N = |A| |B|`` point pairs missing has the lower bound ``(known sum + m h_max) / N``; when that bound is the
  smallest key the missing distances are fetched exactly (in batches, stopping as soon as the bound exceeds
  ``h_max``) through the ``exact_distance`` callback.

Ties. Partitions at a cut can depend on the order in which equal-height merges are made (scipy's order follows
its nearest-neighbour chain and the point order; it can differ between permutations of the same points).
Single linkage never depends on it. For complete and average linkage the partitions at every cut are order-free
unless, when a pair merges at a height ``h > 0``, another pair sharing one of its clusters lies at the same
height (a *conflicting tie*). Zero-height ties (duplicate points) are harmless: points at distance 0 form
equivalence classes that any order merges completely. For average linkage, heights carry rounding errors that
depend on the summation order (scipy accumulates Lance-Williams updates, this module sums known distances), so
"the same height" means within a relative ``RTOL``, and a cut within ``RTOL`` of a merge height is also reported.
:class:`SparseHAC` marks such cuts in ``ambiguous``; at cuts not marked, the partition equals scipy's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

ExactDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

METHODS = ("single", "complete", "average")
NOT_SPARSE_EXACT = ("ward", "centroid", "median")
# Relative tolerance under which two average-linkage heights (or a height and a cut) count as equal.
RTOL = 1e-9
# Point pairs examined per call of the exact-distance callback (whole rows of one cluster against the other).
FETCH_BATCH = 8192


@dataclass(frozen=True)
class ComponentLinkage:
    """The merges of one connected component, in scipy's linkage format.

    Attributes
    ----------
    members : numpy.ndarray
        Global point indices of the component, ascending; leaf ``k`` of ``linkage`` is point ``members[k]``.
    linkage : numpy.ndarray
        float64 ``(m, 4)`` rows ``[node a, node b, height, size]`` with ``a < b``, heights non-decreasing, new nodes
        numbered from ``len(members)``. Holds only merges at heights ``<= h_max``: ``m = len(members) - 1`` when
        the component ends as one cluster, fewer otherwise (a forest).
    """

    members: np.ndarray
    linkage: np.ndarray


@dataclass(frozen=True)
class SparseHAC:
    """Result of :func:`sparse_hac`.

    Attributes
    ----------
    cuts : numpy.ndarray
        The cut heights, float64, in the order given.
    labels : numpy.ndarray
        int64 ``(len(cuts), n)``: flat cluster of each point at each cut (distance criterion, heights ``<= cut``),
        numbered 0, 1, ... in order of first appearance.
    ambiguous : numpy.ndarray
        bool per cut: True where a conflicting tie at or below the cut, or (average linkage) a merge height within
        ``RTOL`` of the cut, lets the partition depend on merge order or rounding; scipy's partition may then
        differ (and differs between permutations of the points). False: the partition equals scipy's.
    component : numpy.ndarray
        int64 ``(n,)``: connected component of each point in the graph of edges ``<= h_max``.
    linkages : list of ComponentLinkage
        One per component with at least two points, ordered by their smallest point index.
    tie_heights : numpy.ndarray
        Heights (``> 0``) of the conflicting ties met, ascending.
    n_exact_distances : int
        Number of distances fetched through ``exact_distance``.
    """

    cuts: np.ndarray
    labels: np.ndarray
    ambiguous: np.ndarray
    component: np.ndarray
    linkages: list[ComponentLinkage]
    tie_heights: np.ndarray
    n_exact_distances: int


def check_method(method: str, exact_distance: ExactDistance | None) -> str:
    """Validate a linkage method for sparse exact HAC and return it lower-cased.

    Raises
    ------
    ValueError
        For methods that are not exact on a sparse graph (ward, centroid, median), unknown or not yet
        implemented methods, and average linkage without an ``exact_distance`` callback.
    """
    method = method.lower()
    if method in NOT_SPARSE_EXACT:
        raise ValueError(
            f"linkage method {method!r} is not exact on a sparse graph: its cluster distances (between centroids) "
            f"can fall below h_max with no point pair within h_max; use one of {METHODS}"
        )
    if method == "weighted":
        raise ValueError("linkage method 'weighted' (WPGMA) is not implemented for sparse graphs yet")
    if method not in METHODS:
        raise ValueError(f"unknown linkage method {method!r}; use one of {METHODS}")
    if method == "average" and exact_distance is None:
        raise ValueError("average linkage needs exact_distance(i, j) to resolve distances missing from the graph")
    return method


def _check_edges(n: int, i, j, d, h_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.asarray(i, dtype=np.int64).ravel()
    j = np.asarray(j, dtype=np.int64).ravel()
    d = np.asarray(d, dtype=np.float64).ravel()
    if not i.shape == j.shape == d.shape:
        raise ValueError(f"i, j and d must have one length; got {i.shape}, {j.shape}, {d.shape}")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"edge indices must lie in [0, {n})")
    if not (np.isfinite(d).all() and (d >= 0).all()):
        raise ValueError("edge distances must be finite and >= 0")
    keep = (d <= h_max) & (i != j)
    lo, hi, d = np.minimum(i, j)[keep], np.maximum(i, j)[keep], d[keep]
    order = np.lexsort((d, hi, lo))
    lo, hi, d = lo[order], hi[order], d[order]
    first = np.ones(lo.size, dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    dup_ok = d[~first] == d[np.flatnonzero(~first) - 1]
    if not dup_ok.all():
        raise ValueError("the same point pair appears with different distances")
    return lo[first], hi[first], d[first]


def _single(nc: int, p: np.ndarray, q: np.ndarray, w: np.ndarray) -> list[list[float]]:
    """Kruskal on edges ``(p, q, w)`` sorted by ``w``: the single-linkage merges in scipy's format."""
    parent = list(range(nc))
    node = list(range(nc))
    size = [1] * nc
    rows: list[list[float]] = []
    for a, b, h in zip(p.tolist(), q.tolist(), w.tolist()):
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a == b:
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        na, nb = node[a], node[b]
        rows.append([min(na, nb), max(na, nb), h, size[a]])
        node[a] = nc + len(rows) - 1
        if len(rows) == nc - 1:
            break
    return rows


class _PairHeap:
    """Complete or average linkage on one component: a priority queue of cluster pairs (see the module doc)."""

    def __init__(self, nc, p, q, w, h_max, average, fetch):
        self.nc, self.h_max, self.average, self.fetch = nc, h_max, average, fetch
        self.rtol = RTOL if average else 0.0
        self.ceiling = h_max * (1.0 + self.rtol)
        self.size = [1] * nc + [0] * (nc - 1)
        self.members: list[list[int] | None] = [[k] for k in range(nc)] + [None] * (nc - 1)
        self.adj: list[dict[int, list]] = [{} for _ in range(2 * nc - 1)]
        self.edge_keys = p * nc + q  # sorted, since (p, q) is sorted
        self.fetched: set[int] = set()
        self.n_fetched = 0
        heap = []
        for a, b, h in zip(p.tolist(), q.tolist(), w.tolist()):
            self.adj[a][b] = self.adj[b][a] = state = [1, h]  # one state shared by both directions
            heap.append((h, a, b))
        heapq.heapify(heap)
        self.heap = heap

    def key(self, a: int, b: int, state: list) -> float | None:
        """Exact distance of a fully known pair, else the average-linkage lower bound (None for complete)."""
        count, value = state
        total = self.size[a] * self.size[b]
        if count == total:
            return value / total if self.average else value
        if not self.average:
            return None
        return (value + (total - count) * self.h_max) / total

    def resolve(self, a: int, b: int, state: list, threshold: float) -> None:
        """Fetch missing distances of pair (a, b) until it is fully known or its lower bound exceeds threshold.

        Enumerates the point pairs a block of rows of ``a`` at a time, so an early stop also saves the enumeration.
        """
        xb = np.asarray(self.members[b], dtype=np.int64)
        members_a = self.members[a]
        rows_per_block = max(1, FETCH_BATCH // xb.size)
        for start in range(0, len(members_a), rows_per_block):
            xa = np.asarray(members_a[start : start + rows_per_block], dtype=np.int64)
            pa, pb = np.repeat(xa, xb.size), np.tile(xb, xa.size)
            lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
            keys = lo * self.nc + hi
            pos = np.searchsorted(self.edge_keys, keys).clip(max=self.edge_keys.size - 1)
            missing = np.flatnonzero(self.edge_keys[pos] != keys)
            if self.fetched:
                fetched = self.fetched
                missing = missing[[k not in fetched for k in keys[missing].tolist()]]
            if missing.size == 0:
                continue
            dist = np.asarray(self.fetch(lo[missing], hi[missing]), dtype=np.float64)
            if not (dist > self.h_max).all():
                raise ValueError(
                    "exact_distance returned a distance <= h_max for a pair missing from the graph: the graph must "
                    "hold every pair within h_max"
                )
            self.fetched.update(keys[missing].tolist())
            self.n_fetched += dist.size
            state[0] += dist.size
            state[1] += float(dist.sum())
            if self.key(a, b, state) > threshold:
                return

    def exact_key(self, a: int, b: int, state: list, threshold: float) -> float | None:
        """The key of pair (a, b), resolving an average-linkage bound that is ``<= threshold``."""
        key = self.key(a, b, state)
        if key is not None and key <= threshold and state[0] < self.size[a] * self.size[b]:
            self.resolve(a, b, state, threshold)
            key = self.key(a, b, state)
        return key

    def conflicting_tie(self, a: int, b: int, height: float) -> bool:
        """Whether another pair sharing cluster a or b lies at ``height`` (within the relative tolerance)."""
        if height == 0.0:
            return False
        threshold = height * (1.0 + self.rtol)
        for x, y in ((a, b), (b, a)):
            for z, state in self.adj[x].items():
                if z == y:
                    continue
                key = self.exact_key(x, z, state, threshold)
                if key is not None and key <= threshold and state[0] == self.size[x] * self.size[z]:
                    return True
        return False

    def merge(self, a: int, b: int, node: int) -> None:
        """Merge clusters a and b into cluster ``node``; push the new pairs."""
        self.size[node] = self.size[a] + self.size[b]
        big, small = (a, b) if len(self.members[a]) >= len(self.members[b]) else (b, a)
        self.members[node] = self.members[big]
        self.members[node].extend(self.members[small])
        self.members[a] = self.members[b] = None
        new: dict[int, list] = {}
        for x in (a, b):
            for z, state in self.adj[x].items():
                if z in (a, b):
                    continue
                del self.adj[z][x]
                cur = new.get(z)
                if cur is None:
                    new[z] = [state[0], state[1]]
                else:
                    cur[0] += state[0]
                    cur[1] = cur[1] + state[1] if self.average else max(cur[1], state[1])
            self.adj[x] = {}
        self.adj[node] = new
        for z, state in new.items():
            self.adj[z][node] = state
            key = self.key(node, z, state)
            if key is not None and key <= self.ceiling:
                heapq.heappush(self.heap, (key, z, node))

    def run(self) -> tuple[list[list[float]], list[float]]:
        """Merge until no pair lies within the ceiling; return the merge rows and the conflicting-tie heights."""
        rows: list[list[float]] = []
        ties: list[float] = []
        heap = self.heap
        while heap:
            key, a, b = heapq.heappop(heap)
            if self.members[a] is None or self.members[b] is None:
                continue  # a cluster merged away
            state = self.adj[a].get(b)
            if state is None or self.key(a, b, state) != key:
                continue  # stale entry
            if state[0] < self.size[a] * self.size[b]:
                self.resolve(a, b, state, self.ceiling)
                key = self.key(a, b, state)
                if key <= self.ceiling:
                    heapq.heappush(heap, (key, a, b))
                continue
            if self.conflicting_tie(a, b, key):
                ties.append(key)
            node = self.nc + len(rows)
            rows.append([min(a, b), max(a, b), key, self.size[a] + self.size[b]])
            self.merge(a, b, node)
        return rows, ties


def _finish(rows: list[list[float]], nc: int, h_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the merges up to ``h_max``, ordered by height, in scipy's format; and one leaf of each merged side.

    A merge's height is taken as the largest height in its subtree (as fcluster's distance criterion does); this
    only changes an average-linkage height that rounding put a few ulps below a child's.
    """
    z = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    top = np.full(nc + len(rows), -np.inf)
    for k, (a, b, h, _) in enumerate(rows):
        top[nc + k] = max(h, top[int(a)], top[int(b)])
    z[:, 2] = top[nc:]
    kept = np.flatnonzero(z[:, 2] <= h_max)
    kept = kept[np.argsort(z[kept, 2], kind="stable")]  # a child never follows its parent
    renumber = np.arange(nc + len(rows))
    renumber[nc + kept] = nc + np.arange(kept.size)
    z = z[kept]
    z[:, :2] = np.sort(renumber[z[:, :2].astype(np.int64)], axis=1)
    leaf = np.arange(nc + kept.size)
    for k, a in enumerate(z[:, 0].astype(np.int64).tolist()):
        leaf[nc + k] = leaf[a]
    return z, leaf[z[:, 0].astype(np.int64)], leaf[z[:, 1].astype(np.int64)]


def _first_appearance(raw: np.ndarray) -> np.ndarray:
    """Relabel consecutive labels 0..k-1 in order of first appearance."""
    _, first = np.unique(raw, return_index=True)
    remap = np.empty(first.size, dtype=np.int64)
    remap[np.argsort(first)] = np.arange(first.size)
    return remap[raw]


def sparse_hac(
    n: int,
    i,
    j,
    d,
    h_max: float,
    method: str,
    cuts: Sequence[float] | np.ndarray,
    exact_distance: ExactDistance | None = None,
) -> SparseHAC:
    """Exact single, complete or average linkage of ``n`` points from the graph of pairs within ``h_max``.

    Parameters
    ----------
    n : int
        Number of points.
    i, j : array_like of int
        Point indices of the graph's edges (either order; self-loops are ignored). Must hold every pair of points
        with distance ``<= h_max``; edges longer than ``h_max`` are ignored.
    d : array_like of float
        Edge distances, finite and ``>= 0``.
    h_max : float
        Largest cut of interest.
    method : {"single", "complete", "average"}
        Linkage method, as in ``scipy.cluster.hierarchy.linkage``. "ward", "centroid" and "median" raise
        ``ValueError``: they are not exact on a sparse graph. "weighted" (WPGMA) is not implemented.
    cuts : sequence of float
        Cut heights in ``[0, h_max]``; a point pair joins when merged at a height ``<= cut``.
    exact_distance : callable, optional
        ``exact_distance(i, j) -> distances`` for index arrays; required for average linkage, which calls it for
        pairs missing from the graph when their distances can decide a merge below ``h_max``. Each returned
        distance must be ``> h_max``.

    Returns
    -------
    SparseHAC
        Labels per cut, ambiguity flags, components and per-component linkage matrices.
    """
    method = check_method(method, exact_distance)
    if not np.isfinite(h_max) or h_max < 0:
        raise ValueError(f"h_max must be finite and >= 0; got {h_max}")
    cuts = np.asarray(cuts, dtype=np.float64).reshape(-1)
    if not (np.isfinite(cuts).all() and (cuts >= 0).all() and (cuts <= h_max).all()):
        raise ValueError(f"cuts must lie in [0, h_max={h_max}]; got {cuts.tolist()}")
    lo, hi, w = _check_edges(n, i, j, d, h_max)
    n_comp, comp = connected_components(coo_array((np.ones(lo.size), (lo, hi)), shape=(n, n)), directed=False)
    comp = _first_appearance(comp)
    sizes = np.bincount(comp, minlength=n_comp)
    order = np.argsort(comp, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    local = np.empty(n, dtype=np.int64)
    local[order] = np.arange(n) - starts[comp[order]]
    edge_comp = comp[lo]
    edge_order = np.argsort(edge_comp, kind="stable")  # keeps (lo, hi) sorted within each component
    edge_starts = np.concatenate([[0], np.cumsum(np.bincount(edge_comp, minlength=n_comp))])
    rtol = RTOL if method == "average" else 0.0

    linkages: list[ComponentLinkage] = []
    heights, ties, side_a, side_b, merge_heights = [], [], [], [], []
    n_fetched = 0
    for c in np.flatnonzero(sizes > 1).tolist():
        members = order[starts[c] : starts[c + 1]]
        e = edge_order[edge_starts[c] : edge_starts[c + 1]]
        p, q, we = local[lo[e]], local[hi[e]], w[e]
        if method == "single":
            by_height = np.argsort(we, kind="stable")
            rows = _single(members.size, p[by_height], q[by_height], we[by_height])
        else:

            def fetch(a: np.ndarray, b: np.ndarray, members: np.ndarray = members) -> np.ndarray:
                return exact_distance(members[a], members[b])

            heap = _PairHeap(members.size, p, q, we, h_max, method == "average", fetch)
            rows, component_ties = heap.run()
            ties.extend(component_ties)
            n_fetched += heap.n_fetched
        heights.extend(row[2] for row in rows)
        z, leaf_a, leaf_b = _finish(rows, members.size, h_max)
        linkages.append(ComponentLinkage(members=members, linkage=z))
        side_a.append(members[leaf_a])
        side_b.append(members[leaf_b])
        merge_heights.append(z[:, 2])

    side_a = np.concatenate(side_a) if side_a else np.zeros(0, np.int64)
    side_b = np.concatenate(side_b) if side_b else np.zeros(0, np.int64)
    merge_heights = np.concatenate(merge_heights) if merge_heights else np.zeros(0)
    labels = np.empty((cuts.size, n), dtype=np.int64)
    for k, cut in enumerate(cuts.tolist()):
        joined = merge_heights <= cut
        graph = coo_array((np.ones(joined.sum()), (side_a[joined], side_b[joined])), shape=(n, n))
        labels[k] = _first_appearance(connected_components(graph, directed=False)[1])

    tie_heights = np.sort(np.asarray(ties, dtype=np.float64))
    heights = np.asarray(heights, dtype=np.float64)
    ambiguous = np.array([bool((tie_heights <= cut * (1 + rtol)).any()) for cut in cuts.tolist()], dtype=bool)
    if method == "average":  # rounding of the heights: a cut within RTOL of a merge height
        heights = heights[heights > 0]
        ambiguous |= np.array([bool((np.abs(heights - cut) <= rtol * cut).any()) for cut in cuts.tolist()])
    return SparseHAC(
        cuts=cuts,
        labels=labels,
        ambiguous=ambiguous,
        component=comp,
        linkages=linkages,
        tie_heights=tie_heights,
        n_exact_distances=n_fetched,
    )
