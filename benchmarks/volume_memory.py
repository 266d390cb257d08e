"""Time and peak memory of `mtg volume` on a DEM pair held in chunked Zarr, against the same volumes in memory.

Usage::

    python benchmarks/volume_memory.py                          # 20000 x 20000 epochs, 10,000 sites
    python benchmarks/volume_memory.py --size 8000 --sites 2000 # a quick check

Data: the epochs and sites of ``volume_throughput.py`` (smooth terrain and dh, 1 % voids, star-shaped sites of
50-2000 m) written once as one Zarr cube ``elevation (time, y, x)`` in ``--chunk`` x ``--chunk`` float32 blocks,
and the sites as GeoParquet, under ``--workdir`` (reused by a later run with the same parameters). Each row runs
in a fresh process (peak RSS from ``VmHWM``, imports included), threshold 0.5 m, void policy "none":

1. read only: both epochs read from the Zarr cube into numpy, nothing computed (the floor of any whole-raster
   tool, and the peer of earlier versions of this table);
2. in memory: both epochs read into numpy as in row 1, then :func:`mtg.pipeline.volume.volumes` on the two
   numpy-backed DataArrays and :func:`mtg.pipeline.io.write_volumes` (the same outputs as row 3);
3. chunked: :func:`mtg.pipeline.volume.measure_volumes` from ``cube.zarr#0`` and ``#1`` (co-registration on the
   calibration window, per-site sums over site-group windows, waste deposits, dh streamed into ``dh.zarr``).

Rows 2 and 3 must give equal results: the script checks that ``dh.zarr`` is bit-identical and prints the largest
relative difference of any per-site and per-deposit number (``|a - b| / max(|a|, |b|)``, or over 1e-6 of the
column's largest magnitude where that is larger). The table gives
seconds, peak RSS, the ratio of each peak to the pair's size, and each row's seconds over row 2's.
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

from volume_throughput import CRS, THRESHOLD, grid, random_sites, synthetic_epochs


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
    if kind == "mtg":
        from mtg.pipeline.volume import measure_volumes

        measure_volumes(f"{cube}#0", f"{cube}#1", sites, out, threshold_m=THRESHOLD, void_policy="none")
    else:
        import rioxarray  # noqa: F401 - the .rio accessor
        import xarray as xr

        epochs = xr.open_zarr(cube, decode_coords="all", consolidated=True)["elevation"].load()
        assert epochs.dtype == np.float32
        if kind == "memory":
            from mtg.pipeline.io import read_sites, write_volumes
            from mtg.pipeline.volume import volumes

            result = volumes(epochs.isel(time=0), epochs.isel(time=1), read_sites(sites), threshold_m=THRESHOLD,
                             void_policy="none")
            write_volumes(result, out)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": _peak_mib()}))


def _largest_difference(a, b) -> float:
    """Largest ``|a - b| / max(|a|, |b|)`` over the numeric columns of two tables of the same rows (NaN = NaN)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    worst = 0.0
    for column in a.columns:
        if not is_numeric_dtype(a[column]) or is_bool_dtype(a[column]):
            assert a[column].equals(b[column]), column
            continue
        x, y = a[column].to_numpy(np.float64), b[column].to_numpy(np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), column
        # relative to the larger value, or to 1e-6 of the column's largest (a void fraction of 0 comes out as
        # float64 rounding noise of 1e-19 whose relative differences mean nothing)
        scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-6 * np.nanmax(np.abs(x), initial=0.0))
        ok = ~np.isnan(x) & (scale > 0)
        worst = max(worst, float((np.abs(x - y)[ok] / scale[ok]).max(initial=0.0)))
    return worst


def compare(memory: Path, chunked: Path) -> tuple[bool, float]:
    """Whether the two runs' ``dh.zarr`` are bit-identical, and the largest relative difference of their tables."""
    import geopandas as gpd
    import zarr

    a, b = (zarr.open_group(p / "dh.zarr", mode="r")["dh"] for p in (memory, chunked))
    band = a.chunks[0]
    same_dh = a.shape == b.shape and all(np.array_equal(a[r:r + band], b[r:r + band], equal_nan=True)
                                         for r in range(0, a.shape[0], band))
    worst = 0.0
    for name in ("site_volumes.parquet", "waste_deposits.parquet"):
        x, y = (gpd.read_parquet(p / name) for p in (memory, chunked))
        assert len(x) == len(y) and x.geometry.geom_equals(y.geometry).all(), name
        worst = max(worst, _largest_difference(x.drop(columns="geometry"), y.drop(columns="geometry")))
    return same_dh, worst


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
    rows = [("read only: both epochs into numpy", _row("read", cube, sites, args.workdir / "x")),
            ("in memory: epochs in numpy, `volumes` + `write_volumes`",
             _row("memory", cube, sites, args.workdir / "out-memory")),
            ("chunked: `measure_volumes` from Zarr", _row("mtg", cube, sites, args.workdir / "out"))]
    same_dh, worst = compare(args.workdir / "out-memory", args.workdir / "out")
    memory_seconds = rows[1][1]["seconds"]
    print(f"\n| path ({args.size} x {args.size} pair = {pair_mib:,.0f} MiB, {args.sites:,} sites) | seconds | "
          "seconds / in memory | peak RSS (MiB) | peak / pair |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / memory_seconds:.2f} | {r['peak_mib']:,.0f} | "
              f"{r['peak_mib'] / pair_mib:.2f} |")
    print(f"\nin memory vs chunked: dh.zarr {'bit-identical' if same_dh else 'DIFFERENT'}; largest relative "
          f"difference of the site and deposit tables {worst:.1e}")


if __name__ == "__main__":
    main()
