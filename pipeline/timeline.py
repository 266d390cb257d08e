"""When mining happened: one footprint map per period from a cube's time axis, made temporally consistent, and
per-site series of area, onset, expansion and revegetation.

1. The cube's acquisitions are grouped by calendar period (year or quarter). Each period's acquisitions are
   composited and segmented exactly as ``mtg segment`` does for the whole series (:func:`mtg.pipeline.segment.segment`:
   the latest clear view of each pixel within the period, the same model and tiling): a pixel never clear in a
   period has no probability there (missing, not "not mining").
2. Each pixel's sequence of probabilities is decoded by a two-state Markov model
   (:func:`mtg.kernels.temporal.viterbi_mining`: starting to mine between periods costs ``-log start``, stopping
   ``-log stop``): one-period flickers weaker than both switches are undone, a pixel opens where its probability
   exceeds ``1 / (1 + start)`` (0.77 by default) and stops where it falls below ``stop / (1 + stop)`` (0.09), and
   an unseen period takes the state its neighbours agree on.
3. Sites are the given sites' footprints (``--sites``), or else the groups of pixels mining in any period that lie
   within ``zone_m`` of each other (ids ``T001``, ... by area); every pixel within ``zone_m`` of a site belongs to
   the nearest one.
4. Per site and period: ``area_m2`` (decoded mining pixels, unseen ones counted by their decoded state; NaN when
   none of the site's pixels was seen), ``area_sigma_m2`` (half the area of the site's seen pixels whose
   probability lies within ``band`` of the threshold, i.e. half the spread between the areas at thresholds
   ``threshold - band`` and ``threshold + band``, plus half the area inferred as mining in unseen pixels),
   ``missing_share`` (share of the site's pixels not seen), ``new_m2`` and ``revegetated_m2`` (pixels that turned
   mining / stopped mining since the previous period; NaN in the first). Per site: the onset (first period whose
   area reaches ``min_area_m2``; ``onset_censored`` when no period before it was seen, so mining may be older), the
   expansion rate (least-squares slope of area over the periods' mid-dates, m^2 per year), the areas of the first
   and last period and their change.

Writes ``OUT/timeline.zarr`` (``probability`` and ``mining`` by period, dims ``time, y, x``: time is the period's
start, the ``periods`` attribute lists their labels; ``mining`` is 1 mining, 0 not, 255 not seen in the period),
``OUT/site_series.parquet`` (one row per site and period), ``OUT/site_timeline.parquet`` (GeoParquet, one row per site: the summary and the outline of all its
periods' footprints), ``OUT/period_footprints.parquet`` (GeoParquet, one row per site and period),
``OUT/change.parquet`` (GeoParquet: the new and revegetated areas of the last period) and ``OUT/timeline.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from scipy import ndimage

from mtg.kernels.temporal import viterbi_mining
from mtg.pipeline.config import SegmentOptions, TimelineOptions, stage_options
from mtg.pipeline.dask_cluster import DaskProgress
from mtg.pipeline.errors import MtgError
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.segment import segment
from mtg.pipeline.table_io import atomic_folder, atomic_write_all, to_geoparquet, write_json
from mtg.pipeline.zarr_store import consolidated_on_purpose, crs_coordinate

log = logging.getLogger(__name__)

#: pandas period frequency of each ``--period``.
FREQUENCIES = {"year": "Y", "quarter": "Q"}
#: ``mining`` code of a pixel not seen in a period.
UNSEEN = 255
SERIES_COLUMNS = ["site_id", "period", "start", "end", "area_m2", "area_sigma_m2", "missing_share", "new_m2",
                  "revegetated_m2"]
SUMMARY_COLUMNS = ["site_id", "onset", "onset_censored", "first_period", "last_period", "area_first_m2",
                   "area_last_m2", "area_change_m2", "expansion_m2_per_year", "revegetated_m2", "new_last_m2",
                   "revegetated_last_m2", "geometry"]


@dataclass
class TimelineResult:
    """What :func:`run_timeline` wrote."""

    out: Path
    store: Path
    series: Path
    summary: Path
    footprints: Path
    change: Path
    periods: list[str]
    n_sites: int
    n_pixels: int
    seconds: float


@dataclass(frozen=True)
class Period:
    """One period of the series: its label, first and last day, and the cube's acquisitions in it."""

    label: str
    start: pd.Timestamp
    end: pd.Timestamp
    index: np.ndarray

    @property
    def middle_years(self) -> float:
        """The period's mid-date in decimal years (for rates)."""
        mid = self.start + (self.end - self.start) / 2
        return mid.year + (mid.dayofyear - 0.5) / (366 if mid.is_leap_year else 365)


def periods_of(times: np.ndarray, period: str) -> list[Period]:
    """The calendar periods that hold the acquisition ``times``, in order (periods without acquisitions left out).

    Raises
    ------
    MtgError
        On an unknown ``period``.
    """
    if period not in FREQUENCIES:
        raise MtgError(f"--period {period!r} must be one of {sorted(FREQUENCIES)}")
    labels = pd.DatetimeIndex(times).to_period(FREQUENCIES[period])
    return [Period(str(p), p.start_time.normalize(), p.end_time.normalize(), np.flatnonzero(labels == p))
            for p in labels.unique().sort_values()]


def period_probabilities(cube: xr.Dataset, periods: list[Period], *, name: str = "the cube",
                         options: SegmentOptions | None = None) -> xr.Dataset:
    """Each period's mining probability, lazily: :func:`mtg.pipeline.segment.segment` of its acquisitions.

    Returns
    -------
    xarray.Dataset
        ``probability`` (``time, y, x`` float32, NaN where never clear in the period); ``time`` is each period's
        start, the ``periods`` attribute lists their labels; with the cube's CRS and :func:`segment`'s attributes.
    """
    maps = [segment(cube.isel(time=p.index), name=f"{name} ({p.label})", options=options) for p in periods]
    stacked = xr.concat([m["probability"] for m in maps], dim=pd.Index([p.start for p in periods], name="time"))
    ds = xr.Dataset({"probability": stacked}, attrs={**maps[0].attrs, "source_cube": name})
    ds.attrs["periods"] = [p.label for p in periods]
    ds["probability"].encoding["grid_mapping"] = "spatial_ref"
    return ds.rio.write_crs(cube.rio.crs)


def site_zones(seeds: np.ndarray, resolution: float, zone_m: float) -> np.ndarray:
    """Each pixel's site: the label of the nearest seed pixel within ``zone_m`` metres, 0 beyond.

    Parameters
    ----------
    seeds : numpy.ndarray
        ``(y, x)`` int labels of the sites' pixels (0 elsewhere).
    resolution : float
        Pixel size (m).
    zone_m : float
        How far from its site a pixel still belongs to it.
    """
    if not seeds.any():
        return np.zeros_like(seeds)
    distance, (rows, cols) = ndimage.distance_transform_edt(seeds == 0, sampling=resolution, return_indices=True)
    return np.where(distance <= zone_m, seeds[rows, cols], 0)


def sites_from_states(states: np.ndarray, resolution: float, zone_m: float,
                      min_area_m2: float) -> tuple[np.ndarray, list[str]]:
    """Sites of a timeline without a sites file: groups of pixels mining in any period lying within ``zone_m`` of
    each other, of at least ``min_area_m2`` ever mined; ids ``T001``... from the largest.

    Returns
    -------
    (numpy.ndarray, list of str)
        ``(y, x)`` labels of the sites' ever-mining pixels (1.. in id order, 0 elsewhere) and the ids.
    """
    ever = states.any(axis=0)
    near = ndimage.distance_transform_edt(~ever, sampling=resolution) <= zone_m / 2
    groups, n = ndimage.label(near)
    groups = np.where(ever, groups, 0)
    areas = np.bincount(groups.ravel(), minlength=n + 1)[1:] * resolution**2
    order = [g + 1 for g in np.argsort(-areas, kind="stable") if areas[g] >= min_area_m2]
    lookup = np.zeros(n + 1, dtype=np.int32)
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup[groups], [f"T{i:03d}" for i in range(1, len(order) + 1)]


def _rasterise_sites(sites: Any, shape: tuple[int, int], transform: Affine, crs: Any) -> tuple[np.ndarray, list[str]]:
    """Labels (1.. in file order) of the given sites' footprints on the grid, and their ids."""
    from rasterio.features import rasterize

    frame = sites[sites.geometry.notna() & ~sites.geometry.is_empty].to_crs(crs)
    ids = [str(s) for s in frame["site_id"]]
    shapes = [(geom, i) for i, geom in enumerate(frame.geometry, start=1)]
    seeds = rasterize(shapes, out_shape=shape, transform=transform, dtype="int32", all_touched=True) if shapes \
        else np.zeros(shape, dtype=np.int32)
    return seeds, ids


def series_table(probability: np.ndarray, states: np.ndarray, zones: np.ndarray, ids: list[str],
                 periods: list[Period], pixel_area: float, threshold: float, band: float) -> pd.DataFrame:
    """Per site and period: area, its uncertainty, missing share, new and revegetated area (module docstring)."""
    n = len(ids) + 1
    seen = np.isfinite(probability)
    zone_flat = zones.ravel()
    zone_pixels = np.bincount(zone_flat, minlength=n).astype(np.float64)

    def per_site(mask: np.ndarray) -> np.ndarray:
        return np.bincount(zone_flat, weights=mask.ravel().astype(np.float64), minlength=n) * pixel_area

    rows = []
    for t, period in enumerate(periods):
        area = per_site(states[t])
        seen_area = per_site(seen[t])
        near_threshold = per_site(seen[t] & (np.abs(np.nan_to_num(probability[t], nan=-1.0) - threshold) < band))
        inferred = per_site(states[t] & ~seen[t])
        new = per_site(states[t] & ~states[t - 1]) if t else np.full(n, np.nan)
        gone = per_site(~states[t] & states[t - 1]) if t else np.full(n, np.nan)
        for k, site_id in enumerate(ids, start=1):
            unseen = seen_area[k] == 0
            rows.append({
                "site_id": site_id, "period": period.label, "start": period.start.date().isoformat(),
                "end": period.end.date().isoformat(),
                "area_m2": np.nan if unseen else area[k],
                "area_sigma_m2": np.nan if unseen else 0.5 * (near_threshold[k] + inferred[k]),
                "missing_share": 1.0 - seen_area[k] / (zone_pixels[k] * pixel_area) if zone_pixels[k] else np.nan,
                "new_m2": np.nan if unseen else new[k], "revegetated_m2": np.nan if unseen else gone[k]})
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


def summary_table(series: pd.DataFrame, periods: list[Period], min_area_m2: float) -> pd.DataFrame:
    """Per site: onset, first/last period areas and change, expansion rate and revegetated area (module docstring)."""
    years = {p.label: p.middle_years for p in periods}
    rows = []
    for site_id, group in series.groupby("site_id", sort=False):
        known = group[group["area_m2"].notna()]
        reached = known[known["area_m2"] >= min_area_m2]
        onset = reached["period"].iloc[0] if len(reached) else None
        before = group.iloc[:group["period"].tolist().index(onset)] if onset else group
        x = np.array([years[p] for p in known["period"]])
        slope = float(np.polyfit(x, known["area_m2"].to_numpy(), 1)[0]) if len(known) >= 2 else np.nan
        first, last = group.iloc[0], group.iloc[-1]
        rows.append({
            "site_id": site_id, "onset": onset,
            "onset_censored": bool(onset is not None and before["area_m2"].isna().all()),
            "first_period": first["period"], "last_period": last["period"],
            "area_first_m2": first["area_m2"], "area_last_m2": last["area_m2"],
            "area_change_m2": last["area_m2"] - first["area_m2"], "expansion_m2_per_year": slope,
            "revegetated_m2": float(group["revegetated_m2"].sum(min_count=1)),
            "new_last_m2": last["new_m2"], "revegetated_last_m2": last["revegetated_m2"]})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:-1])


def mask_polygons(labels: np.ndarray, ids: list[str], transform: Affine) -> dict[str, Any]:
    """The MultiPolygon of each label's pixels (by id; labels 1.. index ``ids``), pixel edges kept."""
    from rasterio.features import shapes
    from shapely.geometry import MultiPolygon, shape
    from shapely.ops import unary_union

    pieces: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, transform=transform, connectivity=4):
        pieces.setdefault(int(value), []).append(shape(geom))
    out = {}
    for value, parts in pieces.items():
        union = unary_union(parts)
        out[ids[value - 1]] = union if union.geom_type == "MultiPolygon" else MultiPolygon([union])
    return out


def cube_periods(cube: xr.Dataset, name: str, time_range: str | None,
                 period: str) -> tuple[xr.Dataset, list[Period]]:
    """``cube``'s acquisitions within ``time_range`` (``START/END``) and their periods, for a timeline.

    Raises
    ------
    MtgError
        When the cube has no time axis or no acquisition in the range.
    """
    if "time" not in cube.dims:
        raise MtgError(f"{name} has no time axis; a timeline needs a cube of several acquisitions")
    if time_range:
        first, _, last = time_range.partition("/")
        cube = cube.sel(time=slice(first or None, last or None))
    periods = periods_of(cube["time"].values, period)
    if not periods:
        raise MtgError(f"{name} has no acquisitions{f' in --time {time_range}' if time_range else ''}")
    return cube, periods


def decode(probability: np.ndarray, probabilities: xr.Dataset, options: TimelineOptions) -> tuple[np.ndarray, xr.Dataset]:
    """The temporally consistent states of ``probability`` (``(period, y, x)``, NaN not seen) and the ``mining``
    layer (1 mining, 0 not, :data:`UNSEEN`) on the grid of ``probabilities`` (:func:`period_probabilities`)."""
    rule = f"two-state Markov model, Viterbi path; start {options.start}, stop {options.stop}"
    states = np.asarray(viterbi_mining(probability, options.start, options.stop))
    mining = np.where(np.isfinite(probability), states, UNSEEN).astype(np.uint8)
    coded = xr.Dataset({"mining": (("time", "y", "x"), mining, {
        "long_name": "mining after the temporal-consistency rule", "flag_values": [0, 1, UNSEEN],
        "flag_meanings": "not_mining mining not_seen", "rule": rule})},
        coords={"spatial_ref": probabilities["spatial_ref"], "time": probabilities["time"],
                "y": probabilities["y"], "x": probabilities["x"]},
        attrs={**probabilities.attrs, "rule": rule})
    return states, coded


@dataclass
class Timeline:
    """A timeline in memory (:func:`timeline`)."""

    maps: xr.Dataset
    sites: SiteTimeline
    periods: list[str]


def timeline(cube: xr.Dataset, *, sites: Any = None, name: str = "the cube", client: Any = None,
             segment_options: SegmentOptions | None = None, options: TimelineOptions | None = None,
             **overrides: Any) -> Timeline:
    """Footprints per period and per-site series of a cube's time axis, in memory (module docstring).

    Parameters
    ----------
    cube : xarray.Dataset
        Reflectance with a time axis (:func:`mtg.pipeline.zarr_store.open_cube`), as for
        :func:`mtg.pipeline.segment.segment`.
    sites : geopandas.GeoDataFrame, optional
        Site footprints with ``site_id`` (e.g. :func:`mtg.api.link`'s sites); default: sites from the footprints
        themselves.
    name : str
        What to call the cube in errors.
    client : distributed.Client, optional
        Compute the segmentation on this cluster; default the active dask scheduler.
    segment_options : SegmentOptions, optional
        The segmentation's model, threshold, min_area_m2, tiling, device and ``time`` range.
    options : TimelineOptions, optional
        ``period``, ``start``, ``stop``, ``band``, ``zone_m``; keyword arguments override them.

    Returns
    -------
    Timeline
        ``maps``: ``probability`` and ``mining`` (``time, y, x``, computed; ``mining`` 1, 0 or :data:`UNSEEN`)
        with the cube's CRS; ``sites``: the :class:`SiteTimeline` tables; ``periods``: the period labels.

    Raises
    ------
    MtgError
        On a cube without a time axis or acquisitions in the range, sites without ``site_id``, and as
        :func:`mtg.pipeline.segment.segment`.

    Examples
    --------
    >>> from mtg.api import open_cube, timeline  # doctest: +SKIP
    >>> years = timeline(open_cube("mtg-run/cubes/reflectance.zarr"))  # doctest: +SKIP
    >>> years.sites.series.pivot(index="site_id", columns="period", values="area_m2")  # doctest: +SKIP
    """
    opts = stage_options(TimelineOptions, options, **overrides)
    seg = stage_options(SegmentOptions, segment_options)
    if sites is not None and "site_id" not in sites.columns:
        raise MtgError("the sites given to timeline have no site_id column")
    maps, states, periods = period_maps(cube, name=name, client=client, segment_options=seg, options=opts)
    tables = site_timeline(maps["probability"].values, states, periods, maps.rio.transform(), maps.rio.crs,
                           sites=sites, threshold=seg.threshold, min_area_m2=seg.min_area_m2, options=opts)
    return Timeline(maps=maps, sites=tables, periods=[p.label for p in periods])


def period_maps(cube: xr.Dataset, *, name: str, client: Any, segment_options: SegmentOptions,
                options: TimelineOptions) -> tuple[xr.Dataset, np.ndarray, list[Period]]:
    """Each period's ``probability`` and decoded ``mining`` (computed, with the cube's CRS), the decoded states
    (``(period, y, x)`` bool) and the periods: :func:`timeline` without the per-site tables."""
    ds, periods = cube_periods(cube, name, segment_options.time, options.period)
    probabilities = period_probabilities(ds, periods, name=name,
                                         options=segment_options.model_copy(update={"time": None}))
    probabilities = client.compute(probabilities).result() if client is not None else probabilities.compute()
    states, coded = decode(probabilities["probability"].values, probabilities, options)
    maps = probabilities.assign(mining=coded["mining"])
    maps["mining"].encoding["grid_mapping"] = "spatial_ref"
    return maps, states, periods


def run_timeline(cube: str, out: str | Path, *, sites: str | Path | None = None,
                 storage_options: dict[str, Any] | None = None, client: Any = None, progress: bool = True,
                 segment_options: SegmentOptions | None = None, options: TimelineOptions | None = None,
                 **overrides: Any) -> TimelineResult:
    """Map mine footprints per period and per-site series from a cube's time axis (module docstring).

    Parameters
    ----------
    cube : str
        Path or URL of a complete reflectance cube with a time axis (``mtg ingest``).
    out : str or Path
        Output folder.
    sites : str or Path, optional
        A sites layer (``sites.parquet`` of ``mtg link``, or any vector file of site polygons with ``site_id``);
        default: sites from the footprints themselves.
    storage_options : dict, optional
        fsspec options for a remote cube.
    client : distributed.Client, optional
        Run the segmentation blocks on this cluster's workers; default the threads of this process.
    progress : bool
        Show dask's progress bar.
    segment_options : SegmentOptions, optional
        The segmentation's model, threshold, min_area_m2, tiling and device.
    options : TimelineOptions, optional
        ``period``, ``start``, ``stop``, ``band``, ``zone_m``; keyword arguments override them.

    Returns
    -------
    TimelineResult

    Raises
    ------
    MtgError
        On a missing or incomplete cube, a cube without a time axis, a sites file without ``site_id``, and as
        :func:`mtg.pipeline.segment.segment`.
    """
    from mtg.pipeline.io.vectors import read_sites
    from mtg.pipeline.zarr_store import open_cube

    start_clock = time.perf_counter()
    opts = stage_options(TimelineOptions, options, **overrides)
    seg = stage_options(SegmentOptions, segment_options)
    ds, periods = cube_periods(open_cube(cube, storage_options), cube, seg.time, opts.period)
    given = read_sites(sites) if sites is not None else None
    if given is not None and "site_id" not in given.columns:
        raise MtgError(f"sites file {sites} has no site_id column")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "timeline.zarr"
    log.info("mapping %d %s periods (%s) of %s", len(periods), opts.period, ", ".join(p.label for p in periods), cube)
    # the cube relative to the folder above the output (the run folder of `mtg run`): a copied run stays valid
    source = portable_path(cube, out.parent)
    probabilities = period_probabilities(ds, periods, name=source, options=seg.model_copy(update={"time": None}))
    transform, crs = probabilities.rio.transform(), probabilities.rio.crs
    with atomic_folder(store) as tmp, consolidated_on_purpose():
        delayed = crs_coordinate(probabilities).to_zarr(tmp, mode="w", consolidated=True, zarr_format=3,
                                                        compute=False)
        DaskProgress(client, enabled=progress)(delayed, f"segmenting {len(periods)} periods into {store.name}")
        probability = xr.open_zarr(tmp, consolidated=True)["probability"].values
        states, coded = decode(probability, probabilities, opts)
        coded["mining"].encoding.update({"grid_mapping": "spatial_ref", "chunks": probabilities["probability"]
                                         .data.chunksize})
        crs_coordinate(coded).drop_vars(["spatial_ref", "time", "y", "x"]).to_zarr(tmp, mode="a", consolidated=True,
                                                                             zarr_format=3)
    rule = coded.attrs["rule"]
    meta = {"period": opts.period, "rule": rule, "threshold": seg.threshold, "band": opts.band,
            "zone_m": opts.zone_m, "cube": source}
    tables = site_timeline(probability, states, periods, transform, crs, sites=given, threshold=seg.threshold,
                           min_area_m2=seg.min_area_m2, options=opts)
    write_site_tables(tables, out, meta)
    n_sites = tables.n_sites
    seconds = time.perf_counter() - start_clock
    write_json({**meta, "periods": [p.label for p in periods], "n_sites": n_sites, "seconds": seconds},
               out / "timeline.json")
    log.info("%d sites over %d periods; per-site series in %s (%.1f s)", n_sites, len(periods),
             out / "site_series.parquet", seconds)
    return TimelineResult(out=out, store=store, series=out / "site_series.parquet",
                          summary=out / "site_timeline.parquet", footprints=out / "period_footprints.parquet",
                          change=out / "change.parquet", periods=[p.label for p in periods], n_sites=n_sites,
                          n_pixels=int(probability[0].size), seconds=seconds)


@dataclass
class SiteTimeline:
    """The per-site tables and layers of a timeline (module docstring), in memory."""

    series: pd.DataFrame
    summary: Any
    footprints: Any
    change: Any

    @property
    def n_sites(self) -> int:
        """How many sites the tables describe."""
        return len(self.summary)


def site_timeline(probability: np.ndarray, states: np.ndarray, periods: list[Period], transform: Affine, crs: Any,
                  *, sites: Any = None, threshold: float, min_area_m2: float,
                  options: TimelineOptions) -> SiteTimeline:
    """The per-site tables and layers of a timeline (module docstring) from its per-period probabilities and
    decoded states.

    Parameters
    ----------
    probability : numpy.ndarray
        ``(period, y, x)`` probability of mining, NaN where not seen.
    states : numpy.ndarray
        ``(period, y, x)`` bool decoded states (:func:`mtg.kernels.temporal.viterbi_mining`).
    periods : list of Period
        The periods, in order.
    transform, crs
        The pixel grid.
    sites : geopandas.GeoDataFrame, optional
        Sites with ``site_id`` and footprints; default: sites from the states (:func:`sites_from_states`).
    threshold, min_area_m2 : float
        The segmentation's threshold and minimum area (the onset's area).
    options : TimelineOptions
        ``band`` and ``zone_m``.

    Returns
    -------
    SiteTimeline
        ``series`` (one row per site and period), ``summary`` (GeoDataFrame, one row per site with the outline of
        all its periods' footprints), ``footprints`` (GeoDataFrame, one row per site and period) and ``change``
        (GeoDataFrame, the new and revegetated areas of the last period).
    """
    import geopandas as gpd

    resolution = abs(transform.a)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    if sites is not None:
        seeds, ids = _rasterise_sites(sites, probability.shape[1:], transform, crs)
    else:
        seeds, ids = sites_from_states(states, resolution, options.zone_m, min_area_m2)
    zones = site_zones(seeds, resolution, options.zone_m)
    series = series_table(probability, states, zones, ids, periods, pixel_area, threshold, options.band)
    summary = summary_table(series, periods, min_area_m2)
    footprints, change = _layers(states, zones, ids, periods, transform, crs)
    outlines = mask_polygons(np.where(states.any(axis=0), zones, 0), ids, transform)
    summary = gpd.GeoDataFrame(summary, geometry=[outlines.get(s) for s in summary["site_id"]], crs=crs)
    return SiteTimeline(series=series, summary=summary, footprints=footprints, change=change)


def write_site_tables(tables: SiteTimeline, out: Path, metadata: dict[str, Any]) -> None:
    """Write a timeline's tables into ``out`` together (``site_series.parquet``, ``site_timeline.parquet``,
    ``period_footprints.parquet``, ``change.parquet``); ``metadata`` is what the GeoParquet files record of how
    they were made."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_all({out / "site_series.parquet": lambda tmp: tables.series.to_parquet(tmp, index=False),
                      out / "site_timeline.parquet": lambda tmp: to_geoparquet(tables.summary, tmp, metadata),
                      out / "period_footprints.parquet": lambda tmp: to_geoparquet(tables.footprints, tmp, metadata),
                      out / "change.parquet": lambda tmp: to_geoparquet(tables.change, tmp, metadata)})


def period_layers(result: TimelineResult, relative_to: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first and last periods' footprints as footprint layers by name (for the indicators' area before and
    after; ``period_footprints.parquet#PERIOD``, the path relative to ``relative_to``); both empty with fewer than
    two periods."""
    import geopandas as gpd

    if len(result.periods) < 2:
        return {}, {}
    frame = gpd.read_parquet(result.footprints)
    name = Path(result.footprints).resolve().relative_to(Path(relative_to).resolve())
    first, last = result.periods[0], result.periods[-1]
    return ({f"{name}#{first}": frame[frame["period"] == first].reset_index(drop=True)},
            {f"{name}#{last}": frame[frame["period"] == last].reset_index(drop=True)})


def _layers(states: np.ndarray, zones: np.ndarray, ids: list[str], periods: list[Period], transform: Affine,
            crs: Any) -> tuple[Any, Any]:
    """The per-site footprint of every period, and the new and revegetated areas of the last period."""
    import geopandas as gpd

    rows = []
    for t, period in enumerate(periods):
        for site_id, geom in mask_polygons(np.where(states[t], zones, 0), ids, transform).items():
            rows.append({"site_id": site_id, "period": period.label, "geometry": geom})
    footprints = gpd.GeoDataFrame(rows, columns=["site_id", "period", "geometry"], geometry="geometry", crs=crs)
    footprints.insert(2, "area_m2", footprints.geometry.area)
    rows = []
    if len(periods) > 1:
        now, before = states[-1], states[-2]
        for change, mask in (("new", now & ~before), ("revegetated", before & ~now)):
            for site_id, geom in mask_polygons(np.where(mask, zones, 0), ids, transform).items():
                rows.append({"site_id": site_id, "change": change, "period": periods[-1].label, "geometry": geom})
    change = gpd.GeoDataFrame(rows, columns=["site_id", "change", "period", "geometry"], geometry="geometry", crs=crs)
    change.insert(3, "area_m2", change.geometry.area)
    return footprints, change
