"""Geodesic radius graphs of lon/lat points on the WGS-84 ellipsoid.

Candidate pairs come from a k-d tree on 3-D unit vectors queried with a conservative chord length, one chunk of
query points at a time (memory grows with the number of edges, not with n^2); each candidate is then refined with
the exact ellipsoidal geodesic distance (Karney's algorithm, through ``pyproj.Geod.inv``, accurate to nanometres).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyproj import Geod
from scipy.spatial import cKDTree

WGS84 = Geod(ellps="WGS84")
# Smallest radius of curvature of the ellipsoid: the meridional radius at the equator, a (1 - e^2) = b^2 / a.
_R_MIN = WGS84.b**2 / WGS84.a
# Safety factors on the chord conversion: the candidate search may only ever be too wide, never too narrow.
_ANGLE_SLACK = 1.0 + 1e-9
_CHORD_SLACK = 1e-12


def _lonlat(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.ndim != 1 or lon.shape != lat.shape:
        raise ValueError(f"lon and lat must be 1-D arrays of one length; got shapes {lon.shape} and {lat.shape}")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("lon and lat must be finite")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError("latitudes must lie in [-90, 90] degrees")
    return lon, lat


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
    lon, lat = _lonlat(lon, lat)
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


def geodesic_distance(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Geodesic distances on the WGS-84 ellipsoid, vectorised.

    Parameters
    ----------
    lon1, lat1, lon2, lat2 : array_like
        Degrees; broadcast against each other.

    Returns
    -------
    numpy.ndarray
        float64 distances in metres.
    """
    lon1, lat1, lon2, lat2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2)))
    if lon1.size == 0:
        return np.zeros(lon1.shape)
    return np.asarray(WGS84.inv(lon1, lat1, lon2, lat2)[2], dtype=np.float64)


def pair_distances(lon, lat, i, j) -> np.ndarray:
    """Exact geodesic distances between given pairs of points.

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
    lon, lat = _lonlat(lon, lat)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    return geodesic_distance(lon[i], lat[i], lon[j], lat[j])


def distance_callback(lon, lat) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ``exact_distance(i, j)`` callback of :func:`mtg.kernels.hac.sparse_hac` for these points.

    Parameters
    ----------
    lon, lat : array_like
        Point coordinates in degrees, shape ``(n,)``.

    Returns
    -------
    callable
        ``f(i, j) -> distances`` in metres for index arrays ``i`` and ``j``.
    """
    lon, lat = _lonlat(lon, lat)
    lon, lat = lon.copy(), lat.copy()

    def exact_distance(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return pair_distances(lon, lat, i, j)

    return exact_distance


def within(ci: np.ndarray, cj: np.ndarray, d: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate edges ``(ci, cj, d)`` with ``d <= radius``, sorted by ``(ci, cj)``."""
    keep = d <= radius
    ci, cj, d = ci[keep], cj[keep], d[keep]
    order = np.lexsort((cj, ci))
    return ci[order], cj[order], d[order]


def radius_graph(lon, lat, radius: float, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of points within a geodesic radius, as a COO edge list.

    Parameters
    ----------
    lon, lat : array_like
        Longitudes and geodetic latitudes in degrees, shape ``(n,)``. Any longitude range works (the antimeridian
        and the poles need no special care); duplicate points give edges with distance 0.
    radius : float
        Geodesic radius in metres; pairs with distance ``<= radius`` are kept.
    chunk_size : int
        Number of query points per k-d tree query; bounds the temporary memory to the candidate pairs of one chunk.

    Returns
    -------
    i, j : numpy.ndarray
        int64 point indices with ``i < j``, sorted by ``(i, j)``.
    d : numpy.ndarray
        float64 geodesic distances in metres, ``d <= radius``.
    """
    lon, lat = _lonlat(lon, lat)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    chord = chord_radius(radius)
    xyz = unit_vectors(lon, lat)
    tree = cKDTree(xyz)
    parts_i, parts_j, parts_d = [], [], []
    for start in range(0, len(lon), chunk_size):
        stop = min(start + chunk_size, len(lon))
        pairs = cKDTree(xyz[start:stop]).sparse_distance_matrix(tree, chord, output_type="ndarray")
        ci = pairs["i"].astype(np.int64) + start
        cj = pairs["j"].astype(np.int64)
        keep = ci < cj
        ci, cj = ci[keep], cj[keep]
        kept = within(ci, cj, pair_distances(lon, lat, ci, cj), radius)
        for part, edges in zip((parts_i, parts_j, parts_d), kept):
            part.append(edges)
    if not parts_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d)
