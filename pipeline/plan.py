"""``mtg plan``: the work tiles of a global rerun, what each reads, and what the whole rerun costs, before it runs.

A plan is one GeoParquet row per work tile (:func:`mtg.pipeline.tiling.work_tiles`) with what the catalog holds over
it and the estimated seconds of each stage, plus the plan's parameters in the file's metadata. Estimates come from

* **bytes read**: per scene and asset, the STAC ``file:size`` times the share of the item's footprint the tile's
  processing box covers; where an asset has no size (Planetary Computer's items carry none) the pixels it covers at
  the asset's resolution and data type times the measured COG compression ratio. Without a catalog search
  (``estimate_scenes``) the scenes are the acquisition days over the revisit.
* **seconds**: the calibrated per-core throughputs (:class:`Calibration`, measured by ``mtg plan --calibrate``
  running real tiles of the sample region): ingest bytes read per second, segmentation pixels per second (10 m
  pixels of the processed extent, composite and inference and polygons), volume DEM bytes per second.
* **cost**: CPU- and GPU-hours at the prices of :class:`mtg.pipeline.config.PlanConfig`, output storage for
  ``storage_months``, and egress on the bytes read when the cluster is outside the data's region.

``check_plan`` compares a plan with the seconds a run measured per tile and stage (its manifest).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from mtg.pipeline.catalogs import CatalogSource, parse_time_range, resolve_source, search_items
from mtg.pipeline.config import PlanConfig, RunConfig
from mtg.pipeline.errors import MtgError
from mtg.pipeline.io.vectors import CSV_SUFFIXES, is_geoparquet, read_points, read_vector
from mtg.pipeline.linker import parse_distance
from mtg.pipeline.table_io import atomic_write, to_geoparquet
from mtg.pipeline.tiling import buffered_aoi, work_tiles

log = logging.getLogger(__name__)

#: Bytes per pixel of the asset data types the cubes read.
DTYPE_BYTES = {"uint8": 1, "uint16": 2, "int16": 2, "float32": 4}
#: The calibration shipped with the package (``mtg plan --calibrate`` on the project's 2-core CI-like machine).
DEFAULT_CALIBRATION = "plan_calibration.json"
#: Plan columns of estimated seconds, by stage.
ESTIMATE_COLUMNS = {"ingest": "est_ingest_s", "segment": "est_segment_s", "volumes": "est_volumes_s",
                    "timeline": "est_timeline_s"}


@dataclass(frozen=True)
class Calibration:
    """Per-core throughputs of the tile stages, measured on one machine.

    Attributes
    ----------
    ingest_bytes_per_s : float
        Bytes of COG input read (STAC sizes over the tile) per second.
    segment_px_per_s : float
        10 m pixels of the processed extent segmented (composite, inference, polygons) per second.
    volume_bytes_per_s : float
        Bytes of both DEM epochs (float32 cells of the processed extent) measured per second.
    output_bytes_per_px : float
        Bytes a tile folder keeps per 10 m pixel.
    cog_compression : float
        COG bytes over raw pixel bytes, for assets without ``file:size``.
    stage_overhead_s : dict
        Fixed seconds per tile of each stage (catalog search, opening stores, loading the model), fitted with the
        throughputs.
    measured : dict
        When, where and how it was measured.
    """

    ingest_bytes_per_s: float
    segment_px_per_s: float
    volume_bytes_per_s: float
    output_bytes_per_px: float
    cog_compression: float
    stage_overhead_s: dict[str, float]
    measured: dict[str, Any]


def load_calibration(path: str | None) -> Calibration:
    """The calibration in ``path``, or the one shipped with the package.

    Raises
    ------
    MtgError
        Naming the file when it is missing or lacks a field.
    """
    try:
        text = Path(path).read_text() if path else (resources.files("mtg.pipeline") / DEFAULT_CALIBRATION).read_text()
        return Calibration(**json.loads(text))
    except OSError as err:
        raise MtgError(f"cannot read the calibration file {path}: {err}") from None
    except (TypeError, json.JSONDecodeError) as err:
        raise MtgError(f"calibration file {path or DEFAULT_CALIBRATION} is not a calibration of "
                       f"`mtg plan --calibrate`: {err}") from None


def read_aoi(paths: list[str], lon_col: str = "lon", lat_col: str = "lat") -> gpd.GeoDataFrame:
    """Areas of interest from vector files (points, polygons, any CRS) and point tables (CSV, Parquet: ``lon_col``
    and ``lat_col``), in EPSG:4326, with a ``source`` column."""
    if not paths:
        raise MtgError("give the areas of interest with --aoi FILE (mine points or polygons)")
    frames = []
    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix in CSV_SUFFIXES or (suffix == ".parquet" and not is_geoparquet(path)):
            table, lon, lat = read_points(path, lon_col, lat_col)
            frame = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        else:
            frame = read_vector(path, "area-of-interest file")[["geometry"]]
        frames.append(frame.assign(source=str(path)))
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")


def years_range(years: str) -> str:
    """``"2019-2025"`` or ``"2025"`` as the ``START/END`` time range of those whole years."""
    try:
        first, _, last = years.partition("-")
        first_y, last_y = int(first), int(last or first)
    except ValueError:
        raise MtgError(f"--years {years!r} must be YEAR or FIRST-LAST, e.g. 2019-2025") from None
    if not (1000 <= first_y <= 9999 and 1000 <= last_y <= 9999):
        raise MtgError(f"--years {years!r}: years are four-digit numbers, e.g. 2019-2025")
    if last_y < first_y:
        raise MtgError(f"--years {years!r}: the last year comes before the first")
    return f"{first_y:04d}-01-01/{last_y:04d}-12-31"


def _processing_boxes(tiles: gpd.GeoDataFrame) -> tuple[list[shapely.Polygon], list[shapely.Polygon]]:
    """Each tile's processing box (with halo) in its zone CRS and, densified, in EPSG:4326."""
    zone_boxes, lonlat_boxes = [], []
    for row in tiles.itertuples():
        h = row.halo_m
        square = shapely.box(row.left - h, row.bottom - h, row.right + h, row.top + h)
        to_lonlat = Transformer.from_crs(row.epsg, 4326, always_xy=True)
        zone_boxes.append(square)
        lonlat_boxes.append(shapely.transform(square.segmentize((row.right - row.left + 2 * h) / 8),
                                              lambda c, t=to_lonlat: np.column_stack(t.transform(*c.T))))
    return zone_boxes, lonlat_boxes


def _asset_bytes(items: list, tile_zone: shapely.Polygon, epsg: int, assets: dict[str, tuple[float, str]],
                 compression: float) -> tuple[float, bool]:
    """Bytes read from ``items`` over a tile: ``file:size`` shares where given, else pixels x dtype x
    compression; and whether every asset had a size."""
    to_zone = Transformer.from_crs(4326, epsg, always_xy=True)
    total, sized = 0.0, True
    for item in items:
        footprint = shapely.transform(shapely.geometry.shape(item.geometry).segmentize(0.05),
                                      lambda c: np.column_stack(to_zone.transform(*c.T)))
        if footprint.area <= 0:
            continue
        overlap = footprint.intersection(tile_zone).area
        for key, (resolution, dtype) in assets.items():
            asset = item.assets.get(key)
            size = asset.extra_fields.get("file:size") if asset is not None else None
            if size is not None:
                total += float(size) * overlap / footprint.area
            else:
                sized = False
                total += overlap / resolution**2 * DTYPE_BYTES.get(dtype, 2) * compression
    return total, sized


def _items_by_tile(source: CatalogSource, collection: str, boxes: list[shapely.Polygon], time_range: str | None,
                   storage_options: dict[str, Any] | None) -> list[list]:
    """The items of ``collection`` intersecting each box (EPSG:4326): one read of a static catalog, one search per
    tile of a STAC API."""
    def search(bbox: tuple[float, ...]) -> list:
        try:
            return search_items(source, collection, bbox, time_range, storage_options)
        except MtgError as err:
            if "intersect bbox" in str(err):  # nothing there: a tile without data
                return []
            raise

    if source.kind == "stac-api":
        return [search(b.bounds) for b in boxes]
    union = shapely.union_all(boxes).bounds
    items = search(union)
    geoms = [shapely.geometry.shape(it.geometry) for it in items]
    tree = shapely.STRtree(geoms) if geoms else None
    found = []
    for b in boxes:
        hits = sorted(tree.query(b, predicate="intersects")) if tree is not None else []
        found.append([items[k] for k in hits])
    return found


def timeline_periods(time_range: str, period: str) -> int:
    """How many calendar periods (``year`` or ``quarter``) the ``START/END`` range touches.

    Raises
    ------
    MtgError
        When the range is open at either end.
    """
    from mtg.pipeline.timeline import FREQUENCIES

    start, stop = parse_time_range(time_range)
    if start is None or stop is None:
        raise MtgError(f"timeline.tiles: --time {time_range!r} must have a start and an end to plan the periods")
    first, last = (pd.Timestamp(t).tz_localize(None).to_period(FREQUENCIES[period]) for t in (start, stop))
    return last.ordinal - first.ordinal + 1


def segmentation_seconds(plan: gpd.GeoDataFrame) -> float:
    """The planned CPU seconds of segmentation: the tiles' ``est_segment_s`` and their timeline's (plans made before
    the timeline had a column count none)."""
    timeline = plan["est_timeline_s"].sum() if "est_timeline_s" in plan else 0.0
    return float(plan["est_segment_s"].sum() + timeline)


def make_plan(aoi: gpd.GeoDataFrame, config: RunConfig, *, catalog: str, time_range: str,
              estimate_scenes: bool = False, calibration: Calibration | None = None) -> gpd.GeoDataFrame:
    """The work tiles of ``aoi`` with what each reads and the estimated seconds of each stage.

    Parameters
    ----------
    aoi : geopandas.GeoDataFrame
        Areas of interest (:func:`read_aoi`).
    config : RunConfig
        ``plan`` (buffer, tile size, halo, revisit), ``ingest`` (resolutions, storage options).
    catalog : str
        Catalog name or URL searched for the scenes and DEM epochs over each tile.
    time_range : str
        ``START/END`` of the Sentinel-2 acquisitions.
    estimate_scenes : bool
        Do not search the catalog: scenes from the revisit, DEM epochs from ``plan.dem_epochs``.
    calibration : Calibration, optional
        Default :func:`load_calibration` of ``plan.calibration``.

    Returns
    -------
    geopandas.GeoDataFrame
        :func:`~mtg.pipeline.tiling.work_tiles` columns plus ``pixels``, ``scenes``, ``dem_items``,
        ``bytes_read``, ``bytes_source`` (``file:size``, ``estimated`` or ``revisit estimate``), ``dem_bytes``,
        ``est_ingest_s``, ``est_segment_s``, ``est_volumes_s`` (each with its fixed seconds per tile),
        ``est_cpu_s`` (the three),
        ``est_gpu_s`` (segmentation on a GPU) and ``est_output_bytes``.
    """
    cfg: PlanConfig = config.plan
    cal = calibration or load_calibration(cfg.calibration)
    buffer_m = parse_distance(cfg.buffer, "plan.buffer")
    tiles = work_tiles(buffered_aoi(aoi, buffer_m), cfg.tile_km * 1000.0, cfg.halo_m)
    res, dem_res = config.ingest.resolution, config.ingest.dem_resolution
    zone_boxes, lonlat_boxes = _processing_boxes(tiles)
    tiles["pixels"] = [int(round(b.area / res**2)) for b in zone_boxes]
    dem_cells = np.array([b.area / dem_res**2 for b in zone_boxes])
    source = resolve_source(catalog)
    refl, dem = source.reflectance, source.dem
    assets = {key: (band.resolution, "uint16") for key, band in refl.bands.items()}
    assets[refl.mask.asset] = (refl.mask.resolution, "uint8")
    if estimate_scenes:
        start, stop = parse_time_range(time_range)
        if start is None or stop is None:
            raise MtgError(f"--years or --time {time_range!r} must give a start and an end to estimate scenes")
        scenes = math.ceil(((stop - start).days + 1) / cfg.revisit_days)
        raw_per_m2 = sum(DTYPE_BYTES[dtype] / r**2 for r, dtype in assets.values())
        tiles["scenes"] = scenes
        tiles["dem_items"] = cfg.dem_epochs
        tiles["bytes_read"] = [b.area * raw_per_m2 * scenes * cal.cog_compression for b in zone_boxes]
        tiles["dem_file_bytes"] = dem_cells * 4 * cfg.dem_epochs * cal.cog_compression
        tiles["bytes_source"] = "revisit estimate"
    else:
        options = config.ingest.storage_options or None
        s2 = _items_by_tile(source, refl.id, lonlat_boxes, time_range, options)
        dems = _items_by_tile(source, dem.id, lonlat_boxes, None, options)
        tiles["scenes"] = [len(v) for v in s2]
        tiles["dem_items"] = [len(v) for v in dems]
        s2_bytes = [_asset_bytes(v, b, e, assets, cal.cog_compression) for v, b, e in
                    zip(s2, zone_boxes, tiles["epsg"])]
        dem_bytes = [_asset_bytes(v, b, e, {dem.asset: (dem_res, "float32")}, cal.cog_compression) for v, b, e in
                     zip(dems, zone_boxes, tiles["epsg"])]
        tiles["bytes_read"] = [s for s, _ in s2_bytes]
        tiles["dem_file_bytes"] = [s for s, _ in dem_bytes]
        tiles["bytes_source"] = ["file:size" if a and b else "estimated" for (_, a), (_, b) in zip(s2_bytes, dem_bytes)]
    tiles["dem_bytes"] = dem_cells * 4 * np.minimum(tiles["dem_items"].to_numpy(), 2)
    has_data = tiles["scenes"].to_numpy() > 0
    overhead = cal.stage_overhead_s
    tiles["est_ingest_s"] = overhead["ingest"] + (tiles["bytes_read"] + tiles["dem_file_bytes"]) / cal.ingest_bytes_per_s
    tiles["est_segment_s"] = overhead["segment"] + tiles["pixels"] / cal.segment_px_per_s
    tiles["est_volumes_s"] = np.where(tiles["dem_items"] >= 2,
                                      overhead["volumes"] + tiles["dem_bytes"] / cal.volume_bytes_per_s, 0.0)
    # timeline.tiles: one more segmentation per period, at the calibrated segmentation rate
    periods = timeline_periods(time_range, config.timeline.period) if config.timeline.tiles else 0
    tiles["est_timeline_s"] = periods * tiles["est_segment_s"]
    for column in ESTIMATE_COLUMNS.values():
        tiles[column] = np.where(has_data, tiles[column], 0.0)
    tiles["est_cpu_s"] = tiles[list(ESTIMATE_COLUMNS.values())].sum(axis=1)
    tiles["est_gpu_s"] = np.where(has_data, (1 + periods) * tiles["pixels"] / (cfg.gpu_segment_mpx_s * 1e6), 0.0)
    tiles["est_output_bytes"] = np.where(has_data, tiles["pixels"] * cal.output_bytes_per_px, 0.0)
    columns = [c for c in tiles.columns if c != "geometry"] + ["geometry"]
    return tiles[columns]


def plan_summary(plan: gpd.GeoDataFrame, cfg: PlanConfig, workers: int, gpus: int) -> dict[str, Any]:
    """Totals of a plan and the cost and wall time of running it on ``workers`` CPU cores and ``gpus`` GPUs.

    With GPUs, segmentation runs on them (GPU-hours) and the CPUs do ingest and volumes; without, all stages are
    CPU-hours. Wall time is the larger of the CPU and GPU shares, and at least the longest tile.
    """
    if workers < 1 or gpus < 0:
        raise MtgError(f"--workers {workers} must be at least 1 and --gpus {gpus} at least 0")
    active = plan[plan["scenes"] > 0]
    segment_s = segmentation_seconds(active)
    cpu_s = float(active["est_cpu_s"].sum()) - (segment_s if gpus else 0.0)
    gpu_s = float(active["est_gpu_s"].sum()) if gpus else 0.0
    bytes_read = float((active["bytes_read"] + active["dem_file_bytes"]).sum())
    output = float(active["est_output_bytes"].sum())
    longest = float(active["est_cpu_s"].max()) if len(active) else 0.0
    wall_s = max(cpu_s / workers, gpu_s / gpus if gpus else 0.0, longest)
    cost = {"cpu": cpu_s / 3600 * cfg.cpu_hour, "gpu": gpu_s / 3600 * cfg.gpu_hour,
            "storage": output / 1e9 * cfg.storage_gb_month * cfg.storage_months,
            "egress": bytes_read / 1e9 * cfg.egress_gb if cfg.read_egress else 0.0}
    cost["total"] = sum(cost.values())
    sources = sorted(set(plan["bytes_source"]))
    return {
        "tiles": len(plan), "tiles_with_data": len(active), "zones": int(plan["epsg"].nunique()),
        "aoi_km2": float(plan["aoi_km2"].sum()), "processed_km2": float(plan["pixels"].sum() * 1e-4),
        "scenes": int(active["scenes"].sum()), "tb_read": bytes_read / 1e12, "cpu_hours": cpu_s / 3600,
        "gpu_hours": gpu_s / 3600, "output_gb": output / 1e9, "cost_usd": cost, "workers": workers, "gpus": gpus,
        "wall_hours": wall_s / 3600,
        "estimates": {"bytes": sources, "seconds": "calibrated per-core throughputs x tile sizes",
                      "gpu": f"assumed {cfg.gpu_segment_mpx_s:g} Mpx/s per GPU (plan.gpu_segment_mpx_s)",
                      "prices": "plan.* defaults (USD), not quotes"},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The plan summary of :func:`plan_summary` as lines of text, saying which numbers are estimates."""
    cost = summary["cost_usd"]
    est = summary["estimates"]

    def num(x: float) -> str:  # three significant digits for small numbers, thousands separators for large
        return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"

    return "\n".join([
        f"tiles                {summary['tiles']:,} ({summary['tiles_with_data']:,} with scenes) in "
        f"{summary['zones']} UTM zones",
        f"area of interest     {summary['aoi_km2']:,.0f} km2 (processed with halos: {summary['processed_km2']:,.0f} km2)",
        f"scenes               {summary['scenes']:,}",
        f"read                 {num(summary['tb_read'])} TB (estimate: {', '.join(est['bytes'])})",
        f"CPU                  {num(summary['cpu_hours'])} core-hours (estimate: {est['seconds']})",
        f"GPU                  {num(summary['gpu_hours'])} GPU-hours" + (f" ({est['gpu']})" if summary["gpus"] else
                                                                         " (no GPUs: segmentation on the CPUs)"),
        f"outputs              {num(summary['output_gb'])} GB",
        f"cost                 {num(cost['total'])} USD = CPU {num(cost['cpu'])} + GPU {num(cost['gpu'])} + storage "
        f"{num(cost['storage'])} + egress {num(cost['egress'])} (prices: {est['prices']})",
        f"wall time            {num(summary['wall_hours'])} h on {summary['workers']} cores and {summary['gpus']} GPUs",
    ])


def write_plan(plan: gpd.GeoDataFrame, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write a plan GeoParquet atomically with its parameters in the file metadata."""
    return atomic_write(Path(path), lambda tmp: to_geoparquet(plan, tmp, metadata))


def read_plan(path: str | Path) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """A plan and its parameters (``catalog``, ``time``, ...).

    Raises
    ------
    MtgError
        When the file is not a plan of ``mtg plan``.
    """
    import pyarrow.parquet as pq

    from mtg.pipeline.table_io import METADATA_KEY

    path = Path(path)
    if not path.is_file():
        raise MtgError(f"plan file {path} does not exist")
    try:
        meta = json.loads((pq.read_schema(path).metadata or {}).get(METADATA_KEY, b"{}"))
        plan = gpd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types
        raise MtgError(f"plan file {path} is not readable: {err}") from None
    missing = sorted({"tile_id", "epsg", "left", "bottom", "right", "top", "halo_m", "scenes"} - set(plan.columns))
    if missing or "catalog" not in meta or "time" not in meta:
        raise MtgError(f"{path} is not a plan of `mtg plan` (missing {missing or ['catalog/time metadata']})")
    return plan, meta


def calibrate(out: str | Path, config: RunConfig, size_km: float = 12.0, tile_km: float = 6.0,
              progress: bool = True) -> Calibration:
    """Measure the per-core stage throughputs by running real tiles of a sample region; write them to ``out``.

    The sample region (``size_km``, seed 0) is planned over its own extent in ``tile_km`` tiles, and each tile is
    run as a global rerun runs it (:func:`mtg.pipeline.tile_run.run_tile`, one core). Throughputs are least-squares
    fits of each stage's seconds against the tiles' bytes or pixels, with a fixed overhead per tile and stage
    (volumes over the tiles that measured them).
    """
    from mtg.pipeline.sample import write_sample_region
    from mtg.pipeline.tile_run import run_tile, task_from_row

    with tempfile.TemporaryDirectory(prefix="mtg-calibrate-") as tmp:
        region = write_sample_region(Path(tmp) / "sample", size_km=size_km, n_dates=8)
        aoi = gpd.GeoDataFrame(geometry=[shapely.box(*region.bbox_lonlat)], crs="EPSG:4326")
        cfg = config.model_copy(update={"plan": config.plan.model_copy(update={"tile_km": tile_km, "buffer": "0m"})})
        time_range = "/".join(region.time_range)
        provisional = Calibration(1.0, 1.0, 1.0, 0.0, 1.0, {s: 0.0 for s in ESTIMATE_COLUMNS}, {})
        plan = make_plan(aoi, cfg, catalog=str(region.catalog), time_range=time_range, calibration=provisional)
        plan = plan[plan["scenes"] > 0].reset_index(drop=True)
        rows = []
        for k, row in plan.iterrows():
            record = run_tile(task_from_row(row, str(region.catalog), time_range), cfg, str(Path(tmp) / "run"))
            rows.append({**record["seconds"], "bytes_written": record["bytes_written"],
                         "computed": record["volumes"] == "computed"})
            log.log(logging.INFO if progress else logging.DEBUG, "calibration tile %d of %d: %s", k + 1, len(plan),
                    ", ".join(f"{s} {v:.2f} s" for s, v in record["seconds"].items()))
        measured = pd.DataFrame(rows)
        raw = _raw_cog_bytes(region.catalog)
    read = (plan["bytes_read"] + plan["dem_file_bytes"]).to_numpy()
    ingest_rate, overhead_ingest = _fit(read, measured["ingest"].to_numpy())
    segment_rate, overhead_segment = _fit(plan["pixels"].to_numpy(float), measured["segment"].to_numpy())
    computed = measured["computed"].to_numpy()
    if not computed.any():
        raise MtgError("no calibration tile measured volumes: the sample region is too small")
    volume_rate, overhead_volumes = _fit(plan["dem_bytes"].to_numpy()[computed], measured["volumes"].to_numpy()[computed])
    cal = Calibration(
        ingest_bytes_per_s=ingest_rate, segment_px_per_s=segment_rate, volume_bytes_per_s=volume_rate,
        output_bytes_per_px=float(measured["bytes_written"].sum() / plan["pixels"].sum()),
        cog_compression=raw, stage_overhead_s={"ingest": overhead_ingest, "segment": overhead_segment,
                                                "volumes": overhead_volumes},
        measured={"date": date.today().isoformat(), "machine": f"{platform.machine()}, {_cores()} cores",
                  "python": platform.python_version(), "command": "mtg plan --calibrate",
                  "tiles": len(plan), "sample_km": size_km, "tile_km": tile_km,
                  "seconds": {s: float(measured[s].sum()) for s in ("ingest", "segment", "volumes")}},
    )
    out = Path(out)
    atomic_write(out, lambda p: p.write_text(json.dumps(asdict(cal), indent=2) + "\n"))
    return cal


def _fit(x: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """``seconds = overhead + x / rate`` by least squares (overhead >= 0); returns ``(rate, overhead)``."""
    x = np.asarray(x, dtype=float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, overhead = np.polyfit(x, seconds, 1)
        if slope > 0 and overhead >= 0:
            return float(1.0 / slope), float(overhead)
    return float(x.sum() / max(seconds.sum(), 1e-9)), 0.0


def _raw_cog_bytes(catalog: Path) -> float:
    """COG bytes over raw pixel bytes of the sample's Sentinel-2 assets."""
    import rasterio

    files = sorted(Path(catalog).parent.glob("sentinel-2-l2a/*/*.tif"))
    raw = 0
    for f in files:
        with rasterio.open(f) as src:
            raw += src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    return float(sum(f.stat().st_size for f in files) / raw)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_plan(plan: gpd.GeoDataFrame, manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Predicted against measured seconds per stage over the tiles a run finished.

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per stage and one ``total`` row: ``predicted_s``, ``measured_s``, ``ratio`` (measured over
        predicted); and ``{"tiles": n, "ratio": total ratio}``.
    """
    done = manifest[manifest["state"] == "done"]
    merged = plan.merge(done, on="tile_id", how="inner")
    if merged.empty:
        raise MtgError("the run has no finished tiles of this plan to compare with")
    rows = []
    for stage, column in ESTIMATE_COLUMNS.items():
        predicted = float(merged[column].sum()) if column in merged else 0.0
        measured = float(merged[f"{stage}_s"].sum()) if f"{stage}_s" in merged else 0.0
        if predicted or measured:  # a stage neither planned nor run (the tiles' timeline) is left out
            rows.append({"stage": stage, "predicted_s": predicted, "measured_s": measured})
    rows.append({"stage": "total", "predicted_s": float(merged["est_cpu_s"].sum()),
                 "measured_s": float(merged[[f"{r['stage']}_s" for r in rows]].sum(axis=1).sum())})
    table = pd.DataFrame(rows)
    table["ratio"] = table["measured_s"] / table["predicted_s"]
    return table, {"tiles": len(merged), "ratio": float(table["ratio"].iloc[-1])}

