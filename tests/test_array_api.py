"""The array-API kernels on a second namespace: array-api-strict here, and CuPy where a GPU is present.

Every public kernel written against the array API runs on the namespace's arrays and on numpy arrays built from the
same inputs; results must agree (to ``rtol`` 1e-12 for float64, one float32 ulp for float32, exactly for integers
and booleans) and array results must come back as arrays of that namespace, on the input's device: the namespace is
used end to end, not converted to numpy on the way. On numpy the kernels take their numpy fast paths where they have
them (the numba resampling of :mod:`mtg.kernels.coregistration`, ``partition`` in the medians), so these tests also
check that the generic array-API path gives the fast path's numbers.

Not tested here: :func:`mtg.kernels.cut_fill.cut_fill_reference` needs ``bincount``, outside the standard, so it
runs with CuPy only (the strict case is skipped with that reason); :func:`~mtg.kernels.cut_fill.cut_fill` and
:func:`~mtg.kernels.cut_fill.cut_fill_cuda` are numba kernels for numpy and CUDA device arrays
(``tests/test_cut_fill.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import array_api_strict
import numpy as np
import pytest
import shapely
from affine import Affine
from array_api_compat import array_namespace, device
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtg.kernels.blending import Lattice, accumulate, blended, ramp_window, tile_window
from mtg.kernels.composite import latest_valid
from mtg.kernels.coregistration import apply_coregistration, nuth_kaab
from mtg.kernels.coverage import polygon_coverage
from mtg.kernels.cut_fill import cut_fill_reference
from mtg.kernels.dh_statistics import empirical_variogram, fit_spherical, nanmedian, nmad, spherical, volume_sigma
from mtg.kernels.pixel_scores import confusion_counts
from mtg.kernels.reflectance import class_mask, dn_to_reflectance, masked_reflectance
from mtg.kernels.spectral_indices import bare_soil_index, normalized_difference


@dataclass(frozen=True)
class Backend:
    """A second array namespace: how to make its arrays from numpy ones and copy them back."""

    name: str
    asarray: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]

    @property
    def xp(self):
        """The namespace the kernels see: ``array_namespace`` of the backend's arrays."""
        return array_namespace(self.asarray(np.zeros(1)))


STRICT = Backend("array_api_strict", array_api_strict.asarray, np.from_dlpack)


def _cupy_param():
    """CuPy as a pytest param, skipped with the reason when it cannot be imported or sees no GPU."""
    try:
        import cupy

        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # ImportError, or CUDA errors of a machine without a driver or device
        return pytest.param(None, id="cupy", marks=pytest.mark.skip(reason=f"CuPy with a GPU is not available: "
                                                                           f"{type(error).__name__}: {error}"))
    if n_devices == 0:
        return pytest.param(None, id="cupy", marks=pytest.mark.skip(reason="CuPy sees no GPU"))
    return pytest.param(Backend("cupy", cupy.asarray, cupy.asnumpy), id="cupy")


CUPY = _cupy_param()
BACKENDS = [pytest.param(STRICT, id="array_api_strict"), CUPY]
backends = pytest.mark.parametrize("backend", BACKENDS)


def assert_same(actual, expected: np.ndarray, backend: Backend, like=None) -> None:
    """``actual`` is an array of ``backend`` (on the device of ``like``) equal to the numpy ``expected``."""
    assert isinstance(actual, type(backend.asarray(np.zeros(1)))), f"{type(actual)} is not a {backend.name} array"
    if like is not None:
        assert device(actual) == device(like)
    got = backend.to_numpy(actual)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if np.issubdtype(expected.dtype, np.floating):
        rtol = 1e-12 if expected.dtype == np.float64 else float(np.finfo(expected.dtype).eps)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=0.0)
    else:
        np.testing.assert_array_equal(got, expected)


def assert_close(actual: float, expected: float) -> None:
    """Python floats equal to float64 rounding (NaN equals NaN)."""
    assert type(actual) is type(expected)
    assert actual == pytest.approx(expected, rel=1e-12, abs=0.0, nan_ok=True)


# --- inputs -------------------------------------------------------------------------------------------------------

SPACING = (10.0, -10.0)  # a north-up GDAL transform's (a, e)


def terrain(x, y):
    """Smooth relief with every aspect and slopes of roughly 5 to 30 degrees (m)."""
    return (300.0 + 60.0 * np.sin(2 * np.pi * x / 900 + 0.3) * np.cos(2 * np.pi * y / 700)
            + 40.0 * np.sin(2 * np.pi * (x + y) / 1300) + 0.05 * x)


@pytest.fixture(scope="module")
def dem_pair():
    """An early DEM, a late one moved 7.4 m east and 12.2 m south with a 2.5 m bias, a tilt, noise, NaN voids and a
    pit dug in it, and the stable mask (everything but the pit)."""
    n = 120
    rng = np.random.default_rng(16)
    x = (np.arange(n) - (n - 1) / 2)[None, :] * SPACING[0]
    y = ((n - 1) / 2 - np.arange(n))[:, None] * -SPACING[1]
    x, y = np.broadcast_to(x, (n, n)), np.broadcast_to(y, (n, n))
    early = terrain(x, y)
    late = terrain(x - 7.4, y + 12.2) + 2.5 + 1e-4 * x - 2e-4 * y + rng.normal(0.0, 0.3, (n, n))
    pit = (np.abs(x - 150) < 120) & (np.abs(y + 100) < 90)
    late[pit] -= 25.0
    early[rng.random((n, n)) < 0.01] = np.nan
    late[rng.random((n, n)) < 0.01] = np.nan
    return early, late, ~pit


@pytest.fixture(scope="module")
def stable_dh():
    """Spatially correlated stable-terrain dh (m): white noise smoothed over about 60 m, plus a nugget, with voids."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (90, 110))
    kernel = np.ones(7) / 7
    smooth = np.apply_along_axis(np.convolve, 0, np.apply_along_axis(np.convolve, 1, noise, kernel, "same"),
                                 kernel, "same")
    dh = 3.0 * smooth + rng.normal(0.0, 0.2, noise.shape)
    dh[rng.random(dh.shape) < 0.05] = np.nan
    stable = rng.random(dh.shape) > 0.2
    return dh, stable


@pytest.fixture(scope="module")
def sentinel2():
    """Sentinel-2 L2A-like digital numbers of four bands (baseline 04.00: offset -1000, nodata 0) and an SCL band."""
    rng = np.random.default_rng(2)
    shape = (64, 48)
    dn = rng.integers(1000, 6000, size=(4, *shape)).astype(np.uint16)  # B02, B04, B08, B11
    dn[:, :3, :] = 0  # a no-data strip at the swath edge
    dn[:, 10, 10] = 1000  # reflectance exactly 0 in every band: a zero denominator
    scl = rng.choice(np.array([4, 5, 6, 7, 3, 8, 9, 10, 11], dtype=np.uint8), size=shape,
                     p=[0.3, 0.2, 0.1, 0.1, 0.05, 0.1, 0.05, 0.05, 0.05])
    return dn, scl


CLOUDS = (3, 8, 9, 10)  # SCL cloud shadow, cloud medium and high probability, thin cirrus


# --- dh statistics ------------------------------------------------------------------------------------------------


@backends
def test_nanmedian_and_nmad(backend, stable_dh):
    dh = stable_dh[0]
    for values in (dh, dh[:, :33], np.full((3, 4), np.nan)):  # even and odd counts, none finite
        assert_close(nanmedian(backend.asarray(values)), nanmedian(values))
        assert_close(nmad(backend.asarray(values)), nmad(values))


@backends
def test_empirical_variogram_and_fit(backend, stable_dh):
    dh, stable = stable_dh
    arrays = backend.asarray(dh), backend.asarray(stable)
    got = empirical_variogram(arrays[0], SPACING, arrays[1], max_lag_m=400.0, n_bins=20, n_pairs=40_000, seed=3)
    expected = empirical_variogram(dh, SPACING, stable, max_lag_m=400.0, n_bins=20, n_pairs=40_000, seed=3)
    for actual, reference in zip(got, expected):
        assert_same(actual, reference, backend, like=arrays[0])
    for actual, reference in zip(fit_spherical(*got), fit_spherical(*expected)):
        assert_close(actual, reference)


@backends
def test_spherical(backend):
    lags = np.linspace(0.0, 500.0, 101)
    assert_same(spherical(backend.asarray(lags), 4.0, 180.0, 0.5), spherical(lags, 4.0, 180.0, 0.5), backend)


@backends
@pytest.mark.parametrize("nugget_fraction", [0.0, 0.3])
def test_volume_sigma(backend, nugget_fraction):
    areas = np.array([0.0, 50.0, 100.0, 2.5e3, 1e5, 4e5, 3e6, np.nan])  # site areas (m²), one unmeasured
    assert_same(volume_sigma(backend.asarray(areas), 1.2, 250.0, nugget_fraction, 100.0),
                volume_sigma(areas, 1.2, 250.0, nugget_fraction, 100.0), backend)


# --- pixel scores, reflectance, indices, composites, blending -----------------------------------------------------


@backends
def test_confusion_counts(backend):
    rng = np.random.default_rng(5)
    predicted, truth, valid = (rng.random((50, 40)) < p for p in (0.3, 0.35, 0.9))
    for args in ((predicted, truth), (predicted, truth, valid)):
        got = confusion_counts(*(backend.asarray(a) for a in args))
        assert got == confusion_counts(*args) and all(type(c) is int for c in got)


@backends
def test_reflectance_and_cloud_mask(backend, sentinel2):
    dn, scl = sentinel2[0][0], sentinel2[1]
    assert_same(dn_to_reflectance(backend.asarray(dn), -1000.0), dn_to_reflectance(dn, -1000.0), backend)
    for selected in (CLOUDS, (), (0, 255)):
        assert_same(class_mask(backend.asarray(scl), selected), class_mask(scl, selected), backend)
    assert_same(masked_reflectance(backend.asarray(dn), backend.asarray(scl), -1000.0, CLOUDS),
                masked_reflectance(dn, scl, -1000.0, CLOUDS), backend)


@backends
@settings(max_examples=50, deadline=None)
@given(dn=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8)),
       offset=st.sampled_from([0.0, -1000.0]), nodata=st.sampled_from([0, 65535]))
def test_dn_to_reflectance_any_digital_numbers(backend, dn, offset, nodata):
    assert_same(dn_to_reflectance(backend.asarray(dn), offset, nodata=nodata),
                dn_to_reflectance(dn, offset, nodata=nodata), backend)


@backends
@settings(max_examples=50, deadline=None)
@given(pair=hnp.arrays(np.float64, st.tuples(st.just(2), st.integers(1, 20)),
                       elements=st.one_of(st.floats(0.0, 1.5), st.just(0.0), st.just(math.nan))))
def test_normalized_difference_any_reflectance(backend, pair):
    a, b = pair
    assert_same(normalized_difference(backend.asarray(a), backend.asarray(b)), normalized_difference(a, b), backend)


@backends
def test_spectral_indices_of_reflectance(backend, sentinel2):
    dn, scl = sentinel2
    refl = masked_reflectance(dn, scl[None, ...], -1000.0, CLOUDS)
    blue, red, nir, swir1 = (refl[i] for i in range(4))
    arrays = [backend.asarray(band) for band in (blue, red, nir, swir1)]
    assert_same(normalized_difference(arrays[2], arrays[1]), normalized_difference(nir, red), backend)
    assert_same(bare_soil_index(*arrays), bare_soil_index(blue, red, nir, swir1), backend)


@backends
def test_latest_valid(backend, sentinel2):
    dn, scl = sentinel2
    rng = np.random.default_rng(9)
    stack = np.stack([masked_reflectance(dn, np.roll(scl, 7 * t, axis=1)[None, ...], -1000.0, CLOUDS)
                      for t in range(4)])
    stack[2, 1, rng.random(scl.shape) < 0.1] = np.nan  # one band missing on some pixels of one date
    assert_same(latest_valid(backend.asarray(stack)), latest_valid(stack), backend)


@backends
@pytest.mark.parametrize("overlap", [0, 8])
def test_blending(backend, overlap):
    rows, cols = Lattice(50, 32, overlap), Lattice(70, 32, overlap)
    rng = np.random.default_rng(overlap)
    probabilities = rng.random((rows.n_tiles * cols.n_tiles, 3, 32, 32)).astype(np.float32)
    origins = [(i * rows.stride, j * cols.stride) for i in range(rows.n_tiles) for j in range(cols.n_tiles)]
    frame = (rows.padded, cols.padded + 1)  # a last column no tile covers: NaN in the blend
    results = {}
    for name, xp, asarray in (("numpy", np, np.asarray), (backend.name, backend.xp, backend.asarray)):
        window = tile_window(32, overlap, xp)
        acc = xp.zeros((3, *frame), dtype=xp.float32)
        weight = xp.zeros(frame, dtype=xp.float32)
        accumulate(acc, weight, asarray(probabilities), origins, window)
        results[name] = ramp_window(32, overlap, xp, xp.float64), window, acc, weight, blended(acc, weight)
    for actual, expected in zip(results[backend.name], results["numpy"]):
        assert_same(actual, expected, backend)


# --- co-registration ----------------------------------------------------------------------------------------------


@backends
@pytest.mark.parametrize("tilt", [False, True])
def test_nuth_kaab_and_apply(backend, dem_pair, tilt):
    early, late, stable = dem_pair
    expected = nuth_kaab(early, late, stable, SPACING, tilt=tilt)
    assert expected.converged and abs(expected.shift_x_m + 7.4) < 0.3 and abs(expected.shift_y_m - 12.2) < 0.3
    got = nuth_kaab(backend.asarray(early), backend.asarray(late), backend.asarray(stable), SPACING, tilt=tilt)
    for field in fields(got):
        actual, reference = getattr(got, field.name), getattr(expected, field.name)
        if isinstance(reference, float):
            assert_close(actual, reference)
        elif field.name == "tilt" and reference is not None:
            for a, b in zip(actual, reference, strict=True):
                assert_close(a, b)
        else:
            assert actual == reference and type(actual) is type(reference), field.name
    for dtype, origin in ((np.float64, (0, 0)), (np.float32, (-5, 17))):
        block = late[:90, 10:].astype(dtype)
        assert_same(apply_coregistration(backend.asarray(block), expected, SPACING, origin=origin),
                    apply_coregistration(block, expected, SPACING, origin=origin), backend)
    with pytest.raises(ValueError, match="numpy targets only"):
        apply_coregistration(backend.asarray(late), expected, SPACING, out=backend.asarray(late))


# --- cut and fill -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [
    pytest.param(STRICT, id="array_api_strict", marks=pytest.mark.skip(
        reason="cut_fill_reference sums per site with bincount, outside the array API standard: numpy and CuPy only")),
    CUPY])
@pytest.mark.parametrize("policy", ["none", "local-mean", "hypsometric"])
def test_cut_fill_reference(backend, dem_pair, policy):
    early, late, _ = dem_pair
    transform = Affine(SPACING[0], 0.0, 0.0, 0.0, SPACING[1], 0.0)
    sites = [shapely.box(30, -420, 430, -140), shapely.Point(800, -800).buffer(150.0), shapely.box(-50, -50, 95, 95)]
    coverage = polygon_coverage(sites, transform, early.shape)
    got = cut_fill_reference(backend.asarray(early), backend.asarray(late), coverage, 0.5, 100.0, policy)
    expected = cut_fill_reference(early, late, coverage, 0.5, 100.0, policy)
    for field in fields(expected):
        np.testing.assert_allclose(getattr(got, field.name), getattr(expected, field.name), rtol=1e-12, atol=0.0)
