"""Per-tile throughput of every stage of a global rerun, with 1 and 2 workers, and the plan against the run.

Writes the sample world (``--districts`` districts of ``--size-km``), plans it (mine points buffered by
``--buffer``, ``--tile-km`` tiles, the shipped calibration) and runs the plan twice with ``mtg run --plan`` in
fresh run folders: on a LocalCluster of 1 worker and of 2 workers, and on 2 workers of separate `dask scheduler` /
`dask worker` processes (1 thread each; each tile is one task on one core). Prints, from the manifests of both runs, one table with the per-core throughput of each stage over all
tiles (ingest: MB of COGs read per second, from the plan's STAC sizes; segmentation: 10 m pixels per second;
volumes: MB of DEM epochs per second), the wall time of the tile phase and of the whole run, the scaling ratio
(1-worker wall time over 2-worker wall time), and the plan's predicted seconds against the measured ones
(``mtg plan --check``: the target is the total within 25 %).

Usage: ``python benchmarks/world_throughput.py [--workdir DIR] [--districts 6] [--size-km 8] [--tile-km 6]``
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mtg.pipeline.plan import check_plan, read_plan
from mtg.pipeline.tiled_run import read_manifest

MTG = str(Path(sys.executable).parent / "mtg")


def _mtg(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([MTG, *args, "--quiet"], check=True, capture_output=True, text=True)
    return time.perf_counter() - start


@contextmanager
def _cluster(name: str, workers: int) -> Iterator[str]:
    """``local`` for a LocalCluster; else a `dask scheduler` and `dask worker` processes (no memory limit)."""
    if name == "LocalCluster":
        yield "local"
        return
    dask = str(Path(sys.executable).parent / "dask")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--nworkers",
                                   str(workers), "--memory-limit", "0", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(8)  # the workers import and register
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mtg-world-bench"))
    parser.add_argument("--districts", type=int, default=6)
    parser.add_argument("--size-km", type=float, default=8.0)
    parser.add_argument("--tile-km", type=float, default=6.0)
    parser.add_argument("--buffer", default="1km")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    world = work / "world"
    _mtg("sample", "--world", str(args.districts), "--size-km", f"{args.size_km:g}", "--out", str(world))
    first, last = json.loads((world / "world.json").read_text())["time_range"]
    plan_path = work / "plan.parquet"
    _mtg("plan", "--catalog", str(world / "catalog.json"), "--aoi", str(world / "truth" / "mine_points.parquet"),
         "--buffer", args.buffer, "--tile-km", f"{args.tile_km:g}", "--time", f"{first}/{last}", "-o", str(plan_path))
    plan, _ = read_plan(plan_path)
    rows, checks = [], []
    for name, workers in (("LocalCluster", 1), ("LocalCluster", 2), ("dask scheduler + dask worker", 2)):
        out = work / f"run-{workers}-{name.split()[0]}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        with _cluster(name, workers) as scheduler:
            wall = _mtg("run", "--plan", str(plan_path), "--out", str(out), "--points",
                        str(world / "truth" / "mine_points.parquet"), "--country-col", "country", "--scheduler",
                        scheduler, "--workers", str(workers))
        manifest, _ = read_manifest(out)
        merged = plan.merge(manifest, on="tile_id")
        table, total = check_plan(plan, manifest)
        world_s = json.loads((out / "world.json").read_text())
        measured_tiles = merged[[f"{s}_s" for s in ("ingest", "segment", "volumes")]].sum(axis=1).sum()
        computed = merged["volumes"] == "computed"
        rows.append({
            "cluster": name, "workers": workers, "tiles": len(merged), "run_s": wall,
            "ingest_mb_s": (merged["bytes_read"] + merged["dem_file_bytes"]).sum() / 1e6 / merged["ingest_s"].sum(),
            "segment_mpx_s": merged["pixels"].sum() / 1e6 / merged["segment_s"].sum(),
            "volumes_mb_s": merged.loc[computed, "dem_bytes"].sum() / 1e6 / merged.loc[computed, "volumes_s"].sum(),
            "tile_core_s": measured_tiles, "footprints": world_s["footprints"], "sites": world_s["sites"]})
        checks.append((f"{name}, {workers} worker(s)", table, total))
    print(f"\nsample world: {args.districts} districts of {args.size_km:g} km, {len(plan)} tiles of "
          f"{args.tile_km:g} km ({int(plan['pixels'].sum()):,} px at 10 m), {platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| cluster | workers | tiles | ingest MB/s per core | segmentation Mpx/s per core | volumes MB/s per core | "
          "tile core-seconds | run wall s | scaling (1-worker wall / this) | footprints | sites |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[0]["run_s"]
    for r in rows:
        print(f"| {r['cluster']} | {r['workers']} | {r['tiles']} | {r['ingest_mb_s']:.2f} | {r['segment_mpx_s']:.3f} | "
              f"{r['volumes_mb_s']:.2f} | {r['tile_core_s']:.1f} | {r['run_s']:.1f} | {base / r['run_s']:.2f} | "
              f"{r['footprints']} | {r['sites']} |")
    for name, table, total in checks:
        print(f"\nplan against the run on {name} ({total['tiles']} tiles):\n")
        print("| stage | predicted s | measured s | measured / predicted |")
        print("|---|---:|---:|---:|")
        for row in table.itertuples():
            print(f"| {row.stage} | {row.predicted_s:.1f} | {row.measured_s:.1f} | {row.ratio:.2f} |")
    pd.DataFrame(rows).to_csv(work / "world_throughput.csv", index=False)


if __name__ == "__main__":
    main()
