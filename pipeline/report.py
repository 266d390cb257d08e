"""The run report: one self-contained HTML file (``mtg report RUN_DIR``) that opens without any network.

Everything is inlined at write time: the page's script and style (``report_assets/``), the data as JSON in a
``<script type="application/json">`` block, and raster thumbnails as PNG data URIs. A Content-Security-Policy
forbids every request that is not to an inline resource or a ``data:`` URI, so the page cannot reach out even
by accident. The page shows an interactive map of the sites (SVG, Web Mercator; colour = primary commodity, one
grey for sites without one (:data:`mtg.pipeline.landuse.UNKNOWN`, as in the land-use tables) and one colour for
sites with several; circle area = mining area), the selected site's indicators, land use by commodity, volumes
with 1-sigma errors (one bar row per site, the 30 largest by excavated volume), elevation-change and
mining-probability thumbnails, sortable tables and the run's provenance. Map circles, table rows and sort
buttons work from the keyboard (Tab, then Enter or Space).

Only ``sites/sites.parquet`` is required; every other part of the run folder is optional and, when missing,
gets a short "not computed in this run" note in its place.
"""

from __future__ import annotations

import html
import json
import logging
import math
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.commodities import name_list
from mtg.pipeline.errors import MtgError
from mtg.pipeline.landuse import UNKNOWN
from mtg.pipeline.report_figures import render_thumbnail
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.io.vectors import read_sites
from mtg.pipeline.site_assembly import site_shapes
from mtg.pipeline.table_io import atomic_write

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
#: The segmentation's footprints in the run folder: the member source of sites mapped from imagery.
SEGMENT_SOURCE = "segment/mine_polygons.parquet"
#: The map colour class of a site with more than one primary commodity.
SEVERAL = "several commodities"
#: Sites closer than this (m) belong to one region of the map (a mining district), with its own zoom button.
REGION_GAP_M = 100_000.0
#: Mean Earth radius (m), for chord distances between sites.
EARTH_RADIUS_M = 6_371_008.8
# Colours of common commodities, of sites without one and with several; others take FALLBACK_COLOURS in name order.
COMMODITY_COLOURS = {
    "gold": "#d4a017", "copper": "#c0612b", "iron ore": "#8c2d2d", "coal": "#3d3d3d", "lithium": "#7b4fa0",
    "nickel": "#3f8f5b", "manganese": "#c2528b", "bauxite": "#e08a3c", "zinc": "#4f76b8", "silver": "#8fa0b3",
    "uranium": "#9aae1e", "tin": "#5d8c99", "cobalt": "#2a5db0", "diamonds": "#49b6c4", UNKNOWN: "#9e9e9e",
    SEVERAL: "#e41a1c",
}
FALLBACK_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#17becf", "#bcbd22",
                    "#6a3d9a", "#b15928", "#fb9a99", "#33a02c")
#: Commodities with a colour of their own (the most frequent); the rest share :data:`OTHER_COLOUR`, so that no two
#: colour classes look alike.
MAX_COMMODITY_COLOURS = 12
#: The colour class of the long tail of commodities, and its colour.
OTHER = "other commodities"
OTHER_COLOUR = "#d9c8ae"

# Site indicators the page shows: column, label, unit, scale (shown = value x scale), digits, 1-sigma column.
SITE_FIELDS: tuple[tuple[str, str, str, float, int, str | None], ...] = (
    ("site_id", "Site", "", 1, 0, None),
    ("commodities", "Commodities", "", 1, 0, None),
    ("primary_commodities", "Primary commodities", "", 1, 0, None),
    ("country", "Country", "", 1, 0, None),
    ("area_km2", "Mining area", "km²", 1, 3, None),
    ("area_before_km2", "Mining area, first date", "km²", 1, 3, None),
    ("area_after_km2", "Mining area, last date", "km²", 1, 3, None),
    ("area_change_km2", "Change in mining area", "km²", 1, 3, None),
    ("onset", "First mapped (period)", "", 1, 0, None),
    ("onset_censored", "Mined before the first period", "", 1, 0, None),
    ("expansion_km2_per_year", "Expansion rate", "km²/year", 1, 4, None),
    ("revegetated_km2", "Revegetated area", "km²", 1, 3, None),
    ("excavated_m3", "Excavated volume", "million m³", 1e-6, 2, "excavated_sigma_m3"),
    ("deposited_m3", "Deposited volume", "million m³", 1e-6, 2, "deposited_sigma_m3"),
    ("net_m3", "Net volume change", "million m³", 1e-6, 2, "net_sigma_m3"),
    ("waste_deposit_count", "Waste deposits", "", 1, 0, None),
    ("waste_deposit_area_m2", "Waste deposit area", "ha", 1e-4, 1, None),
    ("waste_deposit_volume_m3", "Waste deposit volume", "million m³", 1e-6, 2, None),
    ("mean_probability", "Mean mining probability", "", 1, 2, None),
    ("uncertain", "Uncertain (low probability, no elevation change)", "", 1, 0, None),
    ("n_polygons", "Mapped footprints", "", 1, 0, None),
    ("n_points", "Inventory points", "", 1, 0, None),
    ("sources", "Sources", "", 1, 0, None),
)
#: Site indicators the table shows at first (the others are one tick away in its column chooser), so that it fits a
#: page without a horizontal scrollbar; the commodity list stands in for the primary commodities where those are absent.
SITE_COLUMNS_SHOWN = ("site_id", "primary_commodities", "country", "area_km2", "area_change_km2", "excavated_m3",
                      "deposited_m3", "net_m3", "waste_deposit_count", "mean_probability")
#: The columns other tables show at first, where they have too many for the page (the rest are in the chooser).
TABLE_COLUMNS_SHOWN = {"verification": ("record_id", "site_id", "field", "reported_value", "reported_unit",
                                        "derived_value", "derived_sigma", "relative_difference", "flag")}
# Units read from column-name endings for tables without a field list: ending, unit, scale, digits.
SUFFIX_UNITS = (("_km2", "km²", 1, 3), ("_m3", "m³", 1, 0), ("_m2", "m²", 1, 0), ("_m", "m", 1, 2),
                ("share", "%", 100, 1), ("_fraction", "%", 100, 1))


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run folder.

    Parameters
    ----------
    run_dir : str or Path
        Run folder of ``mtg run`` (the layout in the README); only ``sites/sites.parquet`` is required.
    out : str or Path, optional
        Output file; default ``RUN_DIR/report.html``. Written under a temporary name and renamed.

    Returns
    -------
    Path
        The report file.
    """
    run = Path(run_dir).resolve()
    if not run.is_dir():
        raise MtgError(f"the run folder {run} does not exist (write one with `mtg run --out {run}`)")
    target = Path(out).resolve() if out else run / REPORT_NAME
    page = render_page(collect(run))
    atomic_write(target, lambda p: p.write_text(page, encoding="utf-8"))
    log.info("wrote the report %s (%.0f kB)", target, target.stat().st_size / 1e3)
    return target


def render_page(data: dict[str, Any]) -> str:
    """The HTML page: template with the style, script and data inlined."""
    assets = resources.files("mtg.pipeline.report_assets")
    payload = json.dumps(_jsonable(data), ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return ((assets / "report.html").read_text(encoding="utf-8")
            .replace("{{title}}", html.escape(data["title"]))
            .replace("/*{{css}}*/", (assets / "report.css").read_text(encoding="utf-8"))
            .replace("/*{{js}}*/", (assets / "report.js").read_text(encoding="utf-8"))
            .replace("{{data}}", payload))


def collect(run: Path) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data; missing optional parts become notes."""
    notes: dict[str, str] = {}
    sites = site_frame(run, notes)
    landuse = _landuse(run, notes)
    counts = sites["primary"].value_counts().to_dict()
    counts |= {str(r["commodity"]): counts.get(str(r["commodity"]), 0) for r in (landuse["rows"] if landuse else [])}
    colours, tail = commodity_colours(counts)
    data: dict[str, Any] = {
        "title": f"Mining footprints and volumes: {run.name}",
        "summary": _summary(sites, run),
        "colours": colours,
        "other": {"name": OTHER, "members": tail},
        "no_commodity": UNKNOWN,
        "several": SEVERAL,
        "fields": site_fields(sites),
        "map": site_map(sites, run, notes),
        "site_source": sites.attrs["source"],
        "sites": _records(sites, [f[0] for f in SITE_FIELDS] + [f[5] for f in SITE_FIELDS if f[5]] + ["primary"]),
        "landuse": landuse,
        "volumes": _volume_chart(sites),
        "timeline": _timeline(run, notes),
        "thumbnails": _thumbnails(run, sites, notes),
        "tables": _tables(run, notes),
        "provenance": provenance(run),
        "notes": notes,
    }
    if data["volumes"] is None:
        notes.setdefault("volumes", "Not computed in this run (volumes/site_volumes.parquet is missing).")
    return data


def site_frame(run: Path, notes: dict[str, str]):  # noqa: ANN201 - a GeoDataFrame
    """Sites with their indicators: ``indicators/site_indicators.parquet`` when present, else sites + volumes."""
    path = run / "sites" / "sites.parquet"
    if not path.exists():
        raise MtgError(f"{path} does not exist: the report needs the run's sites (`mtg run` or `mtg link`)")
    sites = read_sites(path)
    if "site_id" not in sites:
        raise MtgError(f"{path} has no site_id column; its columns are {list(sites.columns)}")
    sites["site_id"] = sites["site_id"].astype(str)
    extra = _read(run / "indicators" / "site_indicators.parquet", notes, "indicators")
    if extra is None:
        volumes = _read(run / "volumes" / "site_volumes.parquet", {}, "volumes")
        extra = None if volumes is None else volumes.rename(columns={"waste_deposits": "waste_deposit_count"})
    if extra is not None:
        extra = pd.DataFrame(extra.drop(columns="geometry", errors="ignore"))
        extra["site_id"] = extra["site_id"].astype(str)
        keep = [c for c in sites.columns if c == "site_id" or c == "geometry" or c not in extra.columns]
        sites = sites[keep].merge(extra, on="site_id", how="left")
    sites.attrs["source"] = ("indicators/site_indicators.parquet" if "indicators" not in notes else
                             "sites/sites.parquet" + ("" if extra is None else " and volumes/site_volumes.parquet"))
    for column in ("commodities", "primary_commodities", "sources"):
        if column in sites:
            sites[column] = sites[column].map(name_list)
    if "commodities" not in sites:
        sites["commodities"] = [[] for _ in range(len(sites))]
    sites["primary"] = [primary_class(names) for names in
                        sites["primary_commodities" if "primary_commodities" in sites else "commodities"]]
    return sites


def primary_class(names: list[str]) -> str:
    """The map colour class of a site from its primary commodities (as land use splits them): the one commodity,
    :data:`SEVERAL`, or :data:`mtg.pipeline.landuse.UNKNOWN` for none."""
    return names[0] if len(names) == 1 else (SEVERAL if names else UNKNOWN)


def site_fields(sites: pd.DataFrame) -> list[dict[str, Any]]:
    """The :data:`SITE_FIELDS` that the sites have, leaving out columns with no value at all."""
    def measured(column: pd.Series) -> bool:
        return any(len(v) > 0 if isinstance(v, list) else pd.notna(v) for v in column)

    fields = [_field(*f, numeric=pd.api.types.is_numeric_dtype(sites[f[0]])) for f in SITE_FIELDS
              if f[0] in sites.columns and measured(sites[f[0]])]
    keys = {f["key"] for f in fields}
    shown = set(SITE_COLUMNS_SHOWN) | ({"commodities"} if "primary_commodities" not in keys else set())
    for f in fields:
        f["shown"] = f["key"] in shown
    return fields


def commodity_colours(counts: dict[str, int]) -> tuple[dict[str, str], list[str]]:
    """A colour for each commodity (and for :data:`SEVERAL` and :data:`mtg.pipeline.landuse.UNKNOWN`), all distinct
    up to :data:`MAX_COMMODITY_COLOURS` commodities.

    Parameters
    ----------
    counts : dict of str to int
        Commodity (colour class) -> number of sites.

    Returns
    -------
    (dict of str to str, list of str)
        The colour of each name, and the names grouped as :data:`OTHER` (sorted). The most frequent commodities
        (ties by name) keep their colour: :data:`COMMODITY_COLOURS`, else the next of :data:`FALLBACK_COLOURS`;
        the rest share :data:`OTHER_COLOUR`.
    """
    special = {UNKNOWN, SEVERAL}
    ranked = sorted((n for n in counts if n not in special), key=lambda n: (-counts[n], n))
    kept, tail = ranked[:MAX_COMMODITY_COLOURS], sorted(ranked[MAX_COMMODITY_COLOURS:])
    fallback = iter(FALLBACK_COLOURS)
    colours = {n: COMMODITY_COLOURS.get(n) or next(fallback) for n in kept}
    colours |= {n: OTHER_COLOUR for n in tail} | {OTHER: OTHER_COLOUR}
    colours |= {n: COMMODITY_COLOURS[n] for n in special}
    return colours, tail


def site_map(sites, run: Path, notes: dict[str, str]) -> dict[str, Any]:  # noqa: ANN001 - GeoDataFrame
    """Site outlines and circles in Web Mercator metres (SVG y down), the waste deposits, the extent, and the
    regions (mining districts: sites within :data:`REGION_GAP_M` of each other) when there are several."""
    import geopandas as gpd

    if sites.empty:
        notes["map"] = "The run found no mining sites."
        return {"features": [], "deposits": [], "lat0": 0.0, "view": [0, 0, 1_000, 1_000], "regions": []}
    merc = sites.to_crs(3857)
    shapes = gpd.GeoSeries(site_shapes(sites), crs=4326).to_crs(3857)
    anchors = gpd.GeoSeries(gpd.points_from_xy(sites["lon"], sites["lat"]), crs=4326).to_crs(3857)
    labels = map_regions(sites)
    regions, tolerance = [], np.zeros(len(sites))
    for k in range(int(labels.max()) + 1):
        member = labels == k
        view, span = _view(shapes[member].total_bounds)
        tolerance[member] = span / 4_000  # outlines simplified for the region's own extent, not the world's
        countries = [c for c in sites.loc[member, "country"].astype(str) if c and c not in (UNKNOWN, "nan", "None")] \
            if "country" in sites else []
        name = pd.Series(countries).value_counts().index[0] if countries else f"Region {k + 1}"
        regions.append({"name": name, "n_sites": int(member.sum()), "view": view,
                        "cx": round(view[0] + view[2] / 2), "cy": round(view[1] + view[3] / 2)})
    areas = merc["area_km2"].to_numpy(dtype=float) if "area_km2" in merc else np.full(len(merc), np.nan)
    largest = np.nanmax(areas) if np.isfinite(areas).any() else 1.0
    features = []
    for sid, geom, anchor, area, region, tol in zip(merc["site_id"], merc.geometry, anchors, areas, labels,
                                                    tolerance):
        radius = 4.0 + 18.0 * math.sqrt(area / largest) if np.isfinite(area) and largest > 0 else 4.0
        path = _svg_path(None if geom is None else geom.simplify(tol))
        features.append({"id": sid, "path": path, "cx": round(anchor.x), "cy": round(-anchor.y), "r": round(radius, 1),
                         "region": int(region)})
    deposits = _read(run / "volumes" / "waste_deposits.parquet", notes, "deposits")
    fine = float(tolerance.min())
    deposit_paths = [] if deposits is None or deposits.crs is None else [
        {"id": str(d), "site": str(s), "path": _svg_path(g.simplify(fine))}
        for d, s, g in zip(deposits["deposit_id"], deposits["site_id"], deposits.to_crs(3857).geometry)]
    lat0 = float(np.mean(shapes.to_crs(4326).total_bounds[[1, 3]]))
    return {"features": features, "deposits": deposit_paths, "lat0": lat0, "view": _view(shapes.total_bounds)[0],
            "regions": regions if len(regions) > 1 else []}


def _view(bounds: np.ndarray) -> tuple[list[float], float]:
    """The SVG view box (y down, 8 % margin) of Web Mercator bounds, and their larger side (at least 1 km)."""
    x0, y0, x1, y1 = bounds
    span = max(x1 - x0, y1 - y0, 1_000.0)
    pad = 0.08 * span
    return [x0 - pad, -y1 - pad, (x1 - x0) + 2 * pad, (y1 - y0) + 2 * pad], span


def map_regions(sites) -> np.ndarray:  # noqa: ANN001 - GeoDataFrame
    """Region label of each site: sites whose ``lon``/``lat`` lie within :data:`REGION_GAP_M` of each other
    (great-circle chord, single linkage) share one; regions are numbered by their first site."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    lon, lat = (np.radians(sites[c].to_numpy(dtype=np.float64)) for c in ("lon", "lat"))
    xyz = np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    pairs = cKDTree(xyz).query_pairs(REGION_GAP_M / EARTH_RADIUS_M, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(sites), len(sites)))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    return np.argsort(np.argsort(first))[labels]


def _svg_path(geom) -> str:  # noqa: ANN001 - shapely geometry
    """SVG path data of a (multi)polygon in metres rounded to 1 m, y flipped; empty for None (no footprint)."""
    from shapely import get_coordinates

    polygons = [] if geom is None else [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon"]
    return " ".join("M" + "L".join(f"{x:.0f},{-y:.0f}" for x, y in get_coordinates(ring)) + "Z"
                    for p in polygons for ring in (p.exterior, *p.interiors))


def _summary(sites, run: Path) -> dict[str, Any]:  # noqa: ANN001 - GeoDataFrame
    """Headline numbers: sites with a footprint (``n_polygon_sites``) and those of them mapped from imagery, i.e.
    with a footprint of the run's segmentation among their members (``n_imagery_sites``, null when the run has
    no segmentation); sums of the measured columns, null (not computed) where no site has a value; the uncertain
    sites (``n_uncertain``) and their area (``area_km2_uncertain``), part of ``area_km2``."""
    mapped = sites.geometry.notna()
    summary: dict[str, Any] = {"n_sites": len(sites), "n_polygon_sites": int(mapped.sum()), "n_imagery_sites": None}
    if (run / SEGMENT_SOURCE).exists() and "member_sources" in sites:
        summary["n_imagery_sites"] = int(sum(any(s.replace("\\", "/").endswith(SEGMENT_SOURCE) for s in name_list(v))
                                             for v in sites["member_sources"]))
    for column in ("area_km2", "excavated_m3", "deposited_m3", "net_m3", "waste_deposit_count"):
        values = sites[column].to_numpy(dtype=float, na_value=np.nan) if column in sites else np.array([np.nan])
        summary[column] = float(np.nansum(values)) if np.isfinite(values).any() else None
    if "uncertain" in sites:  # low probability and no elevation change (mtg.pipeline.indicators.uncertain_sites)
        uncertain = sites["uncertain"].fillna(False).to_numpy(dtype=bool)
        areas = sites["area_km2"].to_numpy(dtype=float, na_value=np.nan)[uncertain] if "area_km2" in sites else []
        summary["n_uncertain"] = int(uncertain.sum())
        summary["area_km2_uncertain"] = float(np.nansum(areas))
    landuse = run / "landuse" / "summary.json"
    if landuse.exists():
        summary["landuse"] = json.loads(landuse.read_text())
    return summary


def _landuse(run: Path, notes: dict[str, str]) -> dict[str, Any] | None:
    """Chart data of land use by commodity (without the total row) and the linked/unlinked split."""
    table = _read(run / "landuse" / "landuse_by_commodity.parquet", notes, "landuse")
    if table is None or not {"commodity", "area_km2"} <= set(table.columns):
        notes.setdefault("landuse", "landuse/landuse_by_commodity.parquet has no commodity and area_km2 columns.")
        return None
    rows = table[table["commodity"].astype(str).str.lower() != "total"]
    summary_path = run / "landuse" / "summary.json"
    return {"rows": _records(rows, ["commodity", "area_km2", "share", "n_sites"]),
            "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None}


def _volume_chart(sites) -> dict[str, Any] | None:  # noqa: ANN001 - GeoDataFrame
    """Per-site excavated and deposited volumes with their 1-sigma errors."""
    columns = ["site_id", "primary", "excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3",
               "net_m3", "net_sigma_m3"]
    if "excavated_m3" not in sites:
        return None
    rows = sites[sites["excavated_m3"].notna()]
    return {"rows": _records(rows, columns)} if len(rows) else None


def _timeline(run: Path, notes: dict[str, str]) -> dict[str, Any] | None:
    """Per-site mining area by period with its 1-sigma band, and the new and revegetated areas of the last period
    as Web Mercator SVG paths (the map's "change this year" layer), from ``timeline/``."""
    series = _read(run / "timeline" / "site_series.parquet", notes, "timeline")
    if series is None:
        notes.setdefault("timeline", "Not computed in this run (timeline/site_series.parquet is missing).")
        return None
    change = _read(run / "timeline" / "change.parquet", notes, "timeline_change")
    paths = [] if change is None or change.crs is None else [
        {"site": str(s), "change": str(c), "path": _svg_path(g.simplify(5.0))}
        for s, c, g in zip(change["site_id"], change["change"], change.to_crs(3857).geometry)]
    periods = list(dict.fromkeys(series["period"].astype(str)))
    return {"periods": periods, "last": periods[-1] if periods else None, "change": paths,
            "rows": _records(series, ["site_id", "period", "area_m2", "area_sigma_m2", "missing_share"])}


def _thumbnails(run: Path, sites, notes: dict[str, str]) -> list[dict[str, Any]]:  # noqa: ANN001
    """The elevation-change and mining-probability thumbnails that exist."""
    wanted = (
        ("dh", run / "volumes" / "dh.zarr", "dh", "Elevation change between the DEM epochs", "m", True),
        ("probability", run / "segment" / "probability.zarr", "probability", "Mining probability (segmentation)",
         "", False),
    )
    out = []
    for key, path, variable, title, units, diverging in wanted:
        if not path.exists():
            notes[key] = f"Not computed in this run ({path.relative_to(run)} is missing)."
            continue
        try:
            out.append(asdict(render_thumbnail(path, variable=variable, title=title, units=units,
                                               diverging=diverging, sites=sites)) | {"key": key})
        except Exception as err:  # noqa: BLE001 - a bad raster costs its thumbnail, not the report
            log.warning("no thumbnail of %s: %s", path, err)
            notes[key] = f"{path.relative_to(run)} could not be drawn: {err}"
    return out


def _tables(run: Path, notes: dict[str, str]) -> list[dict[str, Any]]:
    """The sortable tables besides the site indicators: land use, waste deposits, verification."""
    specs = (
        ("landuse_by_commodity", "Land use by commodity", run / "landuse" / "landuse_by_commodity.parquet"),
        ("landuse_by_country", "Land use by country", run / "landuse" / "landuse_by_country.parquet"),
        ("landuse_by_commodity_country", "Land use by commodity and country",
         run / "landuse" / "landuse_by_commodity_country.parquet"),
        ("deposits", "Extractive-waste deposits", run / "volumes" / "waste_deposits.parquet"),
        ("verification", "Verification flags", run / "verification" / "verification.parquet"),
    )
    tables = []
    for key, title, path in specs:
        frame = _read(path, notes, key)
        if frame is None:
            continue
        frame = pd.DataFrame(frame.drop(columns="geometry", errors="ignore"))
        total = frame.iloc[:, 0].astype(str).str.lower().eq("total")
        columns = [_infer_column(c, frame[c]) for c in frame.columns]
        shown = set(TABLE_COLUMNS_SHOWN.get(key, frame.columns)) | {frame.columns[0]}
        for column in columns:
            column["shown"] = column["key"] in shown
        tables.append({"key": key, "title": title, "source": str(path.relative_to(run)), "columns": columns,
                       "rows": _records(frame[~total], list(frame.columns)),
                       "footer": _records(frame[total], list(frame.columns))})
    return tables


def provenance(run: Path) -> dict[str, Any]:
    """Where the results come from and how to make them again.

    Paths are relative to the run folder (:func:`mtg.pipeline.run_paths.portable_path`), so the page holds no
    path of the machine that wrote it; the commands name the run folder as seen from the folder that holds it.
    The software is the package version and, in a git checkout, the commit
    (:func:`mtg.pipeline.tiled_run.code_version`).
    """
    from mtg.pipeline.tiled_run import code_version

    ingest = _json(run / "cubes" / "ingest.json")
    coreg = _json(run / "volumes" / "coregistration.json")
    sample = _json(run / "sample" / "sample.json")
    segment = _json(run / "segment" / "segment.json")
    seed = f" --seed {sample['parameters']['seed']}" if sample else ""
    catalog = ingest.get("source") if ingest else (str(run / "sample" / "catalog.json") if sample else None)
    files = sorted(p.relative_to(run).as_posix() for sub in ("sites", "segment", "volumes", "landuse", "indicators",
                                                             "verification") for p in (run / sub).glob("*")
                   if not p.name.startswith("."))
    if coreg:
        coreg.update({k: portable_path(coreg[k], run) for k in ("before", "after") if coreg.get(k)})
    return {
        "run_dir": run.name,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "software": f"{code_version()} (Python {platform.python_version()})",
        "catalog": catalog and portable_path(catalog, run),
        "sample": sample.get("parameters") if sample else None,
        "reflectance_items": len(ingest.get("reflectance_items", [])) if ingest else None,
        "dem_items": ingest.get("dem_items") if ingest else None,
        "crs": (ingest or {}).get("grid", {}).get("crs") or (coreg or {}).get("crs"),
        "coregistration": coreg and {k: coreg.get(k) for k in ("before", "after", "before_date", "after_date",
                                                                 "coregistration", "stable_nmad_m", "threshold_m",
                                                                 "threshold_rule", "void_policy", "cell_size_m")}
                          | {"range_m": coreg.get("variogram", {}).get("range_m")},
        "segmentation": segment and {k: segment.get(k) for k in ("model", "threshold", "n_polygons",
                                                                  "mining_area_m2", "device")},
        "files": files,
        "commands": [f"mtg run --out {run.name}{seed}", f"mtg report {run.name}", f"mtg publish {run.name}"],
    }


def _read(path: Path, notes: dict[str, str], key: str):  # noqa: ANN202 - a (Geo)DataFrame or None
    """An optional table: GeoParquet, Parquet, or the CSV beside it; ``None`` (and a note) when missing."""
    import geopandas as gpd

    candidates = [path, path.with_suffix(".csv")]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        notes.setdefault(key, f"Not computed in this run ({path.parent.name}/{path.name} is missing).")
        return None
    try:
        if found.suffix == ".csv":
            return pd.read_csv(found)
        try:
            return gpd.read_parquet(found)
        except ValueError:  # plain Parquet without geometry
            return pd.read_parquet(found)
    except Exception as err:  # noqa: BLE001 - an unreadable optional file costs its section, not the report
        log.warning("could not read %s: %s", found, err)
        notes.setdefault(key, f"{found.parent.name}/{found.name} could not be read: {err}")
        return None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; left out of the provenance", path)
        return None


def _field(key: str, label: str, unit: str, scale: float, digits: int, sigma: str | None, *,
           numeric: bool) -> dict[str, Any]:
    return {"key": key, "label": label, "unit": unit, "scale": scale, "digits": digits, "sigma": sigma,
            "numeric": numeric}


def _infer_column(name: str, series: pd.Series) -> dict[str, Any]:
    """Label, unit and number format of a table column, read from its name."""
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    for suffix, unit, scale, digits in SUFFIX_UNITS:
        if numeric and name.endswith(suffix):
            stem = name[: -len(suffix)] if name != suffix else name
            return _field(name, stem.replace("_", " ").strip().capitalize() or name, unit, scale, digits, None,
                          numeric=True)
    digits = 0 if pd.api.types.is_integer_dtype(series) else 3
    return _field(name, name.replace("_", " ").capitalize(), "", 1, digits if numeric else 0, None, numeric=numeric)


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    present = [c for c in dict.fromkeys(columns) if c in frame.columns]
    return [dict(zip(present, row)) for row in frame[present].itertuples(index=False, name=None)]


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return value if isinstance(value, str) else str(value)
