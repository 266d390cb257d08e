"""Minimum geodesic distances between mixed geometries (points, polygons, multipolygons) and their radius graph.

Geometries are shapely objects in longitude/latitude degrees on WGS-84. The distance of two geometries is the
minimum geodesic distance between them: 0 when they touch, overlap or contain one another, never the distance of
centroids. It is computed in a local azimuthal equidistant projection centred between the two: the nearest points
are found in that plane, taken back to lon/lat and measured with the WGS-84 geodesic (``pyproj.Geod.inv``).
Within 50 km of its centre that projection distorts lengths by less than ``(50 km / 6371 km)^2 / 6 = 1e-5``, so
the nearest points it finds are off by under 0.5 m and their geodesic distance (a second-order change) by far
less; points on the antimeridian or at a pole are no special case for a projection centred on them.

Candidate pairs come from the radius graph idea of :mod:`mtg.kernels.radius_graph`: each geometry gets a centre
(a unit vector) and a *reach* (the largest central angle from the centre to its vertices), so two geometries can
be within ``radius`` only if their centres are within the angle of ``radius`` plus both reaches; a k-d tree of
centres, queried in chunks, lists those pairs and the exact distance decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from mtg.kernels.radius_graph import chord_radius, geodesic_distance, unit_vectors

# Geodesic edges of small polygons bulge out of the spherical cap of their vertices by a tiny amount; widen it.
_REACH_SLACK = 1.001
_REACH_FLOOR = 1e-7  # radians, about 0.6 m


def _vertices(geom: shapely.Geometry) -> np.ndarray:
    coords = shapely.get_coordinates(geom)
    if coords.size == 0:
        raise ValueError(f"empty geometry: {geom.wkt[:60]}")
    return coords


def _angle(chord: np.ndarray) -> np.ndarray:
    return 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))


def _chord(angle: np.ndarray) -> np.ndarray:
    return 2.0 * np.sin(np.minimum(angle, np.pi) / 2.0)


def centres_and_reaches(geoms: Sequence[shapely.Geometry]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-vector centre and angular reach (radians) of each geometry; points have reach 0."""
    centres = np.empty((len(geoms), 3))
    reaches = np.zeros(len(geoms))
    for k, geom in enumerate(geoms):
        xy = _vertices(geom)
        v = unit_vectors(xy[:, 0], xy[:, 1])
        c = v.sum(axis=0)
        norm = np.linalg.norm(c)
        c = v[0] if norm < 1e-12 else c / norm
        centres[k] = c
        if len(v) > 1:
            reaches[k] = _angle(np.linalg.norm(v - c, axis=1)).max() * _REACH_SLACK + _REACH_FLOOR
    return centres, reaches


def _is_point(geom: shapely.Geometry) -> bool:
    return shapely.get_type_id(geom) == 0


@lru_cache(maxsize=4096)
def _local_plane(lon0: float, lat0: float) -> Transformer:
    """Azimuthal equidistant projection centred at (lon0, lat0); centres are rounded to 0.01 degree (about 1 km)
    by the caller so that neighbouring pairs share one transformer, which costs milliseconds to build."""
    return Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +ellps=WGS84 +units=m", always_xy=True
    )


def geometry_distance(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Minimum geodesic distance in metres between two lon/lat geometries (0 when they touch or overlap)."""
    if _is_point(a) and _is_point(b):
        return float(geodesic_distance(a.x, a.y, b.x, b.y))
    xy = np.vstack([_vertices(a), _vertices(b)])
    v = unit_vectors(xy[:, 0], xy[:, 1]).sum(axis=0)
    lon0 = float(np.degrees(np.arctan2(v[1], v[0])))
    lat0 = float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))
    to_plane = _local_plane(round(lon0, 2), round(lat0, 2))
    pa = shapely.transform(a, lambda c: np.column_stack(to_plane.transform(c[:, 0], c[:, 1])))
    pb = shapely.transform(b, lambda c: np.column_stack(to_plane.transform(c[:, 0], c[:, 1])))
    if shapely.intersects(pa, pb):
        return 0.0
    line = shapely.shortest_line(pa, pb)
    (x1, y1), (x2, y2) = shapely.get_coordinates(line)
    lon, lat = to_plane.transform([x1, x2], [y1, y2], direction="INVERSE")
    return float(geodesic_distance(lon[0], lat[0], lon[1], lat[1]))


def geometry_pair_distances(geoms: Sequence[shapely.Geometry], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Minimum geodesic distances (metres) of the geometry pairs ``(i[k], j[k])``."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    out = np.empty(i.size)
    points = np.array([_is_point(geoms[k]) for k in range(len(geoms))], dtype=bool)
    both = points[i] & points[j]
    if both.any():
        x = shapely.get_x(np.asarray(geoms, dtype=object)[points])
        y = shapely.get_y(np.asarray(geoms, dtype=object)[points])
        index = np.cumsum(points) - 1
        out[both] = geodesic_distance(x[index[i[both]]], y[index[i[both]]], x[index[j[both]]], y[index[j[both]]])
    for k in np.flatnonzero(~both):
        out[k] = geometry_distance(geoms[i[k]], geoms[j[k]])
    return out


def geometry_distance_callback(geoms: Sequence[shapely.Geometry]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The exact-distance callback that :func:`mtg.kernels.hac.sparse_hac` needs for average linkage."""
    geoms = list(geoms)
    return lambda i, j: geometry_pair_distances(geoms, i, j)


def geometry_radius_graph(
    geoms: Sequence[shapely.Geometry], radius: float, chunk_size: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of geometries within ``radius`` metres of each other (minimum geodesic distance).

    Parameters
    ----------
    geoms : sequence of shapely geometries
        Points, polygons and multipolygons in lon/lat degrees (WGS-84).
    radius : float
        Largest distance kept, metres.
    chunk_size : int
        Geometries queried at a time; memory grows with the candidate pairs of one chunk.

    Returns
    -------
    (i, j, d)
        int64, int64 and float64 arrays with ``i < j`` and ``d <= radius``, sorted by ``(i, j)``.
    """
    geoms = list(geoms)
    n = len(geoms)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    centres, reaches = centres_and_reaches(geoms)
    angle_r = float(_angle(np.array(chord_radius(radius))))
    tree = cKDTree(centres)
    out_i, out_j, out_d = [], [], []
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        limits = _chord(angle_r + reaches[rows] + reaches.max())
        found = tree.query_ball_point(centres[rows], limits)
        ci = np.repeat(rows, [len(f) for f in found])
        cj = np.fromiter((j for f in found for j in f), dtype=np.int64, count=ci.size)
        keep = ci < cj
        ci, cj = ci[keep], cj[keep]
        gap = _angle(np.linalg.norm(centres[ci] - centres[cj], axis=1))
        keep = gap <= angle_r + reaches[ci] + reaches[cj]
        ci, cj = ci[keep], cj[keep]
        d = geometry_pair_distances(geoms, ci, cj)
        keep = d <= radius
        out_i.append(ci[keep])
        out_j.append(cj[keep])
        out_d.append(d[keep])
    i, j, d = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]
