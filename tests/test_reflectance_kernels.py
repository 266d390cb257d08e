"""The reflectance kernels against plain numpy oracles."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtg.kernels.reflectance import class_mask, dn_to_reflectance, masked_reflectance

dn_arrays = hnp.arrays(np.uint16, hnp.array_shapes(min_dims=1, max_dims=3, max_side=12))
scl_arrays = hnp.arrays(np.uint8, (4, 5), elements=st.integers(0, 11))


@given(dn_arrays, st.sampled_from([0.0, -1000.0]))
def test_dn_to_reflectance_matches_float64_oracle(dn, offset):
    out = dn_to_reflectance(dn, offset)
    expected = (dn.astype(np.float64) + offset) / 10000.0
    assert out.dtype == np.float32
    assert np.array_equal(np.isnan(out), dn == 0)
    valid = dn != 0
    np.testing.assert_allclose(out[valid], expected[valid], rtol=1e-6, atol=1e-7)


def test_baseline_offset_gives_the_same_reflectance():
    reflectance = np.array([0.0312, 0.25, 0.0])
    old = np.round(reflectance * 10000).astype(np.uint16) + 0  # before baseline 04.00
    new = np.round(reflectance * 10000).astype(np.uint16) + 1000  # from baseline 04.00
    old[2] = 0  # nodata
    new[2] = 0
    np.testing.assert_array_equal(dn_to_reflectance(old, 0.0), dn_to_reflectance(new, -1000.0))


@given(scl_arrays, st.sets(st.integers(0, 11)))
def test_class_mask_matches_isin(scl, classes):
    np.testing.assert_array_equal(class_mask(scl, sorted(classes)), np.isin(scl, list(classes)))


def test_class_mask_rejects_codes_outside_the_table():
    with pytest.raises(ValueError, match="class codes"):
        class_mask(np.zeros(3, np.uint8), [300])


@given(scl_arrays)
def test_masked_reflectance_masks_clouds_shadows_and_nodata(scl):
    dn = np.full(scl.shape, 2500, np.uint16)
    dn[0, 0] = 0
    out = masked_reflectance(dn, scl, -1000.0, invalid_classes=[0, 1, 3, 8, 9, 10])
    masked = np.isin(scl, [0, 1, 3, 8, 9, 10]) | (dn == 0)
    assert np.array_equal(np.isnan(out), masked)
    assert np.all(out[~masked] == np.float32(0.15))
