"""Writing Cloud-Optimized GeoTIFFs with rasterio's COG driver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine


def overview_count(shape: tuple[int, int], blocksize: int) -> int:
    """Number of 2x overview levels until the image fits one block (at least 1, so every file has overviews)."""
    size, levels = max(shape), 0
    while size > blocksize:
        size = (size + 1) // 2
        levels += 1
    return max(1, levels)


def write_cog(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    epsg: int,
    nodata: float | int,
    resampling: str = "average",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a single-band COG (DEFLATE, horizontal or floating-point predictor, tiled, with overviews).

    Parameters
    ----------
    path : pathlib.Path
        Output file; parent folders are created.
    array : numpy.ndarray
        2-D array; its dtype is the file's.
    transform : affine.Affine
        Pixel-to-CRS transform.
    epsg : int
        EPSG code of the CRS.
    nodata : float or int
        Nodata value written in the file.
    resampling : str
        Overview resampling: ``"average"`` for continuous data, ``"nearest"`` or ``"mode"`` for classes.
    tags : dict, optional
        Dataset metadata tags.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = array.shape
    blocksize = 512 if min(rows, cols) >= 1024 else 256
    predictor = 3 if np.issubdtype(array.dtype, np.floating) else 2
    with rasterio.open(
        path, "w", driver="COG", width=cols, height=rows, count=1, dtype=array.dtype.name,
        crs=f"EPSG:{epsg}", transform=transform, nodata=nodata,
        compress="DEFLATE", predictor=predictor, blocksize=blocksize,
        overview_resampling=resampling, overview_count=overview_count((rows, cols), blocksize),
    ) as ds:
        ds.write(array, 1)
        if tags:
            ds.update_tags(**tags)
    return path
