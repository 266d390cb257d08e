"""Pure-Python complete/average linkage on a sparse graph: the readable reference of the compiled engine.

``PairHeap`` is the algorithm of :mod:`mtg.kernels.hac` (a priority queue of cluster pairs keyed by exact distances or
average-linkage lower bounds, missing distances fetched in batches, conflicting ties detected) written with heapq and
dicts. :mod:`mtg.kernels.hac_heap` compiles the same algorithm; ``tests/test_hac_heap.py`` checks that both give the
same merge rows, ties and fetches.
"""

from __future__ import annotations

import heapq

import numpy as np

from mtg.kernels.hac_heap import FETCH_BATCH, RTOL


class PairHeap:
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
            self.adj[a][b] = self.adj[b][a] = [1, h]  # one state shared by both directions
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
