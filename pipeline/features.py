"""Model inputs from a reflectance cube: a latest-clear-view composite of six bands, plus NDVI, NDWI and BSI.

The bands are those that Sentinel-2 L2A has at 10 m (B02, B03, B04, B08) and the two SWIR bands at 20 m (B11,
B12), which the ingest resamples to 10 m: the red-edge bands are left out so that scenes with only these six
(such as the real Patagonia subset in ``../shared/data``) can be mapped too.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from array_api_compat import array_namespace

from mtg.kernels.composite import latest_valid
from mtg.kernels.spectral_indices import bare_soil_index, normalized_difference
from mtg.pipeline.errors import MtgError

MODEL_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
INDICES = ("NDVI", "NDWI", "BSI")
CHANNELS = MODEL_BANDS + INDICES
COMPOSITE = "latest valid observation per pixel (all six bands finite on the same date)"


def composite(ds: xr.Dataset, bands: tuple[str, ...] = MODEL_BANDS, source: str = "the cube") -> xr.DataArray:
    """The latest clear view of every pixel, lazily: ``(band, y, x)`` float32, NaN where never clear.

    Parameters
    ----------
    ds : xarray.Dataset
        Reflectance with one variable per band, dims ``(time, y, x)`` or ``(y, x)`` (a single scene).
    bands : tuple of str
        Variables to use, in order.
    source : str
        Name of the cube in error messages.

    Raises
    ------
    MtgError
        When a band is missing or has other dimensions.
    """
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise MtgError(f"{source} lacks the band(s) {missing} that the model needs; it has {sorted(ds.data_vars)}")
    for b in bands:
        if set(ds[b].dims) - {"time"} != {"y", "x"}:
            raise MtgError(f"{source}: band {b} has dims {ds[b].dims}; expected (time, y, x) or (y, x)")
    stack = ds[list(bands)].to_dataarray("band")
    if "time" not in stack.dims:
        stack = stack.expand_dims("time")
    stack = stack.transpose("time", "band", "y", "x")
    data = da.asarray(stack.data).astype(np.float32)
    data = data.rechunk({0: -1, 1: -1})
    out = da.map_blocks(latest_valid, data, drop_axis=0, dtype=np.float32,
                        meta=np.empty((0, 0, 0), dtype=np.float32))
    coords = {k: v for k, v in ds.coords.items() if set(v.dims) <= {"y", "x"}}
    return xr.DataArray(out, dims=("band", "y", "x"), coords={**coords, "band": list(bands)})


def input_channels(bands):
    """Model input channels from the composite bands: the six reflectances, then NDVI, NDWI and BSI.

    Parameters
    ----------
    bands : array
        ``(6, ...)`` reflectance in :data:`MODEL_BANDS` order (numpy, CuPy, dask or torch-free arrays).

    Returns
    -------
    array
        ``(9, ...)`` float32 in :data:`CHANNELS` order.
    """
    xp = array_namespace(bands)
    blue, green, red, nir, swir1 = (bands[i, ...] for i in range(5))
    indices = [normalized_difference(nir, red), normalized_difference(green, nir),
               bare_soil_index(blue, red, nir, swir1)]
    return xp.concat([bands, xp.stack(indices)], axis=0)


def model_channels(ds: xr.Dataset, source: str = "the cube") -> xr.DataArray:
    """:func:`input_channels` of the :func:`composite` of ``ds``, lazily: ``(channel, y, x)`` float32."""
    comp = composite(ds, source=source)
    data = comp.data.map_blocks(input_channels, chunks=((len(CHANNELS),), *comp.data.chunks[1:]), dtype=np.float32,
                                meta=np.empty((0, 0, 0), dtype=np.float32))
    coords = {k: v for k, v in comp.coords.items() if k != "band"}
    return xr.DataArray(data, dims=("channel", "y", "x"), coords={**coords, "channel": list(CHANNELS)})
