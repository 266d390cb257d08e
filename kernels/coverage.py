"""Exact fractional coverage of polygons on a regular north-up grid.

For every polygon and every grid cell of the polygon's window, the fraction of the cell's area that lies inside
the polygon, exactly (up to floating-point rounding), as exactextract computes it.

Method: signed-area accumulation, as in font rasterisers (font-rs). Ring coordinates are put in cell units
(column ``x``, row ``y``, rows growing downwards). Every ring edge is cut at the horizontal grid lines into row
pieces and every row piece at the vertical grid lines into cell pieces. A cell piece with height change ``dy``
(signed, in the edge's direction) and mean column offset ``xm`` inside its cell (in ``[0, 1]``) adds
``dy * (1 - xm)`` to its own cell of an accumulation buffer (the signed area of the trapezoid between the piece
and the cell's right side) and ``dy * xm`` to the next cell to its right, so that a prefix sum along the row
carries the piece's full ``dy`` to every cell further right. After all edges, the prefix sum of every window
row is the signed area of the polygon in each cell. Rings are closed, so each ring's contribution vanishes
outside it; a ring's sign is set from its orientation (``shapely.is_ccw``) so that exterior rings add and holes
subtract whatever their orientation, and the parts of a multipolygon simply add up.

Clipping to the grid: the window of a polygon is its bounding box in cell units, widened to whole cells and
clipped to the grid. Pieces above or below the window are dropped (they cover no window row). The part of a row
piece left of the window adds its ``dy`` to the window's first cell (it covers every cell to its right); the
part right of the window adds nothing (the carry column past the window's last cell is never read). Both are
exact, so coverage inside the grid stays exact.

All polygons' coordinates are flattened once with shapely (parts, rings, coordinates) and rasterised in one
numba pass. Valid polygons (``shapely.is_valid``) give fractions in ``[0, 1]``; the sums are clipped to
``[0, 1]`` to remove rounding (and, for invalid polygons with overlapping parts, multiple coverage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import shapely
from affine import Affine

_POLYGON = 3
_MULTIPOLYGON = 6
_MISSING = -1


@dataclass(frozen=True)
class Coverage:
    """Exact fractional coverage of polygons on a grid.

    Per polygon ``k``: a window of the grid (``row0[k]``, ``col0[k]``, ``height[k]``, ``width[k]``) and its
    coverage fractions, row-major, flattened into ``fractions[offsets[k]:offsets[k + 1]]`` (float64 in
    ``[0, 1]``, the fraction of each cell's area inside polygon ``k``). ``n_rows``, ``n_cols``: the grid shape.
    Windows are clipped to the grid; empty polygons and polygons outside the grid have empty windows
    (``row0 = col0 = height = width = 0``).

    Attributes
    ----------
    row0, col0, height, width : numpy.ndarray
        int64, one per polygon.
    offsets : numpy.ndarray
        int64, ``len + 1`` entries: ``offsets[k + 1] - offsets[k] == height[k] * width[k]``.
    fractions : numpy.ndarray
        float64 coverage fractions of every window cell, polygon after polygon.
    n_rows, n_cols : int
        Shape of the grid.
    """

    row0: np.ndarray
    col0: np.ndarray
    height: np.ndarray
    width: np.ndarray
    offsets: np.ndarray
    fractions: np.ndarray
    n_rows: int
    n_cols: int

    def __len__(self) -> int:
        return int(self.row0.size)

    def window(self, k: int) -> tuple[slice, slice, np.ndarray]:
        """Polygon ``k``'s window: row and column slices of the grid and its ``(height, width)`` fractions.

        Parameters
        ----------
        k : int
            Polygon index.

        Returns
        -------
        tuple of (slice, slice, numpy.ndarray)
            ``grid[rows, cols]`` is the window of an array on the grid; the fractions are a view.
        """
        r0, c0, h, w = (int(v[k]) for v in (self.row0, self.col0, self.height, self.width))
        cells = self.fractions[self.offsets[k]:self.offsets[k + 1]].reshape(h, w)
        return slice(r0, r0 + h), slice(c0, c0 + w), cells


def polygon_coverage(polygons: Sequence, transform: Affine, shape: tuple[int, int]) -> Coverage:
    """Exact fraction of every grid cell covered by each polygon.

    Parameters
    ----------
    polygons : sequence of shapely.Polygon or shapely.MultiPolygon
        Valid polygons (holes allowed) in the grid's CRS, e.g. ``GeoSeries.to_numpy()``; ``None`` and empty
        geometries give empty windows. A self-intersecting polygon gets the coverage of its winding number
        clipped to ``[0, 1]`` (``shapely.make_valid`` it first to get that of its area).
    transform : affine.Affine
        Transform of a north-up grid (``a > 0``, ``e < 0``, ``b == d == 0``) from (column, row) to (x, y).
    shape : tuple of int
        ``(rows, cols)`` of the grid.

    Returns
    -------
    Coverage
        One window and its fractions per polygon, in the order given.

    Raises
    ------
    ValueError
        If the grid is rotated or flipped, the shape is not two non-negative integers, a geometry is not a
        polygon or multipolygon, or a coordinate is not finite.
    """
    if transform.b != 0 or transform.d != 0 or not transform.a > 0 or not transform.e < 0:
        raise ValueError(f"transform must be north-up (a > 0, e < 0, b = d = 0); got {tuple(transform)[:6]}")
    if len(shape) != 2 or any(int(s) != s or s < 0 for s in shape):
        raise ValueError(f"shape must be (rows, cols) of non-negative integers; got {shape}")
    geoms = np.asarray(polygons, dtype=object)
    if geoms.ndim != 1:
        raise ValueError(f"polygons must be a one-dimensional sequence of geometries; got shape {geoms.shape}")
    types = shapely.get_type_id(geoms)
    bad = np.flatnonzero((types != _POLYGON) & (types != _MULTIPOLYGON) & (types != _MISSING))
    if bad.size:
        raise ValueError(f"polygons must be Polygon or MultiPolygon; polygons[{bad[0]}] is a "
                         f"{geoms[bad[0]].geom_type}")
    parts, part_polygon = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy = shapely.get_coordinates(rings)
    finite = np.isfinite(xy).all(axis=1)
    if not finite.all():
        _, owner = shapely.get_coordinates(geoms, return_index=True)  # the same order as xy
        raise ValueError(f"polygons[{owner[np.argmin(finite)]}] has a coordinate that is not finite")
    exterior = np.ones(rings.size, dtype=bool)
    exterior[1:] = ring_part[1:] != ring_part[:-1]
    # Exterior rings counter-clockwise in (x, y) become clockwise in (column, row), which adds positive area.
    ring_sign = np.where(shapely.is_ccw(rings) == exterior, 1.0, -1.0)
    ring_offsets = np.zeros(rings.size + 1, dtype=np.int64)
    np.cumsum(shapely.get_num_coordinates(rings), out=ring_offsets[1:])
    ring_polygon = part_polygon[ring_part].astype(np.int64)
    col, row, row0, col0, height, width, offsets = _windows(
        xy[:, 0], xy[:, 1], ring_offsets, ring_polygon, geoms.size, float(transform.a), float(transform.c),
        float(transform.e), float(transform.f), int(shape[0]), int(shape[1]))
    # Allocated by numpy, which asks for transparent huge pages: a buffer numba allocates is faulted in 4 KiB
    # pages, which takes longer than the rasterisation itself.
    fractions = np.zeros(offsets[-1])
    _rasterise(fractions, col, row, ring_offsets, ring_polygon, ring_sign, row0, col0, height, width, offsets)
    return Coverage(row0=row0, col0=col0, height=height, width=width, offsets=offsets, fractions=fractions,
                    n_rows=int(shape[0]), n_cols=int(shape[1]))


@numba.njit(cache=True, nogil=True)
def _row_piece(acc, start, width, xa, ya, xb, yb, sign):
    """Accumulate one row piece (``ya``, ``yb`` within the row) into the row beginning at ``acc[start]``."""
    if xa > xb:
        xa, xb, ya, yb, sign = xb, xa, yb, ya, -sign
    if xb <= 0.0:
        acc[start] += sign * (yb - ya)
        return
    if xa >= width:
        return
    dydx = (yb - ya) / (xb - xa) if xb > xa else 0.0
    x, y = xa, ya
    if x < 0.0:
        y = ya - xa * dydx
        acc[start] += sign * (y - ya)
        x = 0.0
    c = int(np.floor(x))
    while True:
        if xb <= c + 1.0:
            xn, yn = xb, yb
        else:
            xn = c + 1.0
            yn = ya + (xn - xa) * dydx
        dy = sign * (yn - y)
        xm = 0.5 * (x + xn) - c
        acc[start + c] += dy * (1.0 - xm)
        if c + 1 >= width:
            return
        acc[start + c + 1] += dy * xm
        if xn >= xb:
            return
        c += 1
        x, y = xn, yn


@numba.njit(cache=True, nogil=True)
def _edge(acc, start, height, width, x0, y0, x1, y1, sign):
    """Accumulate the edge ``(x0, y0) -> (x1, y1)`` (window cell units) into the window at ``acc[start]``."""
    if y0 == y1:
        return
    dxdy = (x1 - x0) / (y1 - y0)
    lo, hi = min(y0, y1), max(y0, y1)
    for r in range(int(np.floor(max(lo, 0.0))), int(np.ceil(min(hi, float(height))))):
        ya, yb = max(lo, float(r)), min(hi, r + 1.0)
        if yb <= ya:
            continue
        xa = x0 if ya == y0 else (x1 if ya == y1 else x0 + (ya - y0) * dxdy)
        xb = x0 if yb == y0 else (x1 if yb == y1 else x0 + (yb - y0) * dxdy)
        if y0 < y1:
            _row_piece(acc, start + r * width, width, xa, ya - r, xb, yb - r, sign)
        else:
            _row_piece(acc, start + r * width, width, xb, yb - r, xa, ya - r, sign)


@numba.njit(cache=True, nogil=True)
def _windows(x, y, ring_offsets, ring_polygon, n_polygons, a, c, e, f, n_rows, n_cols):
    """Coordinates in cell units and each polygon's window (bounding box in whole cells, clipped to the grid)."""
    col = (x - c) / a
    row = (y - f) / e
    lo_x = np.full(n_polygons, np.inf)
    hi_x = np.full(n_polygons, -np.inf)
    lo_y = np.full(n_polygons, np.inf)
    hi_y = np.full(n_polygons, -np.inf)
    for ring in range(ring_offsets.size - 1):
        p = ring_polygon[ring]
        for i in range(ring_offsets[ring], ring_offsets[ring + 1]):
            lo_x[p] = min(lo_x[p], col[i])
            hi_x[p] = max(hi_x[p], col[i])
            lo_y[p] = min(lo_y[p], row[i])
            hi_y[p] = max(hi_y[p], row[i])
    row0 = np.zeros(n_polygons, dtype=np.int64)
    col0 = np.zeros(n_polygons, dtype=np.int64)
    height = np.zeros(n_polygons, dtype=np.int64)
    width = np.zeros(n_polygons, dtype=np.int64)
    offsets = np.zeros(n_polygons + 1, dtype=np.int64)
    for p in range(n_polygons):
        if lo_x[p] <= hi_x[p]:
            c_lo = max(0.0, np.floor(lo_x[p]))
            c_hi = min(float(n_cols), np.ceil(hi_x[p]))
            r_lo = max(0.0, np.floor(lo_y[p]))
            r_hi = min(float(n_rows), np.ceil(hi_y[p]))
            if c_hi > c_lo and r_hi > r_lo:
                row0[p], col0[p] = int(r_lo), int(c_lo)
                height[p], width[p] = int(r_hi - r_lo), int(c_hi - c_lo)
        offsets[p + 1] = offsets[p] + height[p] * width[p]
    return col, row, row0, col0, height, width, offsets


@numba.njit(cache=True, nogil=True)
def _rasterise(acc, col, row, ring_offsets, ring_polygon, ring_sign, row0, col0, height, width, offsets):
    """Accumulate every ring edge into the zeroed ``acc``, then prefix-sum each window row in place."""
    for ring in range(ring_offsets.size - 1):
        p = ring_polygon[ring]
        if height[p] == 0:
            continue
        for i in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            _edge(acc, offsets[p], height[p], width[p], col[i] - col0[p], row[i] - row0[p],
                  col[i + 1] - col0[p], row[i + 1] - row0[p], ring_sign[ring])
    for p in range(row0.size):
        for r in range(height[p]):
            total = 0.0
            for i in range(offsets[p] + r * width[p], offsets[p] + (r + 1) * width[p]):
                total += acc[i]
                acc[i] = min(max(total, 0.0), 1.0)
