"""Site indicators: one table per run with each site's footprint, commodities, sources, area change, volumes,
waste deposits and segmentation probability.

:func:`indicators` takes what the other stages return, in memory: the sites and members of
:func:`mtg.pipeline.link.link`, the site volumes and waste deposits of :func:`mtg.pipeline.volume.volumes`, and
optionally footprints of two epochs; :func:`run_indicators` reads them from a run folder and writes the table.
Columns (:data:`INDICATOR_COLUMNS`):

* ``area_km2``: geodesic area (WGS-84) of the union of the site's polygons, from the sites file; null for sites
  made of points only.
* ``commodities``, ``primary_commodities``: harmonised names of the linked points; ``sources``: the names (file
  stems) of the data sets the site's polygons and points come from; ``country``: the sites file's country (or a
  boundary layer's), ``Unknown`` when there is none.
* ``area_before_km2``, ``area_after_km2``, ``area_change_km2`` (after minus before): geodesic area of the union of
  the site's footprints of each epoch, when footprints of two epochs are given. A footprint layer that was linked
  (its name is a member source) gives its polygons to their sites through the members; another is assigned by
  overlap: each polygon to the site it overlaps most (equal-area EPSG:6933), none when it overlaps no site. A site
  with footprints in neither epoch has nulls; one with footprints in one epoch only has area 0 in the other.
* ``onset`` (the first period whose mapped area reaches the minimum area), ``onset_censored`` (no period before
  the onset was seen, so mining may be older), ``expansion_km2_per_year`` (least-squares slope of the site's area
  over the periods) and ``revegetated_km2`` (area that stopped being mining, summed over the periods), from the
  site summary of :mod:`mtg.pipeline.timeline` (``site_timeline.parquet``); null without it.
* ``excavated_m3``, ``deposited_m3``, ``net_m3`` and their 1-sigma errors, from ``site_volumes.parquet``.
* ``waste_deposit_count``, ``waste_deposit_area_m2``, ``waste_deposit_volume_m3``: the site's deposits in
  ``waste_deposits.parquet`` (0 for a site with none; null without that file, and for sites of points only).
* ``mean_probability``: the area-weighted mean of ``mean_probability`` over the site's member polygons that carry
  one (the segmentation's footprints), weights their ``area_m2`` (else their geodesic area); null when no member
  polygon has one.
* ``uncertain``: the site's footprint has a low segmentation probability (``mean_probability`` below
  :data:`UNCERTAIN_PROBABILITY`) and shows no elevation change (neither the excavated nor the deposited volume
  reaches both :data:`SIGNIFICANT_SIGMA` times its 1-sigma error and :data:`CHANGE_DEPTH_M` over the footprint's
  area): a mapped patch that nothing else confirms, such as bare ground or a town mapped as mine. False where the
  probability, the volumes or the area were not measured.
* ``lon``, ``lat`` and the geometry, as in the sites file (:func:`mtg.pipeline.site_assembly.site_layer`): the
  footprint as a MultiPolygon (null for sites made of points only, so the layer has one geometry type) and a
  point locating every site (the centroid of its points for a site of points only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.commodities import name_list
from mtg.pipeline.errors import MtgError
from mtg.pipeline.inventory import polygon_inventory
from mtg.pipeline.landuse import SITES_NEED, UNKNOWN, apply_countries, largest_overlap
from mtg.pipeline.site_assembly import FootprintAreas, geodesic_area_km2, site_layer
from mtg.pipeline.io.vectors import read_table
from mtg.pipeline.table_io import atomic_write, write_table

log = logging.getLogger(__name__)

#: What the sites file says of each site.
SITE_COLUMNS = ("site_id", "area_km2", "commodities", "primary_commodities", "sources", "country", "n_polygons",
                "n_points")
AREA_CHANGE_COLUMNS = ("area_before_km2", "area_after_km2", "area_change_km2")
TIMELINE_COLUMNS = ("onset", "onset_censored", "expansion_km2_per_year", "revegetated_km2")
VOLUME_COLUMNS = ("excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3",
                  "net_sigma_m3")
WASTE_COLUMNS = ("waste_deposit_count", "waste_deposit_area_m2", "waste_deposit_volume_m3")
#: What the other stages measured: null where they did not run.
MEASURED_COLUMNS = (*AREA_CHANGE_COLUMNS, *TIMELINE_COLUMNS, *VOLUME_COLUMNS, *WASTE_COLUMNS, "mean_probability")
#: The columns of the indicators: the geometry is the site's footprint as in every sites layer (a MultiPolygon,
#: null for a site of points only) and ``lon``/``lat`` locate every site
#: (:func:`mtg.pipeline.site_assembly.site_layer`).
INDICATOR_COLUMNS = [*SITE_COLUMNS, *MEASURED_COLUMNS, "uncertain", "lon", "lat", "geometry"]
#: Mean segmentation probability below which a site without elevation change is ``uncertain``. In the default
#: ``mtg run`` the sites over true mines map at 0.96 to 0.98, the 0.74 km^2 false-positive patch at 0.88.
UNCERTAIN_PROBABILITY = 0.9
#: Multiple of the 1-sigma volume error that an excavated or deposited volume must reach to count as elevation change.
SIGNIFICANT_SIGMA = 2.0
#: Mean depth (volume over footprint area, m) that an excavated or deposited volume must reach to count as change.
CHANGE_DEPTH_M = 0.5


def uncertain_sites(table: pd.DataFrame) -> np.ndarray:
    """Sites with a low ``mean_probability`` and no elevation change (the ``uncertain`` column).

    Parameters
    ----------
    table : pandas.DataFrame
        ``area_km2``, ``mean_probability``, ``excavated_m3``, ``excavated_sigma_m3``, ``deposited_m3``,
        ``deposited_sigma_m3``.

    Returns
    -------
    numpy.ndarray
        bool per row; False where the probability, the volumes or the area are null (not measured).
    """
    def values(column: str) -> np.ndarray:
        return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    probability, area_m2 = values("mean_probability"), values("area_km2") * 1e6
    measured = np.isfinite(probability) & np.isfinite(area_m2)
    changed = np.zeros(len(table), dtype=bool)
    for volume in ("excavated", "deposited"):
        v, sigma = np.abs(values(f"{volume}_m3")), values(f"{volume}_sigma_m3")
        measured &= np.isfinite(v)
        with np.errstate(invalid="ignore"):
            changed |= (v >= SIGNIFICANT_SIGMA * np.nan_to_num(sigma)) & (v >= CHANGE_DEPTH_M * area_m2)
    return measured & (probability < UNCERTAIN_PROBABILITY) & ~changed


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.resolve().samefile(b.resolve())
    except OSError:
        return False


def member_rows(linked: pd.DataFrame, frame: pd.DataFrame, name: str) -> np.ndarray:
    """The rows of ``frame`` (the footprint layer ``name``) that the members ``linked`` point to.

    Raises
    ------
    MtgError
        When the layer has fewer rows than the members expect: it changed since it was linked.
    """
    rows = linked["row"].to_numpy(dtype=np.int64)
    if rows.size and rows.max() >= len(frame):
        raise MtgError(f"footprints {name} have {len(frame)} rows, fewer than the sites expect (row "
                       f"{int(rows.max())}): they changed since they were linked; link again")
    return rows


def epoch_areas(sites, members: pd.DataFrame | None, footprints: dict[str, Any]) -> pd.Series:
    """Geodesic area (km^2) of each site's footprints of one epoch, indexed by ``site_id``; NaN for none.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        The sites (``site_id``, footprints in EPSG:4326 as :func:`mtg.pipeline.site_assembly.site_layer`).
    members : pandas.DataFrame, optional
        The members: footprint layers among their sources are assigned through them.
    footprints : dict of str to geopandas.GeoDataFrame
        Polygon layers of the epoch by name (their union per site is measured).
    """
    geoms: list = []
    owner: list = []
    site_ids = sites["site_id"].to_numpy()
    polygonal = sites.geometry.notna().to_numpy()
    unassigned = 0
    for name, frame in footprints.items():
        frame = polygon_inventory(frame, name)
        linked = None
        if members is not None and name in set(members["source"]):
            linked = members[(members["source"] == name) & (members["kind"] == "polygon")]
        if linked is not None:
            geoms.extend(frame.geometry.to_numpy()[member_rows(linked, frame, name)])
            owner.extend(linked["site_id"].to_numpy())
            continue
        found = largest_overlap(frame.geometry, sites.geometry[polygonal], site_ids[polygonal])
        unassigned += sum(site is None for site in found)
        geoms.extend(g for g, site in zip(frame.geometry.to_numpy(), found) if site is not None)
        owner.extend(site for site in found if site is not None)
    if unassigned:
        log.info("%d footprint polygon(s) of %s overlap no site and are left out", unassigned, ", ".join(footprints))
    areas = FootprintAreas(geoms)
    owner = np.asarray(owner)
    out = pd.Series(np.nan, index=pd.Index(site_ids, name="site_id"), dtype=np.float64)
    for site in np.unique(owner) if owner.size else []:
        out[site] = areas.area(np.flatnonzero(owner == site))
    return out


def mean_probability(members: pd.DataFrame) -> pd.Series:
    """Area-weighted mean segmentation probability of each site's member polygons that carry one.

    Returns
    -------
    pandas.Series
        Indexed by ``site_id``; only sites with at least one such polygon.
    """
    if "mean_probability" not in members.columns:
        return pd.Series(dtype=np.float64)
    polygons = members[(members["kind"] == "polygon").to_numpy()
                       & np.isfinite(pd.to_numeric(members["mean_probability"], errors="coerce").to_numpy(
                           dtype=np.float64, na_value=np.nan))]
    if polygons.empty:
        return pd.Series(dtype=np.float64)
    probability = pd.to_numeric(polygons["mean_probability"], errors="coerce").to_numpy(dtype=np.float64)
    weight = (pd.to_numeric(polygons["area_m2"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
              if "area_m2" in polygons.columns else np.full(len(polygons), np.nan))
    missing = ~np.isfinite(weight)
    if missing.any():
        weight[missing] = [geodesic_area_km2(g) * 1e6 for g in polygons.geometry.to_numpy()[missing]]
    table = pd.DataFrame({"site_id": polygons["site_id"].to_numpy(), "p": probability, "w": weight})
    table = table[np.isfinite(table["w"]) & (table["w"] > 0)]
    sums = table.assign(pw=table["p"] * table["w"]).groupby("site_id")[["pw", "w"]].sum()
    return sums["pw"] / sums["w"]


def indicators(sites: Any, members: Any = None, *, site_volumes: Any = None, waste_deposits: Any = None,
               footprints_before: dict[str, Any] | None = None, footprints_after: dict[str, Any] | None = None,
               timeline: Any = None, countries: Any = None, country_col: str | None = None):
    """The indicators of every site (:data:`INDICATOR_COLUMNS`), as a GeoDataFrame in EPSG:4326, in memory.

    Parameters
    ----------
    sites : LinkedSites or geopandas.GeoDataFrame
        The result of :func:`mtg.pipeline.link.link` (its members come with it), or a sites table.
    members : geopandas.GeoDataFrame, optional
        The members table (for footprint layers that were linked, and the segmentation probability).
    site_volumes, waste_deposits : DataFrame, optional
        The ``site_volumes`` and ``deposits`` of :func:`mtg.pipeline.volume.volumes`.
    footprints_before, footprints_after : dict of str to GeoDataFrame, optional
        Footprint layers of two epochs by name (a name that is a member source is assigned through the
        members); both or neither.
    timeline : DataFrame, optional
        The per-site summary of :func:`mtg.pipeline.timeline.run_timeline` (``site_timeline.parquet``), by
        ``site_id``.
    countries : geopandas.GeoDataFrame, optional
        Country boundary polygons (:func:`mtg.pipeline.landuse.countries_from_boundaries`), ``country_col`` their
        name column.

    Examples
    --------
    >>> import geopandas as gpd, pandas as pd, shapely
    >>> from mtg.api import indicators, link
    >>> pits = gpd.GeoDataFrame(geometry=[shapely.box(118.0, -22.0, 118.01, -21.99)], crs="EPSG:4326")
    >>> table = indicators(link(pits, cut="1km"))
    >>> round(float(table["area_km2"].iloc[0]), 3), table["country"].iloc[0]
    (1.143, 'Unknown')
    """
    import geopandas as gpd

    from mtg.pipeline.link import LinkedSites

    if isinstance(sites, LinkedSites):
        sites, members = sites.sites, (sites.members if members is None else members)
    frame = site_layer(sites)
    missing = [c for c in SITES_NEED if c not in frame.columns]
    if missing:
        raise MtgError(f"the sites lack the column(s) {missing}; their columns are {list(frame.columns)}")
    if bool(footprints_before) != bool(footprints_after):
        raise MtgError("give footprints of both epochs (--footprints-before and --footprints-after), or neither")
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
        before = epoch_areas(frame, members, footprints_before)
        after = epoch_areas(frame, members, footprints_after)
        seen = before.notna().to_numpy() | after.notna().to_numpy()
        b, a = before.fillna(0.0).to_numpy(), after.fillna(0.0).to_numpy()
        out["area_before_km2"] = np.where(seen, b, np.nan)
        out["area_after_km2"] = np.where(seen, a, np.nan)
        out["area_change_km2"] = np.where(seen, a - b, np.nan)

    if timeline is not None:
        needed = ["site_id", "onset", "onset_censored", "expansion_m2_per_year", "revegetated_m2"]
        missing = [c for c in needed if c not in timeline.columns]
        if missing:
            raise MtgError(f"the site timeline lacks the column(s) {missing}; its columns are {list(timeline.columns)}")
        joined = out[["site_id"]].merge(pd.DataFrame(timeline[needed]).assign(
            site_id=timeline["site_id"].astype(str).to_numpy()), on="site_id", how="left")
        out["onset"] = joined["onset"].astype(object).where(joined["onset"].notna(), None).to_numpy()
        out["onset_censored"] = pd.array(joined["onset_censored"], dtype="boolean")
        out["expansion_km2_per_year"] = joined["expansion_m2_per_year"].to_numpy(dtype=np.float64) / 1e6
        out["revegetated_km2"] = joined["revegetated_m2"].to_numpy(dtype=np.float64) / 1e6
    else:
        out["onset"] = None
        out["onset_censored"] = pd.array([pd.NA] * len(out), dtype="boolean")

    if site_volumes is not None:
        missing = [c for c in ["site_id", *VOLUME_COLUMNS] if c not in site_volumes.columns]
        if missing:
            raise MtgError(f"the site volumes lack the column(s) {missing}; their columns are "
                           f"{list(site_volumes.columns)}")
        table = pd.DataFrame(site_volumes[["site_id", *VOLUME_COLUMNS]]).assign(
            site_id=site_volumes["site_id"].astype(str).to_numpy())
        repeated = table["site_id"][table["site_id"].duplicated()]
        if len(repeated):
            raise MtgError(f"the site volumes repeat site_id {repeated.iloc[0]!r}")
        unknown = sorted(set(table["site_id"]) - set(ids))
        if unknown:
            log.warning("the site volumes have %d site(s) not among the sites (e.g. %s): left out", len(unknown),
                        unknown[0])
        joined = out[["site_id"]].merge(table, on="site_id", how="left")
        for column in VOLUME_COLUMNS:
            out[column] = joined[column].to_numpy(dtype=np.float64)

    if waste_deposits is not None:
        missing = [c for c in ("site_id", "area_m2", "volume_m3") if c not in waste_deposits.columns]
        if missing:
            raise MtgError(f"the waste deposits lack the column(s) {missing}")
        sums = pd.DataFrame(waste_deposits[["site_id", "area_m2", "volume_m3"]]).assign(
            site_id=waste_deposits["site_id"].astype(str).to_numpy()).groupby("site_id").agg(
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

    if members is not None:
        probability = mean_probability(members)
        probability.index = probability.index.astype(str)
        out["mean_probability"] = out["site_id"].map(probability).astype(np.float64).to_numpy()
    out["waste_deposit_count"] = out["waste_deposit_count"].astype("Int64")
    out["uncertain"] = uncertain_sites(out)
    out["lon"], out["lat"] = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    result = gpd.GeoDataFrame(out, geometry=gpd.GeoSeries(frame.geometry.to_numpy(), crs="EPSG:4326"))
    return result[INDICATOR_COLUMNS]


def footprint_layers(paths: Sequence[str | Path], members: pd.DataFrame | None,
                      relative_to: Path) -> dict[str, Any]:
    """Footprint files read by name for :func:`indicators`: a file that was linked gets the member source's name,
    so it is assigned through the members (relative sources are tried against ``relative_to``)."""
    from mtg.pipeline.io import read_polygons

    sources = [] if members is None else list(members["source"].unique())
    layers: dict[str, Any] = {}
    for path in map(Path, paths):
        name = next((s for s in sources if _same_file(Path(s) if Path(s).exists() else relative_to / s, path)),
                    str(path))
        layers[name] = read_polygons(path)
    return layers


def site_indicators(sites: str | Path, *, members: str | Path | None = None, volumes: str | Path | None = None,
                    waste_deposits: str | Path | None = None, footprints_before: Sequence[str | Path] = (),
                    footprints_after: Sequence[str | Path] = (), timeline: str | Path | None = None,
                    footprint_periods: dict[str, list[Path]] | None = None, cumulative: bool = False,
                    coverage_periods: dict[str, list[Path]] | None = None, countries: str | Path | None = None,
                    country_col: str | None = None):
    """:func:`indicators` of files: a sites file (its members file beside it, or ``members``), the volume stage's
    ``site_volumes.parquet`` and ``waste_deposits.parquet``, footprint files, the timeline's
    ``site_timeline.parquet`` and a country boundary file.

    With ``footprint_periods`` (footprint files by period label, :func:`mtg.pipeline.layer_series.layer_series`,
    ``cumulative`` when they hold only each period's new footprints) the area before and after are those of the
    first and last period, the onset and expansion come from the layers instead of ``timeline``, and the
    per-site series is in ``attrs["area_series"]`` of the returned table; ``coverage_periods`` (polygon files by
    period label) say which ground each period's layers cover."""
    from mtg.pipeline.io import members_path, read_polygons, read_sites

    sites_path = Path(sites)
    frame = read_sites(sites_path)
    member_file = Path(members) if members is not None else members_path(sites_path)
    if not member_file.is_file() and members is not None:
        raise MtgError(f"members file {member_file} does not exist")
    member_table = read_table(member_file, "members") if member_file.is_file() else None
    boundaries = None
    if countries is not None:
        boundaries = read_polygons(countries)
        boundaries.attrs["source"] = str(countries)
    volumes_table = read_table(volumes, "site volumes") if volumes is not None else None
    deposits = read_table(waste_deposits, "waste deposits") if waste_deposits is not None else None
    site_timeline = read_table(timeline, "site timeline") if timeline is not None else None
    series = None
    try:
        before = footprint_layers(footprints_before, member_table, sites_path.parent)
        after = footprint_layers(footprints_after, member_table, sites_path.parent)
        if coverage_periods and not footprint_periods:
            raise MtgError("a coverage by period needs footprints by period")
        if footprint_periods:
            if footprints_before or footprints_after:
                raise MtgError("give footprints by period or footprints before and after, not both")
            from mtg.pipeline.layer_series import layer_series

            layers = {label: footprint_layers(paths, member_table, sites_path.parent)
                      for label, paths in footprint_periods.items()}
            covered = {label: pd.concat([read_polygons(path).to_crs("EPSG:4326") for path in paths])
                       for label, paths in (coverage_periods or {}).items()}
            series, site_timeline, measured = layer_series(frame, member_table, layers, cumulative=cumulative,
                                                           coverage=covered)
            before, after = (measured[0], measured[-1]) if len(measured) > 1 else ({}, {})
        table = indicators(frame, member_table, site_volumes=volumes_table, waste_deposits=deposits,
                           footprints_before=before, footprints_after=after, timeline=site_timeline,
                           countries=boundaries, country_col=country_col)
    except MtgError as err:
        raise MtgError(f"{sites_path}: {err}") from None
    if series is not None:
        table.attrs["area_series"] = series
    return table


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
                   timeline: str | Path | None = None, footprint_periods: dict[str, list[Path]] | None = None,
                   cumulative: bool = False, coverage_periods: dict[str, list[Path]] | None = None,
                   countries: str | Path | None = None, country_col: str | None = None) -> IndicatorsResult:
    """Indicators of a run folder: ``RUN/sites/sites.parquet``, ``RUN/volumes/*`` and
    ``RUN/timeline/site_timeline.parquet`` (when present) into ``RUN/indicators`` (or ``out``); explicit paths win
    over the run folder's. With ``footprint_periods`` the per-site series of the layers
    (:func:`site_indicators`) is written as ``site_area_series.parquet`` beside the indicators."""
    start = time.perf_counter()
    run = Path(run)
    sites = Path(sites) if sites is not None else run / "sites" / "sites.parquet"
    if volumes is None and (run / "volumes" / "site_volumes.parquet").is_file():
        volumes = run / "volumes" / "site_volumes.parquet"
    if waste_deposits is None and (run / "volumes" / "waste_deposits.parquet").is_file():
        waste_deposits = run / "volumes" / "waste_deposits.parquet"
    if timeline is None and not footprint_periods and (run / "timeline" / "site_timeline.parquet").is_file():
        timeline = run / "timeline" / "site_timeline.parquet"
    table = site_indicators(sites, volumes=volumes, waste_deposits=waste_deposits,
                            footprints_before=footprints_before, footprints_after=footprints_after,
                            timeline=timeline, footprint_periods=footprint_periods, cumulative=cumulative,
                            coverage_periods=coverage_periods, countries=countries, country_col=country_col)
    folder = Path(out) if out is not None else run / "indicators"
    series = table.attrs.pop("area_series", None)
    parquet, csv = write_site_indicators(table, folder)
    if series is not None:
        atomic_write(folder / "site_area_series.parquet", lambda tmp: series.to_parquet(tmp, index=False))
    return IndicatorsResult(parquet=parquet, csv=csv, n_sites=len(table), seconds=time.perf_counter() - start)
