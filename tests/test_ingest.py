"""Datacube ingest on the real files of the sample region: COGs, STAC, Zarr, both loaders, errors, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from odc.geo.geom import box

from mtg.pipeline.catalogs import load_collection, resolve_source, search_items
from mtg.pipeline.errors import MtgError
from mtg.pipeline.ingest import Chunking, build_cubes, write_cubes
from mtg.pipeline.loaders import load_assets
from mtg.pipeline.zarr_store import open_cube, store_state

CHUNKS = Chunking(time=4, space=128)
S2 = load_collection("sentinel-2-l2a")


def _source(region):
    return resolve_source(str(region.catalog))


def _aoi(region):
    return box(*region.bounds, f"EPSG:{region.epsg}")


def _build(region, **kw):
    return build_cubes(_source(region), _aoi(region), "/".join(region.time_range), chunking=CHUNKS, **kw)


@pytest.fixture(scope="module")
def written(sample_region, tmp_path_factory):
    """The sample ingested once with odc-stac to a local folder."""
    out = tmp_path_factory.mktemp("ingest") / "cubes"
    cubes = _build(sample_region)
    result = write_cubes(cubes, str(out), chunking=CHUNKS)
    return cubes, result, out


def _items(region, collection):
    cat = pystac.Catalog.from_file(str(region.catalog))
    coll = next(c for c in cat.get_all_collections() if c.id == collection)
    items = sorted(coll.get_items(recursive=True), key=lambda it: it.datetime)
    for it in items:
        it.make_asset_hrefs_absolute()
    return items


def test_cubes_are_lazy_until_the_write(sample_region, monkeypatch):
    def no_reads(*args, **kwargs):
        raise AssertionError("a raster was opened while the graph was built")

    monkeypatch.setattr(rasterio, "open", no_reads)
    cubes = _build(sample_region)
    for ds in (cubes.reflectance, cubes.dem):
        for name, var in ds.data_vars.items():
            assert hasattr(var.data, "dask"), name


def test_cube_grid_metadata_and_values(sample_region, written):
    cubes, result, out = written
    refl = open_cube(result.reflectance_url)
    dem = open_cube(result.dem_url)
    assert result.reflectance_status == result.dem_status == "written"
    assert refl.rio.crs.to_epsg() == sample_region.epsg == dem.rio.crs.to_epsg()
    assert refl.odc.geobox.resolution.x == 10 and dem.odc.geobox.resolution.x == 30
    assert refl.odc.geobox.boundingbox == dem.odc.geobox.boundingbox
    assert tuple(refl.odc.geobox.boundingbox) == pytest.approx(sample_region.bounds)
    items = _items(sample_region, "sentinel-2-l2a")
    assert refl.sizes["time"] == len(items) and set(refl.data_vars) == set(S2.bands)
    assert all(v.dtype == np.float32 for v in refl.data_vars.values())
    assert refl["B02"].data.chunksize == (4, 128, 128)  # lazily opened in the store's chunks

    # every date: reflectance = (DN + offset) / 1e4 where SCL is clear, missing where it is not
    for t, item in enumerate(items):
        with rasterio.open(item.assets["B04"].href) as f:
            dn = f.read(1)
        with rasterio.open(item.assets["SCL"].href) as f:
            scl = np.repeat(np.repeat(f.read(1), 2, axis=0), 2, axis=1)  # 20 m classes onto the 10 m grid
        got = refl["B04"].isel(time=t).values
        bad = np.isin(scl, S2.mask.invalid_classes) | (dn == 0)
        np.testing.assert_array_equal(np.isnan(got), bad)
        expected = (dn.astype(np.float64) + S2.offset_for(item)) / 1e4
        np.testing.assert_allclose(got[~bad], expected[~bad], atol=1e-5)

    # DEM epochs on the native 30 m grid: values equal the COGs, voids stay missing
    dem_items = _items(sample_region, "cop-dem-glo-30")
    assert dem.sizes["time"] == len(dem_items) == 2
    for t, item in enumerate(dem_items):
        with rasterio.open(item.assets["data"].href) as f:
            z = f.read(1, masked=True)
        got = dem["elevation"].isel(time=t).values
        np.testing.assert_array_equal(np.isnan(got), np.ma.getmaskarray(z))
        np.testing.assert_allclose(got[~np.isnan(got)], z.compressed(), atol=1e-3)

    summary = json.loads((out / "ingest.json").read_text())
    assert summary["result"]["bytes_written"] > 0 and len(summary["reflectance_items"]) == len(items)


def test_baseline_offset_is_removed(sample_region, written):
    """The same land has the same reflectance before and after the 04.00 baseline, unlike its digital numbers."""
    items = _items(sample_region, "sentinel-2-l2a")
    offsets = [S2.offset_for(it) for it in items]
    assert 0 in offsets and -1000 in offsets, "the sample must span the baseline change"
    refl = open_cube(written[1].reflectance_url)["B11"]
    old = refl.isel(time=[i for i, o in enumerate(offsets) if o == 0]).median("time")
    new = refl.isel(time=[i for i, o in enumerate(offsets) if o != 0]).median("time")
    both = np.isfinite(old.values) & np.isfinite(new.values)
    # bare ground changes little in SWIR; a wrong offset would shift everything by 0.1
    assert abs(float(np.median(new.values[both] - old.values[both]))) < 0.02


def test_stackstac_loader_agrees_with_odc_stac(sample_region, written):
    a = written[0]
    b = _build(sample_region, loader="stackstac")
    assert np.array_equal(a.reflectance.time.values, b.reflectance.time.values)
    for band in ("B04", "B08", "B11"):
        x, y = a.reflectance[band].values, b.reflectance[band].values
        assert np.array_equal(np.isnan(x), np.isnan(y)), band
        tol = 0 if S2.bands[band].resolution == 10 else 2e-3  # 20 m bands: GDAL warps differ slightly
        np.testing.assert_allclose(x[~np.isnan(x)], y[~np.isnan(y)], atol=tol, err_msg=band)
    np.testing.assert_allclose(a.dem.elevation.values, b.dem.elevation.values, atol=1e-3)


def test_interrupted_write_never_looks_complete_and_resumes(sample_region, written, tmp_path):
    cubes = written[0]
    calls = []

    def dies_after_one_region(delayed, label):
        if calls:
            raise KeyboardInterrupt("simulated crash")
        calls.append(label)
        import dask

        dask.compute(delayed)

    with pytest.raises(KeyboardInterrupt):
        write_cubes(cubes, str(tmp_path), chunking=CHUNKS, compute=dies_after_one_region)
    assert store_state(str(tmp_path / "reflectance.zarr"), {})[0] == "partial"
    with pytest.raises(MtgError, match="incomplete"):
        open_cube(str(tmp_path / "reflectance.zarr"))

    result = write_cubes(cubes, str(tmp_path), chunking=CHUNKS)
    assert result.reflectance_status == "resumed"
    xr.testing.assert_equal(open_cube(result.reflectance_url), open_cube(written[1].reflectance_url))
    assert not (tmp_path / ".reflectance.zarr.progress").exists()

    assert write_cubes(cubes, str(tmp_path), chunking=CHUNKS).reflectance_status == "skipped"
    other = build_cubes(_source(sample_region), _aoi(sample_region), sample_region.time_range[0] + "/..",
                        chunking=CHUNKS, resolution=20, dem_resolution=60)
    with pytest.raises(MtgError, match="--overwrite"):
        write_cubes(other, str(tmp_path), chunking=CHUNKS)
    assert write_cubes(other, str(tmp_path), chunking=CHUNKS, overwrite=True).reflectance_status == "written"


@pytest.mark.s3
def test_ingest_to_s3_and_reopen_lazily(sample_region, written, s3_server):
    options, bucket = s3_server
    url = f"s3://{bucket}/run1"
    result = write_cubes(written[0], url, chunking=CHUNKS, storage_options=options)
    remote = open_cube(result.reflectance_url, options)
    assert hasattr(remote["B02"].data, "dask")
    xr.testing.assert_equal(remote, open_cube(written[1].reflectance_url))
    xr.testing.assert_equal(open_cube(result.dem_url, options), open_cube(written[1].dem_url))
    assert store_state(result.reflectance_url, options)[0] == "complete"


@pytest.mark.s3
def test_s3_credentials_and_endpoint_from_aws_environment(sample_region, written, s3_server, monkeypatch):
    options, bucket = s3_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    result = write_cubes(written[0], f"s3://{bucket}/from-env", chunking=CHUNKS)
    xr.testing.assert_equal(open_cube(result.dem_url), open_cube(written[1].dem_url))


@pytest.mark.s3
def test_unreachable_storage_is_named(written, tmp_path):
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    with pytest.raises(MtgError, match=r"cannot write to s3://nowhere/x/reflectance.zarr \(endpoint: http://127"):
        write_cubes(written[0], "s3://nowhere/x", chunking=CHUNKS, storage_options=options)


def test_search_errors_name_the_thing(sample_region):
    source = _source(sample_region)
    bbox = tuple(sample_region.bbox_lonlat)
    with pytest.raises(MtgError, match=r"unknown collection 'landsat-c2-l2' .* holds \['cop-dem-glo-30', "
                                       r"'sentinel-2-l2a'\]"):
        search_items(source, "landsat-c2-l2", bbox)
    with pytest.raises(MtgError, match="outside the data"):
        search_items(source, "sentinel-2-l2a", (10.0, 45.0, 10.1, 45.1))
    with pytest.raises(MtgError, match="outside the data"):
        search_items(source, "sentinel-2-l2a", bbox, "2030-01-01/2030-12-31")
    with pytest.raises(MtgError, match="STAC document not found"):
        search_items(resolve_source(str(sample_region.root / "nope" / "catalog.json")), "sentinel-2-l2a", bbox)


def test_unknown_asset_is_named(sample_region, written):
    items = _items(sample_region, "sentinel-2-l2a")
    with pytest.raises(MtgError, match=r"unknown asset\(s\) \['B99'\] in item"):
        load_assets(items, ["B02", "B99"], written[0].grid, dtype="uint16", nodata=0, resampling={},
                    chunks={"y": 128, "x": 128})


def test_corrupt_cog_is_named_and_leaves_the_store_incomplete(sample_region, tmp_path):
    copy = tmp_path / "sample"
    shutil.copytree(sample_region.root, copy)
    region = type(sample_region)(**{**sample_region.__dict__, "root": copy, "catalog": copy / "catalog.json"})
    victim = next(copy.rglob("*_B03_10m.tif"))
    victim.write_bytes(b"II*\x00" + b"\x00" * 64)
    cubes = _build(region)
    with pytest.raises(MtgError, match=victim.name):
        write_cubes(cubes, str(tmp_path / "out"), chunking=CHUNKS)
    assert store_state(str(tmp_path / "out" / "reflectance.zarr"), {})[0] == "partial"


def test_dem_references_read_the_dem_files_in_place(sample_region, tmp_path):
    from mtg.pipeline.config import IngestConfig
    from mtg.pipeline.run import run_ingest
    from mtg.pipeline.virtual_dem import open_virtual_dem

    cfg = IngestConfig(out=str(tmp_path), time="/".join(sample_region.time_range), dem_references=True,
                       chunks={"time": 4, "space": 128})
    run_ingest(cfg, None, source=_source(sample_region), aoi=_aoi(sample_region), progress=False)
    virtual = open_virtual_dem(str(tmp_path / "dem_references.json"))
    copied = open_cube(str(tmp_path / "dem.zarr"))
    assert hasattr(virtual["elevation"].data, "dask")
    np.testing.assert_array_equal(virtual["time"].values, copied["time"].values)
    np.testing.assert_allclose(virtual["elevation"].values, copied["elevation"].values, atol=1e-3)
    assert virtual.odc.geobox == copied.odc.geobox


def test_dem_references_refuse_signed_sources(sample_region, tmp_path):
    from mtg.pipeline.config import IngestConfig
    from mtg.pipeline.run import run_ingest

    source = _source(sample_region).model_copy(update={"signing": "planetary-computer"})
    cfg = IngestConfig(out=str(tmp_path), time="/".join(sample_region.time_range), dem_references=True,
                       chunks={"time": 4, "space": 128})
    with pytest.raises(MtgError, match="signing"):
        run_ingest(cfg, None, source=source, aoi=_aoi(sample_region), progress=False)
