"""Site linking: exact sparse hierarchical clustering of mine points, and of polygons with points, into sites.

Two modes, both exact (see :mod:`mtg.kernels.hac`): only pairs within ``h_max`` geodesic metres are computed (a
radius graph), yet the flat clusters at every cut ``<= h_max`` equal scipy's dense ``linkage`` + ``fcluster``.

* Sites (:func:`link`, in memory; :func:`link_sites` reads files and writes the result): polygons from one or more
  inventories plus optional points are linked at one cut (distance between features = geodesic distance between
  their nearest parts, 0 when they touch; single linkage by default) into sites. The sites table (EPSG:4326) has
  one row per site: ``site_id``, the member polygons (``member_ids``, ``member_sources``), the linked points
  (``point_ids``, ``point_sources``), harmonised ``commodities`` and ``primary_commodities`` of the linked points,
  ``country`` (majority of the linked points' countries, ties alphabetical, else of the member polygons', else
  null), the site's ``cut_m``, the union of the member polygons as geometry (always a MultiPolygon) and its
  geodesic area ``area_km2`` (WGS-84 ellipsoid), and ``lon``/``lat`` locating the site (a point of its
  footprint). A site made of points only has a null geometry and ``area_km2`` (it has no footprint) and the
  centroid of its points as ``lon``/``lat`` (:mod:`mtg.pipeline.site_assembly`). The members table maps every
  input feature to its ``site_id`` and keeps what land use and the indicators need at other cuts: the feature's
  geometry, each point's commodities, primary commodities, country and lon/lat, a polygon's ``mean_probability``
  and ``area_m2`` when its inventory has them (the segmentation's footprints do), and the partition at every
  recorded cut (``cluster_<metres>``). With
  ``choose_cut`` each site is formed at its own cut (:func:`mtg.pipeline.cut_choice.choose_site_cuts`).
* Points (:func:`link_points`): a point file is clustered with single, complete or average linkage at one or more
  cuts; ``labels.parquet`` gets one row per input row, in input order: ``row`` and ``cluster_<metres>`` per cut.

Files are written atomically (a temporary name in the same folder, then :func:`os.replace`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.commodities import CommodityHarmoniser, CommodityTable, load_commodity_table
from mtg.pipeline.config import LinkOptions, stage_options
from mtg.pipeline.cut_choice import choose_site_cuts
from mtg.pipeline.errors import MtgError
from mtg.pipeline.inventory import point_inventory, polygon_inventory
from mtg.pipeline.io.vectors import read_points, read_polygons
from mtg.pipeline.linker import checked_linker, cut_column, parse_distance
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.site_assembly import (ATOM_MIN_CUT_M, COUNTRY_COLUMNS, MEMBER_COLUMNS, FootprintAreas,
                                        assemble_sites, polygon_atoms)
from mtg.pipeline.table_io import atomic_write

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- points mode


@dataclass
class LinkResult:
    """What :func:`link_points` wrote."""

    out: Path
    n_points: int
    n_edges: int
    cuts: list[float]
    n_clusters: dict[float, int]
    ambiguous_cuts: list[float]
    seconds: float


def point_clusters(points: Any, *, h_max: float = 10_000.0, cuts: Sequence[float] = (), linkage: str = "single",
                   lon_col: str = "lon", lat_col: str = "lat", client: Any = None) -> tuple[pd.DataFrame, Any]:
    """Cluster mine points in memory at one or more cuts.

    Parameters
    ----------
    points : DataFrame or GeoDataFrame
        Point geometries (any CRS), or a table with ``lon_col``/``lat_col`` degrees.
    h_max : float
        Largest cut (metres); pairs further apart are never computed.
    cuts : sequence of float
        Cuts (metres), each ``<= h_max``; default ``[h_max]``.
    linkage : {"single", "complete", "average"}
    client : distributed.Client, optional
        Run the graph tiles and clustering shards on its workers.

    Returns
    -------
    (pandas.DataFrame, SparseAgglomerativeLinker)
        ``row`` and one int64 ``cluster_<metres>`` column per cut (clusters numbered in order of first
        appearance), one row per point in order; and the fitted linker (edges, ambiguous cuts, linkages).
    """
    linker = checked_linker(float(h_max), [float(c) for c in cuts], linkage)
    frame, lon, lat = point_inventory(points, "points", lon_col, lat_col)
    linker.fit(lon, lat, client=client)
    labels = pd.DataFrame({"row": np.arange(len(frame), dtype=np.int64),
                           **{cut_column(c): v.astype(np.int64) for c, v in linker.labels_by_cut_.items()}})
    return labels, linker


def link_points(points: str | Path, out: str | Path = "labels.parquet", h_max: float = 10_000.0,
                cuts: Sequence[float] = (), linkage: str = "single", lon_col: str = "lon",
                lat_col: str = "lat", client: Any = None) -> LinkResult:
    """Cluster a point file at one or more cuts (:func:`point_clusters`) and write the labels Parquet.

    The file has one row per input row, in input order: ``row`` (int64, 0-based input index) and one int64
    column ``cluster_<metres>`` per cut (clusters numbered 0, 1, ... in order of first appearance). Its schema
    metadata ``mtg`` holds the parameters and the cuts flagged ambiguous (JSON). With a ``distributed.Client``
    the graph tiles and clustering shards run on its workers.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    out = Path(out)
    checked_linker(float(h_max), [float(c) for c in cuts], linkage)  # bad options fail before the file is read
    frame = read_points(points, lon_col, lat_col)[0]
    log.info("linking %d points from %s (h_max %g m, cuts %s, %s linkage)", len(frame), points, h_max,
             list(cuts) or [h_max], linkage)
    labels, linker = point_clusters(frame, h_max=h_max, cuts=cuts, linkage=linkage, lon_col=lon_col,
                                    lat_col=lat_col, client=client)
    meta = {"points": str(points), "lon_col": lon_col, "lat_col": lat_col, "h_max_m": linker.h_max,
            "cuts_m": list(linker.labels_by_cut_), "linkage": linker.linkage,
            "ambiguous_cuts_m": linker.ambiguous_cuts_, "n_edges": linker.n_edges_}
    table = pa.Table.from_pandas(labels, preserve_index=False).replace_schema_metadata({"mtg": json.dumps(meta)})
    atomic_write(out, lambda p: pq.write_table(table, p))
    if linker.ambiguous_cuts_:
        log.warning("cuts %s m meet tied merge heights: their partitions depend on merge order",
                    linker.ambiguous_cuts_)
    n_clusters = {c: (int(v.max()) + 1 if v.size else 0) for c, v in linker.labels_by_cut_.items()}
    return LinkResult(out=out, n_points=len(frame), n_edges=linker.n_edges_, cuts=list(linker.labels_by_cut_),
                      n_clusters=n_clusters, ambiguous_cuts=linker.ambiguous_cuts_,
                      seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- sites


def _ids(frame: pd.DataFrame, id_col: str | None, path: str) -> list[str]:
    """Feature ids as strings: ``id_col`` if given, else a unique non-null ``id``-like column, else the row."""
    if id_col is not None:
        if id_col not in frame.columns:
            raise MtgError(f"{path} has no id column {id_col!r}; its columns are {list(frame.columns)}")
        candidates = [id_col]
    else:
        candidates = [c for c in frame.columns if isinstance(c, str) and c.lower().endswith("id")
                      and c != getattr(frame, "_geometry_column_name", None)]
    for column in candidates:
        values = frame[column]
        if values.notna().all() and values.is_unique:
            return values.astype(str).tolist()
        if id_col is not None:
            raise MtgError(f"{path}: id column {id_col!r} has missing or repeated values")
    return [str(k) for k in range(len(frame))]


def parse_points_filter(text: str) -> tuple[str, str]:
    """``"Asset Type=Mine"`` -> ``("Asset Type", "Mine")``: keep the point rows whose cell lists that value.

    Raises
    ------
    MtgError
        When the text has no ``=`` or an empty column or value.
    """
    column, sep, value = str(text).partition("=")
    if not sep or not column.strip() or not value.strip():
        raise MtgError(f"--points-filter {text!r} must be COLUMN=VALUE, e.g. 'Asset Type=Mine'")
    return column.strip(), value.strip()


def _filter_rows(frame: pd.DataFrame, filters: Sequence[tuple[str, str]], path: str) -> np.ndarray:
    """Rows kept by every filter: a cell matches when one of its ``;``/``,``/``|``-separated entries equals the value
    (case-insensitive, whitespace collapsed)."""
    from mtg.pipeline.commodities import normalise, split_commodities

    keep = np.ones(len(frame), dtype=bool)
    for column, value in filters:
        if column not in frame.columns:
            raise MtgError(f"--points-filter: {path} has no column {column!r}; its columns are {list(frame.columns)}")
        wanted = normalise(value)
        keep &= np.fromiter((any(normalise(v) == wanted for v in split_commodities(cell)) for cell in frame[column]),
                            dtype=bool, count=len(frame))
    if filters and not keep.any():
        raise MtgError(f"--points-filter {['='.join(f) for f in filters]} keeps no row of {path}")
    return keep


def _country_values(frame: pd.DataFrame, column: str | None, path: str, required: bool) -> list[str | None]:
    """Stripped country names of the rows (None where empty) from ``column``, or a detected country column."""
    if column is not None and column not in frame.columns:
        if required:
            raise MtgError(f"{path} has no country column {column!r}; its columns are {list(frame.columns)}")
        column = None
    if column is None:
        column = next((c for c in frame.columns if isinstance(c, str) and c.casefold() in COUNTRY_COLUMNS), None)
    if column is None:
        return [None] * len(frame)
    return [None if v is None or (isinstance(v, float) and v != v) or not str(v).strip() else str(v).strip()
            for v in frame[column]]


#: Polygon attributes copied into the members table when an inventory has them (the segmentation's footprints).
POLYGON_ATTRIBUTES = ("mean_probability", "area_m2")


def _named(frames: Any, default: str) -> list[tuple[str, Any]]:
    """``[(source name, frame)]`` from one frame, a sequence of frames or a mapping name -> frame."""
    if frames is None:
        return []
    if isinstance(frames, Mapping):
        return [(str(k), v) for k, v in frames.items()]
    if isinstance(frames, pd.DataFrame):
        return [(default, frames)]
    frames = list(frames)
    return [(default if len(frames) == 1 else f"{default}-{k + 1}", f) for k, f in enumerate(frames)]


def _site_features(polygons: list[tuple[str, Any]], points: list[tuple[str, Any]], opts: LinkOptions,
                   harmoniser: CommodityHarmoniser, filters: list[tuple[str, str]]):
    """The members table without labels (polygons first, then points), with every feature's geometry."""
    import geopandas as gpd
    import shapely

    parts: list[pd.DataFrame] = []
    geoms: list = []
    for source, frame in polygons:
        frame = polygon_inventory(frame, source)
        n = len(frame)
        geoms.extend(frame.geometry.to_list())
        part = pd.DataFrame({
            "source": [source] * n, "kind": ["polygon"] * n, "row": np.arange(n, dtype=np.int64),
            "feature_id": _ids(frame, None, source), "commodities": [[] for _ in range(n)],
            "primary_commodities": [[] for _ in range(n)],
            "country": _country_values(frame, opts.country_col, source, required=False),
            "lon": np.full(n, np.nan), "lat": np.full(n, np.nan)})
        for name in POLYGON_ATTRIBUTES:
            part[name] = (pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                          if name in frame.columns else np.full(n, np.nan))
        parts.append(part)
    for source, frame in points:
        frame, lon, lat = point_inventory(frame, source, opts.lon_col, opts.lat_col)
        ids = _ids(frame, opts.point_id_col, source)
        rows = np.flatnonzero(_filter_rows(frame, filters, source))
        frame = frame.iloc[rows].reset_index(drop=True)
        lon, lat, ids = lon[rows], lat[rows], [ids[k] for k in rows]
        cols = list(opts.commodity_cols) if opts.commodity_cols is not None else \
            [c for c in frame.columns if isinstance(c, str) and "commodit" in c.lower()]
        primary = list(opts.primary_cols) if opts.primary_cols is not None else \
            ([c for c in cols if "primary" in c.lower()] or cols)
        commodities = harmoniser.harmonise_rows(frame, cols)
        # the primary names are among all names: a harmoniser sharing the log reports each unknown name once
        primary_names = CommodityHarmoniser(harmoniser.table, _logged=harmoniser._logged).harmonise_rows(frame, primary)
        geoms.extend(shapely.points(lon, lat).tolist())
        n = len(frame)
        parts.append(pd.DataFrame({
            "source": [source] * n, "kind": ["point"] * n, "row": rows.astype(np.int64), "feature_id": ids,
            "commodities": commodities, "primary_commodities": primary_names,
            "country": _country_values(frame, opts.country_col, source, required=opts.country_col is not None),
            "lon": lon, "lat": lat, **{name: np.nan for name in POLYGON_ATTRIBUTES}}))
    members = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=[c for c in MEMBER_COLUMNS if c != "site_id"] + list(POLYGON_ATTRIBUTES))
    members["country"] = members["country"].astype("string")
    return gpd.GeoDataFrame(members, geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"), crs="EPSG:4326")


@dataclass
class LinkedSites:
    """The sites of :func:`link` and the members they are made of.

    Attributes
    ----------
    sites : geopandas.GeoDataFrame
        One row per site (:data:`mtg.pipeline.site_assembly.SITE_COLUMNS`), EPSG:4326.
    members : geopandas.GeoDataFrame
        One row per input feature with its ``site_id``, geometry and the partition at every recorded cut.
    metadata : dict
        The parameters, recorded in the sites file.
    cut : float
        The cut (metres); with cuts chosen per site, the largest cut ``H`` of the choice.
    levels : list of float
        Every recorded cut (metres).
    chosen_cuts : dict of int to float, optional
        Site -> cut chosen for it (with ``choose_cut``).
    ambiguous_cuts : list of float
        Cuts whose partitions depend on merge order (tied heights).
    unknown_commodities : list of str
        Raw commodity names the harmonisation table does not know.
    """

    sites: Any
    members: Any
    metadata: dict[str, Any]
    cut: float
    levels: list[float]
    chosen_cuts: dict[int, float] | None = None
    ambiguous_cuts: list[float] = field(default_factory=list)
    unknown_commodities: list[str] = field(default_factory=list)


def link(polygons: Any = (), points: Any = None, *, commodity_table: CommodityTable | None = None,
         options: LinkOptions | None = None, **overrides: Any) -> LinkedSites:
    """Link mine polygons (from several inventories) and mine points into sites, in memory.

    Feature distance is the geodesic distance between the nearest parts of two features (0 when they touch or
    overlap). One hierarchy is built up to the largest of the cut and the levels; the members record the partition
    at every one of them (``cluster_<metres>``).

    Parameters
    ----------
    polygons : GeoDataFrame, sequence of GeoDataFrame, or mapping of name to GeoDataFrame
        Polygon inventories (any CRS); the names become the members' ``source`` (default ``polygons``,
        ``polygons-1``, ...).
    points : DataFrame, GeoDataFrame or mapping of name to one, optional
        Mine property points: Point geometries in any CRS, or a table with ``lon_col``/``lat_col`` degrees, with
        commodity columns (ICMM's ``Primary Commodity``, ...) and optionally a country column.
    commodity_table : CommodityTable, optional
        Harmonisation table (:func:`mtg.pipeline.commodities.load_commodity_table`); without it raw names are
        kept, lower-cased.
    options : LinkOptions, optional
        The options (a run config's ``link`` section); keyword arguments override them: ``cut`` (``"1km"`` or
        metres), ``linkage``, ``levels`` (more cuts recorded in the members, e.g. for ``choose_cut``: form each
        site at its own cut among the levels below ``cut`` and ``cut``), ``lon_col``, ``lat_col``, ``commodity_cols``,
        ``primary_cols``, ``point_id_col``, ``country_col``, ``points_filter`` (``["Asset Type=Mine"]``).

    Returns
    -------
    LinkedSites

    Examples
    --------
    >>> import geopandas as gpd, pandas as pd, shapely
    >>> from mtg.api import link
    >>> pits = gpd.GeoDataFrame(geometry=[shapely.box(118.0, -22.0, 118.01, -21.99)], crs="EPSG:4326")
    >>> mines = pd.DataFrame({"lon": [118.012], "lat": [-21.995], "Primary Commodity": ["Iron ore"]})
    >>> linked = link(pits, mines, cut="1km")
    >>> linked.sites[["site_id", "n_polygons", "n_points", "primary_commodities"]].to_dict("records")
    [{'site_id': 0, 'n_polygons': 1, 'n_points': 1, 'primary_commodities': ['iron ore']}]
    """
    opts = stage_options(LinkOptions, options, **overrides)
    polygon_sets, point_sets = _named(polygons, "polygons"), _named(points, "points")
    if not polygon_sets:
        raise MtgError("linking sites needs at least one polygon inventory (--polygons, or the segmentation's)")
    cut = parse_distance(opts.cut, "--cut")
    levels = sorted({parse_distance(v, "--levels") for v in opts.levels} - {cut})
    if opts.choose_cut and not [v for v in levels if v < cut]:
        raise MtgError(f"choosing the cut per site needs --levels below the cut ({cut:g} m), e.g. 250m,500m,750m")
    linker = checked_linker(max([cut, *levels]), [cut, *levels], opts.linkage)
    filters = [parse_points_filter(f) for f in opts.points_filter]
    harmoniser = CommodityHarmoniser(commodity_table)
    members = _site_features(polygon_sets, point_sets, opts, harmoniser, filters)
    geoms = members.geometry.to_list()
    polygon = (members["kind"] == "polygon").to_numpy()
    n_polygons = int(polygon.sum())
    log.info("linking %d polygons and %d points at %s m (%s linkage)", n_polygons, len(geoms) - n_polygons,
             ", ".join(f"{c:g}" for c in linker.cuts), linker.linkage)
    # Single linkage never separates features that overlap or touch: link each such group ("atom") as one union,
    # which leaves fewer pairs to measure and the same partitions (at cuts of 1 m and more, where the lon/lat
    # intersection test and the distance kernel's local plane cannot disagree).
    atomise = linker.linkage == "single" and min(linker.cuts) >= ATOM_MIN_CUT_M and n_polygons > 1
    atom_of, linked = polygon_atoms(geoms[:n_polygons]) if atomise else (np.arange(n_polygons), geoms[:n_polygons])
    feature_of = np.concatenate([atom_of, len(linked) + np.arange(len(geoms) - n_polygons)]).astype(np.int64)
    if atomise:
        log.info("%d polygons form %d groups that overlap or touch", n_polygons, len(linked))
    linker.fit_geometries(list(linked) + geoms[n_polygons:])
    if linker.ambiguous_cuts_:
        log.warning("cuts %s m meet tied merge heights: their partitions depend on merge order",
                    linker.ambiguous_cuts_)
    # member labels, numbered in order of first appearance over the members
    labels_by_cut = {c: pd.factorize(v[feature_of])[0].astype(np.int64) for c, v in linker.labels_by_cut_.items()}
    for level in sorted(labels_by_cut):
        members[cut_column(level)] = labels_by_cut[level]
    footprints = FootprintAreas([g if polygon[k] else None for k, g in enumerate(geoms)])
    footprints.add_hierarchy([labels_by_cut[v] for v in sorted(labels_by_cut)], polygon,
                             disjoint=linker.linkage == "single")
    if opts.choose_cut:
        labels, cut_of_member = choose_site_cuts(members, [v for v in levels if v < cut] + [cut], footprints)
    else:
        labels, cut_of_member = labels_by_cut[cut], np.full(len(members), cut)
    members.insert(4, "site_id", labels)
    sites = assemble_sites(members, labels, footprints, cut_of_member)
    chosen = dict(zip(sites["site_id"].astype(int), sites["cut_m"].astype(float))) if opts.choose_cut else None
    metadata = {"polygons": [name for name, _ in polygon_sets], "points": [name for name, _ in point_sets] or None,
                "cut_m": cut, "levels_m": sorted(linker.labels_by_cut_), "choose_cut": bool(opts.choose_cut),
                "linkage": linker.linkage, "lon_col": opts.lon_col, "lat_col": opts.lat_col,
                "commodity_table": None if commodity_table is None else str(commodity_table.path),
                "points_filter": ["=".join(f) for f in filters], "ambiguous_cuts_m": linker.ambiguous_cuts_}
    return LinkedSites(sites=sites, members=members, metadata=metadata, cut=cut,
                       levels=sorted(linker.labels_by_cut_), chosen_cuts=chosen,
                       ambiguous_cuts=linker.ambiguous_cuts_, unknown_commodities=sorted(harmoniser.unknown))


@dataclass
class SitesResult:
    """What :func:`link_sites` wrote."""

    out: Path
    members: Path
    n_sites: int
    n_polygons: int
    n_points: int
    n_point_only_sites: int
    cut: float
    unknown_commodities: list[str] = field(default_factory=list)
    seconds: float = 0.0
    levels: list[float] = field(default_factory=list)
    chosen_cuts: dict[int, float] | None = None
    ambiguous_cuts: list[float] = field(default_factory=list)


def link_sites(polygons: Sequence[str | Path], points: str | Path | None = None, out: str | Path = "sites.parquet",
               *, commodity_table: str | Path | None = None, root: str | Path | None = None,
               options: LinkOptions | None = None,
               **overrides: Any) -> SitesResult:
    """Read polygon and point files, :func:`link` them and write the sites and members files.

    Parameters
    ----------
    polygons : sequence of path
        Polygon files (GeoPackage, GeoParquet, shapefile, GeoJSON, ...; any CRS).
    points : path, optional
        Point file (:func:`mtg.pipeline.io.read_points`: CSV/Parquet with ``lon_col``/``lat_col``, or points).
    out : path
        Sites GeoParquet; the members file is ``<stem>_members.parquet`` beside it
        (:func:`mtg.pipeline.io.write_sites`).
    commodity_table : path, optional
        Harmonisation table (:mod:`mtg.pipeline.commodities`).
    root : path, optional
        The run folder: the sites and members files name their input files (``member_sources``,
        ``point_sources``, ``source``, the metadata) relative to it (:func:`mtg.pipeline.run_paths.portable_path`).
        Default: the folder of ``out``.
    options, **overrides
        As for :func:`link`.

    Returns
    -------
    SitesResult
    """
    from mtg.pipeline.io.outputs import write_sites

    start = time.perf_counter()
    opts = stage_options(LinkOptions, options, **overrides)
    if not polygons:
        raise MtgError("sites mode needs at least one --polygons file")
    folder = Path(root if root is not None else Path(out).parent)
    polygon_sets = {portable_path(p, folder): read_polygons(p) for p in polygons}
    point_sets = None
    if points is not None:
        point_sets = {portable_path(points, folder): read_points(points, opts.lon_col, opts.lat_col)[0]}
    table = load_commodity_table(commodity_table) if commodity_table is not None else None
    linked = link(polygon_sets, point_sets, commodity_table=table, options=opts)
    if commodity_table is not None:
        linked.metadata["commodity_table"] = portable_path(commodity_table, folder)
    return sites_result(linked, *write_sites(linked, out), seconds=time.perf_counter() - start)


def sites_result(linked: LinkedSites, out: Path, members: Path, seconds: float) -> SitesResult:
    """What was written of ``linked`` (sites file ``out``, members file ``members``), counted."""
    sites = linked.sites
    return SitesResult(out=out, members=members, n_sites=len(sites),
                       n_polygons=int((linked.members["kind"] == "polygon").sum()),
                       n_points=int((linked.members["kind"] == "point").sum()),
                       n_point_only_sites=int((sites["n_polygons"] == 0).sum()), cut=linked.cut,
                       unknown_commodities=linked.unknown_commodities, seconds=seconds, levels=linked.levels,
                       chosen_cuts=linked.chosen_cuts, ambiguous_cuts=linked.ambiguous_cuts)
