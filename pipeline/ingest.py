"""Datacube ingest: STAC items to a cloud-masked, baseline-harmonised reflectance cube and a DEM cube in Zarr.

The cubes are built lazily (nothing is read until the write), on one common grid: the reflectance grid
(default 10 m) and the DEM grid (default 30 m) share CRS and bounds and their pixels nest.
"""

from __future__ import annotations

import json
import logging
import time as _time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from mtg.kernels.reflectance import masked_reflectance
from mtg.pipeline.catalogs import CatalogSource, ReflectanceCollection, search_items
from mtg.pipeline.errors import MtgError, describe
from mtg.pipeline.grid import choose_crs, common_grids
from mtg.pipeline.loaders import Loader, load_assets
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.storage import check_writable, filesystem, join, write_text_atomic
from mtg.pipeline.zarr_store import fingerprint_of, write_cube

log = logging.getLogger(__name__)

# Reflectance is stored as uint16 = (reflectance + 0.1) / 1e-4, so 0 is free for missing pixels and every
# Sentinel-2 digital number of either baseline convention is stored exactly (up to the saturated top).
REFLECTANCE_SCALE = 1e-4
REFLECTANCE_ADD_OFFSET = -0.1
REFLECTANCE_MAX = REFLECTANCE_ADD_OFFSET + 65535 * REFLECTANCE_SCALE


@dataclass(frozen=True)
class Chunking:
    """Zarr chunk sizes: ``time`` steps by ``space`` x ``space`` pixels."""

    time: int = 8
    space: int = 512


@dataclass
class Cubes:
    """The lazily built cubes of one request, with what went into them."""

    reflectance: xr.Dataset
    dem: xr.Dataset
    reflectance_items: list[pystac.Item]
    dem_items: list[pystac.Item]
    grid: GeoBox
    dem_grid: GeoBox
    request: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestResult:
    """Where the cubes went and how the write went."""

    reflectance_url: str
    dem_url: str
    summary_url: str
    reflectance_status: str
    dem_status: str
    n_items: int
    n_dates: int
    shape: dict[str, int]
    bytes_written: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB (1e6 bytes) of Zarr written per second."""
        return self.bytes_written / 1e6 / self.seconds if self.seconds else float("nan")


def latest_baseline_only(items: Sequence[pystac.Item], coll: ReflectanceCollection) -> list[pystac.Item]:
    """Drop reprocessed duplicates: of items with the same tile and sensing time keep the newest baseline."""
    best: dict[tuple, pystac.Item] = {}
    for it in items:
        key = (it.properties.get("s2:mgrs_tile"), it.datetime)
        kept = best.get(key)
        rank = (str(it.properties.get(coll.baseline_property, "")), str(it.properties.get("s2:generation_time", "")))
        if kept is None or rank > (
            str(kept.properties.get(coll.baseline_property, "")), str(kept.properties.get("s2:generation_time", ""))
        ):
            best[key] = it
    if len(best) < len(items):
        log.info("dropped %d reprocessed duplicate items (kept the newest processing baseline)", len(items) - len(best))
    return sorted(best.values(), key=lambda it: (it.datetime, it.id))


def build_cubes(
    source: CatalogSource,
    aoi: Geometry,
    time: str | None,
    *,
    loader: Loader = "odc-stac",
    crs: str | None = None,
    resolution: float = 10.0,
    dem_resolution: float = 30.0,
    dem_time: str | None = None,
    chunking: Chunking = Chunking(),
    storage_options: dict[str, Any] | None = None,
) -> Cubes:
    """Search the source and build the lazy reflectance and DEM cubes of an area and time range.

    Parameters
    ----------
    source : CatalogSource
        Where to search (see :mod:`mtg.pipeline.catalogs`).
    aoi : odc.geo.geom.Geometry
        Area of interest in any CRS.
    time : str or None
        ``START/END`` for the reflectance items.
    loader : {"odc-stac", "stackstac"}
        Graph builder.
    crs : str, optional
        Output CRS; default the most common CRS of the reflectance items.
    resolution, dem_resolution : float
        Pixel sizes of the reflectance and DEM grids (metres).
    dem_time : str, optional
        ``START/END`` for the DEM items; default all epochs.
    chunking : Chunking
        Output chunk sizes.
    storage_options : dict, optional
        fsspec options for a static catalog on object storage.

    Returns
    -------
    Cubes
        ``reflectance``: float32 variables per band (NaN where masked), dims ``(time, y, x)``;
        ``dem``: ``elevation`` float32 (NaN voids), dims ``(time, y, x)``, one step per DEM epoch.
    """
    refl_def, dem_def = source.reflectance, source.dem
    bbox = tuple(aoi.to_crs("EPSG:4326").boundingbox)
    items = latest_baseline_only(search_items(source, refl_def.id, bbox, time, storage_options), refl_def)
    dem_items = search_items(source, dem_def.id, bbox, dem_time, storage_options)
    out_crs = choose_crs(items, aoi, crs)
    grid, dem_grid = common_grids(aoi, out_crs, resolution, dem_resolution)
    space = {"y": chunking.space, "x": chunking.space}
    load_chunks = {"time": chunking.time, **space}

    bands = list(refl_def.bands)
    groups: dict[float, list[pystac.Item]] = {}
    for it in items:
        groups.setdefault(refl_def.offset_for(it), []).append(it)
    parts = []
    for offset, members in sorted(groups.items()):
        raw = load_assets(
            members, [*bands, refl_def.mask.asset], grid, dtype="uint16", nodata=refl_def.nodata,
            resampling={refl_def.mask.asset: "nearest", "*": "bilinear"}, chunks=load_chunks, loader=loader,
            signing=source.signing,
        )
        parts.append(xr.Dataset({
            b: xr.apply_ufunc(
                masked_reflectance, raw[b], raw[refl_def.mask.asset], dask="parallelized",
                output_dtypes=[np.float32],
                kwargs={"offset": offset, "invalid_classes": refl_def.mask.invalid_classes,
                        "scale": refl_def.scale, "nodata": refl_def.nodata},
            )
            for b in bands
        }))
        log.info("%d items with digital-number offset %+g", len(members), offset)
    reflectance = xr.concat(parts, "time").sortby("time") if len(parts) > 1 else parts[0]
    if reflectance.indexes["time"].has_duplicates:  # one day in two baselines: first valid pixel wins
        reflectance = reflectance.groupby("time").first(skipna=True)
    reflectance = reflectance.chunk({"time": min(chunking.time, reflectance.sizes["time"]), **space})
    for b, spec in refl_def.bands.items():
        reflectance[b].attrs.update({"long_name": f"{b} surface reflectance", "common_name": spec.common_name,
                                     "units": "1", "native_resolution_m": spec.resolution})
    reflectance.attrs = {
        "title": "cloud-masked surface reflectance",
        "source_collection": refl_def.id,
        "masked_scene_classes": list(refl_def.mask.invalid_classes),
        "harmonisation": f"reflectance = (DN + offset) * {refl_def.scale}; offset {refl_def.offset_dn:+g} from "
                         f"processing baseline {refl_def.offset_from_baseline}, else 0",
    }
    reflectance = reflectance.odc.assign_crs(out_crs)

    raw_dem = load_assets(
        dem_items, [dem_def.asset], dem_grid, dtype="float32", nodata=np.nan,
        resampling={"*": "bilinear"}, chunks=space, loader=loader, signing=source.signing,
    )
    elevation = raw_dem[dem_def.asset]
    elevation = elevation.where(elevation != dem_def.nodata)
    elevation.attrs.update({"long_name": "surface elevation", "units": "m"})
    dem = xr.Dataset({"elevation": elevation}).chunk({"time": 1, **space})
    dem.attrs = {"title": "digital elevation model epochs", "source_collection": dem_def.id}
    dem = dem.odc.assign_crs(out_crs)

    request = {
        "source": source.url,
        "reflectance_items": [it.id for it in items],
        "dem_items": [it.id for it in dem_items],
        "grid": {"crs": str(out_crs), "transform": list(grid.affine)[:6], "shape": list(grid.shape)},
        "dem_grid": {"transform": list(dem_grid.affine)[:6], "shape": list(dem_grid.shape)},
        "bands": bands,
        "loader": loader,
        "chunking": asdict(chunking),
    }
    return Cubes(reflectance, dem, items, dem_items, grid, dem_grid, request)


def reflectance_encoding(ds: xr.Dataset, chunking: Chunking) -> dict[str, dict[str, Any]]:
    """Zarr encoding of the reflectance cube: scaled uint16, 0 for missing, chunks (time, space, space)."""
    chunks = (min(chunking.time, ds.sizes["time"]), chunking.space, chunking.space)
    return {
        v: {"dtype": "uint16", "scale_factor": REFLECTANCE_SCALE, "add_offset": REFLECTANCE_ADD_OFFSET,
            "_FillValue": 0, "chunks": chunks}
        for v in ds.data_vars
    }


def dem_encoding(ds: xr.Dataset, chunking: Chunking) -> dict[str, dict[str, Any]]:
    """Zarr encoding of the DEM cube: float32 with NaN voids, one epoch per chunk."""
    return {"elevation": {"dtype": "float32", "_FillValue": np.float32("nan"),
                          "chunks": (1, chunking.space, chunking.space)}}


def write_cubes(
    cubes: Cubes,
    out: str,
    *,
    chunking: Chunking = Chunking(),
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    compute=None,
) -> IngestResult:
    """Write the cubes to ``OUT/reflectance.zarr`` and ``OUT/dem.zarr`` and a summary ``OUT/ingest.json``.

    Parameters
    ----------
    cubes : Cubes
        From :func:`build_cubes`.
    out : str
        Local folder or fsspec URL (``s3://bucket/prefix``).
    chunking : Chunking
        Must be the chunking the cubes were built with.
    storage_options : dict, optional
        fsspec options for ``out``.
    overwrite : bool
        Replace complete cubes of a different request.
    compute : callable, optional
        ``compute(delayed, label)``, for progress display and the choice of scheduler.

    Returns
    -------
    IngestResult
    """
    storage_options = storage_options or {}
    check_writable(join(out, "reflectance.zarr"), storage_options)
    refl_url, dem_url, summary_url = join(out, "reflectance.zarr"), join(out, "dem.zarr"), join(out, "ingest.json")
    start = _time.perf_counter()
    reflectance = cubes.reflectance.clip(max=REFLECTANCE_MAX)
    try:
        refl_status = write_cube(
            reflectance, refl_url, encoding=reflectance_encoding(reflectance, chunking),
            fingerprint=fingerprint_of({"cube": "reflectance", **cubes.request}), storage_options=storage_options,
            overwrite=overwrite, compute=compute,
        )
        dem_status = write_cube(
            cubes.dem, dem_url, encoding=dem_encoding(cubes.dem, chunking),
            fingerprint=fingerprint_of({"cube": "dem", **cubes.request}), storage_options=storage_options,
            overwrite=overwrite, compute=compute,
        )
    except MtgError:
        raise
    except Exception as err:
        # Reading errors surface at write time, since the cubes are lazy; the stores stay marked incomplete.
        raise MtgError(f"ingest stopped while writing to {out}: {describe(err)}") from err
    seconds = _time.perf_counter() - start
    fs, _ = filesystem(out, storage_options)
    written = sum(fs.du(filesystem(u, storage_options)[1]) for u in (refl_url, dem_url))
    result = IngestResult(
        reflectance_url=refl_url, dem_url=dem_url, summary_url=summary_url, reflectance_status=refl_status,
        dem_status=dem_status, n_items=len(cubes.reflectance_items), n_dates=cubes.reflectance.sizes["time"],
        shape=dict(cubes.reflectance.sizes), bytes_written=written, seconds=seconds,
    )
    # paths relative to the folder above the cubes (the run folder of `mtg run`): a copied run stays valid
    root = Path(out).parent if "://" not in out else out

    def portable(value: Any) -> Any:
        return portable_path(value, root) if isinstance(value, str) else value

    summary = {**cubes.request, "source": portable(cubes.request["source"]),
               "result": {k: portable(v) for k, v in {**asdict(result), "mb_per_s": result.mb_per_s}.items()
                          if k != "summary_url"}}  # the file itself
    write_text_atomic(summary_url, json.dumps(summary, indent=2, default=str), storage_options)
    return result
