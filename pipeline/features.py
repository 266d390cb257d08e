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
#: The bands each index needs.
INDEX_BANDS = {"NDVI": ("B08", "B04"), "NDWI": ("B03", "B08"), "BSI": ("B02", "B04", "B08", "B11")}
#: Bands a model may declare (``mtg train --bands``): Sentinel-2 L2A bands at 10 and 20 m.
KNOWN_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
COMPOSITE = "latest valid observation per pixel (all of the model's bands finite on the same date)"


def indices_for(bands: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The indices of :data:`INDICES` that ``bands`` can compute, in that order."""
    return tuple(name for name in INDICES if set(INDEX_BANDS[name]) <= set(bands))


def parse_bands(text: str) -> tuple[str, ...]:
    """Model bands from ``B02,B03,B04``: known, distinct, in the given order.

    Raises
    ------
    MtgError
        Naming an unknown or repeated band.
    """
    bands = tuple(b.strip().upper() for b in text.split(",") if b.strip())
    unknown = [b for b in bands if b not in KNOWN_BANDS]
    if not bands or unknown or len(set(bands)) != len(bands):
        raise MtgError(f"--bands {text!r}: give distinct bands of {list(KNOWN_BANDS)}"
                       + (f"; unknown {unknown}" if unknown else ""))
    return bands


def composite(ds: xr.Dataset, bands: tuple[str, ...] = MODEL_BANDS, source: str = "the cube",
              model: str = "the model") -> xr.DataArray:
    """The latest clear view of every pixel, lazily: ``(band, y, x)`` float32, NaN where never clear.

    Parameters
    ----------
    ds : xarray.Dataset
        Reflectance with one variable per band, dims ``(time, y, x)`` or ``(y, x)`` (a single scene).
    bands : tuple of str
        Variables to use, in order.
    source, model : str
        Names of the cube and of the model in error messages.

    Raises
    ------
    MtgError
        When a band is missing or has other dimensions.
    """
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise MtgError(f"{source} lacks the band(s) {missing} that {model} needs; it has {sorted(ds.data_vars)}")
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


def input_channels(bands, names: tuple[str, ...] | list[str] = MODEL_BANDS,
                   indices: tuple[str, ...] | list[str] = INDICES):
    """Model input channels from the composite bands: the reflectances, then the ``indices``.

    Parameters
    ----------
    bands : array
        ``(len(names), ...)`` reflectance (numpy, CuPy, dask or other array-API arrays).
    names : sequence of str
        The bands of ``bands``, in order.
    indices : sequence of str
        Indices to append, each computable from ``names`` (:data:`INDEX_BANDS`).

    Returns
    -------
    array
        ``(len(names) + len(indices), ...)`` float32: the bands then the indices.
    """
    xp = array_namespace(bands)
    band = {name: bands[i, ...] for i, name in enumerate(names)}
    formulas = {"NDVI": lambda: normalized_difference(band["B08"], band["B04"]),
                "NDWI": lambda: normalized_difference(band["B03"], band["B08"]),
                "BSI": lambda: bare_soil_index(band["B02"], band["B04"], band["B08"], band["B11"])}
    if not indices:
        return bands
    return xp.concat([bands, xp.stack([formulas[name]() for name in indices])], axis=0)


def model_channels(ds: xr.Dataset, source: str = "the cube", bands: tuple[str, ...] | list[str] = MODEL_BANDS,
                   indices: tuple[str, ...] | list[str] = INDICES, model: str = "the model") -> xr.DataArray:
    """:func:`input_channels` of the :func:`composite` of ``bands`` of ``ds``, lazily: ``(channel, y, x)`` float32.

    Raises
    ------
    MtgError
        When ``ds`` lacks one of ``bands`` (one line naming them), or an index is unknown or lacks its bands.
    """
    bad = [i for i in indices if i not in INDEX_BANDS or not set(INDEX_BANDS[i]) <= set(bands)]
    if bad:
        raise MtgError(f"indices {bad} cannot be computed from bands {list(bands)} (known indices and their bands: "
                       f"{INDEX_BANDS})")
    comp = composite(ds, bands=tuple(bands), source=source, model=model)
    names = [*bands, *indices]
    data = comp.data.map_blocks(input_channels, tuple(bands), tuple(indices),
                                chunks=((len(names),), *comp.data.chunks[1:]), dtype=np.float32,
                                meta=np.empty((0, 0, 0), dtype=np.float32))
    coords = {k: v for k, v in comp.coords.items() if k != "band"}
    return xr.DataArray(data, dims=("channel", "y", "x"), coords={**coords, "channel": names})
