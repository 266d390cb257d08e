"""Commodity land use: each site's area split equally among its primary commodities, and the cut chosen per site.

The rule (as in Maus et al. 2026, "A data-driven approach to mapping global commodity-specific mining land-use"):

* A site's area is the geodesic area (WGS-84 ellipsoid) of the union of its member polygons, as
  :func:`mtg.pipeline.link.link_sites` computes it. Sites made of points only have no footprint and no area.
* The area is split equally among the site's *primary* commodities: the union of the harmonised primary
  commodities of its linked points (ICMM's ``Primary Commodity``). A site with no linked point, or whose points name
  no primary commodity, counts as ``Unknown``.
* A site belongs to one country: the majority of its linked points' countries (ties: alphabetical), else of its
  member polygons', else ``Unknown``; with a boundary layer (``countries``) the country whose polygons cover most of
  the site's area (equal-area EPSG:6933; for a site of points only, the one containing its ``lon``/``lat``), the
  attribute rule where none does.

The per-site work (the unions and geodesic areas of the sites re-formed at other cuts, the overlay with a boundary
layer) runs as dask tasks on whichever scheduler is active (``mtg landuse --scheduler``), each task a group of whole
clusters at the largest recorded cut (or of sites) of about :data:`PER_TASK` rows: every site lies in one task, so the
numbers do not depend on the scheduler or the grouping.

Per-site cut (``choose_cut``): each cluster at the largest cut ``H`` is cut at the recorded cut that balances the
area without a commodity against the area with several (:mod:`mtg.pipeline.cut_choice`).

:func:`land_use` works on frames (a :class:`mtg.pipeline.link.LinkedSites`, or sites and members tables);
:func:`write_land_use` reads a sites file, calls it and writes the tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from mtg.pipeline.commodities import name_list
from mtg.pipeline.config import LandUseOptions, stage_options
from mtg.pipeline.cut_choice import OBJECTIVE, choose_site_cuts, cut_objective
from mtg.pipeline.errors import MtgError
from mtg.pipeline.inventory import polygon_inventory
from mtg.pipeline.link import LinkedSites
from mtg.pipeline.linker import cut_column, parse_distance
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.site_assembly import FootprintAreas, assemble_sites, site_shapes

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
TOTAL = "Total"
AREA_METHOD = "geodesic area on the WGS-84 ellipsoid of the union of each site's member polygons"
#: Columns a boundary layer's country name is looked for in (case-insensitive), in order.
BOUNDARY_NAME_COLUMNS = ("country", "name", "admin", "name_en", "country_name", "sovereignt", "name_long")
#: Members (for a sites table: sites) per dask task of the per-site work.
PER_TASK = 10_000


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


def countries_from_boundaries(geometries, boundaries, name_col: str | None = None) -> list[str | None]:
    """The country of each geometry from a boundary polygon layer: the one covering most of its area
    (:func:`largest_overlap`; points take the polygon containing most of them). Geometries outside every polygon get
    None.

    Parameters
    ----------
    geometries : geopandas.GeoSeries
        Site geometries (any CRS).
    boundaries : geopandas.GeoDataFrame
        Country polygons (any CRS), e.g. :func:`mtg.pipeline.io.read_polygons` of a boundary file; its
        ``attrs["source"]`` names it in errors.
    name_col : str, optional
        Column of the country names; default the first of :data:`BOUNDARY_NAME_COLUMNS` (case-insensitive).
    """
    path = boundaries.attrs.get("source", "the country boundaries")
    layer = polygon_inventory(boundaries, path)
    if name_col is None:
        lower = {str(c).casefold(): c for c in layer.columns if c != layer.geometry.name}
        name_col = next((lower[c] for c in BOUNDARY_NAME_COLUMNS if c in lower), None)
        if name_col is None:
            raise MtgError(f"{path} has no country-name column (looked for {list(BOUNDARY_NAME_COLUMNS)}); its "
                           f"columns are {list(layer.columns)}: name it with --country-col")
    elif name_col not in layer.columns:
        raise MtgError(f"{path} has no column {name_col!r}; its columns are {list(layer.columns)}")
    return largest_overlap(geometries, layer.geometry, layer[name_col].astype(str).to_numpy())


def apply_countries(sites, boundaries, name_col: str | None = None):
    """``sites`` with ``country`` from the boundary layer where it covers their footprints, or the location of a
    site of points only (:func:`mtg.pipeline.site_assembly.site_shapes`); the attribute rule elsewhere."""
    import geopandas as gpd

    if boundaries is None or len(sites) == 0:
        return sites
    found = countries_from_boundaries(gpd.GeoSeries(site_shapes(sites), crs="EPSG:4326"), boundaries, name_col)
    sites = sites.copy()
    current = sites["country"] if "country" in sites.columns else pd.Series([None] * len(sites), index=sites.index)
    sites["country"] = pd.array([f if f is not None else (None if pd.isna(c) else c)
                                 for f, c in zip(found, current)], dtype="string")
    return sites


# ----------------------------------------------------------------------------------------------- the stage


#: Columns a sites table needs for land use.
SITES_NEED = ("site_id", "area_km2", "commodities")


@dataclass
class LandUseTables:
    """What :func:`land_use` found.

    Attributes
    ----------
    landuse : LandUse
        The tables by commodity, country, both, and site.
    summary : dict
        Totals and shares, with the cut and, for cuts chosen per site, the choice (``choose_cut``,
        ``chosen_cuts``, ``chosen_cut_counts``).
    objective : pandas.DataFrame, optional
        The per-site cut objective (when the cut was chosen here).
    chosen_sites, chosen_members : optional
        The sites re-formed at the chosen cuts, and their members (when chosen here).
    sensitivity, sensitivity_by_commodity : pandas.DataFrame, optional
        The split repeated at other cuts.
    """

    landuse: LandUse
    summary: dict[str, Any]
    objective: pd.DataFrame | None = None
    chosen_sites: Any = None
    chosen_members: Any = None
    sensitivity: pd.DataFrame | None = None
    sensitivity_by_commodity: pd.DataFrame | None = None


def _recorded_levels(members: pd.DataFrame) -> list[float]:
    return sorted(float(str(c).removeprefix("cluster_")) for c in members.columns if str(c).startswith("cluster_"))


def _hierarchy(members, linkage: str | None) -> FootprintAreas:
    footprints = FootprintAreas([g if k == "polygon" else None for g, k in zip(members.geometry, members["kind"])])
    footprints.add_hierarchy([members[cut_column(v)].to_numpy() for v in _recorded_levels(members)],
                             (members["kind"] == "polygon").to_numpy(), disjoint=linkage == "single")
    return footprints


def _cluster_parts(members: pd.DataFrame, recorded: list[float]) -> list[np.ndarray]:
    """Row positions (ascending) of groups of whole clusters at the largest recorded cut, about :data:`PER_TASK`
    rows each: every site of every recorded cut lies in one group."""
    if not recorded or len(members) == 0:
        return [np.arange(len(members))]
    top = members[cut_column(recorded[-1])].to_numpy()
    order = np.argsort(top, kind="stable")
    # whole clusters in order until a part holds PER_TASK rows: cut the sorted rows after the last member of each
    ends = np.append(np.flatnonzero(np.diff(top[order])) + 1, order.size)
    cuts, start = [], 0
    for end in ends:
        if end - start >= PER_TASK or end == order.size:
            cuts.append(end)
            start = end
    return [np.sort(part) for part in np.split(order, cuts[:-1])]


def _part_sites(members: pd.DataFrame, footprints: FootprintAreas, labels: np.ndarray, cut_m: np.ndarray | float,
                countries: Any, country_col: str | None, with_geometry: bool) -> Any:
    """One task: the sites of a group of members, with their countries from the boundary layer."""
    sites = assemble_sites(members, labels, footprints, cut_m, with_geometry=with_geometry)
    return apply_countries(sites, countries, country_col)


def _chosen_part(members: pd.DataFrame, positions: np.ndarray, chosen: tuple[np.ndarray, np.ndarray],
                 footprints: FootprintAreas, countries: Any, country_col: str | None) -> Any:
    """One task: the sites at the cuts chosen per site (``chosen``: labels and cuts of all members) of a group."""
    labels, cut_m = chosen
    return _part_sites(members, footprints, labels[positions], cut_m[positions], countries, country_col, True)


def _concat(frames: list[pd.DataFrame], by: list[str] | None = None) -> pd.DataFrame:
    """The tasks' frames as one, sorted by ``by`` (in task order without)."""
    frame = pd.concat(frames, ignore_index=True)
    return frame if by is None else frame.sort_values(by, kind="stable", ignore_index=True)


@dataclass
class _SiteWork:
    """What the dask tasks of :func:`_site_work` computed."""

    objective: pd.DataFrame | None
    labels: np.ndarray | None
    cut_m: np.ndarray | None
    chosen_sites: Any
    sites_by_cut: dict[float, Any]


def _site_work(members: pd.DataFrame, linkage: str | None, levels: list[float] | None, cuts: list[float],
               countries: Any, country_col: str | None) -> _SiteWork:
    """The cut chosen per site among ``levels`` (None: not chosen) and the sites at each of ``cuts``, as dask tasks
    over groups of whole clusters (:func:`_cluster_parts`) on the active scheduler."""
    recorded = _recorded_levels(members)
    parts = [(pos, members.iloc[pos].reset_index(drop=True)) for pos in _cluster_parts(members, recorded)]
    shared = dask.delayed(countries, traverse=False)
    footprints = [dask.delayed(_hierarchy)(part, linkage) for _, part in parts]
    objective = chosen = chosen_sites = None
    if levels is not None:
        objective = dask.delayed(_concat)([dask.delayed(cut_objective)(part, levels, fp)
                                           for (_, part), fp in zip(parts, footprints)], ["cluster", "cut_m"])
        chosen = dask.delayed(choose_site_cuts, nout=2)(members, levels, None, objective)
        chosen_sites = dask.delayed(_concat)([dask.delayed(_chosen_part)(part, pos, chosen, fp, shared, country_col)
                                              for (pos, part), fp in zip(parts, footprints)], ["site_id"])
    by_cut = {cut: dask.delayed(_concat)([
        dask.delayed(_part_sites)(part, fp, part[cut_column(cut)].to_numpy(), cut, shared, country_col,
                                  countries is not None) for (_, part), fp in zip(parts, footprints)], ["site_id"])
        for cut in cuts}
    objective, chosen, chosen_sites, by_cut = dask.compute(objective, chosen, chosen_sites, by_cut)
    labels, cut_m = chosen if chosen is not None else (None, None)
    return _SiteWork(objective=objective, labels=labels, cut_m=cut_m, chosen_sites=chosen_sites, sites_by_cut=by_cut)


def _countries_of_table(sites: Any, countries: Any, country_col: str | None) -> Any:
    """:func:`apply_countries` of a sites table as dask tasks of about :data:`PER_TASK` sites."""
    if countries is None or len(sites) == 0:
        return sites
    shared = dask.delayed(countries, traverse=False)
    tasks = [dask.delayed(apply_countries)(sites.iloc[start:start + PER_TASK], shared, country_col)
             for start in range(0, len(sites), PER_TASK)]
    (frame,) = dask.compute(dask.delayed(_concat)(tasks))
    return frame.set_axis(sites.index)


def land_use(sites: Any, members: Any = None, *, metadata: dict[str, Any] | None = None, countries: Any = None,
             options: LandUseOptions | None = None, **overrides: Any) -> LandUseTables:
    """Commodity land use of linked sites, in memory.

    Parameters
    ----------
    sites : LinkedSites or geopandas.GeoDataFrame
        The result of :func:`mtg.pipeline.link.link` (its members and parameters come with it), or a sites table
        (``site_id``, ``area_km2``, ``commodities``, ``primary_commodities``, ``country``, geometry).
    members : geopandas.GeoDataFrame, optional
        The members table; needed to choose the cut per site or to repeat the split at other cuts.
    metadata : dict, optional
        The link parameters (``cut_m``, ``levels_m``, ``choose_cut``, ``linkage``) when ``sites`` is a table.
    countries : geopandas.GeoDataFrame, optional
        Country boundary polygons; default the linked points' country attribute.
    options : LandUseOptions, optional
        ``choose_cut`` (re-form the sites with a cut per site among the recorded levels ``<= h_max``), ``h_max``
        (default the sites' cut), ``sensitivity`` (recorded cuts at which to repeat the split), ``country_col``
        (the boundaries' name column); keyword arguments override them.

    Returns
    -------
    LandUseTables

    Examples
    --------
    >>> import geopandas as gpd, pandas as pd, shapely
    >>> from mtg.api import land_use, link
    >>> pits = gpd.GeoDataFrame(geometry=[shapely.box(118.0, -22.0, 118.01, -21.99)], crs="EPSG:4326")
    >>> mines = pd.DataFrame({"lon": [118.012], "lat": [-21.995], "Primary Commodity": ["Iron ore"]})
    >>> tables = land_use(link(pits, mines, cut="1km"))
    >>> tables.landuse.by_commodity[["commodity", "share"]].to_dict("records")
    [{'commodity': 'iron ore', 'share': 1.0}, {'commodity': 'Total', 'share': 1.0}]
    """
    opts = stage_options(LandUseOptions, options, **overrides)
    if isinstance(sites, LinkedSites):
        sites, members, metadata = sites.sites, (sites.members if members is None else members), sites.metadata
    meta = dict(metadata or {})
    missing = [c for c in SITES_NEED if c not in sites.columns]
    if missing:
        raise MtgError(f"the sites lack the column(s) {missing}; their columns are {list(sites.columns)} (link them "
                       f"with mtg link --polygons ...)")
    frame = sites
    cut = meta.get("cut_m")
    per_site = opts.choose_cut or bool(meta.get("choose_cut"))
    levels = [float(v) for v in meta.get("levels_m", []) if cut is None or float(v) <= cut]
    sensitivity = sorted({float(parse_distance(v, "--sensitivity")) for v in opts.sensitivity})
    tables: dict[str, Any] = {}
    if opts.choose_cut or sensitivity:
        if members is None:
            raise MtgError("choosing the cut per site and the sensitivity need the members of the sites")
        recorded = _recorded_levels(members)
        for value in sensitivity:
            if value not in recorded:
                raise MtgError(f"--sensitivity {value:g} m is not a recorded cut (recorded: "
                               f"{[f'{v:g}' for v in recorded]} m): link again with --levels including it and --h-max "
                               f"at least as large")
    if opts.choose_cut:
        h_max = parse_distance(opts.h_max, "--h-max") if opts.h_max is not None else None
        top = float(h_max) if h_max is not None else float(cut if cut is not None else max(recorded))
        if top not in recorded:
            raise MtgError(f"--h-max {top:g} m is not a recorded cut of the sites (recorded: "
                           f"{[f'{v:g}' for v in recorded]} m): link again with --levels")
        levels = [v for v in recorded if v <= top]
        if len(levels) < 2:
            raise MtgError(f"the sites record no cut below {top:g} m to choose from: link again with --levels, "
                           f"e.g. --levels 1km,2km,5km")
        cut = top
    if opts.choose_cut or sensitivity:
        work = _site_work(members, meta.get("linkage"), levels if opts.choose_cut else None, sensitivity, countries,
                          opts.country_col)
    if opts.choose_cut:
        frame = work.chosen_sites
        tables.update(objective=work.objective, chosen_sites=frame,
                      chosen_members=members.drop(columns="site_id").assign(site_id=work.labels))
    else:
        frame = _countries_of_table(frame, countries, opts.country_col)
    landuse = split_land_use(frame, cut_m=None if per_site else cut)
    summary = {**landuse.summary, "countries": None if countries is None else
               countries.attrs.get("source", "boundary polygons")}
    if per_site:
        summary["choose_cut"] = {"h_max_m": cut, "levels_m": levels, "objective": OBJECTIVE}
        chosen = landuse.by_site.set_index("site_id")["cut_m"]
        summary["chosen_cuts"] = {str(k): float(v) for k, v in chosen.items()}
        summary["chosen_cut_counts"] = {f"{k:g}": int(v) for k, v in chosen.value_counts().sort_index().items()}
    if sensitivity:
        table, by_commodity = land_use_sensitivity(work.sites_by_cut)
        if per_site:
            row = {"cut_m": np.nan, "cut": "chosen per site", **_summary_row(landuse.summary)}
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
            chosen_rows = landuse.by_commodity.assign(cut_m=np.nan, cut="chosen per site")
            by_commodity = pd.concat([by_commodity, chosen_rows[by_commodity.columns]], ignore_index=True)
        tables.update(sensitivity=table, sensitivity_by_commodity=by_commodity)
    return LandUseTables(landuse=landuse, summary=summary, **tables)


@dataclass
class LandUseResult:
    """What :func:`write_land_use` wrote."""

    out: Path
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    sensitivity: pd.DataFrame | None = None
    seconds: float = 0.0


def write_land_use(sites: str | Path, out: str | Path, *, countries: str | Path | None = None,
                   root: str | Path | None = None, options: LandUseOptions | None = None,
                   **overrides: Any) -> LandUseResult:
    """Commodity land use of a sites file (:func:`land_use`), written into the folder ``out``.

    Parameters
    ----------
    sites : path
        Sites GeoParquet of :func:`mtg.pipeline.link.link_sites` (its members file beside it).
    out : path
        Output folder (:func:`mtg.pipeline.io.write_land_use_tables`).
    countries : path, optional
        Country boundary layer.
    root : path, optional
        The run folder: ``summary.json`` names the sites and country files relative to it
        (:func:`mtg.pipeline.run_paths.portable_path`). Default: the folder above ``out`` (``RUN/landuse``).
    options, **overrides
        As for :func:`land_use`.

    Returns
    -------
    LandUseResult
    """
    from mtg.pipeline.io import read_link_metadata, read_members, read_polygons, read_sites, write_land_use_tables

    start = time.perf_counter()
    opts = stage_options(LandUseOptions, options, **overrides)
    sites_path = Path(sites)
    root = Path(root if root is not None else Path(out).resolve().parent)
    frame = read_sites(sites_path)
    if "primary_commodities" not in frame.columns:
        log.warning("%s has no primary_commodities (written by an older mtg link): splitting among all linked "
                    "commodities", sites_path)
    metadata = read_link_metadata(sites_path)
    members = read_members(sites_path) if opts.choose_cut or opts.sensitivity else None
    boundaries = None
    if countries is not None:
        boundaries = read_polygons(countries)
        boundaries.attrs["source"] = portable_path(countries, root)
    try:
        tables = land_use(frame, members, metadata=metadata, countries=boundaries, options=opts)
    except MtgError as err:
        raise MtgError(f"{sites_path}: {err}") from None
    tables.summary["sites"] = portable_path(sites_path, root)
    tables.summary["seconds"] = round(time.perf_counter() - start, 3)
    files = write_land_use_tables(tables, out, sites_metadata={**metadata, "sites": tables.summary["sites"]})
    return LandUseResult(out=Path(out), summary=tables.summary, files=files, sensitivity=tables.sensitivity,
                         seconds=tables.summary["seconds"])


def _summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("n_sites", "total_km2", "linked_km2", "linked_share", "unlinked_km2", "unlinked_share",
            "multi_commodity_km2", "multi_commodity_share", "multi_assignment_km2", "no_point_km2")
    return {k: summary[k] for k in keys}


def land_use_sensitivity(sites_by_cut: dict[float, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Land-use totals and shares with every site at one cut, for each cut.

    Parameters
    ----------
    sites_by_cut : dict
        Cut (metres) -> the sites at that cut (:func:`mtg.pipeline.site_assembly.assemble_sites`, with countries).

    Returns
    -------
    summary : pandas.DataFrame
        One row per cut (ascending): ``cut_m``, ``cut`` (text), ``n_sites``, ``total_km2``, ``linked_km2``,
        ``linked_share``, ``unlinked_km2``, ``unlinked_share``, ``multi_commodity_km2``, ``multi_commodity_share``,
        ``multi_assignment_km2``, ``no_point_km2``.
    by_commodity : pandas.DataFrame
        ``cut_m``, ``cut``, ``commodity``, ``area_km2``, ``share``, ``n_sites`` per cut.
    """
    rows, parts = [], []
    for cut in sorted(sites_by_cut):
        landuse = split_land_use(sites_by_cut[cut], cut_m=cut)
        label = f"{cut / 1000:g} km" if cut >= 1000 else f"{cut:g} m"
        rows.append({"cut_m": cut, "cut": label, **_summary_row(landuse.summary)})
        parts.append(landuse.by_commodity.assign(cut_m=cut, cut=label))
    by_commodity = pd.concat(parts, ignore_index=True)[["cut_m", "cut", "commodity", "area_km2", "share", "n_sites"]]
    return pd.DataFrame(rows), by_commodity
