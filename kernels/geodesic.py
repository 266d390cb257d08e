"""Geodesic distances on the WGS-84 ellipsoid, fast for the short pairs that radius graphs are made of.

Short pairs (chord up to ``ARC_LIMIT_M``) are measured as the arc of the *normal section* through both points,
from the 3-D chord ``c`` between their ECEF positions and the section's curvature ``kappa``:
``s = 2 asin(c kappa / 2) / kappa``. ``kappa`` is Euler's normal curvature ``cos^2(alpha) / M + sin^2(alpha) / N``
in the chord's direction ``alpha``, averaged over both ends (``M``, ``N``: meridional and prime-vertical radii).
The normal section and the geodesic differ in length by ``O(e^4 s^5 / R^4)`` and the curvature's variation along
the arc enters at the same order, so against Karney's geodesic (``pyproj.Geod.inv``) the error measured over all
latitudes (poles included) and azimuths is below 1e-8 m up to 20 km, 1e-6 m at 100 km and 4e-5 m at 200 km
(``tests/test_geodesic.py`` checks it). Longer pairs are measured with Karney's algorithm through pyproj.

The formula needs no trigonometry per pair once each point's ECEF position and local frame are tabulated
(:func:`point_frames`), is symmetric to the last bit (``d(p, q) == d(q, p)``), gives exactly 0 for duplicate
points (a pole with any longitude, longitude 180 and -180 included), and is one deterministic function: the radius graph, the on-demand distances of average linkage and any
dense reference matrix all call :func:`frame_distances`.
"""

from __future__ import annotations

import numba
import numpy as np
from pyproj import Geod

WGS84 = Geod(ellps="WGS84")
_A = WGS84.a
_E2 = WGS84.es
# Pairs with a longer ECEF chord (metres) are measured with Karney's algorithm instead of the normal-section arc.
ARC_LIMIT_M = 200_000.0
# Columns of a frame table: ECEF x, y, z (m); east unit vector; north unit vector; 1/M, 1/N (1/m).
FRAME_COLUMNS = 11


@numba.njit(cache=True)
def _fill_frames(lon: np.ndarray, lat: np.ndarray, out: np.ndarray) -> None:
    for k in range(lon.size):
        # one frame for the points that many coordinates name: a pole, and longitude 180 = -180
        lam = 0.0 if abs(lat[k]) == 90.0 else np.radians(-180.0 if lon[k] == 180.0 else lon[k])
        phi = np.radians(lat[k])
        sp, cp = np.sin(phi), np.cos(phi)
        sl, cl = np.sin(lam), np.cos(lam)
        w = np.sqrt(1.0 - _E2 * sp * sp)
        n_radius = _A / w
        out[k, 0] = n_radius * cp * cl
        out[k, 1] = n_radius * cp * sl
        out[k, 2] = n_radius * (1.0 - _E2) * sp
        out[k, 3] = -sl
        out[k, 4] = cl
        out[k, 5] = 0.0
        out[k, 6] = -sp * cl
        out[k, 7] = -sp * sl
        out[k, 8] = cp
        out[k, 9] = w * w * w / (_A * (1.0 - _E2))
        out[k, 10] = w / _A


@numba.njit(cache=True, inline="always")
def _curvature(f: np.ndarray, p: int, dx: float, dy: float, dz: float) -> float:
    """Normal curvature at point ``p`` of table ``f`` in the horizontal direction of the chord ``(dx, dy, dz)``."""
    ce = dx * f[p, 3] + dy * f[p, 4] + dz * f[p, 5]
    cn = dx * f[p, 6] + dy * f[p, 7] + dz * f[p, 8]
    h = ce * ce + cn * cn
    if h == 0.0:
        return f[p, 10]
    return (cn * cn * f[p, 9] + ce * ce * f[p, 10]) / h


#: Chords shorter than this (m) are their own arc (the difference, c^3 kappa^2 / 24, is below 1e-25 m).
SHORT_CHORD_M = 1e-6


@numba.njit(cache=True, inline="always")
def _arc(f: np.ndarray, p: int, q: int, limit: float) -> float:
    """Normal-section arc between points ``p`` and ``q`` of table ``f``; NaN for a chord over ``limit``."""
    dx, dy, dz = f[q, 0] - f[p, 0], f[q, 1] - f[p, 1], f[q, 2] - f[p, 2]
    c = np.sqrt(dx * dx + dy * dy + dz * dz)
    if c < SHORT_CHORD_M:  # a subnormal chord's curvature terms underflow to 0
        return c
    if c > limit:
        return np.nan
    kappa = 0.5 * (_curvature(f, p, dx, dy, dz) + _curvature(f, q, dx, dy, dz))
    return 2.0 * np.arcsin(min(0.5 * c * kappa, 1.0)) / kappa


@numba.njit(cache=True)
def _pair_arcs(f: np.ndarray, i: np.ndarray, j: np.ndarray, limit: float, out: np.ndarray) -> None:
    for k in range(i.size):
        out[k] = _arc(f, i[k], j[k], limit)


@numba.njit(cache=True)
def _condensed_arcs(f: np.ndarray, limit: float, out: np.ndarray) -> None:
    pos = 0
    for a in range(f.shape[0] - 1):
        for b in range(a + 1, f.shape[0]):
            out[pos] = _arc(f, a, b, limit)
            pos += 1


def check_lonlat(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes as contiguous 1-D float64 arrays of one length, checked.

    Raises
    ------
    ValueError
        For arrays that are not 1-D of one length, non-finite values, or latitudes outside [-90, 90] degrees.
    """
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    if lon.ndim != 1 or lon.shape != lat.shape:
        raise ValueError(f"lon and lat must be 1-D arrays of one length; got shapes {lon.shape} and {lat.shape}")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("lon and lat must be finite")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError("latitudes must lie in [-90, 90] degrees")
    return lon, lat


def point_frames(lon, lat) -> np.ndarray:
    """Tabulate each point's ECEF position, local east/north frame and principal curvatures.

    Parameters
    ----------
    lon, lat : array_like
        Longitudes and geodetic latitudes in degrees, shape ``(n,)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(n, 11)`` table for :func:`frame_distances`.
    """
    lon, lat = check_lonlat(lon, lat)
    out = np.empty((lon.size, FRAME_COLUMNS))
    _fill_frames(lon, lat, out)
    return out


def frame_distances(frames: np.ndarray, lon, lat, i, j) -> np.ndarray:
    """Geodesic distances of the point pairs ``(i[k], j[k])`` (see the module docstring).

    Parameters
    ----------
    frames : numpy.ndarray
        :func:`point_frames` of the points.
    lon, lat : array_like
        The same points in degrees (for Karney's algorithm on pairs longer than ``ARC_LIMIT_M``).
    i, j : array_like of int
        Point indices, one length.

    Returns
    -------
    numpy.ndarray
        float64 metres.
    """
    i = np.ascontiguousarray(i, dtype=np.int64).ravel()
    j = np.ascontiguousarray(j, dtype=np.int64).ravel()
    if i.shape != j.shape:
        raise ValueError(f"i and j must have one length; got {i.size} and {j.size}")
    out = np.empty(i.size)
    _pair_arcs(frames, i, j, ARC_LIMIT_M, out)
    far = np.flatnonzero(np.isnan(out))
    if far.size:
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        a, b = np.minimum(i[far], j[far]), np.maximum(i[far], j[far])  # one order: symmetric to the bit
        out[far] = WGS84.inv(lon[a], lat[a], lon[b], lat[b])[2]
    return out


def geodesic_distance(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Geodesic distances on the WGS-84 ellipsoid, elementwise with broadcasting.

    Parameters
    ----------
    lon1, lat1, lon2, lat2 : array_like
        Degrees; broadcast against each other.

    Returns
    -------
    numpy.ndarray
        float64 metres, of the broadcast shape.
    """
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2)))
    shape = arrays[0].shape
    lon = np.concatenate([arrays[0].ravel(), arrays[2].ravel()])
    lat = np.concatenate([arrays[1].ravel(), arrays[3].ravel()])
    m = arrays[0].size
    k = np.arange(m)
    return frame_distances(point_frames(lon, lat), lon, lat, k, k + m).reshape(shape)


def condensed_distances(lon, lat) -> np.ndarray:
    """The dense geodesic distance matrix in scipy's condensed form (pairs ``i < j``, row by row).

    The same distances as :func:`frame_distances`: a reference for dense hierarchical clustering
    (``scipy.cluster.hierarchy.linkage``) on ``n (n - 1) / 2`` pairs.

    Parameters
    ----------
    lon, lat : array_like
        Degrees, shape ``(n,)``.

    Returns
    -------
    numpy.ndarray
        float64 metres, shape ``(n (n - 1) / 2,)``.
    """
    lon, lat = check_lonlat(lon, lat)
    n = lon.size
    out = np.empty(n * (n - 1) // 2)
    _condensed_arcs(point_frames(lon, lat), ARC_LIMIT_M, out)
    far = np.flatnonzero(np.isnan(out))
    if far.size:  # pairs over ARC_LIMIT_M: Karney's algorithm, as in frame_distances
        row_start = np.arange(n) * n - np.arange(n) * (np.arange(n) + 1) // 2  # condensed index of (a, a + 1)
        a = np.searchsorted(row_start, far, side="right") - 1
        b = far - row_start[a] + a + 1
        out[far] = WGS84.inv(lon[a], lat[a], lon[b], lat[b])[2]
    return out
