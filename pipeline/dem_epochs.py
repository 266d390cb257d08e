"""DEM epochs named as a catalog's collections or as files, for volumes over an area of interest.

A DEM epoch is given as one of:

* a DEM collection id defined in ``catalogs/collections`` (``nasadem``, ``cop-dem-glo-30``, ``alos-dem``),
  searched in the run's catalog over the area of interest and mosaicked lazily at the collection's resolution on
  the UTM grid of the area (``cop-dem-glo-30#1``: the second epoch when the catalog holds several); its vertical
  datum and acquisition span come from the collection definition;
* anything :func:`mtg.pipeline.dem_inputs.read_dem` reads (GeoTIFF/COG, Zarr ``URL#EPOCH``, STAC item, kerchunk
  references), with an optional vertical datum the file itself cannot say.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np
from odc.geo.geom import Geometry
from rasterio.crs import CRS

from mtg.pipeline.catalogs import CatalogSource, DemCollection, known_collections, load_collection, search_items
from mtg.pipeline.dem_inputs import Dem, pick_epoch, read_dem
from mtg.pipeline.errors import MtgError

log = logging.getLogger(__name__)


def dem_collection(spec: str) -> DemCollection | None:
    """The DEM collection a spec names (``nasadem``, ``cop-dem-glo-30#0``), or None when it names a file."""
    name = spec.partition("#")[0]
    if name not in known_collections():
        return None
    collection = load_collection(name)
    if not isinstance(collection, DemCollection):
        raise MtgError(f"collection {name!r} is not a DEM collection (it is {collection.kind})")
    return collection


def _grid(aoi: Geometry, resolution: float, crs: str | None):
    from odc.geo.geobox import GeoBox

    from mtg.pipeline.grid import utm_epsg

    if crs is None:
        centre = aoi.to_crs("EPSG:4326").centroid.coords[0]
        crs = f"EPSG:{utm_epsg(*centre)}"
    b = aoi.to_crs(crs).boundingbox
    snapped = tuple(float(v) for v in (np.floor(b.left / resolution) * resolution,
                                       np.floor(b.bottom / resolution) * resolution,
                                       np.ceil(b.right / resolution) * resolution,
                                       np.ceil(b.top / resolution) * resolution))
    return GeoBox.from_bbox(snapped, crs, resolution=resolution, tight=True)


def collection_epoch(source: CatalogSource, collection: DemCollection, aoi: Geometry, *, pick: str = "",
                     crs: str | None = None, time: str | None = None,
                     storage_options: dict[str, Any] | None = None) -> Dem:
    """One epoch of a DEM collection over ``aoi``: a lazy mosaic of its items at the collection's resolution.

    Parameters
    ----------
    source : CatalogSource
        The catalog to search.
    collection : DemCollection
        The collection's definition (asset, resolution, nodata, vertical datum, epoch).
    aoi : odc.geo.geom.Geometry
        Area of interest (any CRS).
    pick : str
        Index (``0``, ``-1``) or date (``2014-01-01``) of the epoch when the catalog holds several solar days.
    crs : str, optional
        Grid CRS; default the UTM zone of the area's centre.
    time : str, optional
        ``START/END`` of the items.
    storage_options : dict, optional
        fsspec options of a static catalog on object storage.

    Raises
    ------
    MtgError
        When nothing covers the area, or several epochs do and none was picked.
    """
    from mtg.pipeline.loaders import load_assets

    bbox = tuple(aoi.to_crs("EPSG:4326").boundingbox)
    items = search_items(source, collection.id, bbox, time, storage_options)
    grid = _grid(aoi, collection.resolution, crs)
    raw = load_assets(items, [collection.asset], grid, dtype="float32", nodata=np.nan,
                      resampling={"*": "bilinear"}, chunks={"y": 2048, "x": 2048}, signing=source.signing)
    elevation = raw[collection.asset]
    dates = [str(t)[:10] for t in elevation["time"].values]
    k = pick_epoch(dates, pick, collection.id, f"catalog {source.url} over the area")
    values = elevation.isel(time=k).data
    values = da.where(values == np.float32(collection.nodata), np.float32(np.nan), values)
    log.info("%s: %d item(s) of %s on a %g m grid in %s (heights above %s)", collection.id, len(items), dates[k],
             collection.resolution, grid.crs, collection.vertical_datum)
    return Dem(values=values.astype(np.float32), transform=grid.affine, crs=CRS.from_user_input(str(grid.crs)),
               source=f"{collection.id} ({source.url})", date=dates[k], vertical_datum=collection.vertical_datum)


def dem_epoch(spec: str, *, source: CatalogSource | None = None, aoi: Geometry | None = None,
              datum: str | None = None, time: str | None = None,
              storage_options: dict[str, Any] | None = None) -> Dem:
    """One DEM epoch from a collection id of ``source`` or from a file (module docstring).

    Parameters
    ----------
    spec : str
        ``COLLECTION[#EPOCH]`` or a DEM file/URL.
    source, aoi : optional
        The catalog and area of interest, needed for a collection.
    datum : str, optional
        Vertical datum of a file (``EPSG:5773``, ``EPSG:3855``, ``ellipsoid``); a collection declares its own.
    time : str, optional
        ``START/END`` of a collection's items.
    storage_options : dict, optional
        fsspec options for remote files and static catalogs.
    """
    collection = dem_collection(spec)
    if collection is None:
        dem = read_dem(spec, storage_options)
        return replace(dem, vertical_datum=datum) if datum else dem
    if source is None or aoi is None:
        raise MtgError(f"DEM {spec!r} names a collection: give the catalog (--catalog) to search it, and sites or an "
                       "area of interest")
    if datum and datum != collection.vertical_datum:
        raise MtgError(f"collection {collection.id} declares heights above {collection.vertical_datum}; the datum "
                       f"{datum!r} given for it would contradict its definition")
    return collection_epoch(source, collection, aoi, pick=spec.partition("#")[2], time=time,
                            storage_options=storage_options)
