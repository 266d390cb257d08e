"""Commodity land use: the equal split, the cut chosen per site, the sample region against its truth, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from mtg.pipeline.errors import MtgError
from mtg.pipeline.landuse import UNKNOWN, split_land_use, write_land_use
from mtg.pipeline.link import link_sites

MTG = str(Path(sys.executable).parent / "mtg")


def mtg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def rows(table: pd.DataFrame, key: str) -> dict:
    return table.set_index(key)["area_km2"].to_dict()


# ---------------------------------------------------------------------------------------------- the split


def test_equal_split_by_hand():
    sites = pd.DataFrame({
        "site_id": [0, 1, 2, 3, 4],
        "area_km2": [6.0, 3.0, 1.0, np.nan, 2.0],
        "primary_commodities": [["Gold", "Copper"], ["Gold"], [], ["Coal"], ["Coal", "Gold", "Coal"]],
        "country": pd.array(["Peru", "Peru", None, "Chile", "Chile"], dtype="string"),
        "n_points": [2, 1, 0, 1, 1],
    })
    lu = split_land_use(sites, cut_m=1000.0)
    # site 0: 3 + 3; site 1: 3 to gold; site 2 Unknown; site 3 no footprint (left out); site 4: 1 + 1
    assert rows(lu.by_commodity, "commodity") == pytest.approx(
        {"Gold": 7.0, "Copper": 3.0, "Coal": 1.0, UNKNOWN: 1.0, "Total": 12.0})
    assert lu.by_commodity["commodity"].tolist() == ["Gold", "Copper", "Coal", UNKNOWN, "Total"]
    assert lu.by_commodity.set_index("commodity")["n_sites"].to_dict() == {
        "Gold": 3, "Copper": 1, "Coal": 1, UNKNOWN: 1, "Total": 4}
    assert rows(lu.by_country, "country") == pytest.approx({"Peru": 9.0, "Chile": 2.0, UNKNOWN: 1.0, "Total": 12.0})
    both = lu.by_commodity_country.set_index(["commodity", "country"])["area_km2"].to_dict()
    assert both == pytest.approx({("Gold", "Peru"): 6.0, ("Copper", "Peru"): 3.0, ("Gold", "Chile"): 1.0,
                                  ("Coal", "Chile"): 1.0, (UNKNOWN, UNKNOWN): 1.0, ("Total", "Total"): 12.0})
    s = lu.summary
    assert (s["total_km2"], s["linked_km2"], s["unlinked_km2"]) == pytest.approx((12.0, 11.0, 1.0))
    assert s["unlinked_share"] == pytest.approx(1 / 12) and s["linked_share"] == pytest.approx(11 / 12)
    assert s["multi_commodity_km2"] == pytest.approx(8.0)  # sites 0 and 4
    assert s["multi_assignment_km2"] == pytest.approx(6.0 * 1 + 2.0 * 1)
    assert s["no_point_km2"] == pytest.approx(1.0) and s["n_point_only_sites"] == 1 and s["cut_m"] == 1000.0
    assert lu.by_commodity["share"].iloc[:-1].sum() == pytest.approx(1.0)


def test_text_cells_are_names_and_site_ids_are_text_and_unique():
    """A text cell ("gold", or a CSV's "gold;copper") is a list of names, not of characters; site ids come out as
    text, as in the site indicators; a repeated site id is refused."""
    sites = pd.DataFrame({"site_id": [7, 8, 9], "area_km2": [2.0, 1.0, 1.0],
                          "primary_commodities": ["gold", "gold;copper", None]})
    lu = split_land_use(sites)
    assert rows(lu.by_commodity, "commodity") == pytest.approx({"gold": 2.5, "copper": 0.5, UNKNOWN: 1.0,
                                                                "Total": 4.0})
    assert lu.by_site["commodities"].tolist() == [["gold"], ["gold", "copper"], []]
    assert lu.by_site["site_id"].tolist() == ["7", "8", "9"]
    assert lu.by_country.set_index("country")["n_sites"].to_dict() == {UNKNOWN: 3, "Total": 3}
    with pytest.raises(MtgError, match="repeats site_id '8'"):
        split_land_use(sites.assign(site_id=[7, 8, 8]))


names = st.lists(st.sampled_from(["Gold", "Coal", "Copper", "Iron", "Tin"]), max_size=4)
# areas of 0 or from a square micrometre up: halves of subnormal floats (5e-324 km^2) round to 0, no footprint is one
areas = st.one_of(st.just(0.0), st.floats(1e-12, 1e4))
site_lists = st.lists(st.tuples(areas, names,
                                st.sampled_from(["A", "B", "C", None])), min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(site_lists)
def test_split_conserves_area_and_shares_sum_to_one(data):
    sites = pd.DataFrame({"site_id": range(len(data)), "area_km2": [a for a, _, _ in data],
                          "primary_commodities": [c for _, c, _ in data],
                          "country": pd.array([k for _, _, k in data], dtype="string")})
    lu = split_land_use(sites)
    total = sum(a for a, _, _ in data)
    for table in (lu.by_commodity, lu.by_country, lu.by_commodity_country):
        body = table.iloc[:-1]
        assert body["area_km2"].sum() == pytest.approx(total, rel=1e-9, abs=1e-9)
        assert table["area_km2"].iloc[-1] == pytest.approx(total, rel=1e-12, abs=1e-12)
        if total > 0:
            assert body["share"].sum() == pytest.approx(1.0, rel=1e-9)
    # each site's commodities get equal parts that add up to its area
    per_site = lu.by_site.set_index("site_id")
    for k, (area, commodities, _) in enumerate(data):
        n = max(len(set(commodities)), 1)
        assert per_site.loc[str(k), "area_per_commodity_km2"] * n == pytest.approx(area)
    assert lu.summary["linked_km2"] + lu.summary["unlinked_km2"] == pytest.approx(total)
    commodity = lu.by_commodity.set_index("commodity")["area_km2"].iloc[:-1]
    crossed = lu.by_commodity_country.iloc[:-1].groupby("commodity")["area_km2"].sum()
    assert crossed.loc[commodity.index].to_numpy() == pytest.approx(commodity.to_numpy())


# ---------------------------------------------------------------------------------------------- the cut per site


@pytest.fixture
def two_clusters(tmp_path):
    """Two pairs of 0.01-degree squares on the equator, 0.005 degrees (557 m) apart, 111 km from each other.

    Pair A|B has a gold point in A and a copper point in B; pair C|D has an iron point in D only.
    """
    polygons = gpd.GeoDataFrame({"pid": ["A", "B", "C", "D"]}, geometry=[
        box(0, 0, 0.01, 0.01), box(0.015, 0, 0.025, 0.01), box(1, 0, 1.01, 0.01), box(1.015, 0, 1.025, 0.01)],
        crs="EPSG:4326")
    polygons.to_file(tmp_path / "polygons.gpkg")
    (tmp_path / "points.csv").write_text(
        "id,lon,lat,Primary Commodity,Secondary Commodity,Country\n"
        "p1,0.005,0.005,gold,silver,Ecuador\np2,0.02,0.005,copper,,Ecuador\np3,1.02,0.005,iron ore,,Gabon\n")
    return tmp_path


def test_choose_cut_by_hand(two_clusters):
    """At 300 m: A|B split one commodity each (nothing unknown, nothing shared), C alone is unknown; at 1 km: A+B
    share gold and copper, C+D is all iron. The choice keeps A and B apart and joins C to D."""
    path = two_clusters
    result = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "sites.parquet", cut=1000.0,
                        levels=[300.0], choose_cut=True)
    sites = gpd.read_parquet(result.out)
    by_members = {tuple(r.member_ids): r for r in sites.itertuples()}
    assert set(by_members) == {("A",), ("B",), ("C", "D")}
    assert by_members[("A",)].cut_m == 300.0 and list(by_members[("A",)].primary_commodities) == ["gold"]
    assert list(by_members[("A",)].commodities) == ["gold", "silver"]  # secondary: not split among
    assert by_members[("C", "D")].cut_m == 1000.0 and by_members[("C", "D")].country == "Gabon"
    areas = {k: r.area_km2 for k, r in by_members.items()}
    lu = write_land_use(result.out, path / "landuse")
    assert rows(pd.read_csv(path / "landuse" / "landuse_by_commodity.csv"), "commodity") == pytest.approx(
        {"gold": areas[("A",)], "copper": areas[("B",)], "iron ore": areas[("C", "D")],
         "Total": sum(areas.values())})
    assert lu.summary["unlinked_km2"] == 0 and lu.summary["chosen_cuts"] == {
        str(r.site_id): r.cut_m for r in sites.itertuples() if r.n_polygons}
    # the same choice from `mtg landuse --choose-cut` on sites linked at 1 km with the 300 m level recorded
    fixed = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "fixed.parquet", cut=1000.0,
                       levels=[300.0])
    assert fixed.n_sites == 2
    mtg("landuse", str(fixed.out), "-o", str(path / "chosen"), "--choose-cut", "--sensitivity", "300m,1km")
    chosen = pd.read_csv(path / "chosen" / "landuse_by_commodity.csv")
    assert rows(chosen, "commodity") == pytest.approx(rows(pd.read_csv(path / "landuse" /
                                                                       "landuse_by_commodity.csv"), "commodity"))
    objective = pd.read_csv(path / "chosen" / "cut_objective.csv")
    assert objective["distance"].min() == 0 and len(objective) == 4
    sensitivity = pd.read_csv(path / "chosen" / "landuse_sensitivity.csv")
    assert sensitivity["cut"].tolist() == ["300 m", "1 km", "chosen per site"]
    total = sum(areas.values())
    assert sensitivity["unlinked_km2"].tolist() == pytest.approx([areas[("C", "D")] / 2, 0.0, 0.0], rel=1e-3)
    assert sensitivity["multi_commodity_km2"].tolist() == pytest.approx([0.0, total - areas[("C", "D")], 0.0])
    assert sensitivity["total_km2"].tolist() == pytest.approx([total] * 3)


def test_countries_from_a_boundary_layer(two_clusters, tmp_path):
    path = two_clusters
    result = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "sites.parquet", cut=1000.0)
    # a boundary layer: west of 0.012 degrees is "West", the rest "East"; none covers C|D
    gpd.GeoDataFrame({"NAME": ["West", "East"]}, geometry=[box(-1, -1, 0.012, 1), box(0.012, -1, 0.5, 1)],
                     crs="EPSG:4326").to_crs("EPSG:3857").to_file(tmp_path / "countries.gpkg")
    lu = write_land_use(result.out, tmp_path / "out", countries=tmp_path / "countries.gpkg")
    table = pd.read_csv(tmp_path / "out" / "landuse_by_country.csv")
    assert table["country"].tolist()[-1] == "Total"
    # A+B (one site at 1 km) lies mostly west; C+D lies outside the layer: its points' country, Gabon
    assert set(table["country"]) == {"West", "Gabon", "Total"}
    assert lu.summary["countries"] == "countries.gpkg"  # relative to the run folder, the one above out/
    # the sites chosen per site are written with the countries the split used: A west, B east
    linked = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "levels.parquet", cut=1000.0,
                        levels=[300.0])
    write_land_use(linked.out, tmp_path / "chosen", choose_cut=True, countries=tmp_path / "countries.gpkg")
    chosen = gpd.read_parquet(tmp_path / "chosen" / "sites_chosen.parquet")
    assert {tuple(m): c for m, c in zip(chosen["member_ids"], chosen["country"])} == {
        ("A",): "West", ("B",): "East", ("C", "D"): "Gabon"}
    per_site = pd.read_parquet(tmp_path / "chosen" / "landuse_by_site.parquet")
    assert sorted(per_site["country"]) == ["East", "Gabon", "West"]


def test_per_site_tasks_give_the_same_tables_whatever_the_grouping(two_clusters, tmp_path, monkeypatch):
    """The unions, areas and country overlay run as dask tasks over groups of whole clusters (of sites for a sites
    table): one task per cluster gives the files of one task for everything."""
    from mtg.pipeline import landuse

    path = two_clusters
    gpd.GeoDataFrame({"NAME": ["West", "East"]}, geometry=[box(-1, -1, 0.012, 1), box(0.012, -1, 0.5, 1)],
                     crs="EPSG:4326").to_file(tmp_path / "countries.gpkg")
    linked = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "sites.parquet", cut=1000.0,
                        levels=[300.0])
    runs = {"chosen": {"choose_cut": True, "sensitivity": ["300m", "1km"], "countries": tmp_path / "countries.gpkg"},
            "table": {"countries": tmp_path / "countries.gpkg"}}
    for name, kwargs in runs.items():
        write_land_use(linked.out, tmp_path / f"{name}-one", **kwargs)
    monkeypatch.setattr(landuse, "PER_TASK", 1)
    for name, kwargs in runs.items():
        write_land_use(linked.out, tmp_path / f"{name}-many", **kwargs)
        one, many = tmp_path / f"{name}-one", tmp_path / f"{name}-many"
        files = sorted(p.name for p in one.iterdir())
        assert files == sorted(p.name for p in many.iterdir()) and "landuse_by_site.parquet" in files
        for file in files:
            if file.endswith(".parquet"):
                pd.testing.assert_frame_equal(pd.read_parquet(one / file), pd.read_parquet(many / file))
            elif file.endswith(".json"):
                a, b = (json.loads((folder / file).read_text()) for folder in (one, many))
                assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
            else:
                assert (one / file).read_bytes() == (many / file).read_bytes(), file


def test_errors_name_what_is_wrong(two_clusters, tmp_path):
    path = two_clusters
    result = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "sites.parquet", cut=1000.0)
    with pytest.raises(MtgError, match="no cut below"):
        write_land_use(result.out, tmp_path / "a", choose_cut=True)
    with pytest.raises(MtgError, match="not a recorded cut"):
        write_land_use(result.out, tmp_path / "b", sensitivity=[500.0])
    with pytest.raises(MtgError, match="does not exist"):
        write_land_use(tmp_path / "none.parquet", tmp_path / "c")
    proc = mtg("landuse", str(result.out), "-o", str(tmp_path / "d"), "--sensitivity", "ten km", check=False)
    assert proc.returncode == 2 and "--sensitivity" in proc.stderr
    proc = mtg("link", "--polygons", str(path / "polygons.gpkg"), "--points", str(path / "points.csv"),
               "--points-filter", "Country", "-o", str(tmp_path / "s.parquet"), check=False)
    assert proc.returncode == 2 and "COLUMN=VALUE" in proc.stderr
    proc = mtg("link", "--polygons", str(path / "polygons.gpkg"), "--points", str(path / "points.csv"),
               "--points-filter", "Country=Mars", "-o", str(tmp_path / "s.parquet"), check=False)
    assert proc.returncode == 2 and "keeps no row" in proc.stderr


def test_points_filter_keeps_file_rows(two_clusters):
    path = two_clusters
    result = link_sites([path / "polygons.gpkg"], path / "points.csv", path / "sites.parquet", cut=1000.0,
                        points_filter=["Country=gabon"])
    members = pd.read_parquet(result.members)
    points = members[members["kind"] == "point"]
    assert points["row"].tolist() == [2] and points["feature_id"].tolist() == ["p3"]
    assert result.n_points == 1


# ---------------------------------------------------------------------------------------------- the sample region


def truth_land_use(truth: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Area by commodity and by country of the truth sites, from the truth files alone: each site's polygons
    dissolved, measured on the ellipsoid, split equally among the commodities of the points that name it."""
    from pyproj import Geod

    polygons = gpd.read_parquet(truth / "mine_polygons.parquet")
    points = gpd.read_parquet(truth / "mine_points.parquet")
    geod = Geod(ellps="WGS84")
    by_commodity: dict[str, float] = {}
    by_country: dict[str, float] = {}
    for site, group in polygons.to_crs("EPSG:4326").groupby("site_id"):
        union = group.geometry.union_all().buffer(0)
        area = abs(geod.geometry_area_perimeter(union)[0]) / 1e6
        own = points[points["site_id"] == site]
        names = list(dict.fromkeys(c for cs in own["commodities"] for c in cs)) or [UNKNOWN]
        for name in names:
            by_commodity[name] = by_commodity.get(name, 0.0) + area / len(names)
        country = own["country"].mode().iloc[0] if len(own) else UNKNOWN
        by_country[country] = by_country.get(country, 0.0) + area
    return by_commodity, by_country


def test_sample_region_land_use_equals_the_truth(sample_region, sample_run, tmp_path):
    expected, expected_country = truth_land_use(sample_region.truth)
    assert len(expected) >= 2 and UNKNOWN in expected  # the sample has a site without any point
    out = tmp_path / "landuse"
    proc = mtg("landuse", str(sample_run / "sites" / "sites.parquet"), "-o", str(out), "--sensitivity",
               "250m,500m,750m")
    assert str(out) in proc.stdout
    table = pd.read_csv(out / "landuse_by_commodity.csv")
    got = rows(table, "commodity")
    assert got.pop("Total") == pytest.approx(sum(expected.values()), rel=1e-6)
    assert got == pytest.approx(expected, rel=1e-6)
    by_country = rows(pd.read_csv(out / "landuse_by_country.csv"), "country")
    by_country.pop("Total")
    assert by_country == pytest.approx(expected_country, rel=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unlinked_km2"] == pytest.approx(expected[UNKNOWN], rel=1e-6)
    assert set(summary["chosen_cuts"].values()) == {250.0}
    # cut per site: no one cut for all, the cuts chosen are reported
    assert summary["cut_m"] is None and summary["choose_cut"]["h_max_m"] == 750.0
    assert summary["chosen_cut_counts"] == {"250": len(summary["chosen_cuts"])}
    # the per-site table joins the site indicators on site_id
    by_site = pd.read_parquet(out / "landuse_by_site.parquet")
    indicators = gpd.read_parquet(sample_run / "indicators" / "site_indicators.parquet")
    joined = by_site.merge(indicators, on="site_id", suffixes=("", "_indicator"))
    assert len(joined) == len(by_site) > 0
    assert joined["area_km2"].to_numpy() == pytest.approx(joined["area_km2_indicator"].to_numpy())
    # at one fixed cut of 750 m a lithium prospect 332 m from a site joins it and two sites merge: the per-site
    # cut gives the truth, the fixed cut does not
    sensitivity = pd.read_csv(out / "landuse_sensitivity_by_commodity.csv")
    at_750 = sensitivity[sensitivity["cut"] == "750 m"].set_index("commodity")["area_km2"]
    assert "lithium" in at_750.index and "lithium" not in expected
    chosen = sensitivity[sensitivity["cut"] == "chosen per site"].set_index("commodity")["area_km2"].to_dict()
    chosen.pop("Total")
    assert chosen == pytest.approx(expected, rel=1e-6)
