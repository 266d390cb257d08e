"""Mine-footprint polygons from a probability raster: threshold, connected areas, minimum area, simplification."""

from __future__ import annotations

import numpy as np
from affine import Affine
from scipy import ndimage

FOOTPRINT_COLUMNS = ["polygon_id", "feature_type", "mean_probability", "max_probability", "n_pixels", "area_m2",
                     "geometry"]


def footprint_polygons(probability: np.ndarray, feature_class: np.ndarray, classes: list[str], transform: Affine,
                       crs, *, threshold: float, min_area_m2: float, simplify_m: float):
    """Polygons of the connected areas (4-connected pixels) where the mining probability reaches ``threshold``.

    Parameters
    ----------
    probability : numpy.ndarray
        ``(y, x)`` mining probability, NaN where unknown.
    feature_class : numpy.ndarray
        ``(y, x)`` class codes (indices into ``classes``; 0 = not mining).
    classes : list of str
        Class names by code.
    transform : affine.Affine
        Pixel grid of the rasters.
    crs : any
        CRS of ``transform`` (a pyproj/rasterio CRS or string).
    threshold : float
        Probability from which a pixel counts as mining.
    min_area_m2 : float
        Connected areas smaller than this (in pixels x pixel area) are dropped.
    simplify_m : float
        Douglas-Peucker tolerance in CRS units (topology preserved); 0 keeps the pixel edges.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per area: ``polygon_id`` (from 1), ``feature_type`` (the dominant class of its pixels),
        ``mean_probability``, ``max_probability``, ``n_pixels``, ``area_m2`` (of the simplified polygon) and
        ``geometry``, in ``crs``, largest first.
    """
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    mask = np.nan_to_num(probability, nan=0.0) >= threshold
    labels, n = ndimage.label(mask)
    if n == 0:
        return gpd.GeoDataFrame({c: [] for c in FOOTPRINT_COLUMNS[:-1]}, geometry=[], crs=crs)
    index = np.arange(1, n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    keep = counts * pixel_area >= min_area_m2
    kept = index[keep]
    prob = np.where(mask, probability, 0.0)
    means = np.asarray(ndimage.mean(prob, labels, kept), dtype=np.float64).reshape(-1)
    maxima = np.asarray(ndimage.maximum(prob, labels, kept), dtype=np.float64).reshape(-1)
    n_classes = len(classes)
    votes = np.bincount((labels.astype(np.int64) * n_classes + feature_class).ravel()[mask.ravel()],
                        minlength=(n + 1) * n_classes).reshape(n + 1, n_classes)
    votes[:, 0] = -1  # a mining area's type is its most common mining class
    dominant = votes.argmax(axis=1)
    pieces: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=np.isin(labels, kept), transform=transform,
                              connectivity=4):
        pieces.setdefault(int(value), []).append(shape(geom))
    geoms = {}
    for value, parts in pieces.items():
        poly = parts[0] if len(parts) == 1 else unary_union(parts)
        geoms[value] = poly.simplify(simplify_m, preserve_topology=True) if simplify_m > 0 else poly
    frame = gpd.GeoDataFrame({
        "feature_type": [classes[dominant[k]] for k in kept],
        "mean_probability": means.astype(np.float32),
        "max_probability": maxima.astype(np.float32),
        "n_pixels": counts[keep].astype(np.int64),
    }, geometry=[geoms[int(k)] for k in kept], crs=crs)
    frame["area_m2"] = frame.geometry.area
    frame = frame.sort_values("area_m2", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "polygon_id", np.arange(1, len(frame) + 1, dtype=np.int64))
    return frame[FOOTPRINT_COLUMNS]
