"""Virtual DEM collections: GeoTIFF/COG files referenced with kerchunk and read in place.

:func:`write_references` runs :func:`kerchunk.tiff.tiff_to_zarr` (tifffile's reference writer) on each
single-band GeoTIFF, keeps the chunks of its full-resolution image (COG overviews are left out), stacks
files on one grid along ``time`` and adds the georeferencing rasterio reads, the way rioxarray writes it:
pixel-centre ``x``/``y`` coordinates and a ``spatial_ref`` grid mapping (CF attributes, ``crs_wkt``,
``GeoTransform``) inlined in the JSON, and the file's nodata as the Zarr fill value (xarray's
``_FillValue``, decoded to NaN). The result is a plain kerchunk (version 1) reference file: fsspec, Zarr and
xarray open it without this package::

    xr.open_dataset("reference://", engine="zarr", backend_kwargs={
        "consolidated": False, "storage_options": {"fo": url, "remote_options": {...}}})

Codecs are the ones tifffile names: numcodecs' ``zlib`` and ``lzma`` for DEFLATE and LZMA, and
imagecodecs' (``imagecodecs_lzw``, ``imagecodecs_zstd``, ``imagecodecs_lerc``, the ``imagecodecs_delta`` and
``imagecodecs_floatpred`` filters of TIFF predictors 2 and 3, ...), found by numcodecs through the entry
points of ``imagecodecs-numcodecs``. Copernicus GLO-30 and the sample DEMs (DEFLATE with the floating-point
predictor) need ``zlib`` and ``imagecodecs_floatpred``. A striped file whose last strip is short is referenced
as one chunk when its pixels are stored uncompressed and contiguous; compressed, such a file (and any
compression without a codec) is refused with an :class:`~mtg.pipeline.errors.MtgError`: rewrite it as a COG.
"""

from __future__ import annotations

import io
import json
import math
import os
from base64 import b64encode
from collections.abc import Sequence
from typing import Any

import kerchunk.tiff
import numcodecs
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pyproj
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import tifffile
import xarray as xr
from affine import Affine
from rasterio.errors import RasterioError

from mtg.pipeline.errors import MtgError
from mtg.pipeline.storage import filesystem, is_remote, write_text_atomic

VARIABLE = "elevation"
GRID_MAPPING = "spatial_ref"


def _as_url(href: str) -> str:
    """Local paths made absolute, so the references work from any working directory."""
    return href if is_remote(href) else os.path.abspath(href.removeprefix("file://"))


def _georeferencing(href: str, remote_options: dict[str, Any]) -> dict[str, Any]:
    """Shape, transform, CRS and nodata of a single-band, north-up GeoTIFF, as rasterio reads them."""
    fs, path = filesystem(href, remote_options)
    try:
        with rasterio.open(path, opener=fs) as src:
            count, shape, transform, crs, nodata = src.count, src.shape, src.transform, src.crs, src.nodata
    except (RasterioError, OSError) as err:
        raise MtgError(f"{href} is not a readable GeoTIFF: {err}") from None
    if count != 1:
        raise MtgError(f"{href} has {count} bands; only single-band DEMs are supported")
    if crs is None or transform.is_identity:
        raise MtgError(f"{href} has no CRS or geotransform")
    if transform.b or transform.d:
        raise MtgError(f"{href} has a rotated geotransform {tuple(transform)[:6]}; warp it to a north-up grid")
    return {"shape": shape, "transform": tuple(transform)[:6], "CRS": crs, "nodata": nodata}


def _tiff_refs(href: str, url: str, remote_options: dict[str, Any]) -> dict[str, Any]:
    """kerchunk references of one TIFF's first series, with its levels under ``0/``, ``1/``, ... or at the root."""
    try:
        try:
            return kerchunk.tiff.tiff_to_zarr(url, remote_options=remote_options)
        except ValueError as err:  # tifffile: "... is not supported by the fsspec ReferenceFileSystem"
            refused = err
        fs, path = filesystem(href, remote_options)
        with fs.open(path, "rb") as f, tifffile.TiffFile(f, name=url.rsplit("/", 1)[1]) as tif:
            page = tif.pages.first
            if page.is_tiled or not page.imagelength % page.rowsperstrip:
                raise refused
            if not page.is_final:
                raise MtgError(
                    f"{href}: its {page.rowsperstrip}-row strips do not divide its {page.imagelength} rows and its "
                    f"{page.compression.name} compression (predictor {page.predictor.name}) keeps the short last "
                    "strip from being referenced; rewrite it as a tiled COG (gdal_translate -of COG)")
            # a short last strip of uncompressed, contiguous pixels: the whole image is one chunk
            with tif.series[0].aszarr(chunkmode="page") as store:
                text = io.StringIO()
                store.write_fsspec(text, url=url.rsplit("/", 1)[0])
                return json.loads(text.getvalue())
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise MtgError(f"{href} cannot be referenced by kerchunk: {err}") from None


def _full_resolution(href: str, refs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``.zarray`` of the full-resolution level and its chunks, keyed ``"i.j"``; its codecs are checked."""
    prefix = "0/" if "0/.zarray" in refs else ""
    zarray = json.loads(refs[f"{prefix}.zarray"])
    for config in [zarray["compressor"], *(zarray["filters"] or [])]:
        try:
            if config is not None:
                numcodecs.get_codec(dict(config))
        except Exception as err:  # noqa: BLE001 - numcodecs and imagecodecs raise several types
            raise MtgError(f"{href}: no numcodecs codec decodes its compression ({config['id']}: {err}); "
                           "rewrite it as a COG with DEFLATE, LZW or ZSTD") from None
    chunks = {key[len(prefix):]: ref for key, ref in refs.items()
              if key.startswith(prefix) and key[len(prefix):][:1].isdigit() and "/" not in key[len(prefix):]}
    return zarray, chunks


def _fill_value(nodata: float | None, dtype: np.dtype) -> Any:
    """Nodata as a Zarr v2 fill value (xarray's ``_FillValue``) of the array's type; JSON has no NaN."""
    if nodata is None:
        return None
    value = np.asarray(nodata).astype(dtype).item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _inline(name: str, values: np.ndarray, attrs: dict[str, Any]) -> dict[str, str]:
    """References of a small 0-D or 1-D array whose one chunk is inlined (base64)."""
    values = np.asarray(values, dtype=values.dtype.newbyteorder("<"))
    zarray = {"zarr_format": 2, "shape": list(values.shape), "chunks": list(values.shape),
              "dtype": values.dtype.str, "compressor": None, "fill_value": None, "filters": None, "order": "C"}
    key = ".".join(["0"] * values.ndim) or "0"
    return {f"{name}/.zarray": json.dumps(zarray), f"{name}/.zattrs": json.dumps(attrs),
            f"{name}/{key}": "base64:" + b64encode(values.tobytes()).decode()}


def _georeferencing_refs(grid: dict[str, Any]) -> dict[str, str]:
    """``x``/``y`` pixel-centre coordinates and the ``spatial_ref`` grid mapping, as rioxarray writes them."""
    (ny, nx), t = grid["shape"], Affine(*grid["transform"])
    crs = pyproj.CRS.from_user_input(grid["CRS"].to_wkt())
    axes = {a.get("axis"): a for a in crs.cs_to_cf()}
    mapping = {**crs.to_cf(), "spatial_ref": crs.to_wkt(), "GeoTransform": " ".join(map(str, t.to_gdal())),
               "_ARRAY_DIMENSIONS": []}
    return {**_inline("x", t.c + t.a * (np.arange(nx) + 0.5), {**axes.get("X", {}), "_ARRAY_DIMENSIONS": ["x"]}),
            **_inline("y", t.f + t.e * (np.arange(ny) + 0.5), {**axes.get("Y", {}), "_ARRAY_DIMENSIONS": ["y"]}),
            **_inline(GRID_MAPPING, np.zeros((), "<i8"), mapping)}


def write_references(hrefs: Sequence[str], out_url: str, *, times: Sequence[np.datetime64 | str] | None = None,
                     storage_options: dict | None = None, remote_options: dict | None = None) -> str:
    """Write one kerchunk reference JSON for single-band GeoTIFF/COG files, read in place.

    Parameters
    ----------
    hrefs : sequence of str
        Local paths, ``file://`` or fsspec URLs (``s3://...``) of the GeoTIFFs. Only headers are read; the
        chunks are the strips or tiles of each file's full-resolution image (COG overviews are left out).
    out_url : str
        Where the JSON goes (local path or fsspec URL); written atomically.
    times : sequence of numpy.datetime64 or str, optional
        One time per file. Required for more than one file; with it ``elevation`` is ``(time, y, x)``,
        without it (one file) ``(y, x)``.
    storage_options : dict, optional
        fsspec options for ``out_url``.
    remote_options : dict, optional
        fsspec options for the GeoTIFFs (``hrefs``).

    Returns
    -------
    str
        ``out_url``.

    Raises
    ------
    MtgError
        Naming the file: it is not a readable single-band north-up GeoTIFF, its compression has no numcodecs
        codec or cannot be referenced, or the files are not on one grid (shape, transform, CRS, nodata, dtype
        or storage layout); or ``times`` does not give one time per file.
    """
    if not hrefs:
        raise MtgError("no GeoTIFF files given")
    if times is None and len(hrefs) > 1:
        raise MtgError(f"{len(hrefs)} files given without times: give one time per file to stack them")
    if times is not None and len(times) != len(hrefs):
        raise MtgError(f"{len(times)} times given for {len(hrefs)} files: give one time per file")
    remote_options = remote_options or {}
    grids, chunks = [], []
    for href in hrefs:
        grid = _georeferencing(href, remote_options)
        zarray, refs = _full_resolution(href, _tiff_refs(href, _as_url(href), remote_options))
        if zarray["shape"] != list(grid["shape"]):
            raise MtgError(f"{href}: the first TIFF image {zarray['shape']} is not the raster {grid['shape']} "
                           "GDAL reads")
        grids.append({**grid, "nodata": _fill_value(grid["nodata"], np.dtype(zarray["dtype"])),
                      "storage layout": {k: zarray[k] for k in ("dtype", "chunks", "compressor", "filters")}})
        chunks.append(refs)
    for href, grid in zip(hrefs[1:], grids[1:]):
        for name, value in grids[0].items():
            if grid[name] != value:
                raise MtgError(f"{hrefs[0]} and {href} cannot be stacked along time: their {name} differs "
                               f"({value} vs {grid[name]}); warp or rewrite them onto one grid")
    first = grids[0]
    lead = [] if times is None else [len(hrefs)]
    zarray = {"zarr_format": 2, "shape": lead + list(first["shape"]), "order": "C", "fill_value": first["nodata"],
              **first["storage layout"]}
    zarray["chunks"] = [1] * len(lead) + zarray["chunks"]
    refs: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2}), ".zattrs": json.dumps({}),
                            f"{VARIABLE}/.zarray": json.dumps(zarray), **_georeferencing_refs(first)}
    dims = ["y", "x"]
    if times is not None:
        dims = ["time", *dims]
        ns = np.array([np.datetime64(t, "ns") for t in times]).astype("<i8")
        refs.update(_inline("time", ns, {"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                                         "units": "nanoseconds since 1970-01-01"}))
    refs[f"{VARIABLE}/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": dims, "grid_mapping": GRID_MAPPING,
                                              "coordinates": GRID_MAPPING})
    for t, file_chunks in enumerate(chunks):
        lead_key = f"{t}." if lead else ""
        refs.update({f"{VARIABLE}/{lead_key}{key}": ref for key, ref in file_chunks.items()})
    write_text_atomic(out_url, json.dumps({"version": 1, "refs": refs}), storage_options or {})
    return out_url


def open_virtual_dem(refs_url: str, *, storage_options: dict | None = None, remote_options: dict | None = None,
                     chunks: dict | None = None) -> xr.Dataset:
    """Open references written by :func:`write_references` as a lazy, georeferenced Dataset.

    Parameters
    ----------
    refs_url : str
        Local path or fsspec URL of the reference JSON.
    storage_options : dict, optional
        fsspec options for ``refs_url``.
    remote_options : dict, optional
        fsspec options for the GeoTIFFs the references point at.
    chunks : dict, optional
        Dask chunks; by default one dask chunk per strip or tile.

    Returns
    -------
    xarray.Dataset
        Variable ``elevation`` (float32, nodata as NaN) on ``(time, y, x)`` or ``(y, x)``, with pixel-centre
        ``x``/``y`` coordinates and the ``spatial_ref`` grid mapping that rioxarray and odc-geo read.
    """
    # zarr opens reference:// asynchronously; fsspec refuses a synchronous remote filesystem under it.
    remote = {**(remote_options or {}), "asynchronous": True}
    ds = xr.open_dataset(
        "reference://", engine="zarr", chunks=chunks or {}, decode_coords="all",
        backend_kwargs={"consolidated": False, "zarr_format": 2, "storage_options": {
            "fo": refs_url, "target_options": storage_options or {}, "remote_options": remote}},
    )
    values = ds[VARIABLE].astype("float32")
    values.encoding.pop("_FillValue", None)
    return ds.assign({VARIABLE: values.rio.write_nodata(np.nan, encoded=False)})
