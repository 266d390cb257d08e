"""The real `mtg link` command on real data: ICMM mine points (points mode) and Maus/Tang polygons (sites mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from conftest import shared_file
from mtg.kernels.geodesic import condensed_distances
from mtg.pipeline.errors import MtgError
from mtg.pipeline.io import read_points
from mtg.pipeline.linker import SparseAgglomerativeLinker, cut_column, parse_distance

MTG = str(Path(sys.executable).parent / "mtg")
ICMM = ("icmm_global_mining_dataset", "icmm_global_mining_dataset_external.csv")
POLYGONS = ("maus_tang_combined_demo", "mining_polygons_combined_demo.gpkg")
TABLE = ("maus_commodity_harmonisation", "harmonisation_all_materials.csv")
ICMM_LONLAT = ("--lon-col", "Longitude", "--lat-col", "Latitude")


def mtg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, "link", *args, "--quiet"], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mtg link {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def dense_labels(lon: np.ndarray, lat: np.ndarray, method: str, cuts: list[float]) -> list[np.ndarray]:
    z = linkage(condensed_distances(lon, lat), method=method)
    return [fcluster(z, c, criterion="distance") for c in cuts]


# ---------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize("text, metres", [("10km", 10_000.0), ("500m", 500.0), ("2.5 km", 2_500.0),
                                          ("1000", 1_000.0), ("1.5KM", 1_500.0), (" 0 ", 0.0)])
def test_parse_distance(text, metres):
    assert parse_distance(text) == metres


@pytest.mark.parametrize("text", ["ten km", "5 miles", "-3km", "", "km", "nan"])
def test_parse_distance_rejects_bad_values_by_name(text):
    with pytest.raises(MtgError, match="--cut"):
        parse_distance(text, "--cut")


def test_cut_column_names():
    assert cut_column(5000.0) == "cluster_5000"
    assert cut_column(2500.5) == "cluster_2500.5"


def test_read_points_handles_unicode_minus_and_names_bad_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,lon,lat\na,10.5,\u221223.5\nb,11,1\n", encoding="utf-8")
    frame, lon, lat = read_points(path)
    assert lat.tolist() == [-23.5, 1.0] and lon.tolist() == [10.5, 11.0] and list(frame["id"]) == ["a", "b"]
    path.write_text("id,lon,lat\na,10.5,1\nb,east,1\n")
    with pytest.raises(MtgError, match=r"p\.csv: column 'lon' row 1 \(line 3\) holds 'east'"):
        read_points(path)
    path.write_text("id,lon,lat\na,10.5,1\nb,11,95\n")
    with pytest.raises(MtgError, match=r"row 1 \(line 3\) has latitude 95.0 outside"):
        read_points(path)


def test_read_points_geopackage_any_crs_and_errors(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point, box

    pts = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[Point(10, 50), Point(-70, -33)], crs="EPSG:4326")
    pts.to_crs("EPSG:3857").to_file(tmp_path / "p.gpkg")
    _, lon, lat = read_points(tmp_path / "p.gpkg")
    np.testing.assert_allclose(lon, [10, -70], atol=1e-9)
    np.testing.assert_allclose(lat, [50, -33], atol=1e-9)
    gpd.GeoDataFrame({"n": [1]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_parquet(tmp_path / "poly.parquet")
    with pytest.raises(MtgError, match=r"row 0 is a Polygon, not a Point"):
        read_points(tmp_path / "poly.parquet")
    gpd.GeoDataFrame({"n": [1]}, geometry=[Point(0, 0)]).to_parquet(tmp_path / "nocrs.parquet")
    with pytest.raises(MtgError, match="has no CRS"):
        read_points(tmp_path / "nocrs.parquet")
    pd.DataFrame({"x": [1.0], "lat": [2.0]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(MtgError, match=r"plain\.parquet has no column 'lon'"):
        read_points(tmp_path / "plain.parquet")


def test_estimator_matches_scipy_on_random_points():
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(10, 10.3, 300), rng.uniform(45, 45.2, 300)
    for method in ("single", "complete", "average"):
        est = SparseAgglomerativeLinker(h_max=6000, cuts=[1500, 6000], linkage=method).fit(lon, lat)
        assert est.ambiguous_cuts_ == []
        assert np.array_equal(est.labels_, est.labels_by_cut_[1500.0])
        for cut, dense in zip((1500.0, 6000.0), dense_labels(lon, lat, method, [1500, 6000])):
            assert same_partition(est.labels_by_cut_[cut], dense), (method, cut)
    with pytest.raises(ValueError, match="ward"):
        SparseAgglomerativeLinker(h_max=1000, linkage="ward").fit(lon, lat)


# ---------------------------------------------------------------------------------------------- points mode, CLI


def test_link_icmm_points_all_rows_in_order(tmp_path):
    icmm = shared_file(*ICMM)
    out = tmp_path / "labels.parquet"
    proc = mtg("--points", str(icmm), *ICMM_LONLAT, "--h-max", "25km", "--cut", "5km", "--cut", "25km",
               "--linkage", "average", "-o", str(out))
    assert str(out) in proc.stdout and "8508 points" in proc.stdout
    labels = pd.read_parquet(out)
    assert list(labels.columns) == ["row", "cluster_5000", "cluster_25000"]
    assert len(labels) == 8508 and labels["row"].tolist() == list(range(8508))
    assert all(labels[c].dtype == np.int64 for c in labels.columns)
    fine, coarse = labels["cluster_5000"].to_numpy(), labels["cluster_25000"].to_numpy()
    # nested: every 5 km cluster lies within one 25 km cluster, and 25 km merges more
    assert len(np.unique(np.stack([fine, coarse], 1), axis=0)) == len(np.unique(fine)) > len(np.unique(coarse))
    meta = json.loads(pq.read_schema(out).metadata[b"mtg"])
    assert meta["linkage"] == "average" and meta["cuts_m"] == [5000.0, 25000.0]
    assert not list(tmp_path.glob(".*.tmp"))


def test_link_icmm_subset_equals_dense_scipy(tmp_path):
    icmm = shared_file(*ICMM)
    raw = pd.read_csv(icmm, dtype=str, keep_default_na=False)
    _, lon, lat = read_points(icmm, "Longitude", "Latitude")
    # China and around (1638 points), plus the row written with a Unicode minus (U+2212)
    keep = ((lon > 100) & (lon < 125) & (lat > 20) & (lat < 45)) | raw["Latitude"].str.contains("\u2212").to_numpy()
    subset = tmp_path / "subset.csv"
    raw[keep].to_csv(subset, index=False)
    cuts = [5_000.0, 20_000.0]
    for method in ("average", "single"):
        out = tmp_path / f"{method}.parquet"
        mtg("--points", str(subset), *ICMM_LONLAT, "--h-max", "20km", "--cut", "5km", "--cut", "20000",
            "--linkage", method, "-o", str(out))
        labels = pd.read_parquet(out)
        assert json.loads(pq.read_schema(out).metadata[b"mtg"])["ambiguous_cuts_m"] == []
        for cut, dense in zip(cuts, dense_labels(lon[keep], lat[keep], method, cuts)):
            assert same_partition(labels[cut_column(cut)].to_numpy(), dense), (method, cut)
        assert labels["cluster_20000"].nunique() < keep.sum()


@pytest.mark.slow
def test_link_on_a_local_cluster_equals_in_process(tmp_path):
    """`--scheduler local`: graph tiles and clustering shards on two worker processes, same labels."""
    icmm = shared_file(*ICMM)
    args = ["--points", str(icmm), *ICMM_LONLAT, "--h-max", "30km", "--cut", "10km", "--cut", "30km",
            "--linkage", "complete"]
    mtg(*args, "-o", str(tmp_path / "here.parquet"))
    mtg(*args, "-o", str(tmp_path / "there.parquet"), "--scheduler", "local", "--workers", "2")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "here.parquet"), pd.read_parquet(tmp_path / "there.parquet"))


@pytest.mark.parametrize("args, message", [
    (["--lon-col", "lon"], "has no column 'lon'"),
    (["--h-max", "ten km"], "--h-max 'ten km' is not a distance"),
    (["--cut", "3 miles"], "--cut '3 miles' is not a distance"),
    (["--cut", "30km"], "above --h-max"),
    (["--linkage", "ward"], "'ward' is not exact on a sparse graph"),
    (["--linkage", "centroid"], "'centroid' is not exact"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, args, message):
    icmm = shared_file(*ICMM)
    base = ["--points", str(icmm), "--lon-col", "Longitude", "--lat-col", "Latitude", "-o", str(tmp_path / "x")]
    proc = mtg(*base, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_missing_points_file_exits_2(tmp_path):
    proc = mtg("--points", str(tmp_path / "none.csv"), check=False)
    assert proc.returncode == 2 and "none.csv does not exist" in proc.stderr


# ---------------------------------------------------------------------------------------------- sites mode, CLI


def test_link_sites_polygons_and_icmm_points(tmp_path):
    icmm, gpkg, table = shared_file(*ICMM), shared_file(*POLYGONS), shared_file(*TABLE)
    import geopandas as gpd

    # the same polygons a second time, as GeoParquet in another CRS: two sources
    second = tmp_path / "again.parquet"
    gpd.read_file(gpkg).iloc[:10].to_crs("EPSG:3857").to_parquet(second)
    out = tmp_path / "sites.parquet"
    proc = mtg("--polygons", str(gpkg), "--polygons", str(second), "--points", str(icmm), *ICMM_LONLAT,
               "--h-max", "5km", "--commodity-table", str(table), "-o", str(out))
    assert str(out) in proc.stdout
    sites = gpd.read_parquet(out)
    members = pd.read_parquet(tmp_path / "sites_members.parquet")
    assert sites.crs.to_epsg() == 4326
    assert len(members) == 100 + 10 + 8508
    assert members.groupby(["source", "row"]).size().max() == 1  # each input feature exactly once
    assert set(members["site_id"]) == set(sites["site_id"])
    assert (members[members.kind == "point"].groupby("source").size() == 8508).all()
    poly = sites[sites["n_polygons"] > 0]
    assert (poly["area_km2"] > 0).all() and sites.loc[sites["n_polygons"] == 0, "area_km2"].isna().all()
    assert sites["n_polygons"].sum() == 110 and sites["n_points"].sum() == 8508
    # the copies overlap their originals: the 10 first polygons share sites with their copies
    copied = members[members.source == str(second)].set_index("row")["site_id"]
    original = members[members.source == str(gpkg)].set_index("row")["site_id"]
    assert (copied == original.loc[copied.index]).all()
    # ICMM points carry commodities, harmonised ("thermal coal" -> "Coal")
    names = {n for c in sites["commodities"] for n in c}
    assert "Coal" in names and "thermal coal" not in names
    assert 80 < len(poly) <= 100


def test_sites_mode_errors(tmp_path):
    gpkg = shared_file(*POLYGONS)
    proc = mtg("--polygons", str(gpkg), "--cut", "1km", "--cut", "2km", "-o", str(tmp_path / "s.parquet"),
               check=False)
    assert proc.returncode == 2 and "one cut" in proc.stderr
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    proc = mtg("--polygons", str(tmp_path / "plain.parquet"), check=False)
    assert proc.returncode == 2 and "without GeoParquet" in proc.stderr


def test_link_sites_assembly_on_small_known_layouts(tmp_path):
    """Sites assembly (members, union, areas, commodities) on geometries whose distances are obvious."""
    import geopandas as gpd
    import shapely
    from shapely.geometry import box

    from mtg.pipeline.link import link_sites

    a = gpd.GeoDataFrame({"id": [7, 8]}, geometry=[box(0, 0, 0.01, 0.01), box(0.011, 0, 0.02, 0.01)],
                         crs="EPSG:4326")
    a.to_file(tmp_path / "a.gpkg")
    b = gpd.GeoDataFrame({"name": ["far"]}, geometry=[box(5, 5, 5.01, 5.01)], crs="EPSG:4326").to_crs(3857)
    b.to_parquet(tmp_path / "b.parquet")
    (tmp_path / "p.csv").write_text("ID,lon,lat,Primary Commodity,Other Commodities\n"
                                    "P1,0.005,0.005,gold,silver;Gold\nP2,20,20,coal,\nP3,20.001,20,Coal,\n")
    result = link_sites([tmp_path / "a.gpkg", tmp_path / "b.parquet"], tmp_path / "p.csv", tmp_path / "s.parquet",
                        cut=500.0)
    sites = gpd.read_parquet(result.out)
    members = pd.read_parquet(tmp_path / "s_members.parquet")
    assert result.n_sites == 3 and result.n_point_only_sites == 1
    assert members["feature_id"].tolist() == ["7", "8", "0", "P1", "P2", "P3"]
    assert members["site_id"].tolist() == [0, 0, 1, 0, 2, 2]
    first = sites.iloc[0]
    assert first.member_ids.tolist() == ["7", "8"] and first.point_ids.tolist() == ["P1"]
    assert first.commodities.tolist() == ["gold", "silver"]
    assert first.area_km2 == pytest.approx(2 * 1.11 * 1.1, rel=0.05)
    assert sites.geometry.geom_type.tolist() == ["MultiPolygon", "MultiPolygon", None]
    assert sites.iloc[2].geometry is None and np.isnan(sites.iloc[2].area_km2)
    assert (sites.iloc[2].lon, sites.iloc[2].lat) == pytest.approx((20.0005, 20.0))  # the centroid of P2 and P3
    assert first.geometry.contains(shapely.Point(first.lon, first.lat))
    assert sites.iloc[2].commodities.tolist() == ["coal"]


def test_sites_and_members_are_written_together(tmp_path, monkeypatch):
    """When the members file cannot be written, the sites file is not replaced either, and no temporary file stays."""
    import geopandas as gpd
    from shapely.geometry import box

    from mtg.pipeline.link import link_sites

    gpd.GeoDataFrame({"id": [1]}, geometry=[box(0, 0, 0.01, 0.01)], crs="EPSG:4326").to_file(tmp_path / "a.gpkg")
    old = link_sites([tmp_path / "a.gpkg"], None, tmp_path / "s.parquet", cut=500.0)
    before = old.out.read_bytes()

    write = gpd.GeoDataFrame.to_parquet

    def full_disk(self, path, *args, **kwargs):
        if "members" in Path(path).name:
            raise OSError("no space left on device")
        return write(self, path, *args, **kwargs)

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", full_disk)  # the members table, written after the sites
    with pytest.raises(OSError, match="no space"):
        link_sites([tmp_path / "a.gpkg"], None, tmp_path / "s.parquet", cut=250.0)
    assert old.out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg", "s.parquet", "s_members.parquet"]


def test_assembled_sites_keep_their_types_when_there_are_none():
    from mtg.pipeline.site_assembly import MEMBER_COLUMNS, SITE_DTYPES, FootprintAreas, assemble_sites

    sites = assemble_sites(pd.DataFrame(columns=MEMBER_COLUMNS), np.array([], dtype=np.int64), FootprintAreas([]), 1.0)
    assert len(sites) == 0 and sites.crs.to_epsg() == 4326
    assert {c: str(sites[c].dtype) for c in SITE_DTYPES} == {**SITE_DTYPES, "country": "string"}


def test_overlapping_polygons_linked_as_groups_give_the_same_sites(tmp_path, monkeypatch):
    """Single linkage links polygons that overlap or touch as one union (fewer pairs): the same partitions as
    linking every polygon (real detections: Earth Genome 2018 lies inside Amazon Mining Watch 2018)."""
    import geopandas as gpd
    from shapely.geometry import box

    import mtg.pipeline.link as link

    amw = shared_file("amazon_mining_watch", "yearly_website_layers", "mining_201800_simplified.geojson")
    eg = shared_file("stdl_mineral_extraction_sites", "earthgenome_artisanal_brazil",
                     "artisanal-mes_Earth-Genome_detections-2018.shp")
    icmm = shared_file(*ICMM)
    area = box(-57.5, -7.5, -56.0, -5.5)  # Tapajos
    for name, path in (("amw", amw), ("eg", eg)):
        frame = gpd.read_file(path).to_crs("EPSG:4326")
        frame[frame.intersects(area)].to_parquet(tmp_path / f"{name}.parquet")
    polygons = [tmp_path / "amw.parquet", tmp_path / "eg.parquet"]

    def run(name):
        return link.link_sites(polygons, icmm, tmp_path / f"{name}.parquet", cut=3000.0, levels=[1000.0],
                               lon_col="Longitude", lat_col="Latitude")

    grouped = run("grouped")
    monkeypatch.setattr(link, "ATOM_MIN_CUT_M", np.inf)
    single = run("single")
    a, b = pd.read_parquet(grouped.members), pd.read_parquet(single.members)
    polygons_a = a[a["kind"] == "polygon"]
    assert len(polygons_a) > 300 and polygons_a["site_id"].nunique() < len(polygons_a) / 2
    for column in ("site_id", "cluster_1000", "cluster_3000"):
        assert a[column].tolist() == b[column].tolist(), column
    sites_a, sites_b = gpd.read_parquet(grouped.out), gpd.read_parquet(single.out)
    np.testing.assert_allclose(sites_a["area_km2"], sites_b["area_km2"])
