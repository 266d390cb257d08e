"""Stable-terrain elevation-difference statistics and the uncertainty of volumes from DEM differences.

Written once against the array API (numpy and CuPy) wherever the work is arithmetic; only the 30-odd point
variogram-model fit runs on the host with SciPy.

Error model (Rolstad et al. 2009, J. Glaciol. 55:666; Hugonnet et al. 2022, IEEE JSTARS 15:6456)
--------------------------------------------------------------------------------------------------
On stable terrain the elevation difference ``dh = late - early`` should be zero; what remains is the error of the
difference. It is treated as a stationary random field of variance ``sigma_dh**2`` whose covariance is a *nugget*
(uncorrelated from cell to cell) plus one *spherical* model of range ``a``:

    gamma(h) = nugget + (sill - nugget) * (3/2 h/a - 1/2 (h/a)**3)   for 0 < h < a,   gamma(h) = sill  for h >= a,

where ``sill = sigma_dh**2`` is the total variance (:func:`fit_spherical` returns the total sill, not the partial
sill ``sill - nugget``). :func:`empirical_variogram` estimates ``gamma`` from random pairs of stable cells and
:func:`fit_spherical` fits the model.

The 1-sigma error of the *mean* dh over an area ``A`` (:func:`volume_sigma`) follows Rolstad et al. (2009): the area is
taken as a disc of the same area, radius ``L = sqrt(A / pi)``, and the spherical covariance is integrated from its
centre over the disc (their eq. 8 and the large-area form; Hugonnet et al. 2022 generalise it to sums of models):

    f(A) = 1 - L/a + (L/a)**3 / 5     for L <= a  (A <= pi a**2),
    f(A) = pi a**2 / (5 A)            for L >= a  (both forms give 1/5 at L = a),

and the nugget part averages over the ``A / cell_area`` independent cells:

    sigma_mean**2 = (sill - nugget) * f(A) + nugget * min(1, cell_area / A),       sigma_volume = sigma_mean * A.

The centre-to-disc integration overestimates the exact pair-averaged variance for ``A`` near ``pi a**2`` (pairs in a
disc lie farther apart than points from its centre), so the error is conservative there; both agree for ``A >> pi
a**2``. ``tests/test_dh_statistics.py`` checks it by Monte Carlo on a synthetic correlated field.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_namespace, is_numpy_namespace
from scipy.optimize import curve_fit

NMAD_SCALE = 1.4826  # NMAD of a normal distribution equals its standard deviation


def nanmedian(values) -> float:
    """Median of the finite values of an array (NaN when there are none).

    Parameters
    ----------
    values : array
        Any shape; NaN and infinite values are ignored.

    Returns
    -------
    float
    """
    xp = array_namespace(values)
    flat = xp.reshape(values, (-1,))
    return _median(flat[xp.isfinite(flat)])


def _median(finite) -> float:
    """Median of a 1-D array of finite values (NaN when empty).

    numpy and CuPy select the two middle values with ``partition`` (linear time, outside the array API standard);
    other namespaces sort. Both place the same values at the middle positions, so the median has the same bits.
    """
    xp = array_namespace(finite)
    n = finite.shape[0]
    if n == 0:
        return math.nan
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        ranked = xp.partition(finite, ((n - 1) // 2, n // 2))
    else:
        ranked = xp.sort(finite)
    return float((ranked[(n - 1) // 2] + ranked[n // 2]) / 2)


def nmad(values) -> float:
    """Normalised median absolute deviation ``1.4826 * median(|x - median(x)|)`` of the finite values.

    Parameters
    ----------
    values : array
        Any shape; NaN and infinite values are ignored.

    Returns
    -------
    float
        NaN when there are no finite values. Equals the standard deviation for normally distributed values.
    """
    xp = array_namespace(values)
    flat = xp.reshape(values, (-1,))
    finite = flat[xp.isfinite(flat)]
    if finite.shape[0] == 0:
        return math.nan
    return NMAD_SCALE * _median(xp.abs(finite - _median(finite)))  # already finite: no second filtering pass


def _grid_spacing(spacing) -> tuple[float, float]:
    """``(|dx|, |dy|)`` of a ``(dx, dy)`` pair; ``dy`` may carry the negative sign of a north-up transform."""
    if len(spacing) != 2 or not all(math.isfinite(float(s)) and float(s) != 0.0 for s in spacing):
        raise ValueError(f"spacing must be two finite, non-zero cell sizes (dx, dy) in metres; got {spacing!r}")
    return abs(float(spacing[0])), abs(float(spacing[1]))


def empirical_variogram(dh, spacing, stable, max_lag_m: float, n_bins: int = 30, n_pairs: int = 200_000,
                        seed: int = 0):
    """Empirical semivariogram of ``dh`` on stable cells from random pairs, stratified by lag.

    For each of ``n_bins`` equal lag bins over ``(0, max_lag_m]``, ``n_pairs // n_bins`` pairs are drawn: a stable
    cell uniformly at random and a partner at a distance uniform within the bin and a uniform direction, rounded to
    the nearest cell. Pairs whose partner falls off the grid, on a non-stable or NaN cell, or on the first cell itself
    are dropped. Stratifying by lag samples short lags (which fix the range) as densely as long ones, which uniform
    random pairs would not. The draws come from ``numpy.random.default_rng(seed)``, so the result is deterministic
    and the same on every array backend.

    Parameters
    ----------
    dh : array
        2-D elevation differences (m) on a regular grid, NaN where undefined.
    spacing : (float, float)
        Cell size ``(dx, dy)`` in metres (the sign of ``dy`` is ignored).
    stable : array
        bool mask of the shape of ``dh``: cells to use.
    max_lag_m : float
        Largest lag (m). Choose about twice the expected range or more.
    n_bins : int
        Number of lag bins.
    n_pairs : int
        Number of pairs drawn (before dropping), at least ``n_bins``.
    seed : int
        Seed of the pair draws.

    Returns
    -------
    lags_m : array
        float64 ``(n_bins,)``: mean distance of the pairs kept in each bin (NaN for an empty bin).
    semivariance : array
        float64 ``(n_bins,)``: ``mean((dh_i - dh_j)**2) / 2`` over those pairs (NaN for an empty bin).
    counts : array
        int64 ``(n_bins,)``: pairs kept in each bin.
    """
    xp = array_namespace(dh, stable)
    if dh.ndim != 2:
        raise ValueError(f"dh must be a 2-D array; got shape {dh.shape}")
    if stable.shape != dh.shape or stable.dtype != xp.bool:
        raise ValueError(f"stable must be a bool array of shape {dh.shape}; got {stable.dtype} {stable.shape}")
    dx, dy = _grid_spacing(spacing)
    if not max_lag_m > 0:
        raise ValueError(f"max_lag_m must be positive; got {max_lag_m}")
    if n_bins < 1 or n_pairs < n_bins:
        raise ValueError(f"n_bins must be >= 1 and n_pairs >= n_bins; got n_bins={n_bins}, n_pairs={n_pairs}")
    ny, nx = dh.shape
    values = xp.reshape(xp.astype(dh, xp.float64), (-1,))
    valid = xp.reshape(stable & xp.isfinite(dh), (-1,))
    cells = xp.nonzero(valid)[0]
    if cells.shape[0] < 2:
        raise ValueError("stable must mark at least two cells with finite dh")

    rng = np.random.default_rng(seed)
    shape = (n_bins, n_pairs // n_bins)
    first = rng.integers(0, cells.shape[0], size=shape)
    distance = (np.arange(n_bins)[:, None] + rng.random(shape)) * (max_lag_m / n_bins)
    direction = rng.random(shape) * np.pi  # pairs are unordered: half a turn covers every direction
    d_col = np.rint(distance * np.cos(direction) / dx).astype(np.int64)
    d_row = np.rint(distance * np.sin(direction) / dy).astype(np.int64)
    lag_np = np.hypot(d_col * dx, d_row * dy)

    dev = device(dh)
    first = xp.take(cells, xp.asarray(np.reshape(first, (-1,)), device=dev))
    row = first // nx + xp.asarray(np.reshape(d_row, (-1,)), device=dev)
    col = first % nx + xp.asarray(np.reshape(d_col, (-1,)), device=dev)
    lag = xp.asarray(np.reshape(lag_np, (-1,)), device=dev)
    inside = (row >= 0) & (row < ny) & (col >= 0) & (col < nx) & (lag > 0)
    second = xp.where(inside, row * nx + col, first)
    kept = inside & xp.take(valid, second)
    sq = xp.where(kept, (xp.take(values, first) - xp.take(values, second)) ** 2, 0.0)

    kept = xp.reshape(kept, shape)
    counts = xp.sum(xp.astype(kept, xp.int64), axis=1)
    n = xp.astype(counts, xp.float64)
    n = xp.where(counts > 0, n, xp.nan)
    semivariance = xp.sum(xp.reshape(sq, shape), axis=1) / (2 * n)
    lags_m = xp.sum(xp.where(kept, xp.reshape(lag, shape), 0.0), axis=1) / n
    return lags_m, semivariance, counts


def spherical(lags, sill: float, range_m: float, nugget: float):
    """Spherical semivariogram model with a nugget (zero at lag 0).

    Parameters
    ----------
    lags : array
        Lags (m), non-negative.
    sill : float
        Total sill ``gamma(h >= range_m)``: the variance of the field.
    range_m : float
        Range (m): the lag from which values are uncorrelated.
    nugget : float
        ``gamma(0+)``: the variance of the uncorrelated part.

    Returns
    -------
    array
        ``gamma`` at ``lags``.
    """
    xp = array_namespace(lags)
    h = xp.clip(lags / range_m, 0.0, 1.0)
    shape = 1.5 * h - 0.5 * h**3
    return xp.where(lags > 0, nugget + (sill - nugget) * shape, 0.0)


def fit_spherical(lags, gamma, counts) -> tuple[float, float, float]:
    """Fit :func:`spherical` to an empirical variogram by weighted least squares.

    Minimises ``sum(counts * (gamma - model)**2)`` over the non-empty bins with ``scipy.optimize.curve_fit``
    (bounded: partial sill and nugget non-negative, range in ``(0, 2 * max(lags)]`` since a longer range is not
    identifiable from the lags sampled). Runs on the host; the inputs are a few dozen values.

    Parameters
    ----------
    lags, gamma, counts : array
        The three outputs of :func:`empirical_variogram`.

    Returns
    -------
    sill : float
        Total sill (the variance of dh).
    range_m : float
        Range (m).
    nugget : float
        Nugget variance.
    """
    # DLPack with a host device: a copy from any array-API library and device (a view of numpy arrays)
    lags, gamma, counts = (np.asarray(np.from_dlpack(a, device="cpu"), dtype=np.float64) for a in (lags, gamma, counts))
    if not lags.shape == gamma.shape == counts.shape or lags.ndim != 1:
        raise ValueError(f"lags, gamma and counts must be 1-D of one length; got {lags.shape}, {gamma.shape}, "
                         f"{counts.shape}")
    use = (counts > 0) & np.isfinite(lags) & np.isfinite(gamma)
    if np.count_nonzero(use) < 3:
        raise ValueError("counts must mark at least three non-empty lag bins")
    lags, gamma, counts = lags[use], gamma[use], counts[use]

    def model(h, partial_sill, range_m, nugget):
        return spherical(h, partial_sill + nugget, range_m, nugget)

    top = float(np.max(gamma))
    nugget0 = 0.5 * float(gamma[np.argmin(lags)])
    range0 = float(lags[np.argmax(gamma >= 0.9 * top)])
    max_range = 2.0 * float(np.max(lags))
    (partial_sill, range_m, nugget), _ = curve_fit(
        model, lags, gamma, p0=(max(top - nugget0, 1e-12 * top), range0, nugget0), sigma=1.0 / np.sqrt(counts),
        bounds=([0.0, 1e-9 * max_range, 0.0], [np.inf, max_range, np.inf]))
    return float(partial_sill + nugget), float(range_m), float(nugget)


def volume_sigma(area_m2, sigma_dh_m: float, range_m: float, nugget_fraction: float = 0.0,
                 cell_area_m2: float | None = None):
    """1-sigma error of a volume ``mean(dh) * A`` over an area ``A`` with spatially correlated dh errors.

    Rolstad et al. (2009) disc integration of a spherical covariance plus a nugget (see the module docstring):
    ``sigma_volume = A * sigma_dh * sqrt((1 - p) * f(A) + p * min(1, cell_area / A))`` with ``p`` the nugget
    fraction. It tends to ``sigma_dh * A`` for areas much smaller than ``pi * range**2`` and grows like
    ``sqrt(A)`` (the error of the mean falls like ``1 / sqrt(A)``) for larger ones.

    Parameters
    ----------
    area_m2 : float or array
        Area(s) in m², non-negative or NaN (an unmeasured area, e.g. of a site without valid cells, whose error
        is NaN); an array gives one value per area (for example one per site).
    sigma_dh_m : float
        Standard deviation of dh on stable terrain (m): ``sqrt(sill)`` of the variogram, or the NMAD.
    range_m : float
        Range of the spherical model (m).
    nugget_fraction : float
        ``nugget / sill`` in ``[0, 1]``: the part of the variance that is uncorrelated between cells.
    cell_area_m2 : float, optional
        Area of one grid cell (m²); required when ``nugget_fraction > 0``.

    Returns
    -------
    float or array
        ``sigma_volume`` in m³, a float for a scalar ``area_m2``, else an array of its shape.
    """
    if not (math.isfinite(sigma_dh_m) and sigma_dh_m >= 0):
        raise ValueError(f"sigma_dh_m must be finite and non-negative; got {sigma_dh_m}")
    if not (math.isfinite(range_m) and range_m > 0):
        raise ValueError(f"range_m must be finite and positive; got {range_m}")
    if not 0.0 <= nugget_fraction <= 1.0:
        raise ValueError(f"nugget_fraction must lie in [0, 1]; got {nugget_fraction}")
    if nugget_fraction > 0 and not (cell_area_m2 is not None and cell_area_m2 > 0):
        raise ValueError(f"cell_area_m2 must be positive when nugget_fraction > 0; got {cell_area_m2}")
    scalar = isinstance(area_m2, (int, float))
    area = np.asarray(float(area_m2)) if scalar else area_m2
    xp = array_namespace(area)
    area = xp.astype(area, xp.float64)
    if bool(xp.any(area < 0)):
        raise ValueError("area_m2 must be non-negative")

    ratio = xp.sqrt(area / math.pi) / range_m  # L / a
    safe = xp.where(ratio > 0, ratio, 1.0)
    correlated = xp.where(ratio <= 1.0, 1.0 - ratio + ratio**3 / 5.0, 1.0 / (5.0 * safe**2))
    if nugget_fraction > 0:
        uncorrelated = xp.where(area > cell_area_m2, cell_area_m2 / xp.where(area > 0, area, 1.0), 1.0)
    else:
        uncorrelated = xp.zeros_like(area)
    variance = sigma_dh_m**2 * ((1.0 - nugget_fraction) * correlated + nugget_fraction * uncorrelated)
    out = xp.sqrt(variance) * area
    return float(out) if scalar else out
