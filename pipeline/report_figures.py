"""Raster thumbnails for the HTML report: PNG images as data URIs, with the site outlines to draw over them.

The PNG encoder is a few lines of :mod:`zlib` (RGBA, 8 bit, no filtering), so the report needs no imaging
library. Colour bars are drawn by the page from the same colour stops (:data:`DIVERGING`, :data:`SEQUENTIAL`).
"""

from __future__ import annotations

import base64
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ColorBrewer BrBG: brown for lowering (excavation), blue-green for raising (deposition).
DIVERGING = ("#543005", "#8c510a", "#bf812d", "#dfc27d", "#f6e8c3", "#f5f5f5",
             "#c7eae5", "#80cdc1", "#35978f", "#01665e", "#003c30")
# viridis at eight stops, for probabilities from 0 to 1.
SEQUENTIAL = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")
MAX_SIDE_PX = 480


@dataclass
class Thumbnail:
    """A rendered raster: PNG data URI, value range, colour stops and site outlines in image pixels."""

    title: str
    uri: str
    width: int
    height: int
    vmin: float
    vmax: float
    units: str
    stops: tuple[str, ...]
    outlines: list[str]
    source: str


def png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an ``(rows, cols, 4)`` uint8 array as a PNG file."""
    rows, cols, _ = rgba.shape
    raw = np.concatenate([np.zeros((rows, 1), np.uint8), rgba.reshape(rows, cols * 4)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", cols, rows, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def colorize(values: np.ndarray, vmin: float, vmax: float, stops: tuple[str, ...]) -> np.ndarray:
    """Map values linearly from ``[vmin, vmax]`` onto the colour stops; missing values become transparent."""
    rgb = np.array([[int(s[i:i + 2], 16) for i in (1, 3, 5)] for s in stops], dtype=np.float64)
    finite = np.isfinite(values)
    t = np.clip((np.where(finite, values, vmin) - vmin) / (vmax - vmin), 0.0, 1.0) * (len(stops) - 1)
    out = np.zeros(values.shape + (4,), np.uint8)
    for channel in range(3):
        out[..., channel] = np.rint(np.interp(t, np.arange(len(stops)), rgb[:, channel]))
    out[..., 3] = np.where(finite, 255, 0)
    return out


def nice_limit(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (> 0)."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def open_store(path: Path):  # noqa: ANN201 - an xarray Dataset
    """Open a Zarr store lazily with its CRS, with or without consolidated metadata."""
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        return xr.open_zarr(path, decode_coords="all")


def _raster(path: Path, variable: str | None):  # noqa: ANN202 - an xarray DataArray with its CRS
    ds = open_store(path)
    names = [variable] if variable in ds.data_vars else [n for n, v in ds.data_vars.items()
                                                         if {"y", "x"} <= set(v.dims)]
    if not names:
        raise ValueError(f"{path} holds no raster with dimensions y and x")
    da = ds[names[0]]
    return da.isel({d: -1 for d in da.dims if d not in ("y", "x")}).transpose("y", "x")


def render_thumbnail(path: Path, *, variable: str | None, title: str, units: str, diverging: bool,
                     sites=None) -> Thumbnail:  # noqa: ANN001 - a GeoDataFrame of site polygons
    """Render a Zarr raster as a PNG thumbnail of at most :data:`MAX_SIDE_PX` pixels a side.

    Parameters
    ----------
    path : Path
        Zarr store with a ``(y, x)`` variable and its CRS (``spatial_ref``); other dimensions take their last step.
    variable : str, optional
        Variable to draw; default the first one on ``(y, x)``.
    title, units : str
        Caption and value units.
    diverging : bool
        Symmetric range around 0 (the 98th percentile of ``|value|``, rounded up) with :data:`DIVERGING`;
        otherwise 0 to 1 with :data:`SEQUENTIAL`.
    sites : geopandas.GeoDataFrame, optional
        Site polygons to outline over the image.

    Returns
    -------
    Thumbnail
    """
    da = _raster(path, variable)
    factor = max(1, math.ceil(max(da.shape) / MAX_SIDE_PX))
    small = da.coarsen(y=factor, x=factor, boundary="trim").mean() if factor > 1 else da
    values = np.asarray(small.values, dtype=np.float64)
    if diverging:
        finite = np.abs(values[np.isfinite(values)])
        vmax = nice_limit(float(np.percentile(finite, 98)) if finite.size else 1.0)
        vmin, stops = -vmax, DIVERGING
    else:
        vmin, vmax, stops = 0.0, 1.0, SEQUENTIAL
    rows, cols = values.shape
    outlines = _outlines(sites, da, factor) if sites is not None and da.rio.crs is not None else []
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(colorize(values, vmin, vmax, stops))).decode()
    return Thumbnail(title=title, uri=uri, width=cols, height=rows, vmin=vmin, vmax=vmax, units=units,
                     stops=stops, outlines=outlines, source=path.name)


def _outlines(sites, da, factor: int) -> list[str]:  # noqa: ANN001
    """SVG path data of the site polygons in the thumbnail's pixel coordinates."""
    from shapely import get_coordinates, transform

    x, y = da["x"].values, da["y"].values
    dx, dy = (x[1] - x[0]) if x.size > 1 else 1.0, (y[1] - y[0]) if y.size > 1 else -1.0
    x0, y0 = x[0] - dx / 2, y[0] - dy / 2
    polygons = sites[sites.geometry.notna()].to_crs(da.rio.crs)
    paths = []
    for geom in polygons.geometry:
        pixel = transform(geom, lambda c: np.column_stack([(c[:, 0] - x0) / dx / factor, (c[:, 1] - y0) / dy / factor]))
        rings = [r for p in getattr(pixel, "geoms", [pixel]) for r in (p.exterior, *p.interiors)]
        paths.append(" ".join("M" + "L".join(f"{cx:.1f},{cy:.1f}" for cx, cy in get_coordinates(r)) + "Z"
                              for r in rings))
    return paths
