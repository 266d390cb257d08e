"""Minimum geodesic distances between mixed geometries (points, polygons, multipolygons) and their radius graph.

Geometries are shapely objects in longitude/latitude degrees on the WGS-84 ellipsoid. The distance of two
geometries is the minimum geodesic distance between them: 0 when they touch, overlap or contain one another,
never the distance of their centroids. Two points are measured with the geodesic of
:mod:`mtg.kernels.geodesic`. Any other pair is measured in the ellipsoidal azimuthal equidistant projection centred
between the two geometries, computed with the geodesic itself: a point at distance ``s`` and azimuth ``alpha``
from the centre maps to ``(s sin alpha, s cos alpha)``, and back with ``pyproj.Geod.fwd``. Longitudes need no
unwrapping (the antimeridian is invisible to the geodesic) and a pole is an ordinary point of the plane. The two
nearest points are found in that plane (``shapely.shortest_line``), taken back to the ellipsoid and measured with
the geodesic.

Edges. A lon/lat polygon does not say which curve joins two vertices; here an edge is the straight segment in the
local plane, which differs from the geodesic between its ends by ``O(L rho^2 / R^2)`` for an edge of length ``L``
at distance ``rho`` from the centre: millimetres for the edges of mapped polygons (metres to a few kilometres).

Accuracy. The projection keeps radial distances and stretches the other directions by ``k = s / m >= 1`` (``m``
the reduced length, ``m <= s`` on an ellipsoid, whose curvature is positive); within ``rho`` of the centre
``k - 1 <= eps(rho) = (rho / R)^2 / 6 + O(rho^4)`` with ``R = b^2 / a``, the smallest radius of curvature. So
every geodesic ``s`` maps to a plane length in ``[s, (1 + eps) s]`` and every plane segment ``t`` maps back to a
curve no longer than ``t``. With ``D`` the true distance, attained by ``(p, q)``, and ``(p*, q*)`` the plane's
nearest points (which lie on the geometries, so their geodesic is ``>= D``)::

    D <= geodesic(p*, q*) <= |P(p*) - P(q*)| <= |P(p) - P(q)| <= (1 + eps) D.

The result is an upper bound at most ``eps D`` too long. The centre is the pair's midpoint, and is moved to the
midpoint of the nearest points when these lie more than ``RECENTRE_M`` from it, so for geometries small next to
their distance ``rho`` is about ``D / 2``: for ``D = 50 km`` (``rho <= 50 km`` at worst) the error is below
``(50 / 6335)^2 / 6 * 50 km = 0.52 m``, and below 0.1 m when ``rho ~ 25 km``.

Candidate pairs follow :mod:`mtg.kernels.radius_graph`: each geometry gets a centre (a unit vector, geodetic
latitude taken as spherical) and a *reach* (the largest central angle from the centre to its vertices, widened
for the bulge of edges between vertices), so two geometries are within ``radius`` only if their centres lie within
the angle of ``radius`` (:func:`chord_radius`) plus both reaches. A k-d tree of centres, queried in chunks, lists
those pairs; the exact distance decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely
from scipy.spatial import cKDTree

from mtg.kernels.geodesic import WGS84, geodesic_distance
from mtg.kernels.radius_graph import _ANGLE_SLACK, _CHORD_SLACK, EdgeList, chord_radius, unit_vectors, within

# The nearest points of a pair are re-measured in a plane centred on their midpoint when it lies further away.
RECENTRE_M = 1_000.0
# Widening of the vertex cap for the bulge of (short) edges between vertices: relative, plus ~0.6 m absolute.
_REACH_SLACK = 1e-3
_REACH_FLOOR = 1e-7
# Safety on angle/chord conversions: the candidate search may only be too wide, never too narrow.

def _as_array(geoms: Sequence[shapely.Geometry]) -> np.ndarray:
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    if not shapely.is_geometry(arr).all():
        raise TypeError("geoms must hold shapely geometries")
    if shapely.is_empty(arr).any():
        raise ValueError(f"empty geometries at indices {np.flatnonzero(shapely.is_empty(arr))[:10].tolist()}")
    return arr


def _angle(chord: np.ndarray) -> np.ndarray:
    return 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))


def _lonlat_of(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    return lon, np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))


def centres_and_reaches(geoms: Sequence[shapely.Geometry]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-vector centre and angular reach of each geometry.

    Parameters
    ----------
    geoms : sequence of shapely.Geometry
        Non-empty geometries in lon/lat degrees.

    Returns
    -------
    centres : numpy.ndarray
        float64 ``(n, 3)``: the normalised mean of the vertices' unit vectors (the first vertex where that mean
        vanishes).
    reaches : numpy.ndarray
        float64 ``(n,)`` radians: the largest central angle from the centre to a vertex, times ``1 + 1e-3`` plus
        ``1e-7`` (about 0.6 m) for edges bulging out of the vertices' spherical cap; 0 for points.
    """
    arr = _as_array(geoms)
    n = arr.size
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0)
    coords, owner = shapely.get_coordinates(arr, return_index=True)
    v = unit_vectors(coords[:, 0], coords[:, 1])
    total = np.stack([np.bincount(owner, weights=v[:, k], minlength=n) for k in range(3)], axis=1)
    norm = np.linalg.norm(total, axis=1)
    first = v[np.searchsorted(owner, np.arange(n))]
    centres = np.where(norm[:, None] > 1e-9, total / np.maximum(norm, 1e-300)[:, None], first)
    angles = _angle(np.linalg.norm(v - centres[owner], axis=1))
    reaches = np.zeros(n)
    np.maximum.at(reaches, owner, angles)
    single = shapely.get_num_coordinates(arr) == 1
    reaches = np.where(single, 0.0, reaches * (1.0 + _REACH_SLACK) + _REACH_FLOOR)
    return centres, reaches


def _to_plane(lon0: np.ndarray, lat0: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    az, _, s = WGS84.inv(lon0, lat0, lon, lat)
    az = np.radians(np.asarray(az))
    s = np.asarray(s)
    return np.column_stack([s * np.sin(az), s * np.cos(az)])


def _from_plane(lon0: np.ndarray, lat0: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    az = np.degrees(np.arctan2(xy[:, 0], xy[:, 1]))
    lon, lat, _ = WGS84.fwd(lon0, lat0, az, np.hypot(xy[:, 0], xy[:, 1]))
    return np.asarray(lon), np.asarray(lat)


def _planar(geoms: np.ndarray, lon0: np.ndarray, lat0: np.ndarray) -> np.ndarray:
    """The geometries in the azimuthal equidistant planes centred at ``(lon0[k], lat0[k])``, one per geometry."""
    counts = shapely.get_num_coordinates(geoms)
    c_lon, c_lat = np.repeat(lon0, counts), np.repeat(lat0, counts)
    return shapely.transform(geoms, lambda xy: _to_plane(c_lon, c_lat, xy[:, 0], xy[:, 1]))


def _plane_distances(
    ga: np.ndarray, gb: np.ndarray, lon0: np.ndarray, lat0: np.ndarray, recentre: bool
) -> np.ndarray:
    """Distances of the pairs ``(ga[k], gb[k])`` measured in planes centred at ``(lon0[k], lat0[k])``."""
    out = np.zeros(ga.size)
    pa, pb = _planar(ga, lon0, lat0), _planar(gb, lon0, lat0)
    apart = np.flatnonzero(~shapely.intersects(pa, pb))
    if apart.size == 0:
        return out
    ends = shapely.get_coordinates(shapely.shortest_line(pa[apart], pb[apart])).reshape(-1, 2, 2)
    mid = ends.mean(axis=1)
    lon, lat = _from_plane(np.repeat(lon0[apart], 2), np.repeat(lat0[apart], 2), ends.reshape(-1, 2))
    out[apart] = geodesic_distance(lon[0::2], lat[0::2], lon[1::2], lat[1::2])
    if recentre:
        far = np.hypot(mid[:, 0], mid[:, 1]) > RECENTRE_M
        if far.any():
            k = apart[far]
            m_lon, m_lat = _from_plane(lon0[k], lat0[k], mid[far])
            out[k] = np.minimum(out[k], _plane_distances(ga[k], gb[k], m_lon, m_lat, recentre=False))
    return out


def _pair_distances(arr: np.ndarray, centres: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.zeros(i.size)
    points = shapely.get_type_id(arr) == 0
    both = points[i] & points[j]
    if both.any():
        x, y = shapely.get_x(arr[points]), shapely.get_y(arr[points])
        at = np.cumsum(points) - 1
        pi, pj = at[i[both]], at[j[both]]
        out[both] = geodesic_distance(x[pi], y[pi], x[pj], y[pj])
    rest = np.flatnonzero(~both)
    if rest.size:
        ci, cj = i[rest], j[rest]
        mid = centres[ci] + centres[cj]
        norm = np.linalg.norm(mid, axis=1)
        mid = np.where(norm[:, None] > 1e-9, mid / np.maximum(norm, 1e-300)[:, None], centres[ci])
        lon0, lat0 = _lonlat_of(mid)
        out[rest] = _plane_distances(arr[ci], arr[cj], lon0, lat0, recentre=True)
    return out


def _indices(i, j, n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.asarray(i, dtype=np.int64).ravel()
    j = np.asarray(j, dtype=np.int64).ravel()
    if i.shape != j.shape:
        raise ValueError(f"i and j must have one length; got {i.shape} and {j.shape}")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n})")
    return i, j


def geometry_pair_distances(geoms: Sequence[shapely.Geometry], i, j) -> np.ndarray:
    """Minimum geodesic distances of the geometry pairs ``(geoms[i[k]], geoms[j[k]])``.

    Parameters
    ----------
    geoms : sequence of shapely.Geometry
        Non-empty points, polygons, multipolygons (any geometry type) in lon/lat degrees, WGS-84.
    i, j : array_like of int
        Geometry indices of the pairs, one length.

    Returns
    -------
    numpy.ndarray
        float64 metres, 0 for touching, overlapping or nested pairs; exact for two points, otherwise an upper bound
        within ``eps D`` of the distance ``D`` (module docstring; under 1 m up to 50 km).
    """
    arr = _as_array(geoms)
    i, j = _indices(i, j, arr.size)
    return _pair_distances(arr, centres_and_reaches(arr)[0], i, j)


def geometry_distance(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Minimum geodesic distance in metres between two lon/lat geometries (see :func:`geometry_pair_distances`).

    Parameters
    ----------
    a, b : shapely.Geometry
        Non-empty geometries in lon/lat degrees, WGS-84.

    Returns
    -------
    float
        Metres; 0 when they touch, overlap or one contains the other.
    """
    return float(geometry_pair_distances([a, b], [0], [1])[0])


def geometry_distance_callback(geoms: Sequence[shapely.Geometry]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ``exact_distance(i, j)`` callback of :func:`mtg.kernels.hac.sparse_hac` for these geometries.

    Parameters
    ----------
    geoms : sequence of shapely.Geometry
        Non-empty geometries in lon/lat degrees, WGS-84.

    Returns
    -------
    callable
        ``f(i, j) -> distances`` in metres (:func:`geometry_pair_distances`) for index arrays ``i`` and ``j``.
    """
    arr = _as_array(geoms)
    centres = centres_and_reaches(arr)[0]

    def exact_distance(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i, j = _indices(i, j, arr.size)
        return _pair_distances(arr, centres, i, j)

    return exact_distance


def geometry_radius_graph(geoms: Sequence[shapely.Geometry], radius: float, chunk_size: int = 4096) -> EdgeList:
    """All pairs of geometries within ``radius`` metres of each other (minimum geodesic distance), as COO edges.

    Parameters
    ----------
    geoms : sequence of shapely.Geometry
        Non-empty points, polygons and multipolygons in lon/lat degrees (WGS-84); the antimeridian and the poles
        need no special care.
    radius : float
        Largest distance kept, metres (>= 0).
    chunk_size : int
        Geometries queried against the k-d tree at a time; the temporary memory grows with the candidate pairs of
        one chunk, not with ``n^2``.

    Returns
    -------
    i, j : numpy.ndarray
        int64 geometry indices with ``i < j``, each pair once, in no particular order.
    d : numpy.ndarray
        float64 distances in metres (:func:`geometry_pair_distances`), ``d <= radius``.
    """
    arr = _as_array(geoms)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    angle_r = float(_angle(np.array(chord_radius(radius))))
    n = arr.size
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    centres, reaches = centres_and_reaches(arr)
    tree = cKDTree(centres)
    max_reach = float(reaches.max())
    parts_i, parts_j, parts_d = [], [], []
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        bound = np.minimum((angle_r + reaches[rows] + max_reach) * _ANGLE_SLACK, np.pi)
        found = tree.query_ball_point(centres[rows], 2.0 * np.sin(bound / 2.0) + _CHORD_SLACK)
        ci = np.repeat(rows, [len(f) for f in found])
        cj = np.fromiter((c for f in found for c in f), dtype=np.int64, count=ci.size)
        keep = ci < cj
        ci, cj = ci[keep], cj[keep]
        gap = _angle(np.linalg.norm(centres[ci] - centres[cj], axis=1))
        keep = gap <= (angle_r + reaches[ci] + reaches[cj]) * _ANGLE_SLACK + _CHORD_SLACK
        ci, cj = ci[keep], cj[keep]
        kept = within(ci, cj, _pair_distances(arr, centres, ci, cj), radius)
        for part, edges in zip((parts_i, parts_j, parts_d), kept):
            part.append(edges)
    return np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d)
