"""A STAC catalog of a run's results (``mtg publish RUN_DIR``), to share them and load them with pystac.

``RUN_DIR/stac/catalog.json`` is a self-contained catalog: every link and asset href is relative, so the run
folder can be copied or uploaded whole. One item per output (sites, site indicators, land use, volumes, waste
deposits, elevation change, segmentation, verification, the report, the datacubes), holding only the files that
exist. Each asset has its media type, roles, ``file:size`` and ``file:checksum`` (STAC file extension v2.1.0).

Media types: ``application/vnd.apache.parquet`` (registered with IANA in 2024; ``application/x-parquet`` is its
deprecated alias), ``application/vnd.zarr; version=3`` for Zarr stores (STAC best practices), ``text/csv``,
``application/json`` and ``text/html``.

Checksums are multihashes of SHA2-256 in hex (prefix ``1220``). For a file, the hash is over its bytes. A Zarr
store is a folder, hashed through its manifest: one line ``<sha256 hex of the file>  <path in the store>`` per
file, sorted bytewise by path, which is exactly what ``sha256sum`` prints, so in a shell::

    cd dh.zarr && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum

gives the digest after ``1220``; ``file:size`` of a store is the total size of its files. Geometry and bbox of
an item: the union of its spatial assets' extents (GeoParquet bounds; Zarr raster bounds), or the sites' extent
for tables, JSON and HTML; both null when there is none (a run that found no sites). Time:
``start_datetime``/``end_datetime`` from the two DEM epochs of the volume stage, else the time the sites were
written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.file import FileExtension
from shapely.geometry import box, mapping

from mtg.pipeline.errors import MtgError
from mtg.pipeline.report_figures import open_store
from mtg.pipeline.io.vectors import read_table
from mtg.pipeline.run_paths import ABSOLUTE, URL, is_absolute_local
from mtg.pipeline.table_io import atomic_folder

log = logging.getLogger(__name__)

STAC_DIR = "stac"
SHA256_MULTIHASH = "1220"
MEDIA_TYPES = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv", ".json": "application/json",
               ".html": "text/html", ".zarr": "application/vnd.zarr; version=3"}


@dataclass(frozen=True)
class ItemSpec:
    """One item of the catalog: id, title, description and its assets as (path in the run, key, roles)."""

    id: str
    title: str
    description: str
    assets: tuple[tuple[str, str, tuple[str, ...]], ...]


ITEMS = (
    ItemSpec("sites", "Mining sites", "Sites linked from mapped mine footprints and mine inventory points, with their "
             "members (GeoParquet, EPSG:4326).",
             (("sites/sites.parquet", "sites", ("data",)), ("sites/sites_members.parquet", "members", ("metadata",)))),
    ItemSpec("site-indicators", "Site indicators", "Per-site area, commodities, country, volumes with 1-sigma errors, "
             "waste deposits and mining probability.",
             (("indicators/site_indicators.parquet", "indicators", ("data",)),
              ("indicators/site_indicators.csv", "indicators-csv", ("data",)))),
    ItemSpec("land-use", "Land use by commodity", "Mining land attributed to commodities and countries, and the "
             "linked/unlinked summary.",
             tuple((f"landuse/landuse_by_{name}.{ext}", f"{name.replace('_', '-')}-{ext}", ("data",))
                   for name in ("commodity", "country", "commodity_country") for ext in ("parquet", "csv"))
             + (("landuse/summary.json", "summary", ("metadata",)),)),
    ItemSpec("site-volumes", "Volumes per site", "Excavated, deposited and net volume per site between two DEM epochs, "
             "with 1-sigma errors and the co-registration record.",
             (("volumes/site_volumes.parquet", "volumes", ("data",)),
              ("volumes/coregistration.json", "coregistration", ("metadata",)))),
    ItemSpec("waste-deposits", "Extractive-waste deposits", "Deposit polygons with area, thickness and volume.",
             (("volumes/waste_deposits.parquet", "deposits", ("data",)),)),
    ItemSpec("elevation-change", "Elevation change", "Co-registered elevation change (later minus earlier DEM), metres.",
             (("volumes/dh.zarr", "dh", ("data",)),)),
    ItemSpec("segmentation", "Mine segmentation", "Mining probability raster and the mine polygons drawn from it.",
             (("segment/probability.zarr", "probability", ("data",)),
              ("segment/mine_polygons.parquet", "polygons", ("data",)),
              ("segment/segment.json", "summary", ("metadata",)))),
    ItemSpec("timeline", "Mining over time", "Yearly (or quarterly) mining probability and decoded footprints, "
             "per-site series of area with its uncertainty, onset, expansion, new and revegetated area, and the last "
             "period's change.",
             (("timeline/timeline.zarr", "timeline", ("data",)),
              ("timeline/site_series.parquet", "series", ("data",)),
              ("timeline/site_timeline.parquet", "sites", ("data",)),
              ("timeline/period_footprints.parquet", "footprints", ("data",)),
              ("timeline/change.parquet", "change", ("data",)),
              ("timeline/timeline.json", "summary", ("metadata",)))),
    ItemSpec("verification", "Verification", "Checks of the results against reference data, with flags.",
             (("verification/verification.parquet", "verification", ("data",)),
              ("verification/verification.csv", "verification-csv", ("data",)))),
    ItemSpec("report", "Run report", "Self-contained HTML report: map, charts, tables and provenance.",
             (("report.html", "report", ("overview",)),)),
    ItemSpec("datacubes", "Input datacubes", "Cloud-masked Sentinel-2 reflectance and DEM epochs as ingested.",
             (("cubes/reflectance.zarr", "reflectance", ("data",)), ("cubes/dem.zarr", "dem", ("data",)),
              ("cubes/ingest.json", "ingest", ("metadata",)))),
)


def file_checksum(path: Path) -> tuple[str, int]:
    """Multihash (SHA2-256, hex) and size in bytes of a file, or of a folder through its manifest (module docstring)."""
    if path.is_dir():
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
        manifest = "".join(f"{_sha256(p)}  {name}\n" for name, p in files)
        return SHA256_MULTIHASH + hashlib.sha256(manifest.encode()).hexdigest(), sum(p.stat().st_size for _, p in files)
    return SHA256_MULTIHASH + _sha256(path), path.stat().st_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_results_catalog(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/stac/catalog.json``, the self-contained STAC catalog of the run's outputs.

    Parameters
    ----------
    run_dir : str or Path
        Run folder of ``mtg run``; needs ``sites/sites.parquet`` (for the extent), other outputs are optional.

    Returns
    -------
    Path
        The catalog file. The catalog is written to a temporary folder and moved into place.
    """
    run = Path(run_dir).resolve()
    sites_path = run / "sites" / "sites.parquet"
    if not sites_path.exists():
        raise MtgError(f"{sites_path} does not exist: a results catalog needs the run's sites (`mtg run` first)")
    sites_bounds = _frame_bounds(read_table(sites_path, "sites"))
    times = _run_times(run, sites_path)
    catalog = pystac.Catalog(id=f"mtg-results-{run.name}", title=f"mine-the-gap results: {run.name}",
                             description="Site-level mining indicators of one mine-the-gap run: sites, indicators, "
                                         "land use, volumes, waste deposits, rasters and the report.")
    for spec in ITEMS:
        present = [(run / rel, key, roles) for rel, key, roles in spec.assets if (run / rel).exists()]
        if present:
            catalog.add_item(_item(spec, present, sites_bounds, times))
    out = run / STAC_DIR
    with atomic_folder(out) as tmp:
        catalog.normalize_hrefs(str(tmp))
        catalog.make_all_asset_hrefs_relative()
        catalog.save(pystac.CatalogType.SELF_CONTAINED)
    log.info("wrote the STAC catalog of the results %s (%d items)", out / "catalog.json", len(list(catalog.get_items())))
    return out / "catalog.json"


def _item(spec: ItemSpec, assets: list[tuple[Path, str, tuple[str, ...]]], sites_bounds: tuple[float, ...] | None,
          times: dict[str, datetime | None]) -> pystac.Item:
    """One item; with no spatial asset and no sites (a run that found none) its geometry and bbox are null."""
    extents = [b for path, _, _ in assets if (b := _bounds(path)) is not None] or (
        [sites_bounds] if sites_bounds is not None else [])
    bbox = [min(b[0] for b in extents), min(b[1] for b in extents), max(b[2] for b in extents),
            max(b[3] for b in extents)] if extents else None
    item = pystac.Item(id=spec.id, geometry=mapping(box(*bbox)) if bbox else None, bbox=bbox,
                       datetime=times["datetime"],
                       start_datetime=times["start"], end_datetime=times["end"],
                       properties={"title": spec.title, "description": spec.description,
                                   "created": datetime.now(UTC).isoformat(timespec="seconds")})
    for path, key, roles in assets:
        checksum, size = file_checksum(path)
        asset = pystac.Asset(href=str(path), title=path.name, media_type=MEDIA_TYPES.get(path.suffix), roles=list(roles))
        item.add_asset(key, asset)
        file_ext = FileExtension.ext(asset, add_if_missing=True)
        file_ext.checksum, file_ext.size = checksum, size
    return item


def _bounds(path: Path) -> tuple[float, ...] | None:
    """Lon/lat bounds of a GeoParquet file or a Zarr raster; ``None`` for other files or unreadable ones."""
    try:
        if path.suffix == ".zarr":
            return _raster_bounds(path)
        if path.suffix == ".parquet":
            import geopandas as gpd

            return _frame_bounds(gpd.read_parquet(path))
    except (ValueError, KeyError, OSError) as err:  # plain Parquet without geometry, a store without x/y
        log.debug("no extent from %s: %s", path, err)
    return None


def _frame_bounds(frame) -> tuple[float, ...] | None:  # noqa: ANN001 - a GeoDataFrame
    """Lon/lat bounds of a GeoDataFrame's geometries and of its ``lon``/``lat`` columns when it has them (sites of
    points only have no geometry, only a location); ``None`` without a CRS or without any of them."""
    import numpy as np

    if frame.crs is None:
        return None
    x0, y0, x1, y1 = frame.to_crs(4326).total_bounds
    xs, ys = [x0, x1], [y0, y1]
    if "lon" in frame.columns and "lat" in frame.columns:
        xs += list(frame["lon"].to_numpy(dtype=np.float64, na_value=np.nan))
        ys += list(frame["lat"].to_numpy(dtype=np.float64, na_value=np.nan))
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    return (float(xs[ok].min()), float(ys[ok].min()), float(xs[ok].max()), float(ys[ok].max())) if ok.any() else None


def _raster_bounds(path: Path) -> tuple[float, ...] | None:
    from rasterio.warp import transform_bounds

    ds = open_store(path)
    if ds.rio.crs is None or "x" not in ds.coords or "y" not in ds.coords:
        return None
    return tuple(transform_bounds(ds.rio.crs, "EPSG:4326", *ds.rio.bounds(), densify_pts=21))


def _run_times(run: Path, sites_path: Path) -> dict[str, datetime | None]:
    """Start and end from the DEM epochs of the volume stage, else the time the sites were written."""
    coreg_path = run / "volumes" / "coregistration.json"
    if coreg_path.exists():
        coreg = json.loads(coreg_path.read_text())
        if coreg.get("before_date") and coreg.get("after_date"):
            start, end = (datetime.fromisoformat(coreg[k]).replace(tzinfo=UTC)
                          for k in ("before_date", "after_date"))
            return {"datetime": None, "start": start, "end": end}
    return {"datetime": datetime.fromtimestamp(sites_path.stat().st_mtime, tz=UTC), "start": None, "end": None}


def verify_results_catalog(catalog_path: str | Path) -> int:
    """Check a results catalog against its files: core STAC schemas, every asset present, sizes and checksums, and
    that the run folder can move: every asset href is relative and inside the run folder, and no output holds an
    absolute local path (:func:`absolute_paths`).

    The core schemas ship with pystac, so this works offline; the file-extension fields are checked by recomputing
    them. Returns the number of assets checked; raises :class:`MtgError` naming every asset that does not match.
    """
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    path = Path(catalog_path)
    if path.is_dir():
        path = path / "catalog.json"
    if not path.exists():
        raise MtgError(f"{path} does not exist: write the results catalog with `mtg publish RUN_DIR` first")
    catalog = pystac.Catalog.from_file(str(path))
    validator = JsonSchemaSTACValidator()
    problems: list[str] = []
    checked = 0
    for obj in (catalog, *catalog.get_items(recursive=True)):
        try:
            validator.validate_core(obj.to_dict(), obj.STAC_OBJECT_TYPE, pystac.get_stac_version(), obj.get_self_href())
        except pystac.STACValidationError as err:
            problems.append(f"{obj.id}: {err}")
    run = path.resolve().parent.parent
    for item in catalog.get_items(recursive=True):
        for key, asset in item.assets.items():
            checked += 1
            problems.extend(f"{item.id}/{key}: {p}" for p in _href_problems(asset, run))
            problems.extend(f"{item.id}/{key}: {p}" for p in _asset_problems(asset))
    if problems:
        raise MtgError(f"the results catalog {path} does not match its files: " + "; ".join(problems))
    return checked


def _href_problems(asset: pystac.Asset, run: Path) -> list[str]:
    """An href that is not relative, or that leads out of the run folder ``run``."""
    if URL.match(asset.href) or is_absolute_local(asset.href):
        return [f"href {asset.href} is not relative to the catalog"]
    if not Path(asset.get_absolute_href()).resolve().is_relative_to(run):
        return [f"href {asset.href} leads out of the run folder {run}"]
    return []


def absolute_paths(path: Path, limit: int = 3) -> list[str]:
    """Absolute local paths (:func:`mtg.pipeline.run_paths.is_absolute_local`) held by an output: string values of
    a JSON file (and of the ``zarr.json`` metadata of a Zarr store), of the report's data block, the cells of a CSV
    file, and the string columns and schema metadata of a Parquet file. At most ``limit`` are returned."""
    found: list[str] = []
    if path.is_dir():
        for meta in sorted(path.rglob("zarr.json")):
            found += [f"{meta.relative_to(path).as_posix()}: {v}" for v in _json_paths(json.loads(meta.read_text()))]
    elif path.suffix == ".json":
        found = _json_paths(json.loads(path.read_text(encoding="utf-8")))
    elif path.suffix == ".html":
        block = re.search(r'<script type="application/json" id="mtg-data">(.*?)</script>',
                          path.read_text(encoding="utf-8"), re.S)
        found = _json_paths(json.loads(block.group(1))) if block else []
    elif path.suffix == ".csv":
        import pandas as pd

        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        found = [v for column in table.columns for v in table[column][table[column].str.match(ABSOLUTE.pattern)]]
    elif path.suffix == ".parquet":
        found = _parquet_paths(path)
    return found[:limit]


def _json_paths(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _json_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _json_paths(v)]
    return [value] if isinstance(value, str) and is_absolute_local(value) else []


def _parquet_paths(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    found = [p for v in (table.schema.metadata or {}).values() for p in _json_paths(_decoded(v))]
    for column in table.columns:
        values = column
        while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            hits = pc.filter(values, pc.fill_null(pc.match_substring_regex(values, ABSOLUTE.pattern), False))
            found += hits.to_pylist()
    return found


def _decoded(raw: bytes) -> Any:
    """A Parquet metadata value: JSON when it parses, else its text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _asset_problems(asset: pystac.Asset) -> list[str]:
    href = Path(asset.get_absolute_href())
    if not href.exists():
        return [f"{href} is missing"]
    absolute = absolute_paths(href)
    problems = [f"{href} holds absolute local paths, which do not move with the run folder: "
                + ", ".join(absolute)] if absolute else []
    recorded: dict[str, Any] = asset.extra_fields
    checksum, size = file_checksum(href)
    if recorded.get("file:checksum") != checksum:
        problems.append(f"checksum of {href} is {checksum}, the catalog says {recorded.get('file:checksum')}")
    if recorded.get("file:size") != size:
        problems.append(f"size of {href} is {size} bytes, the catalog says {recorded.get('file:size')}")
    return problems
