"""Geodesic radius graphs of lon/lat points on the WGS-84 ellipsoid, built tile by tile.

Candidate pairs come from k-d trees on 3-D unit vectors queried with a conservative chord length
(:func:`chord_radius`); each candidate is then measured with the geodesic (:mod:`mtg.kernels.geodesic`) and kept
when within the radius. The points are split into spatial tiles (:func:`spatial_tiles`: recursive median splits of
the unit vectors, at most ``max_points`` owned points per tile); a tile also reads the *halo* of points of other
tiles within the chord of its box, and keeps the pairs whose smaller index it owns, so every pair is found by
exactly one tile and memory grows with a tile's pairs, not with ``n^2``. Tiles are independent: they are the unit
of work that :mod:`mtg.pipeline.graph_linking` sends to dask workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from mtg.kernels.geodesic import WGS84, check_lonlat, frame_distances, point_frames

# Smallest radius of curvature of the ellipsoid: the meridional radius at the equator, a (1 - e^2) = b^2 / a.
_R_MIN = WGS84.b**2 / WGS84.a
# Safety factors on the chord conversion: the candidate search may only ever be too wide, never too narrow.
_ANGLE_SLACK = 1.0 + 1e-9
_CHORD_SLACK = 1e-12
# Default number of points a tile owns.
TILE_POINTS = 250_000

EdgeList = tuple[np.ndarray, np.ndarray, np.ndarray]


def unit_vectors(lon, lat) -> np.ndarray:
    """3-D unit vectors of the points, taking geodetic latitude as spherical latitude.

    Parameters
    ----------
    lon, lat : array_like
        Longitudes and geodetic latitudes in degrees, shape ``(n,)``.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, 3)``.
    """
    lon, lat = check_lonlat(lon, lat)
    lam, phi = np.radians(lon), np.radians(lat)
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=1)


def chord_radius(radius: float) -> float:
    """A chord length between unit vectors that every pair within ``radius`` geodesic metres respects.

    On the ellipsoid ``ds^2 = M^2 dphi^2 + N^2 cos^2(phi) dlambda^2`` with meridional radius ``M >= b^2/a`` and
    prime-vertical radius ``N >= a >= b^2/a``, so any curve is at least ``b^2/a`` times as long as its image on the
    unit sphere (geodetic latitude taken as spherical latitude). A geodesic of length ``s`` therefore joins unit
    vectors at most ``s / (b^2/a)`` radians apart, whose chord is ``2 sin(angle / 2)``. Small safety factors make
    the bound hold in floating point too.

    Parameters
    ----------
    radius : float
        Geodesic radius in metres, >= 0.

    Returns
    -------
    float
        Chord length on the unit sphere (at most a little over 2).
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be finite and >= 0; got {radius}")
    angle = radius / _R_MIN * _ANGLE_SLACK
    if angle >= np.pi:
        return 2.0 + _CHORD_SLACK
    return 2.0 * np.sin(angle / 2.0) * _ANGLE_SLACK + _CHORD_SLACK


def pair_distances(lon, lat, i, j) -> np.ndarray:
    """Geodesic distances between given pairs of points (:func:`mtg.kernels.geodesic.frame_distances`).

    Parameters
    ----------
    lon, lat : array_like
        Point coordinates in degrees, shape ``(n,)``.
    i, j : array_like of int
        Point indices of the pairs, one shape.

    Returns
    -------
    numpy.ndarray
        float64 metres, shape of ``i``.
    """
    lon, lat = check_lonlat(lon, lat)
    shape = np.shape(i)
    return frame_distances(point_frames(lon, lat), lon, lat, i, j).reshape(shape)


def distance_callback(lon, lat) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ``exact_distance(i, j)`` callback of :func:`mtg.kernels.hac.sparse_hac` for these points.

    Parameters
    ----------
    lon, lat : array_like
        Point coordinates in degrees, shape ``(n,)``.

    Returns
    -------
    callable
        ``f(i, j) -> distances`` in metres for index arrays ``i`` and ``j`` (equal to :func:`pair_distances`).
    """
    lon, lat = check_lonlat(lon, lat)
    lon, lat = lon.copy(), lat.copy()
    frames = point_frames(lon, lat)

    def exact_distance(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return frame_distances(frames, lon, lat, i, j)

    return exact_distance


def within(ci: np.ndarray, cj: np.ndarray, d: np.ndarray, radius: float) -> EdgeList:
    """The candidate edges ``(ci, cj, d)`` with ``d <= radius``."""
    keep = d <= radius
    return ci[keep], cj[keep], d[keep]


@dataclass(frozen=True)
class Tile:
    """The points a tile reads: first the ones it owns, then its halo; indices into the full point set.

    Attributes
    ----------
    points : numpy.ndarray
        int64 indices: the ``n_owned`` owned points (ascending; every point is owned by exactly one tile), then the
        halo (ascending): other tiles' points within the chord radius of this tile's box.
    n_owned : int
        Number of owned points.
    """

    points: np.ndarray
    n_owned: int

    @property
    def owned(self) -> np.ndarray:
        """int64 indices of the owned points, ascending."""
        return self.points[: self.n_owned]


def _box_gap(xyz: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``xyz`` to the box ``[lo, hi]`` (0 inside)."""
    return np.linalg.norm(np.maximum(lo - xyz, 0.0) + np.maximum(xyz - hi, 0.0), axis=1)


def spatial_tiles(xyz: np.ndarray, chord: float, max_points: int = TILE_POINTS) -> list[Tile]:
    """Split points into tiles of at most ``max_points`` owned points, each with its halo.

    Tiles are the leaves of recursive median splits of the unit vectors along the box's longest side. The halo of a
    tile is every point of another tile within ``chord`` of the tile's bounding box, so a tile sees every pair with
    at least one owned point and chord ``<= chord``.

    Parameters
    ----------
    xyz : numpy.ndarray
        ``(n, 3)`` unit vectors (:func:`unit_vectors`).
    chord : float
        Chord radius (:func:`chord_radius`).
    max_points : int
        Largest number of owned points per tile.

    Returns
    -------
    list of Tile
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1; got {max_points}")
    leaves: list[np.ndarray] = []
    stack = [np.arange(len(xyz))]
    while stack:
        idx = stack.pop()
        if idx.size <= max_points:
            if idx.size:
                leaves.append(np.sort(idx))
            continue
        pts = xyz[idx]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        half = idx.size // 2
        part = np.argpartition(pts[:, axis], half)
        stack.extend([idx[part[:half]], idx[part[half:]]])
    boxes = [(xyz[leaf].min(axis=0), xyz[leaf].max(axis=0)) for leaf in leaves]
    tiles = []
    for k, (lo, hi) in enumerate(boxes):
        halo = []
        for m, (lo2, hi2) in enumerate(boxes):
            if m == k or np.linalg.norm(np.maximum(lo - hi2, 0.0) + np.maximum(lo2 - hi, 0.0)) > chord:
                continue
            other = leaves[m]
            halo.append(other[_box_gap(xyz[other], lo, hi) <= chord])
        halo = np.sort(np.concatenate(halo)) if halo else np.zeros(0, np.int64)
        tiles.append(Tile(points=np.concatenate([leaves[k], halo]), n_owned=leaves[k].size))
    return tiles


def tile_edges(tile: Tile, lon: np.ndarray, lat: np.ndarray, radius: float) -> EdgeList:
    """The pairs within ``radius`` whose smaller point index the tile owns.

    Parameters
    ----------
    tile : Tile
        The tile (:func:`spatial_tiles`).
    lon, lat : numpy.ndarray
        Degrees of the tile's points, aligned with ``tile.points``.
    radius : float
        Geodesic radius in metres.

    Returns
    -------
    i, j : numpy.ndarray
        int64 global point indices, ``i < j``.
    d : numpy.ndarray
        float64 geodesic distances in metres, ``d <= radius``.
    """
    pairs = cKDTree(unit_vectors(lon, lat)).query_pairs(chord_radius(radius), output_type="ndarray")
    a, b = pairs[:, 0], pairs[:, 1]
    ga, gb = tile.points[a], tile.points[b]
    a_first = ga < gb
    # keep a pair when its smaller index is owned here: both owned, or the owned end is the smaller one
    keep = np.where(a_first, a < tile.n_owned, b < tile.n_owned)
    a, b, ga, gb = a[keep], b[keep], ga[keep], gb[keep]
    d = frame_distances(point_frames(lon, lat), lon, lat, a, b)
    return within(np.minimum(ga, gb), np.maximum(ga, gb), d, radius)


def radius_graph(lon, lat, radius: float, max_tile_points: int = TILE_POINTS) -> EdgeList:
    """All pairs of points within a geodesic radius, as a COO edge list.

    Parameters
    ----------
    lon, lat : array_like
        Longitudes and geodetic latitudes in degrees, shape ``(n,)``. Any longitude range works (the antimeridian
        and the poles need no special care); duplicate points give edges with distance 0.
    radius : float
        Geodesic radius in metres; pairs with distance ``<= radius`` are kept.
    max_tile_points : int
        Points owned per tile (:func:`spatial_tiles`); bounds the temporary memory to one tile's candidate pairs.

    Returns
    -------
    i, j : numpy.ndarray
        int64 point indices with ``i < j``, each pair once, in no particular order.
    d : numpy.ndarray
        float64 geodesic distances in metres, ``d <= radius``.
    """
    lon, lat = check_lonlat(lon, lat)
    chord = chord_radius(radius)
    tiles = spatial_tiles(unit_vectors(lon, lat), chord, max_tile_points)
    parts = [tile_edges(tile, lon[tile.points], lat[tile.points], radius) for tile in tiles]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return tuple(np.concatenate(p) for p in zip(*parts))
