"""A small run folder laid out as ``mtg run`` writes it, for the report and results-catalog tests.

The sample region (6 km), its sites and their volumes come from the real stages. The stages written elsewhere
(land use, site indicators, segmentation, verification) are stood in for by plain derivations from those sites
and volumes, in the shapes the run-folder contract gives their files: land use splits each site's area equally
among its commodities; the probability raster is 0.9 inside the site polygons and 0.05 elsewhere; verification
flags sites without a footprint or a commodity.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from rasterio.features import rasterize

from mtg.pipeline.config import SampleConfig
from mtg.pipeline.link import link_sites
from mtg.pipeline.run import ensure_sample
from mtg.pipeline.volume import measure_volumes

COUNTRY = "Australia"  # the sample region lies in the Pilbara


def write_run_folder(run: Path) -> Path:
    """Write the run folder ``run`` (sample, sites, volumes, landuse, indicators, segment, verification)."""
    region = ensure_sample(run / "sample", SampleConfig(seed=0, size_km=6.0, n_dates=6), progress=False)
    sites = link_sites([region.truth / "mine_polygons.parquet"], region.truth / "mine_points.parquet",
                       run / "sites" / "sites.parquet", cut=500.0, linkage="single")
    early, late = sorted(region.root.glob("cop-dem-glo-30/*/*.json"))
    measure_volumes(early, late, sites.out, run / "volumes")
    frame = gpd.read_parquet(sites.out)
    volumes = gpd.read_parquet(run / "volumes" / "site_volumes.parquet")
    deposits = gpd.read_parquet(run / "volumes" / "waste_deposits.parquet")
    write_landuse(frame, run / "landuse")
    write_probability(frame, run / "volumes" / "dh.zarr", run / "segment" / "probability.zarr")
    write_indicators(frame, volumes, deposits, run / "indicators")
    write_verification(frame, run / "verification")
    return run


def _save(table: pd.DataFrame, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / f"{name}.parquet")
    pd.DataFrame(table.drop(columns="geometry", errors="ignore")).to_csv(folder / f"{name}.csv", index=False)


def write_landuse(sites: gpd.GeoDataFrame, out: Path) -> None:
    """Land use by commodity (equal split of each site's area), by country and both, and the summary."""
    mapped = sites[sites["area_km2"].notna()]
    parts = [(c, row.area_km2 / len(row.commodities), row.site_id)
             for row in mapped.itertuples() for c in row.commodities]
    shares = pd.DataFrame(parts, columns=["commodity", "area_km2", "site_id"])
    total = float(mapped["area_km2"].sum())
    linked = float(mapped.loc[mapped["commodities"].map(len) > 0, "area_km2"].sum())
    multi = float(mapped.loc[mapped["commodities"].map(len) > 1, "area_km2"].sum())
    by = shares.groupby("commodity").agg(area_km2=("area_km2", "sum"), n_sites=("site_id", "nunique")).reset_index()
    by["share"] = by["area_km2"] / total
    by = pd.concat([by, pd.DataFrame([{"commodity": "Total", "area_km2": total, "share": 1.0,
                                       "n_sites": len(mapped)}])], ignore_index=True)
    _save(by[["commodity", "area_km2", "share", "n_sites"]], out, "landuse_by_commodity")
    _save(pd.DataFrame([{"country": COUNTRY, "area_km2": total, "share": 1.0, "n_sites": len(mapped)}]),
          out, "landuse_by_country")
    both = by[by["commodity"] != "Total"].assign(country=COUNTRY)
    _save(both[["commodity", "country", "area_km2", "share", "n_sites"]], out, "landuse_by_commodity_country")
    summary = {"total_km2": total, "linked_km2": linked, "unlinked_km2": total - linked,
               "linked_share": linked / total, "unlinked_share": 1 - linked / total,
               "multi_commodity_km2": multi, "multi_commodity_share": multi / total, "cut_m": 500.0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def write_probability(sites: gpd.GeoDataFrame, dh_path: Path, out: Path) -> None:
    """A mining-probability raster on the dh grid (0.9 inside the site polygons, 0.05 elsewhere) and its summary."""
    dh = xr.open_zarr(dh_path, decode_coords="all")["dh"]
    polygons = sites[sites.geometry.geom_type != "Point"].to_crs(dh.rio.crs)
    inside = rasterize(polygons.geometry, out_shape=dh.shape, transform=dh.rio.transform(), fill=0, default_value=1)
    probability = xr.DataArray(np.where(inside, 0.9, 0.05).astype(np.float32), dims=("y", "x"),
                               coords={"y": dh["y"], "x": dh["x"]}, name="probability")
    probability.rio.write_crs(dh.rio.crs).to_dataset().to_zarr(out, mode="w", zarr_format=3, consolidated=False)
    summary = {"model": "none (site polygons rasterised by the test fixture)", "threshold": 0.5,
               "n_polygons": len(polygons), "mining_area_m2": float(polygons.area.sum()), "device": "cpu"}
    (out.parent / "segment.json").write_text(json.dumps(summary, indent=2))


def write_indicators(sites: gpd.GeoDataFrame, volumes: gpd.GeoDataFrame, deposits: gpd.GeoDataFrame,
                     out: Path) -> None:
    """Site indicators: the sites joined with their volumes and waste-deposit totals."""
    table = sites[["site_id", "area_km2", "commodities", "geometry"]].copy()
    table["site_id"] = table["site_id"].astype(str)
    table["primary_commodities"] = table["commodities"].map(lambda c: list(c[:1]))
    table["sources"] = [sorted({Path(s).stem for s in (*m, *p)})
                        for m, p in zip(sites["member_sources"], sites["point_sources"])]
    table["country"] = COUNTRY
    for column in ("area_before_km2", "area_after_km2", "area_change_km2", "mean_probability"):
        table[column] = np.nan  # need the segmentation over time
    columns = ["excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3", "net_sigma_m3"]
    table = table.merge(pd.DataFrame(volumes[["site_id", *columns]]), on="site_id", how="left")
    totals = deposits.groupby("site_id").agg(waste_deposit_count=("deposit_id", "count"),
                                             waste_deposit_area_m2=("area_m2", "sum"),
                                             waste_deposit_volume_m3=("volume_m3", "sum")).reset_index()
    table = table.merge(totals, on="site_id", how="left")
    table["waste_deposit_count"] = table["waste_deposit_count"].fillna(0).astype(int)
    _save(gpd.GeoDataFrame(table, geometry="geometry", crs=sites.crs), out, "site_indicators")


def write_verification(sites: gpd.GeoDataFrame, out: Path) -> None:
    """Flags: sites known only from an inventory point, and sites with no commodity."""
    rows = [{"site_id": str(row.site_id), "check": check, "flag": flagged,
             "detail": detail if flagged else "ok"}
            for row in sites.itertuples()
            for check, flagged, detail in (
                ("has footprint", row.geometry.geom_type == "Point", "only an inventory point: no mapped footprint"),
                ("has commodity", len(row.commodities) == 0, "no inventory point with a commodity nearby"))]
    _save(pd.DataFrame(rows), out, "verification")
