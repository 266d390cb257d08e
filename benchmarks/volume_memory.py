"""Peak memory of `mtg volume` on a DEM pair held in chunked Zarr, against reading the pair into memory.

Usage::

    python benchmarks/volume_memory.py                          # 20000 x 20000 epochs, 10,000 sites
    python benchmarks/volume_memory.py --size 8000 --sites 2000 # a quick check

Data: the epochs and sites of ``volume_throughput.py`` (smooth terrain and dh, 1 % voids, star-shaped sites of
50-2000 m) written once as one Zarr cube ``elevation (time, y, x)`` in ``--chunk`` x ``--chunk`` float32 blocks,
and the sites as GeoParquet, under ``--workdir`` (reused by a later run with the same parameters). Each row runs in a fresh process (peak RSS from ``VmHWM``):

1. the in-memory peer: both epochs read from the Zarr cube into numpy (what any whole-raster tool needs first);
2. mtg: :func:`mtg.pipeline.volume.measure_volumes` from ``cube.zarr#0`` and ``#1`` (co-registration on the
   calibration window, dh streamed into ``dh.zarr``, per-site sums over site-group windows, waste deposits).

The table gives seconds, peak RSS and the ratio of each peak to the pair's size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from volume_throughput import CRS, grid, random_sites, synthetic_epochs


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_inputs(workdir: Path, size: int, n_sites: int, chunk: int) -> tuple[Path, Path]:
    """Write the benchmark's DEM pair (one Zarr cube) and sites (GeoParquet) under ``workdir``."""
    import geopandas as gpd
    import pandas as pd
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    cube, sites, marker = workdir / "dem.zarr", workdir / "sites.parquet", workdir / "inputs.json"
    params = {"size": size, "sites": n_sites, "chunk": chunk}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return cube, sites
    marker.unlink(missing_ok=True)
    shutil.rmtree(cube, ignore_errors=True)
    early, late = synthetic_epochs(size)
    t = grid()
    x = t.c + t.a * (np.arange(size) + 0.5)
    y = t.f + t.e * (np.arange(size) + 0.5)
    for k, epoch in enumerate((early, late)):
        da = xr.DataArray(epoch[None], dims=("time", "y", "x"), name="elevation",
                          coords={"time": pd.to_datetime([("2015-01-01", "2020-01-01")[k]]), "y": y, "x": x})
        ds = da.rio.write_crs(CRS).to_dataset().chunk({"time": 1, "y": chunk, "x": chunk})
        if k == 0:
            ds.to_zarr(cube, mode="w", consolidated=True, zarr_format=3)
        else:
            ds.to_zarr(cube, append_dim="time", consolidated=True, zarr_format=3)
    del early, late
    gpd.GeoDataFrame({"site_id": [f"s{k}" for k in range(n_sites)]}, geometry=random_sites(size, n_sites),
                     crs=CRS).to_parquet(sites)
    marker.write_text(json.dumps(params))
    return cube, sites


def _measure(kind: str, cube: str, sites: str, out: str) -> None:
    """One row, in this (fresh) process: print seconds and peak RSS as JSON."""
    start = time.perf_counter()
    if kind == "numpy":
        import xarray as xr

        values = xr.open_zarr(cube, consolidated=True)["elevation"].values
        assert values.dtype == np.float32
    else:
        from mtg.pipeline.volume import measure_volumes

        measure_volumes(f"{cube}#0", f"{cube}#1", sites, out, threshold_m=0.5, void_policy="none")
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": _peak_mib()}))


def _row(kind: str, cube: Path, sites: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", kind, str(cube), str(sites), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mtg-volume-memory"))
    parser.add_argument("--measure", nargs=4, metavar=("KIND", "CUBE", "SITES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(*args.measure)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cube, sites = write_inputs(args.workdir, args.size, args.sites, args.chunk)
    print(f"inputs: a {args.size} x {args.size} float32 pair in {args.chunk}-cell Zarr blocks and {args.sites} sites "
          f"in {time.perf_counter() - start:.0f} s", flush=True)
    pair_mib = 2 * 4 * args.size**2 / 2**20
    rows = [("numpy: both epochs read into memory (peer)", _row("numpy", cube, sites, args.workdir / "x")),
            ("mtg volume from chunked Zarr", _row("mtg", cube, sites, args.workdir / "out"))]
    print(f"\n| path ({args.size} x {args.size} pair = {pair_mib:,.0f} MiB, {args.sites:,} sites) | seconds | "
          "peak RSS (MiB) | peak / pair |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_mib']:,.0f} | {r['peak_mib'] / pair_mib:.2f} |")


if __name__ == "__main__":
    main()
