"""`mtg run` on a catalog that is not the sample: the sample is not written, and only the given inventory's points
and commodities reach the sites, the land use and the indicators."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

MTG = str(Path(sys.executable).parent / "mtg")


def mtg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MTG, *args, "--quiet"], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_run_on_a_copied_catalog_with_other_points(sample_region, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(sample_region.root, copy)
    shutil.rmtree(copy / "truth")  # nothing of the sample's truth can be used
    largest = gpd.read_parquet(sample_region.truth / "mine_polygons.parquet").to_crs("EPSG:4326")
    largest = largest.loc[largest.to_crs(sample_region.epsg).area.idxmax(), "geometry"].representative_point()
    points = tmp_path / "inventory.csv"  # another inventory's layout: ICMM-like column names
    pd.DataFrame({"Longitude": [largest.x, largest.x + 2.0], "Latitude": [largest.y, largest.y],
                  "Primary Commodity": ["Lithium", "Coal"], "Country": ["Australia", "Australia"]}).to_csv(
        points, index=False)
    config = tmp_path / "run.yaml"
    config.write_text("ingest:\n  chunks: {space: 128}\n")
    bbox = ",".join(f"{v:.6f}" for v in sample_region.bbox_lonlat)
    proc = mtg("run", "--out", "run", "--catalog", str(copy / "catalog.json"), "--bbox", bbox, "--time",
               "/".join(sample_region.time_range), "--points", str(points), "--lon-col", "Longitude", "--lat-col",
               "Latitude", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert not (run / "sample").exists() and "sample STAC catalog" not in proc.stdout
    # the run folder records its catalog relative to itself (a copied run folder stays valid)
    assert json.loads((run / "cubes" / "ingest.json").read_text())["source"] == "../elsewhere/catalog.json"
    landuse = pd.read_csv(run / "landuse" / "landuse_by_commodity.csv")
    assert "lithium" in set(landuse["commodity"]) and set(landuse["commodity"]) <= {"lithium", "Unknown", "Total"}
    members = gpd.read_parquet(run / "sites" / "sites_members.parquet")
    assert set(members.loc[members["kind"] == "point", "source"]) == {"../inventory.csv"}  # as seen from the run
    assert (members["kind"] == "point").sum() == 2  # the far coal mine is a site of its own, without footprint
    indicators = pd.read_csv(run / "indicators" / "site_indicators.csv")
    assert set(indicators["country"]) <= {"Australia", "Unknown"}
    volumes = gpd.read_parquet(run / "volumes" / "site_volumes.parquet")  # the copy's DEM collection: two epochs
    assert len(volumes) > 0 and volumes["excavated_m3"].notna().any()


def test_a_catalog_run_needs_its_time_and_area(tmp_path):
    proc = mtg("run", "--out", str(tmp_path / "r"), "--catalog", str(tmp_path / "none" / "catalog.json"),
               "--bbox", "118,-23,118.1,-22.9")
    assert proc.returncode == 2 and "--time" in proc.stderr and not (tmp_path / "r" / "sample").exists()
    proc = mtg("run", "--out", str(tmp_path / "r"), "--catalog", str(tmp_path / "none" / "catalog.json"),
               "--time", "2023-01-01/2023-12-31")
    assert proc.returncode == 2 and "--bbox" in proc.stderr


@pytest.mark.slow
def test_a_catalog_with_one_dem_epoch_gets_no_volumes_and_says_so(sample_region, tmp_path):
    import pystac

    first = min(pystac.Item.from_file(p).datetime for p in sample_region.root.glob("cop-dem-glo-30/*/*.json"))
    day = first.date().isoformat()
    config = tmp_path / "run.yaml"  # as Planetary Computer's Copernicus DEM: one epoch over the area
    config.write_text(f"ingest:\n  chunks: {{space: 128}}\n  dem_time: {day}/{day}\n")
    bbox = ",".join(f"{v:.6f}" for v in sample_region.bbox_lonlat)
    proc = subprocess.run([MTG, "run", "--out", str(tmp_path / "run"), "--catalog", str(sample_region.catalog),
                           "--bbox", bbox, "--time", "/".join(sample_region.time_range), "--config", str(config)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "one epoch over the area: no volumes" in proc.stderr and "--dem-before" in proc.stderr
    assert "no mine property points" in proc.stderr  # no --points and not the sample catalog: none are invented
    assert not (tmp_path / "run" / "volumes").exists() and "volumes              not computed" in proc.stdout
    indicators = pd.read_csv(tmp_path / "run" / "indicators" / "site_indicators.csv")
    assert indicators["excavated_m3"].isna().all() and (indicators["n_points"] == 0).all()
    landuse = pd.read_csv(tmp_path / "run" / "landuse" / "landuse_by_commodity.csv")
    assert set(landuse["commodity"]) == {"Unknown", "Total"}
