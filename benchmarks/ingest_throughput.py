"""Ingest throughput and bounded memory on the embedded sample region.

Prints one table, every row measured in this run:

* MB of Zarr written per second with the threaded scheduler and with LocalClusters of 1 and 2 workers;
* the peer: odc-stac ``load`` + ``to_zarr`` of the raw digital numbers (no masking, no harmonisation, no
  resumable regions), on the same threads, to show what masking, harmonisation and resumability cost;
* an ingest on one worker whose memory limit is a quarter (or less) of the cube's size in memory, with the
  worker's peak resident memory sampled every 0.2 s.

Usage: ``python benchmarks/ingest_throughput.py [--size-km 20] [--n-dates 16] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import dask
from odc.geo import CRS
from odc.geo.geom import box

from mtg.pipeline.catalogs import resolve_source
from mtg.pipeline.config import DaskConfig, IngestConfig, SampleConfig
from mtg.pipeline.run import ensure_sample, run_ingest
from mtg.pipeline.storage import filesystem


def _peak_rss(client, stop: threading.Event, out: list[int]) -> None:
    import psutil

    while not stop.is_set():
        try:
            rss = client.run(lambda: psutil.Process().memory_info().rss)
            out.append(max(rss.values()))
        except Exception:  # the cluster is shutting down
            return
        time.sleep(0.2)


def _ingest(region, out: Path, scheduler: str, workers: int | None = None, memory_limit: str | None = None,
            sample_memory: bool = False) -> dict:
    source = resolve_source(str(region.catalog))
    cfg = IngestConfig(out=str(out), time="/".join(region.time_range))
    aoi = box(*region.bounds, f"EPSG:{region.epsg}")
    if not sample_memory:
        result = run_ingest(cfg, DaskConfig(scheduler=scheduler, workers=workers, memory_limit=memory_limit),
                            source=source, aoi=aoi, progress=False)
        return {"mb": result.bytes_written / 1e6, "s": result.seconds, "peak": None}
    from mtg.pipeline.dask_cluster import dask_scheduler

    with dask_scheduler("local", workers, memory_limit) as client:
        peaks: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_peak_rss, args=(client, stop, peaks), daemon=True)
        sampler.start()
        result = run_ingest(cfg, DaskConfig(scheduler=client.scheduler.address), source=source, aoi=aoi,
                            progress=False)
        stop.set()
        sampler.join()
    return {"mb": result.bytes_written / 1e6, "s": result.seconds, "peak": max(peaks) if peaks else None}


def _peer(region, out: Path) -> dict:
    """odc-stac load of the raw digital numbers straight to Zarr, on threads."""
    import odc.stac
    import pystac

    from mtg.pipeline.grid import common_grids

    cat = pystac.Catalog.from_file(str(region.catalog))
    coll = next(c for c in cat.get_all_collections() if c.id == "sentinel-2-l2a")
    items = list(coll.get_items(recursive=True))
    grid, _ = common_grids(box(*region.bounds, f"EPSG:{region.epsg}"), CRS(f"EPSG:{region.epsg}"), 10, 30)
    bands = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    start = time.perf_counter()
    ds = odc.stac.load(items, bands=bands, geobox=grid, chunks={"time": 1, "y": 512, "x": 512},
                       groupby="solar_day", resampling="bilinear")
    ds = ds.chunk({"time": 8, "y": 512, "x": 512})
    with dask.config.set(scheduler="threads"):
        ds.to_zarr(out / "peer.zarr", mode="w", consolidated=True, zarr_format=3)
    seconds = time.perf_counter() - start
    fs, path = filesystem(str(out / "peer.zarr"), {})
    return {"mb": fs.du(path) / 1e6, "s": seconds, "peak": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=20.0)
    parser.add_argument("--n-dates", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mtg-bench-"))
    region = ensure_sample(work / "sample", SampleConfig(size_km=args.size_km, n_dates=args.n_dates), progress=False)
    side = round((region.bounds[2] - region.bounds[0]) / 10)
    cube_bytes = side * side * 10 * len(_dates(region)) * 4  # float32 reflectance in memory
    limit = cube_bytes // 4
    limit_text = f"{limit // 2**20}MiB"

    rows = []
    runs = [
        ("odc-stac load + to_zarr, threads (peer)", lambda out: _peer(region, out)),
        ("mtg ingest, threads (2 cores)", lambda out: _ingest(region, out, "threads")),
        ("mtg ingest, LocalCluster 1 worker", lambda out: _ingest(region, out, "local", 1, "4GiB")),
        ("mtg ingest, LocalCluster 2 workers", lambda out: _ingest(region, out, "local", 2, "4GiB")),
        (f"mtg ingest, 1 worker limited to {limit_text}",
         lambda out: _ingest(region, out, "local", 1, limit_text, sample_memory=True)),
    ]
    for name, fn in runs:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        rows.append((name, fn(out)))
    peer = rows[0][1]
    peer_rate = peer["mb"] / peer["s"]
    print(f"\nsample region {args.size_km:g} km, {len(_dates(region))} dates; reflectance cube in memory "
          f"{cube_bytes / 2**30:.2f} GiB (float32), worker limit for the bounded run {limit_text} "
          f"(cube / limit = {cube_bytes / limit:.1f})\n")
    print("| run | MB written | seconds | MB/s | MB/s vs peer | peak worker RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        rate = r["mb"] / r["s"]
        peak = f"{r['peak'] / 2**20:.0f} MiB" if r["peak"] else ""
        print(f"| {name} | {r['mb']:.0f} | {r['s']:.1f} | {rate:.1f} | {rate / peer_rate:.2f} | {peak} |")


def _dates(region) -> list:
    import pystac

    cat = pystac.Catalog.from_file(str(region.catalog))
    coll = next(c for c in cat.get_all_collections() if c.id == "sentinel-2-l2a")
    return list(coll.get_items(recursive=True))


if __name__ == "__main__":
    main()
