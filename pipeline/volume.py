"""Volumes of DEM change per site: co-registration, differencing, cut/fill with uncertainty, waste deposits.

Steps (``mtg volume``, and the volume stage of ``mtg run``):

1. Open both epochs lazily (:mod:`mtg.pipeline.dem_inputs`) and put them on one grid in ground metres
   (:func:`mtg.pipeline.dem_inputs.align`): the earlier one's; the later one's when the earlier one is not in
   ground metres (geographic, Web Mercator, feet) and the later one is; else the UTM zone of the earlier one.
   All sites off the grid is an error.
2. Calibration window: the whole grid when it has at most ``calibration_window`` cells a side; otherwise the
   block of that size, on a lattice anchored at the grid origin, holding the most stable cells (counted in one
   streaming pass over the DEM blocks). Stable terrain: valid in both epochs and outside every site buffered by
   ``stable_buffer_m``; the kernel also drops slopes under 1 or over 70 degrees. A grid no larger than the
   window (every planned tile) is then in memory, and the steps below take it from there: each DEM cell is read
   once. Larger grids are streamed again for the site windows and for dh.
3. Co-registration on the calibration window (:func:`mtg.kernels.coregistration.nuth_kaab`): horizontal shift
   and vertical bias of the later epoch, iterated; optionally a planar tilt. Its numbers, with the stable-terrain
   median and NMAD of dh before and after, go to ``coregistration.json``.
4. ``dh = late - early``, the later epoch corrected (:func:`mtg.kernels.coregistration.apply_coregistration`).
   Threshold ``t``: ``threshold_m``, else ``threshold_nmad`` x the stable-terrain NMAD of the calibration window.
5. Per site (:func:`mtg.kernels.cut_fill.cut_fill`, exact fractional coverage of the site polygon): excavated
   (dh < -t, reported positive), deposited (dh > t), net, areas, void fraction, voids filled by the void policy.
   ``dem_coverage``: the share of a site's polygon with valid elevations in both epochs; sites without any
   (NaN volumes) and partly covered ones are counted in a warning, and no site covered at all is an error.
   Sites whose pixel windows touch form a group. The groups are integrated as dask tasks on whichever scheduler
   is active (threads, worker processes, a cluster): one task per band of block rows, holding the groups whose
   windows end in that band (:func:`group_batches`); a task gets the window of both epochs its groups need (the
   DEM blocks are read once for all tasks of the computation), co-registers each group's window of the later
   epoch with a margin as wide as the shift reaches, and integrates it on the CPU kernel or, in a worker that has
   a GPU, on the CUDA kernel (``device``; on a cluster with GPU workers the tasks ask for the ``GPU`` resource).
   ``dh.zarr`` is written from a stream of both epochs in bands (:func:`epoch_bands`), each band corrected
   whole, the rows near its edges on the rows around them (the band's neighbours).
6. Uncertainty: the stable-terrain NMAD and the range of a spherical variogram fitted to stable dh give 1-sigma
   errors of each volume for the area of the cells it sums (:func:`mtg.kernels.dh_statistics.volume_sigma`;
   Rolstad et al. 2009, in the spirit of Hugonnet et al. 2022): ``excavated_sigma_m3`` over
   ``excavated_area_m2``, ``deposited_sigma_m3`` over ``deposited_area_m2``, and ``net_sigma_m3`` over both,
   the cells beyond the threshold that ``net_m3 = deposited_m3 - excavated_m3`` sums (the whole-site change,
   thresholds aside, is ``mean_dh`` x ``area_m2``). With fewer than :data:`MIN_STABLE_CELLS` stable cells (sites
   reaching the DEMs' edges), volumes are still measured without co-registration and with a threshold in metres,
   their errors NaN with a warning; co-registration or a threshold in NMAD units then is an error.
7. Extractive-waste deposits: 8-connected areas of dh > t inside sites, of at least ``min_deposit_m2``, become
   polygons with area, mean and max thickness and volume, each linked to the site it overlaps most (deposit
   cells lie inside sites, so a deposit never leaves its site group's window).

None of the numbers depends on how the DEMs are chunked: the calibration lattice and the site windows are
fixed by the grid and the sites, and the block-wise correction gives each cell what the whole-grid one gives
(``dh.zarr`` is bit-identical; per-site sums agree to the last bits of float64 rounding, since the vectorised
kernel's summation order follows the memory alignment of a window).

Outputs in ``out``: ``site_volumes.parquet`` (GeoParquet, one row per site), ``waste_deposits.parquet``
(GeoParquet), ``dh.zarr`` (the dh raster with its CRS) and ``coregistration.json``. Every file is written under
a temporary name and renamed, so a failed run never leaves a half-written output.
"""

from __future__ import annotations

import ctypes
import json
import math
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
from affine import Affine

from mtg.pipeline.config import VolumeOptions, stage_options
from mtg.pipeline.dask_cluster import gpu_annotations
from mtg.pipeline.dem_inputs import Dem, align
from mtg.pipeline.errors import MtgError
from mtg.pipeline.site_assembly import site_footprints
from mtg.pipeline.vertical_datum import harmonise_vertical_datums

log = logging.getLogger(__name__)

# Largest lag (m) of the stable-terrain variogram.
VARIOGRAM_MAX_LAG_M = 5_000.0
#: Fewest stable cells that co-registration and the dh statistics (NMAD, variogram, 1-sigma errors) are fitted on.
MIN_STABLE_CELLS = 100
# Per-site sums of :class:`mtg.kernels.cut_fill.CutFill` copied into ``site_volumes.parquet``.
_SUM_FIELDS = ("excavated_m3", "deposited_m3", "net_m3", "excavated_area_m2", "deposited_area_m2", "area_m2",
               "void_fraction", "filled_area_m2", "mean_dh")


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


def site_polygons(sites: Any, crs, id_col: str | None = None, name: str = "the sites"):
    """Site polygons in the DEM's CRS with a text ``site_id`` column, from a sites table.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame or LinkedSites
        Sites in any CRS (``mtg link``'s, or any polygons); rows without a polygon (sites of points only) are left
        out with a warning.
    crs
        The DEM grid's CRS.
    id_col : str, optional
        Column of the ids; default ``site_id`` or ``id``, else ``site-<row>``.
    name : str
        What to call the sites in errors (their file).

    Raises
    ------
    MtgError
        When there is no CRS, no polygon, no such id column, or ids repeat.
    """
    import geopandas as gpd

    from mtg.pipeline.link import LinkedSites

    frame = sites.sites if isinstance(sites, LinkedSites) else sites
    if frame.crs is None:
        raise MtgError(f"{name} have no CRS: set one so the sites can be put on the DEM grid")
    footprints = site_footprints(frame.geometry.to_numpy(), name)
    polygonal = footprints != None  # noqa: E711 - elementwise
    if not polygonal.any():
        raise MtgError(f"{name} hold no polygons (site footprints are needed for volumes)")
    if not polygonal.all():
        log.warning("%s: %d rows without a polygon footprint are skipped", name, int((~polygonal).sum()))
    frame = gpd.GeoDataFrame(frame[polygonal], geometry=gpd.GeoSeries(footprints[polygonal], crs=frame.crs,
                                                                      index=frame.index[polygonal]))
    column = id_col or next((c for c in ("site_id", "id") if c in frame.columns), None)
    if id_col and id_col not in frame.columns:
        raise MtgError(f"{name} have no column {id_col!r}; their columns are {list(frame.columns)}")
    ids = frame[column].astype(str) if column else [f"site-{k}" for k in range(len(frame))]
    out = gpd.GeoDataFrame({"site_id": list(ids)}, geometry=frame.geometry.to_crs(crs).to_numpy(), crs=crs)
    if out["site_id"].duplicated().any():
        raise MtgError(f"{name}: site ids repeat ({out['site_id'][out['site_id'].duplicated()].iloc[0]!r})")
    return out.reset_index(drop=True)


def check_on_grid(sites, dem: Dem, name: str = "the sites") -> None:
    """Refuse sites of which none touches the DEM grid.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        Site polygons in the grid's CRS.
    dem : Dem
        The grid (the earlier epoch, aligned).
    name : str
        What to call the sites.

    Raises
    ------
    MtgError
        When no site polygon intersects the grid's extent, with both extents.
    """
    import shapely

    rows, cols = dem.shape
    left, top = dem.transform * (0, 0)
    right, bottom = dem.transform * (cols, rows)
    if not sites.intersects(shapely.box(left, bottom, right, top)).any():
        extent = ", ".join(f"{v:.0f}" for v in sites.total_bounds)
        raise MtgError(f"none of the {len(sites)} sites of {name} lies on the DEMs: the sites span {extent}, "
                       f"{dem.source} spans {left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f} "
                       f"({dem.crs.to_string()}, west, south, east, north)")


def dem_coverage(polygon_area_m2: np.ndarray, area_m2: np.ndarray, void_fraction: np.ndarray) -> np.ndarray:
    """Share of each site's polygon area with valid elevations in both epochs (``dem_coverage``).

    Parameters
    ----------
    polygon_area_m2 : numpy.ndarray
        Area of each site polygon (m^2, in the grid's CRS).
    area_m2, void_fraction : numpy.ndarray
        The site's covered area on the grid and the void share of it (:class:`mtg.kernels.cut_fill.CutFill`).

    Returns
    -------
    numpy.ndarray
        In ``[0, 1]``: 0 for a site off the DEMs or all in their voids (its volumes are NaN), below 1 for a site
        partly off the DEMs or partly void (its volumes hold only the covered part, plus what the void policy
        fills).
    """
    valid = np.nan_to_num(area_m2 * (1.0 - void_fraction))
    share = np.divide(valid, polygon_area_m2, out=np.zeros_like(valid), where=polygon_area_m2 > 0)
    return np.clip(share, 0.0, 1.0)


#: ``dem_coverage`` under which a site counts as partly covered in the warning of :func:`check_coverage`.
PARTLY_COVERED = 0.99


def check_coverage(coverage: np.ndarray, before: str, after: str) -> None:
    """Warn with the number of sites without (or with partial) DEM coverage; refuse when no site has any.

    Parameters
    ----------
    coverage : numpy.ndarray
        :func:`dem_coverage` of each site.
    before, after : str
        The epochs' sources, for the messages.

    Raises
    ------
    MtgError
        When no site has a valid elevation in both epochs.
    """
    uncovered = int((coverage == 0).sum())
    if uncovered == len(coverage):
        raise MtgError(f"none of the {len(coverage)} sites has valid elevations in both {before} and {after} "
                       "(the sites lie in the DEMs' voids or outside them): no volume can be measured")
    if uncovered:
        log.warning("%d of %d sites have no valid elevations in both epochs (outside the DEMs or in their voids): "
                    "their volumes are NaN (dem_coverage 0)", uncovered, len(coverage))
    partly = int(((coverage > 0) & (coverage < PARTLY_COVERED)).sum())
    if partly:
        log.warning("%d of %d sites are less than %.0f %% covered by valid elevations in both epochs: their volumes "
                    "hold the covered part and what the void policy fills (see dem_coverage)", partly,
                    len(coverage), 100 * PARTLY_COVERED)


def stable_terrain(early: np.ndarray, late: np.ndarray, transform: Affine, buffered_sites) -> np.ndarray:
    """Cells of a window valid in both epochs and outside every buffered site polygon.

    Parameters
    ----------
    early, late : numpy.ndarray
        The window of both epochs.
    transform : affine.Affine
        The window's pixel-to-CRS transform.
    buffered_sites : sequence of shapely geometries
        Site polygons grown by the stable-terrain buffer.
    """
    from rasterio.features import geometry_mask

    valid = np.isfinite(early) & np.isfinite(late)
    shapes = [g for g in buffered_sites if not g.is_empty]
    if not shapes:
        return valid
    outside = geometry_mask(shapes, out_shape=early.shape, transform=transform, all_touched=True)
    return valid & outside


def _stable_counts(early: np.ndarray, late: np.ndarray, row0: int, col0: int, transform: Affine, buffered, tree,
                   size: int, lattice: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """Stable cells of one DEM block per calibration-lattice block, and the block's valid cells of each epoch."""
    import shapely

    rows, cols = early.shape
    window = transform * Affine.translation(col0, row0)
    left, top = window * (0, 0)
    right, bottom = window * (cols, rows)
    near = [buffered[k] for k in tree.query(shapely.box(left, bottom, right, top))]
    stable = stable_terrain(early, late, window, near)
    counts = np.zeros(lattice, dtype=np.int64)
    for r in range(row0 // size, (row0 + rows - 1) // size + 1):
        for c in range(col0 // size, (col0 + cols - 1) // size + 1):
            part = stable[max(r * size - row0, 0):(r + 1) * size - row0, max(c * size - col0, 0):(c + 1) * size - col0]
            counts[r, c] = int(part.sum())
    return counts, int(np.isfinite(early).sum()), int(np.isfinite(late).sum())


def calibration_window(early: Dem, late: da.Array, buffered, size: int) -> tuple[slice, slice]:
    """The window that co-registration and the dh statistics use (module docstring, step 2).

    Parameters
    ----------
    early : Dem
        The earlier epoch.
    late : dask.array.Array
        The later epoch on the same grid.
    buffered : sequence of shapely geometries
        Site polygons grown by the stable-terrain buffer.
    size : int
        Side of the window in cells.

    Returns
    -------
    (slice, slice)
        Rows and columns of the window.

    Raises
    ------
    MtgError
        When an epoch holds no valid cell.
    """
    import shapely

    n_rows, n_cols = early.shape
    if n_rows <= size and n_cols <= size:
        return slice(0, n_rows), slice(0, n_cols)
    lattice = (-(-n_rows // size), -(-n_cols // size))
    tree = shapely.STRtree(buffered)
    late = late.rechunk(early.values.chunks)
    row_starts = np.cumsum((0,) + early.values.chunks[0])
    col_starts = np.cumsum((0,) + early.values.chunks[1])
    tasks = [dask.delayed(_stable_counts)(e, lt, int(row_starts[i]), int(col_starts[j]), early.transform,
                                          buffered, tree, size, lattice)
             for (i, j), e, lt in zip(np.ndindex(early.values.numblocks), early.values.to_delayed().ravel(),
                                      late.to_delayed().ravel())]
    log.info("counting stable terrain in %d blocks to choose the calibration window", len(tasks))
    results = dask.compute(*tasks)
    counts = sum(r[0] for r in results)
    for k, name in ((1, early.source), (2, "the later epoch")):
        if sum(r[k] for r in results) == 0:
            raise MtgError(f"{name} holds no valid elevation")
    r, c = (int(k) for k in np.unravel_index(int(np.argmax(counts)), lattice))
    log.info("calibration window: rows %d-%d, columns %d-%d (%d stable cells)", r * size,
             min((r + 1) * size, n_rows), c * size, min((c + 1) * size, n_cols), int(counts[r, c]))
    return slice(r * size, min((r + 1) * size, n_rows)), slice(c * size, min((c + 1) * size, n_cols))


def corrected(late: da.Array, coreg, spacing: tuple[float, float], origin: tuple[int, int]) -> da.Array:
    """The later epoch co-registered block by block: ``apply_coregistration`` with a NaN halo of the shift's reach.

    ``origin`` is the (row, column) of the calibration window the fit ran on, in the full grid.
    """
    from mtg.kernels.coregistration import apply_coregistration

    depth = correction_depth(coreg, spacing)

    def block(z: np.ndarray, block_info=None) -> np.ndarray:
        # map_overlap's block_info locates the block in the halo-expanded array: undo the halos of earlier blocks
        (r_loc, _), (c_loc, _) = block_info[0]["array-location"]
        i, j = block_info[0]["chunk-location"]
        first = (r_loc - 2 * depth[0] * i - depth[0] - origin[0], c_loc - 2 * depth[1] * j - depth[1] - origin[1])
        return apply_coregistration(z, coreg, spacing, origin=first)

    return da.map_overlap(block, late, depth=depth, boundary=np.nan, dtype=late.dtype)


def correction_depth(coreg, spacing: tuple[float, float]) -> tuple[int, int]:
    """Rows and columns around a cell that its co-registered value depends on (the shift's reach plus one)."""
    return math.ceil(abs(coreg.shift_y_m) / spacing[1]) + 1, math.ceil(abs(coreg.shift_x_m) / spacing[0]) + 1


def _rows(held: dict[int, tuple[int, np.ndarray]], lo: int, hi: int) -> np.ndarray:
    """A copy of rows ``lo`` to ``hi`` of the later epoch from the pieces held (first row, rows), all present."""
    return np.concatenate([rows[max(lo - first, 0):hi - first] for first, rows in sorted(held.values(),
                                                                                          key=lambda v: v[0])
                           if first < hi and first + len(rows) > lo])


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps blocks freed by a thread in that thread's malloc arena, where the threads of a later pass (other
    threads) do not reuse them; trimming before each pass over the bands keeps the peak from counting the blocks
    of every earlier pass.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


#: DEM blocks computed at once by :func:`read_rows`: enough for every core, few enough to bound the blocks in flight.
READ_BATCH = 4


def read_rows(parts: list[da.Array]) -> list[np.ndarray]:
    """Compute lazy arrays into numpy arrays, their blocks :data:`READ_BATCH` at a time.

    Each result is allocated once and filled as its blocks come in, so only a batch of blocks is held beside the
    results (computing a band whole would hold all its blocks and their concatenation). The blocks come back to
    this process (on a distributed client, workers cannot write into its arrays).
    """
    out = [np.empty(part.shape, dtype=part.dtype) for part in parts]
    blocks = []
    for target, part in zip(out, parts):
        starts = [np.cumsum((0,) + c).tolist() for c in part.chunks]
        for index, block in zip(np.ndindex(part.numblocks), part.to_delayed().ravel()):
            blocks.append((target, tuple(slice(starts[d][k], starts[d][k + 1]) for d, k in enumerate(index)), block))
    for k in range(0, len(blocks), READ_BATCH):
        batch = blocks[k:k + READ_BATCH]
        for (target, where, _), values in zip(batch, dask.compute(*(block for _, _, block in batch))):
            target[where] = values
    return out


def epoch_bands(early: da.Array, late: da.Array,
                correct: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
                depth: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Both epochs band by band, top to bottom, each block computed once: ``(first row, early rows, late rows)``.

    A band is one block row of the earlier epoch, all columns. The later epoch's blocks are read into the band
    of the rows they hold (a block straddling two bands is computed for each).

    Parameters
    ----------
    early, late : dask.array.Array
        The epochs on one grid.
    correct : callable, optional
        ``correct(rows, first_row, 0)``: co-registers consecutive grid rows of the later epoch starting at
        ``first_row`` (all columns) in place and returns them, NaN where a cell's support leaves the rows given.
        Rows within ``depth`` of a band's edge are corrected again on a copy of the rows around them (the band's
        neighbours are read anyway), so every cell gets what the whole grid gives.
    depth : int
        Rows the correction reaches (:func:`correction_depth`).

    Yields
    ------
    (int, numpy.ndarray, numpy.ndarray)
        First row of the band, its earlier and (corrected) later rows.
    """
    release_freed_memory()
    edges = np.cumsum((0,) + early.chunks[0]).tolist()
    n_rows, n_cols = early.shape
    held: dict[int, tuple[int, np.ndarray]] = {}  # band -> (first row, rows) of the later epoch still needed
    read = 0  # bands of the later epoch read so far
    for b in range(len(edges) - 1):
        r0, r1 = edges[b], edges[b + 1]
        ahead = []
        while read < len(edges) - 1 and (read <= b or edges[read] < min(r1 + depth, n_rows)):
            ahead.append(read)
            read += 1
        e, *rows = read_rows([early[r0:r1], *(late[edges[k]:edges[k + 1]] for k in ahead)])
        held.update({k: (edges[k], r) for k, r in zip(ahead, rows)})
        band = held[b][1]
        if correct is not None:
            fixed = []  # rows near the band's edges, corrected on the rows around them, before these change
            for lo, hi in ((r0, min(r0 + depth, r1)), (max(r1 - depth, r0), r1)):
                around = (max(lo - depth, 0), min(hi + depth, n_rows))
                if around[0] < r0 or around[1] > r1:
                    fixed.append((lo, correct(_rows(held, *around), around[0], 0)[lo - around[0]:hi - around[0]]))
            held[b] = (max(r1 - depth, r0), band[max(r1 - depth, r0) - r0:].copy())  # the rows later bands need
            correct(band, r0, 0)
            for lo, rows_fixed in fixed:
                band[lo - r0:lo - r0 + len(rows_fixed)] = rows_fixed
        for k in [k for k, (first, part) in held.items() if k <= b and first + len(part) <= r1 - depth]:
            del held[k]
        del rows
        yield r0, e, band
        del e, band  # the caller's now: not held while the next band is read


def geojson_polygon(polygon) -> dict[str, Any]:
    """A shapely (multi)polygon as a GeoJSON-like dict with numpy coordinate arrays, the form
    :func:`rasterio.features.rasterize` reads (8x faster to make than ``__geo_interface__``'s tuples)."""
    import shapely

    def rings(part) -> list[np.ndarray]:
        return [shapely.get_coordinates(part.exterior)] + [shapely.get_coordinates(r) for r in part.interiors]

    if polygon.geom_type == "MultiPolygon":
        return {"type": "MultiPolygon", "coordinates": [rings(part) for part in polygon.geoms]}
    return {"type": "Polygon", "coordinates": rings(polygon)}


#: Columns of ``waste_deposits.parquet`` (with the geometry).
DEPOSIT_COLUMNS = ("deposit_id", "site_id", "area_m2", "mean_thickness_m", "max_thickness_m", "volume_m3")


def waste_deposits(dh: np.ndarray, threshold: float, transform: Affine, polygons, site_ids,
                   min_area_m2: float) -> list[dict[str, Any]]:
    """Contiguous deposition areas (dh > threshold) inside sites, as polygons linked to their site.

    Parameters
    ----------
    dh : numpy.ndarray
        Elevation change of a window holding the sites.
    threshold : float
        Change threshold (m).
    transform : affine.Affine
        The window's pixel-to-CRS transform.
    polygons : sequence of dict
        The site polygons of the window, GeoJSON-like (:func:`geojson_polygon`).
    site_ids : sequence of str
        Their ids.
    min_area_m2 : float
        Smallest deposit kept.

    Returns
    -------
    list of dict
        One per deposit: ``site_id`` (the site holding most of its cells), ``area_m2``, ``mean_thickness_m``,
        ``max_thickness_m``, ``volume_m3`` and ``geometry`` (numbered by the caller once all are in).
    """
    import shapely
    from rasterio.features import rasterize, shapes
    from scipy import ndimage

    cell = abs(transform.a * transform.e)
    site_index = rasterize(((g, k + 1) for k, g in enumerate(polygons)), out_shape=dh.shape,
                           transform=transform, fill=0, dtype="int32")
    deposit = np.nan_to_num(dh, nan=-np.inf) > threshold
    deposit &= site_index > 0
    labels, count = ndimage.label(deposit, structure=np.ones((3, 3)))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    cells = ndimage.sum_labels(deposit, labels, index)
    keep = index[cells * cell >= min_area_m2]
    found = []
    objects = ndimage.find_objects(labels)
    for k in keep.tolist():
        window = objects[k - 1]
        mask = labels[window] == k
        placed = transform @ Affine.translation(window[1].start, window[0].start)
        parts = [shapely.geometry.shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=placed,
                                                                connectivity=8) if v]
        owners = np.bincount(site_index[window][mask])
        values = dh[window][mask]
        found.append({"site_id": site_ids[int(np.argmax(owners[1:]))], "area_m2": float(mask.sum() * cell),
                      "mean_thickness_m": float(values.mean()), "max_thickness_m": float(values.max()),
                      "volume_m3": float(values.sum() * cell), "geometry": shapely.union_all(parts)})
    return found


def site_groups(sites, transform: Affine, shape: tuple[int, int]) -> list[tuple[np.ndarray, tuple[slice, slice]]]:
    """Sites whose pixel windows (grown by one cell) touch, with the window covering each group.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        Site polygons in the grid's CRS.
    transform : affine.Affine
        The grid's pixel-to-CRS transform (north up).
    shape : (int, int)
        Rows and columns of the grid.

    Returns
    -------
    list of (numpy.ndarray, (slice, slice))
        Row indices of the sites of each group (ascending; groups ordered by their first site) and the group's
        window, clipped to the grid. A site off the grid is a group of its own with a one-cell window, where its
        coverage is empty.
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    bounds = sites.geometry.bounds.to_numpy()
    inverse = ~transform
    c0, r0 = inverse * (bounds[:, 0], bounds[:, 3])
    c1, r1 = inverse * (bounds[:, 2], bounds[:, 1])
    boxes = np.stack([np.floor(r0) - 1, np.floor(c0) - 1, np.ceil(r1) + 1, np.ceil(c1) + 1], axis=1)
    boxes = np.clip(boxes, 0, [shape[0], shape[1], shape[0], shape[1]]).astype(np.int64)
    on_grid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes[~on_grid] = (0, 0, 1, 1)
    rects = shapely.box(boxes[:, 1], boxes[:, 0], boxes[:, 3], boxes[:, 2])
    left, right = shapely.STRtree(rects).query(rects, predicate="intersects")
    pairs = on_grid[left] & on_grid[right]
    n = len(sites)
    graph = coo_matrix((np.ones(int(pairs.sum())), (left[pairs], right[pairs])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups = []
    for label in dict.fromkeys(labels.tolist()):
        members = np.flatnonzero(labels == label)
        b = boxes[members]
        groups.append((members, (slice(int(b[:, 0].min()), int(b[:, 2].max())),
                                 slice(int(b[:, 1].min()), int(b[:, 3].max())))))
    return groups


def margin_window(window: tuple[slice, slice], depth: tuple[int, int], shape: tuple[int, int]
                  ) -> tuple[slice, slice]:
    """A window grown by ``depth`` rows and columns (the co-registration's reach), clipped to the grid: the
    window of the later epoch that co-registering ``window`` needs."""
    (r, c), (n_rows, n_cols) = window, shape
    return (slice(max(r.start - depth[0], 0), min(r.stop + depth[0], n_rows)),
            slice(max(c.start - depth[1], 0), min(c.stop + depth[1], n_cols)))


def group_batches(groups: list[tuple[np.ndarray, tuple[slice, slice]]], band_rows: tuple[int, ...],
                  depth: tuple[int, int], shape: tuple[int, int]) -> list[tuple[list[int], tuple[slice, slice],
                                                                                 tuple[slice, slice]]]:
    """Site groups batched into dask tasks: the groups whose windows end in one band of block rows, together.

    A group's later-epoch window is its window grown by ``depth`` (the co-registration's reach, clipped to the
    grid). Groups are batched by the band (block row of the earlier epoch) holding the last row of that margin
    window, so a batch reads about one band of each epoch plus the rows its windows reach up into; groups taller
    than the shortest band (rare: sites chained over a band's height) are batches of their own.

    Parameters
    ----------
    groups : list of (numpy.ndarray, (slice, slice))
        Site groups and their windows (:func:`site_groups`).
    band_rows : tuple of int
        Rows of each block row of the earlier epoch (its dask chunks along y).
    depth : (int, int)
        Rows and columns the correction reaches (:func:`correction_depth`); (0, 0) without correction.
    shape : (int, int)
        Rows and columns of the grid.

    Returns
    -------
    list of (list of int, (slice, slice), (slice, slice))
        The groups of each batch (ascending), and the windows of the earlier and the later epoch that hold all
        their windows.
    """
    needs = [margin_window(window, depth, shape) for _, window in groups]
    edges = np.cumsum((0,) + tuple(band_rows))
    short = min(band_rows)
    by_band: dict[int, list[int]] = {}
    alone = []
    for g, (lr, _) in enumerate(needs):
        if lr.stop - lr.start > short:
            alone.append([g])
        else:
            by_band.setdefault(int(np.searchsorted(edges, lr.stop, side="left")), []).append(g)

    def hull(windows: list[tuple[slice, slice]]) -> tuple[slice, slice]:
        return (slice(min(w[0].start for w in windows), max(w[0].stop for w in windows)),
                slice(min(w[1].start for w in windows), max(w[1].stop for w in windows)))

    return [(members, hull([groups[g][1] for g in members]), hull([needs[g] for g in members]))
            for members in [by_band[b] for b in sorted(by_band)] + alone]


def _window(values: np.ndarray, origin: tuple[int, int], window: tuple[slice, slice]) -> np.ndarray:
    """The part ``window`` (grid rows and columns) of ``values``, whose first cell is grid cell ``origin``."""
    r, c = window
    return values[r.start - origin[0]:r.stop - origin[0], c.start - origin[1]:c.stop - origin[1]]


def integration_device(device: str) -> str:
    """Where a task integrates its sites: ``cuda`` when asked, or for ``auto`` when its process sees a GPU
    (numba's CUDA driver, or the CUDA simulator of ``NUMBA_ENABLE_CUDASIM=1``); else ``cpu``.

    Raises
    ------
    MtgError
        When ``cuda`` is asked for in a process without a GPU.
    """
    if device == "cpu":
        return device
    from numba import cuda

    if cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise MtgError("volume.device is cuda, but the process integrating the sites sees no CUDA GPU (numba finds "
                       "no CUDA driver): use device auto or cpu, or run on GPU workers (--scheduler local-cuda)")
    return "cpu"


def _integrate(early: np.ndarray, late: np.ndarray, polygons, transform: Affine, threshold: float,
               cell_area: float, void_policy: str, device: str):
    """Cut and fill of ``polygons`` on one window, on the CPU (numba) or the GPU (the CUDA kernel).

    On the GPU the windows are CuPy arrays when CuPy is installed (numba device arrays otherwise, e.g. under the
    CUDA simulator); both kernels sum the same cells with the same arithmetic (:mod:`mtg.kernels.cut_fill`).
    """
    from mtg.kernels.coverage import polygon_coverage
    from mtg.kernels.cut_fill import coverage_to_device, cut_fill, cut_fill_cuda

    coverage = polygon_coverage(polygons, transform, early.shape)
    if device == "cpu":
        return cut_fill(early, late, coverage, threshold, cell_area, void_policy)
    try:
        import cupy

        to_device = cupy.asarray
    except ImportError:
        from numba import cuda

        to_device = cuda.to_device
    return cut_fill_cuda(to_device(np.ascontiguousarray(early)), to_device(np.ascontiguousarray(late)),
                         coverage_to_device(coverage), threshold, cell_area, void_policy)


def measure_groups(early: np.ndarray, late: np.ndarray, origins: tuple[tuple[int, int], tuple[int, int]],
                   windows: list[tuple[Any, Any, tuple[slice, slice], tuple[slice, slice]]], transform: Affine,
                   correct: Callable[[np.ndarray, int, int], np.ndarray] | None, threshold: float, cell_area: float,
                   void_policy: str, min_deposit_m2: float, device: str
                   ) -> tuple[str, list[tuple[np.ndarray, list[dict[str, Any]]]]]:
    """One dask task of the volume stage: the per-site sums and waste deposits of a batch of site groups.

    Parameters
    ----------
    early, late : numpy.ndarray
        The windows of both epochs that hold the batch's windows (:func:`group_batches`), the later one as read.
    origins : ((int, int), (int, int))
        Grid row and column of the first cell of ``early`` and of ``late``.
    windows : list of (shapely geometries, site ids, (slice, slice), (slice, slice))
        Per group: its site polygons and ids, its window and its later-epoch window with the correction's margin.
    transform : affine.Affine
        The grid's transform.
    correct : callable or None
        ``correct(rows, first_row, first_col)`` co-registers a window of the later epoch in place.
    threshold, cell_area, void_policy, min_deposit_m2
        As in :func:`volumes`.
    device : {"auto", "cpu", "cuda"}
        Where to integrate (:func:`integration_device`, decided in the process that runs the task).

    Returns
    -------
    (str, list of (numpy.ndarray, list of dict))
        The device used, and per group the sums of :data:`_SUM_FIELDS` of its sites (one row each) and its
        deposits (:func:`waste_deposits`).
    """
    device = integration_device(device)
    results = []
    with rasterio.Env():  # one GDAL environment for the deposits' rasterize and polygonise calls
        for polygons, site_ids, window, margin in windows:
            e = _window(early, origins[0], window)
            if correct is None:
                lt = _window(late, origins[1], window)
            else:
                lt = correct(np.array(_window(late, origins[1], margin)), margin[0].start, margin[1].start)
                lt = lt[window[0].start - margin[0].start:window[0].stop - margin[0].start,
                        window[1].start - margin[1].start:window[1].stop - margin[1].start]
            placed = transform * Affine.translation(window[1].start, window[0].start)
            sums = _integrate(e, lt, polygons, placed, threshold, cell_area, void_policy, device)
            stats = np.stack([np.asarray(getattr(sums, f), dtype=np.float64) for f in _SUM_FIELDS], axis=1)
            shapes = [geojson_polygon(p) for p in polygons]
            results.append((stats, waste_deposits((lt - e).astype(np.float32), threshold, placed, shapes, site_ids,
                                                  min_deposit_m2)))
    return device, results


def dh_array(dh: da.Array, early: Dem, attrs: dict[str, Any]):
    """The elevation change as a lazy, georeferenced DataArray (cell-centre ``x``/``y``, CRS, NaN nodata)."""
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    rows, cols = dh.shape
    x = early.transform.c + early.transform.a * (np.arange(cols) + 0.5)
    y = early.transform.f + early.transform.e * (np.arange(rows) + 0.5)
    arr = xr.DataArray(dh.astype(np.float32), dims=("y", "x"), coords={"y": y, "x": x}, name="dh",
                       attrs={"units": "m", "long_name": "elevation change, later minus earlier epoch", **attrs})
    return arr.rio.write_crs(early.crs).rio.write_nodata(np.nan, encoded=True)


@dataclass
class Volumes:
    """What :func:`volumes` measured.

    Attributes
    ----------
    dh : xarray.DataArray
        Lazy co-registered elevation change (later minus earlier), on the earlier epoch's metric grid, with its
        CRS; attributes ``mtg:coregistration`` and ``mtg:threshold_m``.
    site_volumes : geopandas.GeoDataFrame
        One row per site: volumes (m^3) with 1-sigma errors (each over the cells its volume sums; NaN without
        stable terrain), areas, void fraction, ``dem_coverage`` (share of the site with valid elevations in both
        epochs, 0 for a site off the DEMs), waste-deposit count.
    deposits : geopandas.GeoDataFrame
        The extractive-waste deposits, each with its site.
    report : dict
        Co-registration, stable-terrain statistics, variogram, threshold, datums (``coregistration.json``).
    dh_bands : callable, optional
        ``dh_bands()`` yields ``(first row, rows)`` of ``dh`` band by band, top to bottom, each DEM block computed
        once (:func:`epoch_bands`; ``dh`` computed band by band reads the neighbours of a band for its halo);
        :func:`mtg.pipeline.io.write_volumes` writes ``dh.zarr`` from it.
    """

    dh: Any
    site_volumes: Any
    deposits: Any
    report: dict[str, Any]
    dh_bands: Callable[[], Iterator[tuple[int, np.ndarray]]] | None = field(default=None, repr=False)

    @property
    def threshold_m(self) -> float:
        return float(self.report["threshold_m"])

    @property
    def nmad_m(self) -> float:
        return float(self.report["stable_nmad_m"])

    @property
    def range_m(self) -> float:
        return float(self.report["variogram"]["range_m"])

    @property
    def coregistration(self) -> dict[str, Any]:
        return self.report["coregistration"]


def as_dem(epoch: Any, name: str = "DEM") -> Dem:
    """A :class:`Dem` from a Dem or a georeferenced 2-D ``xarray.DataArray`` (rioxarray CRS and transform).

    A DataArray's ``vertical_datum`` attribute (e.g. ``"EPSG:3855"``) and its ``time`` coordinate (a scalar or one
    step) become the epoch's datum and date.

    Raises
    ------
    MtgError
        When the array is not 2-D after dropping a one-step ``time``, or has no CRS.
    """
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr
    from rasterio.crs import CRS

    if isinstance(epoch, Dem):
        return epoch
    if not isinstance(epoch, xr.DataArray):
        raise MtgError(f"{name}: give a Dem or a georeferenced xarray.DataArray, not {type(epoch).__name__} "
                       "(read files with mtg.pipeline.dem_inputs.read_dem)")
    if "time" in epoch.dims and epoch.sizes["time"] == 1:
        epoch = epoch.isel(time=0)
    if epoch.ndim != 2:
        raise MtgError(f"{name}: the elevation array has dimensions {epoch.dims}; choose one epoch (y, x)")
    crs = epoch.rio.crs
    if crs is None:
        raise MtgError(f"{name} has no CRS: write one with .rio.write_crs(...)")
    date = str(epoch["time"].values)[:10] if "time" in epoch.coords and epoch["time"].size == 1 else None
    values = epoch.data if isinstance(epoch.data, da.Array) else da.from_array(np.asarray(epoch.data))
    source = epoch.attrs.get("source") or str(epoch.name or name)
    return Dem(values=values.astype(np.float32), transform=epoch.rio.transform(), crs=CRS.from_user_input(crs),
               source=source, date=date, vertical_datum=epoch.attrs.get("vertical_datum"))


def volumes(before: Any, after: Any, sites: Any, *, site_id_col: str | None = None, sites_name: str = "the sites",
            options: VolumeOptions | None = None, **overrides: Any) -> Volumes:
    """Per-site excavated and deposited volumes between two DEM epochs, in memory (module docstring).

    Parameters
    ----------
    before, after : xarray.DataArray or Dem
        Earlier and later epochs: georeferenced 2-D elevation arrays (rioxarray CRS; lazy dask arrays are read
        block by block), e.g. ``mtg.pipeline.dem_inputs.read_dem(...)`` or one ``time`` step of a DEM cube. Their
        vertical datums (a DataArray's ``vertical_datum`` attribute) are made the same when both are known
        (:func:`mtg.pipeline.vertical_datum.harmonise_vertical_datums`).
    sites : geopandas.GeoDataFrame or LinkedSites
        Site polygons in any CRS (:func:`site_polygons`).
    site_id_col : str, optional
        Column of site ids.
    sites_name : str
        What to call the sites in errors.
    options : VolumeOptions, optional
        ``coregister``, ``tilt``, ``threshold_nmad`` / ``threshold_m`` (``threshold_m`` wins; 0 allowed),
        ``void_policy`` (none, local-mean, hypsometric), ``min_deposit_m2``, ``stable_buffer_m``,
        ``calibration_size``, ``datum_policy`` (convert, assume-same); keyword arguments override them.

    Returns
    -------
    Volumes
        ``dh`` stays lazy; the tables are computed.

    Examples
    --------
    >>> import numpy as np, geopandas as gpd, shapely, xarray as xr, rioxarray
    >>> from mtg.api import volumes
    >>> y, x = np.mgrid[0:200, 0:200]
    >>> before = xr.DataArray((100 + 1.0 * x + 0.5 * y).astype("float32"), dims=("y", "x"),
    ...                       coords={"y": 6e6 - 30 * y[:, 0], "x": 5e5 + 30 * x[0]}).rio.write_crs("EPSG:32750")
    >>> pit = np.hypot(x - 100, y - 100) < 20
    >>> after = before - 10.0 * pit
    >>> site = gpd.GeoDataFrame({"site_id": ["pit"]}, geometry=[shapely.Point(5e5 + 3000, 6e6 - 3000).buffer(900)],
    ...                         crs="EPSG:32750")
    >>> v = volumes(before, after, site, coregister=False, threshold_m=0.5)
    >>> round(float(v.site_volumes["excavated_m3"].iloc[0] / (pit.sum() * 30 * 30 * 10)), 4)
    1.0
    """
    from mtg.kernels.coregistration import apply_coregistration, nuth_kaab
    from mtg.kernels.coverage import polygon_coverage
    from mtg.kernels.cut_fill import cut_fill
    from mtg.kernels.dh_statistics import empirical_variogram, fit_spherical, nmad, volume_sigma

    import geopandas as gpd
    import pandas as pd

    opts = stage_options(VolumeOptions, options, **overrides)
    coregister, tilt, threshold_m, threshold_nmad = opts.coregister, opts.tilt, opts.threshold_m, opts.threshold_nmad
    void_policy, min_deposit_m2, stable_buffer_m = opts.void_policy, opts.min_deposit_m2, opts.stable_buffer_m
    if threshold_m is not None and not np.isfinite(threshold_m):
        raise MtgError(f"--threshold-m {threshold_m} must be a finite number of metres >= 0")
    if threshold_m is None and not np.isfinite(threshold_nmad):
        raise MtgError(f"--threshold-nmad {threshold_nmad} must be a finite number >= 0")
    early, late = align(as_dem(before, "the earlier DEM"), as_dem(after, "the later DEM"))
    early, late, datums = harmonise_vertical_datums(early, late, opts.datum_policy)
    site_frame = site_polygons(sites, early.crs, site_id_col, sites_name)
    check_on_grid(site_frame, early, sites_name)
    spacing = early.spacing
    cell_area = spacing[0] * spacing[1]
    buffered = site_frame.geometry.buffer(stable_buffer_m).to_numpy()
    rows, cols = calibration_window(early, late.values, buffered, opts.calibration_size)
    e_win, l_win = (np.asarray(a) for a in dask.compute(early.values[rows, cols], late.values[rows, cols]))
    whole = (rows.stop - rows.start, cols.stop - cols.start) == early.shape
    if whole:  # both epochs are in memory now: the passes below (site windows, dh) take them from there
        early_values = da.from_array(e_win, chunks=early.values.chunks)
        late_raw = da.from_array(l_win, chunks=late.values.chunks)
    else:  # larger grids are streamed again, block by block
        early_values, late_raw = early.values, late.values
    for values, name in ((e_win, early.source), (l_win, late.source)):
        if not np.isfinite(values).any():
            raise MtgError(f"{name} holds no valid elevation{'' if whole else ' in the calibration window'}")
    win_transform = early.transform * Affine.translation(cols.start, rows.start)
    stable = stable_terrain(e_win, l_win, win_transform, buffered)
    n_stable = int(stable.sum())
    errors_known = n_stable >= MIN_STABLE_CELLS
    if not errors_known:
        short = (f"only {n_stable} stable cells outside the sites: the DEMs extend less than {stable_buffer_m:g} m "
                 "beyond the sites")
        needs = [need for need, wanted in (("co-registration", coregister),
                                           ("a threshold in NMAD units", threshold_m is None)) if wanted]
        if needs:
            raise MtgError(f"{short}, and {' and '.join(needs)} need stable terrain: give DEMs reaching further, or "
                           "measure without it (--no-coregister --threshold-m T) and without 1-sigma errors")
        log.warning("%s, so there is no stable terrain to measure the DEM error on: the 1-sigma errors are unknown "
                    "(NaN)", short)
    late_values = late_raw
    coreg: dict[str, Any] = {"applied": False}
    correct, depth = None, (0, 0)
    if coregister:
        result = nuth_kaab(e_win, l_win, stable, spacing, tilt=tilt)
        l_win = apply_coregistration(l_win, result, spacing)
        late_values = corrected(late_raw, result, spacing, (rows.start, cols.start))
        depth = correction_depth(result, spacing)

        def correct(window: np.ndarray, first_row: int, first_col: int,
                    origin: tuple[int, int] = (rows.start, cols.start)) -> np.ndarray:
            return apply_coregistration(window, result, spacing, origin=(first_row - origin[0], first_col - origin[1]),
                                        out=window)

        coreg = {"applied": True, **asdict(result), "calibration_window": [rows.start, rows.stop, cols.start,
                                                                           cols.stop]}
        log.info("co-registration: shift %.2f m east, %.2f m north, bias %.2f m; stable-terrain NMAD %.2f -> %.2f m",
                 result.shift_x_m, result.shift_y_m, result.bias_m, result.nmad_before_m, result.nmad_after_m)
    win_dh = (l_win - e_win).astype(np.float32)
    stable_dh = np.where(stable & np.isfinite(win_dh), win_dh, np.nan)
    sigma = nmad(stable_dh[np.isfinite(stable_dh)]) if errors_known else math.nan
    median = float(np.nanmedian(stable_dh)) if errors_known else math.nan
    if not errors_known:
        lags, gamma, (sill, range_m, nugget) = [], [], (math.nan, math.nan, math.nan)
    elif np.nanstd(stable_dh) > 0:
        max_lag = min(VARIOGRAM_MAX_LAG_M, 0.5 * max(win_dh.shape) * spacing[0])
        lags, gamma, counts = empirical_variogram(stable_dh, spacing, np.isfinite(stable_dh), max_lag_m=max_lag)
        sill, range_m, nugget = fit_spherical(lags, gamma, counts)
    else:  # identical epochs outside the sites (e.g. one survey pasted into another): no error to model
        log.warning("dh is exactly 0 on all stable terrain: volume errors are reported as 0")
        lags, gamma, (sill, range_m, nugget) = [], [], (0.0, 0.0, 0.0)
    threshold = float(threshold_m) if threshold_m is not None else float(threshold_nmad) * sigma
    log.info("dh on stable terrain: median %.2f m, NMAD %.2f m, correlation range %.0f m; threshold %.2f m",
             median, sigma, range_m, threshold)
    del e_win, l_win, stable, win_dh, stable_dh  # the bands streamed next need the memory

    stats = np.full((len(site_frame), len(_SUM_FIELDS)), np.nan)
    polygons, site_ids = site_frame.geometry.to_numpy(), site_frame["site_id"].to_numpy()
    groups = site_groups(site_frame, early.transform, early.shape)
    batches = group_batches(groups, early_values.chunks[0], depth, early.shape)
    tasks = []
    with dask.annotate(**gpu_annotations(opts.device)):
        for members, e_window, l_window in batches:
            windows = [(polygons[groups[g][0]], site_ids[groups[g][0]], groups[g][1],
                        margin_window(groups[g][1], depth, early.shape)) for g in members]
            origins = ((e_window[0].start, e_window[1].start), (l_window[0].start, l_window[1].start))
            tasks.append(dask.delayed(measure_groups)(early_values[e_window], late_raw[l_window], origins, windows,
                                                      early.transform, correct, threshold, cell_area, void_policy,
                                                      min_deposit_m2, opts.device))
    log.info("integrating %d sites in %d windows as %d dask tasks", len(site_frame), len(groups), len(tasks))
    found: dict[int, list[dict[str, Any]]] = {}
    devices: dict[str, int] = {}
    for (members, _, _), (device, results) in zip(batches, dask.compute(*tasks)):
        devices[device] = devices.get(device, 0) + 1
        for g, (sums, deposits_found) in zip(members, results):
            stats[groups[g][0]] = sums
            found[g] = deposits_found
    log.info("summed dh over %d sites in %d windows (tasks on %s)", len(site_frame), len(groups),
             ", ".join(f"{k}: {v}" for k, v in sorted(devices.items())) or "none")
    nugget_fraction = float(np.clip(nugget / sill, 0.0, 1.0)) if sill > 0 else 0.0  # sill: the total variance
    frame = site_frame.copy()
    for k, name in enumerate(_SUM_FIELDS):
        frame[name] = stats[:, k]
    frame["dem_coverage"] = dem_coverage(site_frame.area.to_numpy(), frame["area_m2"].to_numpy(),
                                         frame["void_fraction"].to_numpy())
    check_coverage(frame["dem_coverage"].to_numpy(), early.source, late.source)
    # each volume's error over the cells it sums: net_m3 = deposited_m3 - excavated_m3 sums the cells beyond the
    # threshold, so its error is over their area, not the site's
    for name, area in (("excavated", frame["excavated_area_m2"]), ("deposited", frame["deposited_area_m2"]),
                       ("net", frame["excavated_area_m2"] + frame["deposited_area_m2"])):
        if not errors_known:
            frame[f"{name}_sigma_m3"] = math.nan
        else:
            frame[f"{name}_sigma_m3"] = (volume_sigma(area.to_numpy(), sigma, range_m, nugget_fraction=nugget_fraction,
                                                      cell_area_m2=cell_area) if range_m > 0 else 0.0)
    frame["threshold_m"] = threshold
    frame["void_policy"] = void_policy
    frame["coregistered"] = bool(coregister)
    rows = [d for g in range(len(groups)) for d in found[g]]  # numbered in group order
    deposits = gpd.GeoDataFrame(pd.DataFrame(rows, columns=[*DEPOSIT_COLUMNS[1:], "geometry"]), geometry="geometry",
                                crs=early.crs)
    deposits.insert(0, "deposit_id", [f"D{k:05d}" for k in range(1, len(deposits) + 1)])
    frame["waste_deposits"] = frame["site_id"].map(deposits["site_id"].value_counts()).fillna(0).astype(int)

    report = {
        "before": early.source, "after": late.source, "before_date": early.date, "after_date": late.date,
        "crs": early.crs.to_string(), "cell_size_m": list(spacing), "coregistration": coreg,
        "stable_cells": n_stable, "stable_median_m": median, "stable_nmad_m": sigma,
        "variogram": {"sill_m2": sill, "range_m": range_m, "nugget_m2": nugget,
                      "lags_m": np.asarray(lags).tolist(), "semivariance_m2": np.asarray(gamma).tolist()},
        "threshold_m": threshold, "threshold_rule": "metres" if threshold_m is not None else f"{threshold_nmad} x NMAD",
        "void_policy": void_policy, "vertical_datums": datums, "integration_tasks": devices,
    }
    dh = dh_array(late_values - early_values, early, {"mtg:coregistration": json.dumps(coreg, default=float),
                                                      "mtg:threshold_m": threshold})

    def dh_bands() -> Iterator[tuple[int, np.ndarray]]:
        for r0, e_band, l_band in epoch_bands(early_values, late_raw, correct, depth[0]):
            np.subtract(l_band, e_band, out=l_band)  # the band's own arrays: dh takes the later rows' place
            del e_band
            yield r0, l_band.astype(np.float32, copy=False)

    return Volumes(dh=dh, site_volumes=frame, deposits=deposits, report=report, dh_bands=dh_bands)


#: Margin (m) around the sites' extent of the area searched for DEM collections: stable terrain for co-registration.
DEM_MARGIN_M = 3_000.0


def measure_volumes(before: str | Path, after: str | Path, sites: str | Path, out: str | Path, *,
                    site_id_col: str | None = None, catalog: str | None = None,
                    storage_options: dict[str, Any] | None = None, before_datum: str | None = None,
                    after_datum: str | None = None, options: VolumeOptions | None = None,
                    **overrides: Any) -> VolumeResult:
    """Read two DEM epochs and a sites file, measure :func:`volumes` and write them into ``out``.

    Parameters
    ----------
    before, after : str or Path
        Earlier and later DEM epochs: files (:func:`mtg.pipeline.dem_inputs.read_dem`) or DEM collections of
        ``catalog`` (:func:`mtg.pipeline.dem_epochs.dem_epoch`).
    sites : str or Path
        Site polygons (GeoParquet, GPKG, ...; any CRS), e.g. the ``sites.parquet`` of ``mtg link``.
    out : str or Path
        Output folder (:func:`write_volumes`).
    site_id_col : str, optional
        Column of the sites file holding site ids.
    catalog : str, optional
        Catalog (source name, static catalog, STAC API) searched for DEM collections, over the sites' extent
        plus :data:`DEM_MARGIN_M`.
    storage_options : dict, optional
        fsspec options for remote Zarr DEM sources.
    before_datum, after_datum : str, optional
        Vertical datums of the epochs (``EPSG:5773``, ``EPSG:3855``, ``ellipsoid``) when the files do not say.
    options, **overrides
        As for :func:`volumes`.

    Returns
    -------
    VolumeResult
    """
    from odc.geo.geom import Geometry

    from mtg.pipeline.catalogs import resolve_source
    from mtg.pipeline.dem_epochs import dem_epoch
    from mtg.pipeline.grid import utm_epsg
    from mtg.pipeline.io import read_sites

    start = time.perf_counter()
    footprints = site_polygons(read_sites(sites), "EPSG:4326", site_id_col, str(sites))
    source = resolve_source(catalog) if catalog else None
    west, south, east, north = footprints.total_bounds
    local = f"EPSG:{utm_epsg((west + east) / 2, (south + north) / 2)}"
    aoi = Geometry(footprints.to_crs(local).union_all().envelope.buffer(DEM_MARGIN_M), local)
    epochs = [dem_epoch(str(spec), source=source, aoi=aoi, datum=datum, storage_options=storage_options)
              for spec, datum in ((before, before_datum), (after, after_datum))]
    result = volumes(*epochs, footprints, sites_name=str(sites), options=options, **overrides)
    from mtg.pipeline.io import write_volumes

    out = write_volumes(result, out)
    return VolumeResult(out=out, n_sites=len(result.site_volumes), n_deposits=len(result.deposits),
                        threshold_m=result.threshold_m, nmad_m=result.nmad_m, range_m=result.range_m,
                        coregistration=result.coregistration, seconds=time.perf_counter() - start)
