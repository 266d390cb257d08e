"""The common grid: CRS choice, nesting pixels, and clear errors for CRS mismatches."""

import geopandas as gpd
import pytest
from odc.geo import CRS
from shapely.geometry import box as sbox

from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import aoi_geometry, bbox_geometry, common_grids, utm_epsg


def test_grids_share_bounds_and_nest():
    aoi = bbox_geometry([119.70, -23.35, 119.78, -23.30])
    fine, coarse = common_grids(aoi, CRS("EPSG:32750"), 10, 30)
    assert fine.boundingbox == coarse.boundingbox
    assert fine.shape[0] == 3 * coarse.shape[0] and fine.shape[1] == 3 * coarse.shape[1]
    assert fine.affine.c % 30 == 0 and fine.affine.f % 30 == 0
    assert fine.extent.contains(aoi.to_crs("EPSG:32750"))


def test_projected_bbox_and_geographic_output_are_refused():
    with pytest.raises(MtgError, match="not in longitude/latitude"):
        bbox_geometry([780000, 7410000, 790000, 7420000])
    with pytest.raises(MtgError, match="geographic"):
        common_grids(bbox_geometry([119.7, -23.4, 119.8, -23.3]), CRS("EPSG:4326"), 10, 30)
    with pytest.raises(MtgError, match="whole multiple"):
        common_grids(bbox_geometry([119.7, -23.4, 119.8, -23.3]), CRS("EPSG:32750"), 10, 25)


def test_aoi_files(tmp_path):
    frame = gpd.GeoDataFrame(geometry=[sbox(780000, 7410000, 781000, 7411000)], crs="EPSG:32750")
    frame.to_file(tmp_path / "aoi.gpkg")
    geom = aoi_geometry(str(tmp_path / "aoi.gpkg"))
    assert geom.crs.epsg == 32750 and geom.area == pytest.approx(1e6)
    gpd.GeoDataFrame(geometry=[sbox(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(MtgError, match="nocrs.gpkg has no CRS"):
        aoi_geometry(str(tmp_path / "nocrs.gpkg"))
    (tmp_path / "junk.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(MtgError, match="junk.gpkg is not a readable vector file"):
        aoi_geometry(str(tmp_path / "junk.gpkg"))


def test_utm_zone():
    assert utm_epsg(119.7, -23.3) == 32750
    assert utm_epsg(9.0, 47.0) == 32632
    assert utm_epsg(180.0, 10.0) == 32660
