"""Seam-free tiling: a global tile lattice, a smooth blending window and the weighted mosaic of tile predictions.

Tiles lie on one lattice anchored at the image origin, whatever the chunks the image is processed in, and each
output pixel is ``sum(w * p) / sum(w)`` over the tiles that cover it, summed in lattice order. A chunk that knows
its position in the image therefore reproduces exactly the pixels of a whole-image run.

The window is 1 in a tile's interior and ramps as ``sin^2`` over ``overlap`` pixels at each side; with stride
``tile - overlap`` the ramps of neighbouring tiles sum to 1 (a partition of unity). The image is padded by
``overlap`` pixels before its first pixel and at least ``overlap`` after its last, so the image border lies in
a tile's interior and is never down-weighted.

Written once against the array API: the same code runs on numpy and CuPy arrays.
"""

import math
from dataclasses import dataclass

from array_api_compat import array_namespace


@dataclass(frozen=True)
class Lattice:
    """The tiles along one image axis.

    Positions are in the padded frame: image pixel ``i`` is padded position ``i + lead``; tile ``k`` covers
    padded positions ``[k * stride, k * stride + tile)``.

    Attributes
    ----------
    size : int
        Image pixels along the axis.
    tile : int
        Tile side in pixels.
    overlap : int
        Pixels shared by neighbouring tiles, ``0 <= 2 * overlap <= tile``.
    """

    size: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.tile < 1 or self.overlap < 0 or 2 * self.overlap > self.tile:
            raise ValueError(f"need size >= 1, tile >= 1 and 0 <= 2 * overlap <= tile; got size {self.size}, "
                             f"tile {self.tile}, overlap {self.overlap}")

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return self.tile - self.overlap

    @property
    def n_tiles(self) -> int:
        """Number of tiles: the fewest that reach ``overlap`` pixels past the image on both sides."""
        return max(1, math.ceil((self.size + 2 * self.overlap - self.tile) / self.stride) + 1)

    @property
    def padded(self) -> int:
        """Length of the padded frame, ``lead + size + trail``."""
        return (self.n_tiles - 1) * self.stride + self.tile

    @property
    def lead(self) -> int:
        """Padding before the first image pixel."""
        return self.overlap

    @property
    def trail(self) -> int:
        """Padding after the last image pixel (at least ``overlap``)."""
        return self.padded - self.lead - self.size

    def touching(self, start: int, stop: int) -> range:
        """The tiles that cover any padded position in ``[start, stop)``."""
        first = max(0, (start - self.tile) // self.stride + 1)
        last = min(self.n_tiles - 1, (stop - 1) // self.stride)
        return range(first, last + 1)


def ramp_window(tile: int, overlap: int, xp, dtype=None):
    """The 1-D blending window: ``sin^2`` ramps over ``overlap`` pixels at both ends, 1 between.

    Parameters
    ----------
    tile, overlap : int
        As in :class:`Lattice`.
    xp : module
        Array namespace (``array_api_compat.array_namespace`` of the data).
    dtype : dtype, optional
        Floating dtype; default ``xp.float32``.

    Returns
    -------
    array
        ``(tile,)`` weights in (0, 1]; ramps of neighbouring tiles at stride ``tile - overlap`` sum to 1.
    """
    dtype = dtype or xp.float32
    if overlap == 0:
        return xp.ones(tile, dtype=dtype)
    j = xp.arange(overlap, dtype=xp.float64)
    ramp = xp.sin(math.pi / 2 * (j + 0.5) / overlap) ** 2
    window = xp.concat([ramp, xp.ones(tile - 2 * overlap, dtype=xp.float64), xp.flip(ramp)])
    return xp.astype(window, dtype)


def tile_window(tile: int, overlap: int, xp, dtype=None):
    """The separable 2-D window ``w(y) * w(x)`` of :func:`ramp_window`, shape ``(tile, tile)``."""
    w = ramp_window(tile, overlap, xp, dtype)
    return w[:, None] * w[None, :]


def accumulate(acc, weight, predictions, origins, window) -> None:
    """Add weighted tile predictions into a frame, in place: ``acc += w * p`` and ``weight += w`` per tile.

    Parameters
    ----------
    acc : array
        ``(k, rows, cols)`` running sums of weighted predictions (start from zeros).
    weight : array
        ``(rows, cols)`` running sums of weights (start from zeros).
    predictions : array
        ``(n, k, tile, tile)``: ``k`` channels (class probabilities) of ``n`` tiles.
    origins : sequence of (int, int)
        Row and column of each tile's first pixel in the frame; the tiles must lie inside the frame. Tiles are
        added in this order: give them in lattice order for results independent of how the image is chunked.
    window : array
        ``(tile, tile)`` positive weights, e.g. :func:`tile_window`.
    """
    n, _, th, tw = predictions.shape
    if len(origins) != n:
        raise ValueError(f"{n} tile predictions but {len(origins)} origins")
    rows, cols = weight.shape
    for i, (r, c) in enumerate(origins):
        if r < 0 or c < 0 or r + th > rows or c + tw > cols:
            raise ValueError(f"tile {i} at ({r}, {c}) does not fit in a frame of {(rows, cols)}")
        acc[:, r:r + th, c:c + tw] = acc[:, r:r + th, c:c + tw] + window * predictions[i, ...]
        weight[r:r + th, c:c + tw] = weight[r:r + th, c:c + tw] + window


def blended(acc, weight):
    """The blended predictions ``acc / weight`` of :func:`accumulate`; NaN where no tile covered a pixel."""
    xp = array_namespace(acc, weight)
    covered = weight > 0
    out = acc / xp.where(covered, weight, xp.ones_like(weight))
    return xp.where(covered[None, ...], out, xp.asarray(xp.nan, dtype=acc.dtype))
