"""Vector files of every stage: one reader for GeoParquet and OGR formats, and the inventories built on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mtg.pipeline.errors import MtgError
from mtg.pipeline.inventory import check_geometries, point_inventory, polygon_inventory
from mtg.pipeline.table_io import METADATA_KEY

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


def _parquet_metadata(path: Path) -> dict[bytes, bytes]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).metadata or {}
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise MtgError(f"{path} is not a readable Parquet file: {err}") from None


def is_geoparquet(path: str | Path) -> bool:
    """Whether a Parquet file carries GeoParquet ``geo`` metadata."""
    return b"geo" in _parquet_metadata(Path(path))


def read_vector(path: str | Path, what: str = "vector file", crs: str | None = "EPSG:4326",  # noqa: ANN201
                allow_missing: bool = False):
    """A GeoDataFrame from GeoParquet or an OGR format (GeoPackage, GeoJSON, shapefile, ...), in ``crs``.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file is, for errors ("polygon file", "sites file", ...).
    crs : str, optional
        CRS of the result; None keeps the file's.
    allow_missing : bool
        Whether rows may have a null or empty geometry.

    Raises
    ------
    MtgError
        Naming the file when it does not exist, is not readable, is a plain Parquet file, has no CRS or (unless
        ``allow_missing``) an empty geometry.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise MtgError(f"{what} {path} does not exist")
    suffix = path.suffix.lower()
    if suffix != ".parquet" and suffix not in VECTOR_SUFFIXES:
        raise MtgError(f"{what} {path}: unknown format {suffix!r}; use GeoPackage, GeoParquet, GeoJSON, ...")
    if suffix == ".parquet" and not is_geoparquet(path):
        raise MtgError(f"{what} {path} is a plain Parquet file without GeoParquet 'geo' metadata")
    try:
        frame = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path)
    except Exception as err:  # noqa: BLE001 - pyogrio/pyarrow raise many types
        raise MtgError(f"{path} is not a readable vector file: {err}") from None
    check_coordinates_fit_crs(frame, f"{what} {path}")
    return check_geometries(frame, str(path), crs, allow_missing)


def _inside(lon, lat, area, margin_deg: float):  # noqa: ANN001, ANN202 - numpy arrays, a pyproj AreaOfUse
    """Which lon/lat points lie in a CRS's area of use widened by ``margin_deg`` (areas may cross 180)."""
    west, east = area.west - margin_deg, area.east + margin_deg
    inside_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    return inside_lon & (lat >= area.south - margin_deg) & (lat <= area.north + margin_deg)


def check_coordinates_fit_crs(frame, name: str, margin_deg: float = 5.0) -> None:  # noqa: ANN001 - GeoDataFrame
    """Refuse coordinates that cannot be in the frame's CRS: the usual sign of a wrong or missing CRS.

    Longitude/latitude outside [-180, 360] x [-90, 90] in a geographic CRS (projected metres declared as degrees),
    coordinates of a projected CRS that do not transform to the globe, or that lie more than ``margin_deg`` outside
    the CRS's area of use (a UTM zone's, for example).

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        The features as read; frames without a CRS or features are left to the other checks.
    name : str
        What to call the file in the error.
    margin_deg : float
        How far outside the CRS's area of use (degrees) coordinates are still accepted.

    Raises
    ------
    MtgError
        Naming the file, its CRS and the extent that does not fit.
    """
    import numpy as np
    from pyproj import Transformer

    crs = frame.crs
    if crs is None or (frame.geometry.isna() | frame.geometry.is_empty).all():
        return
    bounds = frame.geometry.total_bounds
    extent = "[" + ", ".join(f"{v:.6g}" for v in bounds) + "]"
    label = f"{crs.name} ({crs.to_string()})"
    if not np.isfinite(bounds).all():
        raise MtgError(f"{name}: its coordinates are not finite numbers (extent {extent})")
    x0, y0, x1, y1 = bounds
    if crs.is_geographic:
        if x0 < -180 or x1 > 360 or y0 < -90 or y1 > 90:
            raise MtgError(
                f"{name}: coordinates {extent} do not fit its CRS {label}, which is in degrees (longitude -180 to "
                "180, latitude -90 to 90); they look like projected metres: set the file's real CRS")
        return
    xs, ys = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    with np.errstate(all="ignore"):
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs.ravel(), ys.ravel())
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise MtgError(f"{name}: coordinates {extent} do not fit its CRS {label}: they do not transform to "
                       "longitude/latitude; set the file's real CRS")
    area = crs.area_of_use
    if area is None:
        return
    lon, lat = lon[ok], lat[ok]
    strictly_inside = _inside(lon, lat, area, 0.0)
    if -180 <= x0 and x1 <= 360 and -90 <= y0 and y1 <= 90 and not strictly_inside.any():
        raise MtgError(
            f"{name}: coordinates {extent} do not fit its CRS {label}, whose area of use is longitude "
            f"{area.west:g} to {area.east:g}, latitude {area.south:g} to {area.north:g}: they look like "
            "longitude/latitude degrees; set the file's real CRS (EPSG:4326 for degrees)")
    if not _inside(lon, lat, area, margin_deg).any():
        raise MtgError(
            f"{name}: coordinates {extent} do not fit its CRS {label}, whose area of use is longitude "
            f"{area.west:g} to {area.east:g}, latitude {area.south:g} to {area.north:g}; they fall at longitude "
            f"{lon.min():.4g} to {lon.max():.4g}, latitude {lat.min():.4g} to {lat.max():.4g}: set the file's real CRS")


def read_table(path: str | Path, what: str):  # noqa: ANN201 - a GeoDataFrame
    """A GeoParquet table a stage wrote (site volumes, waste deposits, indicators, members), as written: CRS
    and rows kept, empty tables allowed.

    Raises
    ------
    MtgError
        Naming ``what`` and the file when it is missing or unreadable.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise MtgError(f"{what} file {path} does not exist")
    try:
        return gpd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow/geopandas raise many types
        raise MtgError(f"{path} is not a readable GeoParquet {what} file: {err}") from None


def read_points(path: str | Path, lon_col: str = "lon", lat_col: str = "lat") -> tuple[pd.DataFrame, Any, Any]:
    """Read a point file into ``(frame, lon, lat)`` in EPSG:4326 degrees, rows in file order.

    CSV (``.csv``, ``.txt``; ``.tsv`` tab-separated) and plain Parquet take the coordinates from ``lon_col`` and
    ``lat_col`` (WGS 84 degrees; text cells may use the Unicode minus sign). GeoParquet and OGR vector files
    (GeoPackage, GeoJSON, ...) must hold points with a CRS; they are transformed to EPSG:4326
    (:func:`mtg.pipeline.inventory.point_inventory`).

    Raises
    ------
    MtgError
        Naming the file and the missing column, the row with a non-numeric or out-of-range coordinate, the missing
        CRS or the non-point geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise MtgError(f"point file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        try:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={lon_col: str, lat_col: str},
                                encoding="utf-8-sig")
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise MtgError(f"{path} is not a readable CSV file: {err}") from None
        return point_inventory(frame, str(path), lon_col, lat_col, line_offset=2)
    if suffix == ".parquet" and not is_geoparquet(path):
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001
            raise MtgError(f"{path} is not a readable Parquet file: {err}") from None
        return point_inventory(frame, str(path), lon_col, lat_col)
    if suffix != ".parquet" and suffix not in VECTOR_SUFFIXES:
        raise MtgError(f"point file {path}: unknown format {suffix!r}; use CSV, Parquet, GeoParquet or GeoPackage")
    return point_inventory(read_vector(path, "point file"), str(path))


def read_polygons(path: str | Path):  # noqa: ANN201 - a GeoDataFrame
    """A GeoDataFrame of the polygons (Polygon or MultiPolygon) in a vector file, in EPSG:4326, in file order."""
    return polygon_inventory(read_vector(path, "polygon file"), str(path))


def read_sites(path: str | Path):  # noqa: ANN201 - a GeoDataFrame
    """A sites layer: the ``sites.parquet`` of ``mtg link``, or any vector file of site polygons, in EPSG:4326.

    Rows are kept in order, in the layout of every sites layer (:func:`mtg.pipeline.site_assembly.site_layer`):
    MultiPolygon footprints, a null geometry for a site of points only, and ``lon``/``lat`` of every site (a file
    without them gets its footprints' representative points). The stages check the other columns they need
    (:func:`mtg.api.volumes` the ids, :func:`mtg.api.land_use` the commodities).

    Raises
    ------
    MtgError
        Naming the file, as :func:`read_vector` and :func:`mtg.pipeline.site_assembly.site_layer` do.
    """
    from mtg.pipeline.site_assembly import site_layer

    return site_layer(read_vector(path, "sites file", allow_missing=True), f"sites file {path}")


def members_path(sites: str | Path) -> Path:
    """The members file beside a sites file: ``<stem>_members.parquet``."""
    sites = Path(sites)
    return sites.with_name(f"{sites.stem}_members.parquet")


def read_members(sites: str | Path, required: bool = True):  # noqa: ANN201 - a GeoDataFrame or None
    """The members file of a sites file (:func:`members_path`): every linked feature with its site and geometry.

    Returns None when the file is absent and not ``required``.

    Raises
    ------
    MtgError
        When a required file is absent, or it lacks the columns land use needs (written by an older mtg link).
    """
    import geopandas as gpd

    path = members_path(sites)
    if not path.is_file():
        if required:
            raise MtgError(f"members file {path} of {sites} does not exist")
        return None
    if not is_geoparquet(path):
        raise MtgError(f"members file {path} has no geometries (written by an older mtg link): link again")
    members = gpd.read_parquet(path)
    missing = [c for c in ("source", "kind", "row", "site_id", "primary_commodities", "country", "lon", "lat")
               if c not in members.columns]
    if missing:
        raise MtgError(f"members file {path} lacks {missing} (written by an older mtg link): link again")
    return members.reset_index(drop=True)


def read_link_metadata(sites: str | Path) -> dict[str, Any]:
    """The parameters :func:`mtg.pipeline.link.link` recorded in a sites file (``{}`` for files without them)."""
    metadata = _parquet_metadata(Path(sites))
    return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
