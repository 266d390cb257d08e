"""The stages of ``mtg run`` and the sample and ingest steps that the CLI commands share."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from odc.geo.geom import Geometry, box

from mtg.pipeline.catalogs import CatalogSource, resolve_source
from mtg.pipeline.config import IngestConfig, RunConfig, SampleConfig
from mtg.pipeline.dask_cluster import DaskProgress, dask_scheduler
from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import aoi_geometry, bbox_geometry
from mtg.pipeline.ingest import Chunking, IngestResult, build_cubes, write_cubes
from mtg.pipeline.indicators import IndicatorsResult, run_indicators
from mtg.pipeline.landuse import LandUseResult, write_land_use
from mtg.pipeline.link import SitesResult, link_sites, parse_distance
from mtg.pipeline.report import write_report
from mtg.pipeline.results_catalog import write_results_catalog
from mtg.pipeline.segment import SegmentResult, segment_cube
from mtg.pipeline.table_io import atomic_folder
from mtg.pipeline.verify import VerifyResult, write_verification
from mtg.pipeline.volume import VolumeResult, measure_volumes

if TYPE_CHECKING:
    from mtg.pipeline.sample import SampleRegion

log = logging.getLogger(__name__)

SAMPLE_MARKER = "sample.json"


def ensure_sample(out: Path, cfg: SampleConfig, progress: bool = True) -> SampleRegion:
    """Write the sample region into ``out``, or reuse it when ``out`` already holds the same complete sample.

    The region is written to a temporary folder beside ``out`` and moved into place when complete, so
    ``out`` never holds half a sample; the marker ``out/sample.json`` records the parameters.
    """
    from mtg.pipeline.sample import SampleRegion, write_sample_region

    out = out.resolve()
    marker = out / SAMPLE_MARKER
    params = cfg.model_dump()
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("parameters") == params:
            log.info("reusing the sample region in %s (seed %d)", out, cfg.seed)
            return SampleRegion(**{k: _restore(k, v) for k, v in recorded["region"].items()})
    log.info("writing the sample region (%.0f km x %.0f km, seed %d) to %s", cfg.size_km, cfg.size_km, cfg.seed, out)
    with atomic_folder(out) as tmp:
        region = write_sample_region(tmp, seed=cfg.seed, size_km=cfg.size_km, n_dates=cfg.n_dates, progress=progress)
    region = _relocated(region, tmp, out)
    record = {"parameters": params, "region": {k: str(v) if isinstance(v, Path) else v
                                                for k, v in region.__dict__.items()}}
    (out / SAMPLE_MARKER).write_text(json.dumps(record, indent=2))
    return region


def _restore(key: str, value):  # noqa: ANN001, ANN202 - JSON values back to SampleRegion field types
    return Path(value) if key in ("root", "catalog", "truth") else tuple(value) if isinstance(value, list) else value


def _relocated(region: SampleRegion, old: Path, new: Path) -> SampleRegion:
    fields = {k: (new / Path(v).relative_to(old) if isinstance(v, Path) else v) for k, v in region.__dict__.items()}
    return type(region)(**fields)


def ingest_aoi(cfg: IngestConfig) -> Geometry:
    """The area of interest of an ingest: ``aoi`` file or ``bbox``, exactly one of them."""
    if (cfg.aoi is None) == (cfg.bbox is None):
        raise MtgError("give exactly one of --bbox (ingest.bbox) and --aoi (ingest.aoi)")
    return aoi_geometry(cfg.aoi) if cfg.aoi else bbox_geometry(cfg.bbox)


def run_ingest(cfg: IngestConfig, dask_cfg, source: CatalogSource | None = None, aoi: Geometry | None = None,
               progress: bool = True) -> IngestResult:
    """Build the cubes of ``cfg`` and write them under ``cfg.out`` on the configured dask scheduler."""
    if not cfg.out:
        raise MtgError("ingest needs --out (ingest.out): a folder or URL for the Zarr cubes")
    source = source or resolve_source(cfg.catalog)
    if cfg.dem_references and source.signing != "none":
        raise MtgError(
            f"DEM references (ingest.dem_references) cannot be made for catalog {source.name!r}: its hrefs need "
            "signing, and signed URLs expire inside a reference file"
        )
    aoi = aoi or ingest_aoi(cfg)
    chunking = Chunking(time=cfg.chunks.time, space=cfg.chunks.space)
    with dask_scheduler(dask_cfg.scheduler, dask_cfg.workers, dask_cfg.memory_limit) as client:
        cubes = build_cubes(
            source, aoi, cfg.time, loader=cfg.loader, crs=cfg.crs, resolution=cfg.resolution,
            dem_resolution=cfg.dem_resolution, dem_time=cfg.dem_time, chunking=chunking,
            storage_options=cfg.storage_options,
        )
        log.info("reflectance cube %s, DEM cube %s (lazy; reading starts with the write)",
                 dict(cubes.reflectance.sizes), dict(cubes.dem.sizes))
        result = write_cubes(cubes, cfg.out, chunking=chunking, storage_options=cfg.storage_options,
                             overwrite=cfg.overwrite, compute=DaskProgress(client, enabled=progress))
    if cfg.dem_references:
        _write_dem_references(source, cubes.dem_items, cfg)
    return result


def _write_dem_references(source: CatalogSource, dem_items, cfg: IngestConfig) -> str:
    from mtg.pipeline.storage import join
    from mtg.pipeline.virtual_dem import write_references

    asset = source.dem.asset
    url = join(cfg.out, "dem_references.json")
    write_references([it.assets[asset].href for it in dem_items], url,
                     times=[it.datetime.replace(tzinfo=None).isoformat() for it in dem_items],
                     storage_options=cfg.storage_options)
    log.info("wrote virtual Zarr references to the DEM tiles in place: %s", url)
    return url


@dataclass
class RunResult:
    """What ``mtg run`` produced."""

    out: Path
    sample: SampleRegion
    ingest: IngestResult
    segment: SegmentResult
    sites: SitesResult
    volumes: VolumeResult
    landuse: LandUseResult
    indicators: IndicatorsResult
    verification: VerifyResult | None
    report: Path
    catalog: Path


def run_pipeline(config: RunConfig, progress: bool = True) -> RunResult:
    """Run every stage on the configured region: sample, ingest, segmentation, site linking, DEM-change volumes,
    commodity land use, site indicators, verification (with a table of reported figures), the HTML report and the
    STAC catalog of the results."""
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    region = ensure_sample(out / "sample", config.sample, progress=progress)
    ingest_cfg = config.ingest.model_copy(update={"out": config.ingest.out or str(out / "cubes")})
    if ingest_cfg.catalog == "sample":
        source = resolve_source("sample").model_copy(update={"url": str(region.catalog)})
        aoi = box(*region.bounds, f"EPSG:{region.epsg}")
        if ingest_cfg.time is None:
            ingest_cfg = ingest_cfg.model_copy(update={"time": "/".join(region.time_range)})
    else:
        source, aoi = resolve_source(ingest_cfg.catalog), ingest_aoi(ingest_cfg)
    result = run_ingest(ingest_cfg, config.dask, source=source, aoi=aoi, progress=progress)
    s, d = config.segment, config.dask
    with dask_scheduler(d.scheduler, d.workers, d.memory_limit) as client:
        footprints = segment_cube(
            result.reflectance_url, out / "segment", model=s.model, threshold=s.threshold,
            min_area_m2=s.min_area_m2, simplify_m=s.simplify_m, tile=s.tile, overlap=s.overlap, batch=s.batch,
            chunk=s.chunk, device=s.device, time_range=s.time, storage_options=ingest_cfg.storage_options,
            client=client, progress=progress)
    lu = config.landuse
    h_max = parse_distance(lu.h_max or config.link.cut, "landuse.h_max")
    levels = [parse_distance(v, "landuse.levels") for v in lu.levels]
    sites = link_sites([footprints.polygons], region.truth / "mine_points.parquet",
                       out / "sites" / "sites.parquet", cut=h_max, linkage=config.link.linkage,
                       commodity_table=config.link.commodity_table, levels=levels, choose_cut=lu.choose_cut)
    log.info("linked %d mine polygons and %d mine points into %d sites", sites.n_polygons, sites.n_points,
             sites.n_sites)
    dem = str(Path(ingest_cfg.out) / "dem.zarr")
    v = config.volume
    volumes = measure_volumes(f"{dem}#0", f"{dem}#-1", sites.out, out / "volumes", coregister=v.coregister,
                              tilt=v.tilt, threshold_nmad=v.threshold_nmad, threshold_m=v.threshold_m,
                              void_policy=v.void_policy, min_deposit_m2=v.min_deposit_m2,
                              storage_options=ingest_cfg.storage_options)
    log.info("volumes of %d sites and %d waste deposits in %s", volumes.n_sites, volumes.n_deposits, volumes.out)
    landuse = write_land_use(sites.out, out / "landuse", countries=lu.countries, country_col=lu.country_col)
    log.info("land use: %.3f km2 in total, %.0f %% linked to a commodity", landuse.summary["total_km2"],
             100 * landuse.summary["linked_share"])
    ind = config.indicators
    indicators = run_indicators(out, countries=lu.countries, country_col=lu.country_col,
                                footprints_before=ind.footprints_before, footprints_after=ind.footprints_after)
    verification = None
    if config.verify.reported:
        vc = config.verify
        verification = write_verification(vc.reported, indicators.parquet, out / "verification",
                                          tolerance=vc.tolerance, sigma=vc.sigma,
                                          max_distance_m=parse_distance(vc.max_distance, "verify.max_distance"))
        log.info("verification of reported figures: %s", verification.counts)
    report = write_report(out)  # before the catalog, which records the report's checksum
    catalog = write_results_catalog(out)
    log.info("report %s and STAC catalog of the results %s", report, catalog)
    return RunResult(out=out, sample=region, ingest=result, segment=footprints, sites=sites, volumes=volumes,
                     landuse=landuse, indicators=indicators, verification=verification, report=report,
                     catalog=catalog)
