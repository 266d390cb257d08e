"""Source and collection definitions, against real Planetary Computer STAC documents."""

import json
import pickle

import pystac
import pytest

from conftest import shared_file
from mtg.pipeline.catalogs import (
    known_sources,
    load_collection,
    parse_time_range,
    resolve_source,
    sign_href,
)
from mtg.pipeline.errors import MtgError
from mtg.pipeline.grid import item_epsg
from mtg.pipeline.loaders import PlanetaryComputerReader, SigningRioDriver


def _pc_items(name):
    path = shared_file("stac_fixtures", "planetary_computer_stac_geoparquet", name)
    return [pystac.Item.from_dict(d) for d in json.loads(path.read_text())]


def test_sources_and_collections_load():
    assert {"planetary-computer", "sample"} <= set(known_sources())
    pc = resolve_source("planetary-computer")
    assert pc.kind == "stac-api" and pc.signing == "planetary-computer"
    assert pc.reflectance.id == "sentinel-2-l2a" and pc.dem.id == "cop-dem-glo-30"
    assert resolve_source("sample").signing == "none"


def test_pc_sentinel2_items_parse_into_band_map_projection_and_baseline():
    s2 = load_collection("sentinel-2-l2a")
    items = _pc_items("sentinel-2-l2a-pc.json")
    assert len(items) == 4
    for item in items:
        for band, spec in s2.bands.items():
            asset = item.assets[band]
            assert asset.extra_fields["gsd"] == spec.resolution, band
            assert asset.extra_fields["proj:transform"][0] == spec.resolution
            assert asset.extra_fields["eo:bands"][0]["name"] == band
        scl = item.assets[s2.mask.asset]
        assert scl.extra_fields["proj:transform"][0] == s2.mask.resolution
        assert item_epsg(item) in (32646, 32647)
        assert item.properties["s2:processing_baseline"] == "05.10"
        assert s2.offset_for(item) == -1000


def test_pc_collection_item_assets_agree_with_the_band_map():
    s2 = load_collection("sentinel-2-l2a")
    coll = json.loads(shared_file("stac_fixtures", "odc_stac", "sentinel-2-l2a.collection.json").read_text())
    for band in s2.bands:
        info = coll["item_assets"][band]
        assert info["raster:bands"][0] == {"nodata": s2.nodata, "data_type": "uint16"}
    assert coll["item_assets"][s2.mask.asset]["raster:bands"][0]["data_type"] == "uint8"


def test_pre_2022_baseline_has_no_offset():
    s2 = load_collection("sentinel-2-l2a")
    path = shared_file("stac_fixtures", "odc_stac", "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    item = pystac.Item.from_file(str(path))
    assert item.properties["s2:processing_baseline"] < "04.00"
    assert s2.offset_for(item) == 0
    item.properties["s2:processing_baseline"] = "04.00"
    assert s2.offset_for(item) == -1000
    del item.properties["s2:processing_baseline"]
    with pytest.raises(MtgError, match="s2:processing_baseline"):
        s2.offset_for(item)


def test_pc_dem_items_parse():
    dem = load_collection("cop-dem-glo-30")
    for item in _pc_items("cop-dem-glo-30-pc.json"):
        assert dem.asset in item.assets
        assert item_epsg(item) == 4326
        # 1 arcsecond in latitude everywhere; in longitude wider towards the poles (these are polar tiles)
        assert item.properties["proj:transform"][4] == pytest.approx(-1 / 3600)
        assert item.properties["gsd"] == dem.resolution


def test_odc_stac_reads_band_metadata_from_pc_item():
    import odc.stac

    items = _pc_items("sentinel-2-l2a-pc.json")
    parsed = next(iter(odc.stac.parse_items(items[:1])))
    b02 = parsed["B02"]
    assert b02.geobox.resolution.x == 10 and b02.geobox.crs.epsg == item_epsg(items[0])
    assert parsed["B11"].geobox.resolution.x == 20


def test_unknown_collection_and_source_are_named():
    with pytest.raises(MtgError, match="unknown collection 'landsat-c2-l2'.*known collections"):
        load_collection("landsat-c2-l2")
    with pytest.raises(MtgError, match="nor an existing path"):
        resolve_source("no-such-catalog")


def test_signing_is_a_no_op_without_signing_and_readers_pickle():
    assert sign_href("/data/x.tif", "none") == "/data/x.tif"
    # Planetary Computer signing leaves hrefs outside Azure Blob Storage alone (no token request).
    assert sign_href("/data/x.tif", "planetary-computer") == "/data/x.tif"
    with pytest.raises(MtgError, match="unknown signing"):
        sign_href("x", "magic")  # type: ignore[arg-type]
    driver = pickle.loads(pickle.dumps(SigningRioDriver("planetary-computer")))
    assert driver.signing == "planetary-computer"
    assert pickle.loads(pickle.dumps(PlanetaryComputerReader)) is PlanetaryComputerReader


@pytest.mark.parametrize(
    "text, ok",
    [("2021-01-01/2022-12-31", True), ("2021-01-01/..", True), ("2022-01-01/2021-01-01", False),
     ("2021-13-01/2022-01-01", False), ("2021", False)],
)
def test_time_ranges(text, ok):
    if ok:
        start, stop = parse_time_range(text)
        assert start is not None
    else:
        with pytest.raises(MtgError, match="time"):
            parse_time_range(text)


@pytest.mark.parametrize(("url", "reason"), [("http://no-such-host.invalid/stac", "does not resolve (DNS"),
                                             ("http://127.0.0.1:1/stac", "was refused")])
def test_unreachable_stac_api_names_dns_failure_apart_from_refused_connection(url, reason):
    import requests

    from mtg.pipeline.catalogs import unreachable_reason

    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(url, timeout=5)
    assert reason in unreachable_reason(caught.value, url)


def test_aoi_whose_coordinates_do_not_fit_its_crs_is_refused(tmp_path):
    import geopandas as gpd
    import shapely

    from mtg.pipeline.errors import MtgError
    from mtg.pipeline.grid import aoi_geometry

    metres = gpd.GeoDataFrame(geometry=[shapely.box(500000, 4000000, 501000, 4001000)], crs="EPSG:4326")
    metres.to_file(tmp_path / "metres.gpkg")
    with pytest.raises(MtgError, match="do not fit its CRS .*look like projected metres"):
        aoi_geometry(str(tmp_path / "metres.gpkg"))
    degrees = gpd.GeoDataFrame(geometry=[shapely.box(119.70, -23.37, 119.74, -23.35)], crs="EPSG:32650")
    degrees.to_file(tmp_path / "degrees.gpkg")
    with pytest.raises(MtgError, match="look like longitude/latitude degrees"):
        aoi_geometry(str(tmp_path / "degrees.gpkg"))
    utm = gpd.GeoDataFrame(geometry=[shapely.box(777600, 7412460, 780600, 7415460)], crs="EPSG:32750")
    utm.to_file(tmp_path / "utm.gpkg")
    assert aoi_geometry(str(tmp_path / "utm.gpkg")).crs.epsg == 32750
