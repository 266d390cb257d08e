"""A static, self-contained STAC catalog whose collections, items and assets mirror Planetary Computer's
``sentinel-2-l2a`` and ``cop-dem-glo-30``, with relative hrefs to the local COGs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
from shapely.geometry import Polygon, box, mapping
from shapely.ops import transform as transform_geometry

from mtg.pipeline.sample.acquisitions import RELATIVE_ORBIT, earth_sun_factor
from mtg.pipeline.sample.dem import DEM_NODATA, DemEpoch
from mtg.pipeline.sample.region import RegionGrid
from mtg.pipeline.sample.sentinel2 import WrittenScene, band_resolution
from mtg.pipeline.sample.terrain import DEM_RES

CATALOG_ID = "mtg-sample"
S2_COLLECTION = "sentinel-2-l2a"
DEM_COLLECTION = "cop-dem-glo-30"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
]
DEM_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
]
#: Asset titles and ``eo:bands`` exactly as on Planetary Computer items.
S2_ASSETS = {
    "B02": ("Band 2 - Blue - 10m", "blue", "Band 2 - Blue", 0.49, 0.098),
    "B03": ("Band 3 - Green - 10m", "green", "Band 3 - Green", 0.56, 0.045),
    "B04": ("Band 4 - Red - 10m", "red", "Band 4 - Red", 0.665, 0.038),
    "B05": ("Band 5 - Vegetation red edge 1 - 20m", "rededge", "Band 5 - Vegetation red edge 1", 0.704, 0.019),
    "B06": ("Band 6 - Vegetation red edge 2 - 20m", "rededge", "Band 6 - Vegetation red edge 2", 0.74, 0.018),
    "B07": ("Band 7 - Vegetation red edge 3 - 20m", "rededge", "Band 7 - Vegetation red edge 3", 0.783, 0.028),
    "B08": ("Band 8 - NIR - 10m", "nir", "Band 8 - NIR", 0.842, 0.145),
    "B8A": ("Band 8A - Vegetation red edge 4 - 20m", "rededge", "Band 8A - Vegetation red edge 4", 0.865, 0.033),
    "B11": ("Band 11 - SWIR (1.6) - 20m", "swir16", "Band 11 - SWIR (1.6)", 1.61, 0.143),
    "B12": ("Band 12 - SWIR (2.2) - 20m", "swir22", "Band 12 - SWIR (2.2)", 2.19, 0.242),
    "SCL": ("Scene classfication map (SCL)", None, None, None, None),
}


def _eo_bands(key: str) -> list[dict[str, object]] | None:
    """PC's ``eo:bands`` entry of an asset, or None for SCL."""
    _, common, description, centre, fwhm = S2_ASSETS[key]
    if common is None:
        return None
    return [{"name": key, "common_name": common, "description": description, "center_wavelength": centre, "full_width_half_max": fwhm}]


def _s2_asset_fields(key: str) -> dict[str, object]:
    """Fields every item's asset (and the collection's item_assets) carries for ``key``."""
    res = band_resolution(key)
    fields: dict[str, object] = {
        "gsd": float(res),
        "raster:bands": [{"nodata": 0, "data_type": "uint8" if key == "SCL" else "uint16", "spatial_resolution": res}],
    }
    if (bands := _eo_bands(key)) is not None:
        fields["eo:bands"] = bands
    return fields


def _grid_fields(grid: RegionGrid, res: float) -> dict[str, object]:
    """``proj:bbox``, ``proj:shape`` and ``proj:transform`` (PC order) of the grid at ``res``."""
    return {
        "proj:bbox": [float(v) for v in grid.bounds],
        "proj:shape": list(grid.shape(res)),
        "proj:transform": [float(v) for v in tuple(grid.transform(res))[:6]],
    }


def _lonlat(grid: RegionGrid, polygon: Polygon) -> Polygon:
    """A UTM polygon in WGS 84 longitude/latitude, with coordinates rounded like PC's (7 decimals)."""
    def project(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = grid.to_lonlat(x, y)
        return np.round(lon, 7), np.round(lat, 7)

    return transform_geometry(project, polygon.segmentize(grid.size_m / 4))


def _extent(grids: list[RegionGrid], start: datetime, end: datetime) -> pystac.Extent:
    """Collection extent: the lon/lat box of all regions (then each region's box) and the time span."""
    boxes = [list(g.bbox_lonlat) for g in grids]
    overall = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    return pystac.Extent(pystac.SpatialExtent([overall] + (boxes if len(boxes) > 1 else [])),
                         pystac.TemporalExtent([[start, end]]))


def sentinel2_item(grid: RegionGrid, written: WrittenScene) -> pystac.Item:
    """The STAC item of one acquisition, with PC's property names and asset keys."""
    acq, names = written.acquisition, written.names
    footprint = _lonlat(grid, written.footprint)
    properties: dict[str, object] = {
        "platform": acq.platform,
        "proj:epsg": grid.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": grid.mgrs_tile,
        "constellation": "Sentinel 2",
        "s2:product_uri": names.product_uri,
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": names.generation_time,
        "sat:relative_orbit": RELATIVE_ORBIT,
        "s2:mean_solar_zenith": round(acq.solar_zenith, 6),
        "s2:mean_solar_azimuth": round(acq.solar_azimuth, 6),
        "s2:processing_baseline": acq.baseline,
        "s2:reflectance_conversion_factor": round(earth_sun_factor(acq.date), 9),
        **written.statistics,
    }
    item = pystac.Item(
        id=names.item_id,
        geometry=mapping(footprint),
        bbox=[float(v) for v in footprint.bounds],
        datetime=acq.sensing,
        properties=properties,
        stac_extensions=list(S2_EXTENSIONS),
        collection=S2_COLLECTION,
    )
    for key, path in written.assets.items():
        item.add_asset(key, pystac.Asset(
            href=str(path),
            title=S2_ASSETS[key][0],
            media_type=COG_TYPE,
            roles=["data"],
            extra_fields={**_grid_fields(grid, band_resolution(key)), **_s2_asset_fields(key),
                          "file:size": Path(path).stat().st_size},
        ))
    return item


def dem_item(grid: RegionGrid, epoch: DemEpoch, path: Path) -> pystac.Item:
    """The STAC item of one DEM epoch: PC's ``cop-dem-glo-30`` layout, on the sample's UTM grid."""
    footprint = _lonlat(grid, box(*grid.bounds))
    item = pystac.Item(
        id=dem_item_id(grid, epoch.label),
        geometry=mapping(footprint),
        bbox=[float(v) for v in footprint.bounds],
        datetime=datetime(epoch.day.year, epoch.day.month, epoch.day.day, tzinfo=timezone.utc),
        properties={"gsd": int(DEM_RES), "platform": "TanDEM-X", "proj:epsg": grid.epsg,
                    **{k: v for k, v in _grid_fields(grid, DEM_RES).items() if k != "proj:bbox"}},
        stac_extensions=list(DEM_EXTENSIONS),
        collection=DEM_COLLECTION,
    )
    item.add_asset("data", pystac.Asset(
        href=str(path),
        title=grid.dem_tile,
        media_type=COG_TYPE,
        roles=["data"],
        extra_fields={"raster:bands": [{"nodata": DEM_NODATA, "data_type": "float32",
                                        "spatial_resolution": int(DEM_RES), "unit": "metre"}],
                      "file:size": Path(path).stat().st_size},
    ))
    return item


def dem_item_id(grid: RegionGrid, label: str) -> str:
    """PC-style DEM item id with an epoch suffix, e.g. ``Copernicus_DSM_COG_10_S24_00_E119_00_DEM_2021``."""
    return f"Copernicus_DSM_COG_10_{grid.dem_tile}_DEM_{label}"


def sentinel2_collection(grids: list[RegionGrid], items: list[pystac.Item]) -> pystac.Collection:
    """The ``sentinel-2-l2a`` collection with PC's item_assets and summaries, its extent taken from the items."""
    times = [it.datetime for it in items if it.datetime is not None]
    collection = pystac.Collection(
        id=S2_COLLECTION,
        title="Sentinel-2 Level-2A",
        description="Synthetic Sentinel-2 L2A scenes of the mine-the-gap sample region, laid out like the "
                    "Planetary Computer sentinel-2-l2a collection (COGs, uint16 DNs, BOA_ADD_OFFSET -1000 from "
                    "processing baseline 04.00).",
        extent=_extent(grids, min(times), max(times)),
        license="proprietary",
        keywords=["Sentinel", "Copernicus", "ESA", "Satellite", "Global", "Imagery", "Reflectance"],
        stac_extensions=[
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        summaries=pystac.Summaries({
            "gsd": [10, 20],
            "eo:bands": [{"gsd": band_resolution(k), **(_eo_bands(k) or [{}])[0]} for k in S2_ASSETS if k != "SCL"],
            "platform": ["Sentinel-2A", "Sentinel-2B"],
            "instruments": ["msi"],
            "constellation": ["sentinel-2"],
        }),
    )
    collection.item_assets = {
        key: pystac.ItemAssetDefinition.create(
            title=S2_ASSETS[key][0], description=None, media_type=COG_TYPE, roles=["data"], extra_fields=_s2_asset_fields(key)
        )
        for key in S2_ASSETS
    }
    collection.add_items(items)
    return collection


def dem_collection(grids: list[RegionGrid], items: list[pystac.Item]) -> pystac.Collection:
    """The ``cop-dem-glo-30`` collection of the two DEM epochs."""
    times = [it.datetime for it in items if it.datetime is not None]
    collection = pystac.Collection(
        id=DEM_COLLECTION,
        title="Copernicus DEM GLO-30",
        description="Synthetic 30 m DEMs of the mine-the-gap sample region at two epochs, laid out like the "
                    "Planetary Computer cop-dem-glo-30 collection but on the sample's UTM grid.",
        extent=_extent(grids, min(times), max(times)),
        license="proprietary",
        keywords=["Copernicus", "DEM", "DSM", "Elevation"],
        stac_extensions=[
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        summaries=pystac.Summaries({"gsd": [30], "platform": ["TanDEM-X"]}),
    )
    collection.item_assets = {
        "data": pystac.ItemAssetDefinition.create(
            title="Data", description=None, media_type=COG_TYPE, roles=["data"],
            extra_fields={"raster:bands": [{"nodata": DEM_NODATA, "data_type": "float32", "spatial_resolution": int(DEM_RES), "unit": "metre"}]},
        )
    }
    collection.add_items(items)
    return collection


#: Title and description of the single sample region's catalog.
REGION_TEXT = ("mine-the-gap sample region",
               "A deterministic synthetic mining region near Newman, Western Australia: Sentinel-2 L2A time series "
               "and two DEM epochs, with ground truth under truth/.")


def write_catalog(root: Path, grids: list[RegionGrid], s2_items: list[pystac.Item], dem_items: list[pystac.Item],
                  text: tuple[str, str] = REGION_TEXT) -> Path:
    """Assemble and save the self-contained catalog under ``root``; returns the path of ``catalog.json``.

    Items land at ``root/<collection>/<item id>/<item id>.json``, next to their COGs, with relative hrefs;
    ``grids`` are the regions the items cover (one for the sample region, one per district for the sample world),
    ``text`` the catalog's title and description.
    """
    catalog = pystac.Catalog(id=CATALOG_ID, title=text[0], description=text[1])
    catalog.add_child(sentinel2_collection(grids, s2_items))
    catalog.add_child(dem_collection(grids, dem_items))
    # A trailing slash tells pystac that root is a folder even when its name has a dot in it.
    catalog.normalize_hrefs(str(root.resolve()) + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
