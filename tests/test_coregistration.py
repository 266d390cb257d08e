"""Nuth & Kääb co-registration: sign conventions; known shifts recovered on the real Longyearbyen DEM vs xdem."""

import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import shared_file
from scipy import ndimage

from mtg.kernels.coregistration import Coregistration, apply_coregistration, nuth_kaab

DEM_SPACING = (20.0, -20.0)
EAST_PX, NORTH_PX, BIAS_M = 0.37, -0.61, 2.5  # the target is the reference moved 0.37 px east, 0.61 px south, +2.5 m
NOISE_M = 0.5


@pytest.fixture(scope="module")
def dem():
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(shared_file("longyearbyen_dem_1990", "DEM_1990_longyearbyen.tif")) as src:
        assert (src.res, src.crs.to_epsg()) == ((20.0, 20.0), 25833)
        return src.read(1).astype(np.float64), src.transform, src.crs


def moved(z, east_px: float, north_px: float):
    """``z`` with its content moved ``east_px`` cells east and ``north_px`` north (cubic spline), NaN off the grid."""
    return ndimage.shift(z, (-north_px, east_px), order=3, mode="constant", cval=np.nan)


@pytest.fixture(scope="module")
def shifted_dem(dem):
    ref = dem[0]
    rng = np.random.default_rng(0)
    return moved(ref, EAST_PX, NORTH_PX) + BIAS_M + rng.normal(0.0, NOISE_M, ref.shape)


@pytest.fixture(scope="module")
def dem_result(dem, shifted_dem):
    return nuth_kaab(dem[0], shifted_dem, np.ones(dem[0].shape, bool), DEM_SPACING)


def centred_xy(shape, dx, dy):
    ny, nx = shape
    return (np.arange(nx) - (nx - 1) / 2)[None, :] * dx, ((ny - 1) / 2 - np.arange(ny))[:, None] * dy


def terrain(x, y):
    """Smooth analytic relief with every aspect and slopes of roughly 5 to 30 degrees."""
    return (300.0 + 60.0 * np.sin(2 * np.pi * x / 900 + 0.3) * np.cos(2 * np.pi * y / 700)
            + 40.0 * np.sin(2 * np.pi * (x + y) / 1300) + 0.05 * x)


SYN_SPACING = (10.0, -10.0)


def synthetic(shift_east_m: float, shift_north_m: float, bias: float = 0.0, n: int = 200):
    """Reference and ``target(x, y) = terrain(x - e, y - n) + bias``: the content moved ``e`` east, ``n`` north."""
    x, y = centred_xy((n, n), SYN_SPACING[0], abs(SYN_SPACING[1]))
    x, y = np.broadcast_to(x, (n, n)), np.broadcast_to(y, (n, n))
    return terrain(x, y), terrain(x - shift_east_m, y - shift_north_m) + bias


def test_apply_moves_content_east_and_north_and_removes_bias_and_plane():
    z = np.arange(20.0).reshape(4, 5)
    base = Coregistration(shift_x_m=0.0, shift_y_m=0.0, bias_m=0.0, tilt=None, iterations=1, converged=True,
                          median_before_m=0.0, nmad_before_m=0.0, median_after_m=0.0, nmad_after_m=0.0, n_stable=0,
                          grid_shape=(4, 5))
    east = apply_coregistration(z, replace(base, shift_x_m=10.0), SYN_SPACING)  # one cell east
    np.testing.assert_array_equal(east[:, 1:], z[:, :-1])
    assert np.all(np.isnan(east[:, 0]))
    north = apply_coregistration(z, replace(base, shift_y_m=10.0), SYN_SPACING)  # one cell north: row 0 is north
    np.testing.assert_array_equal(north[:-1], z[1:])
    assert np.all(np.isnan(north[-1]))
    half = apply_coregistration(z, replace(base, shift_x_m=-5.0), SYN_SPACING)  # half a cell west
    np.testing.assert_allclose(half[:, :-1], (z[:, :-1] + z[:, 1:]) / 2)
    x, y = centred_xy(z.shape, 10.0, 10.0)
    tilted = apply_coregistration(z, replace(base, bias_m=2.0, tilt=(0.5, 0.01, -0.02)), SYN_SPACING)
    np.testing.assert_allclose(tilted, z - 2.0 - (0.5 + 0.01 * x - 0.02 * y))
    assert apply_coregistration(z.astype(np.float32), base, SYN_SPACING).dtype == np.float32


def test_blocks_padded_by_the_shift_reach_give_the_whole_grid():
    # a tilted, sub-pixel shift applied block by block (each block with one NaN-padded cell of halo, placed by
    # its origin in the fitted grid) equals the whole-grid result, including the NaN edge
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 11))
    result = Coregistration(shift_x_m=-4.0, shift_y_m=6.5, bias_m=0.3, tilt=(0.2, 0.001, -0.003), iterations=1,
                            converged=True, median_before_m=0.0, nmad_before_m=0.0, median_after_m=0.0,
                            nmad_after_m=0.0, n_stable=0, grid_shape=z.shape)
    whole = apply_coregistration(z, result, SYN_SPACING)
    padded = np.pad(z, 1, constant_values=np.nan)
    for r0, r1 in ((0, 4), (4, 9)):
        for c0, c1 in ((0, 5), (5, 11)):
            block = padded[r0:r1 + 2, c0:c1 + 2]
            got = apply_coregistration(block, result, SYN_SPACING, origin=(r0 - 1, c0 - 1))[1:-1, 1:-1]
            np.testing.assert_array_equal(got, whole[r0:r1, c0:c1])


def test_recovers_a_synthetic_displacement_with_the_documented_signs():
    # content moved 13 m east and 7 m south: the shift to apply is 13 m west and 7 m north
    ref, target = synthetic(13.0, -7.0, bias=-1.5)
    result = nuth_kaab(ref, target, np.ones(ref.shape, bool), SYN_SPACING)
    assert result.converged and result.iterations <= 5
    assert (result.shift_x_m, result.shift_y_m) == pytest.approx((-13.0, 7.0), abs=0.05)
    assert result.bias_m == pytest.approx(-1.5, abs=0.01)
    assert result.tilt is None
    corrected = apply_coregistration(target, result, SYN_SPACING)
    assert np.nanmax(np.abs(corrected - ref)[5:-5, 5:-5]) < 0.3
    assert result.nmad_after_m < 0.1 * result.nmad_before_m


def test_recovers_known_shift_and_bias_on_the_real_dem_like_xdem(dem, shifted_dem, dem_result):
    xdem = pytest.importorskip("xdem")
    ref, transform, crs = dem
    result = dem_result
    ours = np.array([result.shift_x_m, result.shift_y_m]) / DEM_SPACING[0]
    truth = np.array([-EAST_PX, -NORTH_PX])
    # xdem's affine shift_x/shift_y are the translation applied to the to-be-aligned DEM (our convention);
    # its shift_z is added to it, so it is minus our bias
    affine = xdem.coreg.NuthKaab().fit(ref, shifted_dem, transform=transform, crs=crs, random_state=0)
    affine = affine.meta["outputs"]["affine"]
    theirs = np.array([affine["shift_x"], affine["shift_y"]]) / DEM_SPACING[0]
    our_error, their_error = np.hypot(*(ours - truth)), np.hypot(*(theirs - truth))
    message = (f"shift (px east, north) truth {truth}, ours {ours.round(4)} (error {our_error:.4f} px), "
               f"xdem {theirs.round(4)} (error {their_error:.4f} px); bias truth {BIAS_M}, ours {result.bias_m:.4f}, "
               f"xdem {-affine['shift_z']:.4f}; {result}")
    assert result.converged, message
    assert np.all(np.abs(ours - truth) < 0.1), message
    assert abs(result.bias_m - BIAS_M) < 0.1, message
    assert our_error <= their_error or np.hypot(*(ours - theirs)) < 0.05, message
    assert abs(-affine["shift_z"] - result.bias_m) < 0.1, message
    assert result.nmad_after_m < NOISE_M < result.nmad_before_m, message
    assert result.median_after_m == pytest.approx(0.0, abs=0.05)
    assert result.median_before_m == pytest.approx(BIAS_M, abs=0.5)


def test_corrected_target_matches_the_reference(dem, shifted_dem, dem_result):
    ref = dem[0]
    residual = (apply_coregistration(shifted_dem, dem_result, DEM_SPACING) - ref)[3:-3, 3:-3]
    assert np.isfinite(residual).all()
    assert abs(np.median(residual)) < 0.05
    # bilinear resampling averages the added noise down; what is left is mostly interpolation error on steep cells
    assert np.median(np.abs(residual)) < NOISE_M


def test_recovers_a_tilt_on_the_real_dem(dem):
    ref = dem[0]
    x, y = centred_xy(ref.shape, 20.0, 20.0)
    cx, cy = 1.5e-4, -2.5e-4  # 3.9 m and 6.1 m across the grid's width and height
    rng = np.random.default_rng(1)
    target = moved(ref, EAST_PX, NORTH_PX) + BIAS_M + cx * x + cy * y + rng.normal(0.0, NOISE_M, ref.shape)
    stable = np.ones(ref.shape, bool)
    result = nuth_kaab(ref, target, stable, DEM_SPACING, tilt=True)
    plain = nuth_kaab(ref, target, stable, DEM_SPACING)
    message = f"tilt truth (cx, cy) = ({cx}, {cy}); {result}; without tilt: {plain}"
    c0, fit_cx, fit_cy = result.tilt
    assert fit_cx == pytest.approx(cx, abs=2e-6) and fit_cy == pytest.approx(cy, abs=2e-6), message
    assert result.bias_m + c0 == pytest.approx(BIAS_M, abs=0.1), message  # the offset at the grid centre
    assert np.allclose([result.shift_x_m / 20, result.shift_y_m / 20], [-EAST_PX, -NORTH_PX], atol=0.1), message
    assert result.nmad_after_m < 0.5 * plain.nmad_after_m, message
    assert plain.tilt is None


def test_stable_mask_is_respected():
    ref, target = synthetic(13.0, -7.0, bias=1.0)
    pit = (slice(60, 120), slice(80, 150))
    dug = target.copy()
    dug[pit] -= 40.0  # an excavation between the epochs
    dug[10:20, 10:20] = np.nan  # and a nodata hole
    stable = np.ones(ref.shape, bool)
    stable[55:125, 75:155] = False  # the site, buffered by more than the shift's 2x2 support
    stable[5:25, 5:25] = False
    masked = nuth_kaab(ref, dug, stable, SYN_SPACING)
    clean = nuth_kaab(ref, target, stable, SYN_SPACING)
    assert masked == clean  # nothing of the site reaches the fit
    unmasked = nuth_kaab(ref, dug, np.ones(ref.shape, bool), SYN_SPACING)
    assert unmasked.n_stable > masked.n_stable + 60 * 70
    assert unmasked.nmad_before_m != masked.nmad_before_m


def test_stops_at_max_iterations():
    ref, target = synthetic(25.0, 18.0)
    result = nuth_kaab(ref, target, np.ones(ref.shape, bool), SYN_SPACING, max_iterations=1, tolerance_m=1e-6)
    assert result.iterations == 1 and not result.converged
    assert 0 < math.hypot(result.shift_x_m, result.shift_y_m) < 2 * math.hypot(25.0, 18.0)


def test_rejects_bad_arguments():
    ref, target = synthetic(5.0, 5.0, n=40)
    stable = np.ones(ref.shape, bool)
    with pytest.raises(ValueError, match="target"):
        nuth_kaab(ref, target[:-1], stable, SYN_SPACING)
    with pytest.raises(ValueError, match="reference"):
        nuth_kaab(ref[0], target[0], stable[0], SYN_SPACING)
    with pytest.raises(ValueError, match="stable"):
        nuth_kaab(ref, target, stable[:, :-1], SYN_SPACING)
    with pytest.raises(ValueError, match="stable"):
        nuth_kaab(ref, target, stable.astype(np.uint8), SYN_SPACING)
    with pytest.raises(ValueError, match="stable"):
        nuth_kaab(ref, target, np.zeros(ref.shape, bool), SYN_SPACING)
    with pytest.raises(ValueError, match="stable"):  # flat terrain: no cell steeper than 1 degree
        nuth_kaab(np.zeros(ref.shape), np.ones(ref.shape), stable, SYN_SPACING)
    with pytest.raises(ValueError, match="spacing"):
        nuth_kaab(ref, target, stable, (10.0,))
    with pytest.raises(ValueError, match="max_iterations"):
        nuth_kaab(ref, target, stable, SYN_SPACING, max_iterations=0)
    with pytest.raises(ValueError, match="min_slope_deg"):
        nuth_kaab(ref, target, stable, SYN_SPACING, min_slope_deg=80.0)
    with pytest.raises(ValueError, match="target"):
        apply_coregistration(target[0], nuth_kaab(ref, target, stable, SYN_SPACING), SYN_SPACING)
