"""DEM epochs from GeoTIFF/COG files, Zarr cubes or STAC items, on one metric grid.

A DEM source is one of:

* a raster GDAL reads (GeoTIFF, COG; local path or URL, e.g. ``/vsis3/...``, ``https://...``);
* a Zarr cube written by ``mtg ingest`` (``OUT/cubes/dem.zarr``) or any Zarr store with one 2-D or 3-D
  elevation variable and a CRS; a cube with several epochs is indexed after ``#``: ``dem.zarr#0``,
  ``dem.zarr#-1`` or ``dem.zarr#2023-07-14``;
* a STAC item JSON (for example a ``cop-dem-glo-30`` item): its ``data`` asset (or its only GeoTIFF asset) is read.

Elevations become float32 with NaN for no data. Every epoch is a lazy dask array in blocks of
:data:`DEM_CHUNK` cells (Zarr keeps its own chunks): nothing is read until a stage asks for a window or streams
over the blocks, so a pair of DEMs larger than memory can be measured. :func:`align` puts the later epoch on the
earlier one's grid (bilinear, NaN-aware, block by block with odc-geo, the same numbers as one GDAL warp).
Volumes, areas and distances need a grid in true ground metres (:func:`ground_metres`): a reference grid that is
not (geographic, like Copernicus DEM tiles in EPSG:4326; Web Mercator, whose metres are 1/cos(latitude) ground
metres; feet) is replaced by the later epoch's grid when that one is in ground metres, else by the UTM zone of its
centre at about its native resolution.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform

from mtg.pipeline.errors import MtgError, describe
from mtg.pipeline.grid import utm_epsg

log = logging.getLogger(__name__)

#: Block side (cells) of DEM epochs read from rasters; 2048 x 2048 float32 is 16 MiB.
DEM_CHUNK = 2048
#: Largest deviation from 1 of a projection's scale factors (along meridians and parallels, at the grid's centre
#: and corners) for its metres to count as ground metres: UTM stays within 0.1 % of 1 inside its zone, Web Mercator
#: is off by 1/cos(latitude) - 1 (1 % at 8 degrees of latitude, 44 % at 46 degrees).
SCALE_TOLERANCE = 0.005


@dataclass(frozen=True)
class Dem:
    """One DEM epoch on a north-up grid.

    Attributes
    ----------
    values : dask.array.Array
        Lazy float32 elevations (m), NaN where there are no data.
    transform : affine.Affine
        Pixel-to-CRS transform (north up: ``a > 0``, ``e < 0``, no rotation).
    crs : rasterio.crs.CRS
        Coordinate reference system.
    source : str
        Where the epoch was read from.
    date : str or None
        Acquisition date (ISO) when the source says it.
    vertical_datum : str or None
        The vertical CRS the heights refer to (``"EPSG:5773"`` EGM96, ``"EPSG:3855"`` EGM2008, ``"EPSG:4979"`` the
        WGS 84 ellipsoid), None when unknown; see :mod:`mtg.pipeline.vertical_datum`.
    """

    values: np.ndarray
    transform: Affine
    crs: CRS
    source: str
    date: str | None = None
    vertical_datum: str | None = None

    @property
    def spacing(self) -> tuple[float, float]:
        """Cell size ``(dx, dy)`` in CRS units, both positive."""
        return float(self.transform.a), float(-self.transform.e)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the grid."""
        return tuple(self.values.shape)


def _check(dem: Dem) -> Dem:
    """Grid checks that need no pixel; an epoch without any valid cell is caught when the pixels are read."""
    t = dem.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise MtgError(f"{dem.source}: the grid must be north-up without rotation; its transform is {tuple(t)[:6]}")
    if dem.crs is None:
        raise MtgError(f"{dem.source} has no CRS: set one so the epochs can be aligned")
    return dem


def _read_block(path: str, nodata: float | None, block_info: dict | None = None) -> np.ndarray:
    """One block of band 1 of a raster as float32, NaN where it holds ``nodata`` (the block's place in the grid
    from dask's ``block_info``).

    Raises
    ------
    MtgError
        Naming the file, the block and GDAL's reason when the block cannot be read (a corrupt or truncated file).
    """
    from rasterio.windows import Window

    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    try:
        with rasterio.open(path) as src:
            values = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    except rasterio.errors.RasterioError as err:
        raise MtgError(f"cannot read the DEM {path} (rows {r0}-{r1}, columns {c0}-{c1}): {describe(err)}") from None
    if nodata is not None:
        # compared in the file's type, as xarray's CF masking does (a float32 nodata like -3.4e38 has no exact
        # float64 twin)
        missing = values == np.asarray(nodata).astype(values.dtype) if not np.isnan(nodata) else np.isnan(values)
        values = np.where(missing, np.nan, values.astype(np.float32))
    return values.astype(np.float32, copy=False)


def _read_raster(path: str, date: str | None = None) -> Dem:
    """Band 1 of a raster GDAL reads, lazily in :data:`DEM_CHUNK` blocks; a block that cannot be read raises an
    :class:`MtgError` naming the file and the reason when it is computed."""
    try:
        with rasterio.open(path) as src:
            transform, crs, shape, nodata = src.transform, src.crs, src.shape, src.nodata
    except rasterio.errors.RasterioError as err:
        raise MtgError(f"cannot read the DEM {path}: {describe(err)}") from None
    chunks = da.core.normalize_chunks((DEM_CHUNK, DEM_CHUNK), shape)
    values = da.map_blocks(_read_block, path, nodata, chunks=chunks, dtype=np.float32,
                           meta=np.empty((0, 0), dtype=np.float32))
    return _check(Dem(values=values, transform=transform, crs=crs, source=path, date=date))


def _read_zarr(source: str, storage_options: dict[str, Any] | None) -> Dem:
    import xarray as xr

    url = source.partition("#")[0]
    try:
        ds = xr.open_zarr(url, decode_coords="all", consolidated=None, storage_options=storage_options or None)
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise MtgError(f"cannot open the Zarr DEM {url}: {err}") from None
    return _dataset_epoch(ds, source)


def _read_references(source: str, storage_options: dict[str, Any] | None) -> Dem | None:
    """The epoch of a kerchunk reference JSON (``refs.json#EPOCH``), or None when the JSON is not one (a STAC item)."""
    import fsspec

    from mtg.pipeline.storage import options_for
    from mtg.pipeline.virtual_dem import open_virtual_dem

    url = source.partition("#")[0]
    options = options_for(url, storage_options or {}) or {}  # for the JSON; the GeoTIFFs get storage_options
    try:
        with fsspec.open(url, "rt", **options) as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        raise MtgError(f"cannot read the JSON file {url}: {err}") from None
    if not isinstance(doc, dict) or not ("refs" in doc or ".zgroup" in doc or ".zarray" in doc):
        return None
    try:
        ds = open_virtual_dem(url, storage_options=options, remote_options=storage_options)
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise MtgError(f"cannot open the DEM references {url}: {err}") from None
    return _dataset_epoch(ds, source)


def pick_epoch(dates: list[str], pick: str, name: str, holder: str) -> int:
    """The index of the epoch ``name#pick`` names among ``dates`` (ISO days): an index (``0``, ``-1``) or a date;
    an empty ``pick`` is allowed for one epoch only.

    Raises
    ------
    MtgError
        Naming ``holder`` (what holds the epochs) and its dates when ``pick`` is missing or matches none.
    """
    if not pick and len(dates) != 1:
        raise MtgError(f"{holder} holds {len(dates)} epochs ({', '.join(dates)}): choose one with {name}#INDEX or "
                       f"{name}#DATE")
    pick = pick or "0"
    if pick.lstrip("-").isdigit() and -len(dates) <= int(pick) < len(dates):
        return int(pick)
    if pick in dates:
        return dates.index(pick)
    raise MtgError(f"{name}#{pick}: no such epoch; {holder} holds {', '.join(dates)} (indices 0..{len(dates) - 1})")


def _dataset_epoch(ds: Any, source: str) -> Dem:
    """One epoch of a Zarr-like Dataset with an elevation variable and a grid mapping (``URL#INDEX``/``URL#DATE``)."""
    import rioxarray  # noqa: F401 - the .rio accessor

    url, _, pick = source.partition("#")
    names = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
    name = "elevation" if "elevation" in names else (names[0] if len(names) == 1 else None)
    if name is None:
        raise MtgError(f"{url}: no elevation variable (variables with y and x: {names})")
    elevation = ds[name]
    date = None
    if "time" in elevation.dims:
        times = [str(t)[:10] for t in elevation["time"].values]
        k = pick_epoch(times, pick, url, url)
        elevation, date = elevation.isel(time=k), times[k]
    crs = elevation.rio.crs
    if crs is None:
        raise MtgError(f"{url} has no CRS (no grid mapping): write one with rioxarray")
    values = elevation.data.astype(np.float32)
    nodata = elevation.rio.nodata
    if nodata is not None and not np.isnan(nodata):
        values = da.where(values == np.float32(nodata), np.float32(np.nan), values)
    return _check(Dem(values=values, transform=elevation.rio.transform(), crs=CRS.from_user_input(crs), source=source,
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
        Raster path/URL, Zarr store (``URL#EPOCH``), kerchunk reference JSON written by
        :func:`mtg.pipeline.virtual_dem.write_references` (``refs.json#EPOCH``, epochs as in a Zarr store),
        or STAC item JSON (any other ``.json``).
    storage_options : dict, optional
        fsspec options for a remote Zarr store, reference JSON or the GeoTIFFs the references point at.

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
            raise MtgError(f"the JSON file {base} (STAC item or kerchunk references) does not exist")
        dem = _read_references(source, storage_options)
        return dem if dem is not None else _read_item(base)
    if "://" not in base and not base.startswith("/vsi") and not Path(base).exists():
        raise MtgError(f"the DEM {base} does not exist")
    return _read_raster(base)


def _reproject(dem: Dem, transform: Affine, shape: tuple[int, int], crs: CRS) -> Dem:
    """``dem`` resampled bilinearly (NaN-aware) onto another grid, lazily, block by block."""
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords, xr_reproject

    src = xr.DataArray(dem.values, dims=("y", "x"), coords=xr_coords(GeoBox(dem.shape, dem.transform, dem.crs)),
                       attrs={"nodata": np.nan})
    out = xr_reproject(src, GeoBox(shape, transform, crs), resampling="bilinear", dst_nodata=np.nan)
    return replace(dem, values=out.data.astype(np.float32), transform=transform, crs=crs)


def ground_metres(dem: Dem) -> bool:
    """Whether a grid's cells measure true ground metres: a projected CRS in metres whose scale factors along
    meridians and parallels stay within :data:`SCALE_TOLERANCE` of 1 at the grid's centre and corners.

    UTM, national transverse Mercator or conformal conic grids are; geographic grids, Web Mercator (scale
    1/cos(latitude)) and grids in feet are not.
    """
    from pyproj import CRS as ProjCRS, Proj, Transformer

    crs = ProjCRS.from_user_input(dem.crs.to_wkt())
    if not crs.is_projected or any(axis.unit_conversion_factor != 1.0 for axis in crs.axis_info):
        return False
    rows, cols = dem.shape
    x, y = dem.transform * (np.array([cols / 2, 0, cols, 0, cols]), np.array([rows / 2, 0, 0, rows, rows]))
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    factors = Proj(crs).get_factors(lon, lat)
    scales = np.concatenate([np.atleast_1d(factors.meridional_scale), np.atleast_1d(factors.parallel_scale)])
    return bool(np.all(np.abs(scales - 1.0) <= SCALE_TOLERANCE))


def _to_utm(dem: Dem) -> Dem:
    """``dem`` reprojected onto the UTM zone of its centre at about its native resolution."""
    from rasterio.warp import transform as transform_points

    rows, cols = dem.shape
    x, y = dem.transform * (cols / 2, rows / 2)
    (lon,), (lat,) = transform_points(dem.crs, CRS.from_epsg(4326), [x], [y])
    dst = CRS.from_epsg(utm_epsg(lon, lat))
    left, top = dem.transform * (0, 0)
    right, bottom = dem.transform * (cols, rows)
    transform, width, height = calculate_default_transform(dem.crs, dst, cols, rows, left, bottom, right, top)
    log.info("%s is not in ground metres (%s): reprojected onto %s at %.1f m", dem.source, dem.crs.to_string(), dst,
             transform.a)
    return _reproject(dem, transform, (height, width), dst)


def align(reference: Dem, other: Dem) -> tuple[Dem, Dem]:
    """Both epochs on one grid in ground metres, the reference's when it is one; resampled bilinearly, NaN-aware.

    Parameters
    ----------
    reference, other : Dem
        The epoch whose grid is kept (the earlier one by default) and the one resampled onto it.

    Returns
    -------
    (Dem, Dem)
        Both epochs on the reference's grid when it is in ground metres (:func:`ground_metres`); else on the
        other epoch's grid when that one is (the reference resampled onto it); else on the UTM zone of the
        reference's centre (both resampled).

    Raises
    ------
    MtgError
        When the grids do not overlap.
    """
    if not ground_metres(reference) and ground_metres(other):
        if not _overlaps(other, reference):
            raise MtgError(f"{other.source} does not overlap {reference.source}")
        log.info("%s is not in ground metres (%s): resampled onto the grid of %s", reference.source,
                 reference.crs.to_string(), other.source)
        return _reproject(reference, other.transform, other.shape, other.crs), other
    if not ground_metres(reference):
        reference = _to_utm(reference)
    same = (other.crs == reference.crs and other.transform.almost_equals(reference.transform)
            and other.shape == reference.shape)
    if same:
        return reference, other
    if not _overlaps(reference, other):
        raise MtgError(f"{other.source} does not overlap {reference.source}")
    log.info("resampling %s onto the grid of %s", other.source, reference.source)
    return reference, _reproject(other, reference.transform, reference.shape, reference.crs)


def _overlaps(reference: Dem, other: Dem) -> bool:
    """Whether the footprints of two grids intersect (in the reference's CRS)."""
    from rasterio.warp import transform_bounds

    def bounds(dem: Dem) -> tuple[float, float, float, float]:
        left, top = dem.transform * (0, 0)
        right, bottom = dem.transform * (dem.shape[1], dem.shape[0])
        return left, bottom, right, top

    a = bounds(reference)
    b = transform_bounds(other.crs, reference.crs, *bounds(other))
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
