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
  ``commodities`` and ``primary_commodities`` of the linked points, ``country`` (majority of the linked points'
  countries, ties alphabetical, else of the member polygons', else null), the site's ``cut_m``, the union of the
  member polygons as geometry and its geodesic area ``area_km2`` (WGS-84 ellipsoid). A site made of points only
  has the point (a MultiPoint for several) as geometry and a null ``area_km2``: it has no footprint.
  ``<stem>_members.parquet`` maps every input feature to its ``site_id`` and keeps what land use needs at other
  cuts: each point's commodities, primary commodities, country and lon/lat, and the partition at every recorded
  cut (``cluster_<metres>``, the cut itself and ``levels``). The sites file's schema metadata ``mtg`` records the
  inputs and parameters (:func:`read_link_metadata`). With ``choose_cut`` each site is formed at its own cut
  (:func:`mtg.pipeline.landuse.choose_site_cuts`).

All files are written atomically (a temporary name in the same folder, then :func:`os.replace`).
"""

from __future__ import annotations

import json
import logging
import re
import time
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
from mtg.pipeline.table_io import METADATA_KEY, atomic_write, atomic_write_all, to_geoparquet

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
    atomic_write(out, lambda p: pq.write_table(table, p))
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



#: Columns read as a feature's country when no column is named (matched case-insensitively).
COUNTRY_COLUMNS = ("country", "country_name", "country name")
#: Columns of the members file besides the ``cluster_<metres>`` labels, in order.
MEMBER_COLUMNS = ["source", "kind", "row", "feature_id", "site_id", "commodities", "primary_commodities", "country",
                  "lon", "lat"]
SITE_COLUMNS = ["site_id", "n_polygons", "n_points", "member_ids", "member_sources", "point_ids", "point_sources",
                "commodities", "primary_commodities", "country", "cut_m", "area_km2", "geometry"]
#: Column types of the sites table (the others hold lists, and the geometry).
SITE_DTYPES = {"site_id": "int64", "n_polygons": "int64", "n_points": "int64", "country": "string",
               "cut_m": "float64", "area_km2": "float64"}


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


def _filter_rows(frame: pd.DataFrame, filters: Sequence[tuple[str, str]], path: Path) -> np.ndarray:
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


def _country_values(frame: pd.DataFrame, column: str | None, path: Path, required: bool) -> list[str | None]:
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


def majority(values) -> str | None:
    """The most frequent non-null value; ties go to the alphabetically first; None when there is none."""
    counts: dict[str, int] = {}
    for v in values:
        if v is not None and not pd.isna(v):
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))


class FootprintAreas:
    """Union geometry and geodesic area (WGS-84 ellipsoid, km^2) of sets of polygons, cached by the set.

    Nested partitions (the cuts of one hierarchy) are measured bottom-up once :meth:`add_hierarchy` has named the
    parts of each cluster: a cluster's union is the union of its parts' unions, and when the parts are disjoint
    (single linkage at a cut above 0: distinct clusters lie more than the cut apart) its area is the sum of theirs.

    Parameters
    ----------
    geometries : sequence of shapely.Geometry or None
        The features in lon/lat degrees by member index (None for features that are not polygons).
    """

    def __init__(self, geometries: Sequence[Any]):
        self.geometries = list(geometries)
        self._geometry: dict[tuple[int, ...], Any] = {}
        self._area: dict[tuple[int, ...], float] = {}
        self._parts: dict[tuple[int, ...], tuple[list[tuple[int, ...]], bool]] = {}

    @staticmethod
    def key(indices) -> tuple[int, ...]:
        return tuple(sorted(int(k) for k in indices))

    def add_hierarchy(self, labels_by_level: Sequence[np.ndarray], polygon: np.ndarray, disjoint: bool) -> None:
        """Name the parts of every cluster of nested partitions (finest first), for bottom-up unions and areas.

        Parameters
        ----------
        labels_by_level : sequence of numpy.ndarray
            Member labels of each partition, finest first; each partition must be nested in the next.
        polygon : numpy.ndarray
            bool, which members are polygons.
        disjoint : bool
            Whether distinct clusters of a partition never overlap (single linkage at cuts above 0).
        """
        index = np.flatnonzero(polygon)
        previous = None
        for labels in labels_by_level:
            labels = np.asarray(labels)[index]
            order = np.argsort(labels, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if order.size else []
            for group in groups:
                if previous is None:
                    continue
                children = np.unique(previous[group])
                if children.size > 1:
                    members = index[group]
                    parts = [self.key(members[previous[group] == c]) for c in children]
                    self._parts[self.key(members)] = (parts, disjoint)
            previous = labels

    def geometry(self, indices) -> Any:
        """Union of the polygons ``indices`` (None for none)."""
        import shapely

        key = indices if isinstance(indices, tuple) else self.key(indices)
        if not key:
            return None
        if key not in self._geometry:
            if len(key) == 1:
                geometry = self.geometries[key[0]]
            elif key in self._parts:
                geometry = shapely.union_all([self.geometry(part) for part in self._parts[key][0]])
            else:
                geometry = shapely.union_all([self.geometries[k] for k in key])
            self._geometry[key] = geometry
        return self._geometry[key]

    def area(self, indices) -> float:
        """Geodesic area (km^2) of the union of the polygons ``indices``; NaN for none."""
        key = indices if isinstance(indices, tuple) else self.key(indices)
        if not key:
            return float("nan")
        if key not in self._area:
            parts = self._parts.get(key)
            if parts is not None and parts[1]:
                self._area[key] = float(sum(self.area(part) for part in parts[0]))
            else:
                self._area[key] = _geodesic_area_km2(self.geometry(key))
        return self._area[key]

    def union(self, indices) -> tuple[Any, float]:
        """``(union geometry, area_km2)`` of the polygons ``indices`` (member indices, any order)."""
        key = self.key(indices)
        return self.geometry(key), self.area(key)


def _names(lists) -> list[str]:
    out: dict[str, None] = {}
    for names in lists:
        for name in names:
            out.setdefault(str(name), None)
    return list(out)


def assemble_sites(members: pd.DataFrame, labels: np.ndarray, footprints: FootprintAreas,
                   cut_m: np.ndarray | float | None = None, with_geometry: bool = True):
    """The sites of one partition of the members: one row per label, in label order.

    Parameters
    ----------
    members : pandas.DataFrame
        The members table (:data:`MEMBER_COLUMNS`; ``kind`` "polygon" or "point", points with ``lon``/``lat``).
    labels : numpy.ndarray
        Site label of each member (int).
    footprints : FootprintAreas
        Polygon geometries by member index, for the unions and their areas.
    cut_m : float or numpy.ndarray, optional
        Cut of each site (scalar, or per member: the cut that made its site).
    with_geometry : bool
        False leaves the polygon sites' geometry empty (None) and measures only their areas (faster).

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`SITE_COLUMNS` in EPSG:4326. Commodities are the linked points' (in order of appearance); the country
        is the majority over the linked points' countries (ties: alphabetical), else over the member polygons',
        else null. A site of points only has the point(s) as geometry and a null area.
    """
    import geopandas as gpd
    import shapely

    labels = np.asarray(labels)
    kinds = members["kind"].to_numpy()
    ids, sources = members["feature_id"].to_numpy(), members["source"].to_numpy()
    xy = members[["lon", "lat"]].to_numpy(dtype=np.float64)
    countries = members["country"].astype(object).where(members["country"].notna(), None).to_numpy()
    commodities, primary = members["commodities"].to_numpy(), members["primary_commodities"].to_numpy()
    cuts = np.broadcast_to(np.asarray(np.nan if cut_m is None else cut_m, dtype=np.float64), labels.shape)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    rows = []
    for index in np.split(order, bounds) if labels.size else []:
        poly = index[kinds[index] == "polygon"]
        pts = index[kinds[index] == "point"]
        if poly.size:
            key = footprints.key(poly)
            geometry, area = (footprints.geometry(key) if with_geometry else None), footprints.area(key)
        else:
            geometry = shapely.Point(xy[pts[0]]) if pts.size == 1 else shapely.MultiPoint(xy[pts])
            area = np.nan
        country = majority(countries[pts]) or majority(countries[poly])
        rows.append({
            "site_id": int(labels[index[0]]), "n_polygons": int(poly.size), "n_points": int(pts.size),
            "member_ids": [str(ids[k]) for k in poly], "member_sources": [str(sources[k]) for k in poly],
            "point_ids": [str(ids[k]) for k in pts], "point_sources": [str(sources[k]) for k in pts],
            "commodities": _names(commodities[pts]), "primary_commodities": _names(primary[pts]),
            "country": country, "cut_m": float(cuts[index[0]]), "area_km2": float(area), "geometry": geometry,
        })
    table = pd.DataFrame(rows, columns=SITE_COLUMNS).astype(SITE_DTYPES)
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(table["geometry"], crs="EPSG:4326"), crs="EPSG:4326")


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


def _load_site_features(polygons: Sequence[str | Path], points: str | Path | None, lon_col: str, lat_col: str,
                        harmoniser: CommodityHarmoniser, commodity_cols: Sequence[str] | None,
                        primary_cols: Sequence[str] | None, point_id_col: str | None, country_col: str | None,
                        points_filter: Sequence[tuple[str, str]]) -> tuple[list, pd.DataFrame]:
    """Geometries (polygons first, then points) and the members table without labels."""
    import shapely

    geoms: list = []
    parts: list[pd.DataFrame] = []
    for path in polygons:
        path = Path(path)
        frame = read_polygons(path)
        geoms.extend(frame.geometry.to_list())
        n = len(frame)
        parts.append(pd.DataFrame({
            "source": [str(path)] * n, "kind": ["polygon"] * n, "row": np.arange(n, dtype=np.int64),
            "feature_id": _ids(frame, None, path), "commodities": [[] for _ in range(n)],
            "primary_commodities": [[] for _ in range(n)],
            "country": _country_values(frame, country_col, path, required=False),
            "lon": np.full(n, np.nan), "lat": np.full(n, np.nan)}))
    if points is not None:
        path = Path(points)
        frame, lon, lat = read_points(path, lon_col, lat_col)
        ids = _ids(frame, point_id_col, path)
        keep = _filter_rows(frame, points_filter, path)
        rows = np.flatnonzero(keep)
        frame = frame.iloc[rows].reset_index(drop=True)
        lon, lat, ids = lon[rows], lat[rows], [ids[k] for k in rows]
        cols = list(commodity_cols) if commodity_cols is not None else \
            [c for c in frame.columns if isinstance(c, str) and "commodit" in c.lower()]
        primary = list(primary_cols) if primary_cols is not None else \
            ([c for c in cols if "primary" in c.lower()] or cols)
        commodities = harmoniser.harmonise_rows(frame, cols)
        # the primary names are among all names: a harmoniser sharing the log reports each unknown name once
        primary_names = CommodityHarmoniser(harmoniser.table, _logged=harmoniser._logged).harmonise_rows(frame, primary)
        geoms.extend(shapely.points(lon, lat).tolist())
        n = len(frame)
        parts.append(pd.DataFrame({
            "source": [str(path)] * n, "kind": ["point"] * n, "row": rows.astype(np.int64), "feature_id": ids,
            "commodities": commodities, "primary_commodities": primary_names,
            "country": _country_values(frame, country_col, path, required=country_col is not None),
            "lon": lon, "lat": lat}))
    members = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MEMBER_COLUMNS)
    members["country"] = members["country"].astype("string")
    return geoms, members


def read_link_metadata(sites: str | Path) -> dict[str, Any]:
    """The parameters :func:`link_sites` recorded in a sites file (``{}`` for files written without them)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(sites).metadata or {}
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise MtgError(f"{sites} is not a readable Parquet file: {err}") from None
    return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}


#: Smallest cut at which sites mode links groups of overlapping or touching polygons as one feature.
ATOM_MIN_CUT_M = 1.0


def _polygon_atoms(polygons: Sequence[Any]) -> tuple[np.ndarray, list]:
    """Groups of polygons that overlap or touch (connected components of ``intersects``) and their unions.

    Returns the group of each polygon (groups numbered by their first polygon) and the groups' geometries. A group
    whose union GEOS cannot compute (invalid input) is left as its separate polygons.
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from shapely.errors import GEOSException

    arr = np.empty(len(polygons), dtype=object)
    arr[:] = list(polygons)
    i, j = shapely.STRtree(arr).query(arr, predicate="intersects")
    n = arr.size
    component = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)), directed=False)[1]
    order = np.argsort(component, kind="stable")
    atom_of = np.empty(n, dtype=np.int64)
    atoms: list = []
    for group in np.split(order, np.flatnonzero(np.diff(component[order])) + 1):
        unions = [arr[group[0]]]
        if group.size > 1:
            try:
                unions = [shapely.union_all(arr[group])]
            except GEOSException:
                unions = list(arr[group])
        atom_of[group] = len(atoms) + (np.arange(group.size) if len(unions) > 1 else 0)
        atoms.extend(unions)
    # number the groups in order of their first polygon, as the clustering numbers clusters
    first = np.full(len(atoms), n, dtype=np.int64)
    np.minimum.at(first, atom_of, np.arange(n))
    rank = np.empty(len(atoms), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(atoms))
    reordered: list = [None] * len(atoms)
    for k, geometry in enumerate(atoms):
        reordered[rank[k]] = geometry
    return rank[atom_of], reordered


def link_sites(polygons: Sequence[str | Path], points: str | Path | None = None, out: str | Path = "sites.parquet",
               cut: float = 2_000.0, linkage: str = "single", lon_col: str = "lon", lat_col: str = "lat",
               commodity_table: str | Path | None = None, commodity_cols: Sequence[str] | None = None,
               point_id_col: str | None = None, *, levels: Sequence[float] = (), choose_cut: bool = False,
               primary_cols: Sequence[str] | None = None, country_col: str | None = None,
               points_filter: Sequence[tuple[str, str] | str] = ()) -> SitesResult:
    """Link polygons (from several files) and points into sites; write the sites and members files.

    Feature distance is the geodesic distance between the nearest parts of two features (0 when they touch or
    overlap). One hierarchy is built up to the largest of ``cut`` and ``levels``; the members file records the
    partition at every one of them (``cluster_<metres>``).

    Parameters
    ----------
    polygons : sequence of path
        Polygon files (GeoPackage, GeoParquet, shapefile, GeoJSON, ...; any CRS).
    points : path, optional
        Point file (:func:`read_points`) with commodity columns.
    out : path
        Sites GeoParquet; the members file is ``<stem>_members.parquet`` beside it.
    cut : float
        Cut in metres. With ``choose_cut`` it is the largest cut ``H`` of the per-site choice.
    linkage : {"single", "complete", "average"}
    lon_col, lat_col : str
        Coordinate columns of a CSV/Parquet point file.
    commodity_table : path, optional
        Harmonisation table (:mod:`mtg.pipeline.commodities`).
    commodity_cols : sequence of str, optional
        Point columns with commodities; default every column whose name contains "commodit" (ICMM's
        ``Primary Commodity``, ``Secondary Commodity``, ``Other Commodities``).
    point_id_col : str, optional
        Point id column (default: a unique ``...id`` column, else the row).
    levels : sequence of float
        More cuts (metres) recorded in the members file, for :func:`mtg.pipeline.landuse.choose_site_cuts` and
        land-use sensitivity.
    choose_cut : bool
        Form each site at its own cut ``h <= cut`` among ``levels`` and ``cut`` (see
        :func:`mtg.pipeline.landuse.choose_site_cuts`); the sites file gives each site's ``cut_m``.
    primary_cols : sequence of str, optional
        Point columns with the *primary* commodities; default the commodity columns whose name contains "primary",
        or all commodity columns when none does.
    country_col : str, optional
        Point column with the country (default: a column named ``country``, any case); polygons contribute a
        column of that name, or ``country``/``country_name``, when they have one.
    points_filter : sequence of (column, value) or "COLUMN=VALUE"
        Keep only the point rows whose cell lists the value (:func:`parse_points_filter`); member ``row`` stays
        the row in the file.

    Returns
    -------
    SitesResult
    """
    start = time.perf_counter()
    out = Path(out)
    if not polygons:
        raise MtgError("sites mode needs at least one --polygons file")
    cut = float(cut)
    levels = sorted({float(v) for v in levels} - {cut})
    if choose_cut and not [v for v in levels if v < cut]:
        raise MtgError(f"choosing the cut per site needs --levels below the cut ({cut:g} m), e.g. 250m,500m,750m")
    h_max = max([cut, *levels])
    linker = _linker(h_max, [cut, *levels], linkage)
    filters = [parse_points_filter(f) if isinstance(f, str) else tuple(f) for f in points_filter]
    harmoniser = CommodityHarmoniser.from_path(commodity_table)
    geoms, members = _load_site_features(polygons, points, lon_col, lat_col, harmoniser, commodity_cols,
                                         primary_cols, point_id_col, country_col, filters)
    n_polygons = int((members["kind"] == "polygon").sum())
    log.info("linking %d polygons and %d points at %s m (%s linkage)", n_polygons, len(geoms) - n_polygons,
             ", ".join(f"{c:g}" for c in linker.cuts), linker.linkage)
    # Single linkage never separates features that overlap or touch: link each such group ("atom") as one union,
    # which leaves fewer pairs to measure and the same partitions (at cuts of 1 m and more, where the lon/lat
    # intersection test and the distance kernel's local plane cannot disagree).
    atomise = linker.linkage == "single" and min(linker.cuts) >= ATOM_MIN_CUT_M and n_polygons > 1
    atom_of, linked = _polygon_atoms(geoms[:n_polygons]) if atomise else (np.arange(n_polygons), geoms[:n_polygons])
    feature_of = np.concatenate([atom_of, len(linked) + np.arange(len(geoms) - n_polygons)]).astype(np.int64)
    if atomise:
        log.info("%d polygons form %d groups that overlap or touch", n_polygons, len(linked))
    try:
        linker.fit_geometries(list(linked) + geoms[n_polygons:])
    except ModuleNotFoundError as err:
        raise MtgError(f"sites mode needs mtg.kernels.geometry_graph, which is not installed: {err}") from None
    if linker.ambiguous_cuts_:
        log.warning("cuts %s m meet tied merge heights: their partitions depend on merge order",
                    linker.ambiguous_cuts_)
    # member labels, numbered in order of first appearance over the members
    labels_by_cut = {c: pd.factorize(v[feature_of])[0].astype(np.int64) for c, v in linker.labels_by_cut_.items()}
    for level in sorted(labels_by_cut):
        members[cut_column(level)] = labels_by_cut[level]
    footprints = FootprintAreas([g if k < n_polygons else None for k, g in enumerate(geoms)])
    footprints.add_hierarchy([labels_by_cut[v] for v in sorted(labels_by_cut)],
                             (members["kind"] == "polygon").to_numpy(), disjoint=linker.linkage == "single")
    chosen = None
    if choose_cut:
        from mtg.pipeline.landuse import choose_site_cuts

        labels, cut_of_member = choose_site_cuts(members, [v for v in levels if v < cut] + [cut], footprints)
    else:
        labels, cut_of_member = labels_by_cut[cut], np.full(len(members), cut)
    members.insert(4, "site_id", labels)
    sites = assemble_sites(members, labels, footprints, cut_of_member)
    if choose_cut:
        chosen = dict(zip(sites["site_id"].astype(int), sites["cut_m"].astype(float)))
    metadata = {"polygons": [str(p) for p in polygons], "points": None if points is None else str(points),
                "cut_m": cut, "levels_m": sorted(linker.labels_by_cut_), "choose_cut": bool(choose_cut),
                "linkage": linker.linkage, "lon_col": lon_col, "lat_col": lat_col,
                "commodity_table": None if commodity_table is None else str(commodity_table),
                "points_filter": ["=".join(f) for f in filters], "ambiguous_cuts_m": linker.ambiguous_cuts_}
    members_out = out.with_name(f"{out.stem}_members.parquet")
    atomic_write_all({out: lambda p: to_geoparquet(sites, p, metadata),
                      members_out: lambda p: members.to_parquet(p, index=False)})
    return SitesResult(out=out, members=members_out, n_sites=len(sites), n_polygons=n_polygons,
                       n_points=len(geoms) - n_polygons, n_point_only_sites=int((sites["n_polygons"] == 0).sum()),
                       cut=cut, unknown_commodities=sorted(harmoniser.unknown), seconds=time.perf_counter() - start,
                       levels=sorted(linker.labels_by_cut_), chosen_cuts=chosen,
                       ambiguous_cuts=linker.ambiguous_cuts_)


def load_member_polygons(members: pd.DataFrame, relative_to: str | Path | None = None) -> list:
    """The polygon of each member (None for points), read again from the member sources.

    Relative source paths are tried as given, then relative to ``relative_to`` (the sites file's folder).

    Raises
    ------
    MtgError
        Naming a source file that no longer exists or no longer has the member's row.
    """
    geometries: list = [None] * len(members)
    polygons = members[members["kind"] == "polygon"]
    for source, group in polygons.groupby("source", sort=False):
        path = member_source(source, relative_to)
        if not path.exists():
            raise MtgError(f"polygon source {source} of the sites file does not exist (run from the folder where "
                           f"mtg link ran, or link again)")
        frame = read_polygons(path)
        for index, geometry in zip(group.index, frame.geometry.to_numpy()[member_rows(group, frame, path)]):
            geometries[index] = geometry
    return geometries


def member_source(source: str, relative_to: str | Path | None = None) -> Path:
    """The file of a member source: the path as recorded, else relative to ``relative_to`` when it exists there."""
    path = Path(source)
    if not path.exists() and relative_to is not None and (Path(relative_to) / path).exists():
        path = Path(relative_to) / path
    return path


def member_rows(members: pd.DataFrame, frame: pd.DataFrame, path: Path) -> np.ndarray:
    """The rows of ``frame`` (read from ``path``) that ``members`` point to.

    Raises
    ------
    MtgError
        When the file has fewer rows than the members expect: it changed since ``mtg link`` ran.
    """
    rows = members["row"].to_numpy(dtype=np.int64)
    if rows.size and rows.max() >= len(frame):
        raise MtgError(f"polygon source {path} has {len(frame)} rows, fewer than the sites file expects "
                       f"(row {int(rows.max())}): it changed since mtg link ran; link again")
    return rows
