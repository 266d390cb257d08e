"""Sites layers have one geometry type: the real `mtg link` writes MultiPolygon footprints, a null geometry for sites
of points only and lon/lat for every site, and the stages that read sites accept the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from conftest import shared_file
from mtg.pipeline.errors import MtgError
from mtg.pipeline.io import read_sites
from mtg.pipeline.site_assembly import site_footprints
from mtg.pipeline.volume import site_polygons

MTG = str(Path(sys.executable).parent / "mtg")
ICMM = ("icmm_global_mining_dataset", "icmm_global_mining_dataset_external.csv")
POLYGONS = ("maus_tang_combined_demo", "mining_polygons_combined_demo.gpkg")
TABLE = ("maus_commodity_harmonisation", "harmonisation_all_materials.csv")


def mtg(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def linked(tmp_path_factory) -> Path:
    """`mtg link` of the Maus/Tang demo polygons and the ICMM points: polygon sites and thousands of point-only."""
    out = tmp_path_factory.mktemp("link") / "sites" / "sites.parquet"
    mtg("link", "--polygons", str(shared_file(*POLYGONS)), "--points", str(shared_file(*ICMM)),
        "--lon-col", "Longitude", "--lat-col", "Latitude", "--cut", "2km",
        "--commodity-table", str(shared_file(*TABLE)), "-o", str(out))
    return out


def test_sites_file_is_one_multipolygon_layer_with_lon_lat(linked, tmp_path):
    sites = gpd.read_parquet(linked)
    points_only = (sites["n_polygons"] == 0).to_numpy()
    assert points_only.sum() > 1000 and (~points_only).sum() > 50
    assert sites.geometry[points_only].isna().all()
    assert (sites.geometry[~points_only].geom_type == "MultiPolygon").all()
    geo = json.loads(pq.read_schema(linked).metadata[b"geo"])
    assert geo["columns"][geo["primary_column"]]["geometry_types"] == ["MultiPolygon"]
    lon, lat = sites["lon"].to_numpy(), sites["lat"].to_numpy()
    assert np.isfinite(lon).all() and np.isfinite(lat).all()
    inside = shapely.contains_xy(sites.geometry[~points_only].to_numpy(), lon[~points_only], lat[~points_only])
    assert inside.all()  # a footprint's representative point
    members = gpd.read_parquet(linked.with_name("sites_members.parquet"))
    centroids = members[members["kind"] == "point"].groupby("site_id")[["lon", "lat"]].mean()
    one = sites[points_only].set_index("site_id")
    assert np.allclose(one[["lon", "lat"]].to_numpy(), centroids.loc[one.index].to_numpy())
    # GDAL reads it as one MultiPolygon layer (pyogrio's GDAL may lack the Parquet driver: through a GeoPackage)
    if "Parquet" in pyogrio.list_drivers():
        assert pyogrio.read_info(linked)["geometry_type"] == "MultiPolygon"
    gpkg = tmp_path / "sites.gpkg"
    pyogrio.write_dataframe(sites[["site_id", "n_polygons", "lon", "lat", "geometry"]], gpkg)
    assert pyogrio.read_info(gpkg)["geometry_type"] == "MultiPolygon"
    back = pyogrio.read_dataframe(gpkg)
    assert len(back) == len(sites) and back.geometry.isna().sum() == points_only.sum()


def test_stages_read_the_sites_file(linked, tmp_path):
    sites = read_sites(linked)
    points_only = (sites["n_polygons"] == 0).to_numpy()
    assert sites.geometry[points_only].isna().all() and (sites.geometry[~points_only].geom_type == "MultiPolygon").all()
    # volume: the footprints only (sites of points only get no volume)
    polygons = site_polygons(sites, "EPSG:3857", name=str(linked))
    assert polygons["site_id"].tolist() == sites.loc[~points_only, "site_id"].astype(str).tolist()
    # land use, with a boundary layer: sites of points only take the country at their lon/lat
    world = tmp_path / "countries.gpkg"
    gpd.GeoDataFrame({"name": ["West", "East"]}, geometry=[shapely.box(-180, -90, 0, 90), shapely.box(0, -90, 180, 90)],
                     crs="EPSG:4326").to_file(world)
    mtg("landuse", str(linked), "--countries", str(world), "-o", str(tmp_path / "landuse"))
    by_site = pd.read_parquet(tmp_path / "landuse" / "landuse_by_site.parquet")
    assert set(by_site["country"]) == {"West", "East"}
    # indicators: the same layer (MultiPolygon or null, lon/lat of every site)
    mtg("indicators", "--sites", str(linked), "-o", str(tmp_path / "indicators"))
    indicators = gpd.read_parquet(tmp_path / "indicators" / "site_indicators.parquet")
    assert indicators["site_id"].tolist() == sites["site_id"].astype(str).tolist()
    assert indicators.geometry[points_only].isna().all()
    assert (indicators.geometry[~points_only].geom_type == "MultiPolygon").all()
    assert np.array_equal(indicators[["lon", "lat"]].to_numpy(), sites[["lon", "lat"]].to_numpy())
    geo = json.loads(pq.read_schema(tmp_path / "indicators" / "site_indicators.parquet").metadata[b"geo"])
    assert geo["columns"]["geometry"]["geometry_types"] == ["MultiPolygon"]


def test_sites_with_points_as_geometry_are_refused(tmp_path):
    old = tmp_path / "old.parquet"
    gpd.GeoDataFrame({"site_id": [0, 1]}, geometry=[shapely.box(0, 0, 1, 1), shapely.Point(2, 2)],
                     crs="EPSG:4326").to_parquet(old)
    with pytest.raises(MtgError, match=r"old\.parquet: row 1 is a Point, not a footprint polygon"):
        read_sites(old)
    lost = tmp_path / "lost.parquet"
    gpd.GeoDataFrame({"site_id": [0, 1]}, geometry=[shapely.box(0, 0, 1, 1), None], crs="EPSG:4326").to_parquet(lost)
    with pytest.raises(MtgError, match=r"lost\.parquet: row 1 has neither a footprint nor a lon/lat"):
        read_sites(lost)
    footprints = site_footprints([shapely.box(0, 0, 1, 1), None, shapely.Polygon()])
    assert footprints[0].geom_type == "MultiPolygon" and footprints[1] is None and footprints[2] is None
