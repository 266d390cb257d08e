"""Commodity land use: each site's area split equally among its primary commodities, and the cut chosen per site.

The rule (as in Maus et al. 2026, "A data-driven approach to mapping global commodity-specific mining land-use"):

* A site's area is the geodesic area (WGS-84 ellipsoid) of the union of its member polygons, as
  :func:`mtg.pipeline.link.link_sites` computes it. Sites made of points only have no footprint and no area.
* The area is split equally among the site's *primary* commodities: the union of the harmonised primary
  commodities of its linked points (ICMM's ``Primary Commodity``). A site with no linked point, or whose points name
  no primary commodity, counts as ``Unknown``.
* A site belongs to one country: the majority of its linked points' countries (ties: alphabetical), else of its
  member polygons', else ``Unknown``; with a boundary layer (``countries``) the country whose polygons cover most of
  the site's area (equal-area EPSG:6933), the attribute rule where none does.

Per-site cut (``choose_cut``). One hierarchy is cut at a grid of heights ``h_1 < ... < h_k = H`` (the members file
records the partitions). Each cluster ``c`` at ``H`` is split at every ``h`` into sub-sites ``s`` with area ``a_s``
and ``n_s`` primary commodities; with ``A = sum a_s``::

    u(h) = sum(a_s for n_s = 0) / A                  # share of the area without a commodity
    m(h) = sum(a_s * (n_s - 1) for n_s >= 1) / A     # extra commodity assignments, area-weighted
    d(h) = sqrt((u / max_h u)^2 + (m / max_h m)^2)   # a share whose maximum over the grid is 0 counts as 0

and ``c`` is cut at the ``h`` of least ``d`` (the smallest such ``h`` on ties): the point nearest the ideal
(nothing unassigned, nothing split) in the plane of the two normalised shares. These are Maus et al.'s local
optimisation's quantities (``perc_area_unknown`` and ``perc_area_multi_count`` of ``02-optimize-cluster-threshold.R``
in vwmaus/mining-spatial-data-integration, there with ``H`` = 10 km and a 1 km grid); that script writes the
distance as ``sqrt(m')^2 + u'^2``, which we read as the Euclidean distance intended. Clusters without polygons
keep ``H``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.commodities import name_list
from mtg.pipeline.errors import MtgError
from mtg.pipeline.link import (FootprintAreas, assemble_sites, cut_column, load_member_polygons, read_link_metadata,
                               read_polygons)
from mtg.pipeline.table_io import atomic_write_all, read_geoparquet, to_geoparquet, write_json, write_table

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
TOTAL = "Total"
AREA_METHOD = "geodesic area on the WGS-84 ellipsoid of the union of each site's member polygons"
OBJECTIVE = ("per cluster at H, the cut h of least sqrt((u/max u)^2 + (m/max m)^2): u = area share without a "
             "primary commodity, m = area-weighted share of extra commodity assignments (n - 1); ties: smallest h")
#: Columns a boundary layer's country name is looked for in (case-insensitive), in order.
BOUNDARY_NAME_COLUMNS = ("country", "name", "admin", "name_en", "country_name", "sovereignt", "name_long")


# ----------------------------------------------------------------------------------------------- the split


@dataclass
class LandUse:
    """Land-use tables of one set of sites.

    Attributes
    ----------
    by_commodity : pandas.DataFrame
        ``commodity, area_km2, share, n_sites``; ``Unknown`` then ``Total`` last.
    by_country : pandas.DataFrame
        ``country, area_km2, share, n_sites``; ``Total`` last.
    by_commodity_country : pandas.DataFrame
        ``commodity, country, area_km2, share, n_sites``; ``Total`` last.
    by_site : pandas.DataFrame
        One row per site with a footprint: ``site_id`` (text, as in the site indicators), ``cut_m, country,
        area_km2, n_commodities, commodities, area_per_commodity_km2``.
    summary : dict
        Totals and shares (see :func:`split_land_use`).
    """

    by_commodity: pd.DataFrame
    by_country: pd.DataFrame
    by_commodity_country: pd.DataFrame
    by_site: pd.DataFrame
    summary: dict[str, Any]


def _share(part: float, total: float) -> float | None:
    return float(part / total) if total > 0 else None


def split_land_use(sites: pd.DataFrame, cut_m: float | None = None) -> LandUse:
    """Split each site's area equally among its primary commodities and total it by commodity and country.

    Parameters
    ----------
    sites : pandas.DataFrame
        ``site_id`` (unique), ``area_km2`` (NaN for sites without footprint: left out), ``primary_commodities``
        (lists, or text split by :func:`mtg.pipeline.commodities.name_list`; ``commodities`` when absent), optional
        ``country`` (null: ``Unknown``) and ``cut_m``.
    cut_m : float, optional
        The cut the sites were linked at, for the summary.

    Returns
    -------
    LandUse
        The summary has ``total_km2``, ``linked_km2`` (sites with a primary commodity), ``unlinked_km2``
        (``Unknown``), ``linked_share``, ``unlinked_share``, ``multi_commodity_km2`` (sites with two or more primary
        commodities) and its share, ``multi_assignment_km2`` (``sum(area * (n - 1))``, Maus et al.'s measure) and
        its share, ``no_point_km2`` (sites with no linked point at all), site counts, ``cut_m`` and the area
        method. Shares are of ``total_km2`` (None when it is 0).
    """
    column = "primary_commodities" if "primary_commodities" in sites.columns else "commodities"
    for needed in ("site_id", "area_km2", column):
        if needed not in sites.columns:
            raise MtgError(f"the sites table has no column {needed!r}; its columns are {list(sites.columns)}")
    site_ids = sites["site_id"].astype(str)
    repeated = site_ids[site_ids.duplicated()]
    if len(repeated):
        raise MtgError(f"the sites table repeats site_id {repeated.iloc[0]!r} ({len(repeated)} repeated rows): "
                       f"each site must be one row")
    area = pd.to_numeric(sites["area_km2"], errors="coerce").to_numpy(dtype=np.float64)
    footprint = np.isfinite(area)
    table = pd.DataFrame({
        "site_id": site_ids.to_numpy()[footprint],
        "cut_m": (sites["cut_m"].to_numpy(dtype=np.float64) if "cut_m" in sites.columns
                  else np.full(len(sites), np.nan if cut_m is None else cut_m))[footprint],
        "country": (sites["country"].astype(object).where(sites["country"].notna(), UNKNOWN).to_numpy()
                    if "country" in sites.columns else np.full(len(sites), UNKNOWN, dtype=object))[footprint],
        "area_km2": area[footprint],
        "commodities": [name_list(v) for v in sites[column].to_numpy()[footprint]],
    })
    table["n_commodities"] = table["commodities"].map(len).astype(np.int64)
    table["area_per_commodity_km2"] = table["area_km2"] / table["n_commodities"].clip(lower=1)
    n_points = (sites["n_points"].to_numpy()[footprint] if "n_points" in sites.columns
                else np.where(table["n_commodities"] > 0, 1, 0))

    parts = table.assign(commodity=[c if c else [UNKNOWN] for c in table["commodities"]]).explode("commodity")
    parts = parts[["site_id", "commodity", "country", "area_per_commodity_km2"]].rename(
        columns={"area_per_commodity_km2": "area_km2"})
    total = float(table["area_km2"].sum())

    def grouped(keys: list[str]) -> pd.DataFrame:
        frame = parts.groupby(keys, sort=False).agg(area_km2=("area_km2", "sum"), n_sites=("site_id", "nunique"))
        frame = frame.reset_index()
        frame["share"] = frame["area_km2"] / total if total > 0 else np.nan
        unknown = np.zeros(len(frame), dtype=bool)
        for key in keys:
            unknown |= (frame[key] == UNKNOWN).to_numpy()
        frame = frame.assign(_unknown=unknown).sort_values(["_unknown", "area_km2", *keys],
                                                           ascending=[True, False] + [True] * len(keys))
        totals = {key: TOTAL for key in keys} | {"area_km2": total, "n_sites": len(table),
                                                 "share": 1.0 if total > 0 else np.nan}
        frame = pd.concat([frame.drop(columns="_unknown"), pd.DataFrame([totals])], ignore_index=True)
        frame["n_sites"] = frame["n_sites"].astype(np.int64)
        return frame[[*keys, "area_km2", "share", "n_sites"]]

    linked = float(table.loc[table["n_commodities"] > 0, "area_km2"].sum())
    multi = float(table.loc[table["n_commodities"] > 1, "area_km2"].sum())
    assignments = float((table["area_km2"] * (table["n_commodities"] - 1).clip(lower=0)).sum())
    no_point = float(table.loc[np.asarray(n_points) == 0, "area_km2"].sum())
    summary = {
        "total_km2": total, "linked_km2": linked, "unlinked_km2": total - linked,
        "linked_share": _share(linked, total), "unlinked_share": _share(total - linked, total),
        "multi_commodity_km2": multi, "multi_commodity_share": _share(multi, total),
        "multi_assignment_km2": assignments, "multi_assignment_share": _share(assignments, total),
        "no_point_km2": no_point, "no_point_share": _share(no_point, total),
        "n_sites": int(len(table)), "n_linked_sites": int((table["n_commodities"] > 0).sum()),
        "n_point_only_sites": int((~footprint).sum()), "cut_m": cut_m, "area_method": AREA_METHOD,
        "commodity_column": column,
    }
    by_site = table[["site_id", "cut_m", "country", "area_km2", "n_commodities", "commodities",
                     "area_per_commodity_km2"]].reset_index(drop=True)
    return LandUse(by_commodity=grouped(["commodity"]), by_country=grouped(["country"]),
                   by_commodity_country=grouped(["commodity", "country"]), by_site=by_site, summary=summary)


# ----------------------------------------------------------------------------------------------- the cut per site


def cut_objective(members: pd.DataFrame, levels: Sequence[float], footprints: FootprintAreas) -> pd.DataFrame:
    """Unassigned and multi-commodity shares of every cluster at ``H = max(levels)`` at every level.

    Parameters
    ----------
    members : pandas.DataFrame
        The members table of :func:`mtg.pipeline.link.link_sites`, with a ``cluster_<metres>`` column per level.
    levels : sequence of float
        Candidate cuts in metres; the largest is ``H``.
    footprints : FootprintAreas
        Polygon geometries by member index.

    Returns
    -------
    pandas.DataFrame
        ``cluster`` (label at ``H``), ``cut_m``, ``n_sites``, ``area_km2``, ``unknown_km2``, ``multi_km2``
        (``sum(a * (n - 1))``), ``unknown_share``, ``multi_share`` and ``distance`` (module docstring).
    """
    levels = sorted(float(v) for v in levels)
    if not levels:
        raise MtgError("choosing the cut per site needs at least one level")
    missing = [cut_column(v) for v in levels if cut_column(v) not in members.columns]
    if missing:
        recorded = sorted(c for c in members.columns if str(c).startswith("cluster_"))
        raise MtgError(f"the members file records no partition at {missing}; it has {recorded}: link again with "
                       f"mtg link --levels ...")
    kinds = members["kind"].to_numpy()
    primary = members["primary_commodities"].to_numpy()
    top = members[cut_column(levels[-1])].to_numpy()
    rows = []
    for level in levels:
        labels = members[cut_column(level)].to_numpy()
        order = np.argsort(labels, kind="stable")
        for index in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if labels.size else []:
            if np.unique(top[index]).size != 1:
                raise MtgError(f"the partition at {level:g} m is not nested in the one at {levels[-1]:g} m: the "
                               f"members file is inconsistent; link again")
            poly = index[kinds[index] == "polygon"]
            pts = index[kinds[index] == "point"]
            area = footprints.area(poly) if poly.size else 0.0
            n = len({name for k in pts for name in primary[k]})
            rows.append((int(top[index[0]]), level, area, area if n == 0 else 0.0, area * max(n - 1, 0)))
    frame = pd.DataFrame(rows, columns=["cluster", "cut_m", "area_km2", "unknown_km2", "multi_km2"])
    frame["n_sites"] = 1
    frame = frame.groupby(["cluster", "cut_m"], sort=True).sum().reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["unknown_share"] = np.where(frame["area_km2"] > 0, frame["unknown_km2"] / frame["area_km2"], 0.0)
        frame["multi_share"] = np.where(frame["area_km2"] > 0, frame["multi_km2"] / frame["area_km2"], 0.0)
    scale = frame.groupby("cluster")[["unknown_share", "multi_share"]].transform("max")
    u = np.where(scale["unknown_share"] > 0, frame["unknown_share"] / scale["unknown_share"].where(
        scale["unknown_share"] > 0, 1.0), 0.0)
    m = np.where(scale["multi_share"] > 0, frame["multi_share"] / scale["multi_share"].where(
        scale["multi_share"] > 0, 1.0), 0.0)
    frame["distance"] = np.hypot(u, m)
    return frame[["cluster", "cut_m", "n_sites", "area_km2", "unknown_km2", "multi_km2", "unknown_share",
                  "multi_share", "distance"]]


def choose_site_cuts(members: pd.DataFrame, levels: Sequence[float], footprints: FootprintAreas,
                     objective: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut each cluster at ``H = max(levels)`` at the level that balances unassigned and multi-commodity area.

    Parameters
    ----------
    members, levels, footprints
        As for :func:`cut_objective`.
    objective : pandas.DataFrame, optional
        Its result, when already computed.

    Returns
    -------
    labels : numpy.ndarray
        int64 site label of each member (sites numbered 0, 1, ... in order of their first member).
    cut_m : numpy.ndarray
        float64 chosen cut of each member's site. Clusters without polygons keep ``H``.
    """
    levels = sorted(float(v) for v in levels)
    frame = cut_objective(members, levels, footprints) if objective is None else objective
    has_area = frame.groupby("cluster")["area_km2"].transform("max") > 0
    best = frame[has_area].sort_values(["cluster", "distance", "cut_m"], kind="stable").groupby("cluster").head(1)
    chosen = dict(zip(best["cluster"].astype(int), best["cut_m"].astype(float)))
    top = members[cut_column(levels[-1])].to_numpy()
    cut_m = np.array([chosen.get(int(t), levels[-1]) for t in top], dtype=np.float64)
    keys = np.empty(len(members), dtype=np.int64)
    for level in levels:
        at = cut_m == level
        keys[at] = members[cut_column(level)].to_numpy()[at]
    pairs = pd.Series(list(zip(cut_m, keys)))
    labels = pd.factorize(pairs)[0].astype(np.int64)
    return labels, cut_m


# ----------------------------------------------------------------------------------------------- countries


def largest_overlap(geometries, targets, keys: Sequence) -> list:
    """For each geometry, the key of the targets that cover most of it, compared in the equal-area EPSG:6933.

    Targets sharing a key add up; a point or multi-point geometry counts its points inside each target. Ties go to
    the smallest key; an empty geometry, or one that intersects no target, gets None.

    Parameters
    ----------
    geometries, targets : geopandas.GeoSeries
        Any CRS (EPSG:4326 when unset).
    keys : sequence
        One key per target.
    """
    import geopandas as gpd
    import shapely

    def equal_area(series) -> np.ndarray:
        series = gpd.GeoSeries(series)
        series = series.set_crs("EPSG:4326") if series.crs is None else series
        return series.to_crs("EPSG:6933").make_valid().to_numpy()

    polys, keys = equal_area(targets), list(keys)
    tree = shapely.STRtree(polys)
    out: list = []
    for geometry in equal_area(geometries):
        hits = tree.query(geometry, predicate="intersects") if geometry is not None and not geometry.is_empty \
            else np.array([], dtype=np.int64)
        if hits.size == 0:
            out.append(None)
            continue
        if shapely.get_dimensions(geometry) == 0:
            parts = shapely.get_parts(geometry)
            weight = [shapely.intersects(polys[h], parts).sum() for h in hits]
        else:
            weight = [shapely.intersection(polys[h], geometry).area for h in hits]
        by_key: dict = {}
        for h, w in zip(hits, weight):
            by_key[keys[h]] = by_key.get(keys[h], 0.0) + float(w)
        out.append(min(by_key, key=lambda k: (-by_key[k], k)))
    return out


def countries_from_boundaries(geometries, boundaries: str | Path, name_col: str | None = None) -> list[str | None]:
    """The country of each geometry from a boundary polygon layer: the one covering most of its area
    (:func:`largest_overlap`; points take the polygon containing most of them). Geometries outside every polygon get
    None.

    Parameters
    ----------
    geometries : geopandas.GeoSeries
        Site geometries (any CRS).
    boundaries : path
        Polygon layer (GeoPackage, GeoParquet, shapefile, ...).
    name_col : str, optional
        Column of the country names; default the first of :data:`BOUNDARY_NAME_COLUMNS` (case-insensitive).
    """
    path = Path(boundaries)
    layer = read_polygons(path)
    if name_col is None:
        lower = {str(c).casefold(): c for c in layer.columns if c != layer.geometry.name}
        name_col = next((lower[c] for c in BOUNDARY_NAME_COLUMNS if c in lower), None)
        if name_col is None:
            raise MtgError(f"{path} has no country-name column (looked for {list(BOUNDARY_NAME_COLUMNS)}); its "
                           f"columns are {list(layer.columns)}: name it with --country-col")
    elif name_col not in layer.columns:
        raise MtgError(f"{path} has no column {name_col!r}; its columns are {list(layer.columns)}")
    return largest_overlap(geometries, layer.geometry, layer[name_col].astype(str).to_numpy())


def apply_countries(sites, boundaries: str | Path | None, name_col: str | None = None):
    """``sites`` with ``country`` from the boundary layer where it covers them (the attribute rule elsewhere)."""
    if boundaries is None or len(sites) == 0:
        return sites
    found = countries_from_boundaries(sites.geometry, boundaries, name_col)
    sites = sites.copy()
    current = sites["country"] if "country" in sites.columns else pd.Series([None] * len(sites), index=sites.index)
    sites["country"] = pd.array([f if f is not None else (None if pd.isna(c) else c)
                                 for f, c in zip(found, current)], dtype="string")
    return sites


# ----------------------------------------------------------------------------------------------- files


def read_sites(path: str | Path):
    """A sites GeoParquet (from :func:`mtg.pipeline.link.link_sites`), checked for the columns land use needs."""
    path = Path(path)
    sites = read_geoparquet(path, "sites")
    missing = [c for c in ("site_id", "area_km2", "commodities") if c not in sites.columns]
    if missing:
        raise MtgError(f"sites file {path} lacks the column(s) {missing}; its columns are {list(sites.columns)} "
                       f"(write it with mtg link --polygons ...)")
    if "primary_commodities" not in sites.columns:
        log.warning("%s has no primary_commodities (written by an older mtg link): splitting among all linked "
                    "commodities", path)
    return sites


def read_members(sites: str | Path) -> pd.DataFrame:
    """The members file beside a sites file (``<stem>_members.parquet``), checked for what other cuts need."""
    sites = Path(sites)
    path = sites.with_name(f"{sites.stem}_members.parquet")
    if not path.is_file():
        raise MtgError(f"members file {path} of {sites} does not exist")
    members = pd.read_parquet(path)
    missing = [c for c in ("source", "kind", "row", "primary_commodities", "country", "lon", "lat")
               if c not in members.columns]
    if missing:
        raise MtgError(f"members file {path} lacks {missing} (written by an older mtg link): link again")
    return members.reset_index(drop=True)


@dataclass
class LandUseResult:
    """What :func:`write_land_use` wrote."""

    out: Path
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    sensitivity: pd.DataFrame | None = None
    seconds: float = 0.0


def _recorded_levels(members: pd.DataFrame) -> list[float]:
    return sorted(float(str(c).removeprefix("cluster_")) for c in members.columns if str(c).startswith("cluster_"))


def write_land_use(sites: str | Path, out: str | Path, *, choose_cut: bool = False, h_max: float | None = None,
                   sensitivity: Sequence[float] = (), countries: str | Path | None = None,
                   country_col: str | None = None) -> LandUseResult:
    """Commodity land use of a sites file, written into the folder ``out``.

    Parameters
    ----------
    sites : path
        Sites GeoParquet of :func:`mtg.pipeline.link.link_sites` (its members file beside it).
    out : path
        Output folder: ``landuse_by_commodity``, ``landuse_by_country``, ``landuse_by_commodity_country`` and
        ``landuse_by_site`` (each ``.parquet`` and ``.csv``) and ``summary.json``.
    choose_cut : bool
        Re-form the sites with a cut per site (:func:`choose_site_cuts`) among the recorded levels ``<= h_max``;
        also writes ``cut_objective`` and ``sites_chosen.parquet`` (with the countries used) and its members file.
        With cuts chosen per site (here or by ``mtg link --choose-cut``) the summary's ``cut_m`` is null and
        ``choose_cut`` (``h_max_m``, ``levels_m``, the objective), ``chosen_cuts`` (site -> metres) and
        ``chosen_cut_counts`` (metres -> sites with a footprint) say which cuts were chosen.
    h_max : float, optional
        Largest cut ``H`` of the choice (metres); default the sites' cut.
    sensitivity : sequence of float
        Recorded cuts (metres) at which to repeat the split: ``landuse_sensitivity`` (one row per cut, and the
        chosen cuts as a row with ``cut_m`` null) and ``landuse_sensitivity_by_commodity``.
    countries : path, optional
        Country boundary layer (:func:`countries_from_boundaries`).
    country_col : str, optional
        Its country-name column.

    Returns
    -------
    LandUseResult
    """
    start = time.perf_counter()
    sites_path, out = Path(sites), Path(out)
    frame = read_sites(sites_path)
    meta = read_link_metadata(sites_path)
    cut = meta.get("cut_m")
    per_site = choose_cut or bool(meta.get("choose_cut"))
    levels = [float(v) for v in meta.get("levels_m", []) if cut is None or float(v) <= cut]
    files: list[Path] = []
    members = footprints = chosen_members = None
    if choose_cut or sensitivity:
        members = read_members(sites_path)
        recorded = _recorded_levels(members)
        footprints = FootprintAreas(load_member_polygons(members, sites_path.parent))
        footprints.add_hierarchy([members[cut_column(v)].to_numpy() for v in recorded],
                                 (members["kind"] == "polygon").to_numpy(), disjoint=meta.get("linkage") == "single")
    if choose_cut:
        top = float(h_max) if h_max is not None else float(cut if cut is not None else max(recorded))
        if top not in recorded:
            raise MtgError(f"--h-max {top:g} m is not a recorded cut of {sites_path} (recorded: "
                           f"{[f'{v:g}' for v in recorded]} m): link again with --levels")
        levels = [v for v in recorded if v <= top]
        if len(levels) < 2:
            raise MtgError(f"{sites_path} records no cut below {top:g} m to choose from: link again with --levels, "
                           f"e.g. --levels 1km,2km,5km")
        objective = cut_objective(members, levels, footprints)
        labels, cut_of_member = choose_site_cuts(members, levels, footprints, objective)
        frame = assemble_sites(members, labels, footprints, cut_of_member)
        chosen_members = members.drop(columns="site_id").assign(site_id=labels)
        files += write_table(objective, out, "cut_objective")
        cut = top
    frame = apply_countries(frame, countries, country_col)
    if chosen_members is not None:
        chosen_meta = {**meta, "choose_cut": True, "cut_m": cut, "sites": str(sites_path)}
        files += atomic_write_all({out / "sites_chosen.parquet": lambda p: to_geoparquet(frame, p, chosen_meta),
                                   out / "sites_chosen_members.parquet":
                                       lambda p: chosen_members.to_parquet(p, index=False)})
    landuse = split_land_use(frame, cut_m=None if per_site else cut)
    summary = {**landuse.summary, "sites": str(sites_path), "countries": None if countries is None else str(countries)}
    if per_site:
        summary["choose_cut"] = {"h_max_m": cut, "levels_m": levels, "objective": OBJECTIVE}
        chosen = landuse.by_site.set_index("site_id")["cut_m"]
        summary["chosen_cuts"] = {str(k): float(v) for k, v in chosen.items()}
        summary["chosen_cut_counts"] = {f"{k:g}": int(v) for k, v in chosen.value_counts().sort_index().items()}
    for name, table in (("landuse_by_commodity", landuse.by_commodity), ("landuse_by_country", landuse.by_country),
                        ("landuse_by_commodity_country", landuse.by_commodity_country),
                        ("landuse_by_site", landuse.by_site)):
        files += write_table(table, out, name)
    table = None
    if sensitivity:
        table, by_commodity = land_use_sensitivity(members, footprints, sensitivity, countries, country_col)
        if per_site:
            row = {"cut_m": np.nan, "cut": "chosen per site", **_summary_row(landuse.summary)}
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
            chosen_rows = landuse.by_commodity.assign(cut_m=np.nan, cut="chosen per site")
            by_commodity = pd.concat([by_commodity, chosen_rows[by_commodity.columns]], ignore_index=True)
        files += write_table(table, out, "landuse_sensitivity")
        files += write_table(by_commodity, out, "landuse_sensitivity_by_commodity")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    files.append(write_json(summary, out / "summary.json"))
    return LandUseResult(out=out, summary=summary, files=files, sensitivity=table, seconds=summary["seconds"])


def _summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("n_sites", "total_km2", "linked_km2", "linked_share", "unlinked_km2", "unlinked_share",
            "multi_commodity_km2", "multi_commodity_share", "multi_assignment_km2", "no_point_km2")
    return {k: summary[k] for k in keys}


def land_use_sensitivity(members: pd.DataFrame, footprints: FootprintAreas, cuts: Sequence[float],
                         countries: str | Path | None = None,
                         country_col: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Land-use totals and shares with every site at one cut, for each of ``cuts`` (recorded in ``members``).

    Returns
    -------
    summary : pandas.DataFrame
        One row per cut: ``cut_m``, ``cut`` (text), ``n_sites``, ``total_km2``, ``linked_km2``, ``linked_share``,
        ``unlinked_km2``, ``unlinked_share``, ``multi_commodity_km2``, ``multi_commodity_share``,
        ``multi_assignment_km2``, ``no_point_km2``.
    by_commodity : pandas.DataFrame
        ``cut_m``, ``cut``, ``commodity``, ``area_km2``, ``share``, ``n_sites`` per cut.
    """
    recorded = _recorded_levels(members)
    rows, parts = [], []
    for cut in sorted(float(c) for c in cuts):
        if cut not in recorded:
            raise MtgError(f"--sensitivity {cut:g} m is not a recorded cut (recorded: {[f'{v:g}' for v in recorded]} "
                           f"m): link again with --levels including it and --h-max at least as large")
        sites = assemble_sites(members, members[cut_column(cut)].to_numpy(), footprints, cut,
                               with_geometry=countries is not None)
        sites = apply_countries(sites, countries, country_col)
        landuse = split_land_use(sites, cut_m=cut)
        label = f"{cut / 1000:g} km" if cut >= 1000 else f"{cut:g} m"
        rows.append({"cut_m": cut, "cut": label, **_summary_row(landuse.summary)})
        parts.append(landuse.by_commodity.assign(cut_m=cut, cut=label))
    by_commodity = pd.concat(parts, ignore_index=True)[["cut_m", "cut", "commodity", "area_km2", "share", "n_sites"]]
    return pd.DataFrame(rows), by_commodity
