"""DEM epochs from GeoTIFF/COG files, Zarr cubes or STAC items, on one metric grid.

A DEM source is one of:

* a raster GDAL reads (GeoTIFF, COG; local path or URL, e.g. ``/vsis3/...``, ``https://...``);
* a Zarr cube written by ``mtg ingest`` (``OUT/cubes/dem.zarr``) or any Zarr store with one 2-D or 3-D
  elevation variable and a CRS; a cube with several epochs is indexed after ``#``: ``dem.zarr#0``,
  ``dem.zarr#-1`` or ``dem.zarr#2023-07-14``;
* a STAC item JSON (for example a ``cop-dem-glo-30`` item): its ``data`` asset (or its only GeoTIFF asset) is read.

Elevations become float32 with NaN for no data. :func:`align` puts the later epoch on the earlier one's grid
(bilinear, NaN-aware); a geographic reference grid (Copernicus DEM tiles are in EPSG:4326) is first reprojected
onto the UTM zone of its centre at about its native resolution, since volumes need metres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject

from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import utm_epsg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dem:
    """One DEM epoch on a north-up grid.

    Attributes
    ----------
    values : numpy.ndarray
        float32 elevations (m), NaN where there are no data.
    transform : affine.Affine
        Pixel-to-CRS transform (north up: ``a > 0``, ``e < 0``, no rotation).
    crs : rasterio.crs.CRS
        Coordinate reference system.
    source : str
        Where the epoch was read from.
    date : str or None
        Acquisition date (ISO) when the source says it.
    """

    values: np.ndarray
    transform: Affine
    crs: CRS
    source: str
    date: str | None = None

    @property
    def spacing(self) -> tuple[float, float]:
        """Cell size ``(dx, dy)`` in CRS units, both positive."""
        return float(self.transform.a), float(-self.transform.e)


def _check(dem: Dem) -> Dem:
    t = dem.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise MtgError(f"{dem.source}: the grid must be north-up without rotation; its transform is {tuple(t)[:6]}")
    if dem.crs is None:
        raise MtgError(f"{dem.source} has no CRS: set one so the epochs can be aligned")
    if not np.isfinite(dem.values).any():
        raise MtgError(f"{dem.source} holds no valid elevation")
    return dem


def _read_raster(path: str, date: str | None = None) -> Dem:
    try:
        with rasterio.open(path) as src:
            values = src.read(1, masked=True).astype(np.float32).filled(np.nan)
            return _check(Dem(values=values, transform=src.transform, crs=src.crs, source=path, date=date))
    except rasterio.errors.RasterioIOError as err:
        raise MtgError(f"cannot read the DEM {path}: {err}") from None


def _read_zarr(source: str, storage_options: dict[str, Any] | None) -> Dem:
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    url, _, pick = source.partition("#")
    try:
        ds = xr.open_zarr(url, decode_coords="all", consolidated=None, storage_options=storage_options or None)
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise MtgError(f"cannot open the Zarr DEM {url}: {err}") from None
    names = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
    name = "elevation" if "elevation" in names else (names[0] if len(names) == 1 else None)
    if name is None:
        raise MtgError(f"{url}: no elevation variable (variables with y and x: {names})")
    da = ds[name]
    date = None
    if "time" in da.dims:
        times = [str(t)[:10] for t in da["time"].values]
        if not pick and da.sizes["time"] != 1:
            raise MtgError(f"{url} holds {da.sizes['time']} epochs ({', '.join(times)}): choose one with "
                           f"{url}#INDEX or {url}#DATE")
        pick = pick or "0"
        if pick.lstrip("-").isdigit() and -len(times) <= int(pick) < len(times):
            k = int(pick)
        elif pick in times:
            k = times.index(pick)
        else:
            raise MtgError(f"{url}#{pick}: no such epoch; it holds {', '.join(times)} (indices 0..{len(times) - 1})")
        da, date = da.isel(time=k), times[k]
    crs = da.rio.crs
    if crs is None:
        raise MtgError(f"{url} has no CRS (no grid mapping): write one with rioxarray")
    values = np.asarray(da.astype("float32").values)
    nodata = da.rio.nodata
    if nodata is not None and not np.isnan(nodata):
        values[values == nodata] = np.nan
    return _check(Dem(values=values, transform=da.rio.transform(), crs=CRS.from_user_input(crs), source=source,
                      date=date))


def _read_item(path: str) -> Dem:
    import pystac

    try:
        item = pystac.Item.from_file(path)
    except Exception as err:  # noqa: BLE001 - pystac raises many types for bad JSON
        raise MtgError(f"{path} is not a readable STAC item: {err}") from None
    assets = item.assets
    key = "data" if "data" in assets else None
    if key is None:
        tiffs = [k for k, a in assets.items() if (a.media_type or "").startswith("image/tiff")]
        if len(tiffs) != 1:
            raise MtgError(f"{path}: no 'data' asset and {len(tiffs)} GeoTIFF assets ({list(assets)}); "
                           "give the raster itself")
        key = tiffs[0]
    href = assets[key].get_absolute_href() or assets[key].href
    date = item.datetime.date().isoformat() if item.datetime else None
    return _read_raster(href, date)


def read_dem(source: str | Path, storage_options: dict[str, Any] | None = None) -> Dem:
    """Read one DEM epoch (see the module docstring for the accepted sources).

    Parameters
    ----------
    source : str or Path
        Raster path/URL, Zarr store (``URL#EPOCH``), or STAC item JSON.
    storage_options : dict, optional
        fsspec options for a remote Zarr store.

    Returns
    -------
    Dem

    Raises
    ------
    MtgError
        Naming the source when it cannot be read, has no CRS, is rotated or holds no data.
    """
    source = str(source)
    base = source.partition("#")[0]
    if base.rstrip("/").endswith(".zarr"):
        return _read_zarr(source, storage_options)
    if base.endswith(".json"):
        if not Path(base).exists() and "://" not in base:
            raise MtgError(f"the STAC item {base} does not exist")
        return _read_item(base)
    if "://" not in base and not base.startswith("/vsi") and not Path(base).exists():
        raise MtgError(f"the DEM {base} does not exist")
    return _read_raster(base)


def _metric(dem: Dem) -> Dem:
    """The DEM itself if its CRS is projected, else reprojected onto the UTM zone of its centre."""
    if dem.crs.is_projected:
        return dem
    rows, cols = dem.values.shape
    lon, lat = dem.transform * (cols / 2, rows / 2)
    dst = CRS.from_epsg(utm_epsg(lon, lat))
    left, top = dem.transform * (0, 0)
    right, bottom = dem.transform * (cols, rows)
    transform, width, height = calculate_default_transform(dem.crs, dst, cols, rows, left, bottom, right, top)
    values = np.full((height, width), np.nan, dtype=np.float32)
    reproject(dem.values, values, src_transform=dem.transform, src_crs=dem.crs, src_nodata=np.nan,
              dst_transform=transform, dst_crs=dst, dst_nodata=np.nan, resampling=Resampling.bilinear)
    log.info("%s is in geographic coordinates: reprojected onto %s at %.1f m", dem.source, dst, transform.a)
    return replace(dem, values=values, transform=transform, crs=dst)


def align(reference: Dem, other: Dem) -> tuple[Dem, Dem]:
    """Both epochs on the reference's (metric) grid; the other one is resampled bilinearly, NaN-aware.

    Parameters
    ----------
    reference, other : Dem
        The epoch whose grid is kept (the earlier one by default) and the one resampled onto it.

    Returns
    -------
    (Dem, Dem)
        The reference (reprojected to UTM if it was geographic) and the other epoch on its grid.
    """
    reference = _metric(reference)
    same = (other.crs == reference.crs and other.transform.almost_equals(reference.transform)
            and other.values.shape == reference.values.shape)
    if same:
        return reference, other
    values = np.full(reference.values.shape, np.nan, dtype=np.float32)
    reproject(other.values, values, src_transform=other.transform, src_crs=other.crs, src_nodata=np.nan,
              dst_transform=reference.transform, dst_crs=reference.crs, dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    if not np.isfinite(values).any():
        raise MtgError(f"{other.source} does not overlap {reference.source}")
    log.info("resampled %s onto the grid of %s", other.source, reference.source)
    return reference, replace(other, values=values, transform=reference.transform, crs=reference.crs)
