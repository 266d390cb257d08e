"""Vertical datums of DEM epochs: geoid-to-geoid (and geoid-to-ellipsoid) height offsets from PROJ.

Global DEM change pairs mix collections whose heights refer to different geoids: NASADEM and AW3D30 give heights
above EGM96 (``EPSG:5773``), the Copernicus DEM above EGM2008 (``EPSG:3855``). The two geoids differ by up to a
few metres in mountains, which a volume between the epochs would count as cut or fill. This module converts heights
between vertical datums with PROJ (through pyproj), from the same geoid grids PROJ publishes
(``us_nga_egm96_15.tif``, ``us_nga_egm08_25.tif``, ...).

A datum is named by a string: a vertical CRS PROJ knows (``"EPSG:5773"``, ``"EPSG:3855"``, a WKT), a compound CRS
whose vertical part is taken (``"EPSG:4326+5773"``), or ``"ellipsoid"`` / ``"EPSG:4979"`` for heights above the
WGS 84 ellipsoid. Heights must be in metres.

PROJ silently falls back to a "ballpark" transformation that leaves heights unchanged when the geoid grid a
transformation needs is not installed. This module never does: it raises :class:`~mtg.pipeline.errors.MtgError`
naming the missing grid files, the folders PROJ searches and how to get them. Where PROJ finds grids: pyproj's own
data folder (``pyproj.datadir.get_data_dir()``; pyproj wheels use it in preference to ``PROJ_DATA``), folders added
with ``pyproj.datadir.append_data_dir``, and the user folder (``pyproj.datadir.get_user_data_dir()``, where
``projsync`` puts grids). No package on PyPI is known to ship the EGM grids; Debian's ``proj-data`` ships
``egm96_15.gtx`` (EGM96 only, found by PROJ under its old name once its folder is on the search path).

The module is pure: it knows DEM epochs (:class:`~mtg.pipeline.dem_inputs.Dem`) but no files or catalogs.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import replace
from functools import lru_cache, partial
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.crs import CompoundCRS
from pyproj.datadir import get_data_dir, get_user_data_dir
from pyproj.exceptions import CRSError, ProjError
from pyproj.transformer import TransformerGroup

from mtg.pipeline.dem_inputs import Dem
from mtg.pipeline.errors import MtgError

log = logging.getLogger(__name__)

#: Names that mean heights above the WGS 84 ellipsoid.
ELLIPSOID_NAMES = ("ellipsoid", "epsg:4979")
#: Harmonisation policies of :func:`harmonise_vertical_datums`.
POLICIES = ("convert", "assume-same")
#: Default lattice step (cells) of :func:`to_vertical_datum`: the offset is evaluated on every 8th cell.
DEFAULT_STEP = 8

_WGS84_2D = CRS.from_epsg(4326)
_WGS84_3D = CRS.from_epsg(4979)


# ---------------------------------------------------------------------------------------------- datum names
def _vertical_part(datum: str) -> CRS:
    """The vertical CRS (or ``EPSG:4979`` for the ellipsoid) that ``datum`` names, checked to be in metres."""
    if not isinstance(datum, str) or not datum.strip():
        raise MtgError(f"vertical datum {datum!r} must be a vertical CRS such as 'EPSG:5773', or 'ellipsoid'")
    if datum.strip().lower() in ELLIPSOID_NAMES:
        return _WGS84_3D
    try:
        crs = CRS.from_user_input(datum)
    except CRSError as err:
        raise MtgError(f"vertical datum {datum!r} is not a CRS PROJ knows: {err}") from None
    if crs.is_compound:
        vertical = [c for c in crs.sub_crs_list if c.is_vertical]
        if not vertical:
            raise MtgError(f"vertical datum {datum!r} is a compound CRS without a vertical part")
        crs = vertical[0]
    if crs.equals(_WGS84_3D):
        return _WGS84_3D
    if not crs.is_vertical:
        raise MtgError(f"vertical datum {datum!r} ({crs.name}) is not a vertical CRS; give one such as "
                       "'EPSG:5773' (EGM96 height), 'EPSG:3855' (EGM2008 height), or 'ellipsoid'")
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    if unit not in ("metre", "meter"):
        raise MtgError(f"vertical datum {datum!r} ({crs.name}) has heights in {unit}; only metres are supported")
    return crs


def _label(crs: CRS) -> str:
    """A short name for a vertical CRS: ``EPSG:5773``, else its name."""
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def canonical_datum(datum: str) -> str:
    """The canonical name of a vertical datum (``"EPSG:5773"``; ``"EPSG:4979"`` for the ellipsoid).

    Raises
    ------
    MtgError
        When ``datum`` is not a vertical CRS PROJ knows, or its heights are not in metres.
    """
    return _label(_vertical_part(datum))


def _three_d(vertical: CRS) -> CRS:
    """The 3-D CRS of WGS 84 longitude/latitude with heights in ``vertical``."""
    if vertical.equals(_WGS84_3D):
        return _WGS84_3D
    return CompoundCRS(name=f"WGS 84 + {vertical.name}", components=[_WGS84_2D, vertical])


# ---------------------------------------------------------------------------------------------- PROJ operation
def _search_folders() -> list[str]:
    folders = [f for f in get_data_dir().split(os.pathsep) if f]
    user = get_user_data_dir()
    return folders + ([user] if user not in folders else [])


def _missing_grids_error(source: CRS, target: CRS, group: TransformerGroup) -> MtgError:
    """The error for a transformation that only PROJ's no-op ballpark can do here."""
    needed: list[Any] = []
    for op in group.unavailable_operations:
        missing = [g for g in op.grids if not g.available]
        if missing:
            needed.append((op.name, missing))
    where = ", ".join(_search_folders())
    if not needed:
        return MtgError(
            f"PROJ knows no geoid-grid transformation from {_label(source)} ({source.name}) to {_label(target)} "
            f"({target.name}), only a ballpark one that leaves heights unchanged; convert the heights yourself or "
            "declare both epochs in the same datum"
        )
    best_name, best_grids = needed[0]
    names = [g.short_name for g in best_grids]
    # other operations' grids that PROJ's CDN serves (NGA's own .gz files are not PROJ grids)
    others = sorted({g.short_name for _, grids in needed[1:] for g in grids if g.url} - set(names))
    urls = [g.url or f"https://cdn.proj.org/{g.short_name}" for g in best_grids]
    sync = " and ".join(f"`pyproj sync --file {name}`" for name in names)
    return MtgError(
        f"cannot convert heights from {_label(source)} ({source.name}) to {_label(target)} ({target.name}): "
        f"PROJ's transformation {best_name!r} needs the geoid grid file(s) {', '.join(names)}"
        + (f" (or else {', '.join(others)})" if others else "")
        + f", which are not in the folders PROJ searches ({where}). Where there is internet, get them with {sync} "
        f"(or PROJ's `projsync --file NAME`; both write to {get_user_data_dir()}), or download "
        f"{', '.join(urls)} into one of those folders (or into a folder added with pyproj.datadir.append_data_dir), "
        "or set PROJ_NETWORK=ON (pyproj.network.set_network_enabled(True)) so PROJ reads them from its CDN. "
        "No PyPI package is known to ship these grids. Without them PROJ would only shift heights by 0 m (a ballpark "
        "transformation), which this pipeline refuses to do silently"
    )


def _pipeline(source: str, target: str) -> str | None:
    """The PROJ pipeline (a string) of the best grid-based transformation ``source`` -> ``target``.

    ``None`` when both are the same datum (no shift). Not cached: PROJ is asked each time (tens of milliseconds),
    so grids installed or removed during a session are seen.
    """
    src, dst = _vertical_part(source), _vertical_part(target)
    if src.equals(dst):
        return None
    with warnings.catch_warnings():
        # pyproj warns "Best transformation is not available"; the error below says more
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(_three_d(src), _three_d(dst), always_xy=True)
    for transformer in group.transformers:
        ops = transformer.operations or ()
        ballpark = any(op.has_ballpark_transformation for op in ops) or "ballpark" in transformer.description
        if not ballpark and "proj=noop" not in transformer.definition.split():
            log.debug("vertical datum %s -> %s: %s (%s)", source, target, transformer.description,
                      transformer.definition)
            return transformer.definition
    raise _missing_grids_error(src, dst, group)


def _operation(source: str, target: str) -> str | None:
    return _pipeline(canonical_datum(source), canonical_datum(target))


@lru_cache(maxsize=32)
def _transformer(pipeline: str) -> Transformer:
    # pyproj Transformers are thread-safe (one PROJ object per thread, made on first use)
    return Transformer.from_pipeline(pipeline)


def _shift(pipeline: str, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Height in the target minus height in the source at lon/lat (degrees), from the PROJ pipeline."""
    z = np.zeros(lon.shape, dtype=np.float64)
    try:
        _, _, out = _transformer(pipeline).transform(lon, lat, z, errcheck=False)
    except ProjError as err:
        raise MtgError(f"PROJ cannot run {pipeline!r} here ({err}): are the geoid grids it names in one of "
                       f"{', '.join(_search_folders())}? On a dask cluster every worker needs them") from None
    return np.asarray(out, dtype=np.float64).reshape(lon.shape)


def _outside(pipeline: str, lon: np.ndarray, lat: np.ndarray, offset: np.ndarray) -> MtgError | None:
    bad = ~np.isfinite(offset) & np.isfinite(lon) & np.isfinite(lat)
    if not bad.any():
        return None
    i = np.flatnonzero(bad.ravel())[0]
    return MtgError(
        f"{int(bad.sum())} of {bad.size} points lie outside the geoid grids of the PROJ pipeline {pipeline!r} "
        f"(first: lon {lon.ravel()[i]:.6f}, lat {lat.ravel()[i]:.6f}): those grid files do not cover the area"
    )


def vertical_offset(lon: Any, lat: Any, source: str, target: str) -> np.ndarray:
    """Height in ``target`` minus height in ``source`` of the same points, from PROJ's geoid grids.

    ``H_target = H_source + vertical_offset(...)``. For a geoid height datum against the ellipsoid the offset is
    the geoid undulation N (``h = H + N``); between two geoids it is ``N_source - N_target``.

    Parameters
    ----------
    lon, lat : array_like
        WGS 84 longitude and latitude (degrees), broadcast against each other.
    source, target : str
        Vertical datums: a vertical CRS (``"EPSG:5773"`` EGM96 height, ``"EPSG:3855"`` EGM2008 height, ...),
        or ``"ellipsoid"`` / ``"EPSG:4979"`` for WGS 84 ellipsoidal heights.

    Returns
    -------
    numpy.ndarray
        Offsets (m), float64, of the broadcast shape of ``lon`` and ``lat``; zeros when the datums are the same.

    Raises
    ------
    MtgError
        When a datum is not a vertical CRS in metres; when the geoid grid(s) the transformation needs are not
        installed (naming the files, where PROJ looks and how to get them), instead of PROJ's silent no-op; when
        a point lies outside the grids.
    """
    lon_a, lat_a = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    pipeline = _operation(source, target)
    if pipeline is None:
        return np.zeros(lon_a.shape, dtype=np.float64)
    offset = _shift(pipeline, np.array(lon_a), np.array(lat_a))
    err = _outside(pipeline, lon_a, lat_a, offset)
    if err is not None:
        raise err
    return offset


# ---------------------------------------------------------------------------------------------- DEM epochs
def _horizontal_wkt(crs: Any) -> str:
    """WKT of the horizontal part of a DEM's CRS (rasterio or pyproj CRS)."""
    pcrs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if pcrs.is_compound:
        pcrs = pcrs.sub_crs_list[0]
    return pcrs.to_wkt()


@lru_cache(maxsize=32)
def _to_lonlat(crs_wkt: str) -> Transformer | None:
    crs = CRS.from_wkt(crs_wkt)
    if crs.is_geographic and crs.equals(_WGS84_2D, ignore_axis_order=True):
        return None
    return Transformer.from_crs(crs, _WGS84_2D, always_xy=True)


def _lonlat(crs_wkt: str, transform: Affine, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude of the centres of cells ``rows x cols`` (a 2-D lattice)."""
    cc, rr = np.meshgrid(cols.astype(np.float64) + 0.5, rows.astype(np.float64) + 0.5)
    x = transform.c + transform.a * cc + transform.b * rr
    y = transform.f + transform.d * cc + transform.e * rr
    to_lonlat = _to_lonlat(crs_wkt)
    if to_lonlat is None:
        return x, y
    lon, lat = to_lonlat.transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def _lattice(start: int, stop: int, step: int) -> np.ndarray:
    """Every ``step``-th index of ``start..stop-1``, always with the last one."""
    idx = np.arange(start, stop, step)
    return idx if idx[-1] == stop - 1 else np.append(idx, stop - 1)


def _weights(lattice: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``full``: the lattice interval ``(i0, i1)`` around it and the linear weight of ``i1``."""
    if len(lattice) == 1:
        zero = np.zeros(len(full), dtype=np.intp)
        return zero, zero, np.zeros(len(full))
    i0 = np.clip(np.searchsorted(lattice, full, side="right") - 1, 0, len(lattice) - 2)
    w = (full - lattice[i0]) / (lattice[i0 + 1] - lattice[i0])
    return i0, i0 + 1, w


def _offset_grid(pipeline: str, crs_wkt: str, transform: Affine, rows: tuple[int, int], cols: tuple[int, int],
                 step: int) -> np.ndarray:
    """Offsets of the cells ``rows x cols`` (half-open ranges): exact on a lattice, bilinear between."""
    r_lat, c_lat = _lattice(*rows, step), _lattice(*cols, step)
    lon, lat = _lonlat(crs_wkt, transform, r_lat, c_lat)
    coarse = _shift(pipeline, lon, lat)
    err = _outside(pipeline, lon, lat, coarse)
    if err is not None:
        raise err
    if step == 1:
        return coarse
    r0, r1, wr = _weights(r_lat, np.arange(*rows))
    c0, c1, wc = _weights(c_lat, np.arange(*cols))
    # bilinear, one axis after the other: along the lattice rows first, then between them
    along = coarse[:, c0] * (1 - wc) + coarse[:, c1] * wc
    return along[r0] * (1 - wr)[:, None] + along[r1] * wr[:, None]


def _add_offset(block: np.ndarray, *, pipeline: str, crs_wkt: str, transform: Affine, step: int,
                block_info: dict | None = None) -> np.ndarray:
    (row0, row1), (col0, col1) = block_info[0]["array-location"]
    offset = _offset_grid(pipeline, crs_wkt, transform, (row0, row1), (col0, col1), step)
    return (block.astype(np.float64) + offset).astype(np.float32)


def to_vertical_datum(dem: Dem, target: str, *, step: int = DEFAULT_STEP) -> Dem:
    """The epoch with its heights converted to another vertical datum, lazily.

    Each dask block gets the offset of :func:`vertical_offset` at its cell centres (their lon/lat from
    ``dem.transform`` and ``dem.crs``). The offset is evaluated exactly on a lattice of every ``step``-th cell
    (plus each block's last row and column) and interpolated bilinearly in between; NaN cells stay NaN.

    Error bound of the lattice: with lattice spacing ``L = step x cell size`` the bilinear interpolation error is
    at most ``L**2 / 8 * (|f_xx| + |f_yy|)`` where the offset ``f`` is smooth, and at most ``L / 4 * dg`` across a
    kink of PROJ's own bilinear geoid grid (``dg`` the change of the geoid slope between neighbouring grid
    cells, 2.5' for EGM2008, 15' for EGM96). Geoid slopes (deflections of the vertical) stay below about 60"
    (3e-4) even in high mountains, so ``dg <= 6e-4`` and the error is at most ``1.5e-4 * L``: 3.6 cm for 30 m
    cells at ``step=8`` in the worst case, millimetres in typical terrain, far below the metre-level vertical
    error of global DEMs. ``step=1`` evaluates every cell: about 15 times slower (1.4 s against 0.09 s of
    offsets per 2048 x 2048 block on one core).

    Parameters
    ----------
    dem : Dem
        The epoch; its ``vertical_datum`` must be known.
    target : str
        The datum to convert to (see :func:`vertical_offset`).
    step : int, optional
        Lattice step in cells (>= 1).

    Returns
    -------
    Dem
        The same grid with heights in ``target`` and ``vertical_datum`` set to its canonical name; the epoch
        itself when it already is in ``target``.

    Raises
    ------
    MtgError
        At call time (not when the graph is computed): when the epoch's datum is unknown, a datum is invalid,
        the geoid grids are missing, or the grids do not cover the epoch. While computing: when a cell lies
        outside the grids, or the grids are missing on a dask worker.
    """
    if dem.vertical_datum is None:
        raise MtgError(f"{dem.source}: its vertical datum is unknown, so it cannot be converted to {target!r}; "
                       "set Dem.vertical_datum (for example 'EPSG:5773' for EGM96 heights)")
    if int(step) != step or step < 1:
        raise MtgError(f"step {step!r} must be a positive whole number of cells")
    step = int(step)
    target_name = canonical_datum(target)
    pipeline = _operation(dem.vertical_datum, target_name)
    if pipeline is None:
        return dem
    crs_wkt = _horizontal_wkt(dem.crs)
    rows, cols = dem.shape
    # eager check that the grids are there and cover the epoch: its corners and centre
    probe_r = np.array(sorted({0, rows // 2, rows - 1}))
    probe_c = np.array(sorted({0, cols // 2, cols - 1}))
    lon, lat = _lonlat(crs_wkt, dem.transform, probe_r, probe_c)
    err = _outside(pipeline, lon, lat, _shift(pipeline, lon, lat))
    if err is not None:
        raise MtgError(f"{dem.source}: {err}")
    values = dem.values if isinstance(dem.values, da.Array) else da.from_array(np.asarray(dem.values))
    add = partial(_add_offset, pipeline=pipeline, crs_wkt=crs_wkt, transform=dem.transform, step=step)
    out = values.map_blocks(add, dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32))
    log.info("%s: heights converted from %s to %s (%s)", dem.source, dem.vertical_datum, target_name, pipeline)
    return replace(dem, values=out, vertical_datum=target_name)


def harmonise_vertical_datums(reference: Dem, other: Dem, policy: str = "convert") -> tuple[Dem, Dem, dict]:
    """Both epochs in the reference's vertical datum, as far as the datums are known.

    Parameters
    ----------
    reference, other : Dem
        The epoch whose datum is kept and the one converted to it.
    policy : {"convert", "assume-same"}
        With both datums known and different: ``"convert"`` converts ``other`` with :func:`to_vertical_datum`;
        ``"assume-same"`` keeps its heights and logs a warning naming the ignored datum difference. When one or
        both datums are unknown the heights are kept and the datums assumed equal (logged at info).

    Returns
    -------
    (Dem, Dem, dict)
        The reference, the (converted) other epoch, and a JSON-able record for the volume report:
        ``{"before": {"reference": ..., "other": ...}, "after": {...}, "converted": bool, "policy": ...}``.

    Raises
    ------
    MtgError
        When the policy is unknown, a datum is invalid, or the conversion needs geoid grids that are missing.
    """
    if policy not in POLICIES:
        raise MtgError(f"vertical datum policy {policy!r} is unknown: allowed values are {', '.join(POLICIES)}")
    ref_datum = canonical_datum(reference.vertical_datum) if reference.vertical_datum is not None else None
    other_datum = canonical_datum(other.vertical_datum) if other.vertical_datum is not None else None
    converted = False
    if ref_datum is None or other_datum is None:
        log.info("vertical datum of %s is %s and of %s is %s: unknown datums are assumed equal, heights kept",
                 reference.source, ref_datum or "unknown", other.source, other_datum or "unknown")
    elif ref_datum == other_datum:
        log.info("both epochs are in %s: no vertical datum conversion", ref_datum)
    elif policy == "assume-same":
        log.warning("%s is in %s but %s is in %s: policy 'assume-same' keeps the heights, ignoring the difference "
                    "between the datums (up to metres between EGM96 and EGM2008), which the volumes then include",
                    reference.source, ref_datum, other.source, other_datum)
    else:
        other = to_vertical_datum(other, ref_datum)
        converted = True
    after = canonical_datum(other.vertical_datum) if other.vertical_datum is not None else None
    record = {"before": {"reference": ref_datum, "other": other_datum},
              "after": {"reference": ref_datum, "other": after}, "converted": converted, "policy": policy}
    return reference, other, record
