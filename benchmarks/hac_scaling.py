"""Sparse exact HAC (radius graph + sparse_hac) against scipy's dense linkage on clustered lon/lat points.

Usage: ``python benchmarks/hac_scaling.py [--n 20000] [--h-max 20000] [--methods single average]``

Prints one row per method: wall time and peak traced memory (tracemalloc, measured in a second run so tracing does
not slow the timed one) of the sparse path and of scipy's ``linkage`` + ``fcluster`` on the dense condensed matrix
of the same geodesic distances, and whether the partitions at every cut are equal. The sparse time includes building
the radius graph; building the dense matrix (``n (n - 1) / 2`` geodesic distances) is timed once and reported apart,
and its size is added to scipy's memory.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from pyproj import Geod
from scipy.cluster.hierarchy import fcluster, linkage

from mtg.kernels.hac import sparse_hac
from mtg.kernels.radius_graph import distance_callback, pair_distances, radius_graph


def clustered_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``n / 50`` clusters (8 km spread) over a 10 x 10 degree region."""
    rng = np.random.default_rng(seed)
    k = max(1, n // 50)
    c = rng.integers(0, k, n)
    lon, lat, _ = Geod(ellps="WGS84").fwd(rng.uniform(20, 30, k)[c], rng.uniform(-30, -20, k)[c],
                                          rng.uniform(0, 360, n), np.abs(rng.normal(0, 8000, n)))
    return np.asarray(lon), np.asarray(lat)


def dense_condensed(lon: np.ndarray, lat: np.ndarray, rows_per_block: int = 256) -> np.ndarray:
    """The condensed geodesic distance matrix in scipy's order, built a block of rows at a time."""
    n = lon.size
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for start in range(0, n - 1, rows_per_block):
        i = np.concatenate([np.full(n - r - 1, r) for r in range(start, min(start + rows_per_block, n - 1))])
        j = np.concatenate([np.arange(r + 1, n) for r in range(start, min(start + rows_per_block, n - 1))])
        out[pos : pos + i.size] = pair_distances(lon, lat, i, j)
        pos += i.size
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings are one partition up to relabelling."""
    pairs = np.unique(np.stack([np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def timed(fn, *args):
    """(result, seconds, peak traced bytes): one plain run for the time, one traced run for the memory."""
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--h-max", type=float, default=20_000.0)
    parser.add_argument("--methods", nargs="+", default=["single", "average"])
    args = parser.parse_args()
    lon, lat = clustered_points(args.n)
    cuts = [args.h_max * f for f in (0.05, 0.25, 0.5, 1.0)]
    start = time.perf_counter()
    condensed = dense_condensed(lon, lat)
    print(f"n = {args.n}, h_max = {args.h_max:g} m; dense geodesic matrix: {time.perf_counter() - start:.1f} s, "
          f"{condensed.nbytes / 2**20:.0f} MiB")

    def sparse(method: str):
        i, j, d = radius_graph(lon, lat, args.h_max)
        return sparse_hac(lon.size, i, j, d, args.h_max, method, cuts, distance_callback(lon, lat)), i.size

    def dense(method: str):
        z = linkage(condensed, method)
        return [fcluster(z, cut, criterion="distance") for cut in cuts]

    print(f"{'method':<9}{'edges':>10}{'sparse s':>10}{'sparse MiB':>12}{'scipy s':>9}{'scipy MiB':>11}"
          f"{'fetched':>10}{'ambiguous':>11}{'equal':>7}")
    for method in args.methods:
        (result, edges), s_time, s_peak = timed(sparse, method)
        theirs, d_time, d_peak = timed(dense, method)
        d_peak += condensed.nbytes  # the matrix it needs, built before the traced run
        equal = all(same_partition(ours, t) for ours, t in zip(result.labels, theirs))
        print(f"{method:<9}{edges:>10}{s_time:>10.2f}{s_peak / 2**20:>12.1f}{d_time:>9.2f}{d_peak / 2**20:>11.1f}"
              f"{result.n_exact_distances:>10}{int(result.ambiguous.sum()):>11}{str(equal):>7}")


if __name__ == "__main__":
    main()
