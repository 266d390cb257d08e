"""A small run folder laid out as ``mtg run`` writes it, for the report and results-catalog tests.

The sample region (6 km), its sites (linked as ``mtg run`` links them: 1 km, cut chosen per site among 250 m,
500 m and 750 m), their volumes, land use, site indicators and the verification of a few reported figures come
from the real stages. Only the segmentation is stood in for: its probability raster is 0.9 inside the site
polygons and 0.05 elsewhere, and the timeline's yearly probabilities are 0.9 inside the truth's yearly footprints
and 0.05 elsewhere (decoded and tabulated by the timeline's own code).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from rasterio.features import rasterize

from mtg.kernels.temporal import viterbi_mining
from mtg.pipeline.config import SampleConfig, SegmentOptions, TimelineOptions
from mtg.pipeline.dem_epochs import dem_epoch
from mtg.pipeline.indicators import run_indicators
from mtg.pipeline.io import read_sites, write_volumes
from mtg.pipeline.landuse import write_land_use
from mtg.pipeline.link import link_sites
from mtg.pipeline.run import ensure_sample
from mtg.pipeline.verify import write_verification
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.timeline import periods_of, site_timeline, write_site_tables
from mtg.pipeline.volume import volumes


def write_run_folder(run: Path) -> Path:
    """Write the run folder ``run`` (sample, sites, volumes, landuse, timeline, indicators, segment,
    verification)."""
    region = ensure_sample(run / "sample", SampleConfig(seed=0, size_km=6.0, n_dates=6), progress=False)
    sites = link_sites([region.truth / "mine_polygons.parquet"], region.truth / "mine_points.parquet",
                       run / "sites" / "sites.parquet", root=run, cut=1000.0, levels=[250.0, 500.0, 750.0],
                       choose_cut=True)
    # as `mtg run` measures them: DEM epochs named relative to the run folder
    epochs = [dem_epoch(str(p)) for p in sorted(region.root.glob("cop-dem-glo-30/*/*.json"))]
    epochs = [replace(dem, source=portable_path(dem.source, run)) for dem in epochs]
    write_volumes(volumes(*epochs, read_sites(sites.out)), run / "volumes")
    write_probability(gpd.read_parquet(sites.out), run / "volumes" / "dh.zarr", run / "segment" / "probability.zarr")
    write_land_use(sites.out, run / "landuse")
    write_timeline(region.truth / "yearly_footprints.parquet", read_sites(sites.out), run / "volumes" / "dh.zarr",
                   run / "timeline")
    indicators = run_indicators(run)
    reported = reported_figures(gpd.read_parquet(indicators.parquet))
    reported.to_csv(run.parent / "reported.csv", index=False)
    write_verification(run.parent / "reported.csv", indicators.parquet, run / "verification")
    return run


def reported_figures(indicators: gpd.GeoDataFrame) -> pd.DataFrame:
    """Reported figures for the largest sites: one that agrees, one that disagrees, one in tonnes, one nowhere."""
    mined = indicators[indicators["excavated_m3"].notna()].sort_values("area_km2", ascending=False)
    big, other = mined.iloc[0], mined.iloc[1]
    inside = other.geometry.representative_point()
    rows = [("R1", big.site_id, None, None, "area_km2", round(big.area_km2 * 1.1, 3), "km2"),
            ("R2", None, inside.x, inside.y, "excavated_m3", round(other.excavated_m3 * 0.4 / 1e6, 3), "Mm3"),
            ("R3", big.site_id, None, None, "production_t", 9.5, "Mt"),
            ("R4", None, 121.5, -25.0, "area_km2", 2.0, "km2")]
    return pd.DataFrame(rows, columns=["record_id", "site_id", "lon", "lat", "field", "value", "unit"]).assign(
        company="Example Mining (fictional)", year=2023, source="test fixture")


def write_timeline(yearly: Path, sites: gpd.GeoDataFrame, dh_path: Path, out: Path) -> None:
    """The timeline's tables from stand-in yearly probabilities on the dh grid: 0.9 inside each year's truth
    footprints, 0.05 elsewhere."""
    dh = xr.open_zarr(dh_path, decode_coords="all")["dh"]
    truth = gpd.read_parquet(yearly).to_crs(dh.rio.crs)
    years = sorted(truth["year"].unique())
    probability = np.stack([np.where(rasterize(truth[truth["year"] == y].geometry, out_shape=dh.shape,
                                               transform=dh.rio.transform()) > 0, 0.9, 0.05) for y in years])
    options, segment = TimelineOptions(), SegmentOptions()
    periods = periods_of(np.array([f"{y}-07-01" for y in years], dtype="datetime64[ns]"), options.period)
    tables = site_timeline(probability.astype(np.float32), viterbi_mining(probability, options.start, options.stop),
                           periods, dh.rio.transform(), dh.rio.crs, sites=sites, threshold=segment.threshold,
                           min_area_m2=segment.min_area_m2, options=options)
    write_site_tables(tables, out, {"probability": "stand-in: the truth's yearly footprints (test fixture)"})


def write_probability(sites: gpd.GeoDataFrame, dh_path: Path, out: Path) -> None:
    """A mining-probability raster on the dh grid (0.9 inside the site polygons, 0.05 elsewhere) and its summary."""
    dh = xr.open_zarr(dh_path, decode_coords="all")["dh"]
    polygons = sites[sites.geometry.geom_type.isin(["Polygon", "MultiPolygon"])].to_crs(dh.rio.crs)
    inside = rasterize(polygons.geometry, out_shape=dh.shape, transform=dh.rio.transform(), fill=0, default_value=1)
    probability = xr.DataArray(np.where(inside, 0.9, 0.05).astype(np.float32), dims=("y", "x"),
                               coords={"y": dh["y"], "x": dh["x"]}, name="probability")
    probability.rio.write_crs(dh.rio.crs).to_dataset().to_zarr(out, mode="w", zarr_format=3, consolidated=False)
    summary = {"model": "none (site polygons rasterised by the test fixture)", "threshold": 0.5,
               "n_polygons": len(polygons), "mining_area_m2": float(polygons.area.sum()), "device": "cpu"}
    (out.parent / "segment.json").write_text(json.dumps(summary, indent=2))
