"""Training labels: mine polygons read into the cube's CRS and burnt into a class raster on its grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from mtg.pipeline.errors import MtgError

#: Classes of the mine features in the labels' ``feature_type`` (Maus et al. 2022 have one class, "mine").
FEATURE_CLASSES = ("pit", "dump", "tailings", "other")
BACKGROUND = "background"


def read_labels(path: str | Path, crs, class_column: str | None = "feature_type"):
    """Mine polygons of a vector file in ``crs``, with the class list they carry.

    Parameters
    ----------
    path : str or Path
        GeoParquet, GeoPackage or any file GDAL reads, with a CRS.
    crs : any
        Target CRS (the cube's).
    class_column : str or None
        Column with the feature type of each polygon (one of :data:`FEATURE_CLASSES`). When None or absent
        from the file, every polygon is one class, ``mine``.

    Returns
    -------
    (geopandas.GeoDataFrame, list of str)
        Polygons with an integer ``class_code`` column (1..), and the class names by code (0 = background).

    Raises
    ------
    MtgError
        Naming the file and the row or value at fault.
    """
    from mtg.pipeline.io import read_vector

    path = Path(path)
    frame = read_vector(path, "labels file", crs=None)
    types = frame.geometry.geom_type.to_numpy()
    bad = np.flatnonzero(~np.isin(types, ["Polygon", "MultiPolygon"]))
    if bad.size:
        raise MtgError(f"labels file {path}: row {bad[0]} is a {types[bad[0]]}, not a Polygon")
    frame = frame.to_crs(crs)
    if class_column and class_column in frame.columns:
        values = frame[class_column].astype(str)
        unknown = sorted(set(values) - set(FEATURE_CLASSES))
        if unknown:
            raise MtgError(f"labels file {path}: column {class_column!r} has value(s) {unknown}; allowed are "
                           f"{list(FEATURE_CLASSES)}")
        classes = [BACKGROUND, *FEATURE_CLASSES]
        frame["class_code"] = values.map({c: i + 1 for i, c in enumerate(FEATURE_CLASSES)}).astype(np.uint8)
    else:
        classes = [BACKGROUND, "mine"]
        frame["class_code"] = np.uint8(1)
    return frame, classes


def rasterise_labels(frame, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """Class codes of the polygons on a grid (pixel centres inside a polygon), 0 elsewhere; uint8 ``shape``."""
    from rasterio.features import rasterize

    if frame.empty:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(zip(frame.geometry, frame["class_code"].astype(int)), out_shape=shape, transform=transform,
                     fill=0, dtype="uint8")
