"""Resumable, idempotent Zarr writes that never look complete before they are.

A cube is written in two phases. First the metadata of every array (the *template*) is written with the
attribute ``mtg:complete = false``. Then the data are written region by region (a band of chunk rows at a
time, all variables); after each region a marker object is written beside the store (``.<name>.progress/``),
so a rerun of the same request resumes where the last one stopped, and rewriting a region is harmless
because region writes are idempotent. Last, ``mtg:complete`` is set and the metadata are consolidated: only
a store with consolidated metadata *and* ``mtg:complete = true`` counts as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
import odc.geo.xr  # noqa: F401 - registers the .odc accessor on opened cubes
import rioxarray  # noqa: F401 - registers the .rio accessor on opened cubes
import xarray as xr
import zarr

from mtg.pipeline.errors import MtgError
from mtg.pipeline.storage import filesystem, join, options_for

log = logging.getLogger(__name__)

COMPLETE_ATTR = "mtg:complete"
FINGERPRINT_ATTR = "mtg:request"


def store_state(url: str, storage_options: dict[str, Any]) -> tuple[str, str | None]:
    """State of a Zarr store: ``("absent"|"partial"|"complete", fingerprint)``."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(join(path, "zarr.json")):
        return "absent", None
    try:
        group = zarr.open_group(url, mode="r", storage_options=options_for(url, storage_options), use_consolidated=True)
        attrs = dict(group.attrs)
        return ("complete" if attrs.get(COMPLETE_ATTR) else "partial"), attrs.get(FINGERPRINT_ATTR)
    except (ValueError, KeyError, OSError):  # no consolidated metadata yet: an unfinished write
        group = zarr.open_group(url, mode="r", storage_options=options_for(url, storage_options), use_consolidated=False)
        return "partial", dict(group.attrs).get(FINGERPRINT_ATTR)


def crs_coordinate(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (a shallow copy) with its grid mapping listed in the ``coordinates`` attribute of each variable that
    uses it, so that a plain ``xr.open_zarr(store)`` makes ``spatial_ref`` a coordinate and ``.rio.crs`` finds it.

    xarray writes a grid mapping as a data variable that only ``decode_coords="all"`` turns back into a coordinate;
    listed in ``coordinates`` (beside the other non-index coordinates xarray lists there), the default
    ``decode_coords=True`` does it too. Every store with a CRS goes through this before it is written.
    """
    ds = ds.copy()
    for var in ds.data_vars.values():
        mapping = var.encoding.get("grid_mapping") or var.attrs.get("grid_mapping")
        if mapping is None or mapping not in ds.coords:
            continue
        others = [c for c in ds.coords
                  if c not in ds.indexes and c != mapping and set(ds[c].dims) <= set(var.dims)]
        var.encoding["coordinates"] = " ".join([*others, mapping])
    return ds


def open_cube(url: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a complete cube lazily, in the store's chunks, with its CRS attached and float32 variables.

    The CRS is the CF grid mapping ``spatial_ref`` (``decode_coords="all"`` makes it a coordinate, which
    rioxarray's ``.rio.crs`` and odc-geo's ``.odc.geobox`` read).

    Scaled integers (reflectance) decode to float64 in plain xarray, since Zarr keeps the scale factor as a
    JSON number; here they are cast to float32, which holds them exactly enough (1e-4 steps up to 6.5).

    Raises
    ------
    MtgError
        When the store does not exist or is not complete.
    """
    storage_options = storage_options or {}
    state, _ = store_state(url, storage_options)
    if state != "complete":
        raise MtgError(f"{url} is {'missing' if state == 'absent' else 'incomplete (an interrupted write)'}")
    ds = xr.open_zarr(url, consolidated=True, storage_options=options_for(url, storage_options), chunks={},
                      decode_coords="all")
    return ds.assign({v: ds[v].astype("float32") for v in ds.data_vars if ds[v].dtype == "float64"})


def write_cube(
    ds: xr.Dataset,
    url: str,
    *,
    encoding: dict[str, dict[str, Any]],
    fingerprint: str,
    storage_options: dict[str, Any],
    overwrite: bool = False,
    compute: Callable[[Any, str], None] | None = None,
) -> str:
    """Write ``ds`` to a Zarr v3 store at ``url``, resumably.

    Parameters
    ----------
    ds : xarray.Dataset
        Lazy dataset with dims ending in ``(y, x)``; its dask chunks must equal the ``chunks`` in ``encoding``.
    url : str
        Local path or fsspec URL of the store.
    encoding : dict
        Per-variable Zarr encoding (dtype, chunks, fill value, scale).
    fingerprint : str
        Identifies the request (items, grid, bands); a partial store with the same fingerprint is resumed.
    storage_options : dict
        fsspec options for remote URLs.
    overwrite : bool
        Replace a complete store made by a different request (otherwise that is an error).
    compute : callable, optional
        ``compute(delayed, label)`` runs one region's delayed write (with progress); default ``dask.compute``.

    Returns
    -------
    str
        ``"written"``, ``"resumed"`` or ``"skipped"`` (already complete for the same request).
    """
    compute = compute or (lambda delayed, label: dask.compute(delayed))
    # Merge into the variables' own encoding (not to_zarr's `encoding=`, which would replace it): that keeps
    # the CF `grid_mapping` link to `spatial_ref` that rioxarray and odc-geo read the CRS from.
    ds = crs_coordinate(ds)
    for name, enc in encoding.items():
        ds[name].encoding.update(enc)
    opts = options_for(url, storage_options)
    fs, path = filesystem(url, storage_options)
    progress_dir = _progress_dir(path)
    state, previous = store_state(url, storage_options)

    if state == "complete" and previous == fingerprint and not overwrite:
        log.info("%s is already complete for this request; nothing to do", url)
        return "skipped"
    if state == "complete" and not overwrite:
        raise MtgError(
            f"{url} already holds a complete cube from a different request; pass --overwrite to replace it "
            "or write to another --out"
        )
    resume = state == "partial" and previous == fingerprint and not overwrite
    if resume:
        done = {p.rsplit("/", 1)[-1] for p in fs.ls(progress_dir, detail=False)} if fs.exists(progress_dir) else set()
        log.info("resuming the interrupted write of %s (%d regions already written)", url, len(done))
    else:
        if state != "absent":
            log.info("replacing %s %s", "the incomplete store" if state == "partial" else "the store", url)
            fs.rm(path, recursive=True)
        if fs.exists(progress_dir):
            fs.rm(progress_dir, recursive=True)
        done = set()
        fs.makedirs(progress_dir, exist_ok=True)
        template = ds.copy()
        template.attrs = {**ds.attrs, COMPLETE_ATTR: False, FINGERPRINT_ATTR: fingerprint}
        template.to_zarr(url, mode="w", compute=False, consolidated=False, zarr_format=3, storage_options=opts)

    row_chunk = encoding[next(iter(encoding))]["chunks"][-2]
    n_regions = math.ceil(ds.sizes["y"] / row_chunk)
    data_vars = [v for v in ds.data_vars if "y" in ds[v].dims]
    body = ds[data_vars].drop_vars([c for c in ds.coords if "y" not in ds[c].dims or c == "y"])
    for i in range(n_regions):
        name = f"{i:06d}"
        if name in done:
            continue
        rows = slice(i * row_chunk, min((i + 1) * row_chunk, ds.sizes["y"]))
        region = {d: slice(None) for d in body.dims}
        region["y"] = rows
        delayed = body.isel(y=rows).to_zarr(url, region=region, compute=False, consolidated=False,
                                            storage_options=opts)
        compute(delayed, f"{url.rsplit('/', 1)[-1]} rows {rows.start}-{rows.stop} ({i + 1}/{n_regions})")
        fs.pipe_file(join(progress_dir, name), b"")

    group = zarr.open_group(url, mode="r+", storage_options=opts, use_consolidated=False)
    group.attrs.update({COMPLETE_ATTR: True})
    with consolidated_on_purpose():  # they are the completion marker
        zarr.consolidate_metadata(group.store)
    if fs.exists(progress_dir):
        fs.rm(progress_dir, recursive=True)
    return "resumed" if resume else "written"


@contextmanager
def consolidated_on_purpose() -> Iterator[None]:
    """Silence zarr's warning that consolidated metadata are not part of the Zarr v3 specification: the stores
    keep them deliberately (a lazy reader opens a store in one read; the cubes mark completion with them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _progress_dir(path: str) -> str:
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.progress" if parent else f".{name}.progress"


def fingerprint_of(request: dict[str, Any]) -> str:
    """A stable fingerprint of a request: the SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
