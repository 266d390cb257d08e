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
from mtg.pipeline.errors import MtgError
from mtg.pipeline.storage import parse_storage_options

app = typer.Typer(help="mine-the-gap: satellite Earth observation to site-level mining indicators.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)  # logs, progress and errors
report = Console(soft_wrap=True)  # where the outputs are, on standard output

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Run-config file (YAML or TOML).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    help="Dask scheduler: threads (default), local (a LocalCluster), tcp://HOST:PORT, or gateway.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Workers for --scheduler local or gateway.")]
MemoryOpt = Annotated[Optional[str], typer.Option(help="Memory limit per LocalCluster worker, e.g. 2GiB.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    # odc-stac reprojects 20 m bands through in-memory rasters that GDAL calls "not georeferenced": harmless.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    for noisy in ("distributed", "botocore", "aiobotocore", "s3fs", "fsspec", "rasterio", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _user_errors(func):
    """Report :class:`MtgError` as one clear line and exit with status 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MtgError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            raise typer.Exit(2) from None

    return wrapper


def _bbox(text: Optional[str]) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise MtgError(f"--bbox {text!r} must be four numbers min_lon,min_lat,max_lon,max_lat") from None


@app.command()
@_user_errors
def sample(
    out: Annotated[Path, typer.Option(help="Folder for the sample region.")] = Path("mtg-run/sample"),
    seed: Annotated[Optional[int], typer.Option(help="Random seed (sample.seed).")] = None,
    size_km: Annotated[Optional[float], typer.Option(help="Side of the square region in km (sample.size_km).")] = None,
    n_dates: Annotated[Optional[int], typer.Option(help="Sentinel-2 acquisitions (sample.n_dates).")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the embedded sample region: Sentinel-2 L2A-like COGs, two DEM epochs, a STAC catalog and truth."""
    from mtg.pipeline.run import ensure_sample

    _setup_logging(quiet)
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
    bbox: Annotated[Optional[str], typer.Option(help="min_lon,min_lat,max_lon,max_lat (EPSG:4326).")] = None,
    aoi: Annotated[Optional[str], typer.Option(help="Vector file of the area of interest (any CRS).")] = None,
    time: Annotated[Optional[str], typer.Option(help="START/END of the Sentinel-2 acquisitions.")] = None,
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
    result = run_ingest(cfg.ingest, cfg.dask, progress=not quiet)
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
    seed: Annotated[Optional[int], typer.Option(help="Seed of the sample region.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    memory_limit: MemoryOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage on the sample region (or the configured one): sample, ingest, site linking, volumes."""
    from mtg.pipeline.run import run_pipeline

    _setup_logging(quiet)
    cfg = with_overrides(load_config(config), {"out": out, "sample.seed": seed, "dask.scheduler": scheduler,
                                               "dask.workers": workers, "dask.memory_limit": memory_limit})
    result = run_pipeline(cfg, progress=not quiet)
    report.print(
        f"run complete in [bold]{result.out}[/]:\n"
        f"  sample STAC catalog  {result.sample.catalog}\n"
        f"  ground truth         {result.sample.truth}\n"
        f"  reflectance cube     {result.ingest.reflectance_url}\n"
        f"  DEM cube             {result.ingest.dem_url}\n"
        f"  ingest summary       {result.ingest.summary_url}\n"
        f"  sites                {result.sites.out} ({result.sites.n_sites} sites)\n"
        f"  site members         {result.sites.members}\n"
        f"  site volumes         {result.volumes.out / 'site_volumes.parquet'}\n"
        f"  waste deposits       {result.volumes.out / 'waste_deposits.parquet'} ({result.volumes.n_deposits})\n"
        f"  dh raster            {result.volumes.out / 'dh.zarr'}"
    )


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
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Link mine points (and polygons) into clusters or sites with exact sparse hierarchical clustering.

    Points mode runs its graph tiles and clustering shards in this process, or on dask workers with --scheduler.
    """
    from mtg.pipeline.dask_cluster import dask_scheduler
    from mtg.pipeline.link import link_points, link_sites, parse_distance

    _setup_logging(quiet)
    h = parse_distance(h_max, "--h-max")
    cuts = [parse_distance(c, "--cut") for c in cut or []]
    if polygons:
        if len(cuts) > 1:
            raise MtgError(f"sites mode links at one cut; got {len(cuts)} --cut values")
        if cuts and cuts[0] > h:
            raise MtgError(f"--cut {cut[0]} is above --h-max {h_max}")
        result = link_sites(polygons, points, out or Path("sites.parquet"), cut=cuts[0] if cuts else h,
                            linkage=linkage, lon_col=lon_col, lat_col=lat_col, commodity_table=commodity_table)
        report.print(
            f"sites: [bold]{result.out}[/] ({result.n_sites} sites from {result.n_polygons} polygons and "
            f"{result.n_points} points at {result.cut:g} m; {result.n_point_only_sites} without polygons)\n"
            f"members: {result.members}; {result.seconds:.1f} s"
        )
        return
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
        help="Earlier DEM: GeoTIFF/COG path or URL, Zarr cube (URL#EPOCH, e.g. dem.zarr#0) or STAC item JSON.")],
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
    storage_options: Annotated[Optional[str], typer.Option(
        help="fsspec storage options (JSON) for remote Zarr DEMs.")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Per-site excavated and deposited volumes between two DEM epochs, with 1-sigma errors and waste deposits."""
    from mtg.pipeline.volume import measure_volumes

    _setup_logging(quiet)
    if threshold_m is not None and threshold_nmad is not None:
        raise MtgError("give --threshold-nmad or --threshold-m, not both")
    cfg = with_overrides(load_config(config), {
        "volume.coregister": coregister, "volume.tilt": tilt, "volume.threshold_nmad": threshold_nmad,
        "volume.threshold_m": threshold_m, "volume.void_policy": void_policy, "volume.min_deposit_m2": min_deposit_m2,
    }).volume
    result = measure_volumes(before, after, sites, out, coregister=cfg.coregister, tilt=cfg.tilt,
                             threshold_nmad=cfg.threshold_nmad, threshold_m=cfg.threshold_m,
                             void_policy=cfg.void_policy, min_deposit_m2=cfg.min_deposit_m2, site_id_col=site_id_col,
                             storage_options=parse_storage_options(storage_options) if storage_options else None)
    shift = result.coregistration
    coreg = (f"shift {shift['shift_x_m']:.2f} m east, {shift['shift_y_m']:.2f} m north, bias {shift['bias_m']:.2f} m"
             if shift.get("applied") else "not co-registered")
    report.print(
        f"volumes of {result.n_sites} sites: [bold]{result.out / 'site_volumes.parquet'}[/]\n"
        f"waste deposits: {result.out / 'waste_deposits.parquet'} ({result.n_deposits})\n"
        f"dh: {result.out / 'dh.zarr'}; {coreg}; stable-terrain NMAD {result.nmad_m:.2f} m, threshold "
        f"{result.threshold_m:.2f} m; {result.seconds:.1f} s"
    )
