"""Mine inventories in memory: checked point coordinates and polygon layers in EPSG:4326.

The readers of :mod:`mtg.pipeline.io` turn files into frames and hand them here; the stage functions of
:mod:`mtg.api` call the same checks on frames a user built in a notebook, so a frame and a file fail alike, with
the source named.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError

# Unicode minus and look-alikes that spreadsheets export in numbers (ICMM's CSV has U+2212).
_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})


def _where(row: int, line_offset: int | None) -> str:
    return f"row {row}" + (f" (line {row + line_offset})" if line_offset is not None else "")


def coordinate(frame: pd.DataFrame, column: str, name: str, line_offset: int | None = None) -> np.ndarray:
    """A finite float64 coordinate column (numbers, or text with an optional Unicode minus sign).

    Raises
    ------
    MtgError
        Naming ``name`` (the file or frame), the column and the first row that is not a finite number.
    """
    if column not in frame.columns:
        raise MtgError(f"{name} has no column {column!r}; its columns are {list(frame.columns)} "
                       f"(choose them with --lon-col/--lat-col)")
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = raw.astype("string").str.translate(_MINUS).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MtgError(f"{name}: column {column!r} {_where(row, line_offset)} holds {raw.iloc[row]!r}, not a finite "
                       f"number ({int(bad.sum())} such rows)")
    return values


def check_lonlat(lon: np.ndarray, lat: np.ndarray, name: str, line_offset: int | None = None) -> None:
    """Raise :class:`MtgError` naming the first row whose longitude or latitude lies outside the globe."""
    for values, limit, what in ((lon, 180.0, "longitude"), (lat, 90.0, "latitude")):
        bad = np.flatnonzero(np.abs(values) > limit)
        if bad.size:
            row = int(bad[0])
            raise MtgError(f"{name}: {_where(row, line_offset)} has {what} {float(values[row])!r} outside "
                           f"[-{limit:g}, {limit:g}] degrees ({bad.size} such rows); are the coordinates in degrees "
                           f"and the columns the right way round?")


def check_geometries(frame, name: str, crs: str | None = "EPSG:4326",  # noqa: ANN001, ANN201 - GeoDataFrame
                     allow_missing: bool = False):
    """A GeoDataFrame with a CRS and no empty geometry (unless ``allow_missing``), in ``crs`` (None: its own),
    index reset.

    Raises
    ------
    MtgError
        When it has no CRS, or naming the first row with an empty or missing geometry.
    """
    if frame.crs is None:
        raise MtgError(f"{name} has no CRS: set one (e.g. EPSG:4326) so its coordinates can be read")
    geometry = frame.geometry
    bad = np.flatnonzero(geometry.isna().to_numpy() | geometry.is_empty.to_numpy())
    if bad.size and not allow_missing:
        raise MtgError(f"{name}: row {bad[0]} has an empty or missing geometry ({bad.size} such rows)")
    if crs is not None and not frame.crs.equals(crs):
        frame = frame.to_crs(crs)
    return frame.reset_index(drop=True)


def point_inventory(frame: pd.DataFrame, name: str = "points", lon_col: str = "lon", lat_col: str = "lat",
                    line_offset: int | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``(frame, lon, lat)`` of mine points in EPSG:4326 degrees, rows in order.

    Parameters
    ----------
    frame : pandas.DataFrame or geopandas.GeoDataFrame
        Points: a GeoDataFrame of Point geometries in any CRS, or a table with ``lon_col``/``lat_col`` columns in
        WGS 84 degrees.
    name : str
        What to call the points in errors (the file they came from).
    lon_col, lat_col : str
        Coordinate columns of a plain table.
    line_offset : int, optional
        Line of the file holding row 0 (CSV: 2), to name lines in errors.

    Raises
    ------
    MtgError
        Naming the missing column, the row with a bad coordinate, the missing CRS or a non-point geometry.
    """
    import geopandas as gpd

    if isinstance(frame, gpd.GeoDataFrame) and frame.geometry.name in frame.columns:
        frame = check_geometries(frame, name)
        types = frame.geometry.geom_type.to_numpy()
        bad = np.flatnonzero(types != "Point")
        if bad.size:
            raise MtgError(f"{name}: row {bad[0]} is a {types[bad[0]]}, not a Point ({bad.size} non-point rows); "
                           f"give polygons with --polygons")
        lon = frame.geometry.x.to_numpy(dtype=np.float64)
        lat = frame.geometry.y.to_numpy(dtype=np.float64)
    else:
        frame = frame.reset_index(drop=True)
        lon = coordinate(frame, lon_col, name, line_offset)
        lat = coordinate(frame, lat_col, name, line_offset)
    check_lonlat(lon, lat, name, line_offset)
    return frame, lon, lat


def polygon_inventory(frame, name: str = "polygons"):  # noqa: ANN001, ANN201 - GeoDataFrame in and out
    """Mine polygons (Polygon or MultiPolygon rows) checked and in EPSG:4326, rows in order.

    Raises
    ------
    MtgError
        Naming ``name`` and the first row that is not a polygon or lies outside lon/lat degrees.
    """
    frame = check_geometries(frame, name)
    types = frame.geometry.geom_type.to_numpy()
    bad = np.flatnonzero(~np.isin(types, ["Polygon", "MultiPolygon"]))
    if bad.size:
        raise MtgError(f"{name}: row {bad[0]} is a {types[bad[0]]}, not a Polygon ({bad.size} such rows)")
    bounds = frame.geometry.bounds.to_numpy()
    bad = np.flatnonzero((np.abs(bounds[:, [0, 2]]) > 180).any(axis=1) | (np.abs(bounds[:, [1, 3]]) > 90).any(axis=1))
    if bad.size:
        raise MtgError(f"{name}: row {bad[0]} has coordinates outside lon/lat degrees after transformation to "
                       f"EPSG:4326")
    return frame
