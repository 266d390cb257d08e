"""The common output grid of an ingest: one CRS and extent for reflectance and DEM, with nesting pixel sizes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pystac
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box

from mtg.pipeline.errors import MtgError


def item_epsg(item: pystac.Item) -> int | None:
    """EPSG code of an item's native grid from ``proj:epsg`` or ``proj:code`` (STAC projection extension)."""
    props = item.properties
    if props.get("proj:epsg") is not None:
        return int(props["proj:epsg"])
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone that holds a point."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def choose_crs(items: Sequence[pystac.Item], aoi: Geometry, crs: str | None) -> CRS:
    """The output CRS: the one asked for, else the most common native CRS of the items, else the AOI's UTM zone."""
    if crs:
        try:
            return CRS(crs)
        except Exception as err:  # pyproj raises several types for unknown CRS strings
            raise MtgError(f"crs {crs!r} is not a CRS that pyproj knows: {err}") from None
    codes = Counter(c for c in (item_epsg(it) for it in items) if c is not None)
    if codes:
        return CRS(f"EPSG:{codes.most_common(1)[0][0]}")
    centre = aoi.to_crs("EPSG:4326").centroid.coords[0]
    return CRS(f"EPSG:{utm_epsg(*centre)}")


def common_grids(aoi: Geometry, crs: CRS, resolution: float, dem_resolution: float) -> tuple[GeoBox, GeoBox]:
    """Reflectance and DEM grids over one extent, the extent snapped outward to both pixel sizes.

    Parameters
    ----------
    aoi : odc.geo.geom.Geometry
        Area of interest in any CRS.
    crs : odc.geo.CRS
        Output CRS; a projected CRS in metres.
    resolution, dem_resolution : float
        Pixel sizes of the reflectance and DEM grids, in the units of ``crs``; the larger must be a whole
        multiple of the smaller so that DEM pixels nest reflectance pixels exactly.

    Returns
    -------
    (GeoBox, GeoBox)
        The reflectance grid and the DEM grid, with the same bounds.
    """
    if crs.geographic:
        raise MtgError(
            f"crs {crs} is geographic (degrees) but resolutions {resolution} and {dem_resolution} are metres: "
            "choose a projected CRS such as a UTM zone"
        )
    coarse, fine = max(resolution, dem_resolution), min(resolution, dem_resolution)
    if fine <= 0 or abs(coarse / fine - round(coarse / fine)) > 1e-9:
        raise MtgError(
            f"dem_resolution {dem_resolution} and resolution {resolution} must be positive and one a whole "
            "multiple of the other"
        )
    b = aoi.to_crs(crs).boundingbox
    snapped = (
        math.floor(b.left / coarse) * coarse,
        math.floor(b.bottom / coarse) * coarse,
        math.ceil(b.right / coarse) * coarse,
        math.ceil(b.top / coarse) * coarse,
    )
    if snapped[2] <= snapped[0] or snapped[3] <= snapped[1]:
        raise MtgError(f"the area of interest {b} is empty in {crs}")
    return (
        GeoBox.from_bbox(snapped, crs, resolution=resolution, tight=True),
        GeoBox.from_bbox(snapped, crs, resolution=dem_resolution, tight=True),
    )


def bbox_geometry(bbox: Sequence[float]) -> Geometry:
    """A lon/lat bbox ``(min_lon, min_lat, max_lon, max_lat)`` as a geometry, checked for plausibility."""
    if len(bbox) != 4:
        raise MtgError(f"bbox needs 4 numbers min_lon,min_lat,max_lon,max_lat; got {list(bbox)}")
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise MtgError(f"bbox {list(bbox)} must be four finite numbers min_lon,min_lat,max_lon,max_lat")
    if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
        raise MtgError(
            f"bbox {list(bbox)} is not in longitude/latitude degrees (it looks like projected coordinates): "
            "give min_lon,min_lat,max_lon,max_lat in EPSG:4326, or an --aoi file in any CRS"
        )
    if x0 >= x1 or y0 >= y1:
        raise MtgError(f"bbox {list(bbox)} is empty: min_lon < max_lon and min_lat < max_lat are needed")
    return box(x0, y0, x1, y1, "EPSG:4326")


def aoi_geometry(path: str) -> Geometry:
    """The union of the features of a vector file (GeoJSON, GeoPackage, GeoParquet, ...) as one geometry."""
    from mtg.pipeline.io import read_vector

    frame = read_vector(path, "AOI file", crs=None)
    if frame.empty:
        raise MtgError(f"the AOI file {path} holds no features")
    return Geometry(frame.geometry.union_all(), crs=str(frame.crs.to_wkt()))
