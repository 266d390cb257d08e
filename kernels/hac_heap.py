"""Complete and average linkage on a sparse distance graph, compiled with numba.

The same algorithm and the same output as :class:`mtg.kernels.hac._PairHeap` (see :mod:`mtg.kernels.hac` for the
method: a priority queue of adjacent cluster pairs keyed by their exact linkage distance or, for average linkage,
a lower bound; missing distances fetched in batches only when a bound can decide a merge; conflicting ties),
run on a whole graph of any number of connected components in one call, without Python objects per cluster.

Data structures (all flat arrays inside one compiled function):

* the graph as a CSR of every point's neighbours in ascending order, built by two counting passes (no sort);
  edge ``k`` of the ``(lo, hi)``-sorted edge list is the initial *state slot* of that pair;
* per state slot: ``count`` (int64, known point pairs) and ``value`` (float64, sum or max of the known
  distances). A live cluster pair owns one slot for its whole life; merging ``a`` and ``b`` into ``node`` hands
  the slot of ``(a, z)`` (else of ``(b, z)``) to ``(node, z)``, adding the other one's state into it;
* per cluster an adjacency list ``(neighbour, slot)`` in a shared, growable pool. Lists keep the insertion
  order of :class:`~mtg.kernels.hac._PairHeap`'s dicts (a new pair ``(node, z)`` is appended to ``z``'s list);
  entries whose neighbour has merged away are dead and dropped lazily (the pool is compacted when it fills up);
* a binary heap of ``(key, a, b, slot)`` ordered by ``(key, a, b)``, exactly as heapq orders the tuples;
* members of a cluster as a linked list (``head``, ``tail``, ``next``), concatenated as ``members[big] +
  members[small]`` like the Python lists;
* the pairs already fetched in an open-addressing hash set of ``lo * n + hi``.

The callback is Python: the compiled code calls it through ``numba.objmode`` (a few microseconds per call, and
each call carries up to ``FETCH_BATCH`` point pairs), looked up by a token in a module-level registry so that
concurrent calls from several threads do not clash. The batch's sum is taken there by numpy, as in ``_PairHeap``,
so the heights are bitwise those of ``_PairHeap`` for the same input.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import numba
import numpy as np

from mtg.kernels.hac import FETCH_BATCH, RTOL

ExactDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Callbacks of the calls in progress, by token; and what went wrong in them (an exception, or a message).
_REGISTRY: dict[int, tuple[ExactDistance, float]] = {}
_ERRORS: dict[int, BaseException] = {}
_TOKENS = itertools.count(1)
_LOCK = threading.Lock()

# Status codes of the compiled engine.
_OK, _FETCH_FAILED, _DUPLICATE = 0, 1, 2

_INT32_MAX = 2**31 - 1


def _fetch_sum(token: int, lo: np.ndarray, hi: np.ndarray) -> tuple[float, int]:
    """Call the registered callback on one batch; return ``(float(dist.sum()), 0)`` or ``(0.0, 1)`` on failure."""
    try:
        fetch, h_max = _REGISTRY[token]
        dist = np.asarray(fetch(lo.copy(), hi.copy()), dtype=np.float64)
        if dist.shape != lo.shape:
            raise ValueError(
                f"exact_distance returned an array of shape {dist.shape} for {lo.size} point pairs; expected "
                f"{lo.shape}"
            )
        if not (dist > h_max).all():
            raise ValueError(
                "exact_distance returned a distance <= h_max for a pair missing from the graph: the graph must "
                "hold every pair within h_max"
            )
        return float(dist.sum()), 0
    except BaseException as exc:  # re-raised by heap_linkage, outside the compiled code
        _ERRORS[token] = exc
        return 0.0, 1


# --------------------------------------------------------------------------------------------------------------
# Small helpers


@numba.njit(cache=True, inline="always")
def _key(size_a, size_b, count, value, h_max, average):
    """Exact distance of a fully known pair, else the average-linkage lower bound (inf, i.e. None, for complete)."""
    total = size_a * size_b
    if count == total:
        if average:
            return value / total
        return value
    if not average:
        return np.inf
    return (value + (total - count) * h_max) / total


# The heap: entries of three int64 words (key as float64 bits, a << 32 | b, slot), 4-ary, ordered by (key, a, b)
# as heapq orders the tuples; ``Hf`` is the float64 view of ``H``.


@numba.njit(cache=True)
def _sift_down(H, Hf, pos, size, key, ab, slot):
    """Place the entry (key, ab, slot) at hole ``pos`` or below it (children 4 pos + 1 .. 4 pos + 4)."""
    while True:
        c = 4 * pos + 1
        if c >= size:
            break
        best = c
        bk = Hf[3 * c]
        bab = H[3 * c + 1]
        for q in range(c + 1, min(c + 4, size)):
            qk = Hf[3 * q]
            if qk < bk or (qk == bk and H[3 * q + 1] < bab):
                best = q
                bk = qk
                bab = H[3 * q + 1]
        if bk > key or (bk == key and bab >= ab):
            break
        H[3 * pos] = H[3 * best]
        H[3 * pos + 1] = bab
        H[3 * pos + 2] = H[3 * best + 2]
        pos = best
    Hf[3 * pos] = key
    H[3 * pos + 1] = ab
    H[3 * pos + 2] = slot


@numba.njit(cache=True)
def _heap_push(H, Hf, size, key, ab, slot):
    """Push an entry; returns the (possibly reallocated) ``H, Hf``."""
    if 3 * size == H.size:
        grown = np.empty(max(48, 2 * H.size), np.int64)
        grown[: H.size] = H
        H = grown
        Hf = H.view(np.float64)
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 2
        pk = Hf[3 * parent]
        if pk < key or (pk == key and H[3 * parent + 1] <= ab):
            break
        H[3 * pos] = H[3 * parent]
        H[3 * pos + 1] = H[3 * parent + 1]
        H[3 * pos + 2] = H[3 * parent + 2]
        pos = parent
    Hf[3 * pos] = key
    H[3 * pos + 1] = ab
    H[3 * pos + 2] = slot
    return H, Hf


@numba.njit(cache=True, inline="always")
def _hash_slot(key, mask):
    return ((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)) & mask


@numba.njit(cache=True)
def _hash_contains(table, key):
    mask = np.uint64(table.size - 1)
    pos = _hash_slot(key, mask)
    while True:
        cur = table[pos]
        if cur == key:
            return True
        if cur < 0:
            return False
        pos = (pos + np.uint64(1)) & mask


@numba.njit(cache=True)
def _hash_insert(table, key):
    """Insert into a table with room (load < 1/2); returns whether the key was new."""
    mask = np.uint64(table.size - 1)
    pos = _hash_slot(key, mask)
    while True:
        cur = table[pos]
        if cur == key:
            return False
        if cur < 0:
            table[pos] = key
            return True
        pos = (pos + np.uint64(1)) & mask


@numba.njit(cache=True)
def _hash_reserve(table, used, extra):
    """The table itself, or a larger copy, with room for ``extra`` more keys at a load under 1/2."""
    if 2 * (used + extra) <= table.size:
        return table
    cap = table.size
    while 2 * (used + extra) > cap:
        cap *= 2
    new = np.full(cap, -1, np.int64)
    for t in range(table.size):
        if table[t] >= 0:
            _hash_insert(new, table[t])
    return new


@numba.njit(cache=True)
def _pool_reserve(P, top, need, lstart, llen, parent, n_clusters):
    """Room for ``need`` entries at the pool's top: returns ``(P, top)``, copying the lists of the live clusters
    into a new pool when the old one is full."""
    if top + need <= P.size:
        return P, top
    live = 0
    for c in range(n_clusters):
        if parent[c] == c:
            live += llen[c]
    new = np.empty(max(P.size, 2 * (live + need)), np.int64)
    top = 0
    for c in range(n_clusters):
        if parent[c] == c:
            s = lstart[c]
            new[top : top + llen[c]] = P[s : s + llen[c]]
            lstart[c] = top
            top += llen[c]
    return new, top


@numba.njit(cache=True, inline="always")
def _find(parent, z):
    """The live cluster that cluster ``z`` is now part of (path compression)."""
    r = z
    while parent[r] != r:
        r = parent[r]
    while parent[z] != r:
        nz = parent[z]
        parent[z] = r
        z = nz
    return r


@numba.njit(cache=True, inline="always")
def _find_slot(fwd, s):
    """The state slot that slot ``s`` was merged into, or -1 where that pair was dropped (path compression)."""
    r = s
    while True:
        f = fwd[r]
        if f == r:
            break
        if f < 0:
            r = -1
            break
        r = f
    while s >= 0 and s != r:
        f = fwd[s]
        fwd[s] = r
        s = f
    return r


@numba.njit(cache=True)
def _walk(x, y, P, lstart, llen, parent, fwd, mark, stamp, out_z, out_s, tmp, ordered):
    """The live neighbours of cluster ``x`` but ``y``, with their state slots, into ``out_z``/``out_s``; returns
    their number. ``ordered``: in the insertion order of ``_PairHeap``'s dict ``adj[x]``.

    ``x``'s list holds the pairs as they were when ``x`` was created; a neighbour that merged since resolves to its
    live cluster and its slot to the merged slot. Python deletes such a pair and appends the new one, and new
    clusters have increasing ids, so the dict order is: the unchanged entries in list order, then the changed
    ones (deduplicated) by ascending id.
    """
    k = 0
    c = 0
    for t in range(lstart[x], lstart[x] + llen[x]):
        e = P[t]
        z = e >> 32
        s = e & 0xFFFFFFFF
        if parent[z] == z:
            if z != y:
                out_z[k] = z
                out_s[k] = s
                k += 1
            continue
        r = _find(parent, z)
        if r == y or mark[r] == stamp:
            continue
        mark[r] = stamp
        s = _find_slot(fwd, s)
        if s >= 0:
            tmp[c] = (r << 32) | s
            c += 1
    if ordered and c > 1:
        if c <= 16:
            for u in range(1, c):
                v = tmp[u]
                w = u
                while w > 0 and tmp[w - 1] > v:
                    tmp[w] = tmp[w - 1]
                    w -= 1
                tmp[w] = v
        else:
            tmp[:c].sort()
    for u in range(c):
        out_z[k] = tmp[u] >> 32
        out_s[k] = tmp[u] & 0xFFFFFFFF
        k += 1
    return k


@numba.njit(cache=True)
def _heap_purge(H, Hf, size, parent):
    """Drop the entries of clusters that merged away and heapify the rest; returns the new size."""
    k = 0
    for t in range(size):
        ab = H[3 * t + 1]
        a = ab >> 32
        b = ab & 0xFFFFFFFF
        if parent[a] == a and parent[b] == b:
            H[3 * k] = H[3 * t]
            H[3 * k + 1] = ab
            H[3 * k + 2] = H[3 * t + 2]
            k += 1
    for pos in range((k - 2) // 4, -1, -1):
        _sift_down(H, Hf, pos, k, Hf[3 * pos], H[3 * pos + 1], H[3 * pos + 2])
    return k


@numba.njit(cache=True)
def _sort_edges(w, h_max):
    """Edge indices ordered by (w, index): a bucket sort on w (buckets monotone in w), buckets sorted stably."""
    m = w.size
    n_buckets = max(1, m // 4)
    scale = n_buckets / h_max if h_max > 0 else 0.0
    start = np.zeros(n_buckets + 1, np.int64)
    bucket = np.empty(m, np.int32)
    for k in range(m):
        q = min(np.int64(w[k] * scale), n_buckets - 1)
        bucket[k] = q
        start[q + 1] += 1
    for q in range(n_buckets):
        start[q + 1] += start[q]
    fill = start[:n_buckets].copy()
    order = np.empty(m, np.int32)
    for k in range(m):
        q = bucket[k]
        order[fill[q]] = k
        fill[q] += 1
    bucket = np.empty(0, np.int32)
    for q in range(n_buckets):
        lo, hi = start[q], start[q + 1]
        if hi - lo <= 1:
            continue
        if hi - lo <= 32:  # insertion sort, stable
            for u in range(lo + 1, hi):
                e = order[u]
                v = w[e]
                t = u
                while t > lo and w[order[t - 1]] > v:
                    order[t] = order[t - 1]
                    t -= 1
                order[t] = e
        else:
            part = order[lo:hi].copy()
            by = np.argsort(w[part], kind="mergesort")
            for u in range(hi - lo):
                order[lo + u] = part[by[u]]
    return order


# --------------------------------------------------------------------------------------------------------------
# The graph


@numba.njit(cache=True)
def _build_graph(n, i, j, d):
    """Edges sorted by (lo, hi) with two counting passes, and every point's neighbours in ascending order.

    Returns ``(status, lo, hi, w, fptr, fnb, fsl)``: ``w`` the distances in sorted order (edge k is state slot k),
    ``fptr``/``fnb``/``fsl`` the CSR of neighbours and the slot of each edge. Status ``_DUPLICATE`` when a pair
    appears twice.
    """
    m = i.size
    cnt = np.zeros(n + 1, np.int64)
    for e in range(m):
        cnt[max(i[e], j[e]) + 1] += 1
    for x in range(n):
        cnt[x + 1] += cnt[x]
    by_hi = np.empty(m, np.int64)
    for e in range(m):
        h = max(i[e], j[e])
        by_hi[cnt[h]] = e
        cnt[h] += 1
    cnt[:] = 0
    for e in range(m):
        cnt[min(i[e], j[e]) + 1] += 1
    for x in range(n):
        cnt[x + 1] += cnt[x]
    lo = np.empty(m, np.int32)
    hi = np.empty(m, np.int32)
    w = np.empty(m, np.float64)
    for t in range(m):  # stable by lo over an order sorted by hi: sorted by (lo, hi)
        e = by_hi[t]
        a = min(i[e], j[e])
        k = cnt[a]
        cnt[a] += 1
        lo[k] = a
        hi[k] = max(i[e], j[e])
        w[k] = d[e]
    by_hi = np.empty(0, np.int64)
    fptr = np.zeros(n + 1, np.int64)
    for k in range(m):
        if k > 0 and lo[k] == lo[k - 1] and hi[k] == hi[k - 1]:
            return _DUPLICATE, lo, hi, w, fptr, np.empty(0, np.int32), np.empty(0, np.int32)
        fptr[lo[k] + 1] += 1
        fptr[hi[k] + 1] += 1
    for x in range(n):
        fptr[x + 1] += fptr[x]
    fill = fptr[:n].copy()
    fnb = np.empty(2 * m, np.int32)
    fsl = np.empty(2 * m, np.int32)
    for k in range(m):  # row x gets its neighbours < x (ascending) before those > x (ascending)
        a, b = lo[k], hi[k]
        fnb[fill[a]] = b
        fsl[fill[a]] = k
        fill[a] += 1
        fnb[fill[b]] = a
        fsl[fill[b]] = k
        fill[b] += 1
    return _OK, lo, hi, w, fptr, fnb, fsl


# --------------------------------------------------------------------------------------------------------------
# Resolving average-linkage bounds


@numba.njit(cache=True)
def _resolve(
    a, b, s, threshold, n, h_max, token, fetch_batch,
    size, head, nxt, cnt, val, fptr, fnb, mark, stamp, table, used, bufb, blo, bhi, n_fetched,
):  # fmt: skip
    """Fetch missing distances of pair (a, b) (state slot s) until it is fully known or its lower bound exceeds
    ``threshold``: blocks of rows of ``a`` against all of ``b``, as ``_PairHeap.resolve``.

    ``stamp``, ``used`` and ``n_fetched`` are 1-element counters. Returns ``(status, table)``.
    """
    nb = size[b]
    p = head[b]
    for t in range(nb):
        bufb[t] = p
        p = nxt[p]
    rows_per_block = max(1, fetch_batch // nb)
    pa = head[a]
    remaining = size[a]
    while remaining > 0:
        rows = min(rows_per_block, remaining)
        remaining -= rows
        k = 0
        for _ in range(rows):
            stamp[0] += 1
            st = stamp[0]
            for e in range(fptr[pa], fptr[pa + 1]):
                mark[fnb[e]] = st
            for t in range(nb):
                pb = bufb[t]
                if mark[pb] == st:
                    continue  # an edge of the graph
                lo = min(pa, pb)
                hi = max(pa, pb)
                if used[0] > 0 and _hash_contains(table, lo * n + hi):
                    continue  # fetched earlier
                blo[k] = lo
                bhi[k] = hi
                k += 1
            pa = nxt[pa]
        if k == 0:
            continue
        la = blo[:k]
        lb = bhi[:k]
        with numba.objmode(total="float64", err="int64"):
            total, err = _fetch_sum(token, la, lb)
        if err != 0:
            return _FETCH_FAILED, table
        table = _hash_reserve(table, used[0], k)
        for t in range(k):
            _hash_insert(table, blo[t] * n + bhi[t])
        used[0] += k
        n_fetched[0] += k
        cnt[s] += k
        val[s] += total
        if _key(size[a], size[b], cnt[s], val[s], h_max, True) > threshold:
            return _OK, table
    return _OK, table


# --------------------------------------------------------------------------------------------------------------
# The engine


@numba.njit(cache=True)
def _conflict(
    x, nz, zs, ss, threshold, n, h_max, average, token, fetch_batch,
    size, head, nxt, cnt, val, fptr, fnb, mark_pt, stamp_pt, table, used, bufb, blo, bhi, n_fetched,
):  # fmt: skip
    """Whether a pair (x, zs[t]) (slot ss[t]) lies within ``threshold``, resolving bounds in order as
    ``_PairHeap.conflicting_tie``. Returns ``(status, tie, table)``."""
    for t in range(nz):
        z = zs[t]
        sz = ss[t]
        total = size[x] * size[z]
        kz = _key(size[x], size[z], cnt[sz], val[sz], h_max, average)
        if kz <= threshold and cnt[sz] < total:
            status, table = _resolve(
                x, z, sz, threshold, n, h_max, token, fetch_batch,
                size, head, nxt, cnt, val, fptr, fnb, mark_pt, stamp_pt, table, used, bufb, blo, bhi, n_fetched,
            )  # fmt: skip
            if status != _OK:
                return status, False, table
            kz = _key(size[x], size[z], cnt[sz], val[sz], h_max, average)
        if kz <= threshold and cnt[sz] == total:
            return _OK, True, table
    return _OK, False, table


@numba.njit(cache=True)
def _engine(n, i, j, d, h_max, average, token, fetch_batch):
    """Returns ``(status, rows, n_rows, ties, n_ties, n_fetched)``."""
    rtol = 1e-9 if average else 0.0
    ceiling = h_max * (1.0 + rtol)
    status, lo, hi, val, fptr, fnb, fsl = _build_graph(n, i, j, d)
    m = lo.size
    rows = np.empty((max(n - 1, 0), 4), np.float64)
    ties = np.empty(16, np.float64)
    n_ties = 0
    n_fetched = np.zeros(1, np.int64)
    if status != _OK:
        return status, rows, 0, ties, 0, 0

    # Per state slot: known count, value (val, from the graph), forward pointer (merged into, -1: dropped).
    cnt = np.ones(m, np.int64)
    fwd = np.arange(m).astype(np.int32)

    # Per cluster: parent (itself while live), size, members, adjacency list in the pool.
    n_nodes = max(2 * n - 1, 1)
    parent = np.arange(n_nodes).astype(np.int32)
    size = np.zeros(n_nodes, np.int64)
    size[:n] = 1
    head = np.empty(n_nodes, np.int32)
    tail = np.empty(n_nodes, np.int32)
    nxt = np.full(max(n, 1), -1, np.int32)
    for x in range(n):
        head[x] = x
        tail[x] = x
    lstart = np.zeros(n_nodes, np.int64)
    llen = np.zeros(n_nodes, np.int64)
    P = np.empty(2 * m + max(m, 1024), np.int64)
    for t in range(2 * m):
        P[t] = (np.int64(fnb[t]) << 32) | fsl[t]
    for x in range(n):
        lstart[x] = fptr[x]
        llen[x] = fptr[x + 1] - fptr[x]
    top = 2 * m
    fsl = np.empty(0, np.int32)
    if not average:  # the graph's CSR is needed only to resolve average-linkage bounds
        fnb = np.empty(0, np.int32)
        fptr = np.zeros(1, np.int64)

    # The edges sorted by (d, lo, hi): a stream of the heap entries (d, lo << 32 | hi, slot) merged with a heap of
    # the entries pushed later.
    order = _sort_edges(val, h_max)
    skey = np.empty(m, np.float64)
    sab = np.empty(m, np.int64)
    for t in range(m):
        k = order[t]
        skey[t] = val[k]
        sab[t] = (np.int64(lo[k]) << 32) | hi[k]
    lo = np.empty(0, np.int32)
    hi = np.empty(0, np.int32)
    sp = 0
    H = np.empty(3 * 1024, np.int64)
    Hf = H.view(np.float64)
    hn = 0
    purge_at = 1 << 16

    # Work space.
    mark = np.full(n_nodes, -1, np.int64)  # by cluster: the walk that last met it
    in_a = np.full(n_nodes, -1, np.int64)  # by cluster: the merge whose first side holds it
    where = np.empty(n_nodes, np.int64)
    stamp = 0
    nbuf = max(n, 1)
    a_z = np.empty(nbuf, np.int64)
    a_s = np.empty(nbuf, np.int64)
    b_z = np.empty(nbuf, np.int64)
    b_s = np.empty(nbuf, np.int64)
    tmp = np.empty(nbuf, np.int64)
    matched = np.zeros(nbuf, np.bool_)
    stamp_pt = np.zeros(1, np.int64)
    if average:
        mark_pt = np.full(nbuf, -1, np.int64)  # by point: the row of _resolve that marked it
        table = np.full(1024, -1, np.int64)
        bufb = np.empty(nbuf, np.int32)
        blo = np.empty(max(fetch_batch, n), np.int64)
        bhi = np.empty(max(fetch_batch, n), np.int64)
    else:
        mark_pt = np.empty(0, np.int64)
        table = np.full(2, -1, np.int64)
        bufb = np.empty(0, np.int32)
        blo = np.empty(0, np.int64)
        bhi = np.empty(0, np.int64)
    used = np.zeros(1, np.int64)
    n_rows = 0

    while True:
        if sp < m and (hn == 0 or skey[sp] < Hf[0] or (skey[sp] == Hf[0] and sab[sp] < H[1])):
            key = skey[sp]
            ab = sab[sp]
            s = order[sp]
            sp += 1
        elif hn > 0:
            key = Hf[0]
            ab = H[1]
            s = H[2]
            hn -= 1
            if hn > 0:
                _sift_down(H, Hf, 0, hn, Hf[3 * hn], H[3 * hn + 1], H[3 * hn + 2])
        else:
            break
        a = ab >> 32
        b = ab & 0xFFFFFFFF
        if parent[a] != a or parent[b] != b:
            continue  # a cluster merged away
        if _key(size[a], size[b], cnt[s], val[s], h_max, average) != key:
            continue  # stale entry
        if cnt[s] < size[a] * size[b]:  # average only: resolve the bound, push it back if still within reach
            status, table = _resolve(
                a, b, s, ceiling, n, h_max, token, fetch_batch,
                size, head, nxt, cnt, val, fptr, fnb, mark_pt, stamp_pt, table, used, bufb, blo, bhi, n_fetched,
            )  # fmt: skip
            if status != _OK:
                return status, rows, n_rows, ties, n_ties, n_fetched[0]
            key = _key(size[a], size[b], cnt[s], val[s], h_max, average)
            if key <= ceiling:
                H, Hf = _heap_push(H, Hf, hn, key, ab, s)
                hn += 1
            continue

        stamp += 1
        na = _walk(a, b, P, lstart, llen, parent, fwd, mark, stamp, a_z, a_s, tmp, average)
        stamp += 1
        nb = _walk(b, a, P, lstart, llen, parent, fwd, mark, stamp, b_z, b_s, tmp, average)

        # Conflicting tie: another pair sharing a or b at the same height (within rtol).
        if key != 0.0:
            threshold = key * (1.0 + rtol)
            status, tie, table = _conflict(
                a, na, a_z, a_s, threshold, n, h_max, average, token, fetch_batch,
                size, head, nxt, cnt, val, fptr, fnb, mark_pt, stamp_pt, table, used, bufb, blo, bhi, n_fetched,
            )  # fmt: skip
            if status == _OK and not tie:
                status, tie, table = _conflict(
                    b, nb, b_z, b_s, threshold, n, h_max, average, token, fetch_batch,
                    size, head, nxt, cnt, val, fptr, fnb, mark_pt, stamp_pt, table, used, bufb, blo, bhi, n_fetched,
                )  # fmt: skip
            if status != _OK:
                return status, rows, n_rows, ties, n_ties, n_fetched[0]
            if tie:
                if n_ties == ties.size:
                    grown = np.empty(2 * ties.size, np.float64)
                    grown[:n_ties] = ties[:n_ties]
                    ties = grown
                ties[n_ties] = key
                n_ties += 1

        # Merge a and b into node.
        node = n + n_rows
        rows[n_rows, 0] = a
        rows[n_rows, 1] = b
        rows[n_rows, 2] = key
        rows[n_rows, 3] = size[a] + size[b]
        n_rows += 1
        size[node] = size[a] + size[b]
        if size[a] >= size[b]:
            big, small = a, b
        else:
            big, small = b, a
        head[node] = head[big]
        nxt[tail[big]] = head[small]
        tail[node] = tail[small]
        parent[a] = node
        parent[b] = node
        for t in range(na):
            in_a[a_z[t]] = node
            where[a_z[t]] = t
            matched[t] = False
        P, top = _pool_reserve(P, top, na + nb, lstart, llen, parent, node)
        lstart[node] = top
        k = 0
        if average:  # the pairs of a (their slots), then those of b alone
            for t in range(na):
                P[top + k] = (a_z[t] << 32) | a_s[t]
                k += 1
            for t in range(nb):
                z = b_z[t]
                sz = b_s[t]
                if in_a[z] == node:
                    s2 = a_s[where[z]]
                    cnt[s2] += cnt[sz]
                    val[s2] = val[s2] + val[sz]
                    fwd[sz] = s2
                else:
                    P[top + k] = (z << 32) | sz
                    k += 1
        else:  # complete: a pair missing a point pair never merges; keep only the neighbours of both
            for t in range(nb):
                z = b_z[t]
                sz = b_s[t]
                if in_a[z] == node:
                    u = where[z]
                    s2 = a_s[u]
                    matched[u] = True
                    cnt[s2] += cnt[sz]
                    if val[sz] > val[s2]:  # max(cur, state) as Python: the first unless the second is larger
                        val[s2] = val[sz]
                    fwd[sz] = s2
                else:
                    fwd[sz] = -1
            for t in range(na):
                if matched[t]:
                    P[top + k] = (a_z[t] << 32) | a_s[t]
                    k += 1
                else:
                    fwd[a_s[t]] = -1
        llen[node] = k
        top += k
        for t in range(k):
            e = P[lstart[node] + t]
            z = e >> 32
            sz = e & 0xFFFFFFFF
            kz = _key(size[node], size[z], cnt[sz], val[sz], h_max, average)
            if kz <= ceiling:
                H, Hf = _heap_push(H, Hf, hn, kz, (z << 32) | node, sz)
                hn += 1
        if hn > purge_at:  # most entries are usually of clusters merged away since: drop them
            hn = _heap_purge(H, Hf, hn, parent)
            purge_at = max(1 << 16, 2 * hn)
    return _OK, rows, n_rows, ties, n_ties, n_fetched[0]


def heap_linkage(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    d: np.ndarray,
    h_max: float,
    average: bool,
    fetch: ExactDistance | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Complete (``average=False``) or average linkage merges of all points of a sparse graph, in merge order.

    Parameters
    ----------
    n : int
        Number of points.
    i, j : numpy.ndarray
        Integer edge endpoints (either order, no self-loops), each point pair at most once, in any order. The
        graph must hold every pair of points within ``h_max``. Any number of connected components.
    d : numpy.ndarray
        float64 edge distances in ``[0, h_max]``.
    h_max : float
        Graph radius: pairs missing from the graph lie further apart than ``h_max``.
    average : bool
        Average linkage (True) or complete linkage (False).
    fetch : callable or None
        ``fetch(a, b) -> distances`` for int64 arrays of global point indices (``a < b``), the exact distances
        (each ``> h_max``) of pairs missing from the graph; required for average linkage, unused for complete.

    Returns
    -------
    rows : numpy.ndarray
        float64 ``(m, 4)`` rows ``[node a, node b, height, size]`` in the order the merges happen: points are nodes
        ``0..n-1``, merge ``k`` creates node ``n + k``, ``node a < node b``. Only merges at keys within the ceiling
        ``h_max (1 + rtol)`` (``rtol = RTOL`` for average, 0 for complete); heights are non-decreasing up to
        rounding (an average-linkage height can be a few ulps below an earlier one).
    ties : numpy.ndarray
        float64 heights of the conflicting ties met, in the order met.
    n_fetched : int
        Number of distances fetched through ``fetch`` (never the same pair twice).

    Raises
    ------
    ValueError
        On malformed input (shapes, indices, self-loops, repeated pairs, distances outside ``[0, h_max]``), on
        average linkage without ``fetch``, and when ``fetch`` returns a distance ``<= h_max``. An exception raised
        by ``fetch`` itself propagates.
    """
    n = int(n)
    h_max = float(h_max)
    average = bool(average)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if not np.isfinite(h_max) or h_max < 0:
        raise ValueError(f"h_max must be finite and >= 0; got {h_max}")
    if average and fetch is None:
        raise ValueError("average linkage needs fetch(a, b) to resolve distances missing from the graph")
    i = np.ascontiguousarray(i, dtype=np.int64).ravel()
    j = np.ascontiguousarray(j, dtype=np.int64).ravel()
    d = np.ascontiguousarray(d, dtype=np.float64).ravel()
    if not i.shape == j.shape == d.shape:
        raise ValueError(f"i, j and d must have one length; got {i.shape}, {j.shape}, {d.shape}")
    if 2 * n > _INT32_MAX or i.size > _INT32_MAX // 2:
        raise ValueError(f"too large for int32 indices: n = {n}, {i.size} edges")
    if i.size:
        if min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n:
            raise ValueError(f"edge indices must lie in [0, {n})")
        if (i == j).any():
            raise ValueError("the graph has self-loops (i == j)")
        if not ((d >= 0) & (d <= h_max)).all():
            raise ValueError(f"edge distances must lie in [0, h_max={h_max}]")
    with _LOCK:
        token = next(_TOKENS)
    if average:
        _REGISTRY[token] = (fetch, h_max)
    try:
        status, rows, n_rows, ties, n_ties, n_fetched = _engine(n, i, j, d, h_max, average, token, FETCH_BATCH)
        if status == _DUPLICATE:
            raise ValueError("the same point pair appears more than once in the graph")
        if status == _FETCH_FAILED:
            raise _ERRORS.pop(token)
    finally:
        _REGISTRY.pop(token, None)
        _ERRORS.pop(token, None)
    return rows[:n_rows].copy(), ties[:n_ties].copy(), int(n_fetched)


__all__ = ["heap_linkage", "RTOL", "FETCH_BATCH"]
