"""Model inputs: spectral indices against hand computation, the latest-clear-view composite, reflect padding."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from mtg.kernels.composite import latest_valid
from mtg.kernels.spectral_indices import bare_soil_index, normalized_difference
from mtg.pipeline.errors import MtgError
from mtg.pipeline.features import CHANNELS, MODEL_BANDS, composite, input_channels, model_channels
from mtg.pipeline.segment import reflect_pad


def test_indices_equal_hand_computation():
    # a dry red soil, a green canopy and open water (blue, green, red, nir, swir1)
    pixels = {"soil": (0.075, 0.115, 0.195, 0.295, 0.40), "canopy": (0.03, 0.065, 0.04, 0.36, 0.20),
              "water": (0.055, 0.07, 0.06, 0.02, 0.01)}
    for blue, green, red, nir, swir1 in pixels.values():
        b, g, r, n, s = (np.float32(v) for v in (blue, green, red, nir, swir1))
        assert normalized_difference(n, r) == pytest.approx((nir - red) / (nir + red), rel=1e-6)
        assert normalized_difference(g, n) == pytest.approx((green - nir) / (green + nir), rel=1e-6)
        assert bare_soil_index(b, r, n, s) == pytest.approx(
            ((swir1 + red) - (nir + blue)) / ((swir1 + red) + (nir + blue)), rel=1e-6)
    assert normalized_difference(np.float32(0.36), np.float32(0.04)) == pytest.approx(0.8)
    zero = np.zeros(3, np.float32)
    np.testing.assert_array_equal(normalized_difference(zero, zero), zero)
    assert np.isnan(normalized_difference(np.float32(np.nan), np.float32(0.1)))


def test_input_channels_are_the_bands_then_ndvi_ndwi_bsi():
    rng = np.random.default_rng(0)
    bands = rng.uniform(0.01, 0.5, (6, 4, 5)).astype(np.float32)
    ch = input_channels(bands)
    assert ch.shape == (9, 4, 5) and ch.dtype == np.float32 and len(CHANNELS) == 9
    blue, green, red, nir, swir1, _ = bands
    np.testing.assert_array_equal(ch[:6], bands)
    np.testing.assert_allclose(ch[6], (nir - red) / (nir + red), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ch[7], (green - nir) / (green + nir), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ch[8], (swir1 + red - nir - blue) / (swir1 + red + nir + blue), rtol=1e-6, atol=1e-6)


def test_latest_valid_takes_the_most_recent_date_with_all_bands_clear():
    stack = np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2)
    stack[2, 0, 0, 0] = np.nan  # one band cloudy on the last date: the pixel comes from date 1, all bands
    stack[1:, :, 1, 1] = np.nan  # clear only on the first date
    stack[:, 1, 0, 1] = np.nan  # band 1 never clear: the pixel is missing
    out = latest_valid(stack)
    np.testing.assert_array_equal(out[:, 0, 0], stack[1, :, 0, 0])
    np.testing.assert_array_equal(out[:, 1, 1], stack[0, :, 1, 1])
    np.testing.assert_array_equal(out[:, 1, 0], stack[2, :, 1, 0])
    assert np.isnan(out[:, 0, 1]).all()


def _cube(n_time: int = 3, shape=(6, 7)) -> xr.Dataset:
    rng = np.random.default_rng(1)
    data = {b: (("time", "y", "x"), rng.uniform(0, 0.4, (n_time, *shape)).astype(np.float32))
            for b in (*MODEL_BANDS, "B05")}
    return xr.Dataset(data, coords={"y": np.arange(shape[0]) * -10.0, "x": np.arange(shape[1]) * 10.0})


def test_model_channels_of_a_cube_are_lazy_and_match_numpy():
    ds = _cube().chunk({"time": 1, "y": 4, "x": 4})
    ds["B04"][-1, 2, 3] = np.nan
    ch = model_channels(ds)
    assert isinstance(ch.data, da.Array) and ch.dims == ("channel", "y", "x")
    assert list(ch["channel"].values) == list(CHANNELS)
    stack = np.stack([ds[b].values for b in MODEL_BANDS], axis=1)
    np.testing.assert_allclose(ch.values, input_channels(latest_valid(stack)), rtol=1e-6, atol=1e-6)
    assert ch.values[2, 2, 3] == ds["B04"].values[1, 2, 3]  # the clouded pixel comes from the date before
    single = model_channels(ds.isel(time=0))  # a single scene without a time axis
    np.testing.assert_allclose(single.values, input_channels(stack[0]), rtol=1e-6, atol=1e-6)


def test_missing_bands_are_named():
    with pytest.raises(MtgError, match=r"cube.zarr lacks the band\(s\) \['B11'\]"):
        composite(_cube().drop_vars("B11"), source="cube.zarr")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 8), st.integers(0, 70), st.integers(0, 70))
def test_reflect_pad_equals_numpy_for_any_width(n, chunk, before, after):
    a = np.arange(n, dtype=np.float32)
    padded = reflect_pad(da.from_array(a, chunks=chunk), 0, before, after).compute()
    np.testing.assert_array_equal(padded, np.pad(a, (before, after), mode="reflect"))
