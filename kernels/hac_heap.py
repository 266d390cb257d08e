"""Complete and average linkage on a sparse distance graph, compiled with numba.

The same algorithm and the same output as the pure-Python reference ``PairHeap`` (``tests/pair_heap.py``) (see :mod:`mtg.kernels.hac` for the
method: a priority queue of adjacent cluster pairs keyed by their exact linkage distance or, for average linkage,
a lower bound; missing distances fetched in batches only when a bound can decide a merge; conflicting ties), run
on a whole graph of any number of connected components in one call, without Python objects per cluster.

Data structures (flat arrays; ``m`` edges, ``n`` points):

* The edges, bucket-sorted once by ``(d, lo, hi)``: edge ``k`` of that order is the initial *state slot* of its
  pair: ``val[k]`` (sum, or max, of the known distances; starts at ``d``) and, for average linkage, the number
  of known point pairs (``cnt1``, stored minus one) and a log of the pairs fetched (chunks of keys
  ``lo * n + hi``). A live cluster pair owns one slot for its whole life; merging ``a`` and ``b`` into ``node``
  hands the slot of ``(a, z)`` (else of ``(b, z)``) to ``(node, z)`` and forwards the other one to it (``fwd``,
  path compression; also marks dropped complete-linkage pairs, see below).
* Clusters: ``parent`` (itself while live, else the cluster it merged into: union-find with path compression),
  ``size``, members as linked lists (``head``, ``tail``, ``nxt``, concatenated as ``members[big] +
  members[small]``, the order of ``PairHeap``'s lists), and an adjacency list of entries ``neighbour << 32 |
  slot`` in a pool: first every point's neighbours (a CSR, rows sorted), then the lists of the merged clusters
  (bump-allocated, compacted in place when full). A list is written when its cluster is created and never
  updated: entries whose neighbour merged since resolve lazily through ``parent`` and ``fwd``; the insertion order
  of ``PairHeap``'s dicts, which decides which bounds a conflicting-tie check resolves, is recovered exactly.
* The queue ordered by ``(key, a, b)``, as heapq orders the tuples: the sorted edges as a stream, a 4-ary heap
  (three int64 words per entry) and buckets of pushed entries by key, which enter the heap only when the queue
  reaches them, less the entries of clusters merged away meanwhile (most of them).

Two shortcuts that do not change the result:

* Complete linkage: a pair with a point pair missing from the graph is further apart than ``h_max`` and stays so
  after every merge, so it never merges and never ties; such pairs are dropped, and ``node`` keeps only the
  neighbours of both ``a`` and ``b``.
* Every live pair with a key within the ceiling has its entry in the queue, and the popped entry is the smallest,
  so no other pair can lie within the tie threshold when the next entry of the queue lies above it: the scan
  of the neighbours (and the resolves it would make) happens only when it does not.

The callback is Python: the compiled code calls it through ``numba.objmode`` (a few microseconds per call, each
carrying up to ``FETCH_BATCH`` point pairs), looked up by a token in a module-level registry so that concurrent
calls from several threads do not clash (the compiled code releases the GIL, but for the callback). The batch's
sum is taken there by numpy, as in ``PairHeap``, so the heights are bitwise those of ``PairHeap`` for the same
input.

Performance notes: numba counts references of every array passed to (or returned from) a compiled function and of
every array variable reassigned in a loop; in a hot loop that costs more than the work itself. So the main loop
(``_run``) has its heap, bucket and list operations written out, and returns to ``_engine`` whenever an array must
grow, then resumes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import numba
import numpy as np
from numba.typed import List

# Relative tolerance under which two average-linkage heights (or a height and a cut) count as equal.
RTOL = 1e-9
# Point pairs examined per call of the exact-distance callback (whole rows of one cluster against the other).
FETCH_BATCH = 8192

ExactDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Callbacks of the calls in progress, by token; and what went wrong in them.
_REGISTRY: dict[int, tuple[ExactDistance, float]] = {}
_ERRORS: dict[int, BaseException] = {}
_TOKENS = itertools.count(1)
_LOCK = threading.Lock()

# Status codes of the compiled engine.
_OK, _FETCH_FAILED, _DUPLICATE = 0, 1, 2

_INT32_MAX = 2**31 - 1


def _fetch_sum(token: int, lo: np.ndarray, hi: np.ndarray) -> tuple[float, int]:
    """Call the registered callback on one batch; return ``(float(dist.sum()), 0)``, or ``(0.0, 1)`` on failure."""
    try:
        fetch, h_max = _REGISTRY[token]
        dist = np.asarray(fetch(lo.copy(), hi.copy()), dtype=np.float64)
        if dist.shape != lo.shape:
            raise ValueError(
                f"exact_distance returned an array of shape {dist.shape} for {lo.size} point pairs; expected "
                f"{lo.shape}"
            )
        if not dist.min() > h_max:  # (also False for NaN)
            raise ValueError(
                "exact_distance returned a distance <= h_max for a pair missing from the graph: the graph must "
                "hold every pair within h_max"
            )
        return float(dist.sum()), 0
    except BaseException as exc:  # noqa: BLE001 (re-raised by heap_linkage, outside the compiled code)
        _ERRORS[token] = exc
        return 0.0, 1


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


@numba.njit(cache=True, inline="always")
def _sift_down(H, Hf, hole, hn, e_key, e_ab, e_slot):
    """Place the entry ``(e_key, e_ab, e_slot)`` at ``hole`` of the 4-ary heap ``H[:3 hn]`` or below it.

    Entries are three int64 words (key as float64 bits, ``a << 32 | b``, slot), ordered by ``(key, a, b)``; ``Hf``
    is the float64 view of ``H``. Inlined into the compiled loop, so it costs no call.
    """
    while True:
        c1 = 4 * hole + 1
        if c1 >= hn:
            break
        best = c1
        bk = Hf[3 * c1]
        bab = H[3 * c1 + 1]
        for c2 in range(c1 + 1, min(c1 + 4, hn)):
            k2 = Hf[3 * c2]
            if k2 < bk or (k2 == bk and H[3 * c2 + 1] < bab):
                best = c2
                bk = k2
                bab = H[3 * c2 + 1]
        if bk > e_key or (bk == e_key and bab >= e_ab):
            break
        H[3 * hole] = H[3 * best]
        H[3 * hole + 1] = bab
        H[3 * hole + 2] = H[3 * best + 2]
        hole = best
    Hf[3 * hole] = e_key
    H[3 * hole + 1] = e_ab
    H[3 * hole + 2] = e_slot


@numba.njit(cache=True)
def _heapsort(x, size):
    """Sort ``x[:size]`` ascending in place."""
    for phase in range(2):  # 0: heapify (max-heap); 1: pop the largest to the end, repeatedly
        for step in range(size // 2 if phase == 0 else size - 1):
            if phase == 0:
                root = size // 2 - 1 - step
                end = size
            else:
                end = size - 1 - step
                x[0], x[end] = x[end], x[0]
                root = 0
            v = x[root]
            while True:
                c = 2 * root + 1
                if c >= end:
                    break
                if c + 1 < end and x[c + 1] > x[c]:
                    c += 1
                if x[c] <= v:
                    break
                x[root] = x[c]
                root = c
            x[root] = v


# --------------------------------------------------------------------------------------------------------------
# The graph


@numba.njit(cache=True)
def _sort_bucket(val, sab, lo, hi):
    """Sort ``val[lo:hi]``, ``sab[lo:hi]`` by ``(val, sab)``: insertion sort, heapsort for long buckets."""
    if hi - lo <= 24:
        for u in range(lo + 1, hi):
            key, ab = val[u], sab[u]
            t = u
            while t > lo and (val[t - 1] > key or (val[t - 1] == key and sab[t - 1] > ab)):
                val[t], sab[t] = val[t - 1], sab[t - 1]
                t -= 1
            val[t], sab[t] = key, ab
        return
    size = hi - lo
    for phase in range(2):  # 0: heapify (max-heap); 1: pop the largest to the end, repeatedly
        n_steps = size // 2 if phase == 0 else size - 1
        for step in range(n_steps):
            if phase == 0:
                root = size // 2 - 1 - step
                end = size
            else:
                end = size - 1 - step
                val[lo], val[lo + end] = val[lo + end], val[lo]
                sab[lo], sab[lo + end] = sab[lo + end], sab[lo]
                root = 0
            key, ab = val[lo + root], sab[lo + root]
            while True:
                c = 2 * root + 1
                if c >= end:
                    break
                if c + 1 < end:  # the larger child
                    k1 = val[lo + c]
                    k2 = val[lo + c + 1]
                    if k2 > k1 or (k2 == k1 and sab[lo + c + 1] > sab[lo + c]):
                        c += 1
                if val[lo + c] < key or (val[lo + c] == key and sab[lo + c] <= ab):
                    break
                val[lo + root], sab[lo + root] = val[lo + c], sab[lo + c]
                root = c
            val[lo + root], sab[lo + root] = key, ab


@numba.njit(cache=True)
def _edge_stream(i, j, d, h_max):
    """The edges sorted by ``(d, lo, hi)``: ``ab`` (``lo << 32 | hi``) and ``val`` (``d``) arrays.

    A bucket sort on ``d`` scaled to ``[0, m / 4)`` (monotone in ``d``), in two passes that each write to few places
    at a time (coarse buckets of ``2**shift`` fine ones, then the fine buckets of each), then each bucket sorted.
    """
    m = d.size
    n_fine = max(1, m // 4)
    scale = n_fine / h_max if h_max > 0 else 0.0
    shift = 0
    while (n_fine >> shift) > 2048:
        shift += 1
    n_coarse = (n_fine >> shift) + 1
    cstart = np.zeros(n_coarse + 1, np.int64)
    for e in range(m):
        cstart[(min(np.int64(d[e] * scale), n_fine - 1) >> shift) + 1] += 1
    for c in range(n_coarse):
        cstart[c + 1] += cstart[c]
    val1 = np.empty(m, np.float64)
    ab1 = np.empty(m, np.int64)
    fill = cstart[:n_coarse].copy()
    for e in range(m):
        c = min(np.int64(d[e] * scale), n_fine - 1) >> shift
        t = fill[c]
        fill[c] += 1
        val1[t] = d[e]
        ab1[t] = (min(i[e], j[e]) << 32) | max(i[e], j[e])
    val = np.empty(m, np.float64)
    sab = np.empty(m, np.int64)
    width = 1 << shift
    start = np.zeros(width + 1, np.int64)
    for c in range(n_coarse):
        lo0, hi0 = cstart[c], cstart[c + 1]
        base = c << shift
        start[:] = 0
        for t in range(lo0, hi0):
            start[min(np.int64(val1[t] * scale), n_fine - 1) - base + 1] += 1
        for q in range(width):
            start[q + 1] += start[q]
        for t in range(lo0, hi0):
            q = min(np.int64(val1[t] * scale), n_fine - 1) - base
            u = lo0 + start[q]
            start[q] += 1
            val[u] = val1[t]
            sab[u] = ab1[t]
        lo = lo0
        for q in range(width):  # (start[q] is now the end of fine bucket q)
            hi = lo0 + start[q]
            if hi - lo > 1:
                _sort_bucket(val, sab, lo, hi)
            lo = hi
    return sab, val


@numba.njit(cache=True)
def _build_lists(n, sab, slack):
    """Every point's neighbours in ascending order with the slot of each, ``neighbour << 32 | slot``, as a CSR in a
    pool with ``slack`` free entries after it. Returns ``(status, fptr, P)``; ``_DUPLICATE`` if a pair repeats.

    Two scatters: the rows unsorted, then, reading those in order of the neighbour, the rows sorted.
    """
    m = sab.size
    fptr = np.zeros(n + 1, np.int64)
    for k in range(m):
        fptr[(sab[k] >> 32) + 1] += 1
        fptr[(sab[k] & 0xFFFFFFFF) + 1] += 1
    for x in range(n):
        fptr[x + 1] += fptr[x]
    T = np.empty(2 * m, np.int64)
    fill = fptr[:n].copy()
    for k in range(m):
        a = sab[k] >> 32
        b = sab[k] & 0xFFFFFFFF
        T[fill[a]] = (b << 32) | k
        fill[a] += 1
        T[fill[b]] = (a << 32) | k
        fill[b] += 1
    P = np.empty(2 * m + slack, np.int64)
    fill[:] = fptr[:n]
    for y in range(n):
        for t in range(fptr[y], fptr[y + 1]):
            e = T[t]
            x = e >> 32
            u = fill[x]
            if u > fptr[x] and P[u - 1] >> 32 == y:
                return _DUPLICATE, fptr, P
            P[u] = (y << 32) | (e & 0xFFFFFFFF)
            fill[x] = u + 1
    return _OK, fptr, P


@numba.njit(cache=True)
def _pool_compact(P, base, need, lstart, llen, parent, n, n_rows):
    """Move the lists of the live merged clusters down to ``base`` (the points' lists stay below it, for ever), in
    creation order (which is their order in the pool); grow the pool if ``need`` more still do not fit.

    Returns ``(P, top)``.
    """
    top = base
    for c in range(n, n + n_rows):
        if parent[c] == c and llen[c] > 0:
            s = lstart[c]
            if s != top:
                for t in range(llen[c]):  # forward copy: top < s
                    P[top + t] = P[s + t]
                lstart[c] = top
            top += llen[c]
    if 2 * (top + need) > P.size:
        grown = np.empty(max(2 * P.size, 2 * (top + need)), np.int64)
        grown[:top] = P[:top]
        P = grown
    return P, top


# --------------------------------------------------------------------------------------------------------------
# Average linkage: resolving bounds
#
# The pairs fetched so far are logged per state slot, in chunks of keys ``lo * n + hi`` that a merge of two slots
# concatenates (``frec[slot]``: 1 + its record, 0 for none; a record: its chunk list and count of pairs). A resolve
# of a slot that holds fetched pairs puts them in a scratch hash set to skip them, and stops looking once it has met
# them all. The growable arrays live in a typed list ``box``, so that they can grow inside a resolve.
_LOG, _COFF, _CLEN, _CNEXT, _RHEAD, _RTAIL, _RCOUNT, _TABLE, _POS, _META = range(10)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True)
def _grown(a, need):
    """``a`` or a larger copy of it with at least ``need`` entries."""
    if need <= a.size:
        return a
    out = np.empty(max(2 * a.size, need), a.dtype)
    out[: a.size] = a
    return out


@numba.njit(cache=True)
def _block_missing(pa, rows, nb, n, fptr, P, nxt, mark, st, table, to_find, bufb, blo, bhi):
    """The point pairs of ``rows`` members of ``a`` from ``pa`` against the ``nb`` members of ``b`` in ``bufb``
    that are neither edges nor fetched earlier, into ``blo``/``bhi`` in row-major order. ``to_find``: how many pairs
    fetched earlier are still to be met (no look-ups once none are). Returns their number and how many fetched
    pairs were met."""
    k = 0
    found = 0
    mask = np.uint64(table.size - 1)
    for _ in range(rows):
        r0 = fptr[pa]
        r1 = fptr[pa + 1]
        by_search = 8 * nb < r1 - r0
        if not by_search:
            st[_STAMP_PT] += 1
            stamp = st[_STAMP_PT]
            for e in range(r0, r1):
                mark[P[e] >> 32] = stamp
        for t in range(nb):
            pb = bufb[t]
            if by_search:  # binary search in the sorted row
                lo_, hi_ = r0, r1
                while lo_ < hi_:
                    mid = (lo_ + hi_) >> 1
                    if P[mid] >> 32 < pb:
                        lo_ = mid + 1
                    else:
                        hi_ = mid
                if lo_ < r1 and P[lo_] >> 32 == pb:
                    continue  # an edge of the graph
            elif mark[pb] == stamp:
                continue  # an edge of the graph
            lo = min(pa, pb)
            hi = max(pa, pb)
            if found < to_find:  # fetched earlier?
                key = lo * n + hi
                pos = ((np.uint64(key) * _HASH_MUL) >> np.uint64(20)) & mask
                while table[pos] >= 0 and table[pos] != key:
                    pos = (pos + np.uint64(1)) & mask
                if table[pos] == key:
                    found += 1
                    continue
            blo[k] = lo
            bhi[k] = hi
            k += 1
        pa = nxt[pa]
    return k, found


@numba.njit(cache=True)
def _log_batch(box, s, frec, blo, bhi, k, n):
    """Append the keys of a fetched batch to the log of slot ``s``."""
    meta = box[_META]
    used, n_chunks, n_recs = meta[0], meta[1], meta[2]
    box[_LOG] = _grown(box[_LOG], used + k)
    for f in (_COFF, _CLEN, _CNEXT):
        box[f] = _grown(box[f], n_chunks + 1)
    for f in (_RHEAD, _RTAIL, _RCOUNT):
        box[f] = _grown(box[f], n_recs + 1)
    log = box[_LOG]
    for t in range(k):
        log[used + t] = blo[t] * n + bhi[t]
    c = n_chunks
    box[_COFF][c] = used
    box[_CLEN][c] = k
    box[_CNEXT][c] = -1
    r = frec[s] - 1
    if r < 0:
        r = n_recs
        frec[s] = r + 1
        box[_RHEAD][r] = c
        box[_RCOUNT][r] = 0
        meta[2] = n_recs + 1
    else:
        box[_CNEXT][box[_RTAIL][r]] = c
    box[_RTAIL][r] = c
    box[_RCOUNT][r] += k
    meta[0] = used + k
    meta[1] = n_chunks + 1


@numba.njit(cache=True)
def _log_concat(box, s, s2, frec):
    """Append the log of slot ``s2`` to that of slot ``s``."""
    r2 = frec[s2] - 1
    r = frec[s] - 1
    if r < 0:
        frec[s] = r2 + 1
    elif r2 >= 0:
        box[_CNEXT][box[_RTAIL][r]] = box[_RHEAD][r2]
        box[_RTAIL][r] = box[_RTAIL][r2]
        box[_RCOUNT][r] += box[_RCOUNT][r2]


@numba.njit(cache=True)
def _resolve(a, b, s, threshold, n, h_max, token, fetch_batch, size, head, nxt, cnt1, val, frec, fptr, P, mark, st,
             box, bufb, blo, bhi):  # fmt: skip
    """Fetch missing distances of pair (a, b) (state slot s) until it is fully known or its lower bound exceeds
    ``threshold``: blocks of rows of ``a`` against all of ``b``, as ``PairHeap.resolve``. Returns a status."""
    to_find = box[_RCOUNT][frec[s] - 1] if frec[s] > 0 else 0  # (frec: 1 + record, 0 for none)
    n_set = to_find
    if n_set > 0:  # the pairs fetched earlier in a scratch hash set
        if 2 * n_set > box[_TABLE].size:
            cap = box[_TABLE].size
            while 2 * n_set > cap:
                cap *= 2
            box[_TABLE] = np.full(cap, -1, np.int64)
            box[_POS] = np.empty(cap, np.int64)
        table = box[_TABLE]
        pos_of = box[_POS]
        log = box[_LOG]
        coff = box[_COFF]
        clen = box[_CLEN]
        cnext = box[_CNEXT]
        mask = np.uint64(table.size - 1)
        q = 0
        c = box[_RHEAD][frec[s] - 1]
        while c >= 0:
            for u in range(coff[c], coff[c] + clen[c]):
                key = log[u]
                pos = ((np.uint64(key) * _HASH_MUL) >> np.uint64(20)) & mask
                while table[pos] >= 0:
                    pos = (pos + np.uint64(1)) & mask
                table[pos] = key
                pos_of[q] = pos
                q += 1
            c = cnext[c]
    else:
        table = box[_TABLE]
    nb = size[b]
    p = head[b]
    for t in range(nb):
        bufb[t] = p
        p = nxt[p]
    rows_per_block = max(1, fetch_batch // nb)
    pa = head[a]
    remaining = size[a]
    status = _OK
    while remaining > 0:
        rows = min(rows_per_block, remaining)
        remaining -= rows
        k, found = _block_missing(pa, rows, nb, n, fptr, P, nxt, mark, st, table, to_find, bufb, blo, bhi)
        to_find -= found
        for _ in range(rows):
            pa = nxt[pa]
        if k == 0:
            continue
        la = blo[:k]
        lb = bhi[:k]
        with numba.objmode(total="float64", err="int64"):
            total, err = _fetch_sum(token, la, lb)
        if err != 0:
            status = _FETCH_FAILED
            break
        _log_batch(box, s, frec, blo, bhi, k, n)
        st[_NFETCHED] += k
        cnt1[s] += k
        val[s] += total
        if _key(size[a], size[b], cnt1[s] + 1, val[s], h_max, True) > threshold:
            break
    if n_set > 0:  # empty the scratch set
        pos_of = box[_POS]
        for q in range(n_set):
            table[pos_of[q]] = -1
    return status


@numba.njit(cache=True)
def _conflict(x, nz, zs, ss, threshold, n, h_max, average, token, fetch_batch, size, head, nxt, cnt1, val, frec,
              fptr, P, mark_pt, st, box, bufb, blo, bhi):  # fmt: skip
    """Whether a pair (x, zs[t]) (slot ss[t]) lies within ``threshold``, resolving the bounds in order as
    ``PairHeap.conflicting_tie``. Returns ``(status, tie)``."""
    for t in range(nz):
        z = zs[t]
        sz = ss[t]
        if not average:  # complete: the listed pairs are all fully known
            if val[sz] <= threshold:
                return _OK, True
            continue
        total = size[x] * size[z]
        kz = _key(size[x], size[z], cnt1[sz] + 1, val[sz], h_max, True)
        if kz <= threshold and cnt1[sz] + 1 < total:
            status = _resolve(x, z, sz, threshold, n, h_max, token, fetch_batch, size, head, nxt, cnt1, val, frec,
                              fptr, P, mark_pt, st, box, bufb, blo, bhi)  # fmt: skip
            if status != _OK:
                return status, False
            kz = _key(size[x], size[z], cnt1[sz] + 1, val[sz], h_max, True)
        if kz <= threshold and cnt1[sz] + 1 == total:
            return _OK, True
    return _OK, False


# --------------------------------------------------------------------------------------------------------------
# The main loop

# Scalar state of the main loop, in an int64 array (the loop returns to have arrays grown, then resumes).
_SP, _HN, _CUR, _FREE, _NFREE, _NUSED, _TOP, _NROWS, _STAMP, _NTIES, _NEED, _NFETCHED, _STAMP_PT = range(13)
# What the main loop returns for.
_DONE, _GROW_HEAP, _GROW_CHUNKS, _GROW_POOL, _GROW_TIES = 0, 10, 11, 12, 13

# Entries ``(key, a << 32 | b, slot)``. The heap: 4-ary, three int64 words per entry (the key as float64 bits,
# read through a float64 view). Pushed entries wait, unsorted, in buckets of keys (lists of chunks of entries); a
# bucket enters the heap, less the entries of clusters merged away meanwhile, only when the queue reaches it: the
# heap holds the entries of the buckets up to ``cur`` (and those pushed with a key there), the buckets those above,
# so the heap's top is smaller than any bucket's entry. The stream of edges is merged with the heap.
_CHUNK = 32  # entries per chunk
_N_BUCKETS = 8192


@numba.njit(cache=True)
def _run(
    st, n, m, h_max, average, token, fetch_batch, sab, val, H, Hf, bscale, bhead, btail, bfill, bcount, C, Cf, cnext,
    P, lstart, llen, parent, size, head, tail, nxt, cnt1, frec, fwd, fptr, rows, ties, mark, in_a, where, wz, ws, tmp,
    matched, pk, pab, ps, mark_pt, box, bufb, blo, bhi,
):  # fmt: skip
    """The main loop: pop, resolve or merge, push. Returns ``_DONE``, ``_FETCH_FAILED``, or a ``_GROW_*`` code
    (with the capacity needed in ``st[_NEED]``) at the start of an iteration whose worst case would not fit.

    The heap, bucket and list operations are written out here rather than in helper functions (see the module's
    performance notes).
    """
    rtol = RTOL if average else 0.0
    ceiling = h_max * (1.0 + rtol)
    sp, hn, cur = st[_SP], st[_HN], st[_CUR]
    free, n_free, n_used = st[_FREE], st[_NFREE], st[_NUSED]
    top, n_rows, stamp, n_ties = st[_TOP], st[_NROWS], st[_STAMP], st[_NTIES]
    chunk_cap = cnext.size
    code = _DONE
    while True:
        # Skip the stream's entries of points merged away: a live head keeps the edge's own state, its key d.
        while sp < m:
            ab = sab[sp]
            a = ab >> 32
            b = ab & 0xFFFFFFFF
            if parent[a] == a and parent[b] == b:
                break
            sp += 1
        # The heap's top, else the stream's head, else an entry of the next bucket is the smallest: open buckets
        # up to the stream's head while the heap is empty.
        if hn == 0:
            limit = min(np.int64(val[sp] * bscale), _N_BUCKETS - 1) if sp < m else _N_BUCKETS - 1
            while hn == 0:
                q = cur + 1
                while q <= limit and bhead[q] < 0:
                    q += 1
                if q > limit:
                    cur = max(cur, limit)
                    break
                if 3 * bcount[q] > H.size:
                    st[_NEED] = bcount[q]
                    code = _GROW_HEAP
                    break
                c = bhead[q]
                while c >= 0:  # move the live entries onto the heap, free the chunks
                    n_in = bfill[q] if c == btail[q] else _CHUNK
                    for u in range(n_in):
                        w = 3 * (c * _CHUNK + u)
                        ab = C[w + 1]
                        a = ab >> 32
                        b = ab & 0xFFFFFFFF
                        if parent[a] == a and parent[b] == b:
                            H[3 * hn] = C[w]
                            H[3 * hn + 1] = ab
                            H[3 * hn + 2] = C[w + 2]
                            hn += 1
                    c_next = cnext[c]
                    cnext[c] = free
                    free = c
                    n_free += 1
                    c = c_next
                bhead[q] = -1
                btail[q] = -1
                bfill[q] = 0
                bcount[q] = 0
                cur = q
                for start in range((hn - 2) // 4, -1, -1):  # heapify
                    _sift_down(H, Hf, start, hn, Hf[3 * start], H[3 * start + 1], H[3 * start + 2])
            if code != _DONE:
                break

        from_stream = sp < m and (hn == 0 or val[sp] < Hf[0] or (val[sp] == Hf[0] and sab[sp] < H[1]))
        if from_stream:
            ab = sab[sp]
        elif hn > 0:
            ab = H[1]
        else:
            break
        a = ab >> 32
        b = ab & 0xFFFFFFFF
        live = parent[a] == a and parent[b] == b
        if live:  # room for this iteration's worst case: every new pair pushed, onto the heap or in a new chunk
            need = llen[a] + llen[b] + 1
            if 3 * (hn + need) > H.size:
                st[_NEED] = hn + need
                code = _GROW_HEAP
                break
            if n_free + chunk_cap - n_used < need:
                st[_NEED] = n_used + need
                code = _GROW_CHUNKS
                break
            if top + need > P.size:
                st[_NEED] = need
                code = _GROW_POOL
                break
            if n_ties == ties.size:
                code = _GROW_TIES
                break

        # Pop.
        if from_stream:
            key = val[sp]
            s = sp
            sp += 1
        else:
            key = Hf[0]
            s = H[2]
            hn -= 1
            if hn > 0:  # the last entry into the hole at the root
                _sift_down(H, Hf, 0, hn, Hf[3 * hn], H[3 * hn + 1], H[3 * hn + 2])
        if not live:
            continue  # a cluster merged away

        n_push = 0
        merge = True
        if average and not from_stream:  # (complete-linkage keys never change)
            if _key(size[a], size[b], cnt1[s] + 1, val[s], h_max, True) != key:
                continue  # stale entry
            if cnt1[s] + 1 < size[a] * size[b]:  # resolve the bound, push it back if still within reach
                status = _resolve(a, b, s, ceiling, n, h_max, token, fetch_batch, size, head, nxt, cnt1, val, frec,
                                  fptr, P, mark_pt, st, box, bufb, blo, bhi)  # fmt: skip
                if status != _OK:
                    code = status
                    break
                key = _key(size[a], size[b], cnt1[s] + 1, val[s], h_max, True)
                if key <= ceiling:
                    pk[0] = key
                    pab[0] = ab
                    ps[0] = s
                    n_push = 1
                merge = False

        if merge:
            # The live neighbours of a (but b) and of b (but a) with their slots, in the insertion order of
            # PairHeap's dicts. A list holds its cluster's pairs as they were when it was created (points: the
            # neighbours ascending, the order in which PairHeap inserts the sorted edges); a neighbour that merged
            # since resolves to its live cluster and its slot to the merged one. PairHeap deletes such a pair and
            # appends the new one, and new clusters get increasing ids, so the dict order is: the unchanged
            # entries in list order, then the changed ones (deduplicated) by ascending id.
            na = 0
            nb = 0
            for side in range(2):
                x = a if side == 0 else b
                y = b if side == 0 else a
                stamp += 1
                k = 0
                n_changed = 0
                for t in range(lstart[x], lstart[x] + llen[x]):
                    e = P[t]
                    z = e >> 32
                    sz = e & 0xFFFFFFFF
                    if parent[z] == z:
                        if z != y:
                            wz[side, k] = z
                            ws[side, k] = sz
                            k += 1
                        continue
                    r = z  # the live cluster of z, with path compression
                    while parent[r] != r:
                        r = parent[r]
                    while parent[z] != r:
                        z_up = parent[z]
                        parent[z] = r
                        z = z_up
                    if r == y or mark[r] == stamp:
                        continue
                    mark[r] = stamp
                    f = sz  # the slot sz merged into, -1 if dropped, with path compression (fwd: 0 for a slot in
                    while True:  # use, -1 for a dropped one, else 1 + the slot it merged into)
                        f_up = fwd[f]
                        if f_up == 0:
                            break
                        if f_up < 0:
                            f = -1
                            break
                        f = f_up - 1
                    while sz >= 0 and sz != f:
                        f_up = fwd[sz]
                        fwd[sz] = f + 1 if f >= 0 else -1
                        sz = f_up - 1 if f_up > 0 else -1
                    if f >= 0:
                        tmp[n_changed] = (r << 32) | f
                        n_changed += 1
                if average and n_changed > 1:  # (complete linkage never needs the order)
                    if n_changed <= 24:
                        for u in range(1, n_changed):
                            v = tmp[u]
                            t = u
                            while t > 0 and tmp[t - 1] > v:
                                tmp[t] = tmp[t - 1]
                                t -= 1
                            tmp[t] = v
                    else:
                        _heapsort(tmp, n_changed)
                for u in range(n_changed):
                    wz[side, k] = tmp[u] >> 32
                    ws[side, k] = tmp[u] & 0xFFFFFFFF
                    k += 1
                if side == 0:
                    na = k
                else:
                    nb = k

            # Conflicting tie: another pair sharing a or b at the same height (within rtol). Every live pair with a
            # key within the ceiling has its entry in the queue, none below this one: unless the next entry may
            # lie within the threshold (or the threshold above the ceiling), there is none.
            if key != 0.0:
                threshold = key * (1.0 + rtol)
                scan = threshold > ceiling
                while sp < m:  # (as above: a live head's key is its d)
                    ab2 = sab[sp]
                    if parent[ab2 >> 32] == ab2 >> 32 and parent[ab2 & 0xFFFFFFFF] == ab2 & 0xFFFFFFFF:
                        break
                    sp += 1
                if sp < m and val[sp] <= threshold:
                    scan = True
                if hn > 0 and Hf[0] <= threshold:
                    scan = True
                if hn == 0:  # the buckets from cur + 1 whose keys can lie within the threshold
                    q = cur + 1
                    while not scan and q < _N_BUCKETS and q <= np.int64(threshold * bscale):
                        if bhead[q] >= 0:
                            scan = True
                        q += 1
                if scan:
                    status, tie = _conflict(a, na, wz[0], ws[0], threshold, n, h_max, average, token, fetch_batch,
                                            size, head, nxt, cnt1, val, frec, fptr, P, mark_pt, st, box, bufb, blo,
                                            bhi)  # fmt: skip
                    if status == _OK and not tie:
                        status, tie = _conflict(b, nb, wz[1], ws[1], threshold, n, h_max, average, token,
                                                fetch_batch, size, head, nxt, cnt1, val, frec, fptr, P, mark_pt, st,
                                                box, bufb, blo, bhi)  # fmt: skip
                    if status != _OK:
                        code = status
                        break
                    if tie:
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
                in_a[wz[0, t]] = node
                where[wz[0, t]] = t
            lstart[node] = top
            k = 0
            if average:  # the pairs of a (their slots), then those of b alone
                for t in range(na):
                    P[top + k] = (wz[0, t] << 32) | ws[0, t]
                    k += 1
                for t in range(nb):
                    z = wz[1, t]
                    sz = ws[1, t]
                    if in_a[z] == node:
                        s2 = ws[0, where[z]]
                        cnt1[s2] += cnt1[sz] + 1
                        val[s2] = val[s2] + val[sz]
                        fwd[sz] = s2 + 1
                        if frec[sz] != 0:
                            _log_concat(box, s2, sz, frec)
                    else:
                        P[top + k] = (z << 32) | sz
                        k += 1
            else:  # complete: a pair missing a point pair never merges; keep only the neighbours of both
                for t in range(na):
                    matched[t] = False
                for t in range(nb):
                    z = wz[1, t]
                    sz = ws[1, t]
                    if in_a[z] == node:
                        u = where[z]
                        s2 = ws[0, u]
                        matched[u] = True
                        if val[sz] > val[s2]:  # noqa: PLR1730 (Python's max(cur, state): cur unless state is larger)
                            val[s2] = val[sz]
                        fwd[sz] = s2 + 1
                    else:
                        fwd[sz] = -1
                for t in range(na):
                    if matched[t]:
                        P[top + k] = (wz[0, t] << 32) | ws[0, t]
                        k += 1
                    else:
                        fwd[ws[0, t]] = -1
            llen[node] = k
            for t in range(k):
                e = P[top + t]
                z = e >> 32
                sz = e & 0xFFFFFFFF
                if average:
                    kz = _key(size[node], size[z], cnt1[sz] + 1, val[sz], h_max, True)
                else:
                    kz = val[sz]
                if kz <= ceiling:
                    pk[n_push] = kz
                    pab[n_push] = (z << 32) | node
                    ps[n_push] = sz
                    n_push += 1
            top += k

        # Push: onto the heap at or below bucket cur, else into the key's bucket.
        for t in range(n_push):
            e_key, e_ab, e_slot = pk[t], pab[t], ps[t]
            q = min(np.int64(e_key * bscale), _N_BUCKETS - 1)
            if q <= cur:
                hole = hn
                while hole > 0:
                    up = (hole - 1) >> 2
                    uk = Hf[3 * up]
                    if uk < e_key or (uk == e_key and H[3 * up + 1] <= e_ab):
                        break
                    H[3 * hole] = H[3 * up]
                    H[3 * hole + 1] = H[3 * up + 1]
                    H[3 * hole + 2] = H[3 * up + 2]
                    hole = up
                Hf[3 * hole] = e_key
                H[3 * hole + 1] = e_ab
                H[3 * hole + 2] = e_slot
                hn += 1
            else:
                c = btail[q]
                if c < 0 or bfill[q] == _CHUNK:
                    if free >= 0:
                        c_new = free
                        free = cnext[c_new]
                        n_free -= 1
                    else:
                        c_new = n_used
                        n_used += 1
                    cnext[c_new] = -1
                    if c < 0:
                        bhead[q] = c_new
                    else:
                        cnext[c] = c_new
                    btail[q] = c_new
                    bfill[q] = 0
                    c = c_new
                w = 3 * (c * _CHUNK + bfill[q])
                Cf[w] = e_key
                C[w + 1] = e_ab
                C[w + 2] = e_slot
                bfill[q] += 1
                bcount[q] += 1
    st[_SP], st[_HN], st[_CUR] = sp, hn, cur
    st[_FREE], st[_NFREE], st[_NUSED] = free, n_free, n_used
    st[_TOP], st[_NROWS], st[_STAMP], st[_NTIES] = top, n_rows, stamp, n_ties
    return code


@numba.njit(cache=True)
def _buckets_compact(st, bhead, btail, bfill, bcount, C, cnext, parent):
    """Drop the bucket entries of clusters merged away, freeing the chunks left empty."""
    free, n_free = st[_FREE], st[_NFREE]
    for q in range(_N_BUCKETS):
        c = bhead[q]
        if c < 0:
            continue
        wc = c  # write position (chunk wc, entry wu): never past the read position
        wu = 0
        n_live = 0
        while c >= 0:
            n_in = bfill[q] if c == btail[q] else _CHUNK
            for u in range(n_in):
                r = 3 * (c * _CHUNK + u)
                ab = C[r + 1]
                a = ab >> 32
                b = ab & 0xFFFFFFFF
                if parent[a] == a and parent[b] == b:
                    if wu == _CHUNK:
                        wc = cnext[wc]
                        wu = 0
                    w = 3 * (wc * _CHUNK + wu)
                    C[w] = C[r]
                    C[w + 1] = ab
                    C[w + 2] = C[r + 2]
                    wu += 1
                    n_live += 1
            c = cnext[c]
        if n_live == 0:
            rest = bhead[q]
            bhead[q] = -1
            btail[q] = -1
            bfill[q] = 0
        else:
            rest = cnext[wc]
            cnext[wc] = -1
            btail[q] = wc
            bfill[q] = wu
        bcount[q] = n_live
        while rest >= 0:
            c = cnext[rest]
            cnext[rest] = free
            free = rest
            n_free += 1
            rest = c
    st[_FREE], st[_NFREE] = free, n_free


# --------------------------------------------------------------------------------------------------------------
# The engine


@numba.njit(cache=True, nogil=True)
def _engine(n, i, j, d, h_max, average, token, fetch_batch):
    """Returns ``(status, rows, n_rows, ties, n_ties, n_fetched)``."""
    rtol = RTOL if average else 0.0
    ceiling = h_max * (1.0 + rtol)
    m = d.size
    rows = np.empty((max(n - 1, 0), 4), np.float64)
    ties = np.empty(16, np.float64)
    sab, val = _edge_stream(i, j, d, h_max)
    status, fptr, P = _build_lists(n, sab, max(m // 2, 1024))
    if status != _OK:
        return status, rows, 0, ties, 0, 0

    # Per state slot (beside val): forward pointer; average: known count - 1, record of the fetched pairs' log.
    fwd = np.zeros(m, np.int32)
    cnt1 = np.zeros(m if average else 1, np.int64)
    frec = np.zeros(m if average else 1, np.int32)

    # Per cluster: parent (itself while live), size, members, adjacency list in the pool.
    n_nodes = max(2 * n - 1, 1)
    parent = np.arange(n_nodes).astype(np.int32)
    size = np.ones(n_nodes, np.int64)
    head = np.arange(n_nodes).astype(np.int32)
    tail = np.arange(n_nodes).astype(np.int32)
    nxt = np.full(max(n, 1), -1, np.int32)
    lstart = np.zeros(n_nodes, np.int64)
    llen = np.zeros(n_nodes, np.int64)
    lstart[:n] = fptr[:n]
    llen[:n] = fptr[1:] - fptr[:n]

    # The queue: the stream of edges, the heap, the buckets.
    H = np.empty(3 * 4096, np.int64)
    bscale = _N_BUCKETS / ceiling if ceiling > 0 else 0.0
    bhead = np.full(_N_BUCKETS, -1, np.int32)
    btail = np.full(_N_BUCKETS, -1, np.int32)
    bfill = np.zeros(_N_BUCKETS, np.int32)
    bcount = np.zeros(_N_BUCKETS, np.int64)
    C = np.empty(3 * _CHUNK * 4096, np.int64)
    cnext = np.empty(4096, np.int32)

    # Work space.
    mark = np.zeros(n_nodes, np.int64)  # by cluster: the walk that last met it
    in_a = np.zeros(n_nodes, np.int64)  # by cluster: the merge whose first side holds it
    where = np.empty(n_nodes, np.int64)
    nbuf = max(n, 1)
    wz = np.empty((2, nbuf), np.int64)  # the neighbours of a and b in a merge
    ws = np.empty((2, nbuf), np.int64)
    tmp = np.empty(nbuf, np.int64)
    matched = np.zeros(nbuf, np.bool_)
    pk = np.empty(nbuf, np.float64)  # the entries to push
    pab = np.empty(nbuf, np.int64)
    ps = np.empty(nbuf, np.int64)
    box = List()
    for _ in range(_META + 1):  # _LOG, _COFF, _CLEN, _CNEXT, _RHEAD, _RTAIL, _RCOUNT, _TABLE, _POS, _META
        box.append(np.zeros(1024, np.int64))
    box[_TABLE][:] = -1
    if average:
        mark_pt = np.zeros(nbuf, np.int64)  # by point: the row of _block_missing that marked it
        bufb = np.empty(nbuf, np.int64)
        blo = np.empty(max(fetch_batch, n), np.int64)
        bhi = np.empty(max(fetch_batch, n), np.int64)
    else:
        mark_pt = np.empty(0, np.int64)
        bufb = np.empty(0, np.int64)
        blo = np.empty(0, np.int64)
        bhi = np.empty(0, np.int64)

    st = np.zeros(13, np.int64)
    st[_CUR] = -1
    st[_FREE] = -1
    st[_TOP] = 2 * m
    while True:
        code = _run(
            st, n, m, h_max, average, token, fetch_batch, sab, val, H, H.view(np.float64), bscale, bhead, btail,
            bfill, bcount, C, C.view(np.float64), cnext, P, lstart, llen, parent, size, head, tail, nxt, cnt1, frec,
            fwd, fptr, rows, ties, mark, in_a, where, wz, ws, tmp, matched, pk, pab, ps, mark_pt, box, bufb, blo, bhi,
        )  # fmt: skip
        if code == _GROW_HEAP:
            grown = np.empty(max(2 * H.size, 3 * st[_NEED]), np.int64)
            grown[: 3 * st[_HN]] = H[: 3 * st[_HN]]
            H = grown
        elif code == _GROW_CHUNKS:  # drop the dead entries; grow unless that frees half of the chunks
            _buckets_compact(st, bhead, btail, bfill, bcount, C, cnext, parent)
            if 2 * (st[_NFREE] + cnext.size - st[_NUSED]) >= cnext.size and st[_NFREE] + cnext.size >= st[_NEED]:
                continue
            cap = max(2 * cnext.size, st[_NEED])
            grown = np.empty(3 * _CHUNK * cap, np.int64)
            grown[: C.size] = C
            C = grown
            grown_next = np.empty(cap, np.int32)
            grown_next[: cnext.size] = cnext
            cnext = grown_next
        elif code == _GROW_POOL:
            P, st[_TOP] = _pool_compact(P, 2 * m, st[_NEED], lstart, llen, parent, n, st[_NROWS])
        elif code == _GROW_TIES:
            grown_ties = np.empty(2 * ties.size, np.float64)
            grown_ties[: ties.size] = ties
            ties = grown_ties
        else:
            return code, rows, st[_NROWS], ties, st[_NTIES], st[_NFETCHED]


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
        ``0..n-1``, merge ``k`` creates node ``n + k``, ``node a < node b``. Only merges with a key within the
        ceiling ``h_max (1 + rtol)`` (``rtol = RTOL`` for average, 0 for complete). Heights are non-decreasing up
        to rounding (an average-linkage height can lie a few ulps below an earlier one).
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
    if 2 * n > _INT32_MAX or i.size >= _INT32_MAX:
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


__all__ = ["FETCH_BATCH", "RTOL", "heap_linkage"]
