"""Exact sparse HAC (mtg) against dense scipy and fastcluster, and at the peer's published sizes.

Usage::

    python benchmarks/hac_scaling.py                      # every table (about 20 minutes on 2 cores)
    python benchmarks/hac_scaling.py --dense 20000        # only the dense comparison at n = 20,000
    python benchmarks/hac_scaling.py --dense --scale 261000 2000000 --methods single

Points are *mine-like*: districts of about 40 points (log-normal weights) around real mine locations from the
ICMM Global Mining Dataset (``../shared/data/icmm_global_mining_dataset``), each district a Gaussian of 4-15 km
spread, 5 % exact duplicates (features present in two inventories). Their mean number of neighbours within 10 km
(36 at 261,000 points, 53 at 2,000,000) is above that of the real polygon inventories in ``../shared/data``
(7-16), so the graph is denser than real data.

* Dense table (``--dense``): ``n`` mine-like points in one 1.2-degree mining region (all pairs shorter than the
  200 km of the normal-section geodesic, so the dense matrix is quick to build), ``h_max`` = 2 km and cuts 0.5, 1
  and 2 km. mtg's time covers graph and clustering; scipy (``linkage`` + ``fcluster``) and fastcluster
  (``linkage`` + scipy's ``fcluster``) get the condensed geodesic matrix ready-made (its build time and size are
  printed apart). Equal partitions are checked against scipy at every cut.
* Scale table (``--scale``): ``n`` mine-like points worldwide, ``h_max`` = 10 km, cuts 2, 5 and 10 km, mtg only
  (dense HAC cannot hold these sizes), against the targets of issue 3.

Every row runs in a fresh process: seconds exclude data generation and numba's one-off compilation (a warm-up
call on 2,000 points), and "peak MiB" is the rise of the process's peak resident memory during the timed call
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``), so it counts C and numba allocations that
tracemalloc misses; "process MiB" is the whole process's peak.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ICMM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "icmm_global_mining_dataset" / \
    "icmm_global_mining_dataset_external.csv"
DENSE = dict(h_max=2_000.0, cuts=[500.0, 1_000.0, 2_000.0])
SCALE = dict(h_max=10_000.0, cuts=[2_000.0, 5_000.0, 10_000.0])
TARGETS = {261_000: (3.0, 500.0), 2_000_000: (40.0, 3 * 1024.0)}  # single linkage: seconds, MiB


def mine_sites(path: Path = ICMM) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of the ICMM mine points (U+2212 minus signs read as '-')."""
    import pandas as pd

    if not path.exists():
        sys.exit(f"needs the ICMM mine points at {path} (see ../shared/data/README.md)")
    frame = pd.read_csv(path)
    values = [pd.to_numeric(frame[c].astype(str).str.replace("\u2212", "-"), errors="coerce").to_numpy()
              for c in ("Longitude", "Latitude")]
    ok = np.isfinite(values[0]) & np.isfinite(values[1])
    return values[0][ok], values[1][ok]


def mine_like(n: int, seed: int = 0, region_deg: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` mine-like points (module docstring); within a ``region_deg`` square around one mine if given."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    rng = np.random.default_rng(seed)
    s_lon, s_lat = mine_sites()
    k = max(1, n // 40)
    if region_deg is None:  # districts around real mines, jittered more as n grows to keep the density
        pick = rng.integers(0, s_lon.size, k)
        jitter = np.sqrt(rng.uniform(0, 1, k)) * 150_000.0 * np.sqrt(n / 261_000)
        c_lon, c_lat, _ = geod.fwd(s_lon[pick], s_lat[pick], rng.uniform(0, 360, k), jitter)
    else:
        centre = np.array([s_lon[0], s_lat[0]])
        c_lon = centre[0] + rng.uniform(-0.4, 0.4, k) * region_deg
        c_lat = centre[1] + rng.uniform(-0.4, 0.4, k) * region_deg
    weights = rng.lognormal(0.0, 0.5, k)
    c = rng.choice(k, n, p=weights / weights.sum())
    spread = rng.uniform(4_000.0, 15_000.0, k) if region_deg is None else rng.uniform(500.0, 3_000.0, k)
    lon, lat, _ = geod.fwd(np.asarray(c_lon)[c], np.asarray(c_lat)[c], rng.uniform(0, 360, n),
                           np.abs(rng.normal(0, 1, n)) * spread[c])
    lon, lat = np.asarray(lon), np.asarray(lat)
    if region_deg is not None:  # keep the region: clip to the square
        lon = np.clip(lon, centre[0] - region_deg / 2, centre[0] + region_deg / 2)
        lat = np.clip(lat, centre[1] - region_deg / 2, centre[1] + region_deg / 2)
    dup = rng.random(n) < 0.05
    src = rng.integers(0, n, n)
    lon[dup], lat[dup] = lon[src[dup]], lat[src[dup]]
    return lon, lat


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(fn):
    """(result, seconds, rise of peak RSS in MiB, process peak MiB) of ``fn()``."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    return result, seconds, peak - base, peak


def _run_row(kind: str, n: int, method: str, tool: str, out: str) -> None:
    """One table row, in a fresh process; writes its numbers (and labels) under ``out``."""
    from scipy.cluster.hierarchy import fcluster

    from mtg.pipeline.sharded_linking import cluster_points

    params = DENSE if kind == "dense" else SCALE
    lon, lat = mine_like(n, region_deg=1.2 if kind == "dense" else None)
    cuts = params["cuts"]
    row: dict = {"kind": kind, "n": n, "method": method, "tool": tool}
    if tool == "mtg":
        cluster_points(lon[:2000], lat[:2000], params["h_max"], method, cuts)  # compile the kernels
        result, seconds, rise, peak = _measure(lambda: cluster_points(lon, lat, params["h_max"], method, cuts))
        labels = result.labels
        row.update(edges=result.n_edges, fetched=result.n_exact_distances,
                   ambiguous=[c for c, a in zip(cuts, result.ambiguous) if a],
                   components=int(result.component.max()) + 1)
    else:
        from mtg.kernels.geodesic import condensed_distances

        start = time.perf_counter()
        condensed = condensed_distances(lon, lat)
        row["matrix_seconds"] = time.perf_counter() - start
        row["matrix_mib"] = condensed.nbytes / 2**20
        if tool == "scipy":
            from scipy.cluster.hierarchy import linkage
        else:
            from fastcluster import linkage

        def dense():
            z = linkage(condensed, method)
            return np.stack([fcluster(z, c, criterion="distance") for c in cuts])

        labels, seconds, rise, peak = _measure(dense)
        rise += row["matrix_mib"]  # the matrix it needs, built before the timed call
    np.save(Path(out) / f"{kind}-{n}-{method}-{tool}.npy", labels)
    row.update(seconds=seconds, peak_mib=rise, process_mib=peak)
    (Path(out) / f"{kind}-{n}-{method}-{tool}.json").write_text(json.dumps(row))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings are one partition up to relabelling."""
    pairs = np.unique(np.stack([np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def _row(kind: str, n: int, method: str, tool: str, out: Path) -> dict | None:
    proc = mp.get_context("spawn").Process(target=_run_row, args=(kind, n, method, tool, str(out)))
    proc.start()
    proc.join()
    path = out / f"{kind}-{n}-{method}-{tool}.json"
    if proc.exitcode != 0 or not path.exists():
        print(f"  {kind} n={n} {method} {tool}: failed (exit code {proc.exitcode}; out of memory?)", flush=True)
        return None
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=int, nargs="*", help="dense-comparison sizes (default 20000 45000)")
    parser.add_argument("--scale", type=int, nargs="*", help="scale sizes (default 261000 2000000)")
    parser.add_argument("--methods", nargs="+", default=["single", "complete", "average"])
    args = parser.parse_args()
    dense = [20_000, 45_000] if args.dense == [] or (args.dense is None and args.scale is None) else args.dense or []
    scale = [261_000, 2_000_000] if args.scale == [] or (args.dense is None and args.scale is None) else args.scale or []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if dense:
            print(f"Dense comparison: mine-like points in one 1.2-degree region, h_max {DENSE['h_max']:g} m, "
                  f"cuts {DENSE['cuts']} m\n")
            print("| n | method | tool | edges | seconds | peak MiB | x mtg time | equal to scipy |")
            print("|---:|---|---|---:|---:|---:|---:|---|")
            for n in dense:
                for method in args.methods:
                    rows = {tool: _row("dense", n, method, tool, out) for tool in ("mtg", "scipy", "fastcluster")}
                    ref = out / f"dense-{n}-{method}-scipy.npy"
                    for tool, row in rows.items():
                        if row is None:
                            continue
                        mine = rows["mtg"]
                        ratio = f"{row['seconds'] / mine['seconds']:.1f}" if mine else ""
                        equal = (all(same_partition(a, b) for a, b in zip(
                            np.load(out / f"dense-{n}-{method}-{tool}.npy"), np.load(ref))) if ref.exists() else "")
                        edges = f"{row['edges']:,}" if "edges" in row else ""
                        print(f"| {n:,} | {method} | {tool} | {edges} | {row['seconds']:.2f} | "
                              f"{row['peak_mib']:,.0f} | {ratio} | {equal} |", flush=True)
                    matrix = rows.get("scipy") or rows.get("fastcluster")
                    if matrix:
                        print(f"|  | (condensed matrix: {matrix['matrix_mib']:,.0f} MiB, built in "
                              f"{matrix['matrix_seconds']:.1f} s) |  |  |  |  |  |  |", flush=True)
            print()
        if scale:
            print(f"Scale: mine-like points worldwide, h_max {SCALE['h_max']:g} m, cuts {SCALE['cuts']} m\n")
            print("| n | method | edges | components | seconds | peak MiB | process MiB | x single time | "
                  "distances fetched | ambiguous cuts | target (single: s, MiB) |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
            for n in scale:
                single = None
                for method in args.methods:
                    row = _row("scale", n, method, "mtg", out)
                    if row is None:
                        continue
                    single = row if method == "single" else single
                    ratio = f"{row['seconds'] / single['seconds']:.1f}" if single else ""
                    target = TARGETS.get(n)
                    verdict = ""
                    if target and method == "single":
                        ok = row["seconds"] <= target[0] and row["peak_mib"] <= target[1]
                        verdict = f"<= {target[0]:g} s, <= {target[1]:,.0f} MiB: {'met' if ok else 'missed'}"
                    elif target and single:
                        verdict = f"<= 3x single: {'met' if row['seconds'] <= 3 * single['seconds'] else 'missed'}"
                    print(f"| {n:,} | {method} | {row['edges']:,} | {row['components']:,} | {row['seconds']:.2f} | "
                          f"{row['peak_mib']:,.0f} | {row['process_mib']:,.0f} | {ratio} | {row['fetched']:,} | "
                          f"{row['ambiguous'] or 'none'} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
