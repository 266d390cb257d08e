"""The stages of ``mtg run`` and the sample and ingest steps that the CLI commands share."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odc.geo.geom import Geometry, box

from mtg.pipeline.catalogs import CatalogSource, resolve_source
from mtg.pipeline.commodities import load_commodity_table
from mtg.pipeline.config import IngestConfig, RunConfig, SampleConfig
from mtg.pipeline.dask_cluster import DaskProgress, dask_scheduler
from mtg.pipeline.dem_epochs import dem_epoch
from mtg.pipeline.dem_inputs import Dem, read_dem
from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import aoi_geometry, bbox_geometry
from mtg.pipeline.indicators import IndicatorsResult, footprint_layers, indicators, write_site_indicators
from mtg.pipeline.ingest import Chunking, IngestResult, build_cubes, write_cubes
from mtg.pipeline.io import read_points, read_polygons, write_land_use_tables, write_sites, write_volumes
from mtg.pipeline.io.vectors import read_table
from mtg.pipeline.landuse import UNKNOWN, LandUseResult, land_use
from mtg.pipeline.link import SitesResult, link, sites_result
from mtg.pipeline.linker import parse_distance
from mtg.pipeline.report import write_report
from mtg.pipeline.results_catalog import write_results_catalog
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.segment import SegmentResult, segment_cube
from mtg.pipeline.table_io import atomic_folder
from mtg.pipeline.timeline import TimelineResult, period_layers, run_timeline
from mtg.pipeline.verify import VerifyResult, write_verification
from mtg.pipeline.volume import VolumeResult, volumes

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
            return SampleRegion(**{k: _restore(k, v, out) for k, v in recorded["region"].items()})
    log.info("writing the sample region (%.0f km x %.0f km, seed %d) to %s", cfg.size_km, cfg.size_km, cfg.seed, out)
    with atomic_folder(out) as tmp:
        region = write_sample_region(tmp, seed=cfg.seed, size_km=cfg.size_km, n_dates=cfg.n_dates, progress=progress)
    region = _relocated(region, tmp, out)
    record = {"parameters": params, "region": {k: portable_path(v, out) if isinstance(v, Path) else v
                                                for k, v in region.__dict__.items()}}
    (out / SAMPLE_MARKER).write_text(json.dumps(record, indent=2))
    return region


def _restore(key: str, value, folder: Path):  # noqa: ANN001, ANN202 - JSON values back to SampleRegion fields
    """A recorded field of the sample region: paths are recorded relative to the sample folder ``folder``."""
    if key in ("root", "catalog", "truth"):
        return (folder / value).resolve()
    return tuple(value) if isinstance(value, list) else value


def _relocated(region: SampleRegion, old: Path, new: Path) -> SampleRegion:
    fields = {k: (new / Path(v).relative_to(old) if isinstance(v, Path) else v) for k, v in region.__dict__.items()}
    return type(region)(**fields)


def ingest_aoi(cfg: IngestConfig) -> Geometry:
    """The area of interest of an ingest: ``aoi`` file or ``bbox``, exactly one of them."""
    if (cfg.aoi is None) == (cfg.bbox is None):
        raise MtgError("give exactly one of --bbox (ingest.bbox) and --aoi (ingest.aoi)")
    return aoi_geometry(cfg.aoi) if cfg.aoi else bbox_geometry(cfg.bbox)


def run_ingest(cfg: IngestConfig, client: Any = None, source: CatalogSource | None = None, aoi: Geometry | None = None,
               progress: bool = True) -> IngestResult:
    """Build the cubes of ``cfg`` and write them under ``cfg.out``, on the workers of ``client`` (a
    ``distributed.Client``) or the scheduler active in this process."""
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
    """What ``mtg run`` produced (``volumes`` is None when the run had no second DEM epoch)."""

    out: Path
    sample: SampleRegion | None
    ingest: IngestResult
    segment: SegmentResult
    timeline: TimelineResult
    sites: SitesResult
    volumes: VolumeResult | None
    landuse: LandUseResult
    indicators: IndicatorsResult
    verification: VerifyResult | None
    report: Path
    catalog: Path


def run_region(config: RunConfig, out: Path, progress: bool = True) -> tuple[CatalogSource, Geometry, IngestConfig,
                                                                            SampleRegion | None]:
    """The catalog, area of interest and ingest settings of a run; the sample region is written (or reused) only
    when the sample catalog is asked for (``ingest.catalog: sample``, the default)."""
    ingest_cfg = config.ingest.model_copy(update={"out": config.ingest.out or str(out / "cubes")})
    if ingest_cfg.catalog != "sample":
        source, aoi = resolve_source(ingest_cfg.catalog), ingest_aoi(ingest_cfg)
        if ingest_cfg.time is None:
            raise MtgError(f"give the time range of the Sentinel-2 acquisitions (--time START/END, ingest.time) for "
                           f"catalog {ingest_cfg.catalog}")
        return source, aoi, ingest_cfg, None
    region = ensure_sample(out / "sample", config.sample, progress=progress)
    source = resolve_source("sample").model_copy(update={"url": str(region.catalog)})
    aoi = ingest_aoi(ingest_cfg) if ingest_cfg.aoi or ingest_cfg.bbox else box(*region.bounds, f"EPSG:{region.epsg}")
    if ingest_cfg.time is None:
        ingest_cfg = ingest_cfg.model_copy(update={"time": "/".join(region.time_range)})
    return source, aoi, ingest_cfg, region


def _mine_points(config: RunConfig, region: SampleRegion | None, out: Path) -> dict[str, Any] | None:
    """The run's mine property points by file (named relative to the run folder ``out``,
    :func:`mtg.pipeline.run_paths.portable_path`): ``link.points``, else the sample's when the run is on the
    sample."""
    path = config.link.points or (str(region.truth / "mine_points.parquet") if region is not None else None)
    if path is None:
        log.warning("no mine property points (--points, link.points): sites get no commodities, and land use counts "
                    "all mining area as %s", UNKNOWN)
        return None
    return {portable_path(path, out): read_points(path, config.link.lon_col, config.link.lat_col)[0]}


def _reported_figures(config: RunConfig, region: SampleRegion | None) -> str | None:
    """The reported figures the run is verified against: ``verify.reported``, else the sample's (its truth
    :data:`mtg.pipeline.sample.truth.REPORTED_FIGURES`) when the run is on the sample; None for neither."""
    from mtg.pipeline.sample.truth import REPORTED_FIGURES

    if config.verify.reported:
        return config.verify.reported
    if region is not None and (region.truth / REPORTED_FIGURES).is_file():
        return str(region.truth / REPORTED_FIGURES)
    return None


def dem_pair(config: RunConfig, source: CatalogSource, aoi: Geometry, ingest: IngestResult,
             storage_options: dict[str, Any]) -> tuple[Dem, Dem] | None:
    """The two DEM epochs of the volume stage (:class:`mtg.pipeline.config.VolumeConfig`), or None (with a
    warning that says why) when the run has only one."""
    v = config.volume
    if bool(v.before) != bool(v.after):
        raise MtgError("give both DEM epochs (--dem-before and --dem-after, volume.before/after), or neither")
    if v.before:
        return tuple(dem_epoch(spec, source=source, aoi=aoi, datum=datum, storage_options=storage_options)
                     for spec, datum in ((v.before, v.before_datum), (v.after, v.after_datum)))
    import xarray as xr

    times = xr.open_zarr(ingest.dem_url, consolidated=None, storage_options=storage_options or None).sizes.get(
        "time", 1)
    if times < 2:
        log.warning("the DEM collection %s of catalog %s has one epoch over the area: no volumes. Give two epochs, "
                    "e.g. --dem-before nasadem --dem-after cop-dem-glo-30, or survey DEM files", source.dem.id,
                    source.url)
        return None
    datum = source.dem.vertical_datum
    return tuple(replace(read_dem(f"{ingest.dem_url}#{k}", storage_options), vertical_datum=datum) for k in (0, -1))


def run_countries(path: str | None, out: Path) -> Any:
    """The country boundary polygons of a run (``landuse.countries``), their source named relative to the run
    folder ``out``; None without a file."""
    if not path:
        return None
    countries = read_polygons(path)
    countries.attrs["source"] = portable_path(path, out)
    return countries


def run_pipeline(config: RunConfig, progress: bool = True) -> RunResult:
    """Run every stage over the configured catalog and area: ingest, segmentation, site linking, the yearly
    timeline of the sites, DEM-change volumes, commodity land use, site indicators (area before and after from the
    timeline's first and last periods unless footprint files are given), verification (with a table of reported figures), the HTML report
    and the STAC catalog of the results.

    Each stage is the dataset-level function of :mod:`mtg.api`, read from and written to the run folder with
    :mod:`mtg.pipeline.io`, and every dask computation of the run goes to one scheduler (``dask``).
    """
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source, aoi, ingest_cfg, region = run_region(config, out, progress)
    options = ingest_cfg.storage_options
    d = config.dask
    with dask_scheduler(d.scheduler, d.workers, d.memory_limit) as client:
        result = run_ingest(ingest_cfg, client, source=source, aoi=aoi, progress=progress)
        footprints = segment_cube(result.reflectance_url, out / "segment", storage_options=options, client=client,
                                  progress=progress, options=config.segment)
        start = time.perf_counter()
        polygons = {portable_path(p, out): read_polygons(p) for p in (footprints.polygons, *config.link.polygons)}
        table = load_commodity_table(config.link.commodity_table) if config.link.commodity_table else None
        linked = link(polygons, _mine_points(config, region, out), commodity_table=table, options=config.link)
        if table is not None:
            linked.metadata["commodity_table"] = portable_path(config.link.commodity_table, out)
        sites = sites_result(linked, *write_sites(linked, out / "sites" / "sites.parquet"),
                             seconds=time.perf_counter() - start)
        log.info("linked %d mine polygons and %d mine points into %d sites", sites.n_polygons, sites.n_points,
                 sites.n_sites)
        timeline = run_timeline(result.reflectance_url, out / "timeline", sites=sites.out, storage_options=options,
                                client=client, progress=progress, segment_options=config.segment,
                                options=config.timeline)
        volume_result, measured = None, None
        pair = dem_pair(config, source, aoi, result, options)
        if pair is not None:
            pair = tuple(replace(dem, source=portable_path(dem.source, out)) for dem in pair)
            start = time.perf_counter()
            measured = volumes(*pair, linked, options=config.volume)
            write_volumes(measured, out / "volumes")
            volume_result = VolumeResult(out=out / "volumes", n_sites=len(measured.site_volumes),
                                         n_deposits=len(measured.deposits), threshold_m=measured.threshold_m,
                                         nmad_m=measured.nmad_m, range_m=measured.range_m,
                                         coregistration=measured.coregistration,
                                         seconds=time.perf_counter() - start)
            log.info("volumes of %d sites and %d waste deposits in %s", volume_result.n_sites,
                     volume_result.n_deposits, volume_result.out)
        lu = config.landuse
        countries = run_countries(lu.countries, out)
        tables = land_use(linked, countries=countries, options=lu)
    tables.summary["sites"] = portable_path(sites.out, out)
    landuse = LandUseResult(out=out / "landuse", summary=tables.summary,
                            files=write_land_use_tables(tables, out / "landuse", {**linked.metadata,
                                                                                  "sites": tables.summary["sites"]}),
                            sensitivity=tables.sensitivity)
    log.info("land use: %.3f km2 in total, %.0f %% linked to a commodity", landuse.summary["total_km2"],
             100 * (landuse.summary["linked_share"] or 0.0))
    ind = config.indicators
    start = time.perf_counter()
    if ind.footprints_before or ind.footprints_after:
        before = footprint_layers(ind.footprints_before, linked.members, out)
        after = footprint_layers(ind.footprints_after, linked.members, out)
    else:
        before, after = period_layers(timeline, out)
    table = indicators(linked, site_volumes=None if measured is None else measured.site_volumes,
                       waste_deposits=None if measured is None else measured.deposits,
                       footprints_before=before, footprints_after=after,
                       timeline=read_table(timeline.summary, "site timeline"), countries=countries,
                       country_col=lu.country_col)
    parquet, csv = write_site_indicators(table, out / "indicators")
    indicator_result = IndicatorsResult(parquet=parquet, csv=csv, n_sites=len(table),
                                        seconds=time.perf_counter() - start)
    verification = None
    reported = _reported_figures(config, region)
    if reported:
        vc = config.verify
        verification = write_verification(reported, parquet, out / "verification", tolerance=vc.tolerance,
                                          sigma=vc.sigma,
                                          max_distance_m=parse_distance(vc.max_distance, "verify.max_distance"))
        log.info("verification of reported figures: %s", verification.counts)
    report = write_report(out)  # before the catalog, which records the report's checksum
    catalog = write_results_catalog(out)
    log.info("report %s and STAC catalog of the results %s", report, catalog)
    return RunResult(out=out, sample=region, ingest=result, segment=footprints, timeline=timeline, sites=sites,
                     volumes=volume_result,
                     landuse=landuse, indicators=indicator_result, verification=verification, report=report,
                     catalog=catalog)
