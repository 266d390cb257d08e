"""Exact sparse HAC of lon/lat points, tiled and sharded: the same code in one process or on dask workers.

1. **Graph, by tile.** :func:`mtg.kernels.radius_graph.spatial_tiles` splits the points into tiles of at most
   ``tile_points`` owned points, each with its ``h_max`` halo; a task per tile measures the pairs within ``h_max``
   whose smaller index it owns (every pair is found once) and reduces them to the tile's minimum spanning forest.
2. **Components.** The client joins the tile forests. A forest edge set spans the same components as the graph,
   and the minimum spanning forest of the union of the tile forests is the graph's own (each edge lies in one tile;
   an edge left out of its tile's forest is the heaviest of a cycle), so **single linkage** is finished here, on at
   most ``n - 1`` edges per tile, with no edge shuffle.
3. **Shards.** For complete and average linkage every edge of a component must meet in one place: components of
   two or more points are packed into shards of about ``shard_points`` points, each tile's edges are split by
   shard on the worker that holds them, and a task per shard runs :func:`mtg.kernels.hac.sparse_hac` on its
   components (average linkage fetches missing distances from the shard's own coordinates).
4. **Assembly.** Labels per cut, components and per-component linkage matrices are put back in input order; the
   result equals :func:`mtg.kernels.hac.sparse_hac` on the whole graph (tested).

With ``client=None`` the tasks run one after another in this process; with a ``distributed.Client`` they are
submitted to its workers (a ``LocalCluster``, a Kubernetes or dask-cuda cluster) and only the tile forests and
the per-shard results travel to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mtg.kernels.forest import connected_components, first_appearance, minimum_spanning_forest
from mtg.kernels.hac import ComponentLinkages, SparseHAC, check_method, sparse_hac
from mtg.kernels.radius_graph import (
    TILE_POINTS,
    Tile,
    chord_radius,
    distance_callback,
    spatial_tiles,
    tile_edges,
    unit_vectors,
)

log = logging.getLogger(__name__)

# Default points per shard of complete/average linkage (whole components, so a shard may hold more).
SHARD_POINTS = 2_000_000

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]


class _InProcess:
    """Runs each task at once in this process: the default executor of :func:`cluster_points`."""

    def submit(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)

    def gather(self, values: Any) -> Any:
        return values


class _Dask:
    """Submits tasks to a ``distributed.Client`` (random keys: the inputs are not hashed)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def gather(self, values: Any) -> Any:
        return self.client.gather(values)


def _graph_task(tile: Tile, lon: np.ndarray, lat: np.ndarray, h_max: float) -> Edges:
    return tile_edges(tile, lon, lat, h_max)


def _forest_task(edges: Edges, n: int) -> tuple[Edges, int]:
    lo, hi, d = edges
    keep = minimum_spanning_forest(n, lo, hi, d) if lo.size else np.zeros(0, np.int64)
    return (lo[keep], hi[keep], d[keep]), int(lo.size)


def _split_task(edges: Edges, owned: np.ndarray, owned_shard: np.ndarray, shards: np.ndarray) -> list[Edges]:
    lo, hi, d = edges
    edge_shard = owned_shard[np.searchsorted(owned, lo)]  # the smaller end of a tile's pair is its own
    return [(lo[edge_shard == s], hi[edge_shard == s], d[edge_shard == s]) for s in shards.tolist()]


def _pick(parts: list[Edges], k: int) -> Edges:
    return parts[k]


def _shard_task(members: np.ndarray, lon: np.ndarray, lat: np.ndarray, h_max: float, method: str,
                cuts: np.ndarray, *pieces: Edges) -> SparseHAC:
    lo = np.concatenate([p[0] for p in pieces])
    hi = np.concatenate([p[1] for p in pieces])
    d = np.concatenate([p[2] for p in pieces])
    exact = distance_callback(lon, lat) if method == "average" else None
    return sparse_hac(members.size, np.searchsorted(members, lo), np.searchsorted(members, hi), d, h_max, method,
                      cuts, exact)


def _shards(component: np.ndarray, shard_points: int) -> np.ndarray:
    """Shard of each point: whole components of two or more points packed in order; -1 for singletons."""
    sizes = np.bincount(component)
    multi = np.flatnonzero(sizes > 1)
    comp_shard = np.full(sizes.size, -1, dtype=np.int64)
    starts = np.cumsum(sizes[multi]) - sizes[multi]
    comp_shard[multi] = np.unique(starts // max(shard_points, 1), return_inverse=True)[1]
    return comp_shard[component]


def _assemble(n: int, cuts: np.ndarray, component: np.ndarray, shard_members: list[np.ndarray],
              results: list[SparseHAC], n_edges: int) -> SparseHAC:
    """Put the shards' results back into one :class:`SparseHAC` over all points, in input order."""
    raw = np.empty((cuts.size, n), dtype=np.int64)
    single = np.ones(n, dtype=bool)
    offset = 0
    blocks_members, blocks_rows, member_sizes, row_sizes, firsts = [], [], [], [], []
    for members, result in zip(shard_members, results):
        raw[:, members] = result.labels + offset
        single[members] = False
        offset += members.size
        links = result.linkages
        blocks_members.append(members[links.members])
        blocks_rows.append(links.rows)
        member_sizes.append(np.diff(links.member_starts))
        row_sizes.append(np.diff(links.row_starts))
        firsts.append(members[links.members[links.member_starts[:-1]]])
    raw[:, single] = offset + np.arange(int(single.sum()))  # points alone in their component
    labels = np.stack([first_appearance(r) for r in raw]) if n else raw
    linkages = _merge_linkages(blocks_members, blocks_rows, member_sizes, row_sizes, firsts)
    tie_heights = np.sort(np.concatenate([r.tie_heights for r in results] + [np.zeros(0)]))
    ambiguous = np.zeros(cuts.size, dtype=bool)
    for result in results:
        ambiguous |= result.ambiguous
    return SparseHAC(cuts=cuts, labels=labels, ambiguous=ambiguous, component=component, linkages=linkages,
                     tie_heights=tie_heights, n_exact_distances=sum(r.n_exact_distances for r in results),
                     n_edges=n_edges)


def _block_index(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + size)`` of each block."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(sizes)
    return np.arange(total) - np.repeat(ends - sizes, sizes) + np.repeat(starts, sizes)


def _merge_linkages(blocks_members, blocks_rows, member_sizes, row_sizes, firsts) -> ComponentLinkages:
    """Concatenate the shards' component linkages, ordered by each component's smallest point index."""
    if not blocks_members:
        return ComponentLinkages(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, 4)),
                                 np.zeros(1, np.int64))
    members, rows = np.concatenate(blocks_members), np.concatenate(blocks_rows)
    m_sizes, r_sizes = np.concatenate(member_sizes), np.concatenate(row_sizes)
    order = np.argsort(np.concatenate(firsts), kind="stable")
    m_starts = np.concatenate([[0], np.cumsum(m_sizes)])[:-1]
    r_starts = np.concatenate([[0], np.cumsum(r_sizes)])[:-1]
    members = members[_block_index(m_starts[order], m_sizes[order])]
    rows = rows[_block_index(r_starts[order], r_sizes[order])]
    return ComponentLinkages(members, np.concatenate([[0], np.cumsum(m_sizes[order])]), rows,
                             np.concatenate([[0], np.cumsum(r_sizes[order])]))


def cluster_points(
    lon,
    lat,
    h_max: float,
    method: str,
    cuts: Sequence[float] | np.ndarray,
    client: Any = None,
    tile_points: int = TILE_POINTS,
    shard_points: int = SHARD_POINTS,
) -> SparseHAC:
    """Exact single, complete or average linkage of lon/lat points at several cuts, tiled and sharded.

    Parameters
    ----------
    lon, lat : array_like
        Degrees, WGS-84, shape ``(n,)``.
    h_max : float
        Largest cut in metres: only pairs within ``h_max`` are measured.
    method : {"single", "complete", "average"}
        Linkage method (see :func:`mtg.kernels.hac.check_method`).
    cuts : sequence of float
        Cut heights in metres, in ``[0, h_max]``.
    client : distributed.Client, optional
        Run the tile and shard tasks on this client's workers; default: in this process.
    tile_points : int
        Points owned per graph tile.
    shard_points : int
        Points per shard of complete/average linkage.

    Returns
    -------
    SparseHAC
        Equal to :func:`mtg.kernels.hac.sparse_hac` on the whole radius graph.
    """
    method = check_method(method)
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    cuts = np.asarray(cuts, dtype=np.float64).reshape(-1)
    n = lon.size
    run = _InProcess() if client is None else _Dask(client)
    tiles = spatial_tiles(unit_vectors(lon, lat), chord_radius(h_max), tile_points)
    graphs = [run.submit(_graph_task, t, lon[t.points], lat[t.points], h_max) for t in tiles]
    forests = run.gather([run.submit(_forest_task, g, n) for g in graphs])
    n_edges = sum(count for _, count in forests)
    f_lo, f_hi, f_d = (np.concatenate([f[k] for f, _ in forests] + [np.zeros(0, dt)])
                       for k, dt in ((0, np.int64), (1, np.int64), (2, np.float64)))
    log.info("radius graph: %d tiles, %d pairs within %g m", len(tiles), n_edges, h_max)
    if method == "single":
        graphs = None  # the forests carry everything single linkage needs
        result = sparse_hac(n, f_lo, f_hi, f_d, h_max, method, cuts)
        return SparseHAC(**{**result.__dict__, "n_edges": n_edges})
    component = connected_components(n, f_lo, f_hi)
    shard_of = _shards(component, shard_points)
    n_shards = int(shard_of.max()) + 1 if n else 0
    pieces: list[list[Any]] = [[] for _ in range(n_shards)]
    for tile, graph in zip(tiles, graphs):
        owned_shard = shard_of[tile.owned]
        touched = np.unique(owned_shard)
        touched = touched[touched >= 0]
        if touched.size == 0:
            continue
        parts = run.submit(_split_task, graph, tile.owned, owned_shard, touched)
        for k, s in enumerate(touched.tolist()):
            pieces[s].append(run.submit(_pick, parts, k))
    graphs = None
    by_shard = np.argsort(shard_of, kind="stable")
    starts = np.searchsorted(shard_of[by_shard], np.arange(n_shards + 1))
    shard_members = [by_shard[starts[s] : starts[s + 1]] for s in range(n_shards)]
    log.info("%s linkage: %d components in %d shards", method, int(component.max()) + 1 if n else 0, n_shards)
    results = run.gather([run.submit(_shard_task, m, lon[m], lat[m], h_max, method, cuts, *pieces[s])
                          for s, m in enumerate(shard_members)])
    return _assemble(n, cuts, component, shard_members, results, n_edges)
