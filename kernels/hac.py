"""Exact hierarchical agglomerative clustering (HAC) on a sparse distance graph.

The graph holds every pair of points with distance ``<= h_max``; pairs missing from it are known only to lie
further apart than ``h_max``. For single, complete and average linkage the flat clusters at any cut ``t <= h_max``
depend only on merges at heights ``<= t``, so they can be found component by component on the graph and equal
``scipy.cluster.hierarchy.fcluster(linkage(dense, method), t, criterion="distance")`` up to relabelling.

All components are clustered in one pass, in compiled code:

* single linkage: Kruskal on a minimum spanning forest found by Boruvka's algorithm (:mod:`mtg.kernels.forest`);
* complete and average linkage (:mod:`mtg.kernels.hac_heap`): a priority queue of cluster pairs keyed by a lower bound of their linkage
  distance, popped in order; a pair is merged when its key is its exact distance, so it is a global minimum.
  Each adjacent cluster pair keeps ``(known count, known max or sum)`` over the point pairs whose distances are
  known; merging adds the states (Lance-Williams on sums and counts). A complete-linkage pair with a missing point
  pair is further apart than ``h_max`` and never merges. An average-linkage pair with ``m`` of its
  ``N = |A| |B|`` point pairs missing has the lower bound ``(known sum + m h_max) / N``; when that bound is the
  smallest key the missing distances are fetched exactly (in batches, stopping as soon as the bound exceeds
  ``h_max``) through the ``exact_distance`` callback.

The forest-wide merges are then split into one scipy-format linkage matrix per component.

Ties. Partitions at a cut can depend on the order in which equal-height merges are made (scipy's order follows
its nearest-neighbour chain and the point order; it can differ between permutations of the same points).
Single linkage never depends on it. For complete and average linkage the partitions at every cut are order-free
unless, when a pair merges at a height ``h > 0``, another pair sharing one of its clusters lies at the same
height (a *conflicting tie*). Zero-height ties (duplicate points) are harmless: points at distance 0 form
equivalence classes that any order merges completely. For average linkage, heights carry rounding errors that
depend on the summation order (scipy accumulates Lance-Williams updates, this module sums known distances), so
"the same height" means within a relative ``RTOL``, and a cut within ``RTOL`` of a merge height is also reported.
:class:`SparseHAC` marks such cuts in ``ambiguous``; at cuts not marked, the partition equals scipy's.

No GPU (issue 16; CPU measurements and Amdahl's bound, ``benchmarks/hac_gpu_question.py``, benchmarks/RESULTS.md).
The merges are sequential (each pop or union depends on the previous ones), so a GPU could only take the radius
graph, whose pairs within a tile are data-parallel (CuPy). In a real ``mtg link`` of the link tests' inventories
that graph is 3.5-5 % of the call (reading, site assembly and writing dominate): at most 1.05x. For average
linkage of mine-like points it is 7-9 % (at most 1.09x; about 1.15x with the engine's exact-distance fetches,
which come one batch at a time from the sequential engine). Only single linkage of 10^5-10^6 synthetic points
spends most of its time there (56-74 %, bound 2.3-3.8x), and it already meets its targets on 2 CPU cores, with
its tiles spread over dask workers. Moving the edge list over PCIe is not the obstacle (24 B per edge, 2-20 ms at
an assumed 64 GB/s). A GPU graph would be a cell-list all-pairs kernel per tile with the geodesic of
:mod:`mtg.kernels.geodesic`, returning each tile's minimum spanning forest for single linkage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from mtg.kernels.forest import connected_components, cut_roots, first_appearance, single_linkage_rows
from mtg.kernels.hac_heap import RTOL, heap_linkage

ExactDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

METHODS = ("single", "complete", "average")
NOT_SPARSE_EXACT = ("ward", "centroid", "median")


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
    linkages : ComponentLinkages
        Sequence of :class:`ComponentLinkage`, one per component with at least two points, ordered by their
        smallest point index.
    tie_heights : numpy.ndarray
        Heights (``> 0``) of the conflicting ties met, ascending.
    n_exact_distances : int
        Number of distances fetched through ``exact_distance``.
    n_edges : int
        Number of graph edges (point pairs within ``h_max``).
    """

    cuts: np.ndarray
    labels: np.ndarray
    ambiguous: np.ndarray
    component: np.ndarray
    linkages: ComponentLinkages
    tie_heights: np.ndarray
    n_exact_distances: int
    n_edges: int


def check_method(method: str) -> str:
    """Validate a linkage method for sparse exact HAC and return it lower-cased.

    Raises
    ------
    ValueError
        For methods that are not exact on a sparse graph (ward, centroid, median), weighted (WPGMA: its cluster
        distances weight point pairs by the shape of both merge trees, so a missing pair cannot be bounded by the
        count-and-sum state used here) and unknown methods.
    """
    method = method.lower()
    if method in NOT_SPARSE_EXACT:
        raise ValueError(
            f"linkage method {method!r} is not exact on a sparse graph: its cluster distances (between centroids) "
            f"can fall below h_max with no point pair within h_max; use one of {METHODS}"
        )
    if method == "weighted":
        raise ValueError(f"linkage method 'weighted' (WPGMA) is not supported on sparse graphs; use one of {METHODS}")
    if method not in METHODS:
        raise ValueError(f"unknown linkage method {method!r}; use one of {METHODS}")
    return method


def _check_edges(n: int, i, j, d, h_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges as ``lo < hi`` with ``d <= h_max``, each pair once (duplicates must agree); order kept otherwise."""
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
    if not keep.all():
        i, j, d = i[keep], j[keep], d[keep]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keys = np.sort(lo * n + hi)  # a plain sort is ~10x faster than an argsort here
    if not (keys[1:] == keys[:-1]).any():
        return lo, hi, d
    order = np.argsort(lo * n + hi, kind="stable")
    lo, hi, d = lo[order], hi[order], d[order]
    first = np.ones(lo.size, dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    if not (d[~first] == d[np.flatnonzero(~first) - 1]).all():
        raise ValueError("the same point pair appears with different distances")
    return lo[first], hi[first], d[first]


@numba.njit(cache=True)
def _tree_arrays(n: int, rows: np.ndarray, component: np.ndarray):
    """Per merge row: a leaf of each side, the component, and the height as fcluster sees it (subtree maximum)."""
    m = rows.shape[0]
    leaf = np.empty(n + m, dtype=np.int64)
    top = np.empty(n + m)
    for x in range(n):
        leaf[x] = x
        top[x] = -np.inf
    leaf_a = np.empty(m, dtype=np.int64)
    leaf_b = np.empty(m, dtype=np.int64)
    comp = np.empty(m, dtype=np.int64)
    for k in range(m):
        a, b = int(rows[k, 0]), int(rows[k, 1])
        leaf_a[k], leaf_b[k] = leaf[a], leaf[b]
        leaf[n + k] = leaf[a]
        top[n + k] = max(rows[k, 2], max(top[a], top[b]))
        comp[k] = component[leaf[a]]
    return leaf_a, leaf_b, comp, top[n:]


@numba.njit(cache=True)
def _renumber(n: int, rows: np.ndarray, order: np.ndarray, row_comp: np.ndarray, local: np.ndarray,
              comp_size: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """The kept rows ``order`` (grouped by component, by height within) in each component's local numbering."""
    new_id = np.full(rows.shape[0], -1, dtype=np.int64)
    out = np.empty((order.size, 4))
    rank = 0
    for k in range(order.size):
        r = order[k]
        if k == 0 or row_comp[r] != row_comp[order[k - 1]]:
            rank = 0
        new_id[r] = comp_size[row_comp[r]] + rank
        rank += 1
        x, y = int(rows[r, 0]), int(rows[r, 1])
        x = local[x] if x < n else new_id[x - n]
        y = local[y] if y < n else new_id[y - n]
        out[k, 0], out[k, 1] = min(x, y), max(x, y)
        out[k, 2] = heights[r]
        out[k, 3] = rows[r, 3]
    return out


class ComponentLinkages(Sequence):
    """The per-component linkage matrices of a :class:`SparseHAC`, built on access from flat arrays.

    Holds every component with at least two points, ordered by their smallest point index; item ``k`` is a
    :class:`ComponentLinkage`. Keeping flat arrays instead of one object per component keeps memory and time
    proportional to ``n`` when there are hundreds of thousands of components.

    Attributes
    ----------
    members : numpy.ndarray
        int64 point indices of all components, concatenated (ascending within each component).
    member_starts : numpy.ndarray
        int64 offsets of each component's members in ``members`` (length ``len(self) + 1``).
    rows : numpy.ndarray
        float64 ``(m, 4)`` linkage rows of all components, concatenated, each in its component's numbering.
    row_starts : numpy.ndarray
        int64 offsets of each component's rows in ``rows``.
    """

    def __init__(self, members: np.ndarray, member_starts: np.ndarray, rows: np.ndarray, row_starts: np.ndarray):
        self.members, self.member_starts = members, member_starts
        self.rows, self.row_starts = rows, row_starts

    def __len__(self) -> int:
        return self.member_starts.size - 1

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[x] for x in range(*k.indices(len(self)))]
        k = range(len(self))[k]
        return ComponentLinkage(
            members=self.members[self.member_starts[k] : self.member_starts[k + 1]],
            linkage=self.rows[self.row_starts[k] : self.row_starts[k + 1]],
        )


def _linkages(n: int, rows: np.ndarray, component: np.ndarray, h_max: float):
    """Split forest-wide merge rows into per-component scipy linkages; also the joins that define the cuts."""
    leaf_a, leaf_b, row_comp, top = _tree_arrays(n, rows, component)
    kept = np.flatnonzero(top <= h_max)
    order = kept[np.lexsort((top[kept], row_comp[kept]))]  # by component, by height within (stable)
    sizes = np.bincount(component, minlength=int(component.max()) + 1 if n else 0)
    by_comp = np.argsort(component, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    local = np.empty(n, dtype=np.int64)
    local[by_comp] = np.arange(n) - starts[component[by_comp]]
    z = _renumber(n, rows, order, row_comp, local, sizes, top)
    multi = np.flatnonzero(sizes > 1)
    member_starts = np.concatenate([[0], np.cumsum(sizes[multi])])
    members = by_comp[np.isin(component[by_comp], multi)] if multi.size < sizes.size else by_comp
    row_counts = np.bincount(row_comp[order], minlength=sizes.size)[multi]
    row_starts = np.concatenate([[0], np.cumsum(row_counts)])
    linkages = ComponentLinkages(members, member_starts, z, row_starts)
    return linkages, leaf_a[kept], leaf_b[kept], top[kept]


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
        Linkage method, as in ``scipy.cluster.hierarchy.linkage``. "ward", "centroid", "median" and "weighted"
        raise ``ValueError`` (module docstring).
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
    method = check_method(method)
    if method == "average" and exact_distance is None:
        raise ValueError("average linkage needs exact_distance(i, j) to resolve distances missing from the graph")
    if not np.isfinite(h_max) or h_max < 0:
        raise ValueError(f"h_max must be finite and >= 0; got {h_max}")
    cuts = np.asarray(cuts, dtype=np.float64).reshape(-1)
    if not (np.isfinite(cuts).all() and (cuts >= 0).all() and (cuts <= h_max).all()):
        raise ValueError(f"cuts must lie in [0, h_max={h_max}]; got {cuts.tolist()}")
    lo, hi, w = _check_edges(n, i, j, d, h_max)
    component = connected_components(n, lo, hi)
    if method == "single":
        rows, ties, n_fetched = single_linkage_rows(n, lo, hi, w), np.zeros(0), 0
    else:
        rows, ties, n_fetched = heap_linkage(n, lo, hi, w, h_max, method == "average", exact_distance)
    linkages, side_a, side_b, merge_heights = _linkages(n, rows, component, h_max)

    labels = np.empty((cuts.size, n), dtype=np.int64)
    for k, cut in enumerate(cuts.tolist()):
        labels[k] = first_appearance(cut_roots(n, side_a, side_b, merge_heights, cut))

    rtol = RTOL if method == "average" else 0.0
    tie_heights = np.sort(np.asarray(ties, dtype=np.float64))
    ambiguous = np.array([bool((tie_heights <= cut * (1 + rtol)).any()) for cut in cuts.tolist()], dtype=bool)
    if method == "average":  # rounding of the heights: a cut within RTOL of a merge height
        heights = rows[:, 2][rows[:, 2] > 0]
        ambiguous |= np.array([bool((np.abs(heights - cut) <= rtol * cut).any()) for cut in cuts.tolist()])
    return SparseHAC(
        cuts=cuts,
        labels=labels,
        ambiguous=ambiguous,
        component=component,
        linkages=linkages,
        tie_heights=tie_heights,
        n_exact_distances=int(n_fetched),
        n_edges=int(lo.size),
    )
