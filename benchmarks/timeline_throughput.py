"""Seconds per year per km^2 of ``mtg timeline`` against one ``mtg segment`` call per year, on the sample cube.

Both map the same years of the same cube with the shipped model on the threads of this process (2 dask threads):

1. ``mtg timeline`` (:func:`mtg.pipeline.timeline.run_timeline`): every year's composite segmented in one dask
   graph, the yearly probabilities written to ``timeline.zarr``, the per-pixel decoding, the per-site series and
   layers;
2. one ``mtg segment --time YEAR-01-01/YEAR-12-31`` per year (:func:`mtg.pipeline.segment.segment_cube`): each
   year's probability store and polygons, with no series.

Each is timed ``--repeats`` times after one warm-up (model load, page cache); the table gives medians.

Usage: ``python benchmarks/timeline_throughput.py [--size-km 6] [--dates 8] [--workdir DIR] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import dask
from segment_throughput import median_seconds


def _sample_cube(workdir: Path, size_km: float, n_dates: int) -> tuple[str, float]:
    """The sample region ingested as ``mtg run`` does; returns the cube URL and its area (km^2)."""
    from odc.geo.geom import box

    from mtg.pipeline.catalogs import resolve_source
    from mtg.pipeline.config import IngestConfig, SampleConfig
    from mtg.pipeline.run import ensure_sample, run_ingest

    region = ensure_sample(workdir / "sample", SampleConfig(size_km=size_km, n_dates=n_dates), progress=False)
    cfg = IngestConfig(out=str(workdir / "cubes"), time="/".join(region.time_range))
    result = run_ingest(cfg, None, source=resolve_source(str(region.catalog)),
                        aoi=box(*region.bounds, f"EPSG:{region.epsg}"), progress=False)
    left, bottom, right, top = region.bounds
    return result.reflectance_url, (right - left) * (top - bottom) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=6.0)
    parser.add_argument("--dates", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from mtg.pipeline.segment import segment_cube
    from mtg.pipeline.timeline import periods_of, run_timeline
    from mtg.pipeline.zarr_store import open_cube

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mtg-timeline-bench-"))
    cube, km2 = _sample_cube(work, args.size_km, args.dates)
    years = [p.label for p in periods_of(open_cube(cube)["time"].values, "year")]
    with dask.config.set(scheduler="threads", num_workers=2):
        timeline_s = median_seconds(lambda: run_timeline(cube, work / "timeline", progress=False), args.repeats)
        per_year_s = median_seconds(lambda: [segment_cube(cube, work / f"segment-{y}", progress=False,
                                                           time=f"{y}-01-01/{y}-12-31") for y in years],
                                     args.repeats)
    n = len(years)
    print(f"sample cube {args.size_km:g} km x {args.size_km:g} km ({km2:.1f} km^2), {args.dates} dates, "
          f"years {', '.join(years)}; 2 dask threads; medians of {args.repeats} runs after a warm-up\n")
    print("| what | seconds | s / year / km^2 |")
    print("|---|---:|---:|")
    print(f"| mtg timeline (all {n} years, series and layers) | {timeline_s:.1f} | {timeline_s / n / km2:.3f} |")
    print(f"| mtg segment, one call per year ({n} calls) | {per_year_s:.1f} | {per_year_s / n / km2:.3f} |")
    print(f"\ntimeline / per-year segment: {timeline_s / per_year_s:.2f}")


if __name__ == "__main__":
    main()
