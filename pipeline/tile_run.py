"""One work tile of a global rerun, as one task on one core: ingest -> segmentation -> footprints -> volumes, with
the tile's outputs written into ``OUT/tiles/<tile-id>/`` all at once (or not at all).

A tile is the catalog-driven run of :mod:`mtg.pipeline.run` on the tile's processing extent (its area of interest
plus the halo) in its own UTM zone. It keeps what it *owns* (:mod:`mtg.pipeline.tiling`): footprint polygons clipped
to the owned polygon, the per-part volumes of those polygons (each clipped footprint is a part; the world stage sums
parts into sites), the waste deposits inside them, and the mining probability of the processing extent. Every
output is a function of the inputs only (no times, no paths), so a tile redone after a crash writes the same bytes.

Files of a tile folder: ``footprints.parquet`` (EPSG:4326), ``part_volumes.parquet``, ``deposits.parquet``
(EPSG:4326), ``probability.zarr`` and ``tile.json`` (what the tile found, its dh statistics, and why volumes were not
computed when they were not). With ``timeline.tiles`` also ``periods.parquet`` (EPSG:4326): per period of the
tile's acquisitions (:mod:`mtg.pipeline.timeline`: one composite and segmentation per period, the Markov rule), the
owned ground decoded as mining (``kind`` ``mining``, one polygon per connected area) and the owned ground seen in
the period (``kind`` ``seen``); the world stage turns them into per-site series.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import torch
from odc.geo.geom import box

from mtg.pipeline.catalogs import resolve_source
from mtg.pipeline.config import RunConfig
from mtg.pipeline.errors import MtgError
from mtg.pipeline.run import dem_pair, run_ingest
from mtg.pipeline.segment import segment_cube
from mtg.pipeline.table_io import atomic_folder
from mtg.pipeline.tiling import clip_to_tile, geodesic_areas
from mtg.pipeline.volume import volumes

log = logging.getLogger(__name__)

#: Files every done tile folder holds (checksummed in the manifest).
TILE_FILES = ("footprints.parquet", "part_volumes.parquet", "deposits.parquet", "tile.json", "probability.zarr")
#: Stages whose seconds a tile measures (the plan predicts the same ones).
STAGES = ("ingest", "segment", "volumes")
#: The tile's per-period layers, written with ``timeline.tiles`` (checksummed in the manifest when present).
PERIODS_FILE = "periods.parquet"


@dataclass(frozen=True)
class TileTask:
    """What one tile needs, picklable for dask workers.

    Attributes
    ----------
    tile_id : str
    epsg : int
        The tile's UTM zone.
    bounds : tuple of float
        Processing extent without halo ``(left, bottom, right, top)`` in the zone CRS.
    halo_m : float
    owned_wkb : bytes
        The owned polygon (EPSG:4326), as WKB.
    catalog : str
        Catalog name or URL.
    time : str
        ``START/END`` of the Sentinel-2 acquisitions.
    """

    tile_id: str
    epsg: int
    bounds: tuple[float, float, float, float]
    halo_m: float
    owned_wkb: bytes
    catalog: str
    time: str

    @property
    def processing_box(self) -> tuple[float, float, float, float]:
        """The processed extent with its halo, zone CRS."""
        left, bottom, right, top = self.bounds
        h = self.halo_m
        return (left - h, bottom - h, right + h, top + h)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        digest.update(p.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        digest.update(p.read_bytes())
    return digest.hexdigest()


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a clip result (a clip along an edge can leave lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def owned_polygons(frame: gpd.GeoDataFrame, owned: shapely.Geometry) -> gpd.GeoDataFrame:
    """The polygonal parts of ``frame``'s rows inside a tile's owned polygon, EPSG:4326 (empty rows dropped)."""
    clipped = clip_to_tile(frame, owned)
    clipped["geometry"] = [_polygonal(g) for g in clipped.geometry]
    return clipped[~clipped.geometry.is_empty].reset_index(drop=True)


def owned_parts(frame: gpd.GeoDataFrame, owned: shapely.Geometry, tile_id: str) -> gpd.GeoDataFrame:
    """The parts of a tile's footprint polygons that the tile owns (EPSG:4326), numbered ``<tile-id>:<k>``, with
    ``area_m2`` the geodesic area of the part (the pixel count of the whole polygon is dropped)."""
    clipped = owned_polygons(frame, owned).drop(columns=["n_pixels", "area_m2"], errors="ignore")
    clipped.insert(0, "part_id", [f"{tile_id}:{k + 1}" for k in range(len(clipped))])
    clipped.insert(1, "tile_id", tile_id)
    clipped["area_m2"] = geodesic_areas(clipped)
    return clipped


def run_tile(task: TileTask, config: RunConfig, out: str, scratch: str | None = None) -> dict[str, Any]:
    """Process one tile and write ``out/tiles/<tile-id>/`` atomically.

    Parameters
    ----------
    task : TileTask
    config : RunConfig
        The run's stage options (segment, volume) and ingest settings (resolution, loader, chunks).
    out : str
        The run folder.
    scratch : str, optional
        Folder for the tile's temporary cubes (default the system's temporary folder).

    Returns
    -------
    dict
        ``tile_id``, ``seconds`` per stage, ``bytes_written``, ``checksums`` by file, ``n_footprints``,
        ``volumes`` (``"computed"`` or why not).

    Raises
    ------
    MtgError
        When the tile cannot be processed (no scenes, unreadable scene, ...); nothing is written then.
    """
    seconds: dict[str, float] = {}
    owned = shapely.from_wkb(task.owned_wkb)
    tile_dir = Path(out) / "tiles" / task.tile_id
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one tile is one task on one core: the plan's CPU-seconds are the tile's seconds
    stages = logging.getLogger("mtg.pipeline")
    level = stages.level
    if stages.getEffectiveLevel() > logging.DEBUG:  # the run's progress line says what tiles do; warnings stay
        stages.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix=f"mtg-tile-{task.tile_id}-", dir=scratch) as tmp, \
                dask.config.set(scheduler="synchronous"), atomic_folder(tile_dir) as folder:
            source = resolve_source(task.catalog)
            aoi = box(*task.processing_box, f"EPSG:{task.epsg}")
            ingest_cfg = config.ingest.model_copy(update={
                "catalog": task.catalog, "out": str(Path(tmp) / "cubes"), "crs": f"EPSG:{task.epsg}",
                "time": task.time, "bbox": None, "aoi": None, "overwrite": True, "dem_references": False})
            start = time.perf_counter()
            ingest = run_ingest(ingest_cfg, None, source=source, aoi=aoi, progress=False)
            seconds["ingest"] = time.perf_counter() - start

            start = time.perf_counter()
            seg = segment_cube(ingest.reflectance_url, Path(tmp) / "segment", options=config.segment,
                               progress=False, source_name=f"tile {task.tile_id} of {task.catalog} ({task.time})")
            polygons = gpd.read_parquet(seg.polygons)
            parts = owned_parts(polygons, owned, task.tile_id)
            seconds["segment"] = time.perf_counter() - start
            periods = None
            if config.timeline.tiles:
                start = time.perf_counter()
                periods = tile_periods(ingest.reflectance_url, config, owned, task.tile_id)
                seconds["timeline"] = time.perf_counter() - start

            start = time.perf_counter()
            record: dict[str, Any] = {"tile_id": task.tile_id, "epsg": task.epsg, "bounds": list(task.bounds),
                                      "halo_m": task.halo_m, "scenes": ingest.n_items, "dates": ingest.n_dates,
                                      "footprints": len(parts),
                                      "mining_area_m2": float(parts.to_crs(f"EPSG:{task.epsg}").area.sum())}
            part_volumes, deposits = _tile_volumes(config, source, aoi, ingest, parts, task, owned, record)
            seconds["volumes"] = time.perf_counter() - start

            folder.mkdir(parents=True)
            parts.to_parquet(folder / "footprints.parquet", index=False)
            part_volumes.to_parquet(folder / "part_volumes.parquet", index=False)
            deposits.to_parquet(folder / "deposits.parquet", index=False)
            if periods is not None:
                periods.to_parquet(folder / PERIODS_FILE, index=False)
            shutil.move(str(seg.probability), folder / "probability.zarr")
            (folder / "tile.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    finally:
        torch.set_num_threads(threads)
        stages.setLevel(level)
    checksums = {name: file_checksum(tile_dir / name) for name in (*TILE_FILES, PERIODS_FILE)
                 if (tile_dir / name).exists()}
    written = sum(p.stat().st_size for p in tile_dir.rglob("*") if p.is_file())
    return {"tile_id": task.tile_id, "seconds": seconds, "bytes_written": written, "checksums": checksums,
            "n_footprints": record["footprints"], "volumes": record["volumes"]}


def tile_periods(cube: str, config: RunConfig, owned: shapely.Geometry, tile_id: str) -> gpd.GeoDataFrame:
    """The owned ground mining and seen in each period of a tile's cube (module docstring), EPSG:4326.

    Returns
    -------
    geopandas.GeoDataFrame
        ``period``, ``kind`` (``mining``: one row per connected area decoded as mining; ``seen``: the ground with a
        clear view in the period), ``geometry``; in period order.
    """
    from mtg.pipeline.timeline import UNSEEN, mask_polygons, period_maps
    from mtg.pipeline.zarr_store import open_cube

    maps, _, periods = period_maps(open_cube(cube), name=f"tile {tile_id}", client=None,
                                   segment_options=config.segment, options=config.timeline)
    mining = maps["mining"].values
    transform, crs = maps.rio.transform(), maps.rio.crs
    rows = []
    for t, label in enumerate(p.label for p in periods):
        for kind, mask in (("mining", mining[t] == 1), ("seen", mining[t] != UNSEEN)):
            geom = mask_polygons(mask.astype(np.int32), [kind], transform).get(kind)
            if geom is not None:
                rows.append({"period": label, "kind": kind, "geometry": geom})
    frame = gpd.GeoDataFrame(rows, columns=["period", "kind", "geometry"], geometry="geometry", crs=crs)
    clipped = owned_polygons(frame, owned)
    mined = clipped["kind"] == "mining"
    areas = clipped[mined].explode(index_parts=False)
    return gpd.GeoDataFrame(pd.concat([areas, clipped[~mined]]).sort_values(["period", "kind"], kind="stable")
                            .reset_index(drop=True), geometry="geometry", crs="EPSG:4326")


def _tile_volumes(config, source, aoi, ingest, parts, task, owned, record):  # noqa: ANN001, ANN202
    """Per-part volumes and owned deposits of a tile; records the tile's dh statistics (or why there are none)."""
    empty_deposits = gpd.GeoDataFrame({"part_id": pd.Series([], dtype="string")}, geometry=[], crs="EPSG:4326")
    empty_parts = pd.DataFrame({"part_id": pd.Series([], dtype="string")})
    if parts.empty:
        record["volumes"] = "no footprints"
        return empty_parts, empty_deposits
    pair = dem_pair(config, source, aoi, ingest, {})
    if pair is None:
        record["volumes"] = "one DEM epoch"
        return empty_parts, empty_deposits
    zone = parts.to_crs(f"EPSG:{task.epsg}")[["part_id", "geometry"]]
    try:
        measured = volumes(*pair, zone, site_id_col="part_id", sites_name=f"tile {task.tile_id}",
                           options=config.volume)
    except MtgError as err:
        record["volumes"] = f"not computed: {err}"
        return empty_parts, empty_deposits
    report = measured.report
    record["volumes"] = "computed"
    record["dh"] = {"nmad_m": report["stable_nmad_m"], "median_m": report["stable_median_m"],
                    "stable_cells": report["stable_cells"], "threshold_m": report["threshold_m"],
                    "cell_size_m": report["cell_size_m"], "coregistration": report["coregistration"],
                    "variogram": {k: report["variogram"][k] for k in ("sill_m2", "range_m", "nugget_m2")}}
    table = pd.DataFrame(measured.site_volumes.drop(columns="geometry"))
    table.insert(1, "tile_id", task.tile_id)
    whole = measured.deposits.rename(columns={"site_id": "part_id"})
    whole_area = dict(zip(whole["deposit_id"], geodesic_areas(whole.to_crs("EPSG:4326"))))
    deposits = owned_polygons(whole, owned)
    # a deposit cut by the tile's edge keeps the share of its volume that lies in the part it owns (its mean
    # thickness taken as uniform); the neighbour owns the rest
    deposits["area_m2"] = geodesic_areas(deposits)
    share = deposits["area_m2"] / deposits["deposit_id"].map(whole_area)
    deposits["volume_m3"] = deposits["volume_m3"] * share.clip(upper=1.0)
    deposits["deposit_id"] = [f"{task.tile_id}:D{k + 1}" for k in range(len(deposits))]
    return table, deposits if len(deposits) else empty_deposits


def task_from_row(row: pd.Series, catalog: str, time_range: str) -> TileTask:
    """The :class:`TileTask` of one plan row."""
    return TileTask(tile_id=str(row["tile_id"]), epsg=int(row["epsg"]),
                    bounds=tuple(float(row[k]) for k in ("left", "bottom", "right", "top")),
                    halo_m=float(row["halo_m"]), owned_wkb=shapely.to_wkb(row.geometry), catalog=catalog,
                    time=time_range)
