"""The seam-free tiling kernels: lattice, window partition of unity, chunk-independent mosaics."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtg.kernels.blending import Lattice, accumulate, blended, ramp_window, tile_window

lattices = st.builds(
    lambda size, half, frac: Lattice(size, 2 * half, int(frac * half)),
    st.integers(1, 700), st.integers(1, 80), st.floats(0, 1),
)


@settings(max_examples=200, deadline=None)
@given(lattices)
def test_tiles_cover_the_padded_frame_with_a_partition_of_unity_over_the_image(lattice):
    w = ramp_window(lattice.tile, lattice.overlap, np, np.float64)
    total = np.zeros(lattice.padded)
    for k in range(lattice.n_tiles):
        total[k * lattice.stride:k * lattice.stride + lattice.tile] += w
    image = total[lattice.lead:lattice.lead + lattice.size]
    np.testing.assert_allclose(image, 1.0, atol=1e-12)
    assert lattice.lead == lattice.overlap and lattice.trail >= lattice.overlap
    assert (lattice.n_tiles - 1) * lattice.stride + lattice.tile == lattice.padded


@settings(max_examples=200, deadline=None)
@given(lattices, st.data())
def test_touching_lists_exactly_the_tiles_that_overlap_a_range(lattice, data):
    start = data.draw(st.integers(0, lattice.padded - 1))
    stop = data.draw(st.integers(start + 1, lattice.padded))
    expected = [k for k in range(lattice.n_tiles)
                if k * lattice.stride < stop and k * lattice.stride + lattice.tile > start]
    assert list(lattice.touching(start, stop)) == expected


def test_window_is_positive_symmetric_and_flat_inside():
    w = ramp_window(64, 16, np)
    assert w.dtype == np.float32 and w.shape == (64,)
    assert (w > 0).all() and np.array_equal(w, w[::-1]) and (w[16:48] == 1).all()
    np.testing.assert_allclose(w[:16] + w[48:], 1.0, atol=1e-6)  # a ramp down meets the next tile's ramp up
    np.testing.assert_array_equal(tile_window(64, 16, np), np.outer(w, w))
    assert (ramp_window(8, 0, np) == 1).all()


@pytest.mark.parametrize("size, tile, overlap", [(0, 8, 2), (10, 8, 5), (10, 0, 0), (10, 8, -1)])
def test_bad_lattices_are_refused(size, tile, overlap):
    with pytest.raises(ValueError):
        Lattice(size, tile, overlap)


def _predict(tiles):
    """A stand-in model whose output depends on the tile's content and on the position within the tile."""
    ramp = np.linspace(0.0, 1.0, tiles.shape[-1], dtype=np.float32)
    return np.tanh(tiles.cumsum(axis=-1) * 0.01 + ramp)


def _run(image, lattice_y, lattice_x, row_cuts, col_cuts):
    """Blend the tiles touching each block of a chunked image, exactly as a block with a one-tile halo would."""
    padded = np.pad(image, ((0, 0), (lattice_y.lead, lattice_y.trail), (lattice_x.lead, lattice_x.trail)),
                    mode="reflect")
    out = np.full(padded.shape, np.nan, dtype=np.float32)
    t, s = lattice_y.tile, lattice_y.stride
    window = tile_window(t, lattice_y.overlap, np)
    for r0, r1 in pairwise(row_cuts):
        for c0, c1 in pairwise(col_cuts):
            oy, ox = max(0, r0 - t), max(0, c0 - t)
            frame = padded[:, oy:min(r1 + t, padded.shape[1]), ox:min(c1 + t, padded.shape[2])]
            origins = [(ky * s - oy, kx * s - ox) for ky in lattice_y.touching(r0, r1)
                       for kx in lattice_x.touching(c0, c1)]
            acc = np.zeros(frame.shape, dtype=np.float32)
            weight = np.zeros(frame.shape[1:], dtype=np.float32)
            tiles = np.stack([frame[:, r:r + t, c:c + t] for r, c in origins])
            accumulate(acc, weight, _predict(tiles), origins, window)
            out[:, r0:r1, c0:c1] = blended(acc, weight)[:, r0 - oy:r1 - oy, c0 - ox:c1 - ox]
    return out[:, lattice_y.lead:lattice_y.lead + image.shape[1], lattice_x.lead:lattice_x.lead + image.shape[2]]


@settings(max_examples=25, deadline=None)
@given(st.integers(20, 90), st.integers(20, 90), st.sampled_from([(16, 4), (16, 8), (24, 6)]), st.data())
def test_the_mosaic_does_not_depend_on_the_chunking(rows, cols, tiling, data):
    tile, overlap = tiling
    image = np.random.default_rng(rows * cols).uniform(0, 1, (2, rows, cols)).astype(np.float32)
    ly, lx = Lattice(rows, tile, overlap), Lattice(cols, tile, overlap)

    def cuts(n):
        inner = data.draw(st.lists(st.integers(1, n - 1), max_size=4, unique=True))
        return [0, *sorted(inner), n]

    whole = _run(image, ly, lx, [0, ly.padded], [0, lx.padded])
    chunked = _run(image, ly, lx, cuts(ly.padded), cuts(lx.padded))
    assert not np.isnan(whole).any()
    np.testing.assert_array_equal(chunked, whole)


def test_blending_of_a_constant_prediction_is_that_constant_and_uncovered_pixels_are_nan():
    window = tile_window(8, 2, np)
    acc = np.zeros((1, 10, 20), dtype=np.float32)
    weight = np.zeros((10, 20), dtype=np.float32)
    accumulate(acc, weight, np.full((2, 1, 8, 8), 0.25, np.float32), [(0, 0), (0, 6)], window)
    out = blended(acc, weight)
    np.testing.assert_allclose(out[0, :8, :14], 0.25, rtol=1e-6)
    assert np.isnan(out[0, 8:]).all() and np.isnan(out[0, :, 14:]).all()
    with pytest.raises(ValueError, match="does not fit"):
        accumulate(acc, weight, np.zeros((1, 1, 8, 8), np.float32), [(5, 0)], window)
