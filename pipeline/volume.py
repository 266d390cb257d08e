"""Volumes of DEM change per site: co-registration, differencing, cut/fill with uncertainty, waste deposits.

Steps (``mtg volume``, and the volume stage of ``mtg run``):

1. Read both epochs (:mod:`mtg.pipeline.dem_inputs`) and put the later one on the earlier one's grid.
2. Stable terrain: valid in both epochs and outside every site buffered by ``stable_buffer_m``; the kernel also
   drops slopes under 1 or over 70 degrees.
3. Co-registration (:func:`mtg.kernels.coregistration.nuth_kaab`): horizontal shift and vertical bias of the
   later epoch, iterated; optionally a planar tilt. Its numbers, with the stable-terrain median and NMAD of dh
   before and after, go to ``coregistration.json``.
4. ``dh = late - early``. Threshold ``t``: ``threshold_m``, else ``threshold_nmad`` x the stable-terrain NMAD.
5. Per site (:func:`mtg.kernels.cut_fill.cut_fill`, exact fractional coverage of the site polygon): excavated
   (dh < -t, reported positive), deposited (dh > t), net, areas, void fraction, voids filled by the void policy.
6. Uncertainty: the stable-terrain NMAD and the range of a spherical variogram fitted to stable dh give 1-sigma
   errors of each volume for its area (:func:`mtg.kernels.dh_statistics.volume_sigma`; Rolstad et al. 2009,
   in the spirit of Hugonnet et al. 2022).
7. Extractive-waste deposits: 8-connected areas of dh > t inside sites, of at least ``min_deposit_m2``, become
   polygons with area, mean and max thickness and volume, each linked to the site it overlaps most.

Outputs in ``out``: ``site_volumes.parquet`` (GeoParquet, one row per site), ``waste_deposits.parquet``
(GeoParquet), ``dh.zarr`` (the dh raster with its CRS) and ``coregistration.json``. Every file is written under
a temporary name and renamed, so a failed run never leaves a half-written output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from mtg.pipeline.dem_inputs import Dem, align, read_dem
from mtg.pipeline.errors import MtgError

log = logging.getLogger(__name__)

VOID_POLICIES = ("none", "local-mean", "hypsometric")
# Co-registration never uses cells within this distance (m) of a site: their change is not noise.
STABLE_BUFFER_M = 200.0
# Largest lag (m) of the stable-terrain variogram.
VARIOGRAM_MAX_LAG_M = 5_000.0


@dataclass
class VolumeResult:
    """What :func:`measure_volumes` wrote and found."""

    out: Path
    n_sites: int
    n_deposits: int
    threshold_m: float
    nmad_m: float
    range_m: float
    coregistration: dict[str, Any]
    seconds: float


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished temporary file or folder into place, replacing an older output."""
    if out.is_dir() and not out.is_symlink():
        old = _tmp(out)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def read_sites(path: str | Path, crs, id_col: str | None = None):
    """Site polygons from GeoParquet/GPKG/... in the DEM's CRS, with a ``site_id`` column.

    The id is ``id_col`` if given, else the file's ``site_id`` or ``id`` column, else ``site-<row>``.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise MtgError(f"the sites file {path} does not exist")
    try:
        frame = gpd.read_parquet(path) if path.suffix.lower() == ".parquet" else gpd.read_file(path)
    except Exception as err:  # noqa: BLE001 - pyogrio/pyarrow raise many types
        raise MtgError(f"{path} is not a readable vector file: {err}") from None
    if frame.crs is None:
        raise MtgError(f"{path} has no CRS: set one so the sites can be put on the DEM grid")
    polygonal = frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    if not polygonal.any():
        raise MtgError(f"{path} holds no polygons (site footprints are needed for volumes)")
    if not polygonal.all():
        log.warning("%s: %d rows without a polygon footprint are skipped", path, int((~polygonal).sum()))
        frame = frame[polygonal]
    column = id_col or next((c for c in ("site_id", "id") if c in frame.columns), None)
    if id_col and id_col not in frame.columns:
        raise MtgError(f"{path} has no column {id_col!r}; its columns are {list(frame.columns)}")
    ids = frame[column].astype(str) if column else [f"site-{k}" for k in range(len(frame))]
    out = gpd.GeoDataFrame({"site_id": list(ids)}, geometry=frame.geometry.to_crs(crs).to_numpy(), crs=crs)
    if out["site_id"].duplicated().any():
        raise MtgError(f"{path}: site ids repeat ({out['site_id'][out['site_id'].duplicated()].iloc[0]!r})")
    return out.reset_index(drop=True)


def stable_terrain(early: Dem, late_values: np.ndarray, sites, buffer_m: float) -> np.ndarray:
    """Cells valid in both epochs and farther than ``buffer_m`` from every site."""
    from rasterio.features import geometry_mask

    valid = np.isfinite(early.values) & np.isfinite(late_values)
    shapes = [g for g in sites.geometry.buffer(buffer_m) if not g.is_empty]
    if not shapes:
        return valid
    outside = geometry_mask(shapes, out_shape=early.values.shape, transform=early.transform, all_touched=True)
    return valid & outside


def waste_deposits(dh: np.ndarray, threshold: float, early: Dem, sites, min_area_m2: float):
    """Contiguous deposition areas (dh > threshold) inside sites, as polygons linked to their site."""
    import geopandas as gpd
    import shapely
    from rasterio.features import rasterize, shapes
    from scipy import ndimage

    cell = early.spacing[0] * early.spacing[1]
    site_index = rasterize(((g, k + 1) for k, g in enumerate(sites.geometry)), out_shape=dh.shape,
                           transform=early.transform, fill=0, dtype="int32")
    deposit = np.nan_to_num(dh, nan=-np.inf) > threshold
    deposit &= site_index > 0
    labels, count = ndimage.label(deposit, structure=np.ones((3, 3)))
    columns = ["deposit_id", "site_id", "area_m2", "mean_thickness_m", "max_thickness_m", "volume_m3"]
    if count == 0:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=early.crs)
    index = np.arange(1, count + 1)
    cells = ndimage.sum_labels(deposit, labels, index)
    keep = index[cells * cell >= min_area_m2]
    rows, geoms = [], []
    objects = ndimage.find_objects(labels)
    for k in keep.tolist():
        window = objects[k - 1]
        mask = labels[window] == k
        transform = early.transform @ Affine.translation(window[1].start, window[0].start)
        parts = [shapely.geometry.shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=transform,
                                                                connectivity=8) if v]
        owners = np.bincount(site_index[window][mask])
        values = dh[window][mask]
        rows.append({"site_id": sites["site_id"].iloc[int(np.argmax(owners[1:]))],
                     "area_m2": float(mask.sum() * cell), "mean_thickness_m": float(values.mean()),
                     "max_thickness_m": float(values.max()), "volume_m3": float(values.sum() * cell)})
        geoms.append(shapely.union_all(parts))
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=early.crs)
    frame.insert(0, "deposit_id", [f"D{k:05d}" for k in range(1, len(frame) + 1)])
    return frame[columns + ["geometry"]]


def _write_dh(dh: np.ndarray, early: Dem, out: Path, attrs: dict[str, Any]) -> None:
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    rows, cols = dh.shape
    x = early.transform.c + early.transform.a * (np.arange(cols) + 0.5)
    y = early.transform.f + early.transform.e * (np.arange(rows) + 0.5)
    da = xr.DataArray(dh.astype(np.float32), dims=("y", "x"), coords={"y": y, "x": x}, name="dh",
                      attrs={"units": "m", "long_name": "elevation change, later minus earlier epoch"})
    da = da.rio.write_crs(early.crs).rio.write_nodata(np.nan, encoded=True)
    ds = da.to_dataset()
    ds.attrs.update({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in attrs.items()})
    tmp = _tmp(out)
    with warnings.catch_warnings():  # consolidated metadata are deliberate: lazy readers open the store in one read
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        ds.chunk({"y": 512, "x": 512}).to_zarr(tmp, mode="w", consolidated=True, zarr_format=3)
    _publish(tmp, out)


def measure_volumes(
    before: str | Path,
    after: str | Path,
    sites: str | Path,
    out: str | Path,
    *,
    coregister: bool = True,
    tilt: bool = False,
    threshold_nmad: float | None = 2.0,
    threshold_m: float | None = None,
    void_policy: str = "local-mean",
    min_deposit_m2: float = 10_000.0,
    stable_buffer_m: float = STABLE_BUFFER_M,
    site_id_col: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> VolumeResult:
    """Measure per-site excavated and deposited volumes between two DEM epochs (module docstring).

    Parameters
    ----------
    before, after : str or Path
        Earlier and later DEM epochs (:func:`mtg.pipeline.dem_inputs.read_dem`).
    sites : str or Path
        Site polygons (GeoParquet, GPKG, ...; any CRS), e.g. the ``sites.parquet`` of ``mtg link``.
    out : str or Path
        Output folder.
    coregister : bool
        Co-register the later epoch to the earlier one on stable terrain.
    tilt : bool
        Also remove a planar tilt during co-registration.
    threshold_nmad, threshold_m : float
        Change threshold ``t`` in stable-terrain NMADs, or in metres (``threshold_m`` wins; 0 allowed).
    void_policy : {"none", "local-mean", "hypsometric"}
        How voids inside a site are filled before summing.
    min_deposit_m2 : float
        Smallest waste deposit kept.
    stable_buffer_m : float
        Distance from sites within which terrain is not treated as stable.
    site_id_col : str, optional
        Column of the sites file holding site ids.
    storage_options : dict, optional
        fsspec options for remote Zarr DEM sources.

    Returns
    -------
    VolumeResult
    """
    from mtg.kernels.coregistration import apply_coregistration, nuth_kaab
    from mtg.kernels.coverage import polygon_coverage
    from mtg.kernels.cut_fill import cut_fill
    from mtg.kernels.dh_statistics import empirical_variogram, fit_spherical, nmad, volume_sigma

    start = time.perf_counter()
    out = Path(out)
    if void_policy not in VOID_POLICIES:
        raise MtgError(f"void policy {void_policy!r} is not one of {', '.join(VOID_POLICIES)}")
    if threshold_m is not None and (not np.isfinite(threshold_m) or threshold_m < 0):
        raise MtgError(f"--threshold-m {threshold_m} must be a finite number of metres >= 0")
    if threshold_m is None and (threshold_nmad is None or not np.isfinite(threshold_nmad) or threshold_nmad < 0):
        raise MtgError(f"--threshold-nmad {threshold_nmad} must be a finite number >= 0")
    early, late = align(read_dem(before, storage_options), read_dem(after, storage_options))
    site_frame = read_sites(sites, early.crs, site_id_col)
    spacing = early.spacing
    stable = stable_terrain(early, late.values, site_frame, stable_buffer_m)
    if stable.sum() < 100:
        raise MtgError(f"only {int(stable.sum())} stable cells outside the sites: the DEMs must extend beyond "
                       f"the sites (by more than {stable_buffer_m:g} m) for co-registration and uncertainty")
    late_values = late.values
    coreg: dict[str, Any] = {"applied": False}
    if coregister:
        result = nuth_kaab(early.values, late.values, stable, spacing, tilt=tilt)
        late_values = apply_coregistration(late.values, result, spacing)
        coreg = {"applied": True, **asdict(result)}
        log.info("co-registration: shift %.2f m east, %.2f m north, bias %.2f m; stable-terrain NMAD %.2f -> %.2f m",
                 result.shift_x_m, result.shift_y_m, result.bias_m, result.nmad_before_m, result.nmad_after_m)
    dh = (late_values - early.values).astype(np.float32)
    stable_dh = np.where(stable & np.isfinite(dh), dh, np.nan)
    sigma = nmad(stable_dh[np.isfinite(stable_dh)])
    median = float(np.nanmedian(stable_dh))
    if np.nanstd(stable_dh) > 0:
        max_lag = min(VARIOGRAM_MAX_LAG_M, 0.5 * max(dh.shape) * spacing[0])
        lags, gamma, counts = empirical_variogram(stable_dh, spacing, np.isfinite(stable_dh), max_lag_m=max_lag)
        sill, range_m, nugget = fit_spherical(lags, gamma, counts)
    else:  # identical epochs outside the sites (e.g. one survey pasted into another): no error to model
        log.warning("dh is exactly 0 on all stable terrain: volume errors are reported as 0")
        lags, gamma, (sill, range_m, nugget) = [], [], (0.0, 0.0, 0.0)
    threshold = float(threshold_m) if threshold_m is not None else float(threshold_nmad) * sigma
    log.info("dh on stable terrain: median %.2f m, NMAD %.2f m, correlation range %.0f m; threshold %.2f m",
             median, sigma, range_m, threshold)

    coverage = polygon_coverage(site_frame.geometry.to_numpy(), early.transform, dh.shape)
    sums = cut_fill(early.values, late_values, coverage, threshold, spacing[0] * spacing[1], void_policy)
    nugget_fraction = float(np.clip(nugget / sill, 0.0, 1.0)) if sill > 0 else 0.0  # sill: the total variance
    frame = site_frame.copy()
    for name in ("excavated_m3", "deposited_m3", "net_m3", "excavated_area_m2", "deposited_area_m2", "area_m2",
                 "void_fraction", "filled_area_m2", "mean_dh"):
        frame[name] = np.asarray(getattr(sums, name), dtype=np.float64)
    for name, area in (("excavated", frame["excavated_area_m2"]), ("deposited", frame["deposited_area_m2"]),
                       ("net", frame["area_m2"])):
        frame[f"{name}_sigma_m3"] = (volume_sigma(area.to_numpy(), sigma, range_m, nugget_fraction=nugget_fraction,
                                                  cell_area_m2=spacing[0] * spacing[1]) if range_m > 0 else 0.0)
    frame["threshold_m"] = threshold
    frame["void_policy"] = void_policy
    frame["coregistered"] = bool(coregister)
    deposits = waste_deposits(dh, threshold, early, site_frame, min_deposit_m2)
    frame["waste_deposits"] = frame["site_id"].map(deposits["site_id"].value_counts()).fillna(0).astype(int)

    report = {
        "before": early.source, "after": late.source, "before_date": early.date, "after_date": late.date,
        "crs": early.crs.to_string(), "cell_size_m": list(spacing), "coregistration": coreg,
        "stable_cells": int(stable.sum()), "stable_median_m": median, "stable_nmad_m": sigma,
        "variogram": {"sill_m2": sill, "range_m": range_m, "nugget_m2": nugget,
                      "lags_m": np.asarray(lags).tolist(), "semivariance_m2": np.asarray(gamma).tolist()},
        "threshold_m": threshold, "threshold_rule": "metres" if threshold_m is not None else f"{threshold_nmad} x NMAD",
        "void_policy": void_policy,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("site_volumes.parquet", frame), ("waste_deposits.parquet", deposits)):
        tmp = _tmp(out / name)
        table.to_parquet(tmp)
        _publish(tmp, out / name)
    _write_dh(dh, early, out / "dh.zarr", {"mtg:coregistration": coreg, "mtg:threshold_m": threshold})
    tmp = _tmp(out / "coregistration.json")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    _publish(tmp, out / "coregistration.json")
    return VolumeResult(out=out, n_sites=len(frame), n_deposits=len(deposits), threshold_m=threshold, nmad_m=sigma,
                        range_m=float(range_m), coregistration=coreg, seconds=time.perf_counter() - start)
