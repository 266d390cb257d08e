"""Stable-terrain dh statistics: NMAD, variogram and volume error, against oracles and synthetic correlated fields."""

import math

import numpy as np
import pytest
from scipy.stats import median_abs_deviation

from mtg.kernels.dh_statistics import (empirical_variogram, fit_spherical, nanmedian, nmad, spherical,
                                       volume_sigma)

SPACING = (10.0, -10.0)
RANGE_M = 250.0
SILL = 4.0
NUGGET = 0.8


def spherical_fields(n: int, range_cells: float, sill: float, nugget: float, count: int, seed: int) -> np.ndarray:
    """``count`` n x n Gaussian fields of spherical covariance (range in cells) plus a nugget.

    Circulant embedding: the covariance is laid out on a periodic grid larger than ``n + 2 * range``, its FFT is the
    power spectrum (non-negative for the spherical model), and white noise is filtered by its square root.
    """
    size = 2 ** math.ceil(math.log2(n + 2 * range_cells))
    k = np.minimum(np.arange(size), size - np.arange(size))
    h = np.minimum(np.hypot(k[:, None], k[None, :]) / range_cells, 1.0)
    covariance = (sill - nugget) * (1.0 - 1.5 * h + 0.5 * h**3)
    spectrum = np.fft.fft2(covariance).real
    assert spectrum.min() > -1e-9 * spectrum.max()
    amplitude = np.sqrt(np.clip(spectrum, 0.0, None))
    rng = np.random.default_rng(seed)
    fields = np.empty((count, n, n))
    for i in range(count):
        correlated = np.fft.ifft2(amplitude * np.fft.fft2(rng.standard_normal((size, size)))).real[:n, :n]
        fields[i] = correlated + math.sqrt(nugget) * rng.standard_normal((n, n))
    return fields


@pytest.fixture(scope="module")
def field():
    return spherical_fields(400, RANGE_M / abs(SPACING[0]), SILL, NUGGET, count=1, seed=2)[0]


def test_nmad_matches_scipy_and_ignores_nan():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 1001):
        values = rng.standard_t(3, n) * 2.0 + 5.0
        with_nan = np.concatenate([values, [np.nan, np.inf]])
        expected = median_abs_deviation(values, scale="normal")
        assert nmad(with_nan) == pytest.approx(expected, rel=1e-4)  # 1.4826 vs 1/Phi^-1(3/4) = 1.482602...
        assert nanmedian(with_nan) == np.median(values)
    assert math.isnan(nmad(np.full(3, np.nan)))
    assert math.isnan(nanmedian(np.zeros(0)))


def test_variogram_recovers_the_spherical_model(field):
    stable = np.ones(field.shape, bool)
    lags, gamma, counts = empirical_variogram(field, SPACING, stable, max_lag_m=600.0)
    assert lags.shape == gamma.shape == counts.shape == (30,)
    assert counts.min() > 1000
    sill, range_m, nugget = fit_spherical(lags, gamma, counts)
    message = f"fitted sill {sill:.3f} range {range_m:.1f} m nugget {nugget:.3f}; truth {SILL}, {RANGE_M}, {NUGGET}"
    assert sill == pytest.approx(SILL, rel=0.15), message
    assert range_m == pytest.approx(RANGE_M, rel=0.20), message
    assert nugget == pytest.approx(NUGGET, rel=0.25), message


def test_variogram_is_deterministic_and_respects_the_mask(field):
    stable = np.ones(field.shape, bool)
    stable[100:200, 50:300] = False
    garbage = field.copy()
    garbage[100:200, 50:300] = 1e6
    garbage[0, 0] = np.nan  # NaN cells are dropped like unstable ones
    stable_no_corner = stable.copy()
    stable_no_corner[0, 0] = False
    a = empirical_variogram(field, SPACING, stable_no_corner, 600.0, seed=3)
    b = empirical_variogram(garbage, SPACING, stable, 600.0, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = empirical_variogram(field, SPACING, stable_no_corner, 600.0, seed=4)
    assert not np.array_equal(a[1], c[1])
    assert np.all(np.isfinite(b[1])) and b[1].max() < 10 * SILL


def test_fit_spherical_recovers_exact_model_values():
    lags = np.linspace(5.0, 900.0, 40)
    gamma = spherical(lags, 2.0, 300.0, 0.5)
    sill, range_m, nugget = fit_spherical(lags, gamma, np.full(40, 100))
    assert (sill, range_m, nugget) == pytest.approx((2.0, 300.0, 0.5), rel=1e-4)
    gamma[::3] = np.nan  # empty bins are skipped
    assert fit_spherical(lags, gamma, np.where(np.isnan(gamma), 0, 100)) == pytest.approx((2.0, 300.0, 0.5),
                                                                                          rel=1e-4)


def test_volume_sigma_limits_and_vectorisation():
    sigma, a = 2.0, 300.0
    tiny = 1e-4
    assert volume_sigma(tiny, sigma, a) == pytest.approx(sigma * tiny, rel=1e-3)
    corr_area = math.pi * a**2
    # the small- and large-area forms meet at A = pi a^2 with sigma_mean^2 = sigma^2 / 5
    assert volume_sigma(corr_area, sigma, a) == pytest.approx(sigma * corr_area / math.sqrt(5), rel=1e-12)
    assert volume_sigma(corr_area * (1 - 1e-9), sigma, a) == pytest.approx(volume_sigma(corr_area, sigma, a),
                                                                           rel=1e-6)
    # beyond the correlated area the error of the mean falls like 1 / sqrt(A): the volume error grows like sqrt(A)
    big = np.array([1.0, 4.0, 100.0]) * corr_area
    vol = volume_sigma(big, sigma, a)
    np.testing.assert_allclose(vol / vol[0], np.sqrt(big / big[0]), rtol=1e-12)
    np.testing.assert_allclose(vol / big, sigma * np.sqrt(corr_area / (5 * big)), rtol=1e-12)
    areas = np.array([0.0, 50.0, 1e4, corr_area, 1e7])
    np.testing.assert_allclose(volume_sigma(areas, sigma, a, 0.3, 100.0),
                               [volume_sigma(float(x), sigma, a, 0.3, 100.0) for x in areas], rtol=1e-12)
    # a pure nugget averages over A / cell_area independent cells
    assert volume_sigma(1e6, sigma, a, 1.0, 100.0) == pytest.approx(sigma * math.sqrt(100.0 / 1e6) * 1e6)
    assert volume_sigma(50.0, sigma, a, 1.0, 100.0) == pytest.approx(sigma * 50.0)
    # an unmeasured area (a site without valid cells) has an unknown error
    got = volume_sigma(np.array([np.nan, 1e4]), sigma, a, 0.3, 100.0)
    assert np.isnan(got[0]) and got[1] == pytest.approx(volume_sigma(1e4, sigma, a, 0.3, 100.0))


@pytest.mark.parametrize("kwargs, name", [
    ({"sigma_dh_m": -1.0}, "sigma_dh_m"),
    ({"range_m": 0.0}, "range_m"),
    ({"nugget_fraction": 1.5}, "nugget_fraction"),
    ({"nugget_fraction": 0.2}, "cell_area_m2"),
    ({"area_m2": np.array([1.0, -2.0])}, "area_m2"),
])
def test_volume_sigma_rejects_bad_arguments(kwargs, name):
    args = {"area_m2": 1e4, "sigma_dh_m": 1.0, "range_m": 100.0} | kwargs
    with pytest.raises(ValueError, match=name):
        volume_sigma(**args)


def test_variogram_rejects_bad_arguments(field):
    stable = np.ones(field.shape, bool)
    with pytest.raises(ValueError, match="stable"):
        empirical_variogram(field, SPACING, stable[:-1], 600.0)
    with pytest.raises(ValueError, match="stable"):
        empirical_variogram(field, SPACING, np.zeros(field.shape, bool), 600.0)
    with pytest.raises(ValueError, match="spacing"):
        empirical_variogram(field, (10.0, 0.0), stable, 600.0)
    with pytest.raises(ValueError, match="max_lag_m"):
        empirical_variogram(field, SPACING, stable, 0.0)
    with pytest.raises(ValueError, match="dh"):
        empirical_variogram(field[0], SPACING, stable[0], 600.0)


def test_volume_sigma_matches_monte_carlo_means_of_a_correlated_field():
    """The std of the mean of the field over random squares of area A against volume_sigma / A.

    Rolstad's centre-to-disc integration is exact for tiny and for large areas and conservative (up to ~20 % here)
    around A = pi a^2.
    """
    n = 400
    fields = spherical_fields(n, RANGE_M / abs(SPACING[0]), SILL, NUGGET, count=8, seed=5)
    rng = np.random.default_rng(6)
    ratios = {}
    for side in (1, 3, 20, 44, 120):
        means = []
        for f in fields:
            csum = np.pad(f, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
            r, c = rng.integers(0, n - side + 1, (2, 300))
            total = csum[r + side, c + side] - csum[r, c + side] - csum[r + side, c] + csum[r, c]
            means.append(total / side**2)
        area = (side * abs(SPACING[0])) ** 2
        predicted = volume_sigma(area, math.sqrt(SILL), RANGE_M, NUGGET / SILL, abs(SPACING[0] * SPACING[1])) / area
        ratios[side] = float(np.std(np.concatenate(means)) / predicted)
    assert all(0.75 < q < 1.25 for q in ratios.values()), f"Monte Carlo std / predicted by square side: {ratios}"
