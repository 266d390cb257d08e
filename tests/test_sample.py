"""Tests of the embedded sample region (``mtg.pipeline.sample``)."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from rasterio.features import rasterize
from scipy import ndimage

from mtg.pipeline.sample import SampleRegion, write_sample_region
from mtg.pipeline.sample.dem import CORRELATED_ERROR_M, DEM_NODATA, WHITE_ERROR_M, site_volumes, true_surface
from mtg.pipeline.sample.landcover import Cover
from mtg.pipeline.sample.scene import LATE_DEM_DATE, build_scene

SIZE_KM = 3.0
N_DATES = 8
FIXTURES = Path("/work/shared/data/stac_fixtures")
S2_KEYS = {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"}
BASELINE_CHANGE = date(2022, 1, 25)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return write_sample_region(tmp_path_factory.mktemp("sample") / "region", seed=0, size_km=SIZE_KM, n_dates=N_DATES)


@pytest.fixture(scope="module")
def catalog(region: SampleRegion) -> pystac.Catalog:
    return pystac.Catalog.from_file(str(region.catalog))


@pytest.fixture(scope="module")
def s2_items(catalog: pystac.Catalog) -> list[pystac.Item]:
    collection = catalog.get_child("sentinel-2-l2a")
    assert collection is not None
    return sorted(collection.get_items(), key=lambda it: it.datetime)


@pytest.fixture(scope="module")
def dem_items(catalog: pystac.Catalog) -> list[pystac.Item]:
    collection = catalog.get_child("cop-dem-glo-30")
    assert collection is not None
    return sorted(collection.get_items(), key=lambda it: it.datetime)


def read(href: str) -> np.ndarray:
    with rasterio.open(href) as ds:
        return ds.read(1)


def reflectance(item: pystac.Item, band: str) -> np.ndarray:
    """Decode an L2A band with the processing-baseline rule; NaN where nodata."""
    dn = read(item.assets[band].get_absolute_href()).astype(np.float64)
    offset = 1000.0 if item.properties["s2:processing_baseline"] >= "04.00" else 0.0
    return np.where(dn == 0, np.nan, (dn - offset) / 10000.0)


def sky(region: SampleRegion) -> list[dict]:
    return json.loads((region.truth / "acquisitions.json").read_text())


def load_pc_fixture(name: str) -> list[dict]:
    path = FIXTURES / "planetary_computer_stac_geoparquet" / name
    if not path.exists():
        pytest.skip(f"PC fixture {path} not available")
    return json.loads(path.read_text())


# --- API and layout ---------------------------------------------------------------------------------------------


def test_sample_region_describes_the_output(region: SampleRegion) -> None:
    assert region.catalog == region.root / "catalog.json" and region.catalog.exists()
    assert region.truth == region.root / "truth" and region.truth.is_dir()
    assert region.epsg == 32750
    left, bottom, right, top = region.bounds
    assert all(v % 60 == 0 for v in region.bounds)
    side = math.ceil(SIZE_KM * 1000 / 60) * 60
    assert right - left == side and top - bottom == side
    west, south, east, north = region.bbox_lonlat
    assert 119 < west < east < 120.5 and -24 < south < north < -22.5
    assert region.time_range[0] < "2022-01-25" < region.time_range[1]


def test_too_few_dates_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_dates"):
        write_sample_region(tmp_path, size_km=SIZE_KM, n_dates=5)


def _snapshot(root: Path) -> dict[str, object]:
    snap: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".tif":
            snap[rel] = read(str(path))
        elif path.suffix == ".json":
            snap[rel] = path.read_text()
        elif path.suffix == ".parquet":
            snap[rel] = pd.read_parquet(path).drop(columns="geometry", errors="ignore")
    return snap


def test_same_seed_gives_identical_data_and_a_different_seed_differs(region: SampleRegion, tmp_path: Path) -> None:
    again = write_sample_region(tmp_path / "again", seed=0, size_km=SIZE_KM, n_dates=N_DATES)
    first, second = _snapshot(region.root), _snapshot(again.root)
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, second[key], err_msg=key)
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, second[key])
        else:
            assert value == second[key], key
    polys = [gpd.read_parquet(r.truth / "mine_polygons.parquet") for r in (region, again)]
    assert all(a.equals_exact(b, 0) for a, b in zip(polys[0].geometry, polys[1].geometry))

    other = _snapshot(write_sample_region(tmp_path / "other", seed=1, size_km=SIZE_KM, n_dates=N_DATES).root)
    tifs = [k for k in first if k.endswith("_B04_10m.tif")]
    assert tifs and all(k in other for k in tifs)
    assert any(not np.array_equal(first[k], other[k]) for k in tifs)
    assert not first["truth/site_volumes.parquet"].equals(other["truth/site_volumes.parquet"])


# --- Files ------------------------------------------------------------------------------------------------------


def test_every_raster_is_a_valid_cog(region: SampleRegion) -> None:
    tifs = sorted(region.root.rglob("*.tif"))
    assert len(tifs) == N_DATES * len(S2_KEYS) + 2 + 1
    for path in tifs:
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
            assert ds.profile["tiled"] and ds.block_shapes[0] in ((256, 256), (512, 512)), path
            assert ds.overviews(1), path
            assert ds.compression is not None and ds.compression.name.upper() == "DEFLATE", path
            assert ds.nodata is not None and ds.crs.to_epsg() == region.epsg, path
            assert ds.transform.c % 60 == 0 and ds.transform.f % 60 == 0


def test_band_dtypes_nodata_and_resolutions(s2_items: list[pystac.Item], dem_items: list[pystac.Item]) -> None:
    for key, asset in s2_items[0].assets.items():
        with rasterio.open(asset.get_absolute_href()) as ds:
            assert ds.dtypes[0] == ("uint8" if key == "SCL" else "uint16")
            assert ds.nodata == 0
            assert ds.res == ((10.0, 10.0) if key in {"B02", "B03", "B04", "B08"} else (20.0, 20.0))
    for item in dem_items:
        with rasterio.open(item.assets["data"].get_absolute_href()) as ds:
            assert ds.dtypes[0] == "float32" and ds.nodata == DEM_NODATA and ds.res == (30.0, 30.0)
            data = ds.read(1)
        assert (data == DEM_NODATA).any(), "each DEM epoch has a few voids"
        assert 300 < np.median(data[data != DEM_NODATA]) < 900


# --- STAC -------------------------------------------------------------------------------------------------------


def test_catalog_layout_and_ids(catalog: pystac.Catalog, region: SampleRegion) -> None:
    assert catalog.id == "mtg-sample"
    assert {c.id for c in catalog.get_children()} == {"sentinel-2-l2a", "cop-dem-glo-30"}
    assert (region.root / "sentinel-2-l2a" / "collection.json").exists()
    assert (region.root / "cop-dem-glo-30" / "collection.json").exists()
    raw = json.loads((region.root / "catalog.json").read_text())
    assert all(not link["href"].startswith("/") for link in raw["links"])
    assert len(list(catalog.get_items(recursive=True))) == N_DATES + 2


def test_s2_items_mirror_planetary_computer(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    pc = load_pc_fixture("sentinel-2-l2a-pc.json")[0]
    pc_props = set(pc["properties"])
    for item in s2_items:
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert set(raw["assets"]) == S2_KEYS and S2_KEYS <= set(pc["assets"])
        assert set(raw["properties"]) <= pc_props | {"datetime"}
        for name in ("datetime", "platform", "constellation", "instruments", "proj:epsg", "s2:mgrs_tile",
                     "s2:processing_baseline", "s2:product_uri", "eo:cloud_cover", "s2:nodata_pixel_percentage",
                     "sat:orbit_state", "sat:relative_orbit", "s2:mean_solar_zenith", "s2:mean_solar_azimuth"):
            assert name in raw["properties"], name
        assert set(pc["stac_extensions"]) <= set(raw["stac_extensions"])
        props = raw["properties"]
        assert props["proj:epsg"] == region.epsg and props["s2:mgrs_tile"].startswith("50K")
        assert props["platform"] in {"Sentinel-2A", "Sentinel-2B"} and props["constellation"] == "Sentinel 2"
        mission, _, sensed, orbit, tile, _ = item.id.split("_")
        assert mission == props["platform"].replace("Sentinel-", "S") and tile == "T" + props["s2:mgrs_tile"]
        assert f"_N{props['s2:processing_baseline'].replace('.', '')}_" in props["s2:product_uri"]
        for key, asset in raw["assets"].items():
            pc_asset = pc["assets"][key]
            assert asset["title"] == pc_asset["title"] and asset["type"] == pc_asset["type"]
            assert asset["roles"] == pc_asset["roles"] and asset["gsd"] == pc_asset["gsd"]
            assert set(pc_asset) - {"href"} <= set(asset)
            assert asset.get("eo:bands") == pc_asset.get("eo:bands")
            assert asset["href"].startswith("./") and asset["href"].endswith(f"_{key}_{int(asset['gsd'])}m.tif")
            assert Path(asset["href"]).name.startswith(f"{tile}_{sensed}_")
            assert asset["raster:bands"][0]["nodata"] == 0


def test_s2_collection_mirrors_planetary_computer(catalog: pystac.Catalog, s2_items: list[pystac.Item]) -> None:
    path = FIXTURES / "odc_stac" / "sentinel-2-l2a.collection.json"
    if not path.exists():
        pytest.skip("PC collection fixture not available")
    pc = json.loads(path.read_text())
    ours = catalog.get_child("sentinel-2-l2a").to_dict()
    assert ours["id"] == pc["id"] == "sentinel-2-l2a"
    assert set(ours["item_assets"]) == S2_KEYS
    for key in S2_KEYS:
        for field in ("type", "roles", "title", "eo:bands"):
            assert ours["item_assets"][key].get(field) == pc["item_assets"][key].get(field), (key, field)
        ours_rb, pc_rb = ours["item_assets"][key]["raster:bands"][0], pc["item_assets"][key]["raster:bands"][0]
        assert (ours_rb["nodata"], ours_rb["data_type"]) == (pc_rb["nodata"], pc_rb["data_type"])
    (start, end), = ours["extent"]["temporal"]["interval"]
    assert start.startswith(s2_items[0].datetime.strftime("%Y-%m-%dT%H:%M:%S"))
    assert end.startswith(s2_items[-1].datetime.strftime("%Y-%m-%dT%H:%M:%S"))


def test_dem_items_mirror_planetary_computer(dem_items: list[pystac.Item], region: SampleRegion) -> None:
    pc = load_pc_fixture("cop-dem-glo-30-pc.json")[0]
    assert [it.datetime.year for it in dem_items] == [2021, 2023]
    for item in dem_items:
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert raw["collection"] == "cop-dem-glo-30"
        assert raw["id"].startswith("Copernicus_DSM_COG_10_S24_00_E119_00_DEM_")
        assert set(raw["assets"]) == {"data"} <= set(pc["assets"])
        assert set(raw["properties"]) == set(pc["properties"])
        assert raw["properties"]["gsd"] == 30 and raw["properties"]["platform"] == "TanDEM-X"
        assert raw["properties"]["proj:epsg"] == region.epsg
        data = raw["assets"]["data"]
        assert data["type"] == pc["assets"]["data"]["type"] and data["roles"] == ["data"]
        assert data["raster:bands"][0] == {"nodata": DEM_NODATA, "data_type": "float32", "spatial_resolution": 30, "unit": "metre"}
        with rasterio.open(item.assets["data"].get_absolute_href()) as ds:
            assert list(ds.shape) == raw["properties"]["proj:shape"]
            assert list(ds.transform)[:6] == raw["properties"]["proj:transform"]


def test_proj_metadata_matches_the_files(s2_items: list[pystac.Item]) -> None:
    for item in s2_items:
        assert item.properties.get("proj:epsg", item.properties.get("proj:code")) in (32750, "EPSG:32750")
        for key, asset in item.assets.items():
            with rasterio.open(asset.get_absolute_href()) as ds:
                assert list(ds.shape) == asset.extra_fields["proj:shape"], key
                assert list(ds.transform)[:6] == asset.extra_fields["proj:transform"], key
                assert list(ds.bounds) == asset.extra_fields["proj:bbox"], key
                assert ds.res[0] == asset.extra_fields["gsd"], key


def test_odc_stac_loads_bands_scl_and_dem(s2_items: list[pystac.Item], dem_items: list[pystac.Item], region: SampleRegion) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    ds = odc_stac.load(s2_items, bands=["B04"])
    assert ds.odc.geobox.crs.epsg == region.epsg
    assert ds.odc.geobox.resolution.x == 10 and ds.sizes["time"] == len(s2_items)
    assert ds.B04.dtype == np.uint16 and ds.B04.attrs["nodata"] == 0
    scl = odc_stac.load(s2_items, bands=["SCL"])
    assert scl.odc.geobox.resolution.x == 20 and scl.SCL.dtype == np.uint8
    assert set(np.unique(scl.SCL.values)) >= {0, 3, 4, 5, 8, 9, 10}
    dem = odc_stac.load(dem_items, bands=["data"])
    assert dem.odc.geobox.crs.epsg == region.epsg and dem.odc.geobox.resolution.x == 30
    assert dem.data.dtype == np.float32 and dem.data.attrs["nodata"] == DEM_NODATA and dem.sizes["time"] == 2
    assert tuple(dem.odc.geobox.boundingbox) == pytest.approx(region.bounds)


# --- Time series, baseline, sky ---------------------------------------------------------------------------------


def test_series_spans_two_years_across_the_baseline_change(s2_items: list[pystac.Item]) -> None:
    days = [it.datetime.date() for it in s2_items]
    assert len(days) >= 6 and (days[-1] - days[0]).days >= 700
    assert any(d < BASELINE_CHANGE for d in days) and any(d >= BASELINE_CHANGE for d in days)
    for item, day in zip(s2_items, days):
        baseline = item.properties["s2:processing_baseline"]
        assert (baseline >= "04.00") == (day >= BASELINE_CHANGE)
    assert {it.properties["platform"] for it in s2_items} == {"Sentinel-2A", "Sentinel-2B"}


def test_baseline_offset_is_in_the_data(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    clear = [s2_items[i] for i, a in enumerate(sky(region)) if a["sky"] == "clear"]
    pre = next(it for it in clear if it.properties["s2:processing_baseline"] < "04.00")
    post = next(it for it in reversed(clear) if it.properties["s2:processing_baseline"] >= "04.00")
    scl_pre, scl_post = (read(it.assets["SCL"].get_absolute_href()) for it in (pre, post))
    veg20 = (scl_pre == 4) & (scl_post == 4)
    assert veg20.sum() > 20
    veg10 = np.repeat(np.repeat(veg20, 2, axis=0), 2, axis=1)
    for band, mask in (("B02", veg10), ("B03", veg10), ("B11", veg20), ("B8A", veg20)):
        dn_pre = read(pre.assets[band].get_absolute_href())[mask].astype(float)
        dn_post = read(post.assets[band].get_absolute_href())[mask].astype(float)
        assert np.median(dn_post) - np.median(dn_pre) > 700, band
        r_pre, r_post = reflectance(pre, band)[mask], reflectance(post, band)[mask]
        assert abs(np.nanmedian(r_post) - np.nanmedian(r_pre)) < 0.03, band


def test_scl_flags_match_bright_clouds_dark_shadows_and_nodata(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    roles = [a["sky"] for a in sky(region)]
    reference = s2_items[roles.index("clear")]
    ref_b05 = reflectance(reference, "B05")
    cloudy = s2_items[roles.index("cloudy")]
    scl = read(cloudy.assets["SCL"].get_absolute_href())
    b05 = reflectance(cloudy, "B05")
    clouds, shadows, clear = np.isin(scl, (8, 9)), scl == 3, np.isin(scl, (4, 5))
    assert clouds.mean() > 0.1 and shadows.sum() > 20
    assert np.nanmean(b05[scl == 9]) > 0.4 > np.nanmean(b05[clear])
    assert np.nanmedian(b05[shadows] / ref_b05[shadows]) < 0.7
    assert np.nanmedian(b05[clear] / ref_b05[clear]) == pytest.approx(1.0, abs=0.1)
    assert cloudy.properties["eo:cloud_cover"] == pytest.approx(100 * np.isin(scl, (8, 9, 10)).mean(), abs=1e-3)

    cirrus = s2_items[roles.index("cirrus")]
    scl = read(cirrus.assets["SCL"].get_absolute_href())
    assert (scl == 10).any()
    b02_cirrus, b02_ref = reflectance(cirrus, "B02")[::2, ::2], reflectance(reference, "B02")[::2, ::2]
    assert np.nanmedian(b02_cirrus[scl == 10] - b02_ref[scl == 10]) > 0.01

    edge = s2_items[roles.index("edge")]
    scl = read(edge.assets["SCL"].get_absolute_href())
    b8a = read(edge.assets["B8A"].get_absolute_href())
    b04 = read(edge.assets["B04"].get_absolute_href())
    assert 5 < edge.properties["s2:nodata_pixel_percentage"] < 50
    np.testing.assert_array_equal(scl == 0, b8a == 0)
    np.testing.assert_array_equal(np.repeat(np.repeat(scl == 0, 2, 0), 2, 1), b04 == 0)
    for item in s2_items:
        if item is not edge:
            assert item.properties["s2:nodata_pixel_percentage"] == 0
            assert (read(item.assets["B04"].get_absolute_href()) > 0).all()


def test_clear_references_are_cloud_free(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    roles = [a["sky"] for a in sky(region)]
    assert roles[0] == roles[-1] == "clear"
    for item, role in zip(s2_items, roles):
        scl = read(item.assets["SCL"].get_absolute_href())
        if role == "clear":
            assert not np.isin(scl, (0, 3, 8, 9, 10)).any() and item.properties["eo:cloud_cover"] == 0


# --- Spectra and land cover -------------------------------------------------------------------------------------


def test_landcover_truth_has_the_code_table(region: SampleRegion) -> None:
    with rasterio.open(region.truth / "landcover.tif") as ds:
        tags = ds.tags()
        classes = set(np.unique(ds.read(1)))
        assert ds.res == (10.0, 10.0) and ds.dtypes[0] == "uint8"
    assert tags["CLASS_10"] == "pit" and tags["CLASS_5"] == "water" and tags["DATE"] == region.time_range[1]
    assert {Cover.PIT, Cover.DUMP, Cover.WATER, Cover.BARE_SOIL, Cover.SPARSE_VEGETATION, Cover.BUILT_UP} <= classes


def test_spectra_are_plausible(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    final = s2_items[-1]
    lc = read(str(region.truth / "landcover.tif"))
    red, green, nir = (reflectance(final, b) for b in ("B04", "B03", "B08"))
    ndvi = (nir - red) / (nir + red)
    ndwi = (green - nir) / (green + nir)
    veg = np.isin(lc, (Cover.SPARSE_VEGETATION, Cover.DENSE_VEGETATION))
    assert np.nanmean(ndvi[lc == Cover.DENSE_VEGETATION]) > np.nanmean(ndvi[veg]) > np.nanmean(ndvi[lc == Cover.PIT])
    assert np.nanmean(ndvi[lc == Cover.PIT]) < 0.25
    assert np.nanmean(ndwi[lc == Cover.WATER]) > 0.3 > np.nanmax([np.nanmean(ndwi[lc == c]) for c in (Cover.BARE_SOIL, Cover.PIT, Cover.DUMP)])
    soil = lc == Cover.BARE_SOIL
    swir = reflectance(final, "B11")[soil[::2, ::2]]
    assert np.nanmean(swir) > np.nanmean(red[soil]) > np.nanmean(green[soil]), "iron-rich soil: red above green, SWIR highest"
    tail = lc == Cover.TAILINGS
    if tail.any():
        assert np.nanmean(red[tail]) > np.nanmean(red[lc == Cover.PIT])
        assert np.nanstd(red[tail]) < np.nanstd(red[lc == Cover.PIT])


def test_vegetation_greens_with_the_season(s2_items: list[pystac.Item], region: SampleRegion) -> None:
    lc = read(str(region.truth / "landcover.tif"))
    dense = lc == Cover.DENSE_VEGETATION
    ndvi = {}
    for item in s2_items:
        scl = read(item.assets["SCL"].get_absolute_href())
        clear = np.repeat(np.repeat(np.isin(scl, (4, 5)), 2, 0), 2, 1)
        red, nir = reflectance(item, "B04"), reflectance(item, "B08")
        ndvi[item.datetime.month] = np.nanmean(((nir - red) / (nir + red))[dense & clear])
    assert ndvi[4] - ndvi[11] > 0.1, "greener after the wet season (April) than at the end of the dry (November)"


def test_mines_grow_over_the_series() -> None:
    scene = build_scene(seed=0, size_km=SIZE_KM, n_dates=N_DATES)
    first, last = scene.acquisitions[0].date, scene.acquisitions[-1].date
    for code in (Cover.PIT, Cover.DUMP):
        assert (scene.cover(first).classes == code).sum() < (scene.cover(last).classes == code).sum()
    assert all(s.scale_at(last, *scene.growth_period) == 1.0 for s in scene.sites)


# --- Truth ------------------------------------------------------------------------------------------------------


def test_a_site_opens_mid_series_and_one_is_abandoned_and_revegetates() -> None:
    scene = build_scene(seed=0, size_km=SIZE_KM, n_dates=N_DATES)
    opener, abandoned = scene.sites[1], scene.sites[2]
    first, last = scene.acquisitions[0].date, scene.acquisitions[-1].date
    assert opener.opens is not None and first < opener.opens < last
    before, after = scene.cover(first), scene.cover(last)
    x, y = scene.grid.coords(10.0)

    def in_site(site) -> np.ndarray:
        return np.hypot(x[None, :] - site.cx, y[:, None] - site.cy) <= site.radius

    mine_before, mine_after = before.classes >= Cover.PIT, after.classes >= Cover.PIT
    assert not (mine_before & in_site(opener)).any() and (mine_after & in_site(opener)).sum() > 100
    lost = mine_before & ~mine_after & in_site(abandoned)
    assert lost.sum() > 0.3 * (mine_after & in_site(abandoned)).sum(), "the abandoned site's margin revegetated"
    assert (after.veg[lost] == scene.veg[lost]).all(), "back to the natural cover"
    ponds = [(scene.cover(a.date).classes == Cover.TAILINGS_POND).sum() for a in scene.acquisitions]
    assert ponds[-1] > 1.5 * ponds[0] > 0, "the tailings ponds fill"


def test_yearly_footprints_end_in_the_final_ones(region: SampleRegion) -> None:
    yearly = gpd.read_parquet(region.truth / "yearly_footprints.parquet")
    final = gpd.read_parquet(region.truth / "mine_polygons.parquet")
    assert list(yearly.columns) == ["site_id", "feature_id", "feature_type", "year", "date", "area_m2", "geometry"]
    area = yearly.dissolve(by=["site_id", "year"]).area.unstack()
    assert list(area.columns) == [2021, 2022, 2023]
    np.testing.assert_allclose(area[2023], final.dissolve(by="site_id").area.loc[area.index], rtol=1e-9)
    assert np.isnan(area.loc["S02", 2021]) and area.loc["S02", 2022] > 0, "S02 opens in 2022"
    assert area.loc["S03", 2021] > area.loc["S03", 2022] > area.loc["S03", 2023], "S03 revegetates"
    assert area.loc["S01", 2021] < area.loc["S01", 2022] < area.loc["S01", 2023], "S01 grows"
    with rasterio.open(region.truth / "landcover.tif") as ds:  # the last year's footprint is on the ground
        lc, transform = ds.read(1), ds.transform
    last = rasterize(yearly[yearly.year == 2023].geometry, out_shape=lc.shape, transform=transform) > 0
    assert (lc[last] >= Cover.PIT).mean() > 0.97


def test_mine_polygons(region: SampleRegion) -> None:
    polys = gpd.read_parquet(region.truth / "mine_polygons.parquet")
    assert polys.crs.to_epsg() == region.epsg
    assert {"site_id", "feature_id", "feature_type", "area_m2", "geometry"} <= set(polys.columns)
    assert set(polys.feature_type) == {"pit", "dump", "tailings", "other"}
    assert polys.feature_id.is_unique and polys.geometry.is_valid.all()
    np.testing.assert_allclose(polys.area_m2, polys.geometry.area)
    kinds = polys.groupby("site_id").feature_type.apply(set)
    assert len(kinds) >= 3 and all("pit" in k for k in kinds) and any(k == {"pit"} for k in kinds)
    assert polys.unary_union.area == pytest.approx(polys.area_m2.sum(), rel=1e-6), "features do not overlap"
    lc = read(str(region.truth / "landcover.tif"))
    with rasterio.open(region.truth / "landcover.tif") as ds:
        pits = rasterize(polys[polys.feature_type == "pit"].geometry, out_shape=ds.shape, transform=ds.transform) > 0
    assert (lc[pits] == Cover.PIT).mean() > 0.95


def test_site_volumes_equal_the_noise_free_true_change(region: SampleRegion) -> None:
    vol = pd.read_parquet(region.truth / "site_volumes.parquet")
    assert list(vol.columns) == ["site_id", "excavated_m3", "deposited_m3", "net_m3"]
    expected = site_volumes(build_scene(seed=0, size_km=SIZE_KM, n_dates=N_DATES))
    assert set(vol.site_id) == set(expected)
    for row in vol.itertuples():
        assert (row.excavated_m3, row.deposited_m3) == pytest.approx(expected[row.site_id], rel=1e-12)
        assert row.excavated_m3 > 0 and row.deposited_m3 >= 0
        assert row.net_m3 == pytest.approx(row.deposited_m3 - row.excavated_m3)
    polys = gpd.read_parquet(region.truth / "mine_polygons.parquet")
    has_dump = set(polys.site_id[polys.feature_type.isin(["dump", "tailings"])])
    assert all((row.deposited_m3 > 0) == (row.site_id in has_dump) for row in vol.itertuples())


def test_noisy_dem_difference_agrees_with_truth_within_dem_error(region: SampleRegion, dem_items: list[pystac.Item]) -> None:
    reg = json.loads((region.truth / "dem_registration.json").read_text())
    with rasterio.open(dem_items[0].assets["data"].get_absolute_href()) as a, rasterio.open(dem_items[1].assets["data"].get_absolute_href()) as b:
        early, late, transform, shape = a.read(1), b.read(1), a.transform, a.shape
    dh = np.where((early == DEM_NODATA) | (late == DEM_NODATA), np.nan, late - early - reg["vertical_bias_m"])
    polys = gpd.read_parquet(region.truth / "mine_polygons.parquet")
    vol = pd.read_parquet(region.truth / "site_volumes.parquet").set_index("site_id")

    mines = rasterize(polys.geometry.buffer(90.0), out_shape=shape, transform=transform) > 0
    stable = dh[~mines]
    assert abs(np.nanmedian(stable)) < 0.5, "the recorded vertical bias removes the offset"
    assert 1.0 < np.nanstd(stable) < 5.0

    # Excavation inside each site's buffered pits; the shift moves volume but does not change it. Error budget:
    # two epochs of correlated error (taken as fully correlated over a pit) at 3 sigma.
    sigma_dh = math.sqrt(2 * (CORRELATED_ERROR_M**2 + WHITE_ERROR_M**2))
    total_est = total_true = total_var = 0.0
    for site_id, group in polys[polys.feature_type == "pit"].groupby("site_id"):
        in_pits = rasterize(group.geometry.buffer(60.0), out_shape=shape, transform=transform) > 0
        area = in_pits.sum() * 900.0
        estimate = -np.nanmean(dh[in_pits]) * area
        truth = vol.loc[site_id, "excavated_m3"]
        assert abs(estimate - truth) < 3 * sigma_dh * area, site_id
        total_est, total_true, total_var = total_est + estimate, total_true + truth, total_var + (sigma_dh * area) ** 2
    assert abs(total_est - total_true) < 3 * math.sqrt(total_var)


def test_registration_record_is_the_shift_in_the_data(region: SampleRegion, dem_items: list[pystac.Item]) -> None:
    reg = json.loads((region.truth / "dem_registration.json").read_text())
    assert 0 < abs(reg["shift_x_px"]) < 1 and 0 < abs(reg["shift_y_px"]) < 1
    assert reg["shift_x_m"] == pytest.approx(30 * reg["shift_x_px"], abs=1e-4)
    assert 1.0 <= reg["vertical_bias_m"] <= 2.0
    late = read(dem_items[1].assets["data"].get_absolute_href()).astype(np.float64)
    truth = true_surface(build_scene(seed=0, size_km=SIZE_KM, n_dates=N_DATES), LATE_DEM_DATE)
    moved = ndimage.shift(truth, (-reg["shift_y_m"] / 30.0, reg["shift_x_m"] / 30.0), order=3, mode="nearest")
    ok = late != DEM_NODATA
    ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False
    err_moved = late[ok] - reg["vertical_bias_m"] - moved[ok]
    err_plain = late[ok] - reg["vertical_bias_m"] - truth[ok]
    assert abs(np.median(err_moved)) < 0.5
    assert np.std(err_moved) < 0.8 * np.std(err_plain)


def test_mine_points(region: SampleRegion) -> None:
    points = gpd.read_parquet(region.truth / "mine_points.parquet")
    assert points.crs.to_epsg() == 4326
    assert {"point_id", "name", "commodities", "site_id", "geometry"} <= set(points.columns)
    assert points.point_id.is_unique
    assert all(isinstance(list(c), list) and len(c) >= 1 for c in points.commodities)
    assert points.site_id.isna().any(), "a prospect without a site"
    sites = set(pd.read_parquet(region.truth / "site_volumes.parquet").site_id)
    counts = points.site_id.dropna().value_counts()
    assert set(counts.index) < sites, "a site without a point"
    assert counts.max() >= 2, "a site with two points"
    west, south, east, north = region.bbox_lonlat
    assert points.geometry.x.between(west, east).all() and points.geometry.y.between(south, north).all()
    polys = gpd.read_parquet(region.truth / "mine_polygons.parquet").to_crs(4326)
    prospects = points[points.site_id.isna()]
    assert not prospects.geometry.apply(lambda p: polys.geometry.contains(p).any()).any()
