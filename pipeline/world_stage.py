"""The world stage of a global rerun: the finished tiles of ``OUT/tiles/`` become one world inventory.

1. **Footprints.** The tiles' owned footprint parts (:mod:`mtg.pipeline.tile_run`) are merged across tile edges
   and UTM zone boundaries (:func:`mtg.pipeline.tiling.merge_across_seams`, per feature type): a mine cut by a seam
   is one polygon, and since owned areas are disjoint nothing is counted twice. ``OUT/segment/mine_polygons.parquet``.
2. **Sites.** The merged footprints, more polygon inventories (``link.polygons``) and the mine property points are
   linked into sites with the run's link options (the exact sparse HAC of :func:`mtg.pipeline.link.link`).
3. **Volumes.** A site's volumes are the sums of the per-part volumes of its footprints' parts. Parts measured in
   one tile share that tile's DEM co-registration, so their 1-sigma error is the error of their summed area under
   the tile's variogram (:func:`mtg.kernels.dh_statistics.volume_sigma`, as for one site of one run); the errors of
   different tiles are independent and add in quadrature. A site with a part in a tile that measured no volumes
   gets no volumes (NaN), not a partial sum. Waste deposits cut by tile edges are merged like footprints.
4. **Timeline** (with ``timeline.tiles``): the tiles' per-period layers become per-site series
   (:func:`world_timeline`), which give the indicators their onset, expansion and area before and after.
5. **Land use, indicators, verification, report and STAC catalog**, as in a single-region run, in the same places
   of the run folder (the layout of the README), so ``mtg report``, ``mtg publish`` and ``mtg plan --check`` read a
   world run as they read any run.

Every output depends only on the tiles' outputs and the options (tiles are read in id order), so a resumed run
ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from mtg.kernels.dh_statistics import volume_sigma
from mtg.pipeline.commodities import load_commodity_table
from mtg.pipeline.config import RunConfig
from mtg.pipeline.errors import MtgError
from mtg.pipeline.indicators import indicators, write_site_indicators
from mtg.pipeline.io import read_points, read_polygons, write_land_use_tables, write_sites
from mtg.pipeline.landuse import land_use
from mtg.pipeline.link import link
from mtg.pipeline.linker import parse_distance
from mtg.pipeline.report import write_report
from mtg.pipeline.results_catalog import write_results_catalog
from mtg.pipeline.run import run_countries
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.table_io import atomic_write, atomic_write_all, to_geoparquet
from mtg.pipeline.tile_run import PERIODS_FILE
from mtg.pipeline.tiling import geodesic_areas, merge_across_seams
from mtg.pipeline.verify import write_verification

log = logging.getLogger(__name__)

#: Member source name of the merged footprints in the world's sites.
FOOTPRINTS_SOURCE = "segment/mine_polygons.parquet"
#: The tiles' areas decoded as mining per period (``timeline.tiles``), as the world's timeline writes them.
TIMELINE_SOURCE = "timeline/period_footprints.parquet"
#: Sums over a site's parts (the rest of ``site_volumes.parquet`` is derived from them).
PART_SUMS = ("excavated_m3", "deposited_m3", "net_m3", "excavated_area_m2", "deposited_area_m2", "area_m2")
#: Volume error columns and the area each is computed over.
SIGMA_AREAS = {"excavated_sigma_m3": "excavated_area_m2", "deposited_sigma_m3": "deposited_area_m2",
               "net_sigma_m3": "area_m2"}


@dataclass(frozen=True)
class TileOutputs:
    """What the finished tiles hold, concatenated in tile-id order.

    Attributes
    ----------
    parts : geopandas.GeoDataFrame
        Owned footprint parts (EPSG:4326): ``part_id``, ``tile_id``, ``feature_type``, ``mean_probability``, ...
    part_volumes : pandas.DataFrame
        Per-part sums (``part_id``, ``tile_id``, :data:`PART_SUMS`, ``void_fraction``) of tiles that measured them.
    deposits : geopandas.GeoDataFrame
        Owned waste-deposit parts (EPSG:4326) with their ``part_id``.
    dh : dict
        ``tile_id`` -> the tile's dh statistics (``tile.json``'s ``dh``), for tiles that measured volumes.
    volumes : dict
        ``tile_id`` -> ``"computed"`` or why a tile measured no volumes.
    periods : geopandas.GeoDataFrame or None
        The tiles' owned period layers (:data:`mtg.pipeline.tile_run.PERIODS_FILE`: ``period``, ``kind``, EPSG:4326);
        None when a tile has none.
    """

    parts: gpd.GeoDataFrame
    part_volumes: pd.DataFrame
    deposits: gpd.GeoDataFrame
    dh: dict[str, dict[str, Any]]
    volumes: dict[str, str]
    periods: gpd.GeoDataFrame | None = None


@dataclass(frozen=True)
class WorldResult:
    """What the world stage wrote and found."""

    out: Path
    n_tiles: int
    n_footprints: int
    n_parts: int
    n_sites: int
    mining_km2: float
    n_deposits: int
    report: Path
    catalog: Path
    seconds: float


def read_tile_outputs(out: Path, tile_ids: list[str]) -> TileOutputs:
    """Read the outputs of the finished tiles ``tile_ids`` of the run folder ``out``.

    Raises
    ------
    MtgError
        Naming the tile folder when one of its files is missing or unreadable.
    """
    parts, volumes, deposits, dh, states = [], [], [], {}, {}
    periods: list[gpd.GeoDataFrame] | None = []
    for tile_id in sorted(tile_ids):
        folder = out / "tiles" / tile_id
        try:
            record = json.loads((folder / "tile.json").read_text())
            parts.append(gpd.read_parquet(folder / "footprints.parquet"))
            table = pd.read_parquet(folder / "part_volumes.parquet")
            frame = gpd.read_parquet(folder / "deposits.parquet")
            if periods is not None and (folder / PERIODS_FILE).exists():
                periods.append(gpd.read_parquet(folder / PERIODS_FILE))
            else:
                periods = None
        except (OSError, ValueError) as err:
            raise MtgError(f"tile folder {folder} is incomplete or unreadable ({err}); rerun the same command to "
                           f"redo the tile") from None
        states[tile_id] = record["volumes"]
        if record["volumes"] == "computed":
            dh[tile_id] = record["dh"]
            volumes.append(table.rename(columns={"site_id": "part_id"}))
        if len(frame):
            deposits.append(frame)
        if len(parts[-1]) == 0:
            parts.pop()
    empty = gpd.GeoDataFrame({"part_id": pd.Series([], dtype="string")}, geometry=[], crs="EPSG:4326")
    part_frame = (gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326")
                  if parts else empty)
    volume_frame = (pd.concat(volumes, ignore_index=True) if volumes
                    else pd.DataFrame({"part_id": pd.Series([], dtype="string")}))
    deposit_frame = (gpd.GeoDataFrame(pd.concat(deposits, ignore_index=True), geometry="geometry", crs="EPSG:4326")
                     if deposits else empty)
    period_frame = (gpd.GeoDataFrame(pd.concat(periods, ignore_index=True), geometry="geometry", crs="EPSG:4326")
                    if periods else None)
    return TileOutputs(parts=part_frame, part_volumes=volume_frame, deposits=deposit_frame, dh=dh, volumes=states,
                       periods=period_frame)


def merge_footprints(parts: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """World footprints from the tiles' parts: one polygon per group of touching parts of one feature type.

    Returns
    -------
    (geopandas.GeoDataFrame, numpy.ndarray)
        The footprints (``footprint_id`` ``F000001``..., ``feature_type``, area-weighted ``mean_probability``,
        ``max_probability``, geodesic ``area_m2``, ``n_parts``, ``tiles``), and the footprint row of each part.
    """
    if parts.empty:
        columns = {"footprint_id": pd.Series([], dtype="string"), "feature_type": pd.Series([], dtype="string"),
                   "mean_probability": [], "max_probability": [], "area_m2": [], "n_parts": [], "tiles": []}
        return gpd.GeoDataFrame(columns, geometry=[], crs="EPSG:4326"), np.zeros(0, dtype=int)
    merged, labels = merge_across_seams(parts, by="feature_type", weighted=("mean_probability",),
                                        maxima=("max_probability",))
    merged["tiles"] = [sorted(set(parts["tile_id"].to_numpy()[labels == k])) for k in range(len(merged))]
    merged.insert(0, "footprint_id", [f"F{k + 1:06d}" for k in range(len(merged))])
    return merged, labels


def site_volumes(sites: gpd.GeoDataFrame, part_site: np.ndarray, tiles: TileOutputs) -> gpd.GeoDataFrame | None:
    """Per-site volumes from the per-part volumes of the tiles (see the module docstring), or None when no tile
    measured volumes.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        The world's sites (``site_id``, geometry).
    part_site : numpy.ndarray
        The site id of each row of ``tiles.parts``.
    tiles : TileOutputs
    """
    if not tiles.dh:
        return None
    parts = pd.DataFrame({"part_id": tiles.parts["part_id"].to_numpy(), "tile_id": tiles.parts["tile_id"].to_numpy(),
                          "site_id": part_site})
    measured = parts.merge(tiles.part_volumes.drop(columns=["tile_id"], errors="ignore"), on="part_id", how="left")
    measured["measured"] = measured["tile_id"].isin(list(tiles.dh)) & measured["area_m2"].notna()
    measured["void_area_m2"] = measured["void_fraction"] * measured["area_m2"]
    by_tile = measured.groupby(["site_id", "tile_id"], sort=True).agg(
        **{c: (c, "sum") for c in (*PART_SUMS, "void_area_m2")}, measured=("measured", "all"))
    for column, area in SIGMA_AREAS.items():
        by_tile[column] = [_tile_sigma(tiles.dh.get(tile), a) for (_, tile), a in zip(by_tile.index, by_tile[area])]
    by_tile[[f"{c}_var" for c in SIGMA_AREAS]] = by_tile[list(SIGMA_AREAS)].to_numpy() ** 2
    per_site = by_tile.groupby(level="site_id", sort=True).agg(
        **{c: (c, "sum") for c in (*PART_SUMS, "void_area_m2")}, measured=("measured", "all"),
        n_tiles=("measured", "size"), **{f"{c}_var": (f"{c}_var", _sum_or_nan) for c in SIGMA_AREAS})
    for column in SIGMA_AREAS:
        per_site[column] = np.sqrt(per_site.pop(f"{column}_var"))
    per_site["void_fraction"] = per_site.pop("void_area_m2") / per_site["area_m2"].where(per_site["area_m2"] > 0)
    values = [*PART_SUMS, *SIGMA_AREAS, "void_fraction"]
    per_site.loc[~per_site["measured"], values] = np.nan
    table = per_site.drop(columns="measured").reset_index()
    frame = sites[["site_id", "geometry"]].assign(site_id=sites["site_id"].astype(str))
    frame = frame.merge(table.assign(site_id=table["site_id"].astype(str)), on="site_id", how="inner")
    order = ["site_id", "excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3",
             "net_sigma_m3", "excavated_area_m2", "deposited_area_m2", "area_m2", "void_fraction", "n_tiles",
             "geometry"]
    return gpd.GeoDataFrame(frame[order], geometry="geometry", crs=sites.crs)


def _sum_or_nan(values: pd.Series) -> float:
    """The sum, NaN when any value is unknown (a tile without stable terrain makes its sites' errors unknown)."""
    return float(values.sum(skipna=False))


def _tile_sigma(dh: dict[str, Any] | None, area_m2: float) -> float:
    """1-sigma volume error of an area measured in one tile, under that tile's dh statistics."""
    if dh is None or not np.isfinite(area_m2):
        return float("nan")
    variogram = dh["variogram"]
    known = [variogram["range_m"], variogram["sill_m2"], dh["nmad_m"]]
    if any(v is None or not np.isfinite(v) for v in known):  # no stable terrain in the tile: the error is unknown
        return float("nan")
    if variogram["range_m"] <= 0:  # identical epochs on stable terrain: no error to model
        return 0.0
    sill = variogram["sill_m2"]
    nugget_fraction = float(np.clip(variogram["nugget_m2"] / sill, 0.0, 1.0)) if sill > 0 else 0.0
    cell = dh["cell_size_m"]
    return float(volume_sigma(float(area_m2), dh["nmad_m"], variogram["range_m"], nugget_fraction=nugget_fraction,
                              cell_area_m2=float(cell[0] * cell[1])))


def merge_deposits(deposits: gpd.GeoDataFrame, part_site: dict[str, Any]) -> gpd.GeoDataFrame:
    """World waste deposits: deposit parts merged across tile edges, with their site.

    Volumes add up, mean thickness is area-weighted, the largest thickness kept; ``deposit_id`` ``D000001``...
    """
    columns = ["deposit_id", "site_id", "area_m2", "mean_thickness_m", "max_thickness_m", "volume_m3", "n_parts"]
    if deposits.empty:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")
    merged, labels = merge_across_seams(deposits, weighted=("mean_thickness_m",), summed=("volume_m3",),
                                        maxima=("max_thickness_m",))
    first_part = [deposits["part_id"].iloc[int(np.flatnonzero(labels == k)[0])] for k in range(len(merged))]
    merged["site_id"] = [str(part_site[p]) for p in first_part]
    merged["deposit_id"] = [f"D{k + 1:06d}" for k in range(len(merged))]
    return gpd.GeoDataFrame(merged[[*columns, "geometry"]], geometry="geometry", crs="EPSG:4326")


def world_timeline(out: Path, linked: Any, periods: gpd.GeoDataFrame | None,
                   config: RunConfig) -> tuple[pd.DataFrame | None, dict[str, Any] | None, dict[str, Any] | None]:
    """Per-site series of the tiles' period layers (:func:`mtg.pipeline.layer_series.layer_series`): each connected
    area decoded as mining goes to the site it overlaps most, a site's area is the geodesic area of the union of
    its areas, and the ground the tiles saw in a period is that period's coverage (a site wholly unseen has a
    missing area, not 0). Writes ``timeline/site_series.parquet``, ``timeline/site_timeline.parquet`` and
    ``timeline/period_footprints.parquet``.

    Returns
    -------
    (DataFrame or None, dict or None, dict or None)
        The per-site summary for the indicators, and the first and last periods' layers (area before and after);
        all None when no tile has period layers or no mining area overlaps a site.
    """
    from mtg.pipeline.layer_series import layer_series

    if periods is None:
        log.warning("timeline.tiles is set but some tiles have no period layers: the world has no timeline")
        return None, None, None
    labels = sorted(periods["period"].unique(), key=lambda label: pd.Period(label).start_time)
    mining = periods[periods["kind"] == "mining"]
    layers = {label: {f"{TIMELINE_SOURCE}#{label}": mining[mining["period"] == label].reset_index(drop=True)}
              for label in labels}
    coverage = {label: periods[(periods["kind"] == "seen") & (periods["period"] == label)] for label in labels}
    try:
        series, summary, measured = layer_series(linked.sites, linked.members, layers, cumulative=False,
                                                 coverage=coverage, min_area_m2=config.segment.min_area_m2)
    except MtgError as err:
        log.warning("no timeline: %s", err)
        return None, None, None
    folder = out / "timeline"
    metadata = {"source": "the tiles' period layers (timeline.tiles)", "periods": labels}
    areas = mining[["period", "geometry"]].reset_index(drop=True)
    areas.insert(1, "area_m2", geodesic_areas(areas))
    atomic_write_all({folder / "site_series.parquet": lambda p: series.to_parquet(p, index=False),
                      folder / "site_timeline.parquet": lambda p: summary.to_parquet(p, index=False),
                      out / TIMELINE_SOURCE: lambda p: to_geoparquet(areas, p, metadata)})
    log.info("timeline: %d sites over %d periods (%s)", series["site_id"].nunique(), len(labels), ", ".join(labels))
    first, last = (measured[0], measured[-1]) if len(measured) > 1 else (None, None)
    return summary, first, last


def run_world_stage(out: Path, tile_ids: list[str], config: RunConfig, n_planned: int,
                    failed: dict[str, str] | None = None) -> WorldResult:
    """Merge the finished tiles ``tile_ids`` of the run folder ``out`` into the world inventory and its tables,
    report and STAC catalog (see the module docstring).

    Parameters
    ----------
    out : pathlib.Path
        The run folder.
    tile_ids : list of str
        The tiles that finished (the others are left out, and the summary says how many).
    config : RunConfig
        ``link`` (points, more polygons, options), ``landuse``, ``verify``.
    n_planned : int
        Tiles in the plan (for the summary).
    failed : dict, optional
        ``tile_id`` -> error of the tiles that failed (left out of the inventory; the summary lists them).
    """
    start = time.perf_counter()
    tiles = read_tile_outputs(out, tile_ids)
    footprints, labels = merge_footprints(tiles.parts)
    log.info("merged %d footprint parts of %d tiles into %d mine footprints (%.3f km^2)", len(tiles.parts),
             len(tile_ids), len(footprints), footprints["area_m2"].sum() / 1e6)
    summary = {"tiles_planned": n_planned, "tiles_merged": len(tile_ids),
               "tiles_failed": dict(sorted((failed or {}).items())), "footprint_parts": len(tiles.parts),
               "footprints": len(footprints), "mining_area_m2": float(footprints["area_m2"].sum()),
               "tiles_without_volumes": {t: v for t, v in sorted(tiles.volumes.items()) if v != "computed"}}
    atomic_write(out / FOOTPRINTS_SOURCE, lambda p: footprints.to_parquet(p, index=False))

    lc = config.link
    polygons = {FOOTPRINTS_SOURCE: footprints.drop(columns=["tiles"]),
                **{portable_path(p, out): read_polygons(p) for p in lc.polygons}}
    points = None
    if lc.points:
        points = {portable_path(lc.points, out): read_points(lc.points, lc.lon_col, lc.lat_col)[0]}
    else:
        log.warning("no mine property points (--points, link.points): sites get no commodities")
    table = load_commodity_table(lc.commodity_table) if lc.commodity_table else None
    linked = link(polygons, points, commodity_table=table, options=lc)
    if table is not None:
        linked.metadata["commodity_table"] = portable_path(lc.commodity_table, out)
    write_sites(linked, out / "sites" / "sites.parquet")
    log.info("linked %d footprints and %d points into %d sites", len(footprints),
             int((linked.members["kind"] == "point").sum()), len(linked.sites))

    members = linked.members
    own = members[(members["source"] == FOOTPRINTS_SOURCE) & (members["kind"] == "polygon")]
    footprint_site = own.set_index("row")["site_id"].reindex(range(len(footprints))).to_numpy()
    part_site = footprint_site[labels] if len(labels) else np.zeros(0, dtype=object)
    volumes = site_volumes(linked.sites, part_site, tiles)
    deposits = merge_deposits(tiles.deposits, dict(zip(tiles.parts["part_id"], part_site)))
    if volumes is not None:
        volumes["waste_deposits"] = volumes["site_id"].map(deposits["site_id"].value_counts()).fillna(0).astype(int)
        atomic_write_all({out / "volumes" / "site_volumes.parquet": lambda p: volumes.to_parquet(p, index=False),
                          out / "volumes" / "waste_deposits.parquet": lambda p: deposits.to_parquet(p, index=False),
                          out / "volumes" / "tiles_dh.json":
                              lambda p: p.write_text(json.dumps(tiles.dh, indent=2, sort_keys=True) + "\n")})
    else:
        log.warning("no tile measured volumes (%s): the world has no volumes",
                    "; ".join(sorted(set(tiles.volumes.values()))) or "no tiles")

    timeline = before = after = None
    if config.timeline.tiles:
        timeline, before, after = world_timeline(out, linked, tiles.periods, config)

    lu = config.landuse
    countries = run_countries(lu.countries, out)
    tables = land_use(linked, countries=countries, options=lu)
    tables.summary["sites"] = "sites/sites.parquet"
    write_land_use_tables(tables, out / "landuse", {**linked.metadata, "sites": "sites/sites.parquet"})
    table = indicators(linked, site_volumes=volumes, waste_deposits=None if volumes is None else deposits,
                       footprints_before=before, footprints_after=after, timeline=timeline, countries=countries,
                       country_col=lu.country_col)
    parquet, _ = write_site_indicators(table, out / "indicators")
    if config.verify.reported:
        vc = config.verify
        write_verification(vc.reported, parquet, out / "verification", tolerance=vc.tolerance, sigma=vc.sigma,
                           max_distance_m=parse_distance(vc.max_distance, "verify.max_distance"))
    report = write_report(out)
    catalog = write_results_catalog(out)
    summary.update({"sites": len(linked.sites), "deposits": len(deposits),
                    "landuse_total_km2": tables.summary["total_km2"]})
    atomic_write(out / "world.json", lambda p: p.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n"))
    return WorldResult(out=out, n_tiles=len(tile_ids), n_footprints=len(footprints), n_parts=len(tiles.parts),
                       n_sites=len(linked.sites), mining_km2=float(footprints["area_m2"].sum() / 1e6),
                       n_deposits=len(deposits), report=report, catalog=catalog,
                       seconds=time.perf_counter() - start)
