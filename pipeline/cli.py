"""The ``mtg`` command line."""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rasterio.errors import NotGeoreferencedWarning
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mtg.pipeline.catalogs import known_sources
from mtg.pipeline.config import load_config, with_overrides
from mtg.pipeline.errors import MtgError, describe, one_line
from mtg.pipeline.run_lock import output_lock
from mtg.pipeline.storage import parse_storage_options

app = typer.Typer(help="mine-the-gap: satellite Earth observation to site-level mining indicators.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)  # logs, progress and errors
report = Console(soft_wrap=True)  # where the outputs are, on standard output

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Run-config file (YAML or TOML).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    help="Dask scheduler: threads (default), local (a LocalCluster), local-cuda (a LocalCUDACluster, one worker per "
         "GPU), tcp://HOST:PORT, gateway, or kubernetes (a DaskCluster from DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC).")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Workers for --scheduler local or gateway.")]
MemoryOpt = Annotated[Optional[str], typer.Option(help="Memory limit per LocalCluster worker, e.g. 2GiB.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    help="Model folder from mtg train (segment.model; default the model shipped in the package).")]
ChunkOpt = Annotated[Optional[int], typer.Option(help="Side of the dask inference blocks in pixels.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto (CUDA where available), cpu or cuda.")]
CubeStorageOpt = Annotated[Optional[str], typer.Option(help="fsspec storage options (JSON) for a remote cube.")]
BboxOpt = Annotated[Optional[str], typer.Option(help="min_lon,min_lat,max_lon,max_lat (EPSG:4326).")]
AoiOpt = Annotated[Optional[str], typer.Option(help="Vector file of the area of interest (any CRS).")]
TimeOpt = Annotated[Optional[str], typer.Option(help="START/END of the Sentinel-2 acquisitions.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    # odc-stac reprojects 20 m bands through in-memory rasters that GDAL calls "not georeferenced": harmless.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    for noisy in ("distributed", "botocore", "aiobotocore", "s3fs", "fsspec", "rasterio", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # urllib3 warns once per retry of a connection (STAC APIs): the one-line error at the end says what failed
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _environment_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the environment, not the code, failed: files, disks, networks, object storage."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # botocore comes with s3fs, an optional dependency for object storage
        pass
    return tuple(errors)


def _user_errors(func):
    """Report :class:`MtgError` and environment errors (files, disks, networks, storage: :func:`_environment_errors`)
    as one clear line and exit with status 2 instead of a traceback.

    An environment error is named with the exceptions it was raised from (:func:`mtg.pipeline.errors.describe`):
    "no space left on device" and the file, "connection refused" and the endpoint.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MtgError as err:
            console.print(f"[bold red]error:[/] {escape(one_line(str(err)))}")
            raise typer.Exit(2) from None
        except _environment_errors() as err:
            console.print(f"[bold red]error:[/] {escape(describe(err))}")
            raise typer.Exit(2) from None

    return wrapper


def _bbox(text: Optional[str]) -> Optional[tuple[float, float, float, float]]:
    """``--bbox "min_lon,min_lat,max_lon,max_lat"`` as four numbers, checked (:func:`~mtg.pipeline.grid.bbox_geometry`).

    Raises
    ------
    MtgError
        Naming the text when it is not four numbers, or the box is not a non-empty lon/lat box.
    """
    from mtg.pipeline.grid import bbox_geometry

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise MtgError(f"--bbox {text!r} must be four numbers min_lon,min_lat,max_lon,max_lat")
    bbox_geometry(values)
    return values


@app.command()
@_user_errors
def sample(
    out: Annotated[Path, typer.Option(help="Folder for the sample region.")] = Path("mtg-run/sample"),
    seed: Annotated[Optional[int], typer.Option(help="Random seed (sample.seed).")] = None,
    size_km: Annotated[Optional[float], typer.Option(help="Side of the square region in km (sample.size_km).")] = None,
    n_dates: Annotated[Optional[int], typer.Option(help="Sentinel-2 acquisitions (sample.n_dates).")] = None,
    world: Annotated[Optional[int], typer.Option(
        help="Write the sample world instead: N districts over the globe (1-6; 4 or more cover three UTM zones, both "
             "hemispheres, a zone boundary and a district above 60 degrees); --size-km is then each district's "
             "side (default 8).")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the embedded sample region (or, with --world N, the sample world): Sentinel-2 L2A-like COGs, two DEM
    epochs, a STAC catalog and truth."""
    from mtg.pipeline.run import ensure_sample

    _setup_logging(quiet)
    if world is not None:
        from mtg.pipeline.sample.world import ensure_sample_world

        cfg = with_overrides(load_config(config), {"sample.seed": seed, "sample.n_dates": n_dates})
        written = ensure_sample_world(out, world, seed=cfg.sample.seed, size_km=size_km or 8.0,
                                      n_dates=cfg.sample.n_dates, progress=not quiet)
        report.print(f"sample world written ({len(written.districts)} districts, {written.time_range[0]} to "
                     f"{written.time_range[1]}): STAC catalog [bold]{written.catalog}[/], mine points "
                     f"{written.truth / 'mine_points.parquet'}, ground truth {written.truth}")
        return
    cfg = with_overrides(load_config(config), {"sample.seed": seed, "sample.size_km": size_km,
                                               "sample.n_dates": n_dates})
    region = ensure_sample(out, cfg.sample, progress=not quiet)
    report.print(f"sample region written: STAC catalog [bold]{region.catalog}[/], ground truth {region.truth}")


@app.command()
@_user_errors
def ingest(
    catalog: Annotated[Optional[str], typer.Option(
        help=f"Catalog: a source name ({', '.join(known_sources())}), a static catalog path or URL, "
             "or a STAC API URL.")] = None,
    bbox: BboxOpt = None,
    aoi: AoiOpt = None,
    time: TimeOpt = None,
    dem_time: Annotated[Optional[str], typer.Option(help="START/END of the DEM epochs (default: all).")] = None,
    out: Annotated[Optional[str], typer.Option(help="Folder or URL (s3://...) for the Zarr cubes.")] = None,
    loader: Annotated[Optional[str], typer.Option(help="odc-stac (default) or stackstac.")] = None,
    crs: Annotated[Optional[str], typer.Option(help="Output CRS (default: the items' most common CRS).")] = None,
    resolution: Annotated[Optional[float], typer.Option(help="Reflectance pixel size in metres.")] = None,
    dem_resolution: Annotated[Optional[float], typer.Option(help="DEM pixel size in metres.")] = None,
    time_chunk: Annotated[Optional[int], typer.Option(help="Time steps per Zarr chunk.")] = None,
    space_chunk: Annotated[Optional[int], typer.Option(help="Pixels per Zarr chunk side.")] = None,
    storage_options: Annotated[Optional[str], typer.Option(
        help='fsspec storage options as JSON, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'.')] = None,
    dem_references: Annotated[Optional[bool], typer.Option(
        "--dem-references/--no-dem-references", help="Also write virtual Zarr references to the DEM files.")] = None,
    overwrite: Annotated[Optional[bool], typer.Option(
        "--overwrite/--no-overwrite", help="Replace cubes written by a different request.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Load cloud-masked reflectance and DEM cubes from a STAC catalog and write them to Zarr."""
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.run import run_ingest

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {
        "ingest.catalog": catalog, "ingest.bbox": _bbox(bbox), "ingest.aoi": aoi, "ingest.time": time,
        "ingest.dem_time": dem_time, "ingest.out": out, "ingest.loader": loader, "ingest.crs": crs,
        "ingest.resolution": resolution, "ingest.dem_resolution": dem_resolution,
        "ingest.chunks.time": time_chunk, "ingest.chunks.space": space_chunk,
        "ingest.storage_options": parse_storage_options(storage_options) if storage_options else None,
        "ingest.dem_references": dem_references, "ingest.overwrite": overwrite,
        "dask.scheduler": scheduler, "dask.workers": workers, "dask.memory_limit": memory_limit,
    })
    with output_lock(cfg.ingest.out), dask_scheduler(cfg.dask.scheduler, cfg.dask.workers,
                                                     cfg.dask.memory_limit) as client:
        result = run_ingest(cfg.ingest, client, progress=not quiet)
    report.print(
        f"reflectance cube: [bold]{result.reflectance_url}[/] ({result.reflectance_status}; "
        f"{result.n_dates} dates from {result.n_items} items)\nDEM cube: [bold]{result.dem_url}[/] "
        f"({result.dem_status})\nsummary: {result.summary_url}; {result.bytes_written / 1e6:.1f} MB in "
        f"{result.seconds:.1f} s"
    )


@app.command()
@_user_errors
def run(
    out: Annotated[Optional[str], typer.Option(help="Run folder (default ./mtg-run).")] = None,
    catalog: Annotated[Optional[str], typer.Option(
        help=f"Catalog: a source name ({', '.join(known_sources())}; default sample, the embedded sample region), a "
             "static catalog path or URL, or a STAC API URL.")] = None,
    bbox: BboxOpt = None,
    aoi: AoiOpt = None,
    time: TimeOpt = None,
    points: Annotated[Optional[str], typer.Option(
        help="Mine property points with commodities (ICMM CSV, GeoParquet, ...); default the sample's on the "
             "sample catalog, else none.")] = None,
    lon_col: Annotated[Optional[str], typer.Option(help="Longitude column of a CSV/Parquet point file.")] = None,
    lat_col: Annotated[Optional[str], typer.Option(help="Latitude column of a CSV/Parquet point file.")] = None,
    primary_col: Annotated[Optional[list[str]], typer.Option(
        help="Point column of primary commodities; repeat for several.")] = None,
    country_col: Annotated[Optional[str], typer.Option(help="Point column of the country.")] = None,
    points_filter: Annotated[Optional[list[str]], typer.Option(
        help="Keep the point rows whose COLUMN lists VALUE ('Asset Type=Mine'); repeat: all must hold.")] = None,
    polygons: Annotated[Optional[list[str]], typer.Option(
        help="More mine polygon inventories linked with the segmentation's footprints; repeat for several.")] = None,
    commodity_table: Annotated[Optional[str], typer.Option(help="Commodity harmonisation CSV.")] = None,
    dem_before: Annotated[Optional[str], typer.Option(
        help="Earlier DEM: a collection of the catalog (nasadem, cop-dem-glo-30, alos-dem; NAME#EPOCH) or a file. "
             "Default: the first epoch of the catalog's DEM collection.")] = None,
    dem_after: Annotated[Optional[str], typer.Option(help="Later DEM, same forms. Default: the last epoch.")] = None,
    dem_before_datum: Annotated[Optional[str], typer.Option(
        help="Vertical datum of a --dem-before file: EPSG:5773 (EGM96), EPSG:3855 (EGM2008), ellipsoid.")] = None,
    dem_after_datum: Annotated[Optional[str], typer.Option(help="Vertical datum of a --dem-after file.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the sample region.")] = None,
    plan: Annotated[Optional[Path], typer.Option(
        help="Run the tiles of a plan of `mtg plan` (resumable: rerun the same command after a stop), then merge "
             "them into one world inventory; the catalog and time range come from the plan.")] = None,
    retries: Annotated[Optional[int], typer.Option(help="Tries again of a failed tile (plan.retries).")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage on a catalog and area (default: the embedded sample region): ingest, segmentation, site
    linking, volumes, land use, site indicators, verification, the HTML report and the STAC catalog of the results.
    With --plan, run the plan's tiles on the Dask cluster and end with one world inventory."""
    from mtg.pipeline.run import run_pipeline

    _setup_logging(quiet)
    if plan is not None and (catalog or bbox or aoi or time):
        raise MtgError("--plan takes the catalog, area and time range from the plan: drop --catalog, --bbox, --aoi "
                       "and --time")
    cfg = with_overrides(load_config(config), {
        "out": out, "ingest.catalog": catalog, "ingest.bbox": _bbox(bbox), "ingest.aoi": aoi, "ingest.time": time,
        "link.points": points, "link.lon_col": lon_col, "link.lat_col": lat_col, "link.primary_cols": primary_col,
        "link.country_col": country_col, "link.points_filter": points_filter, "link.polygons": polygons,
        "link.commodity_table": commodity_table, "volume.before": dem_before, "volume.after": dem_after,
        "volume.before_datum": dem_before_datum, "volume.after_datum": dem_after_datum, "sample.seed": seed,
        "plan.retries": retries, "dask.scheduler": scheduler, "dask.workers": workers,
        "dask.memory_limit": memory_limit})
    if plan is not None:
        with output_lock(cfg.out):
            _run_plan(plan, cfg, quiet)
        return
    with output_lock(cfg.out):
        result = run_pipeline(cfg, progress=not quiet)
    lines = [f"run complete in [bold]{result.out}[/]:"]
    if result.sample is not None:
        lines += [f"  sample STAC catalog  {result.sample.catalog}", f"  ground truth         {result.sample.truth}"]
    lines += [
        f"  reflectance cube     {result.ingest.reflectance_url}",
        f"  DEM cube             {result.ingest.dem_url}",
        f"  ingest summary       {result.ingest.summary_url}",
        f"  mine probability     {result.segment.probability}",
        f"  mine polygons        {result.segment.polygons} ({result.segment.n_polygons}, model "
        f"{result.segment.model})",
        f"  sites                {result.sites.out} ({result.sites.n_sites} sites)",
        f"  site members         {result.sites.members}",
        f"  timeline             {result.timeline.series} ({', '.join(result.timeline.periods)}; onset, "
        f"expansion and change per site in {result.timeline.summary.name})",
    ]
    if result.volumes is not None:
        lines += [
            f"  site volumes         {result.volumes.out / 'site_volumes.parquet'}",
            f"  waste deposits       {result.volumes.out / 'waste_deposits.parquet'} ({result.volumes.n_deposits})",
            f"  dh raster            {result.volumes.out / 'dh.zarr'}",
        ]
    else:
        lines.append("  volumes              not computed: one DEM epoch (give --dem-before and --dem-after)")
    linked = result.landuse.summary["linked_share"]
    lines.append(f"  land use             {result.landuse.out} ("
                 + (f"{linked:.0%} of " if linked is not None else "")
                 + f"{result.landuse.summary['total_km2']:.2f} km2 linked to a commodity)")
    lines.append(f"  site indicators      {result.indicators.parquet} (and .csv)")
    if result.verification:
        lines.append(f"  verification         {result.verification.parquet} {result.verification.counts}")
    lines += [f"  results catalog      {result.catalog}", f"report: [bold]{result.report}[/]"]
    report.print("\n".join(lines))


def _run_plan(plan: Path, cfg, quiet: bool) -> None:  # noqa: ANN001 - a RunConfig
    from mtg.pipeline.tiled_run import run_plan

    result = run_plan(plan, cfg, progress=not quiet)
    lines = [f"planned run in [bold]{result.out}[/]: {result.done} of {result.tiles} tiles done ({result.ran} in this "
             f"run), {result.failed} failed, {result.skipped} without scenes, {result.seconds:.1f} s"]
    for tile_id, error in result.failures.items():
        lines.append(f"  failed tile {tile_id}: {escape(error)}")
    if result.world is not None:
        w = result.world
        lines += [f"  manifest             {result.out / 'manifest.parquet'}",
                  f"  world footprints     {result.out / 'segment' / 'mine_polygons.parquet'} ({w.n_footprints} "
                  f"from {w.n_parts} tile parts, {w.mining_km2:.3f} km2)",
                  f"  sites                {result.out / 'sites' / 'sites.parquet'} ({w.n_sites})",
                  f"  site indicators      {result.out / 'indicators' / 'site_indicators.parquet'}",
                  f"  results catalog      {w.catalog}", f"report: [bold]{w.report}[/]"]
    report.print("\n".join(lines))
    if result.failed:
        console.print(f"[bold red]{result.failed} of {result.tiles} tiles failed[/]; the world inventory leaves them "
                      "out. Rerun the same command to try them again.")
        raise typer.Exit(1)


@app.command("plan")
@_user_errors
def plan_command(
    aoi: Annotated[Optional[list[str]], typer.Option(
        help="Areas of interest: mine points or polygons (any vector file; CSV/Parquet with --lon-col/--lat-col); "
             "repeat for several.")] = None,
    catalog: Annotated[Optional[str], typer.Option(
        help=f"Catalog searched per tile: a source name ({', '.join(known_sources())}), a static catalog path or "
             "URL, or a STAC API URL.")] = None,
    years: Annotated[Optional[str], typer.Option(help="Whole years of acquisitions, e.g. 2019-2025.")] = None,
    time: TimeOpt = None,
    buffer: Annotated[Optional[str], typer.Option(
        help="Buffer around each area of interest (plan.buffer), e.g. 5km.")] = None,
    tile_km: Annotated[Optional[float], typer.Option(
        help="Tile side in km on each UTM zone's grid (plan.tile_km).")] = None,
    halo_m: Annotated[Optional[float], typer.Option(help="Margin processed around each tile (plan.halo_m).")] = None,
    lon_col: Annotated[str, typer.Option(help="Longitude column of CSV/Parquet point files.")] = "lon",
    lat_col: Annotated[str, typer.Option(help="Latitude column of CSV/Parquet point files.")] = "lat",
    estimate_scenes: Annotated[bool, typer.Option(
        help="Do not search the catalog: scenes from the revisit (plan.revisit_days), sizes estimated.")] = False,
    workers: Annotated[int, typer.Option(help="CPU cores of the cluster, for the wall time.")] = 2,
    gpus: Annotated[int, typer.Option(help="GPUs of the cluster (segmentation runs on them).")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Plan file (GeoParquet); with --calibrate the "
                                                 "calibration file.")] = None,
    calibrate: Annotated[bool, typer.Option(
        help="Measure this machine's per-core stage throughputs on real tiles of a sample region and write "
             "them.")] = False,
    check: Annotated[Optional[Path], typer.Option(
        help="Compare a run folder's measured seconds (its manifest) with the plan it ran (or --plan-file).")] = None,
    plan_file: Annotated[Optional[Path], typer.Option(
        help="The plan of --check (default: the one the run names).")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The work tiles of a global rerun, what each reads, and what it costs, before anything runs."""
    from mtg.pipeline import plan as planning

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {"plan.buffer": buffer, "plan.tile_km": tile_km, "plan.halo_m": halo_m,
                                               "ingest.catalog": catalog})
    if calibrate:
        target = out or Path("plan_calibration.json")
        cal = planning.calibrate(target, cfg, progress=not quiet)
        report.print(f"calibration written to [bold]{target}[/]: ingest {cal.ingest_bytes_per_s / 1e6:.2f} MB/s, "
                     f"segmentation {cal.segment_px_per_s / 1e6:.3f} Mpx/s, volumes "
                     f"{cal.volume_bytes_per_s / 1e6:.2f} MB/s per core, {sum(cal.stage_overhead_s.values()):.2f} s "
                     "fixed per tile; use it "
                     "with plan.calibration")
        return
    if check is not None:
        _check_plan(check, plan_file)
        return
    if not aoi:
        raise MtgError("give the areas of interest with --aoi FILE (or --calibrate, or --check RUN)")
    if cfg.ingest.catalog == "sample":
        raise MtgError("give the catalog to plan on with --catalog (planetary-computer, a static catalog path, "
                       "a STAC API URL)")
    if (years is None) == (time is None):
        raise MtgError("give exactly one of --years FIRST-LAST and --time START/END")
    time_range = planning.years_range(years) if years else time
    # a local catalog is named by its absolute path: workers and later reruns may start elsewhere
    catalog = str(Path(cfg.ingest.catalog).resolve()) if Path(cfg.ingest.catalog).exists() else cfg.ingest.catalog
    plan = planning.make_plan(planning.read_aoi(aoi, lon_col, lat_col), cfg, catalog=catalog,
                              time_range=time_range, estimate_scenes=estimate_scenes)
    summary = planning.plan_summary(plan, cfg.plan, workers, gpus)
    target = out or Path("plan.parquet")
    planning.write_plan(plan, target, {"catalog": catalog, "time": time_range,
                                       "aoi": [str(a) for a in aoi], "plan": cfg.plan.model_dump(),
                                       "resolution": cfg.ingest.resolution, "summary": summary})
    report.print(planning.format_summary(summary) + f"\nplan written to [bold]{target}[/]")


def _check_plan(run_dir: Path, plan_file: Optional[Path]) -> None:
    from mtg.pipeline import plan as planning
    from mtg.pipeline.tiled_run import read_manifest

    manifest, meta = read_manifest(Path(run_dir))
    if manifest is None:
        raise MtgError(f"{run_dir} holds no run manifest (manifest.parquet): is it a run of `mtg run --plan`?")
    source = plan_file or Path(meta.get("plan", ""))
    plan, _ = planning.read_plan(source)
    table, total = planning.check_plan(plan, manifest)
    lines = [f"plan {source} against the run {run_dir} ({total['tiles']} finished tiles):",
             f"  {'stage':<28} {'predicted s':>12} {'measured s':>12} {'measured/predicted':>19}"]
    for row in table.itertuples():
        lines.append(f"  {row.stage:<28} {row.predicted_s:>12.1f} {row.measured_s:>12.1f} {row.ratio:>19.2f}")
    within = abs(total["ratio"] - 1) <= 0.25
    lines.append(f"total measured/predicted {total['ratio']:.2f}: {'within' if within else 'outside'} the 25 % target")
    report.print("\n".join(lines))


@app.command()
@_user_errors
def link(
    points: Annotated[Optional[Path], typer.Option(
        help="Point file: CSV, Parquet with lon/lat columns, or GeoParquet/GPKG of points (any CRS).")] = None,
    lon_col: Annotated[str, typer.Option(help="Longitude column of a CSV/Parquet point file.")] = "lon",
    lat_col: Annotated[str, typer.Option(help="Latitude column of a CSV/Parquet point file.")] = "lat",
    polygons: Annotated[Optional[list[Path]], typer.Option(
        help="Polygon file (GPKG, GeoParquet, ...; any CRS); repeat for several. Switches to sites mode.")] = None,
    h_max: Annotated[str, typer.Option(
        help="Largest cut, e.g. 10km, 500m, 1000 (metres); pairs further apart are never computed.")] = "10km",
    cut: Annotated[Optional[list[str]], typer.Option(
        help="Cut height, e.g. 2km; repeat for several (points mode). Default: --h-max.")] = None,
    linkage: Annotated[str, typer.Option(help="Linkage: single, complete or average.")] = "single",
    commodity_table: Annotated[Optional[Path], typer.Option(
        help="Commodity harmonisation CSV (material, material_harmonized); without it raw names are kept, "
             "lower-cased.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Output file (default labels.parquet, or sites.parquet with --polygons).")] = None,
    levels: Annotated[Optional[str], typer.Option(
        help="Sites mode: more cuts recorded in the members file, comma-separated (e.g. 1km,2km,5km), for "
             "--choose-cut and `mtg landuse --choose-cut/--sensitivity`.")] = None,
    choose_cut: Annotated[bool, typer.Option(
        "--choose-cut", help="Sites mode: form each site at its own cut h <= --cut among --levels, balancing area "
                             "without a commodity against area with several (see mtg.pipeline.landuse).")] = False,
    points_filter: Annotated[Optional[list[str]], typer.Option(
        help="Sites mode: keep the point rows whose COLUMN lists VALUE ('Asset Type=Mine'); repeat: all must "
             "hold.")] = None,
    primary_col: Annotated[Optional[list[str]], typer.Option(
        help="Sites mode: point column of primary commodities; repeat for several (default: commodity columns "
             "named 'primary', else all).")] = None,
    country_col: Annotated[Optional[str], typer.Option(
        help="Sites mode: point column of the country (default: a column named country).")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Link mine points (and polygons) into clusters or sites with exact sparse hierarchical clustering.

    Points mode runs its graph tiles and clustering shards in this process, or on dask workers with --scheduler.
    """
    from collections import Counter

    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.link import link_points, link_sites
    from mtg.pipeline.linker import parse_distance

    _setup_logging(quiet)
    h = parse_distance(h_max, "--h-max")
    cuts = [parse_distance(c, "--cut") for c in cut or []]
    if polygons:
        if len(cuts) > 1:
            raise MtgError(f"sites mode links at one cut; got {len(cuts)} --cut values")
        if cuts and cuts[0] > h:
            raise MtgError(f"--cut {cut[0]} is above --h-max {h_max}")
        grid = [parse_distance(v, "--levels") for v in (levels or "").split(",") if v.strip()]
        if [v for v in grid if v > h]:
            raise MtgError(f"--levels {levels}: {max(grid):g} m is above --h-max {h_max}")
        result = link_sites(polygons, points, out or Path("sites.parquet"), commodity_table=commodity_table,
                            cut=cuts[0] if cuts else h, linkage=linkage, lon_col=lon_col, lat_col=lat_col,
                            levels=grid, choose_cut=choose_cut, points_filter=points_filter or [],
                            primary_cols=primary_col or None, country_col=country_col)
        chosen = "" if result.chosen_cuts is None else "; cut chosen per site: " + ", ".join(
            f"{n} at {c:g} m" for c, n in sorted(Counter(result.chosen_cuts.values()).items()))
        report.print(
            f"sites: [bold]{result.out}[/] ({result.n_sites} sites from {result.n_polygons} polygons and "
            f"{result.n_points} points at {result.cut:g} m; {result.n_point_only_sites} without polygons{chosen})\n"
            f"members: {result.members} (partitions at {', '.join(f'{v:g}' for v in result.levels)} m); "
            f"{result.seconds:.1f} s"
        )
        return
    if levels or choose_cut or points_filter or primary_col or country_col:
        raise MtgError("--levels, --choose-cut, --points-filter, --primary-col and --country-col apply to sites "
                       "mode only (with --polygons)")
    if points is None:
        raise MtgError("give --points FILE (points mode) and/or --polygons FILE (sites mode)")
    if commodity_table is not None:
        raise MtgError("--commodity-table applies to sites mode only (with --polygons)")
    with dask_scheduler(scheduler or "threads", workers) as client:
        result = link_points(points, out or Path("labels.parquet"), h_max=h, cuts=cuts, linkage=linkage,
                             lon_col=lon_col, lat_col=lat_col, client=client)
    clusters = ", ".join(f"{n} clusters at {c:g} m" for c, n in result.n_clusters.items())
    ambiguous = f"; ambiguous cuts (ties): {result.ambiguous_cuts}" if result.ambiguous_cuts else ""
    report.print(f"labels: [bold]{result.out}[/] ({result.n_points} points, {result.n_edges} pairs within "
                 f"{h:g} m; {clusters}{ambiguous}; {result.seconds:.1f} s)")


@app.command()
@_user_errors
def volume(
    before: Annotated[str, typer.Option(
        help="Earlier DEM: GeoTIFF/COG path or URL, Zarr cube (URL#EPOCH, e.g. dem.zarr#0), STAC item JSON, kerchunk "
             "references, or a DEM collection of --catalog (nasadem, cop-dem-glo-30, alos-dem; NAME#EPOCH).")],
    after: Annotated[str, typer.Option(help="Later DEM, same forms; resampled onto the earlier one's grid.")],
    sites: Annotated[Path, typer.Option(help="Site polygons (GeoParquet, GPKG, ...; any CRS), e.g. from mtg link.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    coregister: Annotated[Optional[bool], typer.Option(
        "--coregister/--no-coregister", help="Co-register the later DEM on stable terrain (Nuth & Kaab).")] = None,
    tilt: Annotated[Optional[bool], typer.Option("--tilt/--no-tilt", help="Also remove a planar tilt.")] = None,
    threshold_nmad: Annotated[Optional[float], typer.Option(
        help="Change threshold in stable-terrain NMADs (default 2).")] = None,
    threshold_m: Annotated[Optional[float], typer.Option(help="Change threshold in metres (0 allowed).")] = None,
    void_policy: Annotated[Optional[str], typer.Option(help="Voids in sites: none, local-mean or hypsometric.")] = None,
    min_deposit_m2: Annotated[Optional[float], typer.Option(help="Smallest waste deposit kept (m^2).")] = None,
    site_id_col: Annotated[Optional[str], typer.Option(help="Column of site ids (default site_id or id).")] = None,
    catalog: Annotated[Optional[str], typer.Option(
        help="Catalog searched for DEM collections named by --before/--after (a source name, static catalog or STAC "
             "API URL); the area is the sites' extent plus a margin.")] = None,
    before_datum: Annotated[Optional[str], typer.Option(
        help="Vertical datum of a --before file: EPSG:5773 (EGM96), EPSG:3855 (EGM2008), ellipsoid.")] = None,
    after_datum: Annotated[Optional[str], typer.Option(help="Vertical datum of an --after file.")] = None,
    datum_policy: Annotated[Optional[str], typer.Option(
        help="Epochs of different vertical datums: convert (default; needs the PROJ geoid grids) or assume-same.")] = None,
    storage_options: Annotated[Optional[str], typer.Option(
        help="fsspec storage options (JSON) for remote Zarr DEMs and static catalogs.")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="Where sites are integrated: auto (the CUDA kernel on workers with a GPU), cpu or cuda.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Per-site excavated and deposited volumes between two DEM epochs, with 1-sigma errors and waste deposits."""
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.volume import measure_volumes

    _setup_logging(quiet)
    if threshold_m is not None and threshold_nmad is not None:
        raise MtgError("give --threshold-nmad or --threshold-m, not both")
    cfg = with_overrides(load_config(config), {
        "volume.coregister": coregister, "volume.tilt": tilt, "volume.threshold_nmad": threshold_nmad,
        "volume.threshold_m": threshold_m, "volume.void_policy": void_policy, "volume.min_deposit_m2": min_deposit_m2,
        "volume.datum_policy": datum_policy, "volume.device": device, "dask.scheduler": scheduler,
        "dask.workers": workers, "dask.memory_limit": memory_limit,
    })
    with output_lock(out), dask_scheduler(cfg.dask.scheduler, cfg.dask.workers, cfg.dask.memory_limit):
        result = measure_volumes(before, after, sites, out, site_id_col=site_id_col, catalog=catalog,
                                 before_datum=before_datum, after_datum=after_datum,
                                 storage_options=parse_storage_options(storage_options) if storage_options else None,
                                 options=cfg.volume)
    shift = result.coregistration
    coreg = (f"shift {shift['shift_x_m']:.2f} m east, {shift['shift_y_m']:.2f} m north, bias {shift['bias_m']:.2f} m"
             if shift.get("applied") else "not co-registered")
    report.print(
        f"volumes of {result.n_sites} sites: [bold]{result.out / 'site_volumes.parquet'}[/]\n"
        f"waste deposits: {result.out / 'waste_deposits.parquet'} ({result.n_deposits})\n"
        f"dh: {result.out / 'dh.zarr'}; {coreg}; stable-terrain NMAD {result.nmad_m:.2f} m, threshold "
        f"{result.threshold_m:.2f} m; {result.seconds:.1f} s"
    )


@app.command("report")
@_user_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `mtg run`.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Output HTML file (default RUN_DIR/report.html).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the run's report: one HTML file with map, charts, thumbnails, tables and provenance; needs no network."""
    from mtg.pipeline.report import write_report

    _setup_logging(quiet)
    report.print(f"report: [bold]{write_report(run_dir, out)}[/]")


@app.command()
@_user_errors
def publish(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `mtg run`.")],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check RUN_DIR/stac against the files (schemas, sizes, checksums) instead of writing it.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write RUN_DIR/stac/catalog.json: a self-contained STAC catalog of the run's outputs, with checksums."""
    from mtg.pipeline.results_catalog import STAC_DIR, verify_results_catalog, write_results_catalog

    _setup_logging(quiet)
    if verify:
        n = verify_results_catalog(Path(run_dir) / STAC_DIR / "catalog.json")
        report.print(f"results catalog {Path(run_dir) / STAC_DIR / 'catalog.json'}: {n} assets match their files")
        return
    report.print(f"results catalog: [bold]{write_results_catalog(run_dir)}[/]")


@app.command()
@_user_errors
def train(
    cube: Annotated[list[str], typer.Option(
        help="Reflectance cube (Zarr path or URL from mtg ingest); repeat for several regions.")],
    labels: Annotated[list[Path], typer.Option(
        help="Mine polygons (GeoParquet, GPKG, ...; any CRS), with feature types; one per --cube, in order.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (weights.pt, model_card.json).")],
    bands: Annotated[Optional[str], typer.Option(
        help="Input bands the model declares, e.g. B02,B03,B04 (RGB) or B02,B03,B04,B08,B11,B12 (the default); "
             "the indices they allow (NDVI, NDWI, BSI) are added.")] = None,
    holdout: Annotated[Optional[str], typer.Option(
        help="XMIN,YMIN,XMAX,YMAX in the cube's CRS: never sampled; the model is scored there at the end.")] = None,
    init: Annotated[Optional[Path], typer.Option(
        help="Model folder to start from (fine-tuning; its normalisation is kept, bands must match).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs (train.epochs).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Initial learning rate (train.learning_rate).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without a better validation IoU before stopping.")] = None,
    chip: Annotated[Optional[int], typer.Option(help="Chip side in pixels.")] = None,
    chips_per_epoch: Annotated[Optional[int], typer.Option(help="Chips drawn per epoch.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Chips per training step.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads (fixed, for reproducible weights).")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="cpu (the default), cuda, or auto (CUDA where available); weights reproduce on the same device.")] = None,
    norm: Annotated[Optional[str], typer.Option(
        help="group (group normalisation, the default) or batch (batch normalisation with precise BN).")] = None,
    storage_options: CubeStorageOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the mine-footprint U-Net on a cube and mine polygons: chips, per-epoch metrics, early stopping."""
    import sys

    from mtg.pipeline.features import MODEL_BANDS, parse_bands
    from mtg.pipeline.train import train_model

    _setup_logging(quiet)
    model_bands = parse_bands(bands) if bands else MODEL_BANDS
    box = None
    if holdout is not None:
        try:
            box = tuple(float(v) for v in holdout.replace(" ", "").split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise MtgError(f"--holdout {holdout!r} must be four numbers XMIN,YMIN,XMAX,YMAX with XMIN < XMAX, "
                           "YMIN < YMAX (the cube's CRS)")
    cfg = with_overrides(load_config(config), {
        "train.holdout": box, "train.epochs": epochs, "train.learning_rate": learning_rate,
        "train.patience": patience, "train.chip": chip,
        "train.chips_per_epoch": chips_per_epoch, "train.batch": batch, "train.seed": seed, "train.threads": threads,
        "train.device": device, "train.norm": norm,
    })
    t, s = cfg.train, cfg.segment
    result = train_model(
        cube, labels, out, bands=model_bands, init=init, holdout=t.holdout, epochs=t.epochs, patience=t.patience,
        chip=t.chip, chips_per_epoch=t.chips_per_epoch, batch=t.batch, positive_fraction=t.positive_fraction,
        val_fraction=t.val_fraction, block=t.block, learning_rate=t.learning_rate, widths=t.widths, norm=t.norm,
        seed=t.seed, threads=t.threads, device=t.device, class_column=t.class_column, threshold=s.threshold,
        tile=s.tile, overlap=s.overlap,
        storage_options=parse_storage_options(storage_options) if storage_options else None,
        command=" ".join(["mtg", *sys.argv[1:]]),
    )
    metrics = result.card.metrics
    scored = [("validation", metrics["validation"], "val_")] + (
        [("held-out", metrics["holdout"], "")] if "holdout" in metrics else [])
    lines = [f"  {name:<10} IoU {m[p + 'iou']:.3f}  F1 {m[p + 'f1']:.3f}  precision {m[p + 'precision']:.3f}  "
             f"recall {m[p + 'recall']:.3f}" for name, m, p in scored]
    report.print(f"model: [bold]{result.out}[/] ({result.card.training['epochs_run']} epochs, best "
                 f"{result.card.training['best_epoch']}; {result.seconds:.0f} s)\n" + "\n".join(lines))


@app.command()
@_user_errors
def segment(
    cube: Annotated[str, typer.Option(help="Reflectance cube (Zarr path or URL from mtg ingest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: probability.zarr, mine_polygons.parquet.")],
    model: ModelOpt = None,
    threshold: Annotated[Optional[float], typer.Option(help="Mining probability of the polygons (0.5).")] = None,
    min_area_m2: Annotated[Optional[float], typer.Option(help="Smallest polygon kept, m^2.")] = None,
    simplify_m: Annotated[Optional[float], typer.Option(help="Polygon simplification tolerance, m (0: none).")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Tile side in pixels (a multiple of 8).")] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Pixels shared by neighbouring tiles (up to tile/2).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Tiles per forward pass.")] = None,
    chunk: ChunkOpt = None,
    device: DeviceOpt = None,
    time: Annotated[Optional[str], typer.Option(help="START/END: composite only these acquisitions.")] = None,
    storage_options: CubeStorageOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Map mine footprints in a reflectance cube: seam-free tiled inference, probability raster and polygons."""
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.segment import segment_cube

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {
        "segment.model": model, "segment.threshold": threshold, "segment.min_area_m2": min_area_m2,
        "segment.simplify_m": simplify_m, "segment.tile": tile, "segment.overlap": overlap, "segment.batch": batch,
        "segment.chunk": chunk, "segment.device": device, "segment.time": time, "dask.scheduler": scheduler,
        "dask.workers": workers, "dask.memory_limit": memory_limit,
    })
    with output_lock(out), dask_scheduler(cfg.dask.scheduler, cfg.dask.workers,
                                          cfg.dask.memory_limit) as client:
        result = segment_cube(
            cube, out, storage_options=parse_storage_options(storage_options) if storage_options else None,
            client=client, progress=not quiet, options=cfg.segment)
    report.print(
        f"probability: [bold]{result.probability}[/]\nmine polygons: [bold]{result.polygons}[/] "
        f"({result.n_polygons}, {result.mining_area_m2 / 1e6:.2f} km^2)\nmodel {result.model} on {result.device}; "
        f"{result.n_pixels / 1e6:.1f} Mpx in {result.seconds:.1f} s"
    )


@app.command()
@_user_errors
def timeline(
    cube: Annotated[str, typer.Option(help="Reflectance cube with a time axis (Zarr path or URL from mtg ingest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: timeline.zarr, site_series.parquet, "
                                                           "site_timeline.parquet, period_footprints.parquet, "
                                                           "change.parquet.")],
    model: ModelOpt = None,
    period: Annotated[Optional[str], typer.Option(help="year or quarter: one footprint map per period (year).")] = None,
    sites: Annotated[Optional[Path], typer.Option(
        help="Sites layer (sites.parquet of mtg link, or polygons with site_id); default: sites from the maps.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Mining probability threshold (0.5).")] = None,
    start: Annotated[Optional[float], typer.Option(help="Weight of a pixel starting to mine between periods (0.3).")] = None,
    stop: Annotated[Optional[float], typer.Option(help="Weight of a mining pixel stopping between periods (0.1).")] = None,
    chunk: ChunkOpt = None,
    device: DeviceOpt = None,
    storage_options: CubeStorageOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """When mining happened: one footprint map per period, made temporally consistent, and per-site series of area
    (with uncertainty), onset, expansion, new and revegetated area."""
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.timeline import run_timeline

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {
        "segment.model": model, "segment.threshold": threshold, "segment.chunk": chunk, "segment.device": device,
        "timeline.period": period, "timeline.start": start, "timeline.stop": stop, "dask.scheduler": scheduler,
        "dask.workers": workers, "dask.memory_limit": memory_limit,
    })
    with output_lock(out), dask_scheduler(cfg.dask.scheduler, cfg.dask.workers,
                                          cfg.dask.memory_limit) as client:
        result = run_timeline(
            cube, out, sites=sites, storage_options=parse_storage_options(storage_options) if storage_options else None,
            client=client, progress=not quiet, segment_options=cfg.segment, options=cfg.timeline)
    report.print(
        f"periods: {', '.join(result.periods)}; {result.n_sites} sites\nper-period maps: [bold]{result.store}[/]\n"
        f"per-site series: [bold]{result.series}[/]\nper-site summary: [bold]{result.summary}[/]\n"
        f"change in {result.periods[-1]}: [bold]{result.change}[/] ({result.seconds:.1f} s)"
    )


@app.command()
@_user_errors
def evaluate(
    imagery: Annotated[str, typer.Option(help="Reflectance cube (Zarr from mtg ingest) or comma-separated GeoTIFFs.")],
    labels: Annotated[str, typer.Option(help="Mine polygons (any vector file, any CRS) or a GeoTIFF mask of class "
                                             "codes in the model's class order.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for evaluation.json, .png and .html.")],
    model: Annotated[Optional[str], typer.Option(help="Model folder (default the shipped model).")] = None,
    labels_cover: Annotated[str, typer.Option(
        help="full: the labels mark all mine ground; partial: only some of it (recall on labels and area mapped "
             "outside them are reported, not IoU).")] = "full",
    imagery_bands: Annotated[Optional[str], typer.Option(
        help="Names of the GeoTIFF bands in order (e.g. B02,B03,B04,B08), where their descriptions are not "
             "Sentinel-2 band names.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Mining probability threshold (segment.threshold).")] = None,
    min_area_m2: Annotated[Optional[float], typer.Option(help="Minimum mapping unit of mapped objects, m^2.")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score a model on labelled imagery: IoU, F1, precision, recall, per class, per site, calibration."""
    from mtg.pipeline.evaluate import evaluate_model

    _setup_logging(quiet)
    if labels_cover not in ("full", "partial"):
        raise MtgError(f"--labels-cover {labels_cover!r} must be full or partial")
    cfg = with_overrides(load_config(config), {"segment.threshold": threshold, "segment.min_area_m2": min_area_m2})
    s = cfg.segment
    result = evaluate_model(model, imagery, labels, out, cover=labels_cover,
                            band_names=imagery_bands.split(",") if imagery_bands else None, threshold=s.threshold,
                            min_area_m2=s.min_area_m2, tile=s.tile, overlap=s.overlap)
    main = ("no labelled mine: all mapped area is false positive" if result["truth_pixels"] == 0 else
            f"IoU {result['iou']:.3f}  F1 {result['f1']:.3f}  precision {result['precision']:.3f}  recall "
            f"{result['recall']:.3f}" if labels_cover == "full" else
            f"recall on labels {result['recall']:.3f}  mapped outside labels "
            f"{result['mapped_outside_labels_m2'] / 1e6:.3f} km^2")
    report.print(f"{main}  mapped {result['mapped_area_m2'] / 1e6:.4f} km^2, false-positive objects "
                 f"{result['objects']['false_positive_area_share']:.1%} of mapped objects\nevaluation: [bold]{out / 'evaluation.json'}[/], {out / 'evaluation.html'}")


@app.command()
@_user_errors
def landuse(
    sites: Annotated[Path, typer.Argument(help="Sites GeoParquet from `mtg link --polygons ...` (members beside it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    choose_cut: Annotated[bool, typer.Option(
        "--choose-cut", help="Re-form the sites with a cut per site among the recorded cuts <= --h-max (balances "
                             "area without a commodity against area with several).")] = False,
    h_max: Annotated[Optional[str], typer.Option(
        help="Largest cut H of --choose-cut, a recorded cut (default: the sites' cut).")] = None,
    sensitivity: Annotated[Optional[str], typer.Option(
        help="Recorded cuts at which to repeat the split, comma-separated, e.g. 1km,2km,5km,10km.")] = None,
    countries: Annotated[Optional[Path], typer.Option(
        help="Country boundary polygons; default: the linked points' country attribute.")] = None,
    country_col: Annotated[Optional[str], typer.Option(help="Country-name column of --countries.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Commodity land use: each site's area split equally among its primary commodities; by commodity and country.

    The unions and geodesic areas of --choose-cut and --sensitivity and the --countries overlay run as dask tasks
    over groups of sites, on the --scheduler."""
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.landuse import write_land_use

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {
        "landuse.choose_cut": choose_cut or None, "landuse.h_max": h_max,
        "landuse.sensitivity": [v.strip() for v in sensitivity.split(",") if v.strip()] if sensitivity else None,
        "landuse.countries": str(countries) if countries else None, "landuse.country_col": country_col,
        "dask.scheduler": scheduler, "dask.workers": workers, "dask.memory_limit": memory_limit})
    with dask_scheduler(cfg.dask.scheduler, cfg.dask.workers, cfg.dask.memory_limit):
        result = write_land_use(sites, out, countries=cfg.landuse.countries, options=cfg.landuse)
    s = result.summary
    share = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")
    report.print(
        f"land use: [bold]{result.out}[/] ({s['n_sites']} sites with a footprint, {s['total_km2']:.4g} km^2; linked "
        f"{share(s['linked_share'])}, Unknown {share(s['unlinked_share'])}, several commodities "
        f"{share(s['multi_commodity_share'])}); {result.seconds:.1f} s"
    )


@app.command()
@_user_errors
def indicators(
    run_dir: Annotated[Optional[Path], typer.Argument(
        help="Run folder of `mtg run` (reads sites/ and volumes/, writes indicators/).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default RUN_DIR/indicators).")] = None,
    sites: Annotated[Optional[Path], typer.Option(help="Sites GeoParquet (default RUN_DIR/sites/sites.parquet).")] = None,
    volumes: Annotated[Optional[Path], typer.Option(help="site_volumes.parquet of `mtg volume`.")] = None,
    waste_deposits: Annotated[Optional[Path], typer.Option(help="waste_deposits.parquet of `mtg volume`.")] = None,
    footprints_before: Annotated[Optional[list[Path]], typer.Option(
        help="Footprint polygons of the earlier epoch; repeat for several files.")] = None,
    footprints_after: Annotated[Optional[list[Path]], typer.Option(
        help="Footprint polygons of the later epoch; repeat for several files.")] = None,
    footprints_period: Annotated[Optional[list[str]], typer.Option(
        help="PERIOD=FILE: footprint polygons of a year (2021) or quarter (2025Q3); repeat for several periods "
             "and files. Writes site_area_series.parquet; onset and area before/after come from them.")] = None,
    cumulative: Annotated[bool, typer.Option(
        help="The period files hold only each period's new footprints (as Amazon Mining Watch's yearly layers): "
             "a period's footprint is the union of its files and all earlier ones.")] = False,
    coverage_period: Annotated[Optional[list[str]], typer.Option(
        help="PERIOD=FILE: polygons of the ground that period's layers cover; a site outside them has a missing "
             "area there (not 0) and missing_share says how much of it was not covered.")] = None,
    countries: Annotated[Optional[Path], typer.Option(help="Country boundary polygons.")] = None,
    country_col: Annotated[Optional[str], typer.Option(help="Country-name column of --countries.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Site indicators: area, commodities, sources, area change, onset, volumes, waste deposits, segmentation
    probability."""
    from mtg.pipeline.indicators import run_indicators
    from mtg.pipeline.layer_series import parse_periods

    _setup_logging(quiet)
    if run_dir is None and (sites is None or out is None):
        raise MtgError("give a RUN_DIR, or --sites and --out")
    result = run_indicators(run_dir or Path("."), out, sites=sites, volumes=volumes, waste_deposits=waste_deposits,
                            footprints_before=footprints_before or (), footprints_after=footprints_after or (),
                            footprint_periods=parse_periods(footprints_period) if footprints_period else None,
                            cumulative=cumulative,
                            coverage_periods=parse_periods(coverage_period, "--coverage-period")
                            if coverage_period else None, countries=countries, country_col=country_col)
    report.print(f"site indicators: [bold]{result.parquet}[/] and {result.csv} ({result.n_sites} sites); "
                 f"{result.seconds:.1f} s")


@app.command()
@_user_errors
def verify(
    reported: Annotated[Path, typer.Option(help="Reported figures, CSV (see docs/reported-figures-example.csv).")],
    indicators: Annotated[Path, typer.Option(help="site_indicators.parquet of `mtg indicators`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    tolerance: Annotated[Optional[float], typer.Option(help="Relative difference that disagrees (0.25).")] = None,
    sigma: Annotated[Optional[float], typer.Option(help="Volumes must also differ by this many sigma (2).")] = None,
    max_distance: Annotated[Optional[str], typer.Option(help="Farthest match by location (5km).")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare reported area, volume or tonnage figures with the site indicators and flag large disagreements."""
    from mtg.pipeline.linker import parse_distance
    from mtg.pipeline.verify import write_verification

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {"verify.tolerance": tolerance, "verify.sigma": sigma,
                                               "verify.max_distance": max_distance}).verify
    result = write_verification(reported, indicators, out, tolerance=cfg.tolerance, sigma=cfg.sigma,
                                max_distance_m=parse_distance(cfg.max_distance, "--max-distance"))
    counts = ", ".join(f"{n} {flag}" for flag, n in sorted(result.counts.items()))
    report.print(f"verification: [bold]{result.parquet}[/] and {result.csv} ({counts}); {result.seconds:.1f} s")


deploy_app = typer.Typer(help="Deployment material of a planned rerun (see docs/deploy.md).", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("kubernetes")
@_user_errors
def deploy_kubernetes(
    plan: Annotated[Path, typer.Option(help="Plan of `mtg plan`: sizes the cluster and travels with the job.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the manifests (created).")],
    name: Annotated[str, typer.Option(help="Name of the DaskJob and its DaskCluster.")] = "mtg-world",
    namespace: Annotated[Optional[str], typer.Option(help="Namespace of every object (default: kubectl's).")] = None,
    image: Annotated[Optional[str], typer.Option(help="CPU image (deploy/docker/Dockerfile.cpu).")] = None,
    gpu_image: Annotated[Optional[str], typer.Option(help="GPU image (deploy/docker/Dockerfile.gpu).")] = None,
    run_out: Annotated[Optional[str], typer.Option(
        help="--out of the run (default /shared/NAME on the shared volume).")] = None,
    plan_url: Annotated[Optional[str], typer.Option(
        help="Object-storage URL the job fetches the plan from (plans over ~1 MiB do not fit a ConfigMap).")] = None,
    points: Annotated[Optional[str], typer.Option(help="--points of the run (on the shared volume or a URL).")] = None,
    run_arg: Annotated[Optional[list[str]], typer.Option(
        help="More `mtg run` options, one word per use: --run-arg=--lon-col --run-arg=Longitude.")] = None,
    secret: Annotated[str, typer.Option(help="Secret of object-storage credentials (referenced, never written).")
                      ] = "mtg-object-storage",
    volume_claim: Annotated[str, typer.Option(help="Shared ReadWriteMany volume claim.")] = "mtg-shared",
    storage_class: Annotated[Optional[str], typer.Option(help="Storage class of the shared volume.")] = None,
    target_hours: Annotated[float, typer.Option(help="Wall time to size the cluster for.")] = 6.0,
    worker_cores: Annotated[int, typer.Option(help="Cores per CPU worker.")] = 4,
    memory_per_core: Annotated[float, typer.Option(help="GiB of memory per worker core.")] = 4.0,
    gpus: Annotated[int, typer.Option(help="Most GPU workers (one GPU each); 0 for none.")] = 0,
    max_workers: Annotated[int, typer.Option(help="Most CPU workers.")] = 500,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the dask-kubernetes operator manifests of a planned rerun, sized from its plan: ConfigMap (run config),
    shared volume, DaskJob running `mtg run --plan`, GPU DaskWorkerGroup, DaskAutoscaler, a standing DaskCluster."""
    from mtg.pipeline import deploy

    _setup_logging(quiet)
    files = deploy.render_kubernetes(
        plan, load_config(config), output, name=name, namespace=namespace, image=image or deploy.DEFAULT_IMAGE,
        gpu_image=gpu_image or deploy.DEFAULT_GPU_IMAGE, out=run_out, plan_url=plan_url, points=points,
        run_args=run_arg or [], secret=secret, volume_claim=volume_claim, storage_class=storage_class,
        target_hours=target_hours, worker_cores=worker_cores, memory_per_core_gib=memory_per_core, gpus=gpus,
        max_workers=max_workers)
    report.print("\n".join([f"manifests of {name} in [bold]{output}[/]:"] + [f"  {p}" for p in files]
                           + [f"apply with: kubectl apply -f {output}"]))
