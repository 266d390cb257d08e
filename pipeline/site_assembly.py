"""Sites from linked features: union footprints and geodesic areas, commodities, countries, one row per site.

The members table has one row per linked feature (:data:`MEMBER_COLUMNS`, the ``cluster_<metres>`` labels of each
recorded cut, and the feature's geometry); :func:`assemble_sites` makes the sites of one partition of it, and
:class:`FootprintAreas` measures unions of its polygons bottom-up through the hierarchy, each set once.

Every sites layer has one geometry type, so that GIS tools read it as one layer: the geometry is the site's
footprint as a MultiPolygon, null for a site of points only (it has no footprint), and ``lon``/``lat`` (EPSG:4326
degrees) locate every site: a point of its footprint (the union's representative point), else the centroid of its
points. :func:`site_layer` brings any sites table into this layout; :func:`site_shapes` gives each site's
footprint, or its location where it has none (for country look-ups, matching and map markers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError


def geodesic_area_km2(geometry) -> float:
    """Geodesic area (km^2, WGS-84 ellipsoid) of a polygon in lon/lat degrees."""
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    oriented = shapely.orient_polygons(geometry, exterior_cw=False)
    return abs(geod.geometry_area_perimeter(oriented)[0]) / 1e6


#: Columns read as a feature's country when no column is named (matched case-insensitively).
COUNTRY_COLUMNS = ("country", "country_name", "country name")
#: Columns of the members file besides the ``cluster_<metres>`` labels, in order.
MEMBER_COLUMNS = ["source", "kind", "row", "feature_id", "site_id", "commodities", "primary_commodities", "country",
                  "lon", "lat"]
SITE_COLUMNS = ["site_id", "n_polygons", "n_points", "member_ids", "member_sources", "point_ids", "point_sources",
                "commodities", "primary_commodities", "country", "cut_m", "area_km2", "lon", "lat", "geometry"]
#: Column types of the sites table (the others hold lists, and the geometry).
SITE_DTYPES = {"site_id": "int64", "n_polygons": "int64", "n_points": "int64", "country": "string",
               "cut_m": "float64", "area_km2": "float64", "lon": "float64", "lat": "float64"}


def site_footprints(geometries, name: str = "the sites") -> np.ndarray:
    """Site footprints in the layout of every sites layer: MultiPolygons (a Polygon promoted), None for no footprint.

    Parameters
    ----------
    geometries : array_like of shapely.Geometry or None
        One geometry per site; null and empty ones are sites without a footprint.
    name : str
        What to call the sites in errors (their file).

    Returns
    -------
    numpy.ndarray
        object, a MultiPolygon or None per site.

    Raises
    ------
    MtgError
        Naming the first row whose geometry is neither polygonal nor null.
    """
    import shapely

    geoms = np.empty(len(geometries), dtype=object)
    geoms[:] = list(geometries)
    types = shapely.get_type_id(geoms)
    missing = (types < 0) | shapely.is_empty(geoms)
    polygon, multi = types == shapely.GeometryType.POLYGON, types == shapely.GeometryType.MULTIPOLYGON
    bad = np.flatnonzero(~missing & ~polygon & ~multi)
    if bad.size:
        raise MtgError(f"{name}: row {bad[0]} is a {geoms[bad[0]].geom_type}, not a footprint polygon ({bad.size} "
                       f"such rows); a site of points only has a null geometry and its lon/lat (link the sites again)")
    out = np.where(missing, None, geoms)
    for k in np.flatnonzero(polygon & ~missing):
        out[k] = shapely.MultiPolygon([geoms[k]])
    return out


def site_layer(sites, name: str = "the sites"):  # noqa: ANN001, ANN201 - GeoDataFrames
    """``sites`` in the layout of every sites layer: EPSG:4326, footprints as :func:`site_footprints`, and
    ``lon``/``lat`` of every site (where missing or not finite: the representative point of its footprint).

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        A sites table (EPSG:4326 when it has no CRS).
    name : str
        What to call the sites in errors (their file).

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``sites``, rows and other columns as they are.

    Raises
    ------
    MtgError
        When a geometry is not polygonal, or a site has neither a footprint nor a finite lon/lat.
    """
    import geopandas as gpd
    import shapely

    frame = sites.set_crs("EPSG:4326") if sites.crs is None else sites.to_crs("EPSG:4326")
    footprints = site_footprints(frame.geometry.to_numpy(), name)
    lon, lat = (frame[c].to_numpy(dtype=np.float64, na_value=np.nan) if c in frame.columns
                else np.full(len(frame), np.nan) for c in ("lon", "lat"))
    unplaced = ~(np.isfinite(lon) & np.isfinite(lat))
    fill = np.flatnonzero(unplaced & (footprints != None))  # noqa: E711 - elementwise
    anchors = shapely.point_on_surface(footprints[fill])
    lon[fill], lat[fill] = shapely.get_x(anchors), shapely.get_y(anchors)
    lost = np.flatnonzero(~(np.isfinite(lon) & np.isfinite(lat)))
    if lost.size:
        raise MtgError(f"{name}: row {lost[0]} has neither a footprint nor a lon/lat ({lost.size} such rows)")
    frame = frame.assign(lon=lon, lat=lat)
    frame[frame.geometry.name] = gpd.GeoSeries(footprints, index=frame.index, crs="EPSG:4326")
    return frame


def site_shapes(sites) -> np.ndarray:  # noqa: ANN001 - a GeoDataFrame
    """Each site's footprint (:func:`site_footprints`, EPSG:4326), or for a site without one the Point at its
    ``lon``/``lat`` (None when it has neither)."""
    import shapely

    frame = sites.set_crs("EPSG:4326") if sites.crs is None else sites.to_crs("EPSG:4326")
    shapes = site_footprints(frame.geometry.to_numpy())
    if "lon" in frame.columns and "lat" in frame.columns:
        lon, lat = (frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in ("lon", "lat"))
        point = (shapes == None) & np.isfinite(lon) & np.isfinite(lat)  # noqa: E711 - elementwise
        shapes[point] = shapely.points(lon[point], lat[point])
    return shapes


def majority(values) -> str | None:
    """The most frequent non-null value; ties go to the alphabetically first; None when there is none."""
    counts: dict[str, int] = {}
    for v in values:
        if v is not None and not pd.isna(v):
            counts[v] = counts.get(v, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))


class FootprintAreas:
    """Union geometry and geodesic area (WGS-84 ellipsoid, km^2) of sets of polygons, cached by the set.

    Nested partitions (the cuts of one hierarchy) are measured bottom-up once :meth:`add_hierarchy` has named the
    parts of each cluster: a cluster's union is the union of its parts' unions, and when the parts are disjoint
    (single linkage at a cut above 0: distinct clusters lie more than the cut apart) its area is the sum of theirs.

    Parameters
    ----------
    geometries : sequence of shapely.Geometry or None
        The features in lon/lat degrees by member index (None for features that are not polygons).
    """

    def __init__(self, geometries: Sequence[Any]):
        self.geometries = list(geometries)
        self._geometry: dict[tuple[int, ...], Any] = {}
        self._area: dict[tuple[int, ...], float] = {}
        self._parts: dict[tuple[int, ...], tuple[list[tuple[int, ...]], bool]] = {}

    @staticmethod
    def key(indices) -> tuple[int, ...]:
        return tuple(sorted(int(k) for k in indices))

    def add_hierarchy(self, labels_by_level: Sequence[np.ndarray], polygon: np.ndarray, disjoint: bool) -> None:
        """Name the parts of every cluster of nested partitions (finest first), for bottom-up unions and areas.

        Parameters
        ----------
        labels_by_level : sequence of numpy.ndarray
            Member labels of each partition, finest first; each partition must be nested in the next.
        polygon : numpy.ndarray
            bool, which members are polygons.
        disjoint : bool
            Whether distinct clusters of a partition never overlap (single linkage at cuts above 0).
        """
        index = np.flatnonzero(polygon)
        previous = None
        for labels in labels_by_level:
            labels = np.asarray(labels)[index]
            order = np.argsort(labels, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if order.size else []
            for group in groups:
                if previous is None:
                    continue
                children = np.unique(previous[group])
                if children.size > 1:
                    members = index[group]
                    parts = [self.key(members[previous[group] == c]) for c in children]
                    self._parts[self.key(members)] = (parts, disjoint)
            previous = labels

    def geometry(self, indices) -> Any:
        """Union of the polygons ``indices`` (None for none)."""
        import shapely

        key = indices if isinstance(indices, tuple) else self.key(indices)
        if not key:
            return None
        if key not in self._geometry:
            if len(key) == 1:
                geometry = self.geometries[key[0]]
            elif key in self._parts:
                geometry = shapely.union_all([self.geometry(part) for part in self._parts[key][0]])
            else:
                geometry = shapely.union_all([self.geometries[k] for k in key])
            self._geometry[key] = geometry
        return self._geometry[key]

    def area(self, indices) -> float:
        """Geodesic area (km^2) of the union of the polygons ``indices``; NaN for none."""
        key = indices if isinstance(indices, tuple) else self.key(indices)
        if not key:
            return float("nan")
        if key not in self._area:
            parts = self._parts.get(key)
            if parts is not None and parts[1]:
                self._area[key] = float(sum(self.area(part) for part in parts[0]))
            else:
                self._area[key] = geodesic_area_km2(self.geometry(key))
        return self._area[key]

    def union(self, indices) -> tuple[Any, float]:
        """``(union geometry, area_km2)`` of the polygons ``indices`` (member indices, any order)."""
        key = self.key(indices)
        return self.geometry(key), self.area(key)


def _names(lists) -> list[str]:
    out: dict[str, None] = {}
    for names in lists:
        for name in names:
            out.setdefault(str(name), None)
    return list(out)


def assemble_sites(members: pd.DataFrame, labels: np.ndarray, footprints: FootprintAreas,
                   cut_m: np.ndarray | float | None = None, with_geometry: bool = True):
    """The sites of one partition of the members: one row per label, in label order.

    Parameters
    ----------
    members : pandas.DataFrame
        The members table (:data:`MEMBER_COLUMNS`; ``kind`` "polygon" or "point", points with ``lon``/``lat``).
    labels : numpy.ndarray
        Site label of each member (int).
    footprints : FootprintAreas
        Polygon geometries by member index, for the unions and their areas.
    cut_m : float or numpy.ndarray, optional
        Cut of each site (scalar, or per member: the cut that made its site).
    with_geometry : bool
        False leaves the polygon sites' geometry null and their ``lon``/``lat`` NaN, and measures only their areas
        (faster).

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`SITE_COLUMNS` in EPSG:4326. Commodities are the linked points' (in order of appearance); the country
        is the majority over the linked points' countries (ties: alphabetical), else over the member polygons',
        else null. The geometry is the union of the member polygons as a MultiPolygon, ``lon``/``lat`` its
        representative point; a site of points only has a null geometry and area, and ``lon``/``lat`` the
        centroid of its points (the point itself for one).
    """
    import geopandas as gpd
    import shapely

    labels = np.asarray(labels)
    kinds = members["kind"].to_numpy()
    ids, sources = members["feature_id"].to_numpy(), members["source"].to_numpy()
    xy = members[["lon", "lat"]].to_numpy(dtype=np.float64)
    countries = members["country"].astype(object).where(members["country"].notna(), None).to_numpy()
    commodities, primary = members["commodities"].to_numpy(), members["primary_commodities"].to_numpy()
    cuts = np.broadcast_to(np.asarray(np.nan if cut_m is None else cut_m, dtype=np.float64), labels.shape)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    rows = []
    for index in np.split(order, bounds) if labels.size else []:
        poly = index[kinds[index] == "polygon"]
        pts = index[kinds[index] == "point"]
        if poly.size:
            key = footprints.key(poly)
            geometry, area = (footprints.geometry(key) if with_geometry else None), footprints.area(key)
            lon, lat = (shapely.get_coordinates(geometry.representative_point())[0] if with_geometry
                        else (np.nan, np.nan))
        else:
            geometry, area = None, np.nan
            lon, lat = xy[pts].mean(axis=0)
        country = majority(countries[pts]) or majority(countries[poly])
        rows.append({
            "site_id": int(labels[index[0]]), "n_polygons": int(poly.size), "n_points": int(pts.size),
            "member_ids": [str(ids[k]) for k in poly], "member_sources": [str(sources[k]) for k in poly],
            "point_ids": [str(ids[k]) for k in pts], "point_sources": [str(sources[k]) for k in pts],
            "commodities": _names(commodities[pts]), "primary_commodities": _names(primary[pts]),
            "country": country, "cut_m": float(cuts[index[0]]), "area_km2": float(area), "lon": float(lon),
            "lat": float(lat), "geometry": geometry,
        })
    table = pd.DataFrame(rows, columns=SITE_COLUMNS).astype(SITE_DTYPES)
    geometry = site_footprints(table["geometry"].to_numpy())
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(geometry, index=table.index, crs="EPSG:4326"))


#: Smallest cut at which sites mode links groups of overlapping or touching polygons as one feature.
ATOM_MIN_CUT_M = 1.0


def polygon_atoms(polygons: Sequence[Any]) -> tuple[np.ndarray, list]:
    """Groups of polygons that overlap or touch (connected components of ``intersects``) and their unions.

    Returns the group of each polygon (groups numbered by their first polygon) and the groups' geometries. A group
    whose union GEOS cannot compute (invalid input) is left as its separate polygons.
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from shapely.errors import GEOSException

    arr = np.empty(len(polygons), dtype=object)
    arr[:] = list(polygons)
    i, j = shapely.STRtree(arr).query(arr, predicate="intersects")
    n = arr.size
    component = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)), directed=False)[1]
    order = np.argsort(component, kind="stable")
    atom_of = np.empty(n, dtype=np.int64)
    atoms: list = []
    for group in np.split(order, np.flatnonzero(np.diff(component[order])) + 1):
        unions = [arr[group[0]]]
        if group.size > 1:
            try:
                unions = [shapely.union_all(arr[group])]
            except GEOSException:
                unions = list(arr[group])
        atom_of[group] = len(atoms) + (np.arange(group.size) if len(unions) > 1 else 0)
        atoms.extend(unions)
    # number the groups in order of their first polygon, as the clustering numbers clusters
    first = np.full(len(atoms), n, dtype=np.int64)
    np.minimum.at(first, atom_of, np.arange(n))
    rank = np.empty(len(atoms), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(atoms))
    reordered: list = [None] * len(atoms)
    for k, geometry in enumerate(atoms):
        reordered[rank[k]] = geometry
    return rank[atom_of], reordered
