"""Work tiles on a fixed global grid: areas of interest cut per UTM zone into square tiles that every rerun cuts
the same way, and tile footprints merged back without seams or double counting.

The grid of a zone is the set of squares ``[col * T, (col + 1) * T) x [row * T, (row + 1) * T)`` in the zone's
WGS 84 / UTM coordinates (``T`` the tile side in metres), so tile ids depend only on the zone, the tile size and the
place. A tile *owns* the part of its square that lies inside its zone's 6-degree strip (and hemisphere): owned
areas of all tiles are disjoint and cover the area of interest, which is what makes the world inventory count a
mine crossing a tile edge or a UTM zone boundary once. A tile is *processed* over the box of the area of interest
inside it, snapped out to the DEM grid, plus a halo, so that segmentation and co-registration near its edges see
the same context as its neighbours.

Ownership polygons are in EPSG:4326; the square's edges are densified with vertices computed from integer
multiples of one step, so neighbouring tiles share bit-identical edges, and footprints are unioned on a fixed
precision grid (:data:`MERGE_GRID_DEG`) that nodes the near-coincident seams.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import utm_epsg

#: UTM covers 80 deg S to 84 deg N; beyond are the polar (UPS) grids, which work tiles do not cover.
UTM_LAT_RANGE = (-80.0, 84.0)
#: Vertices per tile edge of ownership polygons.
EDGE_VERTICES = 16
#: Precision grid (degrees, about 1 cm) on which tile footprints are unioned across seams.
MERGE_GRID_DEG = 1e-7
#: Processing extents are snapped out to this multiple (m): the DEM pixel, which nests the 10 and 20 m pixels.
SNAP_M = 30.0
#: Tile sides are multiples of this (m): the Sentinel-2 pixel, so tile edges fall on pixel edges of the cubes.
TILE_STEP_M = 10.0


def tile_id(epsg: int, col: int, row: int) -> str:
    """Tile id, e.g. ``"50S-0039-0370"``: UTM zone and hemisphere, column and row on the zone's grid."""
    return f"{epsg % 100:02d}{'N' if epsg < 32700 else 'S'}-{col:04d}-{row:04d}"


def zone_strip(epsg: int) -> shapely.Polygon:
    """The lon/lat box of a WGS 84 / UTM zone (EPSG:326zz north, 327zz south) within :data:`UTM_LAT_RANGE`."""
    zone = epsg % 100
    west = -180.0 + 6.0 * (zone - 1)
    south, north = (0.0, UTM_LAT_RANGE[1]) if epsg < 32700 else (UTM_LAT_RANGE[0], 0.0)
    return shapely.box(west, south, west + 6.0, north)


def buffered_aoi(frame: gpd.GeoDataFrame, buffer_m: float) -> gpd.GeoSeries:
    """Each geometry of ``frame`` buffered by ``buffer_m`` metres in its own UTM zone, in EPSG:4326.

    Raises
    ------
    MtgError
        For points without a buffer (they have no area), and for geometries outside the UTM latitudes.
    """
    if buffer_m < 0:
        raise MtgError(f"--buffer {buffer_m:g} m must not be negative")
    lonlat = frame.geometry.to_crs("EPSG:4326")
    if buffer_m == 0 and lonlat.geom_type.isin(["Point", "MultiPoint", "LineString", "MultiLineString"]).any():
        raise MtgError("the areas of interest hold points or lines: give them an area with --buffer (e.g. 5km)")
    centre = lonlat.representative_point()
    outside = ~centre.y.between(*UTM_LAT_RANGE)
    if outside.any():
        raise MtgError(f"{int(outside.sum())} areas of interest lie beyond the UTM latitudes {UTM_LAT_RANGE} "
                       f"(first at lat {float(centre.y[outside].iloc[0]):.3f}): polar grids are not supported")
    zones = np.array([utm_epsg(x, y) for x, y in zip(centre.x, centre.y)])
    out = gpd.GeoSeries([None] * len(frame), crs="EPSG:4326", index=frame.index)
    for epsg in np.unique(zones):
        pick = zones == epsg
        part = lonlat[pick].to_crs(f"EPSG:{epsg}")
        out[pick] = (part.buffer(buffer_m, quad_segs=16) if buffer_m > 0 else part).to_crs("EPSG:4326").to_numpy()
    return out


def _ring(col: int, row: int, tile_m: float) -> np.ndarray:
    """Densified outline of a grid square, from integer multiples of one step (bit-identical shared edges)."""
    n = EDGE_VERTICES
    step = tile_m / n
    k = np.arange(n)
    x0, y0 = col * n, row * n
    xs = np.concatenate([x0 + k, np.full(n, x0 + n), x0 + n - k, np.full(n, x0)]) * step
    ys = np.concatenate([np.full(n, y0), y0 + k, np.full(n, y0 + n), y0 + n - k]) * step
    return np.column_stack([xs, ys])


def work_tiles(aoi: gpd.GeoSeries, tile_m: float, halo_m: float) -> gpd.GeoDataFrame:
    """The work tiles of an area of interest.

    Parameters
    ----------
    aoi : geopandas.GeoSeries
        Areas of interest in EPSG:4326 (:func:`buffered_aoi`).
    tile_m : float
        Tile side in metres (a multiple of :data:`TILE_STEP_M`).
    halo_m : float
        Margin processed around each tile's extent (m).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per tile, sorted by id: ``tile_id``, ``epsg``, ``col``, ``row``, ``left``, ``bottom``,
        ``right``, ``top`` (processed extent without halo, zone CRS), ``halo_m``, ``aoi_km2`` (area of interest
        the tile owns), and ``geometry`` (the owned polygon, EPSG:4326).
    """
    if tile_m <= 0 or abs(tile_m / TILE_STEP_M - round(tile_m / TILE_STEP_M)) > 1e-9:
        raise MtgError(f"--tile-km {tile_m / 1000:g} must be a positive multiple of {TILE_STEP_M / 1000:g} km")
    union = shapely.union_all(aoi.to_numpy())
    if union.is_empty:
        raise MtgError("the areas of interest are empty")
    west, south, east, north = union.bounds
    geod = gpd.GeoSeries([], crs="EPSG:4326").crs.get_geod()
    rows = []
    for zone in range(int((west + 180) // 6) + 1, min(int((east + 180) // 6) + 1, 60) + 1):
        for base in (32600, 32700):
            epsg = base + zone
            strip = zone_strip(epsg)
            part = union.intersection(strip)
            if part.is_empty or part.area == 0:
                continue
            to_zone = Transformer.from_crs(4326, epsg, always_xy=True)
            to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
            projected = shapely.transform(part.segmentize(0.01), lambda c: np.column_stack(to_zone.transform(*c.T)))
            px0, py0, px1, py1 = projected.bounds
            cols = np.arange(math.floor(px0 / tile_m), math.floor(px1 / tile_m) + 1)
            rws = np.arange(math.floor(py0 / tile_m), math.floor(py1 / tile_m) + 1)
            cc, rr = (a.ravel() for a in np.meshgrid(cols, rws))
            squares = shapely.box(cc * tile_m, rr * tile_m, (cc + 1) * tile_m, (rr + 1) * tile_m)
            shapely.prepare(projected)
            for col, row, square in zip(cc, rr, squares):
                inside = projected.intersection(square) if projected.intersects(square) else None
                if inside is None or inside.is_empty or inside.area == 0:
                    continue
                ring = _ring(int(col), int(row), tile_m)
                owned = shapely.Polygon(np.column_stack(to_lonlat.transform(ring[:, 0], ring[:, 1]))).intersection(strip)
                if owned.is_empty or owned.area == 0:
                    continue
                b = inside.bounds
                left, bottom = math.floor(b[0] / SNAP_M) * SNAP_M, math.floor(b[1] / SNAP_M) * SNAP_M
                right, top = math.ceil(b[2] / SNAP_M) * SNAP_M, math.ceil(b[3] / SNAP_M) * SNAP_M
                aoi_owned = part.intersection(owned)
                rows.append({"tile_id": tile_id(epsg, int(col), int(row)), "epsg": epsg, "col": int(col),
                             "row": int(row), "left": left, "bottom": bottom, "right": right, "top": top,
                             "halo_m": float(halo_m), "aoi_km2": abs(geod.geometry_area_perimeter(aoi_owned)[0]) / 1e6,
                             "geometry": owned})
    if not rows:
        raise MtgError("the areas of interest cover no UTM tile")
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").sort_values("tile_id", ignore_index=True)


def geodesic_areas(frame: gpd.GeoDataFrame) -> list[float]:
    """Geodesic area (m^2, WGS 84) of each geometry of an EPSG:4326 frame."""
    geod = frame.crs.get_geod()
    return [abs(geod.geometry_area_perimeter(g)[0]) for g in frame.geometry]


def clip_to_tile(frame: gpd.GeoDataFrame, owned: shapely.Geometry) -> gpd.GeoDataFrame:
    """The parts of ``frame``'s polygons that a tile owns, in EPSG:4326 (empty parts dropped)."""
    lonlat = frame.to_crs("EPSG:4326")
    clipped = shapely.intersection(lonlat.geometry.to_numpy(), owned, grid_size=MERGE_GRID_DEG)
    keep = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
    out = lonlat[keep].copy()
    out["geometry"] = shapely.make_valid(clipped[keep])
    return out.reset_index(drop=True)


def seam_components(frame: gpd.GeoDataFrame, by: str | None = None) -> np.ndarray:
    """Component label of each polygon: polygons that touch or overlap (within :data:`MERGE_GRID_DEG`, and with
    the same value of column ``by`` when given) share a label; labels are numbered in the frame's order."""
    geoms = frame.geometry.to_numpy()
    if len(geoms) == 0:
        return np.zeros(0, dtype=int)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=MERGE_GRID_DEG)
    if by is not None:
        values = frame[by].to_numpy()
        same = values[left] == values[right]
        left, right = left[same], right[same]
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(len(geoms), len(geoms)))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # renumber components by their first member
    return order[labels]


def merge_across_seams(frame: gpd.GeoDataFrame, by: str | None = None, weighted: tuple[str, ...] = (),
                       summed: tuple[str, ...] = (), maxima: tuple[str, ...] = ()) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """One polygon per group of touching tile polygons (per ``by`` value), with its geodesic area.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Tile polygons in EPSG:4326 (:func:`clip_to_tile` of each tile, concatenated).
    by : str, optional
        Only polygons with the same value of this column merge (e.g. ``feature_class``); the value is kept.
    weighted : tuple of str
        Columns averaged with the parts' areas as weights (e.g. ``mean_probability``).
    summed, maxima : tuple of str
        Columns summed (e.g. ``volume_m3``) and columns whose largest value is kept (e.g. ``max_probability``).

    Returns
    -------
    (geopandas.GeoDataFrame, numpy.ndarray)
        The merged polygons (``area_m2`` geodesic, ``n_parts``, ``by``, ``weighted``, ``summed`` and ``maxima``
        columns), and for each input row the index of the merged polygon it became part of.
    """
    labels = seam_components(frame, by)
    geod = frame.crs.get_geod() if frame.crs is not None else None
    if geod is None or not frame.crs.equals("EPSG:4326"):
        raise MtgError("tile polygons must be in EPSG:4326 to be merged")
    parts = frame.assign(_label=labels, _area=geodesic_areas(frame))
    rows = []
    for label, group in parts.groupby("_label", sort=True):
        geometry = shapely.union_all(group.geometry.to_numpy(), grid_size=MERGE_GRID_DEG)
        row = {"geometry": geometry, "area_m2": abs(geod.geometry_area_perimeter(geometry)[0]),
               "n_parts": len(group)}
        if by is not None:
            row[by] = group[by].iloc[0]
        for column in weighted:
            w = group["_area"].to_numpy()
            row[column] = float(np.average(group[column].to_numpy(), weights=w)) if w.sum() > 0 else float("nan")
        for column in summed:
            row[column] = float(group[column].sum())
        for column in maxima:
            row[column] = float(group[column].max())
        rows.append(row)
    columns = ([by] if by else []) + [*weighted, *summed, *maxima, "area_m2", "n_parts", "geometry"]
    merged = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry="geometry", crs="EPSG:4326")
    return merged, labels
