"""Site linking: exact sparse hierarchical clustering of mine points, and of polygons with points, into sites.

Two modes, both exact (see :mod:`mtg.kernels.hac`): only pairs within ``h_max`` geodesic metres are computed (a
radius graph), yet the flat clusters at every cut ``<= h_max`` equal scipy's dense ``linkage`` + ``fcluster``.

* Points mode (:func:`link_points`): a point file (CSV, Parquet with lon/lat columns, or GeoParquet/GPKG/... of
  points in any CRS) is clustered with single, complete or average linkage at one or more cuts; ``labels.parquet``
  gets one row per input row, in input order: ``row`` (0-based input index) and ``cluster_<metres>`` per cut.
* Sites mode (:func:`link_sites`): polygons from one or more files plus optional points are linked at one cut
  (distance between features = geodesic distance between their nearest parts, 0 when they touch; single linkage
  by default) into sites. The sites file (GeoParquet, EPSG:4326) has one row per site: ``site_id``, the member
  polygons (``member_ids``, ``member_sources``), the linked points (``point_ids``, ``point_sources``), harmonised
  ``commodities`` of the linked points, the union of the member polygons as geometry and its geodesic area
  ``area_km2``. A site made of points only has the point (a MultiPoint for several) as geometry and a null
  ``area_km2``: it has no footprint. ``<stem>_members.parquet`` maps every input feature to its ``site_id``.

All files are written atomically (a temporary name in the same folder, then :func:`os.replace`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.kernels.hac import SparseHAC, sparse_hac
from mtg.pipeline.commodities import CommodityHarmoniser
from mtg.pipeline.errors import MtgError
from mtg.pipeline.sharded_linking import cluster_points

log = logging.getLogger(__name__)

_DISTANCE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(km|m)?\s*$", re.IGNORECASE)
# Unicode minus and look-alikes that spreadsheets export in numbers (ICMM's CSV has U+2212).
_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
CSV_SUFFIXES = (".csv", ".txt", ".tsv")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


# ----------------------------------------------------------------------------------------------- small helpers


def parse_distance(text: str | float | int, name: str = "distance") -> float:
    """Metres from ``"10km"``, ``"500m"``, ``"2.5 km"`` or a bare number of metres (``"1000"``).

    Raises
    ------
    MtgError
        Naming the bad value when it is not a non-negative finite number with an optional ``m``/``km`` unit.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _DISTANCE.match(str(text))
        if not match:
            raise MtgError(f"{name} {text!r} is not a distance: write metres or kilometres, e.g. 500m, 2.5km, 1000")
        value = float(match.group(1)) * (1000.0 if (match.group(2) or "m").lower() == "km" else 1.0)
    if not np.isfinite(value) or value < 0:
        raise MtgError(f"{name} {text!r} must be a finite distance >= 0")
    return value


def cut_column(metres: float) -> str:
    """Label column of a cut: ``cluster_5000`` for 5 km, ``cluster_2500.5`` for 2500.5 m."""
    metres = float(metres)
    return f"cluster_{int(metres)}" if metres.is_integer() else f"cluster_{np.format_float_positional(metres)}"


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")


def _replace(tmp: Path, out: Path) -> None:
    try:
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _is_geoparquet(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise MtgError(f"{path} is not a readable Parquet file: {err}") from None
    return b"geo" in metadata


def _read_vector(path: Path):
    """A GeoDataFrame from a GeoParquet or an OGR vector file, with its CRS checked and turned into EPSG:4326."""
    import geopandas as gpd

    try:
        frame = gpd.read_parquet(path) if _suffix(path) == ".parquet" else gpd.read_file(path)
    except MtgError:
        raise
    except Exception as err:  # noqa: BLE001 - pyogrio/pyarrow raise many types
        raise MtgError(f"{path} is not a readable vector file: {err}") from None
    if frame.crs is None:
        raise MtgError(f"{path} has no CRS: set one (e.g. EPSG:4326) so its coordinates can be read")
    geometry = frame.geometry
    bad = np.flatnonzero(geometry.isna().to_numpy() | geometry.is_empty.to_numpy())
    if bad.size:
        raise MtgError(f"{path}: row {bad[0]} has an empty or missing geometry ({bad.size} such rows)")
    if not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs("EPSG:4326")
    return frame.reset_index(drop=True)


def _coordinate(frame: pd.DataFrame, column: str, path: Path, line_offset: int | None) -> np.ndarray:
    if column not in frame.columns:
        raise MtgError(f"{path} has no column {column!r}; its columns are {list(frame.columns)} "
                       f"(choose them with --lon-col/--lat-col)")
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
    else:
        text = raw.astype("string").str.translate(_MINUS).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f"row {row}" + (f" (line {row + line_offset})" if line_offset is not None else "")
        raise MtgError(f"{path}: column {column!r} {where} holds {raw.iloc[row]!r}, not a finite number "
                       f"({int(bad.sum())} such rows)")
    return values


def _check_range(lon: np.ndarray, lat: np.ndarray, path: Path, line_offset: int | None,
                 names: tuple[str, str] = ("longitude", "latitude")) -> None:
    for values, limit, name in ((lon, 180.0, names[0]), (lat, 90.0, names[1])):
        bad = np.flatnonzero(np.abs(values) > limit)
        if bad.size:
            row = int(bad[0])
            where = f"row {row}" + (f" (line {row + line_offset})" if line_offset is not None else "")
            raise MtgError(f"{path}: {where} has {name} {float(values[row])!r} outside [-{limit:g}, {limit:g}] degrees "
                           f"({bad.size} such rows); are the coordinates in degrees and the columns the right way "
                           f"round?")


def read_points(path: str | Path, lon_col: str = "lon", lat_col: str = "lat") -> tuple[pd.DataFrame, np.ndarray,
                                                                                          np.ndarray]:
    """Read a point file into ``(frame, lon, lat)`` in EPSG:4326 degrees, rows in file order.

    CSV (``.csv``, ``.txt``; ``.tsv`` tab-separated) and plain Parquet take the coordinates from ``lon_col`` and
    ``lat_col`` (WGS 84 degrees; text cells may use the Unicode minus sign). GeoParquet and OGR vector files
    (GeoPackage, GeoJSON, ...) must hold points with a CRS; they are transformed to EPSG:4326.

    Raises
    ------
    MtgError
        Naming the file and the missing column, the row with a non-numeric or out-of-range coordinate, the missing
        CRS or the non-point geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise MtgError(f"point file {path} does not exist")
    suffix = _suffix(path)
    if suffix in CSV_SUFFIXES:
        try:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={lon_col: str, lat_col: str},
                                encoding="utf-8-sig")
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise MtgError(f"{path} is not a readable CSV file: {err}") from None
        lon = _coordinate(frame, lon_col, path, 2)
        lat = _coordinate(frame, lat_col, path, 2)
        _check_range(lon, lat, path, 2)
        return frame, lon, lat
    if suffix == ".parquet" and not _is_geoparquet(path):
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001
            raise MtgError(f"{path} is not a readable Parquet file: {err}") from None
        frame = frame.reset_index(drop=True)
        lon = _coordinate(frame, lon_col, path, None)
        lat = _coordinate(frame, lat_col, path, None)
        _check_range(lon, lat, path, None)
        return frame, lon, lat
    if suffix != ".parquet" and suffix not in VECTOR_SUFFIXES:
        raise MtgError(f"point file {path}: unknown format {suffix!r}; use CSV, Parquet, GeoParquet or GeoPackage")
    frame = _read_vector(path)
    types = frame.geometry.geom_type.to_numpy()
    bad = np.flatnonzero(types != "Point")
    if bad.size:
        raise MtgError(f"{path}: row {bad[0]} is a {types[bad[0]]}, not a Point ({bad.size} non-point rows); "
                       f"give polygons with --polygons")
    lon = frame.geometry.x.to_numpy(dtype=np.float64)
    lat = frame.geometry.y.to_numpy(dtype=np.float64)
    _check_range(lon, lat, path, None)
    return frame, lon, lat


def read_polygons(path: str | Path):
    """A GeoDataFrame of the polygons (Polygon or MultiPolygon) in a vector file, in EPSG:4326, in file order."""
    path = Path(path)
    if not path.is_file():
        raise MtgError(f"polygon file {path} does not exist")
    if _suffix(path) != ".parquet" and _suffix(path) not in VECTOR_SUFFIXES:
        raise MtgError(f"polygon file {path}: unknown format {_suffix(path)!r}; use GeoPackage, GeoParquet, ...")
    if _suffix(path) == ".parquet" and not _is_geoparquet(path):
        raise MtgError(f"polygon file {path} is a plain Parquet file without GeoParquet 'geo' metadata")
    frame = _read_vector(path)
    types = frame.geometry.geom_type.to_numpy()
    bad = np.flatnonzero(~np.isin(types, ["Polygon", "MultiPolygon"]))
    if bad.size:
        raise MtgError(f"{path}: row {bad[0]} is a {types[bad[0]]}, not a Polygon ({bad.size} such rows)")
    bounds = frame.geometry.bounds.to_numpy()
    bad = np.flatnonzero((np.abs(bounds[:, [0, 2]]) > 180).any(axis=1) | (np.abs(bounds[:, [1, 3]]) > 90).any(axis=1))
    if bad.size:
        raise MtgError(f"{path}: row {bad[0]} has coordinates outside lon/lat degrees after transformation to "
                       f"EPSG:4326")
    return frame


# ----------------------------------------------------------------------------------------------- the estimator


class SparseAgglomerativeLinker:
    """Exact agglomerative clustering of lon/lat points (or geometries) on a sparse geodesic radius graph.

    A scikit-learn-style estimator: parameters in ``__init__``, :meth:`fit` returns ``self`` and sets the
    attributes ending in ``_``. The flat clusters at every cut equal scipy's dense
    ``fcluster(linkage(D, linkage), cut, "distance")`` up to relabelling (except at cuts flagged in
    ``ambiguous_cuts_``, where ties let the partition depend on merge order).

    Parameters
    ----------
    h_max : float
        Largest cut, in metres: only pairs within ``h_max`` are computed.
    cuts : sequence of float, optional
        Cut heights in metres, each in ``[0, h_max]``; default ``[h_max]``.
    linkage : {"single", "complete", "average"}
        Linkage method. "ward", "centroid" and "median" raise ``ValueError`` in :meth:`fit` (not exact on a
        sparse graph).

    Attributes
    ----------
    labels_ : numpy.ndarray
        int64 labels at the first cut (clusters numbered 0, 1, ... in order of first appearance).
    labels_by_cut_ : dict of float to numpy.ndarray
        Labels per cut (metres).
    ambiguous_cuts_ : list of float
        Cuts whose partition may differ from scipy's because of ties.
    linkages_ : list of mtg.kernels.hac.ComponentLinkage
        Linkage matrices of the connected components (scipy format, heights in metres).
    component_ : numpy.ndarray
        Connected component of each input in the graph of pairs within ``h_max``.
    n_clusters_ : int
        Number of clusters at the first cut.
    n_edges_ : int
        Pairs within ``h_max``.
    """

    def __init__(self, h_max: float, cuts: Sequence[float] | None = None, linkage: str = "single"):
        self.h_max = h_max
        self.cuts = cuts
        self.linkage = linkage

    def get_params(self, deep: bool = True) -> dict:
        return {"h_max": self.h_max, "cuts": self.cuts, "linkage": self.linkage}

    def set_params(self, **params) -> SparseAgglomerativeLinker:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"invalid parameter {key!r} for SparseAgglomerativeLinker")
            setattr(self, key, value)
        return self

    def _cuts(self) -> np.ndarray:
        cuts = [self.h_max] if self.cuts is None or len(self.cuts) == 0 else list(self.cuts)
        return np.asarray(cuts, dtype=np.float64)

    def fit(self, lon, lat=None, client: Any = None) -> SparseAgglomerativeLinker:
        """Cluster points given as ``lon, lat`` degree arrays, or geometries (lon/lat) given alone as ``lon``.

        Points are clustered tile by tile and shard by shard (:func:`mtg.pipeline.sharded_linking.cluster_points`),
        on the workers of ``client`` (a ``distributed.Client``) when one is given, else in this process.
        """
        if lat is None:
            return self.fit_geometries(lon)
        result = cluster_points(lon, lat, float(self.h_max), str(self.linkage), self._cuts(), client=client)
        return self._set(result)

    def fit_geometries(self, geometries) -> SparseAgglomerativeLinker:
        """Cluster shapely geometries in lon/lat degrees by the geodesic distance between their nearest parts."""
        from mtg.kernels.geometry_graph import geometry_distance_callback, geometry_radius_graph

        geometries = list(geometries)
        i, j, d = geometry_radius_graph(geometries, float(self.h_max))
        exact = geometry_distance_callback(geometries) if str(self.linkage).lower() == "average" else None
        return self._fit_graph(len(geometries), i, j, d, exact)

    def _fit_graph(self, n: int, i, j, d, exact) -> SparseAgglomerativeLinker:
        return self._set(sparse_hac(n, i, j, d, float(self.h_max), str(self.linkage), self._cuts(), exact))

    def _set(self, result: SparseHAC) -> SparseAgglomerativeLinker:
        cuts = result.cuts
        n = result.component.size
        self.labels_by_cut_ = {float(c): result.labels[k] for k, c in enumerate(cuts)}
        self.labels_ = result.labels[0]
        self.ambiguous_cuts_ = [float(c) for c, a in zip(cuts, result.ambiguous) if a]
        self.linkages_ = result.linkages
        self.component_ = result.component
        self.n_clusters_ = int(self.labels_.max()) + 1 if n else 0
        self.n_edges_ = result.n_edges
        self.n_exact_distances_ = result.n_exact_distances
        return self

    def fit_predict(self, lon, lat=None) -> np.ndarray:
        return self.fit(lon, lat).labels_


def _linker(h_max: float, cuts: Sequence[float], linkage: str) -> SparseAgglomerativeLinker:
    """A linker with the user's parameters checked, errors as :class:`MtgError`."""
    from mtg.kernels.hac import check_method

    try:
        check_method(linkage)
    except ValueError as err:
        raise MtgError(f"--linkage {linkage}: {err}") from None
    cuts = list(cuts) or [h_max]
    above = [c for c in cuts if c > h_max]
    if above:
        raise MtgError(f"--cut {above[0]:g} m is above --h-max {h_max:g} m: raise --h-max to at least the largest cut")
    if len(set(cuts)) != len(cuts):
        raise MtgError(f"--cut values repeat: {[f'{c:g} m' for c in cuts]}")
    return SparseAgglomerativeLinker(h_max=h_max, cuts=cuts, linkage=linkage.lower())


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


def link_points(points: str | Path, out: str | Path = "labels.parquet", h_max: float = 10_000.0,
                cuts: Sequence[float] = (), linkage: str = "single", lon_col: str = "lon",
                lat_col: str = "lat", client: Any = None) -> LinkResult:
    """Cluster a point file at one or more cuts and write the labels Parquet.

    The file has one row per input row, in input order: ``row`` (int64, 0-based input index) and one int64
    column ``cluster_<metres>`` per cut (clusters numbered 0, 1, ... in order of first appearance). Its schema
    metadata ``mtg`` holds the parameters and the cuts flagged ambiguous (JSON). With a ``distributed.Client``
    the graph tiles and clustering shards run on its workers.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    out = Path(out)
    linker = _linker(float(h_max), [float(c) for c in cuts], linkage)
    frame, lon, lat = read_points(points, lon_col, lat_col)
    log.info("linking %d points from %s (h_max %g m, cuts %s, %s linkage)", len(frame), points, linker.h_max,
             linker.cuts, linker.linkage)
    linker.fit(lon, lat, client=client)
    columns = {"row": pa.array(np.arange(len(frame), dtype=np.int64))}
    for cut, labels in linker.labels_by_cut_.items():
        columns[cut_column(cut)] = pa.array(labels.astype(np.int64))
    meta = {"points": str(points), "lon_col": lon_col, "lat_col": lat_col, "h_max_m": linker.h_max,
            "cuts_m": list(linker.labels_by_cut_), "linkage": linker.linkage,
            "ambiguous_cuts_m": linker.ambiguous_cuts_, "n_edges": linker.n_edges_}
    table = pa.table(columns).replace_schema_metadata({"mtg": json.dumps(meta)})
    tmp = _atomic_target(out)
    pq.write_table(table, tmp)
    _replace(tmp, out)
    if linker.ambiguous_cuts_:
        log.warning("cuts %s m meet tied merge heights: their partitions depend on merge order",
                    linker.ambiguous_cuts_)
    n_clusters = {c: (int(v.max()) + 1 if v.size else 0) for c, v in linker.labels_by_cut_.items()}
    return LinkResult(out=out, n_points=len(frame), n_edges=linker.n_edges_, cuts=list(linker.labels_by_cut_),
                      n_clusters=n_clusters, ambiguous_cuts=linker.ambiguous_cuts_,
                      seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- sites mode


def _ids(frame: pd.DataFrame, id_col: str | None, path: Path) -> list[str]:
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


def _geodesic_area_km2(geometry) -> float:
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    oriented = shapely.orient_polygons(geometry, exterior_cw=False)
    return abs(geod.geometry_area_perimeter(oriented)[0]) / 1e6


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


def link_sites(polygons: Sequence[str | Path], points: str | Path | None = None, out: str | Path = "sites.parquet",
               cut: float = 2_000.0, linkage: str = "single", lon_col: str = "lon", lat_col: str = "lat",
               commodity_table: str | Path | None = None, commodity_cols: Sequence[str] | None = None,
               point_id_col: str | None = None) -> SitesResult:
    """Link polygons (from several files) and points into sites at one cut; write the sites and members files.

    Feature distance is the geodesic distance between the nearest parts of two features (0 when they touch or
    overlap). Commodity columns default to every point column whose name contains "commodit" (ICMM's
    ``Primary Commodity``, ``Secondary Commodity``, ``Other Commodities``).
    """
    import geopandas as gpd
    import shapely

    start = time.perf_counter()
    out = Path(out)
    if not polygons:
        raise MtgError("sites mode needs at least one --polygons file")
    linker = _linker(float(cut), [float(cut)], linkage)
    harmoniser = CommodityHarmoniser.from_path(commodity_table)

    geoms, kinds, sources, rows, ids = [], [], [], [], []
    for path in polygons:
        path = Path(path)
        frame = read_polygons(path)
        geoms.extend(frame.geometry.to_list())
        kinds.extend(["polygon"] * len(frame))
        sources.extend([str(path)] * len(frame))
        rows.extend(range(len(frame)))
        ids.extend(_ids(frame, None, path))
    n_polygons = len(geoms)
    commodities: list[list[str]] = [[] for _ in range(n_polygons)]
    if points is not None:
        path = Path(points)
        frame, lon, lat = read_points(path, lon_col, lat_col)
        cols = list(commodity_cols) if commodity_cols is not None else \
            [c for c in frame.columns if isinstance(c, str) and "commodit" in c.lower()]
        commodities.extend(harmoniser.harmonise_rows(frame, cols))
        geoms.extend(shapely.points(lon, lat).tolist())
        kinds.extend(["point"] * len(frame))
        sources.extend([str(path)] * len(frame))
        rows.extend(range(len(frame)))
        ids.extend(_ids(frame, point_id_col, path))
    log.info("linking %d polygons and %d points at %g m (%s linkage)", n_polygons, len(geoms) - n_polygons,
             linker.h_max, linker.linkage)
    try:
        linker.fit_geometries(geoms)
    except ModuleNotFoundError as err:
        raise MtgError(f"sites mode needs mtg.kernels.geometry_graph, which is not installed: {err}") from None
    labels = linker.labels_

    members = pd.DataFrame({"source": sources, "kind": kinds, "row": np.asarray(rows, dtype=np.int64),
                            "feature_id": ids, "site_id": labels.astype(np.int64)})
    site_rows = []
    for site, group in members.groupby("site_id", sort=True):
        index = group.index.to_numpy()
        poly = index[index < n_polygons]
        pts = index[index >= n_polygons]
        names: dict[str, None] = {}
        for k in pts:
            for name in commodities[k]:
                names.setdefault(name, None)
        if poly.size:
            geometry = shapely.union_all([geoms[k] for k in poly])
            area = _geodesic_area_km2(geometry)
        else:
            geometry = geoms[pts[0]] if pts.size == 1 else shapely.multipoints([geoms[k] for k in pts])
            area = np.nan
        site_rows.append({
            "site_id": int(site), "n_polygons": int(poly.size), "n_points": int(pts.size),
            "member_ids": [ids[k] for k in poly], "member_sources": [sources[k] for k in poly],
            "point_ids": [ids[k] for k in pts], "point_sources": [sources[k] for k in pts],
            "commodities": list(names), "area_km2": area, "geometry": geometry,
        })
    sites = gpd.GeoDataFrame(site_rows, geometry="geometry", crs="EPSG:4326")
    if sites.empty:
        sites = gpd.GeoDataFrame(columns=["site_id", "n_polygons", "n_points", "member_ids", "member_sources",
                                          "point_ids", "point_sources", "commodities", "area_km2", "geometry"],
                                 geometry="geometry", crs="EPSG:4326")
    members_out = out.with_name(f"{out.stem}_members.parquet")
    tmp = _atomic_target(out)
    sites.to_parquet(tmp, index=False)
    tmp_members = _atomic_target(members_out)
    members.to_parquet(tmp_members, index=False)
    _replace(tmp, out)
    _replace(tmp_members, members_out)
    return SitesResult(out=out, members=members_out, n_sites=len(sites), n_polygons=n_polygons,
                       n_points=len(geoms) - n_polygons, n_point_only_sites=int((sites["n_polygons"] == 0).sum()),
                       cut=linker.h_max, unknown_commodities=sorted(harmoniser.unknown),
                       seconds=time.perf_counter() - start)
