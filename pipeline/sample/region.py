"""Where the sample region lies: a UTM grid near Newman, Western Australia, and the names derived from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer
from rasterio.transform import Affine, from_origin

#: Centre of the region: the Pilbara iron-ore province east of Newman, Western Australia.
CENTRE_LONLAT = (119.73, -23.36)
#: Grid origins and extents are multiples of this, so 10, 20, 30 and 60 m pixels nest (as on real S2 tiles).
GRID_QUANTUM_M = 60.0

_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class RegionGrid:
    """A square region on a UTM grid.

    Attributes
    ----------
    epsg : int
        EPSG code of the WGS 84 / UTM zone.
    left, top : float
        Upper-left corner in metres, a multiple of :data:`GRID_QUANTUM_M`.
    size_m : float
        Side length in metres, a multiple of :data:`GRID_QUANTUM_M`.
    """

    epsg: int
    left: float
    top: float
    size_m: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres."""
        return (self.left, self.top - self.size_m, self.left + self.size_m, self.top)

    def shape(self, res: float) -> tuple[int, int]:
        """``(rows, cols)`` of the grid at pixel size ``res`` metres."""
        n = int(round(self.size_m / res))
        return (n, n)

    def transform(self, res: float) -> Affine:
        """Affine transform of the grid at pixel size ``res`` metres."""
        return from_origin(self.left, self.top, res, res)

    def coords(self, res: float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates ``(x, y)`` as 1-D arrays (x per column, y per row)."""
        rows, cols = self.shape(res)
        x = self.left + (np.arange(cols) + 0.5) * res
        y = self.top - (np.arange(rows) + 0.5) * res
        return x, y

    def to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project UTM coordinates to WGS 84 longitude and latitude."""
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        lon, lat = tr.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return np.asarray(lon), np.asarray(lat)

    @property
    def bbox_lonlat(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the region, from its densified outline."""
        left, bottom, right, top = self.bounds
        t = np.linspace(0.0, 1.0, 21)
        xs = np.concatenate([left + (right - left) * t, np.full_like(t, right), right - (right - left) * t, np.full_like(t, left)])
        ys = np.concatenate([np.full_like(t, bottom), bottom + (top - bottom) * t, np.full_like(t, top), top - (top - bottom) * t])
        lon, lat = self.to_lonlat(xs, ys)
        return (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))

    @property
    def mgrs_tile(self) -> str:
        """The Sentinel-2 (MGRS) tile name that holds the region centre, e.g. ``"50KQV"``."""
        left, bottom, right, top = self.bounds
        cx, cy = (left + right) / 2, (bottom + top) / 2
        lon, lat = self.to_lonlat(np.array([cx]), np.array([cy]))
        zone = self.epsg % 100
        band = _LAT_BANDS[int((float(lat[0]) + 80) // 8)]
        column = _COLUMN_SETS[zone % 3][int(cx // 100_000) - 1]
        row = _ROW_LETTERS[(int(cy % 2_000_000 // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
        return f"{zone}{band}{column}{row}"

    @property
    def dem_tile(self) -> str:
        """The Copernicus DEM 1-degree tile name that holds the region centre, e.g. ``"S24_00_E119_00"``."""
        left, bottom, right, top = self.bounds
        lon, lat = self.to_lonlat(np.array([(left + right) / 2]), np.array([(bottom + top) / 2]))
        la, lo = math.floor(float(lat[0])), math.floor(float(lon[0]))
        return f"{'N' if la >= 0 else 'S'}{abs(la):02d}_00_{'E' if lo >= 0 else 'W'}{abs(lo):03d}_00"


def region_grid(size_km: float, centre: tuple[float, float] = CENTRE_LONLAT) -> RegionGrid:
    """A sample region grid: ``size_km`` wide (rounded up to 60 m), centred on ``centre``.

    Parameters
    ----------
    size_km : float
        Side length in kilometres; must be positive.
    centre : (float, float)
        ``(lon, lat)`` of the centre; default :data:`CENTRE_LONLAT`, the single sample region.

    Returns
    -------
    RegionGrid
        Grid in the UTM zone of the centre (EPSG:326xx north of the equator, 327xx south).
    """
    if size_km <= 0:
        raise ValueError(f"size_km must be positive, got {size_km}")
    lon, lat = centre
    epsg = (32600 if lat >= 0 else 32700) + min(int((lon + 180) // 6) + 1, 60)
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    size_m = math.ceil(size_km * 1000 / GRID_QUANTUM_M) * GRID_QUANTUM_M
    left = math.floor((cx - size_m / 2) / GRID_QUANTUM_M) * GRID_QUANTUM_M
    top = math.floor((cy + size_m / 2) / GRID_QUANTUM_M) * GRID_QUANTUM_M
    return RegionGrid(epsg=epsg, left=float(left), top=float(top), size_m=float(size_m))
