"""The run configuration: one YAML or TOML file, validated on load. Every CLI option has a key here.

Each stage's options are defined once, as a section model here (``VolumeOptions``, ``SegmentOptions``, ...): the
stage functions of :mod:`mtg.api` take them (or the same names as keyword arguments, checked by
:func:`stage_options`), the run-config file holds them (with the stage's inputs, in ``VolumeConfig`` and so on),
and the command line overrides them by dotted key (:func:`with_overrides`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtg.pipeline.catalogs import format_validation_error
from mtg.pipeline.errors import MtgError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaskConfig(_Section):
    """Where dask runs (``--scheduler``, ``--workers``, ``--memory-limit``)."""

    scheduler: str = "threads"
    workers: int | None = Field(default=None, ge=1)
    memory_limit: str | None = None

    @field_validator("scheduler")
    @classmethod
    def _known(cls, value: str) -> str:
        if value in ("threads", "local", "local-cuda", "gateway", "kubernetes") or value.startswith("tcp://"):
            return value
        raise ValueError("allowed values are 'threads', 'local', 'local-cuda', 'gateway', 'kubernetes' or a "
                         "'tcp://HOST:PORT' address")

    @field_validator("memory_limit")
    @classmethod
    def _bytes(cls, value: str | None) -> str | None:
        from dask.utils import parse_bytes

        if value is None or value == "auto":
            return value
        try:
            size = parse_bytes(value) if value.strip() else 0
        except (ValueError, TypeError, OverflowError):
            raise ValueError("a memory size such as '2GiB', '512MB' or 'auto' is needed") from None
        if size <= 0:
            raise ValueError("a memory size above 0 is needed")
        return value


class SampleConfig(_Section):
    """The embedded sample region (``mtg sample``)."""

    seed: int = 0
    size_km: float = Field(default=20.0, gt=0.5, le=100)
    n_dates: int = Field(default=8, ge=6, le=48)


class ChunkConfig(_Section):
    """Zarr chunking of the cubes: ``time`` steps by ``space`` x ``space`` pixels."""

    time: int = Field(default=8, ge=1)
    space: int = Field(default=512, ge=64)


class IngestConfig(_Section):
    """Datacube ingest (``mtg ingest``)."""

    catalog: str = "sample"
    bbox: tuple[float, float, float, float] | None = None
    aoi: str | None = None
    time: str | None = None
    dem_time: str | None = None
    out: str | None = None
    loader: Literal["odc-stac", "stackstac"] = "odc-stac"
    crs: str | None = None
    resolution: float = Field(default=10.0, gt=0)
    dem_resolution: float = Field(default=30.0, gt=0)
    chunks: ChunkConfig = ChunkConfig()
    storage_options: dict[str, Any] = {}
    dem_references: bool = False
    overwrite: bool = False


class LinkOptions(_Section):
    """How mine polygons and points are linked into sites (:func:`mtg.api.link`, ``mtg link`` in sites mode)."""

    cut: str | float = "1km"
    linkage: Literal["single", "complete", "average"] = "single"
    levels: list[str | float] = []
    choose_cut: bool = False
    lon_col: str = "lon"
    lat_col: str = "lat"
    commodity_cols: list[str] | None = None
    primary_cols: list[str] | None = None
    point_id_col: str | None = None
    country_col: str | None = None
    points_filter: list[str] = []


class LinkConfig(LinkOptions):
    """The site-linking stage of ``mtg run``: its options and its inputs besides the segmentation's polygons."""

    points: str | None = None
    polygons: list[str] = []
    commodity_table: str | None = None


class LandUseOptions(_Section):
    """Commodity land use (:func:`mtg.api.land_use`, ``mtg landuse``)."""

    choose_cut: bool = False
    h_max: str | float | None = None
    sensitivity: list[str | float] = []
    country_col: str | None = None


class LandUseConfig(LandUseOptions):
    """Commodity land use of ``mtg run``: its options and the country boundary layer."""

    countries: str | None = None


class IndicatorsConfig(_Section):
    """Site indicators of ``mtg run`` (as ``mtg indicators``): footprints of two epochs for the area change."""

    footprints_before: list[str] = []
    footprints_after: list[str] = []


class VerifyConfig(_Section):
    """Verification of reported figures against the site indicators (as ``mtg verify``); off without a table."""

    reported: str | None = None
    tolerance: float = Field(default=0.25, gt=0)
    sigma: float = Field(default=2.0, gt=0)
    max_distance: str = "5km"


class VolumeOptions(_Section):
    """How volumes are measured between two DEM epochs (:func:`mtg.api.volumes`, ``mtg volume``)."""

    coregister: bool = True
    tilt: bool = False
    threshold_nmad: float = Field(default=2.0, ge=0)
    threshold_m: float | None = Field(default=None, ge=0)
    void_policy: Literal["none", "local-mean", "hypsometric"] = "local-mean"
    min_deposit_m2: float = Field(default=10_000.0, ge=0)
    #: co-registration never uses cells this close (m) to a site: their change is not noise
    stable_buffer_m: float = Field(default=200.0, ge=0)
    #: side (cells) of the calibration window of co-registration and dh statistics: 61 km of 30 m cells hold
    #: terrain of every aspect; its float64 work arrays take about 0.5 GB
    calibration_size: int = Field(default=2048, ge=64)
    datum_policy: Literal["convert", "assume-same"] = "convert"
    #: where the per-site integration runs: ``auto`` (the CUDA kernel in a worker that has a GPU, else the CPU
    #: kernel), ``cpu`` or ``cuda``
    device: Literal["auto", "cpu", "cuda"] = "auto"


class VolumeConfig(VolumeOptions):
    """The DEM-change stage of ``mtg run``: its options and the two DEM epochs.

    ``before``/``after``: a DEM collection id of the run's catalog (``nasadem``, ``cop-dem-glo-30``, ...), or a
    DEM file/URL (GeoTIFF/COG, Zarr ``URL#EPOCH``, STAC item, kerchunk references); ``*_datum``: the vertical
    datum of a file (``EPSG:5773``...; a collection declares its own). Neither given: the first and last epoch of
    the catalog's DEM collection, when it has two.
    """

    before: str | None = None
    after: str | None = None
    before_datum: str | None = None
    after_datum: str | None = None


class SegmentOptions(_Section):
    """Mine-footprint segmentation (:func:`mtg.api.segment` and :func:`mtg.api.footprints`, ``mtg segment``, the
    segmentation stage of ``mtg run``)."""

    model: str | None = None
    threshold: float = Field(default=0.5, gt=0, lt=1)
    min_area_m2: float = Field(default=5_000.0, ge=0)
    simplify_m: float = Field(default=5.0, ge=0)
    tile: int = Field(default=256, ge=8)
    overlap: int = Field(default=64, ge=0)
    batch: int = Field(default=8, ge=1)
    chunk: int = Field(default=1024, ge=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    time: str | None = None



class TimelineOptions(_Section):
    """Yearly (or quarterly) footprints and per-site series from the cube's time axis (:mod:`mtg.pipeline.timeline`,
    ``mtg timeline``, the timeline stage of ``mtg run``); the segmentation itself takes :class:`SegmentOptions`."""

    period: Literal["year", "quarter"] = "year"
    start: float = Field(default=0.3, gt=0, lt=1)
    stop: float = Field(default=0.1, gt=0, lt=1)
    band: float = Field(default=0.2, gt=0, lt=0.5)
    zone_m: float = Field(default=250.0, ge=0)
    tiles: bool = False  # planned runs (mtg run --plan): map each tile's periods too (one segmentation per period)


class TrainConfig(_Section):
    """Training a segmentation model (``mtg train``)."""

    holdout: tuple[float, float, float, float] | None = None
    epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=6, ge=1)
    chip: int = Field(default=128, ge=8)
    chips_per_epoch: int = Field(default=512, ge=1)
    batch: int = Field(default=16, ge=1)
    positive_fraction: float = Field(default=0.5, ge=0, le=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    block: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=2e-3, gt=0)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    norm: Literal["group", "batch"] = "group"
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    class_column: str | None = "feature_type"


class PlanConfig(_Section):
    """Global reruns (``mtg plan``, ``mtg run --plan``): how areas of interest become work tiles, what a CPU or GPU
    hour and a stored or transferred GB cost, and how tiles are retried.

    Prices are in US dollars and are defaults to change, not quotes: ``cpu_hour`` about one on-demand vCPU hour of a
    compute-optimised cloud VM, ``gpu_hour`` about one data-centre GPU hour, ``storage_gb_month`` object storage,
    ``egress_gb`` internet egress, charged on the bytes read when ``read_egress`` (a cluster outside the data's
    cloud region; 0 when it runs next to the data, as it should). ``gpu_segment_mpx_s`` is the assumed segmentation
    throughput of one GPU (not measured: no GPU has been lent to this project yet; set it from
    ``benchmarks/segment_throughput.py`` on yours).
    """

    buffer: str = "5km"
    tile_km: float = Field(default=20.0, gt=0)
    halo_m: float = Field(default=300.0, ge=0)
    calibration: str | None = None
    revisit_days: float = Field(default=5.0, gt=0)
    dem_epochs: int = Field(default=2, ge=1)
    cpu_hour: float = Field(default=0.048, ge=0)
    gpu_hour: float = Field(default=2.5, ge=0)
    storage_gb_month: float = Field(default=0.023, ge=0)
    storage_months: float = Field(default=12.0, ge=0)
    egress_gb: float = Field(default=0.087, ge=0)
    read_egress: bool = False
    gpu_segment_mpx_s: float = Field(default=40.0, gt=0)
    retries: int = Field(default=2, ge=0)


class RunConfig(_Section):
    """Everything ``mtg run`` does, section by stage."""

    out: str = "mtg-run"
    sample: SampleConfig = SampleConfig()
    ingest: IngestConfig = IngestConfig()
    segment: SegmentOptions = SegmentOptions()
    timeline: TimelineOptions = TimelineOptions()
    train: TrainConfig = TrainConfig()
    # the run forms each site at its own cut h <= link.cut (balancing area without a commodity against area
    # with several), among these levels
    link: LinkConfig = LinkConfig(levels=["250m", "500m", "750m"], choose_cut=True)
    landuse: LandUseConfig = LandUseConfig()
    indicators: IndicatorsConfig = IndicatorsConfig()
    verify: VerifyConfig = VerifyConfig()
    volume: VolumeConfig = VolumeConfig()
    plan: PlanConfig = PlanConfig()
    dask: DaskConfig = DaskConfig()


Options = TypeVar("Options", bound=BaseModel)


def stage_options(cls: type[Options], options: BaseModel | None = None, **overrides: Any) -> Options:
    """The options of a stage: ``options`` (a section of the run config, or None for the defaults) with keyword
    overrides, validated.

    Sections that add a stage's inputs to its options (``VolumeConfig`` to ``VolumeOptions``) are accepted: only
    the option fields are taken.

    Raises
    ------
    MtgError
        Naming the option, the bad value and the allowed values; or an unknown option name.
    """
    data = options.model_dump(include=set(cls.model_fields)) if options is not None else {}
    unknown = sorted(set(overrides) - set(cls.model_fields))
    if unknown:
        raise MtgError(f"unknown option(s) {unknown} of {cls.__name__}; known: {sorted(cls.model_fields)}")
    data.update(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise MtgError(f"option {format_validation_error(err)}") from None


def load_config(path: str | Path | None) -> RunConfig:
    """Read and validate a run configuration (``.yaml``, ``.yml`` or ``.toml``); None gives the defaults.

    Raises
    ------
    MtgError
        Naming the file, and for each problem the key path, the message and the allowed values.
    """
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MtgError(f"cannot read the config file {path}: {err}") from None
    except UnicodeDecodeError as err:
        raise MtgError(f"config file {path} is not UTF-8 text: {err}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise MtgError(f"config file {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                       f"{_syntax_error(err)}") from None
    try:
        return RunConfig.model_validate(raw or {})
    except ValidationError as err:
        raise MtgError(f"config file {path}: {format_validation_error(err)}") from None


def _syntax_error(err: Exception) -> str:
    """A YAML or TOML syntax error in one line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    return " ".join(str(err).split())


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with dotted-key overrides (``{"ingest.loader": "stackstac"}``) applied and validated.

    None values are ignored, so unset command-line options keep the file's values.
    """
    data = config.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise MtgError(f"option {format_validation_error(err)}") from None
