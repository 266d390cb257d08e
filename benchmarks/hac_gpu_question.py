"""Does a GPU help the exact HAC? Where the time of a clustering call, and of a real ``mtg link``, goes (issue 16).

Usage::

    python benchmarks/hac_gpu_question.py                                   # every table (12-16 minutes on 2 shared cores)
    python benchmarks/hac_gpu_question.py --sizes 261000 --methods single --no-link   # one row
    python benchmarks/hac_gpu_question.py --link                            # only the real mtg link

The question is answered with CPU measurements and Amdahl's law, not a GPU run: the part a GPU could take over
(CuPy, all pairs within a tile are data-parallel) is timed apart from the rest, and the whole call can never be
faster than ``total / (total - that part)``, however fast the GPU.

* Clustering (:func:`mtg.pipeline.sharded_linking.cluster_points`, what ``mtg link --points`` runs): ``n`` mine-like
  points (:func:`hac_scaling.mine_like`: districts around real ICMM mines), ``h_max`` 10 km, cuts 2, 5 and 10 km.
  The call's own functions are wrapped with timers (the code that runs is the code ``mtg link`` runs) and their
  time is sorted into

  (a) the radius graph: unit vectors, spatial tiles, tile edges (k-d tree candidate pairs + geodesics): the part a
      GPU could do;
  (a') average linkage only: the exact distances the engine fetches for missing pairs (geodesics, data-parallel,
      but asked for by the sequential engine in batches of ``FETCH_BATCH`` pairs, so each batch would be a round
      trip to the GPU);
  (b) the sequential engine: Boruvka per tile and Kruskal (single), the priority-queue engine less its fetches
      (average), union-find connected components and cut labels;
  (c) everything else in the call: sorting and checking the edges, splitting per component and shard, linkage
      matrices, assembly (the call's total less the timed parts).

  Each row runs in a fresh process (``spawn``), after a warm-up call on 2,000 points (numba compilation); the
  seconds are medians of ``--repeats`` calls, phase by phase, and "total" is the sum of those medians (the
  measured totals of the calls are listed beside it). The edge list's bytes (int64 ``i``, ``j``, float64 ``d`` as
  ``tile_edges`` returns them) are what would cross PCIe from the GPU back to the host; the points (2 float64) go
  up. Their transfer time is computed at an *assumed* rate (``--pcie-gbps``, default 64 GB/s: the nominal one-way
  rate of PCIe Gen5 x16 of an H100 PCIe card; real rates are lower, ~50 GB/s from pinned memory and far less
  from pageable memory), not measured.
* Real ``mtg link`` (``--link``): the sites-mode call of ``tests/test_link.py`` (the 100 Maus/Tang polygons of
  ``maus_tang_combined_demo``, their first 10 again as EPSG:3857 GeoParquet, the 8,508 ICMM points, the
  commodity table, ``--h-max 5km``), i.e. :func:`mtg.pipeline.link.link_sites` as the CLI calls it, with its
  phases timed: file reading, feature table, polygon atoms, the geometry radius graph (a), HAC, site assembly,
  writing. Medians of ``--repeats`` calls after one warm-up call, total as above.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared" / "data"
H_MAX = 10_000.0
CUTS = [2_000.0, 5_000.0, 10_000.0]

# Clustering phases: label -> class (a: GPU-able graph, f: fetches of missing distances, b: sequential engine).
CLUSTER_PHASES = {
    "unit vectors": "a",
    "spatial tiles (median splits, halos)": "a",
    "tile edges (k-d tree pairs + geodesics)": "a",
    "exact-distance fetches (callback)": "f",
    "Boruvka forest per tile": "b",
    "Kruskal on the forests (single)": "b",
    "priority-queue engine less fetches (average)": "b",
    "connected components (union-find)": "b",
    "cut labels (union-find)": "b",
    "edge check and sort (_check_edges)": "c",
    "linkage matrices (_linkages)": "c",
    "split edges per shard": "c",
    "assembly of shards": "c",
}
CLASS_NAMES = {"a": "(a) radius graph: GPU-able", "f": "(a') exact-distance fetches from the engine",
               "b": "(b) sequential engine", "c": "(c) other (sorts, lists, assembly)"}


class Clock:
    """Wraps module functions with timers that add up seconds per label (inclusive of what they call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, fn, label: str):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
        return wrapper

    def wrap(self, owner, name: str, label: str) -> None:
        setattr(owner, name, self.timed(getattr(owner, name), label))


def _instrument_clustering(clock: Clock) -> None:
    from mtg.kernels import hac
    from mtg.pipeline import sharded_linking as sl

    clock.wrap(sl, "unit_vectors", "unit vectors")
    clock.wrap(sl, "spatial_tiles", "spatial tiles (median splits, halos)")
    clock.wrap(sl, "_graph_task", "tile edges (k-d tree pairs + geodesics)")
    clock.wrap(sl, "minimum_spanning_forest", "Boruvka forest per tile")
    clock.wrap(sl, "connected_components", "connected components (union-find)")
    clock.wrap(sl, "_split_task", "split edges per shard")
    clock.wrap(sl, "_assemble", "assembly of shards")
    clock.wrap(hac, "single_linkage_rows", "Kruskal on the forests (single)")
    clock.wrap(hac, "heap_linkage", "heap_linkage (inclusive)")
    clock.wrap(hac, "connected_components", "connected components (union-find)")
    clock.wrap(hac, "cut_roots", "cut labels (union-find)")
    clock.wrap(hac, "_check_edges", "edge check and sort (_check_edges)")
    clock.wrap(hac, "_linkages", "linkage matrices (_linkages)")
    make_callback = sl.distance_callback

    def distance_callback(lon, lat):
        return clock.timed(make_callback(lon, lat), "exact-distance fetches (callback)")

    sl.distance_callback = distance_callback


def _medians(runs: list[dict]) -> dict:
    """Median seconds of each phase over the runs; ``total`` is their sum, so the shares add up to 100 %."""
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "total"}
    row["total"] = sum(row.values())
    return row


def _run_cluster_row(n: int, method: str, repeats: int, out: str) -> None:
    """One (n, method) row in a fresh process; writes its medians as JSON under ``out``."""
    sys.path.insert(0, str(HERE))
    from hac_scaling import mine_like

    from mtg.pipeline import sharded_linking as sl

    lon, lat = mine_like(n)
    sl.cluster_points(lon[:2000], lat[:2000], H_MAX, method, CUTS)  # numba warm-up (cached compilation)
    clock = Clock()
    _instrument_clustering(clock)
    runs = []
    for _ in range(repeats):
        clock.seconds.clear()
        start = time.perf_counter()
        result = sl.cluster_points(lon, lat, H_MAX, method, CUTS)
        total = time.perf_counter() - start
        s = dict(clock.seconds)
        s["priority-queue engine less fetches (average)"] = (s.pop("heap_linkage (inclusive)", 0.0)
                                                             - s.get("exact-distance fetches (callback)", 0.0))
        s = {k: s.get(k, 0.0) for k in CLUSTER_PHASES}
        timed = sum(s.values())
        s["rest of the call (Python glue, concatenation, labels)"] = total - timed
        s["total"] = total
        runs.append(s)
    row = _medians(runs)
    row["all runs total"] = [r["total"] for r in runs]
    # the edge list that would come back from a GPU graph, and the forests single linkage needs of it
    tiles = sl.spatial_tiles(sl.unit_vectors(lon, lat), sl.chord_radius(H_MAX), sl.TILE_POINTS)
    n_edges = 0
    n_forest = 0
    for t in tiles:
        edges = sl.tile_edges(t, lon[t.points], lat[t.points], H_MAX)
        n_edges += edges[0].size
        if method == "single":
            n_forest += int(sl._forest_task(edges, n)[0][0].size)
        del edges
    assert n_edges == result.n_edges, (n_edges, result.n_edges)
    row.update(n=n, method=method, repeats=repeats, n_edges=n_edges, n_tiles=len(tiles), n_forest=n_forest,
               n_fetched=int(result.n_exact_distances), edge_bytes=24 * n_edges, point_bytes=16 * n)
    (Path(out) / f"{n}-{method}.json").write_text(json.dumps(row))


def _instrument_link(clock: Clock) -> None:
    from mtg.kernels import geometry_graph
    from mtg.pipeline import link, linker
    from mtg.pipeline.io import outputs
    from mtg.pipeline.site_assembly import FootprintAreas

    clock.wrap(link, "read_polygons", "read files (polygons, points, commodity table)")
    clock.wrap(link, "read_points", "read files (polygons, points, commodity table)")
    clock.wrap(link, "load_commodity_table", "read files (polygons, points, commodity table)")
    clock.wrap(link, "_site_features", "feature table (inventories, commodity harmonisation)")
    clock.wrap(link, "polygon_atoms", "polygon atoms (touching/overlapping groups)")
    clock.wrap(geometry_graph, "geometry_radius_graph", "(a) geometry radius graph (k-d tree + nearest-part geodesics)")
    clock.wrap(linker, "sparse_hac", "HAC (sparse_hac)")
    clock.wrap(FootprintAreas, "add_hierarchy", "site assembly (footprint unions, areas, sites table)")
    clock.wrap(link, "assemble_sites", "site assembly (footprint unions, areas, sites table)")
    clock.wrap(outputs, "write_sites", "write sites and members files")


LINK_PHASES = [
    "read files (polygons, points, commodity table)",
    "feature table (inventories, commodity harmonisation)",
    "polygon atoms (touching/overlapping groups)",
    "(a) geometry radius graph (k-d tree + nearest-part geodesics)",
    "HAC (sparse_hac)",
    "site assembly (footprint unions, areas, sites table)",
    "write sites and members files",
]


def _run_link(repeats: int, out: str) -> None:
    """The sites-mode ``mtg link`` of tests/test_link.py, phase by phase, in a fresh process."""
    import geopandas as gpd

    from mtg.pipeline.link import link_sites

    icmm = SHARED / "icmm_global_mining_dataset" / "icmm_global_mining_dataset_external.csv"
    gpkg = SHARED / "maus_tang_combined_demo" / "mining_polygons_combined_demo.gpkg"
    table = SHARED / "maus_commodity_harmonisation" / "harmonisation_all_materials.csv"
    for path in (icmm, gpkg, table):
        if not path.exists():
            sys.exit(f"needs {path} (see ../shared/data/README.md)")
    tmp = Path(out)
    second = tmp / "again.parquet"
    gpd.read_file(gpkg).iloc[:10].to_crs("EPSG:3857").to_parquet(second)

    def call(k: int):
        return link_sites([gpkg, second], icmm, tmp / f"sites{k}.parquet", commodity_table=table, cut=5_000.0,
                          linkage="single", lon_col="Longitude", lat_col="Latitude", levels=[], choose_cut=False,
                          points_filter=[], primary_cols=None, country_col=None)

    result = call(-1)  # warm-up: imports, numba compilation, file-system caches
    clock = Clock()
    _instrument_link(clock)
    runs = []
    for k in range(repeats):
        clock.seconds.clear()
        start = time.perf_counter()
        call(k)
        total = time.perf_counter() - start
        s = {p: clock.seconds.get(p, 0.0) for p in LINK_PHASES}
        s["rest (labels, checks, glue)"] = total - sum(s.values())
        s["total"] = total
        runs.append(s)
    row = _medians(runs)
    row.update(all_totals=[r["total"] for r in runs], n_polygons=result.n_polygons, n_points=result.n_points,
               n_sites=result.n_sites, repeats=repeats)
    (tmp / "link.json").write_text(json.dumps(row))


def _spawn(target, *args) -> bool:
    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    return proc.exitcode == 0


def _bound(total: float, part: float) -> str:
    return f"{total / (total - part):.2f}x" if total > part else "inf"


def _cluster_table(row: dict, gbps: float) -> None:
    total = row["total"]
    print(f"\n### n = {row['n']:,}, {row['method']} linkage: {row['n_edges']:,} edges in {row['n_tiles']} tiles"
          + (f", {row['n_fetched']:,} distances fetched" if row["n_fetched"] else "")
          + f"; total {total:.2f} s (sum of the phases' medians of {row['repeats']} calls; calls took "
          + ", ".join(f"{t:.2f}" for t in row["all runs total"]) + " s)\n")
    print("| phase | class | seconds | share of total |")
    print("|---|---|---:|---:|")
    for label, cls in CLUSTER_PHASES.items():
        if row[label] > 0:
            print(f"| {label} | {cls} | {row[label]:.3f} | {row[label] / total:.1%} |")
    rest = "rest of the call (Python glue, concatenation, labels)"
    print(f"| {rest} | c | {row[rest]:.3f} | {row[rest] / total:.1%} |")
    sums = defaultdict(float)
    for label, cls in CLUSTER_PHASES.items():
        sums[cls] += row[label]
    sums["c"] += row[rest]
    print()
    print("| class | seconds | share of total |")
    print("|---|---:|---:|")
    for cls in ("a", "f", "b", "c"):
        if cls == "f" and not sums["f"]:
            continue
        print(f"| {CLASS_NAMES[cls]} | {sums[cls]:.3f} | {sums[cls] / total:.1%} |")
    down = row["edge_bytes"] / (gbps * 1e9)
    up = row["point_bytes"] / (gbps * 1e9)
    a = sums["a"]
    print(f"\n* edge list: {row['edge_bytes'] / 2**20:,.0f} MiB (24 B per edge) down, points "
          f"{row['point_bytes'] / 2**20:,.1f} MiB up: {1e3 * (down + up):,.0f} ms at an assumed {gbps:g} GB/s"
          + (f"; the tile forests single linkage needs are {row['n_forest']:,} edges "
             f"({24 * row['n_forest'] / 2**20:,.0f} MiB, {1e3 * 24 * row['n_forest'] / (gbps * 1e9):,.1f} ms)"
             if row["method"] == "single" else ""))
    print(f"* Amdahl bound if (a) took zero time: {_bound(total, a)}; if (a) took zero time but the edge list "
          f"crossed PCIe: {total / (total - a + down + up):.2f}x"
          + (f"; if (a) and (a') took zero time: {_bound(total, a + sums['f'])}" if sums["f"] else ""))


def _link_table(row: dict) -> None:
    total = row["total"]
    print(f"\n### Real `mtg link` (sites mode of tests/test_link.py): {row['n_polygons']} polygons, "
          f"{row['n_points']:,} points, cut 5 km, single linkage, {row['n_sites']:,} sites; total {total:.2f} s "
          f"(sum of the phases' medians of {row['repeats']} calls; calls took "
          + ", ".join(f"{t:.2f}" for t in row["all_totals"]) + " s)\n")
    print("| phase | seconds | share of total |")
    print("|---|---:|---:|")
    for label in [*LINK_PHASES, "rest (labels, checks, glue)"]:
        print(f"| {label} | {row[label]:.3f} | {row[label] / total:.1%} |")
    a = row["(a) geometry radius graph (k-d tree + nearest-part geodesics)"]
    both = a + row["HAC (sparse_hac)"]
    print(f"\n* Amdahl bound if (a) took zero time: {_bound(total, a)}; if graph and HAC both took zero time: "
          f"{_bound(total, both)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[261_000, 2_000_000])
    parser.add_argument("--methods", nargs="+", default=["single", "average"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pcie-gbps", type=float, default=64.0, help="assumed host<->GPU rate, GB/s (one way)")
    parser.add_argument("--link", action="store_true", help="only the real mtg link, no clustering rows")
    parser.add_argument("--no-link", action="store_true", help="no real mtg link")
    args = parser.parse_args()
    link = not args.no_link
    if args.link:
        args.sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"Clustering: mine-like points, h_max {H_MAX:g} m, cuts {CUTS} m; classes: a = GPU-able radius graph, "
              f"a' = exact-distance fetches, b = sequential engine, c = other. Transfer at an ASSUMED "
              f"{args.pcie_gbps:g} GB/s (nominal PCIe Gen5 x16 one way; real rates are lower).")
        for n in args.sizes:
            for method in args.methods:
                if not _spawn(_run_cluster_row, n, method, args.repeats, tmp):
                    print(f"\n### n = {n:,}, {method}: failed (out of memory?)", flush=True)
                    continue
                row = json.loads((Path(tmp) / f"{n}-{method}.json").read_text())
                print(f"\n<!-- raw: {json.dumps(row)} -->")
                _cluster_table(row, args.pcie_gbps)
                sys.stdout.flush()
        if link:
            if _spawn(_run_link, args.repeats, tmp):
                row = json.loads((Path(tmp) / "link.json").read_text())
                print(f"\n<!-- raw: {json.dumps(row)} -->")
                _link_table(row)
            else:
                print("\n### real mtg link: failed")


if __name__ == "__main__":
    main()
