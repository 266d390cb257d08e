"""Volumes between two DEM collections of different vertical datums and resolutions, on a made-up case with a
known answer: `mtg volume --catalog ... --before nasadem --after cop-dem-glo-30`, run as a user would.

A static STAC catalog holds a NASADEM-like epoch (1 arcsecond, heights above EGM96) and a Copernicus-like epoch
(3 arcseconds, heights above EGM2008) of the same ellipsoidal terrain near 10 E 45 N, the later one with a pit of
known volume. The geoids are made-up PROJ grids of known undulation (those of ``test_vertical_datum``), found by
PROJ in the command's user data folder (``PROJ_USER_WRITABLE_DIRECTORY``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import shapely
import xarray as xr
from pyproj import Transformer
from rasterio.transform import from_origin

from test_vertical_datum import _grids_installed, _write_grid, n08, n96

MTG = str(Path(sys.executable).parent / "mtg")
LON0, LAT0 = 10.0, 45.0  # centre of the area
PIT_RADIUS_M, PIT_DEPTH_M = 600.0, 30.0
UTM = "EPSG:32632"
_to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
X0, Y0 = _to_utm.transform(LON0, LAT0)


def ellipsoidal_terrain(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Hills (slopes of a few degrees) in ellipsoidal heights, as a function of UTM metres from the centre."""
    x, y = _to_utm.transform(lon, lat)
    x, y = x - X0, y - Y0
    return 500.0 + 80.0 * np.sin(x / 1500.0) * np.cos(y / 1100.0) + 0.05 * x


def _write_epoch(path: Path, arcsec: float, geoid, pit: bool) -> None:
    res = arcsec / 3600.0
    west, north = LON0 - 0.1, LAT0 + 0.06
    width, height = round(0.2 / res), round(0.12 / res)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    lon, lat = west + cols * res, north - rows * res
    heights = ellipsoidal_terrain(lon, lat) - geoid(lon, lat)  # orthometric heights above that geoid
    if pit:
        x, y = _to_utm.transform(lon, lat)
        heights = heights - PIT_DEPTH_M * (np.hypot(x - X0, y - Y0) < PIT_RADIUS_M)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(west, north, res, res), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate") as dst:
        dst.write(heights.astype(np.float32), 1)


def _catalog(root: Path) -> Path:
    catalog = pystac.Catalog("dem-pair", "two DEM collections of one area")
    bbox = [LON0 - 0.1, LAT0 - 0.06, LON0 + 0.1, LAT0 + 0.06]
    footprint = shapely.geometry.mapping(shapely.box(*bbox))
    for cid, asset, arcsec, geoid, pit, when in (
            ("nasadem", "elevation", 1.0, n96, False, "2000-02-15"),
            ("cop-dem-glo-30", "data", 3.0, n08, True, "2014-01-01")):
        folder = root / cid
        folder.mkdir(parents=True)
        _write_epoch(folder / f"{cid}.tif", arcsec, geoid, pit)
        collection = pystac.Collection(cid, cid, pystac.Extent(pystac.SpatialExtent([bbox]),
                                                               pystac.TemporalExtent([[None, None]])))
        item = pystac.Item(f"{cid}-tile", footprint, bbox, pystac.utils.str_to_datetime(when + "T00:00:00Z"),
                           {"proj:epsg": 4326})
        item.add_asset(asset, pystac.Asset(str(folder / f"{cid}.tif"), media_type=pystac.MediaType.COG,
                                           roles=["data"]))
        collection.add_item(item)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


@pytest.fixture(scope="module")
def dem_pair(tmp_path_factory):
    if _grids_installed():
        pytest.skip("real EGM96/EGM2008 grids are installed here; the made-up ones would not be used")
    root = tmp_path_factory.mktemp("dem-pair")
    proj = root / "proj"
    proj.mkdir()
    _write_grid(proj / "us_nga_egm96_15.tif", n96)
    _write_grid(proj / "us_nga_egm08_25.tif", n08)
    site = shapely.Point(X0, Y0).buffer(900.0)
    gpd.GeoDataFrame({"site_id": ["pit"]}, geometry=[site], crs=UTM).to_crs("EPSG:4326").to_file(
        root / "sites.gpkg")
    return root, _catalog(root / "stac"), proj


def _volume(root: Path, catalog: Path, proj: Path | None, out: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJ_USER_WRITABLE_DIRECTORY": str(proj or root / "no-grids")}
    return subprocess.run([MTG, "volume", "--catalog", str(catalog), "--before", "nasadem", "--after",
                           "cop-dem-glo-30", "--sites", str(root / "sites.gpkg"), "-o", str(root / out),
                           "--threshold-m", "1", "--quiet", *extra], capture_output=True, text=True, env=env,
                          timeout=600)


def _corner_difference(dh: xr.DataArray) -> float:
    """dh at the east edge minus dh at the west edge, at the centre row (medians of 20-cell strips)."""
    row = dh.isel(y=slice(dh.sizes["y"] // 2 - 10, dh.sizes["y"] // 2 + 10)).values
    return float(np.nanmedian(row[:, -40:-20]) - np.nanmedian(row[:, 20:40]))


@pytest.mark.slow
def test_volumes_between_collections_of_different_datums_and_resolutions(dem_pair):
    root, catalog, proj = dem_pair
    proc = _volume(root, catalog, proj, "converted")
    assert proc.returncode == 0, proc.stderr
    volumes = gpd.read_parquet(root / "converted" / "site_volumes.parquet")
    truth = np.pi * PIT_RADIUS_M ** 2 * PIT_DEPTH_M
    assert volumes["excavated_m3"].iloc[0] == pytest.approx(truth, rel=0.03)
    assert volumes["deposited_m3"].iloc[0] < 0.01 * truth
    report = json.loads((root / "converted" / "coregistration.json").read_text())
    assert report["vertical_datums"]["converted"] is True
    assert abs(report["stable_median_m"]) < 0.05 and report["stable_nmad_m"] < 0.1
    dh = xr.open_zarr(root / "converted" / "dh.zarr")["dh"]
    assert abs(_corner_difference(dh)) < 0.15  # no geoid tilt left

    # the same pair with the datums ignored (and not co-registered, whose shift would absorb part of it) keeps the
    # geoids' difference as false change across the area
    proc = _volume(root, catalog, proj, "ignored", "--datum-policy", "assume-same", "--no-coregister")
    assert proc.returncode == 0, proc.stderr
    ignored = xr.open_zarr(root / "ignored" / "dh.zarr")["dh"]
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(
        ignored["x"].values[[30, -31]], ignored["y"].values[[ignored.sizes["y"] // 2] * 2])
    offset = n96(lon, lat) - n08(lon, lat)  # height above EGM2008 minus height above EGM96
    # within the bilinear resampling error of the 3-arcsecond hills (about 0.1 m, as in the converted case)
    assert _corner_difference(ignored) == pytest.approx(float(offset[1] - offset[0]), abs=0.2)


def test_a_missing_geoid_grid_is_named(dem_pair):
    root, catalog, _ = dem_pair
    proc = _volume(root, catalog, None, "missing")
    assert proc.returncode == 2
    assert "us_nga_egm" in proc.stderr and not (root / "missing").exists()
