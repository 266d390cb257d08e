"""Co-registration of a late DEM to an early one on stable terrain: Nuth & Kääb (2011) shift, vertical bias, tilt.

Written once against the array API: the same code runs on numpy and CuPy arrays (resampling included, as
bilinear interpolation of whole-array slices). On numpy arrays the resampling (and the bias and plane removal of
:func:`apply_coregistration`) runs as one numba loop instead, with the same float64 operations in the same order,
so it gives the same bits without the whole-array float64 temporaries.

Conventions
-----------
Grids are north-up: row 0 is the northern edge, columns run east. ``x`` is east and ``y`` north, in metres.
``spacing = (dx, dy)`` gives the cell size; the sign of ``dy`` is ignored, so a GDAL transform's ``(a, e)`` works.
``dh = target - reference`` (late minus early).

A *shift* ``(sx, sy)`` applied to a DEM ``z`` moves its content by ``sx`` metres east and ``sy`` metres north:
``shifted(x, y) = z(x - sx, y - sy)``. :class:`Coregistration` holds the shift to apply to the *target* so that it
lines up with the reference: if the target is the reference moved 7.4 m east and 12.2 m south, the shift found is
``(-7.4, +12.2)``. After the shift, ``corrected = shifted - bias - plane(x, y)`` with the plane
``c0 + cx * x + cy * y`` (only when ``tilt=True``), ``x, y`` measured from the centre of the grid.

Method (Nuth & Kääb 2011, The Cryosphere 5:271)
-----------------------------------------------
A target displaced by ``s`` relative to the reference differs from it, to first order, by
``dh = -grad(z) . s = tan(slope) * (sx sin(aspect) + sy cos(aspect))`` (aspect: the downslope direction, clockwise
from north), so ``dh / tan(slope) = a cos(b - aspect) + c`` with ``a`` the magnitude and ``b`` the direction of the
displacement; the constant ``c`` absorbs a vertical bias divided by the slope. Each iteration:

1. shift the target by the accumulated shift (bilinear; cells whose 2x2 support leaves the grid or meets NaN
   become NaN), take ``dh`` on the usable stable cells (the caller's mask, finite in both DEMs, reference slope within
   ``[min_slope_deg, max_slope_deg]``; slope and aspect from central differences of the reference);
2. remove the median of ``dh`` (and, with ``tilt``, a least-squares plane), then drop cells beyond
   ``outlier_nmad`` NMAD of the remainder;
3. bin ``dh / tan(slope)`` by aspect (``aspect_bins`` equal bins), take each bin's median, and fit
   ``A cos(aspect) + B sin(aspect) + C`` to the bin medians by least squares weighted by the bin counts. The
   medians make the fit robust to the ``1 / tan(slope)`` amplification of dh noise on gentle slopes (as xdem does);
   ``(B, A)`` is the remaining displacement east and north, so ``(-B, -A)`` is added to the shift;
4. stop once that increment is shorter than ``tolerance_m`` (converged) or after ``max_iterations``.

The vertical bias is then the median of the stable ``dh`` after the final shift (not ``C * mean(tan(slope))``,
which mixes slope-dependent errors in), and with ``tilt`` a least-squares plane is fitted to the remainder (after
the same outlier rejection) and removed too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from array_api_compat import array_namespace, device, is_numpy_array

from mtg.kernels.dh_statistics import _grid_spacing, nanmedian, nmad


@dataclass(frozen=True)
class Coregistration:
    """Result of :func:`nuth_kaab`.

    Attributes
    ----------
    shift_x_m, shift_y_m : float
        Shift to apply to the target (metres east and north): ``shifted(x, y) = target(x - shift_x_m, y - shift_y_m)``.
    bias_m : float
        Vertical offset removed from the shifted target: ``corrected = shifted - bias_m - plane``.
    tilt : tuple of float or None
        ``(c0, cx, cy)`` of the plane ``c0 + cx * x + cy * y`` (m, m/m) also removed, with ``x`` east and ``y`` north
        in metres from the grid centre; None when no tilt was fitted.
    iterations : int
        Nuth & Kääb iterations run.
    converged : bool
        Whether the last shift increment was shorter than the tolerance.
    median_before_m, nmad_before_m : float
        Median and NMAD of the stable ``dh = target - reference`` before co-registration.
    median_after_m, nmad_after_m : float
        The same after co-registration (``corrected - reference``).
    n_stable : int
        Stable cells used after the final shift.
    grid_shape : tuple of int
        ``(rows, columns)`` of the grid the fit ran on: the plane's ``x`` and ``y`` are centred on it.
    """

    shift_x_m: float
    shift_y_m: float
    bias_m: float
    tilt: tuple[float, float, float] | None
    iterations: int
    converged: bool
    median_before_m: float
    nmad_before_m: float
    median_after_m: float
    nmad_after_m: float
    n_stable: int
    grid_shape: tuple[int, int]


def _offset(z, d_row: int, d_col: int):
    """``out[r, c] = z[r + d_row, c + d_col]``, NaN where that falls off the grid."""
    xp = array_namespace(z)
    ny, nx = z.shape
    out = xp.full(z.shape, xp.nan, dtype=z.dtype, device=device(z))
    if abs(d_row) < ny and abs(d_col) < nx:
        out[max(0, -d_row):ny - max(0, d_row), max(0, -d_col):nx - max(0, d_col)] = \
            z[max(0, d_row):ny - max(0, -d_row), max(0, d_col):nx - max(0, -d_col)]
    return out


def _bilinear_terms(shift_x_m: float, shift_y_m: float, dx: float, dy: float) -> list[tuple[int, int, float]]:
    """``(d_row, d_col, weight)`` of the non-zero bilinear weights of a shift, in the order they are summed."""
    # shifted(x, y) = z(x - sx, y - sy): sample z at column c - sx/dx and at row r + sy/dy (rows run south)
    p_row, p_col = shift_y_m / dy, -shift_x_m / dx
    r0, c0 = math.floor(p_row), math.floor(p_col)
    f_row, f_col = p_row - r0, p_col - c0
    return [(d_row, d_col, w_row * w_col) for d_row, w_row in ((r0, 1.0 - f_row), (r0 + 1, f_row))
            for d_col, w_col in ((c0, 1.0 - f_col), (c0 + 1, f_col))
            if w_row * w_col > 0]  # a zero weight must not pull in a NaN neighbour


def _shift(z, shift_x_m: float, shift_y_m: float, dx: float, dy: float):
    """``z`` moved ``shift_x_m`` east and ``shift_y_m`` north by bilinear interpolation, NaN where undefined."""
    terms = _bilinear_terms(shift_x_m, shift_y_m, dx, dy)
    if is_numpy_array(z):
        return _shift_numpy(z, terms, 0.0, None, None, None, z.dtype)
    xp = array_namespace(z)
    out = xp.zeros_like(z)
    for d_row, d_col, weight in terms:
        out = out + weight * _offset(z, d_row, d_col)
    return out


def _shift_numpy(z: np.ndarray, terms: list[tuple[int, int, float]], bias: float, plane, x: np.ndarray | None,
                 y: np.ndarray | None, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`_shift` then :func:`_remove` of a numpy array in one numba pass, cast to ``dtype``.

    Parameters
    ----------
    z : numpy.ndarray
        2-D raster (any real dtype, read as float64).
    terms : list of (int, int, float)
        :func:`_bilinear_terms` of the shift.
    bias : float
        Subtracted after the shift.
    plane : (float, float, float) or None
        Plane ``c0 + cx x + cy y`` subtracted after the bias.
    x, y : numpy.ndarray or None
        1-D float64 east coordinate of every column and north coordinate of every row (needed with a plane).
    dtype
        dtype of the result.
    out : numpy.ndarray, optional
        Where to write the result (``z`` itself allowed); default a new array.
    """
    d_rows = np.array([t[0] for t in terms], dtype=np.int64)
    d_cols = np.array([t[1] for t in terms], dtype=np.int64)
    weights = np.array([t[2] for t in terms], dtype=np.float64)
    coefficients = np.array(plane if plane is not None else (0.0, 0.0, 0.0), dtype=np.float64)
    x = np.zeros(z.shape[1]) if x is None else x
    y = np.zeros(z.shape[0]) if y is None else y
    out = np.empty(z.shape, dtype=dtype) if out is None else out
    _shift_kernel(z, d_rows, d_cols, weights, float(bias), coefficients, plane is not None, x, y, out)
    return out


@numba.njit(cache=True, nogil=True)
def _shift_kernel(z, d_rows, d_cols, weights, bias, coefficients, has_plane, x, y, out):
    """``out = sum_k weights[k] z[r + d_rows[k], c + d_cols[k]] - bias - plane``, NaN off the grid.

    The float64 operations and their order per cell are those of the array-API code (``0 + w0 a0 + w1 a1 ...``,
    then ``- bias``, then ``- (c0 + cx x + cy y)``), without fastmath: the same bits. Each row is summed term by
    term into a float64 row buffer, in loops without branches that vectorise, and then written: ``out`` may be
    ``z``, as the rows run away from the ones they read (``d_rows`` are both >= 0 or both <= 0).
    """
    n_rows, n_cols = z.shape
    acc = np.empty(n_cols)
    upward = d_rows.size > 0 and d_rows.min() < 0
    for i in range(n_rows):
        r = n_rows - 1 - i if upward else i
        acc[:] = 0.0
        for k in range(weights.size):
            rr, dc, w = r + d_rows[k], d_cols[k], weights[k]
            lo, hi = min(max(-dc, 0), n_cols), max(min(n_cols - dc, n_cols), 0)  # columns whose c + dc is on the grid
            if not 0 <= rr < n_rows:
                lo = hi = 0
            for c in range(lo):
                acc[c] = acc[c] + w * np.nan
            for c in range(lo, hi):
                acc[c] = acc[c] + w * np.float64(z[rr, c + dc])
            for c in range(max(hi, lo), n_cols):
                acc[c] = acc[c] + w * np.nan
        if has_plane:
            c0, cx, cy = coefficients[0], coefficients[1], coefficients[2]
            yr = y[r]
            for c in range(n_cols):
                out[r, c] = (acc[c] - bias) - (c0 + cx * x[c] + cy * yr)
        else:
            for c in range(n_cols):
                out[r, c] = acc[c] - bias


def _centred_coordinates(shape, dx: float, dy: float, xp, device, origin=(0, 0), grid_shape=None):
    """``x`` (east) and ``y`` (north) of every cell centre of a ``shape`` block whose first cell is cell ``origin``
    of a ``grid_shape`` grid (default: the block is the grid), in metres from that grid's centre."""
    ny, nx = grid_shape or shape
    rows = xp.arange(shape[0], dtype=xp.float64, device=device) + origin[0]
    cols = xp.arange(shape[1], dtype=xp.float64, device=device) + origin[1]
    x = (cols - (nx - 1) / 2) * dx
    y = ((ny - 1) / 2 - rows) * dy
    return xp.broadcast_to(x[None, :], shape), xp.broadcast_to(y[:, None], shape)


def _slope_aspect(z, dx: float, dy: float):
    """Slope tangent and aspect (radians clockwise from north, downslope) from central differences; NaN on the edge."""
    xp = array_namespace(z)
    east = xp.full(z.shape, xp.nan, dtype=xp.float64, device=device(z))
    north = xp.full(z.shape, xp.nan, dtype=xp.float64, device=device(z))
    east[:, 1:-1] = (z[:, 2:] - z[:, :-2]) / (2 * dx)
    north[1:-1, :] = (z[:-2, :] - z[2:, :]) / (2 * dy)  # row 0 is north
    aspect = xp.atan2(-east, -north)
    return xp.sqrt(east**2 + north**2), xp.where(aspect < 0, aspect + 2 * math.pi, aspect)


def _lstsq(design, values):
    """Least-squares coefficients of ``design @ p ~ values`` (normal equations; few columns)."""
    xp = array_namespace(design, values)
    return xp.linalg.solve(design.T @ design, (design.T @ values)[:, None])[:, 0]


def _inliers(residual, outlier_nmad: float):
    """Values within ``outlier_nmad`` NMAD of their median."""
    xp = array_namespace(residual)
    return xp.abs(residual - nanmedian(residual)) <= outlier_nmad * nmad(residual)


def _vertical(dh, x, y, tilt: bool, outlier_nmad: float):
    """Median bias of ``dh`` and, with ``tilt``, the least-squares plane ``(c0, cx, cy)`` of the rest (else None)."""
    xp = array_namespace(dh)
    bias = nanmedian(dh)
    if not tilt:
        return bias, None
    residual = dh - bias
    keep = _inliers(residual, outlier_nmad)
    design = xp.stack([xp.ones_like(x[keep]), x[keep], y[keep]], axis=1)
    c0, cx, cy = (float(c) for c in _lstsq(design, residual[keep]))
    return bias, (c0, cx, cy)


def _remove(dh, x, y, bias: float, plane):
    """``dh - bias - plane(x, y)``."""
    out = dh - bias
    if plane is not None:
        out = out - (plane[0] + plane[1] * x + plane[2] * y)
    return out


def _displacement(residual, tan_slope, aspect, aspect_bins: int):
    """Nuth & Kääb fit of the binned ``residual / tan_slope``: remaining displacement ``(east, north)`` in metres."""
    xp = array_namespace(residual, tan_slope, aspect)
    ratio = residual / tan_slope
    bins = xp.astype(xp.floor(aspect * (aspect_bins / (2 * math.pi))), xp.int64)
    bins = xp.clip(bins, 0, aspect_bins - 1)
    # group by bin, sorted by value within each bin: a stable sort by bin of the values sorted by value
    by_value = xp.argsort(ratio, stable=True)
    bins, ratio = xp.take(bins, by_value), xp.take(ratio, by_value)
    by_bin = xp.argsort(bins, stable=True)
    bins, ratio = xp.take(bins, by_bin), xp.take(ratio, by_bin)
    bounds = xp.searchsorted(bins, xp.arange(aspect_bins + 1, dtype=xp.int64, device=device(bins)))
    start, counts = bounds[:-1], bounds[1:] - bounds[:-1]
    filled = counts > 0
    if int(xp.sum(xp.astype(filled, xp.int64))) < 3:
        raise ValueError("stable must cover at least three aspect bins of sloping terrain")
    start, counts = start[filled], counts[filled]
    median = (xp.take(ratio, start + (counts - 1) // 2) + xp.take(ratio, start + counts // 2)) / 2
    centre = (xp.astype(xp.nonzero(filled)[0], xp.float64) + 0.5) * (2 * math.pi / aspect_bins)
    weight = xp.sqrt(xp.astype(counts, xp.float64))
    design = xp.stack([xp.cos(centre), xp.sin(centre), xp.ones_like(centre)], axis=1) * weight[:, None]
    north, east, _ = (float(c) for c in _lstsq(design, median * weight))
    return east, north


def nuth_kaab(reference, target, stable, spacing, max_iterations: int = 10, tolerance_m: float | None = None,
              tilt: bool = False, min_slope_deg: float = 1.0, max_slope_deg: float = 70.0,
              outlier_nmad: float = 4.0, aspect_bins: int = 72) -> Coregistration:
    """Co-register ``target`` to ``reference`` on stable terrain (Nuth & Kääb 2011), see the module docstring.

    Parameters
    ----------
    reference : array
        2-D early DEM (m), north-up, NaN where nodata.
    target : array
        2-D late DEM on the same grid.
    stable : array
        bool mask of the shape of the DEMs: stable terrain (the caller has excluded sites, water, ...). NaN cells and
        cells whose reference slope lies outside ``[min_slope_deg, max_slope_deg]`` are excluded too.
    spacing : (float, float)
        Cell size ``(dx, dy)`` in metres (the sign of ``dy`` is ignored).
    max_iterations : int
        Most Nuth & Kääb iterations, at least 1.
    tolerance_m : float, optional
        Stop once the shift increment is shorter than this (m); default ``0.05 * min(dx, |dy|)``.
    tilt : bool
        Also fit and remove a plane (``Coregistration.tilt``).
    min_slope_deg, max_slope_deg : float
        Slope limits of the usable cells (degrees): flat cells carry no shift signal, steep ones mostly noise.
    outlier_nmad : float
        Cells whose ``dh`` departs from the median (after the plane, with ``tilt``) by more than this many NMAD
        are left out of the fits.
    aspect_bins : int
        Number of equal aspect bins of the Nuth & Kääb fit.

    Returns
    -------
    Coregistration
        Apply it with :func:`apply_coregistration`.
    """
    xp = array_namespace(reference, target, stable)
    if reference.ndim != 2:
        raise ValueError(f"reference must be a 2-D array; got shape {reference.shape}")
    if target.shape != reference.shape:
        raise ValueError(f"target must have the shape of reference {reference.shape}; got {target.shape}")
    if stable.shape != reference.shape or stable.dtype != xp.bool:
        raise ValueError(f"stable must be a bool array of shape {reference.shape}; got {stable.dtype} {stable.shape}")
    dx, dy = _grid_spacing(spacing)
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1; got {max_iterations}")
    tolerance_m = 0.05 * min(dx, dy) if tolerance_m is None else tolerance_m
    if not tolerance_m > 0:
        raise ValueError(f"tolerance_m must be positive; got {tolerance_m}")
    if not 0 <= min_slope_deg < max_slope_deg < 90:
        raise ValueError(f"min_slope_deg and max_slope_deg must satisfy 0 <= min < max < 90; got "
                         f"{min_slope_deg}, {max_slope_deg}")
    if not outlier_nmad > 0:
        raise ValueError(f"outlier_nmad must be positive; got {outlier_nmad}")
    if aspect_bins < 3:
        raise ValueError(f"aspect_bins must be at least 3; got {aspect_bins}")

    reference = xp.astype(reference, xp.float64)
    target = xp.astype(target, xp.float64)
    tan_slope, aspect = _slope_aspect(reference, dx, dy)
    usable = (stable & xp.isfinite(reference) & xp.isfinite(target) & xp.isfinite(tan_slope)
              & (tan_slope >= math.tan(math.radians(min_slope_deg)))
              & (tan_slope <= math.tan(math.radians(max_slope_deg))))
    if not bool(xp.any(usable)):
        raise ValueError("stable marks no usable cells (finite in both DEMs, slope within the limits)")
    x, y = _centred_coordinates(reference.shape, dx, dy, xp, device(reference))
    dh_before = target[usable] - reference[usable]

    shift_x = shift_y = 0.0
    converged = False
    for iterations in range(1, max_iterations + 1):
        shifted = _shift(target, shift_x, shift_y, dx, dy)
        cells = usable & xp.isfinite(shifted)
        if not bool(xp.any(cells)):
            raise ValueError("stable marks no usable cells once the target is shifted: the shift diverged")
        dh = shifted[cells] - reference[cells]
        bias, plane = _vertical(dh, x[cells], y[cells], tilt, outlier_nmad)
        residual = _remove(dh, x[cells], y[cells], bias, plane)
        keep = _inliers(residual, outlier_nmad)
        east, north = _displacement(residual[keep], tan_slope[cells][keep], aspect[cells][keep], aspect_bins)
        shift_x, shift_y = shift_x - east, shift_y - north
        if math.hypot(east, north) < tolerance_m:
            converged = True
            break

    shifted = _shift(target, shift_x, shift_y, dx, dy)
    cells = usable & xp.isfinite(shifted)
    dh = shifted[cells] - reference[cells]
    bias, plane = _vertical(dh, x[cells], y[cells], tilt, outlier_nmad)
    dh_after = _remove(dh, x[cells], y[cells], bias, plane)
    return Coregistration(
        shift_x_m=shift_x, shift_y_m=shift_y, bias_m=bias, tilt=plane, iterations=iterations, converged=converged,
        median_before_m=nanmedian(dh_before), nmad_before_m=nmad(dh_before),
        median_after_m=nanmedian(dh_after), nmad_after_m=nmad(dh_after),
        n_stable=int(xp.sum(xp.astype(cells, xp.int64))), grid_shape=tuple(reference.shape))


def apply_coregistration(target, result: Coregistration, spacing, origin: tuple[int, int] = (0, 0), out=None):
    """The target shifted, and its bias (and tilt) removed, on the reference grid.

    Parameters
    ----------
    target : array
        2-D late DEM: the one passed to :func:`nuth_kaab`, or any block of a larger grid that contains it (a
        block padded with NaN by the shift's reach gives, inside the padding, what the whole grid gives).
    result : Coregistration
        Output of :func:`nuth_kaab`.
    spacing : (float, float)
        Cell size ``(dx, dy)`` in metres, as passed to :func:`nuth_kaab`.
    origin : (int, int)
        Row and column of ``target[0, 0]`` in the grid the fit ran on (may be negative or beyond it): where the
        plane of a tilt is evaluated. ``(0, 0)`` for the fitted grid itself.
    out : numpy.ndarray, optional
        For a numpy target: the array to write the result into, of the result's shape and dtype; ``target``
        itself corrects it in place.

    Returns
    -------
    array
        ``target(x - shift_x_m, y - shift_y_m) - bias_m - plane(x, y)`` by bilinear interpolation, NaN where the
        shifted cell's 2x2 support leaves the block or meets NaN; float64, or the target's floating dtype.
    """
    xp = array_namespace(target)
    if target.ndim != 2:
        raise ValueError(f"target must be a 2-D array; got shape {target.shape}")
    dx, dy = _grid_spacing(spacing)
    dtype = target.dtype if xp.isdtype(target.dtype, "real floating") else xp.float64
    x, y = _centred_coordinates(target.shape, dx, dy, xp, device(target), origin, result.grid_shape)
    if is_numpy_array(target):
        if out is not None and (out.shape != target.shape or out.dtype != dtype):
            raise ValueError(f"out must be a {dtype} array of shape {target.shape}; got {out.dtype} {out.shape}")
        terms = _bilinear_terms(result.shift_x_m, result.shift_y_m, dx, dy)
        return _shift_numpy(target, terms, result.bias_m, result.tilt, x[0], y[:, 0], dtype, out)
    if out is not None:
        raise ValueError("out is for numpy targets only")
    shifted = _shift(xp.astype(target, xp.float64), result.shift_x_m, result.shift_y_m, dx, dy)
    return xp.astype(_remove(shifted, x, y, result.bias_m, result.tilt), dtype)
