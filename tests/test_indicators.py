"""Site indicators: the sample run against its volume files, segmentation probability, area change (Earth Genome)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely import wkt
from shapely.geometry import box

from conftest import shared_file
from mtg.pipeline.errors import MtgError
from mtg.pipeline.indicators import INDICATOR_COLUMNS, site_indicators
from mtg.pipeline.link import link_sites

MTG = str(Path(sys.executable).parent / "mtg")
EARTH_GENOME = ("stdl_mineral_extraction_sites", "earthgenome_artisanal_brazil")


def test_sample_run_indicators_carry_the_volumes(sample_run, tmp_path):
    out = tmp_path / "indicators"
    proc = subprocess.run([MTG, "indicators", str(sample_run), "-o", str(out), "--quiet"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = gpd.read_parquet(out / "site_indicators.parquet")
    assert list(table.columns) == INDICATOR_COLUMNS and table.crs.to_epsg() == 4326
    sites = gpd.read_parquet(sample_run / "sites" / "sites.parquet")
    assert table["site_id"].tolist() == sites["site_id"].astype(str).tolist()
    np.testing.assert_allclose(table["area_km2"], sites["area_km2"])
    volumes = gpd.read_parquet(sample_run / "volumes" / "site_volumes.parquet").set_index("site_id")
    measured = table.set_index("site_id").loc[volumes.index]
    for column in ("excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3",
                   "net_sigma_m3"):
        np.testing.assert_array_equal(measured[column].to_numpy(), volumes[column].to_numpy())
    deposits = gpd.read_parquet(sample_run / "volumes" / "waste_deposits.parquet")
    sums = deposits.groupby("site_id").agg(n=("area_m2", "size"), area=("area_m2", "sum"), volume=("volume_m3", "sum"))
    assert measured["waste_deposit_count"].tolist() == sums["n"].reindex(volumes.index, fill_value=0).tolist()
    np.testing.assert_allclose(measured["waste_deposit_volume_m3"], sums["volume"].reindex(volumes.index,
                                                                                            fill_value=0.0))
    assert (measured["waste_deposit_count"] == volumes["waste_deposits"]).all()
    points_only = table[table["area_km2"].isna()]
    assert len(points_only) and points_only["excavated_m3"].isna().all() and \
        points_only["waste_deposit_count"].isna().all()
    linked = table[table["primary_commodities"].map(len) > 0]
    assert (linked["country"] == "Australia").all() and (table["country"] != "").all()
    assert table["sources"].map(list).map(set).map(lambda s: s <= {"mine_polygons", "mine_points"}).all()
    assert table["area_change_km2"].isna().all() and table["mean_probability"].isna().all()
    csv = pd.read_csv(out / "site_indicators.csv", dtype={"site_id": str})
    assert list(csv.columns) == INDICATOR_COLUMNS
    assert wkt.loads(csv["geometry"].iloc[0]).equals_exact(table.geometry.iloc[0], 1e-6)
    assert csv["sources"].iloc[0] == ";".join(table["sources"].iloc[0])


def test_mean_probability_is_area_weighted(tmp_path):
    model = gpd.GeoDataFrame({"polygon_id": [1, 2, 3], "feature_type": ["pit", "dump", "pit"],
                              "mean_probability": [0.9, 0.6, 0.7], "area_m2": [3.0e5, 1.0e5, 2.0e5]},
                             geometry=[box(0, 0, 0.01, 0.01), box(0.01, 0, 0.02, 0.01), box(2, 0, 2.01, 0.01)],
                             crs="EPSG:4326").to_crs("EPSG:32631")
    model.to_parquet(tmp_path / "mine_polygons.parquet")
    other = gpd.GeoDataFrame({"id": [9]}, geometry=[box(4, 0, 4.01, 0.01)], crs="EPSG:4326")
    other.to_file(tmp_path / "inventory.gpkg")
    result = link_sites([tmp_path / "mine_polygons.parquet", tmp_path / "inventory.gpkg"], None,
                        tmp_path / "sites.parquet", cut=100.0)
    table = site_indicators(result.out).set_index("site_id")
    assert table.loc["0", "mean_probability"] == pytest.approx((0.9 * 3 + 0.6 * 1) / 4)
    assert table.loc["1", "mean_probability"] == pytest.approx(0.7)
    assert np.isnan(table.loc["2", "mean_probability"])  # a polygon without a probability
    assert list(table.loc["0", "sources"]) == ["mine_polygons"]
    # the members carry the probabilities: the footprint file is not read again ...
    model.iloc[:1].to_parquet(tmp_path / "mine_polygons.parquet")
    again = site_indicators(result.out).set_index("site_id")
    assert again.loc["0", "mean_probability"] == table.loc["0", "mean_probability"]
    # ... but as footprints of an epoch, a file that lost rows since linking is named, not an IndexError
    with pytest.raises(MtgError, match="mine_polygons.parquet have 1 rows, fewer than the sites expect"):
        site_indicators(result.out, footprints_before=[tmp_path / "mine_polygons.parquet"],
                        footprints_after=[tmp_path / "inventory.gpkg"])


def test_text_commodity_cells_are_names(tmp_path):
    """Sites whose commodity cells are text (a CSV's "gold;copper", or one name) give lists of names."""
    sites = gpd.GeoDataFrame({"site_id": [1, 2], "area_km2": [1.0, 2.0], "commodities": ["gold;copper", "coal"],
                              "primary_commodities": ["gold", None]},
                             geometry=[box(0, 0, 0.01, 0.01), box(1, 0, 1.01, 0.01)], crs="EPSG:4326")
    sites.to_parquet(tmp_path / "sites.parquet")
    table = site_indicators(tmp_path / "sites.parquet")
    assert table["commodities"].tolist() == [["gold", "copper"], ["coal"]]
    assert table["primary_commodities"].tolist() == [["gold"], []]


def test_area_change_by_overlap_on_hand_made_epochs(tmp_path):
    sites = gpd.GeoDataFrame({"pid": ["a", "b"]}, geometry=[box(0, 0, 0.02, 0.02), box(1, 0, 1.02, 0.02)],
                             crs="EPSG:4326")
    sites.to_file(tmp_path / "sites_in.gpkg")
    result = link_sites([tmp_path / "sites_in.gpkg"], None, tmp_path / "sites.parquet", cut=100.0)
    before = gpd.GeoDataFrame(geometry=[box(0, 0, 0.01, 0.01), box(5, 5, 5.01, 5.01)], crs="EPSG:4326")
    after = gpd.GeoDataFrame(geometry=[box(0, 0, 0.01, 0.02), box(0.005, 0, 0.015, 0.02), box(1, 0, 1.01, 0.01)],
                             crs="EPSG:4326")
    before.to_file(tmp_path / "before.gpkg")
    after.to_file(tmp_path / "after.gpkg")
    table = site_indicators(result.out, footprints_before=[tmp_path / "before.gpkg"],
                            footprints_after=[tmp_path / "after.gpkg"]).set_index("site_id")
    cell = table.loc["0", "area_before_km2"]  # 0.01 x 0.01 degrees at the equator: 1113.2 m x 1105.7 m
    assert cell == pytest.approx(1.11319 * 1.10574, rel=1e-4)
    assert table.loc["0", "area_after_km2"] == pytest.approx(3 * cell, rel=1e-3)  # union of two overlapping strips
    assert table.loc["1", "area_before_km2"] == 0.0 and table.loc["1", "area_after_km2"] == pytest.approx(cell, rel=1e-3)
    np.testing.assert_allclose(table["area_change_km2"], table["area_after_km2"] - table["area_before_km2"])
    with pytest.raises(MtgError, match="both epochs"):
        site_indicators(result.out, footprints_before=[tmp_path / "before.gpkg"])


def test_area_change_of_earth_genome_2018_to_2022(tmp_path):
    """Real artisanal-mining detections of two epochs, linked into sites: each site's area of each epoch, summed,
    is the area of that epoch's union (measured independently in the equal-area EPSG:6933)."""
    folder = shared_file(*EARTH_GENOME)
    early = folder / "artisanal-mes_Earth-Genome_detections-2018.shp"
    late = folder / "artisanal-mes_Earth-Genome_detections-2022.shp"
    result = link_sites([early, late], None, tmp_path / "sites.parquet", cut=0.0)
    table = site_indicators(result.out, footprints_before=[early], footprints_after=[late])
    unions = {k: gpd.read_file(p).to_crs("EPSG:6933").union_all().area / 1e6 for k, p in (("before", early),
                                                                                         ("after", late))}
    assert table["area_before_km2"].sum() == pytest.approx(unions["before"], rel=2e-3)
    assert table["area_after_km2"].sum() == pytest.approx(unions["after"], rel=2e-3)
    assert table["area_change_km2"].notna().all()  # every site has a footprint in one epoch at least
    new = table[table["area_before_km2"] == 0]
    assert len(new) and (new["area_change_km2"] > 0).all()
    # in these two epochs the detected area grew: 4,801 km^2 in 2018, 7,118 km^2 in 2022 (PROVENANCE figures)
    assert table["area_change_km2"].sum() == pytest.approx(unions["after"] - unions["before"], rel=5e-3)
    assert 2000 < table["area_change_km2"].sum() < 2600
