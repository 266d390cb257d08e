"""Site indicators: one table per run with each site's footprint, commodities, sources, area change, volumes,
waste deposits and segmentation probability.

Inputs are the files the other stages write: the sites and members files of :func:`mtg.pipeline.link.link_sites`,
``site_volumes.parquet`` and ``waste_deposits.parquet`` of :func:`mtg.pipeline.volume.measure_volumes`, and
optionally footprint files of two epochs. Columns (:data:`INDICATOR_COLUMNS`):

* ``area_km2``: geodesic area (WGS-84) of the union of the site's polygons, from the sites file; null for sites
  made of points only.
* ``commodities``, ``primary_commodities``: harmonised names of the linked points; ``sources``: the names (file
  stems) of the data sets the site's polygons and points come from; ``country``: the sites file's country (or a
  boundary layer's), ``Unknown`` when there is none.
* ``area_before_km2``, ``area_after_km2``, ``area_change_km2`` (after minus before): geodesic area of the union of
  the site's footprints of each epoch, when footprints of two epochs are given. A footprint file that was linked
  (it is a member source) gives its polygons to their sites through the members file; another is assigned by
  overlap: each polygon to the site it overlaps most (equal-area EPSG:6933), none when it overlaps no site. A site
  with footprints in neither epoch has nulls; one with footprints in one epoch only has area 0 in the other.
* ``excavated_m3``, ``deposited_m3``, ``net_m3`` and their 1-sigma errors, from ``site_volumes.parquet``.
* ``waste_deposit_count``, ``waste_deposit_area_m2``, ``waste_deposit_volume_m3``: the site's deposits in
  ``waste_deposits.parquet`` (0 for a site with none; null without that file, and for sites of points only).
* ``mean_probability``: the area-weighted mean of ``mean_probability`` over the site's member polygons whose file
  has that column (the segmentation's footprints), weights their ``area_m2`` (else their geodesic area); null when
  no member polygon has one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtg.pipeline.commodities import name_list
from mtg.pipeline.errors import MtgError
from mtg.pipeline.landuse import UNKNOWN, apply_countries, largest_overlap, read_sites
from mtg.pipeline.link import FootprintAreas, _geodesic_area_km2, member_rows, member_source, read_polygons
from mtg.pipeline.table_io import read_geoparquet, write_table

log = logging.getLogger(__name__)

#: What the sites file says of each site.
SITE_COLUMNS = ("site_id", "area_km2", "commodities", "primary_commodities", "sources", "country", "n_polygons",
                "n_points")
AREA_CHANGE_COLUMNS = ("area_before_km2", "area_after_km2", "area_change_km2")
VOLUME_COLUMNS = ("excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3",
                  "net_sigma_m3")
WASTE_COLUMNS = ("waste_deposit_count", "waste_deposit_area_m2", "waste_deposit_volume_m3")
#: What the other stages measured: null where they did not run.
MEASURED_COLUMNS = (*AREA_CHANGE_COLUMNS, *VOLUME_COLUMNS, *WASTE_COLUMNS, "mean_probability")
INDICATOR_COLUMNS = [*SITE_COLUMNS, *MEASURED_COLUMNS, "geometry"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.resolve().samefile(b.resolve())
    except OSError:
        return False


def epoch_areas(sites, members: pd.DataFrame | None, footprints: Sequence[str | Path],
                relative_to: Path | None = None) -> pd.Series:
    """Geodesic area (km^2) of each site's footprints of one epoch, indexed by ``site_id``; NaN for none.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        The sites (``site_id``, geometry in EPSG:4326).
    members : pandas.DataFrame, optional
        The members file: footprint files among its sources are assigned through it.
    footprints : sequence of path
        Polygon files of the epoch (their union per site is measured).
    relative_to : path, optional
        Folder for relative member sources.
    """
    geoms: list = []
    owner: list = []
    site_ids = sites["site_id"].to_numpy()
    polygonal = sites.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    unassigned = 0
    for path in map(Path, footprints):
        frame = read_polygons(path)
        linked = None
        if members is not None:
            sources = [s for s in members["source"].unique() if _same_file(member_source(s, relative_to), path)]
            if sources:
                linked = members[members["source"].isin(sources) & (members["kind"] == "polygon")]
        if linked is not None:
            geoms.extend(frame.geometry.to_numpy()[member_rows(linked, frame, path)])
            owner.extend(linked["site_id"].to_numpy())
            continue
        found = largest_overlap(frame.geometry, sites.geometry[polygonal], site_ids[polygonal])
        unassigned += sum(site is None for site in found)
        geoms.extend(g for g, site in zip(frame.geometry.to_numpy(), found) if site is not None)
        owner.extend(site for site in found if site is not None)
    if unassigned:
        log.info("%d footprint polygon(s) of %s overlap no site and are left out", unassigned,
                 ", ".join(map(str, footprints)))
    areas = FootprintAreas(geoms)
    owner = np.asarray(owner)
    out = pd.Series(np.nan, index=pd.Index(site_ids, name="site_id"), dtype=np.float64)
    for site in np.unique(owner) if owner.size else []:
        out[site] = areas.area(np.flatnonzero(owner == site))
    return out


def mean_probability(members: pd.DataFrame, relative_to: Path | None = None) -> pd.Series:
    """Area-weighted mean segmentation probability of each site's member polygons that carry one.

    Returns
    -------
    pandas.Series
        Indexed by ``site_id``; only sites with at least one such polygon.
    """
    parts = []
    for source, group in members[members["kind"] == "polygon"].groupby("source", sort=False):
        path = member_source(source, relative_to)
        if not path.exists():
            log.warning("member source %s does not exist: no segmentation probability from it", source)
            continue
        frame = read_polygons(path)
        if "mean_probability" not in frame.columns:
            continue
        rows = member_rows(group, frame, path)
        probability = pd.to_numeric(frame["mean_probability"], errors="coerce").to_numpy(dtype=np.float64)[rows]
        if "area_m2" in frame.columns:
            weight = pd.to_numeric(frame["area_m2"], errors="coerce").to_numpy(dtype=np.float64)[rows]
        else:
            weight = np.array([_geodesic_area_km2(g) for g in frame.geometry.to_numpy()[rows]]) * 1e6
        parts.append(pd.DataFrame({"site_id": group["site_id"].to_numpy(), "p": probability, "w": weight}))
    if not parts:
        return pd.Series(dtype=np.float64)
    table = pd.concat(parts, ignore_index=True)
    table = table[np.isfinite(table["p"]) & np.isfinite(table["w"]) & (table["w"] > 0)]
    sums = table.assign(pw=table["p"] * table["w"]).groupby("site_id")[["pw", "w"]].sum()
    return sums["pw"] / sums["w"]


def site_indicators(sites: str | Path, *, members: str | Path | None = None, volumes: str | Path | None = None,
                    waste_deposits: str | Path | None = None, footprints_before: Sequence[str | Path] = (),
                    footprints_after: Sequence[str | Path] = (), countries: str | Path | None = None,
                    country_col: str | None = None):
    """The indicators of every site (:data:`INDICATOR_COLUMNS`), as a GeoDataFrame in EPSG:4326.

    Parameters
    ----------
    sites : path
        Sites GeoParquet (:func:`mtg.pipeline.link.link_sites`).
    members : path, optional
        Its members file (default ``<stem>_members.parquet`` beside it, when present).
    volumes, waste_deposits : path, optional
        ``site_volumes.parquet`` and ``waste_deposits.parquet`` of :func:`mtg.pipeline.volume.measure_volumes`.
    footprints_before, footprints_after : sequence of path
        Footprint polygon files of two epochs; both or neither.
    countries, country_col : optional
        Boundary layer and name column (:func:`mtg.pipeline.landuse.countries_from_boundaries`).
    """
    import geopandas as gpd

    sites_path = Path(sites)
    frame = read_sites(sites_path)
    if bool(footprints_before) != bool(footprints_after):
        raise MtgError("give footprints of both epochs (--footprints-before and --footprints-after), or neither")
    members_path = Path(members) if members is not None else sites_path.with_name(f"{sites_path.stem}_members.parquet")
    member_table = None
    if members_path.is_file():
        member_table = pd.read_parquet(members_path)
    elif members is not None:
        raise MtgError(f"members file {members_path} does not exist")
    frame = apply_countries(frame, countries, country_col)
    ids = frame["site_id"].astype(str).to_numpy()

    def as_lists(column: str) -> list[list[str]]:
        return [name_list(v) for v in (frame[column] if column in frame.columns else frame["commodities"])]

    def stems(row) -> list[str]:
        return list(dict.fromkeys(Path(source).stem for column in ("member_sources", "point_sources")
                                  for source in name_list(row.get(column))))

    country = (frame["country"].astype(object).where(frame["country"].notna(), UNKNOWN)
               if "country" in frame.columns else pd.Series(UNKNOWN, index=frame.index))
    out = pd.DataFrame({
        "site_id": ids,
        "area_km2": pd.to_numeric(frame["area_km2"], errors="coerce").to_numpy(dtype=np.float64),
        "commodities": as_lists("commodities"),
        "primary_commodities": as_lists("primary_commodities"),
        "sources": [stems(row) for row in frame.to_dict("records")],
        "country": country.astype(str).to_numpy(),
        "n_polygons": frame["n_polygons"].to_numpy(dtype=np.int64) if "n_polygons" in frame.columns else 0,
        "n_points": frame["n_points"].to_numpy(dtype=np.int64) if "n_points" in frame.columns else 0,
    })
    for column in MEASURED_COLUMNS:
        out[column] = np.nan

    if footprints_before:
        before = epoch_areas(frame, member_table, footprints_before, sites_path.parent)
        after = epoch_areas(frame, member_table, footprints_after, sites_path.parent)
        seen = before.notna().to_numpy() | after.notna().to_numpy()
        b, a = before.fillna(0.0).to_numpy(), after.fillna(0.0).to_numpy()
        out["area_before_km2"] = np.where(seen, b, np.nan)
        out["area_after_km2"] = np.where(seen, a, np.nan)
        out["area_change_km2"] = np.where(seen, a - b, np.nan)

    if volumes is not None:
        table = read_geoparquet(volumes, "site volumes")
        missing = [c for c in ["site_id", *VOLUME_COLUMNS] if c not in table.columns]
        if missing:
            raise MtgError(f"site volumes file {volumes} lacks the column(s) {missing}; its columns are "
                           f"{list(table.columns)}")
        table = pd.DataFrame(table.drop(columns=table.geometry.name)).assign(site_id=table["site_id"].astype(str))
        repeated = table["site_id"][table["site_id"].duplicated()]
        if len(repeated):
            raise MtgError(f"site volumes file {volumes} repeats site_id {repeated.iloc[0]!r}")
        unknown = sorted(set(table["site_id"]) - set(ids))
        if unknown:
            log.warning("site volumes file %s has %d site(s) not in %s (e.g. %s): left out", volumes, len(unknown),
                        sites_path, unknown[0])
        joined = out[["site_id"]].merge(table[["site_id", *VOLUME_COLUMNS]], on="site_id", how="left")
        for column in VOLUME_COLUMNS:
            out[column] = joined[column].to_numpy(dtype=np.float64)

    if waste_deposits is not None:
        deposits = read_geoparquet(waste_deposits, "waste deposits")
        missing = [c for c in ("site_id", "area_m2", "volume_m3") if c not in deposits.columns]
        if missing:
            raise MtgError(f"waste deposits file {waste_deposits} lacks the column(s) {missing}")
        sums = pd.DataFrame(deposits.drop(columns=deposits.geometry.name)).assign(
            site_id=deposits["site_id"].astype(str)).groupby("site_id").agg(
            waste_deposit_count=("area_m2", "size"), waste_deposit_area_m2=("area_m2", "sum"),
            waste_deposit_volume_m3=("volume_m3", "sum"))
        joined = out[["site_id"]].merge(sums, left_on="site_id", right_index=True, how="left")
        out["waste_deposit_count"] = pd.array(joined["waste_deposit_count"].fillna(0).astype(np.int64), dtype="Int64")
        out["waste_deposit_area_m2"] = joined["waste_deposit_area_m2"].fillna(0.0).to_numpy()
        out["waste_deposit_volume_m3"] = joined["waste_deposit_volume_m3"].fillna(0.0).to_numpy()
        no_footprint = ~np.isfinite(out["area_km2"].to_numpy())  # points only: nothing was measured
        out.loc[no_footprint, "waste_deposit_count"] = pd.NA
        out.loc[no_footprint, ["waste_deposit_area_m2", "waste_deposit_volume_m3"]] = np.nan
    else:
        out["waste_deposit_count"] = pd.array([pd.NA] * len(out), dtype="Int64")

    if member_table is not None:
        probability = mean_probability(member_table, sites_path.parent)
        probability.index = probability.index.astype(str)
        out["mean_probability"] = out["site_id"].map(probability).astype(np.float64).to_numpy()
    out["waste_deposit_count"] = out["waste_deposit_count"].astype("Int64")
    result = gpd.GeoDataFrame(out, geometry=frame.geometry.to_numpy(), crs=frame.crs or "EPSG:4326")
    result = result.rename_geometry("geometry") if result.geometry.name != "geometry" else result
    return result[INDICATOR_COLUMNS].to_crs("EPSG:4326")


@dataclass
class IndicatorsResult:
    """What :func:`write_site_indicators` wrote."""

    parquet: Path
    csv: Path
    n_sites: int
    seconds: float


def write_site_indicators(indicators, out: str | Path) -> tuple[Path, Path]:
    """Write ``site_indicators.parquet`` (GeoParquet) and ``site_indicators.csv`` (WKT geometry, lists
    ``;``-joined) into the folder ``out``, atomically."""
    return write_table(indicators, Path(out), "site_indicators")


def run_indicators(run: str | Path, out: str | Path | None = None, *, sites: str | Path | None = None,
                   volumes: str | Path | None = None, waste_deposits: str | Path | None = None,
                   footprints_before: Sequence[str | Path] = (), footprints_after: Sequence[str | Path] = (),
                   countries: str | Path | None = None, country_col: str | None = None) -> IndicatorsResult:
    """Indicators of a run folder: ``RUN/sites/sites.parquet`` and ``RUN/volumes/*`` (when present) into
    ``RUN/indicators`` (or ``out``); explicit paths win over the run folder's."""
    start = time.perf_counter()
    run = Path(run)
    sites = Path(sites) if sites is not None else run / "sites" / "sites.parquet"
    if volumes is None and (run / "volumes" / "site_volumes.parquet").is_file():
        volumes = run / "volumes" / "site_volumes.parquet"
    if waste_deposits is None and (run / "volumes" / "waste_deposits.parquet").is_file():
        waste_deposits = run / "volumes" / "waste_deposits.parquet"
    table = site_indicators(sites, volumes=volumes, waste_deposits=waste_deposits,
                            footprints_before=footprints_before, footprints_after=footprints_after,
                            countries=countries, country_col=country_col)
    parquet, csv = write_site_indicators(table, Path(out) if out is not None else run / "indicators")
    return IndicatorsResult(parquet=parquet, csv=csv, n_sites=len(table), seconds=time.perf_counter() - start)
