"""Every Zarr store of a run opens with its CRS under plain ``xr.open_zarr`` (no ``decode_coords="all"``)."""

from __future__ import annotations

import geopandas as gpd
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr


def plain_crs(store, variable: str) -> tuple[int | None, int | None]:
    """EPSG of the dataset and of one variable opened with plain ``xr.open_zarr``."""
    ds = xr.open_zarr(store)
    assert "spatial_ref" in ds.coords, f"{store}: spatial_ref is not a coordinate ({list(ds.coords)})"
    crs, var_crs = ds.rio.crs, ds[variable].rio.crs
    return (crs.to_epsg() if crs else None), (var_crs.to_epsg() if var_crs else None)


def test_ingest_cubes_open_with_their_crs(sample_cubes, sample_region):
    assert plain_crs(sample_cubes.reflectance_url, "B04") == (sample_region.epsg, sample_region.epsg)
    assert plain_crs(sample_cubes.dem_url, "elevation") == (sample_region.epsg, sample_region.epsg)
    # one step of the DEM cube keeps it too (what `mtg volume --before dem.zarr#0` reads)
    assert xr.open_zarr(sample_cubes.dem_url)["elevation"].isel(time=0).rio.crs.to_epsg() == sample_region.epsg


def test_probability_store_opens_with_its_crs(sample_cubes, sample_region, tmp_path):
    from mtg.pipeline.segment import segment_cube

    result = segment_cube(sample_cubes.reflectance_url, tmp_path / "segment", progress=False, chunk=128)
    for variable in ("probability", "feature_class"):
        assert plain_crs(result.probability, variable) == (sample_region.epsg, sample_region.epsg)


def test_dh_store_opens_with_its_crs(sample_region, tmp_path):
    from mtg.pipeline.volume import measure_volumes

    early, late = sorted(sample_region.root.glob("cop-dem-glo-30/*/*.json"))
    sites = gpd.read_parquet(sample_region.truth / "mine_polygons.parquet").dissolve(by="site_id").reset_index()
    sites[["site_id", "geometry"]].to_parquet(tmp_path / "sites.parquet")
    measure_volumes(early, late, tmp_path / "sites.parquet", tmp_path / "volumes")
    assert plain_crs(tmp_path / "volumes" / "dh.zarr", "dh") == (sample_region.epsg, sample_region.epsg)
