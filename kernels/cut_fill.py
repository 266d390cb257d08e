"""Excavated and deposited volumes per site from two DEM epochs, with exact fractional pixel coverage.

``dh = late - early`` on one grid, in float64. A cell is a void where dh is not finite (NaN, the nodata of
both epochs, in either epoch). For site ``k`` with coverage fractions ``cov``
(:func:`mtg.kernels.coverage.polygon_coverage`), cell area ``A`` and threshold ``t >= 0``, over the site's
covered cells (``cov > 0``):

* ``excavated_m3 = sum(cov A (-dh))`` over ``dh < -t`` (a positive number), ``excavated_area_m2 = sum(cov A)``
  over the same cells; ``deposited_m3``, ``deposited_area_m2`` likewise over ``dh > t``;
  ``net_m3 = deposited_m3 - excavated_m3``;
* ``area_m2 = sum(cov A)``, ``void_fraction`` = covered area of void cells / ``area_m2``,
  ``mean_dh`` = coverage-weighted mean of the valid ``dh``.

Void policies (how void cells of a site are filled; filled cells count in ``filled_area_m2`` and then go
through the same thresholds as valid ones):

* ``"none"``: void cells contribute nothing.
* ``"local-mean"``: every void cell gets the site's ``mean_dh``.
* ``"hypsometric"``: a void cell gets the coverage-weighted mean valid ``dh`` of its early-elevation bin within
  the site, or ``mean_dh`` when that bin holds no valid cell or the cell's own early elevation is not finite.
  The site's ``n_bins`` equal bins span its smallest to largest finite early elevation ``[lo, hi]`` (over its
  covered cells); elevation ``e`` falls in bin ``min(floor((e - lo) / (hi - lo) * n_bins), n_bins - 1)``,
  computed in float64 (bin 0 when ``hi == lo``).

A site with no valid cell (including one off the grid) gets NaN volumes, change areas and ``mean_dh``,
``void_fraction`` 1 and ``filled_area_m2`` 0.

Three implementations give the same numbers, up to the order of floating-point additions:

* :func:`cut_fill_reference`: array-API code that gathers every covered cell, fills voids cell by cell and sums
  per site with ``bincount``: readable, and the oracle of the tests. ``bincount`` is outside the array API
  standard (which has no scatter-add), so it runs on numpy and CuPy, not on a namespace that has only the
  standard's functions (array-api-strict).
* :func:`cut_fill`: the CPU path, one numba kernel reading each site's window of both epochs once and fusing
  dh, validity, thresholds and float64 accumulation (float32 or float64 rasters of any strides, read in place,
  never copied). The fused loop over a window row is branch-free and vectorised (SIMD), and rows a few ahead
  are prefetched, since a window jumps a whole raster row from one of its rows to the next. Local-mean filling
  needs only the site's sums; the hypsometric policy reads the window of a site with voids a second time to
  sum dh per elevation bin, once the site's elevation range (tracked during the first pass) is known. The
  kernel runs on one thread and releases the GIL (``nogil``): callers run blocks of sites in parallel threads,
  which needs no thread-safe numba threading layer (with numba's ``workqueue`` layer, the one left where
  neither TBB nor OpenMP loads, two threads entering a ``parallel=True`` kernel at once abort the process).
* :func:`cut_fill_cuda`: the same arithmetic as a ``numba.cuda`` kernel on device arrays (CuPy arrays through
  ``__cuda_array_interface__``, or numba device arrays), one thread block per site (see its docstring).

The other two are numba kernels, not array-API code: :func:`cut_fill` takes numpy arrays only and
:func:`cut_fill_cuda` CUDA device arrays only.

There is no chunking inside these kernels: each site's window is read from the full arrays they are given
(in memory or memory-mapped; the pipeline hands over the epochs covering a block of sites), so the results
do not depend on how a large raster is split into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from array_api_compat import array_namespace
from llvmlite import ir
from numba import cuda, types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from mtg.kernels.coverage import Coverage

VOID_POLICIES = ("none", "local-mean", "hypsometric")
_NONE, _LOCAL_MEAN, _HYPSOMETRIC = range(3)
# Per-site sums of the kernels (in units of covered cells): rows of the array the kernels return.
_AREA, _VALID, _SUM_DH, _EXC, _EXC_AREA, _DEP, _DEP_AREA, _VOID, _MEAN_FILL = range(9)
_N_STATS = 9
# cut_fill_cuda: largest block (a power of two) and most elevation bins (static shared-memory sizes).
CUDA_MAX_THREADS = 256
CUDA_MAX_BINS = 64
_CUDA_BIN_SLOTS = CUDA_MAX_BINS + 1  # slot n_bins: void cells without a finite early elevation


@dataclass(frozen=True)
class CutFill:
    """Per-site results, one float64 value per polygon of the coverage.

    Attributes
    ----------
    excavated_m3, deposited_m3, net_m3 : numpy.ndarray
        Volume removed (positive), added, and added minus removed: all three over the cells beyond the threshold
        (``dh < -t`` and ``dh > t``), not the whole site (whose change is ``mean_dh * area_m2``, voids aside).
    excavated_area_m2, deposited_area_m2 : numpy.ndarray
        Covered area of the cells counted in each volume.
    area_m2 : numpy.ndarray
        Covered area of the site on the grid.
    void_fraction : numpy.ndarray
        Share of ``area_m2`` where dh is not finite (1 for a site without valid cells).
    filled_area_m2 : numpy.ndarray
        Void area filled by the void policy.
    mean_dh : numpy.ndarray
        Coverage-weighted mean of the valid dh (m).
    """

    excavated_m3: np.ndarray
    deposited_m3: np.ndarray
    net_m3: np.ndarray
    excavated_area_m2: np.ndarray
    deposited_area_m2: np.ndarray
    area_m2: np.ndarray
    void_fraction: np.ndarray
    filled_area_m2: np.ndarray
    mean_dh: np.ndarray


@dataclass(frozen=True)
class DeviceCoverage:
    """A :class:`~mtg.kernels.coverage.Coverage` copied to the GPU (numba device arrays), for
    :func:`cut_fill_cuda`; made by :func:`coverage_to_device`."""

    row0: Any
    col0: Any
    height: Any
    width: Any
    offsets: Any
    fractions: Any
    n_rows: int
    n_cols: int

    def __len__(self) -> int:
        return int(self.row0.shape[0])


def _check(early, late, coverage, threshold: float, cell_area: float, void_policy: str, n_bins: int) -> int:
    """Validate the arguments shared by the three implementations; return the void policy's code."""
    for name, arr in (("early", early), ("late", late)):
        if len(arr.shape) != 2:
            raise ValueError(f"{name} must be a 2-D raster; got shape {tuple(arr.shape)}")
        if np.dtype(arr.dtype) not in (np.float32, np.float64):
            raise ValueError(f"{name} must be float32 or float64 (NaN marks voids); got {arr.dtype}")
    if tuple(early.shape) != tuple(late.shape) or tuple(early.shape) != (coverage.n_rows, coverage.n_cols):
        raise ValueError(f"early {tuple(early.shape)}, late {tuple(late.shape)} and the coverage's grid "
                         f"{(coverage.n_rows, coverage.n_cols)} must have the same shape")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number of metres >= 0; got {threshold}")
    if not (np.isfinite(cell_area) and cell_area > 0):
        raise ValueError(f"cell_area must be a finite area > 0; got {cell_area}")
    if void_policy not in VOID_POLICIES:
        raise ValueError(f"void_policy must be one of {', '.join(VOID_POLICIES)}; got {void_policy!r}")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins}")
    return VOID_POLICIES.index(void_policy)


def _finish(stats: np.ndarray, threshold: float, cell_area: float, policy: int) -> CutFill:
    """Turn the kernels' per-site sums into results: fill with the site mean, scale by the cell area."""
    area, valid, sum_dh, exc, exc_area, dep, dep_area, void, mean_fill = stats.T
    has = valid > 0
    mean = np.where(has, sum_dh / np.where(has, valid, 1.0), np.nan)
    cut, fill = has & (mean < -threshold), has & (mean > threshold)
    exc = exc - np.where(cut, mean_fill * mean, 0.0)
    exc_area = exc_area + np.where(cut, mean_fill, 0.0)
    dep = dep + np.where(fill, mean_fill * mean, 0.0)
    dep_area = dep_area + np.where(fill, mean_fill, 0.0)
    known = np.where(has, cell_area, np.nan)
    return CutFill(excavated_m3=exc * known, deposited_m3=dep * known, net_m3=(dep - exc) * known,
                   excavated_area_m2=exc_area * known, deposited_area_m2=dep_area * known,
                   area_m2=area * cell_area, void_fraction=np.where(has, void / np.where(has, area, 1.0), 1.0),
                   filled_area_m2=np.where(has & (policy != _NONE), void * cell_area, 0.0), mean_dh=mean)


def _covered_cells(coverage: Coverage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Site id, flat pixel index (row-major) and coverage fraction of every covered cell, on the host."""
    n_cells = np.diff(coverage.offsets)
    site = np.repeat(np.arange(len(coverage), dtype=np.int64), n_cells)
    local = np.arange(coverage.fractions.size, dtype=np.int64) - np.repeat(coverage.offsets[:-1], n_cells)
    width = np.repeat(coverage.width, n_cells)
    flat = ((np.repeat(coverage.row0, n_cells) + local // width) * coverage.n_cols
            + np.repeat(coverage.col0, n_cells) + local % width)
    keep = coverage.fractions > 0
    return site[keep], flat[keep], coverage.fractions[keep]


def cut_fill_reference(early, late, coverage: Coverage, threshold: float, cell_area: float,
                       void_policy: str = "none", n_bins: int = 10) -> CutFill:
    """Per-site cut and fill, the readable array-API reference (numpy or CuPy arrays: it needs ``bincount``).

    Every covered cell of every site is gathered into flat arrays (site id, pixel index, coverage; built from
    the coverage on the host and moved to the rasters' device with ``xp.asarray``), voids are filled cell by
    cell, and per-site sums are ``bincount(site, weights=...)``. ``bincount`` is outside the array-API standard
    (which has no scatter-add); numpy and CuPy both provide it, and so does ``array_api_compat``'s namespace.

    Parameters
    ----------
    early, late : array
        2-D float32 or float64 rasters on the coverage's grid (numpy or CuPy); NaN marks voids.
    coverage : Coverage
        Site coverage on the rasters' grid.
    threshold : float
        Change threshold ``t >= 0`` (m): cut where ``dh < -t``, fill where ``dh > t``.
    cell_area : float
        Area of one grid cell (m^2).
    void_policy : {"none", "local-mean", "hypsometric"}
        How void cells are filled (see the module docstring).
    n_bins : int
        Number of early-elevation bins of the hypsometric policy.

    Returns
    -------
    CutFill
        One value per site, as numpy float64 arrays.
    """
    policy = _check(early, late, coverage, threshold, cell_area, void_policy, n_bins)
    xp = array_namespace(early, late)
    n = len(coverage)
    site_host, flat_host, cov_host = _covered_cells(coverage)
    site, flat = xp.asarray(site_host), xp.asarray(flat_host)
    w = xp.asarray(cov_host) * cell_area

    def per_site(weights, key=site, size=n):
        return xp.bincount(key, weights=weights, minlength=size)

    e = xp.astype(xp.take(xp.reshape(early, (-1,)), flat), xp.float64)
    dh = xp.astype(xp.take(xp.reshape(late, (-1,)), flat), xp.float64) - e
    valid = xp.isfinite(dh)
    area = per_site(w)
    valid_area = per_site(xp.where(valid, w, 0.0))
    void_area = per_site(xp.where(valid, 0.0, w))
    has = valid_area > 0
    mean = xp.where(has, per_site(xp.where(valid, w * dh, 0.0)) / xp.where(has, valid_area, 1.0), xp.nan)
    site_mean = xp.take(mean, site)
    if policy == _NONE:
        fill = xp.full(dh.shape, xp.nan, dtype=xp.float64)
    elif policy == _LOCAL_MEAN:
        fill = site_mean
    else:
        # Elevation range of each site: first and last early value after sorting by (site, early); a NaN
        # sentinel at the end stands for the sites without any finite early value.
        known = xp.isfinite(e)
        e_known, site_known = e[known], site[known]
        order = xp.argsort(e_known, stable=True)
        order = xp.take(order, xp.argsort(xp.take(site_known, order), stable=True))
        ranked = xp.concat([xp.take(e_known, order), xp.asarray([xp.nan], dtype=xp.float64)])
        count = xp.bincount(site_known, minlength=n)
        end = xp.cumulative_sum(count)
        lo = xp.take(ranked, xp.where(count > 0, end - count, e_known.shape[0]))
        hi = xp.take(ranked, xp.where(count > 0, end - 1, e_known.shape[0]))
        span = xp.take(hi - lo, site)
        scaled = xp.where(known & (span > 0), (e - xp.take(lo, site)) / xp.where(span > 0, span, 1.0) * n_bins, 0.0)
        key = site * n_bins + xp.clip(xp.astype(xp.floor(scaled), xp.int64), max=n_bins - 1)
        bin_w = per_site(xp.where(valid, w, 0.0), key, n * n_bins)
        bin_mean = per_site(xp.where(valid, w * dh, 0.0), key, n * n_bins) / xp.where(bin_w > 0, bin_w, 1.0)
        fill = xp.where(known & (xp.take(bin_w, key) > 0), xp.take(bin_mean, key), site_mean)
    filled = ~valid & ~xp.isnan(fill)
    value = xp.where(valid, dh, xp.where(filled, fill, 0.0))
    used = valid | filled
    cut, dep = used & (value < -threshold), used & (value > threshold)
    excavated = per_site(xp.where(cut, -w * value, 0.0))
    deposited = per_site(xp.where(dep, w * value, 0.0))
    known_site = xp.where(has, 1.0, xp.nan)
    result = {
        "excavated_m3": excavated * known_site, "deposited_m3": deposited * known_site,
        "net_m3": (deposited - excavated) * known_site,
        "excavated_area_m2": per_site(xp.where(cut, w, 0.0)) * known_site,
        "deposited_area_m2": per_site(xp.where(dep, w, 0.0)) * known_site,
        "area_m2": area, "void_fraction": xp.where(has, void_area / xp.where(has, area, 1.0), 1.0),
        "filled_area_m2": per_site(xp.where(filled, w, 0.0)), "mean_dh": mean,
    }
    return CutFill(**{name: _to_host(value) for name, value in result.items()})


def _to_host(arr) -> np.ndarray:
    """A float64 numpy copy of a numpy or CuPy array (CuPy refuses implicit conversion)."""
    return np.asarray(arr.get() if hasattr(arr, "get") else arr, dtype=np.float64)


def cut_fill(early: np.ndarray, late: np.ndarray, coverage: Coverage, threshold: float, cell_area: float,
             void_policy: str = "none", n_bins: int = 10) -> CutFill:
    """Per-site cut and fill on the CPU: one fused numba pass over each site's window.

    Parameters
    ----------
    early, late : numpy.ndarray
        2-D float32 or float64 rasters on the coverage's grid (C-contiguous ones, memory maps included, are
        read in place; strided ones are copied to C order first); NaN marks voids.
    coverage : Coverage
        Site coverage on the rasters' grid.
    threshold : float
        Change threshold ``t >= 0`` (m): cut where ``dh < -t``, fill where ``dh > t``.
    cell_area : float
        Area of one grid cell (m^2).
    void_policy : {"none", "local-mean", "hypsometric"}
        How void cells are filled (see the module docstring).
    n_bins : int
        Number of early-elevation bins of the hypsometric policy.

    Returns
    -------
    CutFill
        One value per site.

    Notes
    -----
    Single-threaded and GIL-free: calls from several Python threads run in parallel.
    """
    policy = _check(early, late, coverage, threshold, cell_area, void_policy, n_bins)
    # one memory layout, so one compiled specialisation: numba would otherwise run a C-contiguous window through a
    # strided ('A') specialisation compiled earlier in the process, whose vectorised sums add in another order, and
    # the last bits of a result would depend on what the process computed before
    early, late = np.ascontiguousarray(early), np.ascontiguousarray(late)
    stats = _cut_fill_sums(early, late, coverage.row0, coverage.col0, coverage.height, coverage.width,
                           coverage.offsets, coverage.fractions, float(threshold), policy, int(n_bins))
    return _finish(stats, threshold, cell_area, policy)


@register_jitable
def _elevation_bin(e, lo, span, n_bins):
    """Bin of early elevation ``e`` among ``n_bins`` equal bins of ``[lo, lo + span]`` (CPU and CUDA)."""
    if span > 0.0:
        b = int((e - lo) / span * n_bins)
        return b if b < n_bins else n_bins - 1
    return 0


# Window rows prefetched ahead of the one being summed: the hardware prefetchers do not follow a window from one
# raster row to the next (a new page each time), and waiting for every row's first cache lines halves the speed.
_PREFETCH_ROWS = 4
_CACHE_LINE = 64
# fastmath flags of the fused pass: reassociation lets LLVM vectorise its float64 sums (the order of additions
# changes, nothing else); no flag assumes the absence of NaN or infinity.
_FAST_SUMS = {"reassoc", "nsz", "contract"}


@intrinsic
def _prefetch(typingctx, array, row, col):
    """Hint the CPU to fetch ``array[row, col]``'s cache line (``llvm.prefetch``: read, keep, data cache)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, value, ty, types.intp) for value, ty in zip(args[1:], signature.args[1:])]
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, index, wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, row, col), codegen


@numba.njit(cache=True, nogil=True)
def _prefetch_row(early, late, row, col0, width):
    step = _CACHE_LINE // max(early.itemsize, late.itemsize)
    for c in range(col0, col0 + width, step):
        _prefetch(early, row, c)
        _prefetch(late, row, c)
    _prefetch(early, row, col0 + width - 1)
    _prefetch(late, row, col0 + width - 1)


@numba.njit(cache=True, nogil=True, fastmath=_FAST_SUMS)
def _row_sums(early, late, row, col0, fractions, start, width, threshold, sums):
    """Add one window row to the fused sums; branch-free (selects and 0/1 masks) so that it vectorises.

    Unsigned indices spare numba's negative-index wraparound, which would stop the vectoriser.
    """
    area, valid, sum_dh, exc, exc_area, dep, dep_area, void = sums
    r, c0, o = np.uint64(row), np.uint64(col0), np.uint64(start)
    for j in range(np.uint64(width)):
        f = fractions[o + j]
        dh = np.float64(late[r, c0 + j]) - np.float64(early[r, c0 + j])
        ok = np.abs(dh) < np.inf
        d = dh if ok else 0.0
        fv = f if ok else 0.0
        area += f
        valid += fv
        void += f - fv
        sum_dh += fv * d
        cut = fv if d < -threshold else 0.0
        exc -= cut * d
        exc_area += cut
        fill = fv if d > threshold else 0.0
        dep += fill * d
        dep_area += fill
    return area, valid, sum_dh, exc, exc_area, dep, dep_area, void


@numba.njit(cache=True, nogil=True, fastmath=_FAST_SUMS)
def _row_range(early, row, col0, fractions, start, width, lo, hi):
    """Smallest and largest finite early elevation of the covered cells of one window row, with ``lo``, ``hi``."""
    r, c0, o = np.uint64(row), np.uint64(col0), np.uint64(start)
    for j in range(np.uint64(width)):
        e = np.float64(early[r, c0 + j])
        known = (fractions[o + j] > 0.0) & (np.abs(e) < np.inf)
        lo = min(lo, e if known else np.inf)
        hi = max(hi, e if known else -np.inf)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _cut_fill_sums(early, late, row0, col0, height, width, offsets, fractions, threshold, policy, n_bins):
    n = row0.size
    stats = np.zeros((n, _N_STATS))
    bins = np.empty((3, n_bins + 1))  # per bin: sum of cov * dh, valid cov, void cov (last: early not finite)
    for k in range(n):
        r0, c0, h, w, o = row0[k], col0[k], height[k], width[k], offsets[k]
        sums = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        lo, hi = np.inf, -np.inf
        for i in range(h):
            if i + _PREFETCH_ROWS < h:
                _prefetch_row(early, late, r0 + i + _PREFETCH_ROWS, c0, w)
            elif k + 1 < n and i + _PREFETCH_ROWS - h < height[k + 1]:  # the next site's first rows
                _prefetch_row(early, late, row0[k + 1] + i + _PREFETCH_ROWS - h, col0[k + 1], width[k + 1])
            sums = _row_sums(early, late, r0 + i, c0, fractions, o + i * w, w, threshold, sums)
            if policy == _HYPSOMETRIC:
                lo, hi = _row_range(early, r0 + i, c0, fractions, o + i * w, w, lo, hi)
        area, valid, sum_dh, exc, exc_area, dep, dep_area, void = sums
        mean_fill = void if policy == _LOCAL_MEAN else 0.0
        if policy == _HYPSOMETRIC and void > 0.0 and valid > 0.0:
            # Second pass: per-bin sums, once the site's elevation range is known.
            bins[:] = 0.0
            for i in range(h):
                for j in range(w):
                    f = fractions[o + i * w + j]
                    if f > 0.0:
                        e = np.float64(early[r0 + i, c0 + j])
                        dh = np.float64(late[r0 + i, c0 + j]) - e
                        b = _elevation_bin(e, lo, hi - lo, n_bins) if np.abs(e) < np.inf else n_bins
                        if np.abs(dh) < np.inf:
                            bins[0, b] += f * dh
                            bins[1, b] += f
                        else:
                            bins[2, b] += f
            mean_fill = bins[2, n_bins]
            for b in range(n_bins):
                if bins[2, b] > 0.0:
                    if bins[1, b] > 0.0:
                        fill = bins[0, b] / bins[1, b]
                        if fill < -threshold:
                            exc -= bins[2, b] * fill
                            exc_area += bins[2, b]
                        elif fill > threshold:
                            dep += bins[2, b] * fill
                            dep_area += bins[2, b]
                    else:
                        mean_fill += bins[2, b]
        s = stats[k]
        s[_AREA], s[_VALID], s[_SUM_DH], s[_VOID], s[_MEAN_FILL] = area, valid, sum_dh, void, mean_fill
        s[_EXC], s[_EXC_AREA], s[_DEP], s[_DEP_AREA] = exc, exc_area, dep, dep_area
    return stats


def coverage_to_device(coverage: Coverage) -> DeviceCoverage:
    """Copy a coverage to the GPU once, for any number of :func:`cut_fill_cuda` calls.

    Parameters
    ----------
    coverage : Coverage

    Returns
    -------
    DeviceCoverage
    """
    arrays = {name: cuda.to_device(getattr(coverage, name))
              for name in ("row0", "col0", "height", "width", "offsets", "fractions")}
    return DeviceCoverage(**arrays, n_rows=coverage.n_rows, n_cols=coverage.n_cols)


def cut_fill_cuda(early, late, coverage: DeviceCoverage, threshold: float, cell_area: float,
                  void_policy: str = "none", n_bins: int = 10, threads_per_block: int = CUDA_MAX_THREADS) -> CutFill:
    """Per-site cut and fill on the GPU, with the arithmetic of :func:`cut_fill`.

    One thread block per site. The block's threads stride over the site's window in row-major order
    (neighbouring threads read neighbouring cells of a window row: coalesced loads) and keep float64 partial
    sums in registers; a shared-memory tree reduction then sums them. Blocks are independent, so the GPU's
    scheduler balances sites of very different sizes. For the hypsometric policy, sites with voids make a
    second pass over their window after the reduction (the elevation range is then known to every thread),
    adding to per-bin sums in shared memory with atomics; thread 0 fills the bins' voids and writes the site's
    sums. Results can differ from :func:`cut_fill` only by the order of floating-point additions (and the
    fused multiply-adds the CUDA compiler makes).

    Parameters
    ----------
    early, late : device array
        2-D float32 or float64 rasters on the GPU (CuPy arrays, numba device arrays or anything with
        ``__cuda_array_interface__``); NaN marks voids.
    coverage : DeviceCoverage
        Site coverage on the rasters' grid (:func:`coverage_to_device`).
    threshold, cell_area, void_policy
        As in :func:`cut_fill`.
    n_bins : int
        Number of early-elevation bins of the hypsometric policy, at most ``CUDA_MAX_BINS``.
    threads_per_block : int
        Threads of each site's block: a power of two, at most ``CUDA_MAX_THREADS``.

    Returns
    -------
    CutFill
        One value per site, as numpy arrays on the host.
    """
    policy = _check(early, late, coverage, threshold, cell_area, void_policy, n_bins)
    if n_bins > CUDA_MAX_BINS:
        raise ValueError(f"n_bins must be at most {CUDA_MAX_BINS} on the GPU; got {n_bins}")
    if not (0 < threads_per_block <= CUDA_MAX_THREADS and threads_per_block & (threads_per_block - 1) == 0):
        raise ValueError(f"threads_per_block must be a power of two <= {CUDA_MAX_THREADS}; got {threads_per_block}")
    n = len(coverage)
    stats = cuda.device_array((n, _N_STATS), dtype=np.float64)
    if n:
        _cuda_kernel[n, threads_per_block](early, late, coverage.row0, coverage.col0, coverage.height,
                                           coverage.width, coverage.offsets, coverage.fractions,
                                           float(threshold), policy, int(n_bins), stats)
    return _finish(stats.copy_to_host(), threshold, cell_area, policy)


@cuda.jit
def _cuda_kernel(early, late, row0, col0, height, width, offsets, fractions, threshold, policy, n_bins, stats):
    """:func:`_cut_fill_sums` with one thread block per site (block ``k``: site ``k``)."""
    k = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    part = cuda.shared.array((10, CUDA_MAX_THREADS), numba.float64)  # the 8 sums of _cut_fill_sums, lo, hi
    bins = cuda.shared.array((3, _CUDA_BIN_SLOTS), numba.float64)
    r0, c0, w, o = row0[k], col0[k], width[k], offsets[k]
    n = height[k] * w
    # Thread t visits cells t, t + nt, ... of the window: (row, column) stepped by (dr, dc), as integer division
    # is slow on GPUs.
    dr, dc = (nt // w, nt % w) if n > 0 else (0, 0)
    area = valid = sum_dh = exc = exc_area = dep = dep_area = void = 0.0
    lo, hi = np.inf, -np.inf
    i, r, c = t, t // w if n > 0 else 0, t % w if n > 0 else 0
    while i < n:
        f = fractions[o + i]
        if f > 0.0:
            e = np.float64(early[r0 + r, c0 + c])
            dh = np.float64(late[r0 + r, c0 + c]) - e
            area += f
            if abs(dh) < np.inf:
                valid += f
                sum_dh += f * dh
                if dh < -threshold:
                    exc -= f * dh
                    exc_area += f
                elif dh > threshold:
                    dep += f * dh
                    dep_area += f
            else:
                void += f
            if policy == _HYPSOMETRIC and abs(e) < np.inf:  # numba's generic min/max fail in CUDA device code
                lo = e if e < lo else lo
                hi = e if e > hi else hi
        i, r, c = i + nt, r + dr, c + dc
        if c >= w:
            r, c = r + 1, c - w
    part[0, t], part[1, t], part[2, t], part[3, t], part[4, t] = area, valid, sum_dh, exc, exc_area
    part[5, t], part[6, t], part[7, t], part[8, t], part[9, t] = dep, dep_area, void, lo, hi
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            for q in range(8):
                part[q, t] += part[q, t + s]
            if part[8, t + s] < part[8, t]:
                part[8, t] = part[8, t + s]
            if part[9, t + s] > part[9, t]:
                part[9, t] = part[9, t + s]
        cuda.syncthreads()
        s //= 2
    hypsometric = policy == _HYPSOMETRIC and part[7, 0] > 0.0 and part[1, 0] > 0.0  # the same in all threads
    if hypsometric:
        lo, span = part[8, 0], part[9, 0] - part[8, 0]
        b = t
        while b <= n_bins:
            bins[0, b] = bins[1, b] = bins[2, b] = 0.0
            b += nt
        cuda.syncthreads()
        i, r, c = t, t // w, t % w
        while i < n:
            f = fractions[o + i]
            if f > 0.0:
                e = np.float64(early[r0 + r, c0 + c])
                dh = np.float64(late[r0 + r, c0 + c]) - e
                b = _elevation_bin(e, lo, span, n_bins) if abs(e) < np.inf else n_bins
                if abs(dh) < np.inf:
                    cuda.atomic.add(bins, (0, b), f * dh)
                    cuda.atomic.add(bins, (1, b), f)
                else:
                    cuda.atomic.add(bins, (2, b), f)
            i, r, c = i + nt, r + dr, c + dc
            if c >= w:
                r, c = r + 1, c - w
        cuda.syncthreads()
    if t == 0:
        exc, exc_area, dep, dep_area = part[3, 0], part[4, 0], part[5, 0], part[6, 0]
        mean_fill = part[7, 0] if policy == _LOCAL_MEAN else 0.0
        if hypsometric:
            mean_fill = bins[2, n_bins]
            for b in range(n_bins):
                if bins[2, b] > 0.0:
                    if bins[1, b] > 0.0:
                        fill = bins[0, b] / bins[1, b]
                        if fill < -threshold:
                            exc -= bins[2, b] * fill
                            exc_area += bins[2, b]
                        elif fill > threshold:
                            dep += bins[2, b] * fill
                            dep_area += bins[2, b]
                    else:
                        mean_fill += bins[2, b]
        stats[k, _AREA], stats[k, _VALID], stats[k, _SUM_DH] = part[0, 0], part[1, 0], part[2, 0]
        stats[k, _EXC], stats[k, _EXC_AREA], stats[k, _DEP], stats[k, _DEP_AREA] = exc, exc_area, dep, dep_area
        stats[k, _VOID], stats[k, _MEAN_FILL] = part[7, 0], mean_fill
