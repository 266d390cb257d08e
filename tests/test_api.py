"""The Python API (`mtg.api`) on in-memory objects: no file is read or written by a stage, and the results equal
those of the file-level commands on the same data. Its docstring examples run too."""

from __future__ import annotations

import builtins
import doctest
import importlib
import pathlib
from contextlib import contextmanager

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from odc.geo.geom import box as geobox
from shapely.geometry import box

import mtg.api as api
from mtg.pipeline.run_paths import portable_path

DOCUMENTED = ["mtg.api", "mtg.pipeline.link", "mtg.pipeline.landuse", "mtg.pipeline.indicators",
              "mtg.pipeline.volume", "mtg.pipeline.segment"]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0 or name == "mtg.pipeline.segment"  # its example needs a run folder: skipped


@contextmanager
def no_file_io(monkeypatch, *data: pathlib.Path):
    """While the block runs, nothing may be written anywhere, and no file under the ``data`` folders may be read
    (the stages' inputs are in memory); reading code and package metadata stays allowed."""
    import rasterio

    folders = [str(pathlib.Path(d).resolve()) for d in data]

    def refusing(original, writes: bool):
        def refuse(*args, **kwargs):
            path = args[1] if args and isinstance(args[0], (pd.DataFrame, xr.Dataset)) else (args[0] if args else "")
            mode = str(args[1] if len(args) > 1 and isinstance(args[1], str) else kwargs.get("mode", "r"))
            writing = writes or any(c in mode for c in "wax+")
            reading_data = any(str(pathlib.Path(str(path)).resolve()).startswith(f) for f in folders)
            if writing or reading_data:
                raise AssertionError(f"a stage touched the file system: {path} ({'write' if writing else 'read'})")
            return original(*args, **kwargs)

        return refuse

    with monkeypatch.context() as m:
        for owner, name, writes in (
                (builtins, "open", False), (pathlib.Path, "open", False), (pathlib.Path, "write_text", True),
                (pathlib.Path, "write_bytes", True), (pathlib.Path, "read_text", False), (gpd, "read_file", False),
                (gpd, "read_parquet", False), (pd, "read_csv", False), (pd, "read_parquet", False),
                (xr, "open_zarr", False), (xr, "open_dataset", False), (rasterio, "open", False),
                (pd.DataFrame, "to_parquet", True), (pd.DataFrame, "to_csv", True), (gpd.GeoDataFrame, "to_file", True),
                (xr.Dataset, "to_zarr", True)):
            m.setattr(owner, name, refusing(getattr(owner, name), writes))
        yield


def _in_memory(dem) -> xr.DataArray:
    """A DEM epoch as a numpy-backed, georeferenced DataArray (read before the stages run)."""
    rows, cols = dem.shape
    t = dem.transform
    return xr.DataArray(np.asarray(dem.values.compute()), dims=("y", "x"),
                        coords={"y": t.f + t.e * (np.arange(rows) + 0.5),
                                "x": t.c + t.a * (np.arange(cols) + 0.5)}).rio.write_crs(dem.crs)


def test_stages_on_frames_touch_no_file_and_equal_the_commands(sample_region, sample_run, monkeypatch):
    truth = sample_region.truth
    polygons = gpd.read_parquet(truth / "mine_polygons.parquet")
    points = gpd.read_parquet(truth / "mine_points.parquet")
    early, late = (_in_memory(api.read_dem(p)) for p in sorted(sample_region.root.glob("cop-dem-glo-30/*/*.json")))
    # the names `mtg link` records for its inputs: paths relative to the folder of its sites file
    names = [portable_path(truth / name, sample_run / "sites")
             for name in ("mine_polygons.parquet", "mine_points.parquet")]
    with no_file_io(monkeypatch, sample_region.root, sample_run):
        linked = api.link({names[0]: polygons}, {names[1]: points}, cut=750.0, levels=[250.0, 500.0],
                          choose_cut=True)
        measured = api.volumes(early, late, linked)
        tables = api.land_use(linked)
        table = api.indicators(linked, site_volumes=measured.site_volumes, waste_deposits=measured.deposits)
        assert isinstance(measured.dh.data, da.Array)  # dh stays lazy until written
        dh = measured.dh.values
        with pytest.raises(Exception, match="touched the file system"):  # the guard does guard
            api.read_sites(sample_run / "sites" / "sites.parquet")
    # the same numbers as the commands that read and write files (the session's sample run)
    sites = gpd.read_parquet(sample_run / "sites" / "sites.parquet")
    pd.testing.assert_frame_equal(pd.DataFrame(linked.sites.drop(columns="geometry")),
                                  pd.DataFrame(sites.drop(columns="geometry")))
    footprint = sites.geometry.notna()  # sites of points only have none
    assert (linked.sites.geometry.notna() == footprint).all()
    assert linked.sites.geometry[footprint].geom_equals_exact(sites.geometry[footprint], 1e-12).all()
    written = gpd.read_parquet(sample_run / "volumes" / "site_volumes.parquet")
    for column in ("excavated_m3", "deposited_m3", "net_m3", "excavated_sigma_m3", "area_m2"):
        np.testing.assert_allclose(measured.site_volumes[column], written[column], rtol=1e-12)
    np.testing.assert_array_equal(dh, xr.open_zarr(sample_run / "volumes" / "dh.zarr")["dh"].values)
    indicators = gpd.read_parquet(sample_run / "indicators" / "site_indicators.parquet")
    for column in ("area_km2", "excavated_m3", "net_sigma_m3", "waste_deposit_volume_m3"):
        np.testing.assert_allclose(table[column].to_numpy(dtype=float), indicators[column].to_numpy(dtype=float),
                                   rtol=1e-12)
    assert tables.summary["linked_share"] + tables.summary["unlinked_share"] == pytest.approx(1.0)
    assert set(tables.landuse.by_site["site_id"]) <= set(table["site_id"])


def test_segment_and_footprints_on_an_in_memory_cube(sample_region, tmp_path, monkeypatch):
    from mtg.pipeline.catalogs import resolve_source
    from mtg.pipeline.ingest import Chunking, build_cubes, write_cubes
    from mtg.pipeline.segment import segment_cube

    chunking = Chunking(time=6, space=128)
    cubes = build_cubes(resolve_source(str(sample_region.catalog)),
                        geobox(*sample_region.bounds, f"EPSG:{sample_region.epsg}"),
                        "/".join(sample_region.time_range), chunking=chunking)
    url = write_cubes(cubes, str(tmp_path / "cubes"), chunking=chunking).reflectance_url
    cube = api.open_cube(url).load()  # everything in memory before the stage runs
    with no_file_io(monkeypatch, sample_region.root, tmp_path):
        probabilities = api.segment(cube, tile=128, overlap=32)
        assert isinstance(probabilities["probability"].data, da.Array)  # lazy
        assert probabilities.rio.crs == cube.rio.crs
        mines = api.footprints(probabilities, min_area_m2=5_000)
    result = segment_cube(url, tmp_path / "segment", progress=False, tile=128, overlap=32, min_area_m2=5_000)
    written = xr.open_zarr(result.probability)
    np.testing.assert_allclose(probabilities["probability"].values, written["probability"].values, atol=1e-6)
    assert len(mines) == result.n_polygons > 0 and mines.crs == cube.rio.crs
    np.testing.assert_allclose(mines["area_m2"], gpd.read_parquet(result.polygons)["area_m2"], rtol=1e-9)


def test_options_are_checked_and_named():
    from mtg.pipeline.errors import MtgError

    frame = gpd.GeoDataFrame(geometry=[box(118.0, -22.0, 118.01, -21.99)], crs="EPSG:4326")
    with pytest.raises(MtgError, match="unknown option"):
        api.link(frame, cutt="1km")
    with pytest.raises(MtgError, match="linkage"):
        api.link(frame, linkage="ward")
    with pytest.raises(MtgError, match="--cut 'far'"):
        api.link(frame, cut="far")
    with pytest.raises(MtgError, match="void_policy"):
        api.volumes(None, None, frame, void_policy="zero")
    options = api.VolumeOptions(threshold_m=1.0)
    assert api.LinkOptions().choose_cut is False and options.threshold_m == 1.0
