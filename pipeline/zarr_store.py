"""Resumable, idempotent Zarr writes that never look complete before they are.

A cube is written in two phases. First the metadata of every array (the *template*) is written with the
attribute ``mtg:complete = false``. Then the data are written region by region (a band of chunk rows at a
time, all variables); after each region a marker object is written beside the store (``.<name>.progress/``),
so a rerun of the same request resumes where the last one stopped, and rewriting a region is harmless
because region writes are idempotent. Last, ``mtg:complete`` is set and the metadata are consolidated: only
a store with consolidated metadata *and* ``mtg:complete = true`` counts as complete.

Replacing a complete store (``overwrite``) never loses it to a failed write. The new store is written beside the
old one, under ``<name>.mtg-new-<request>`` (the same folder or prefix, named after the request so that a rerun of
the request resumes it), in the same two phases; only once it is complete is it swapped in:

* local folders: the old store is renamed to ``<name>.mtg-old-<request>``, the new one renamed into place, the
  old one deleted. Between the two renames (two ``rename`` calls) the name is absent; a rerun finding the old store
  set aside there puts it back first, so a kill at any moment leaves a complete old or a complete new store.
* object storage (no atomic rename): the old store stays complete and readable until the new one is complete.
  Then its root ``zarr.json`` is deleted (from then on readers see no store), its objects are deleted, the new
  store's objects are copied in, its root ``zarr.json`` last, and the staging store is deleted. During that copy
  the URL holds no complete store (readers get "missing" or "incomplete", never a mix of old and new); a kill in
  that window leaves the complete new store under its staging name, and a rerun of the request finishes the copy.

Staging and set-aside stores of other requests (dead attempts) are deleted by the next write of the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
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
from mtg.pipeline.storage import filesystem, is_remote, join, options_for

log = logging.getLogger(__name__)

COMPLETE_ATTR = "mtg:complete"
FINGERPRINT_ATTR = "mtg:request"
STAGING = ".mtg-new-"
SET_ASIDE = ".mtg-old-"


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
        Replace a complete store (otherwise one made by a different request is an error). The new store is
        written under a staging name beside it and swapped in when complete (see the module's description), so a
        failed or killed write leaves the old store complete; a rerun of the same request resumes the staging store.
    compute : callable, optional
        ``compute(delayed, label)`` runs one region's delayed write (with progress); default ``dask.compute``.

    Returns
    -------
    str
        ``"written"``, ``"resumed"`` (an interrupted write or replacement finished) or ``"skipped"`` (already
        complete for the same request).
    """
    compute = compute or (lambda delayed, label: dask.compute(delayed))
    # Merge into the variables' own encoding (not to_zarr's `encoding=`, which would replace it): that keeps
    # the CF `grid_mapping` link to `spatial_ref` that rioxarray and odc-geo read the CRS from.
    ds = crs_coordinate(ds)
    for name, enc in encoding.items():
        ds[name].encoding.update(enc)
    fs, path = filesystem(url, storage_options)
    if not is_remote(url):
        _restore_set_aside(path)
    state, previous = store_state(url, storage_options)

    if state == "complete" and previous == fingerprint and not overwrite:
        log.info("%s is already complete for this request; nothing to do", url)
        _remove_leftovers(fs, path, keep=None)
        return "skipped"
    if state == "complete" and not overwrite:
        raise MtgError(
            f"{url} already holds a complete cube from a different request; pass --overwrite to replace it "
            "or write to another --out"
        )
    token = fingerprint[:16]
    staging = f"{url.rstrip('/')}{STAGING}{token}"
    _remove_leftovers(fs, path, keep=token)
    if state != "complete" and store_state(staging, storage_options) != ("complete", fingerprint):
        return _write_regions(ds, url, encoding=encoding, fingerprint=fingerprint, storage_options=storage_options,
                              compute=compute)
    # replace the complete store (or finish an interrupted replacement) through the staging store
    status = _write_regions(ds, staging, encoding=encoding, fingerprint=fingerprint,
                            storage_options=storage_options, compute=compute)
    log.info("replacing %s with the complete store %s", url, staging)
    if is_remote(url):
        _copy_over(fs, filesystem(staging, storage_options)[1], path)
    else:
        _rename_over(filesystem(staging, storage_options)[1], path, token)
    return "written" if status == "written" else "resumed"


def _write_regions(
    ds: xr.Dataset,
    url: str,
    *,
    encoding: dict[str, dict[str, Any]],
    fingerprint: str,
    storage_options: dict[str, Any],
    compute: Callable[[Any, str], None],
) -> str:
    """Write ``ds`` to ``url`` in place: resume a partial store of ``fingerprint``, replace any other partial
    store, skip a complete store of ``fingerprint``. ``url`` must not hold a complete store of another request.

    Returns ``"written"``, ``"resumed"`` or ``"skipped"``.
    """
    opts = options_for(url, storage_options)
    fs, path = filesystem(url, storage_options)
    progress_dir = _progress_dir(path)
    state, previous = store_state(url, storage_options)
    if state == "complete":
        return "skipped"
    resume = state == "partial" and previous == fingerprint
    if resume:
        done = {p.rsplit("/", 1)[-1] for p in fs.ls(progress_dir, detail=False)} if fs.exists(progress_dir) else set()
        log.info("resuming the interrupted write of %s (%d regions already written)", url, len(done))
    else:
        if state != "absent":
            log.info("replacing the incomplete store %s", url)
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


def _rename_over(staging: str, path: str, token: str) -> None:
    """Local swap: set the old store aside, rename the complete ``staging`` store to ``path``, delete the old one."""
    old = f"{path}{SET_ASIDE}{token}"
    os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old)


def _restore_set_aside(path: str) -> None:
    """Put back a local store that a killed swap set aside (``path`` absent, ``<path>.mtg-old-*`` there)."""
    parent, name = os.path.split(path.rstrip("/"))
    if os.path.exists(path) or not os.path.isdir(parent or "."):
        return
    for entry in sorted(os.listdir(parent or ".")):
        if entry.startswith(f"{name}{SET_ASIDE}"):
            log.warning("putting back %s, set aside by a replacement that was interrupted", path)
            os.replace(os.path.join(parent, entry), path)
            return


def _copy_over(fs: Any, staging: str, path: str) -> None:
    """Object-storage swap: delete the old store (its root ``zarr.json`` first), copy the complete ``staging``
    store's objects to ``path`` (its root ``zarr.json`` last), then delete ``staging``."""
    root = join(staging, "zarr.json")
    if fs.exists(join(path, "zarr.json")):
        fs.rm_file(join(path, "zarr.json"))
    if fs.exists(path):
        fs.rm(path, recursive=True)
    objects = [key for key in fs.find(staging) if key != root]
    fs.copy(objects, [join(path, key[len(staging) + 1:]) for key in objects])
    fs.copy(root, join(path, "zarr.json"))
    fs.rm(staging, recursive=True)
    fs.invalidate_cache()


def _remove_leftovers(fs: Any, path: str, keep: str | None) -> None:
    """Delete the staging, progress and set-aside stores of ``path`` left by dead attempts, except those of the
    request token ``keep``."""
    parent, _, name = path.rstrip("/").rpartition("/")
    fs.invalidate_cache(parent)
    if not parent or not fs.exists(parent):
        return
    kept = {f"{name}{STAGING}{keep}", f".{name}{STAGING}{keep}.progress"} if keep else set()
    prefixes = (f"{name}{STAGING}", f".{name}{STAGING}", f"{name}{SET_ASIDE}")
    for entry in fs.ls(parent, detail=False):
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith(prefixes) and base not in kept:
            log.info("deleting %s, left by an interrupted write", entry)
            fs.rm(entry, recursive=True)


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
