"""Lazy loading of STAC items onto a grid, with odc-stac (default) or stackstac.

Both loaders open every asset through a reader that signs its href when the file is opened, on the worker
that reads it, so expiring tokens are fresh at read time and never baked into the task graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.loader import RioDriver, RioReader
from odc.stac._mdtools import StacAuxReader, StacMDParser
from stackstac.rio_reader import AutoParallelRioReader

from mtg.pipeline.catalogs import Signing, sign_href
from mtg.pipeline.errors import MtgError

Loader = Literal["odc-stac", "stackstac"]
LOADERS: tuple[str, ...] = ("odc-stac", "stackstac")


def load_assets(
    items: Sequence[pystac.Item],
    assets: Sequence[str],
    geobox: GeoBox,
    *,
    dtype: str,
    nodata: float,
    resampling: dict[str, str],
    chunks: dict[str, int],
    loader: Loader = "odc-stac",
    signing: Signing = "none",
) -> xr.Dataset:
    """Load assets of STAC items as a lazy dataset on ``geobox``, one time step per solar day.

    Parameters
    ----------
    items : sequence of pystac.Item
        Items to load; items of the same solar day are mosaicked (first valid pixel wins).
    assets : sequence of str
        Asset keys; each becomes a variable of the same name.
    geobox : odc.geo.geobox.GeoBox
        Output grid.
    dtype : str
        Output dtype of the raw values (for example ``uint16`` for Sentinel-2 digital numbers).
    nodata : float
        Value of missing pixels in the output.
    resampling : dict
        Resampling method per asset key (``"nearest"``, ``"bilinear"``, ...).
    chunks : dict
        Dask chunk sizes for ``y`` and ``x``, and optionally ``time`` (default 1): larger chunks mean fewer
        tasks, which matters on distributed clusters (about a millisecond of scheduling per task).
    loader : {"odc-stac", "stackstac"}
        The library that builds the graph.
    signing : {"none", "planetary-computer"}
        How hrefs are signed at read time.

    Returns
    -------
    xarray.Dataset
        Variables named by asset, dims ``(time, y, x)``, pixel-centre coordinates, CRS attached.
    """
    missing = sorted({a for it in items for a in assets if a not in it.assets})
    if missing:
        bad = next(it for it in items if any(a not in it.assets for a in assets))
        raise MtgError(
            f"unknown asset(s) {missing} in item {bad.id!r} of collection {bad.collection_id!r}: "
            f"it has {sorted(bad.assets)}"
        )
    if loader == "odc-stac":
        ds = _load_odc(items, assets, geobox, dtype, nodata, resampling, chunks, signing)
    elif loader == "stackstac":
        ds = _load_stackstac(items, assets, geobox, dtype, nodata, resampling, chunks, signing)
    else:
        raise MtgError(f"loader {loader!r} is not one of {list(LOADERS)}")
    return ds.odc.assign_crs(geobox.crs)


# ------------------------------------------------------------------------------------------------ odc-stac
class SigningRioDriver(RioDriver):
    """odc-stac's rasterio driver that signs each href when a worker opens the file."""

    def __init__(self, signing: Signing = "none") -> None:
        super().__init__(md_parser=StacMDParser({}), aux_reader=StacAuxReader())
        self.signing = signing

    def open(self, src, ctx) -> RioReader:  # noqa: ANN001 - odc-loader's interface
        return RioReader(src.patch(uri=sign_href(src.uri, self.signing)), ctx)


def _load_odc(items, assets, geobox, dtype, nodata, resampling, chunks, signing) -> xr.Dataset:
    import odc.stac

    return odc.stac.load(
        items,
        bands=list(assets),
        geobox=geobox,
        chunks={"time": chunks.get("time", 1), "y": chunks["y"], "x": chunks["x"]},
        groupby="solar_day",
        resampling=resampling,
        dtype=dtype,
        nodata=nodata,
        driver=SigningRioDriver(signing),
        fail_on_error=True,
    )


# ------------------------------------------------------------------------------------------------ stackstac
class SigningReader(AutoParallelRioReader):
    """stackstac's reader, signing its href when it is created: inside the read task, on the worker."""

    signing: Signing = "none"

    def __init__(self, *, url: str, **kwargs) -> None:
        super().__init__(url=sign_href(url, self.signing), **kwargs)


class PlanetaryComputerReader(SigningReader):
    """:class:`SigningReader` for Planetary Computer hrefs."""

    signing: Signing = "planetary-computer"


_READERS: dict[str, type[SigningReader]] = {"none": SigningReader, "planetary-computer": PlanetaryComputerReader}


def _load_stackstac(items, assets, geobox, dtype, nodata, resampling, chunks, signing) -> xr.Dataset:
    import stackstac
    from rasterio.enums import Resampling


    epsg = geobox.crs.epsg
    if epsg is None:
        raise MtgError(f"stackstac needs an EPSG code for the output CRS; {geobox.crs} has none")
    res = abs(geobox.resolution.x)
    left, bottom, right, top = geobox.boundingbox
    variables = {}
    for asset in assets:
        arr = stackstac.stack(
            list(items),
            assets=[asset],
            epsg=epsg,
            resolution=res,
            bounds=(left, bottom, right, top),
            snap_bounds=False,
            chunksize=(chunks.get("time", 1), 1, chunks["y"], chunks["x"]),
            resampling=Resampling[resampling.get(asset, resampling.get("*", "nearest"))],
            dtype=np.dtype(dtype),
            fill_value=np.array(nodata, dtype=dtype)[()],
            rescale=False,
            xy_coords="center",
            properties=False,
            band_coords=False,
            reader=_READERS[signing],
        ).isel(band=0, drop=True)
        arr.attrs = {}  # stackstac's RasterSpec and friends; the CRS is attached below as in odc-stac
        variables[asset] = _mosaic_solar_days(arr, items, nodata)
    ds = xr.Dataset(variables)
    return ds.assign_coords(x=geobox.coords["x"].values, y=geobox.coords["y"].values)


def _solar_day(item: pystac.Item) -> np.datetime64:
    """Local solar day of an acquisition: UTC time shifted by the longitude of the item's centre."""
    lon = 0.0 if item.bbox is None else (item.bbox[0] + item.bbox[2]) / 2
    t = np.datetime64(item.datetime.replace(tzinfo=None), "ns") + np.timedelta64(int(lon / 15 * 3600), "s")
    return t.astype("datetime64[D]")


def _mosaic_solar_days(arr: xr.DataArray, items: Sequence[pystac.Item], nodata: float) -> xr.DataArray:
    """Merge the items of each solar day: the first item with a valid pixel wins, as odc-stac does."""
    days = [_solar_day(it) for it in sorted(items, key=lambda it: it.datetime)]
    first_time = {}
    for it, day in zip(sorted(items, key=lambda it: it.datetime), days):
        first_time.setdefault(day, np.datetime64(it.datetime.replace(tzinfo=None), "ns"))
    arr = arr.assign_coords(time=("time", np.array(days, dtype="datetime64[ns]")))
    if len(set(days)) == len(days):
        merged = arr
    else:
        merged = arr.groupby("time").map(lambda g: _first_valid(g, nodata))
    return merged.assign_coords(time=[first_time[np.datetime64(t, "D")] for t in merged["time"].values])


def _first_valid(group: xr.DataArray, nodata: float) -> xr.DataArray:
    out = group.isel(time=0)
    for i in range(1, group.sizes["time"]):
        out = out.where(out != nodata, group.isel(time=i))
    return out
