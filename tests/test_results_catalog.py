"""`mtg publish`: the run's STAC catalog of results loads with pystac, and its sizes and checksums match the files."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pystac
import pytest

from mtg.pipeline.errors import MtgError
from mtg.pipeline.report import write_report
from mtg.pipeline.results_catalog import verify_results_catalog, write_results_catalog
from run_folder import write_run_folder

MTG = str(Path(sys.executable).parent / "mtg")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = write_run_folder(tmp_path_factory.mktemp("publish") / "run")
    write_report(run)
    return run


@pytest.fixture(scope="module")
def catalog_path(run_dir) -> Path:
    proc = subprocess.run([MTG, "publish", str(run_dir), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run_dir / "stac" / "catalog.json"


def shell_checksum(path: Path) -> str:
    """The checksum as the module docstring tells a user to compute it: sha256sum, over a manifest for folders."""
    if path.is_file():
        return "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
    out = subprocess.run("find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum", shell=True,
                         cwd=path, capture_output=True, text=True, check=True).stdout
    return "1220" + out.split()[0]


def test_catalog_loads_and_every_asset_resolves_with_its_checksum(catalog_path, run_dir):
    catalog = pystac.Catalog.from_file(str(catalog_path))
    items = {item.id: item for item in catalog.get_items()}
    assert set(items) == {"sites", "site-indicators", "land-use", "site-volumes", "waste-deposits", "elevation-change",
                          "segmentation", "timeline", "verification", "report"}  # no cubes: the fixture run has no ingest
    coreg = json.loads((run_dir / "volumes" / "coregistration.json").read_text())
    sample_bbox = json.loads((run_dir / "sample" / "sample.json").read_text())["region"]["bbox_lonlat"]
    hrefs = set()
    for item in items.values():
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert raw["stac_extensions"] == ["https://stac-extensions.github.io/file/v2.1.0/schema.json"]
        assert raw["properties"]["start_datetime"].startswith(coreg["before_date"])
        assert raw["properties"]["end_datetime"].startswith(coreg["after_date"])
        west, south, east, north = item.bbox
        assert sample_bbox[0] - 1e-3 <= west < east <= sample_bbox[2] + 1e-3
        assert sample_bbox[1] - 1e-3 <= south < north <= sample_bbox[3] + 1e-3
        for key, asset in item.assets.items():
            assert not raw["assets"][key]["href"].startswith("/"), "hrefs must be relative (self-contained)"
            path = Path(asset.get_absolute_href())
            assert path.exists() and path.resolve().is_relative_to(run_dir)
            assert asset.roles
            assert asset.extra_fields["file:checksum"] == shell_checksum(path)
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
            assert asset.extra_fields["file:size"] == size
            hrefs.add(path.relative_to(run_dir).as_posix())
    assert {"sites/sites.parquet", "volumes/dh.zarr", "segment/probability.zarr", "report.html",
            "indicators/site_indicators.parquet", "landuse/summary.json", "volumes/waste_deposits.parquet"} <= hrefs
    assert verify_results_catalog(catalog_path) == sum(len(i.assets) for i in items.values())
    media = {(item_id, key): asset.media_type for item_id, item in items.items() for key, asset in item.assets.items()}
    assert {media[k] for k in media} == {"application/vnd.apache.parquet", "application/vnd.zarr; version=3",
                                         "text/csv", "application/json", "text/html"}
    assert media["sites", "sites"] == media["site-indicators", "indicators"] == "application/vnd.apache.parquet"
    assert media["site-indicators", "indicators-csv"] == media["verification", "verification-csv"] == "text/csv"
    assert media["elevation-change", "dh"] == media["segmentation", "probability"] == "application/vnd.zarr; version=3"
    assert media["land-use", "summary"] == media["site-volumes", "coregistration"] == "application/json"
    assert media["report", "report"] == "text/html"


def test_a_copied_run_folder_still_verifies_and_a_changed_file_is_named(catalog_path, run_dir, tmp_path):
    copy = tmp_path / "shared-run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("sample"))
    assert verify_results_catalog(copy / "stac") > 0
    with (copy / "volumes" / "coregistration.json").open("a") as f:
        f.write(" ")
    with pytest.raises(MtgError, match="site-volumes/coregistration: checksum"):
        verify_results_catalog(copy / "stac" / "catalog.json")
    shutil.rmtree(copy / "volumes" / "dh.zarr")
    with pytest.raises(MtgError, match="elevation-change/dh: .*dh.zarr is missing"):
        verify_results_catalog(copy / "stac" / "catalog.json")


def test_a_run_that_found_no_sites_gets_items_without_geometry(tmp_path):
    """No sites, no extent: the items have a null geometry and bbox (valid STAC), and the report still renders."""
    import numpy as np
    import pandas as pd

    from mtg.pipeline.site_assembly import MEMBER_COLUMNS, FootprintAreas, assemble_sites

    run = tmp_path / "empty-run"
    (run / "sites").mkdir(parents=True)
    assemble_sites(pd.DataFrame(columns=MEMBER_COLUMNS), np.array([], dtype=np.int64), FootprintAreas([]),
                   1000.0).to_parquet(run / "sites" / "sites.parquet")
    write_report(run)
    catalog = pystac.Catalog.from_file(str(write_results_catalog(run)))
    items = {item.id: item for item in catalog.get_items()}
    assert set(items) == {"sites", "report"}
    assert all(item.geometry is None and item.bbox is None for item in items.values())
    assert verify_results_catalog(run / "stac") == 2


def test_rewriting_replaces_the_catalog_and_a_run_without_sites_is_refused(catalog_path, run_dir, tmp_path):
    assert write_results_catalog(run_dir) == catalog_path
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".stac")]
    with pytest.raises(MtgError, match="sites.parquet does not exist"):
        write_results_catalog(tmp_path)


def test_a_moved_run_folder_holds_no_path_of_the_machine_and_verifies(catalog_path, run_dir, tmp_path):
    """Every output names files relative to the run folder: the folder moved elsewhere (original gone) verifies with
    `mtg publish --verify`, and no file of it holds the original absolute path."""
    moved = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(run_dir, moved)
    for path in (p for p in moved.rglob("*") if p.is_file()):
        assert str(run_dir).encode() not in path.read_bytes(), path
    members = pd.read_parquet(moved / "sites" / "sites_members.parquet")
    assert set(members["source"]) == {"sample/truth/mine_polygons.parquet", "sample/truth/mine_points.parquet"}
    assert all((moved / s).is_file() for s in members["source"])
    assert json.loads((moved / "landuse" / "summary.json").read_text())["sites"] == "sites/sites.parquet"
    proc = subprocess.run([MTG, "publish", str(moved), "--verify", "--quiet"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "assets match their files" in proc.stdout, proc.stderr


def test_an_output_with_an_absolute_path_fails_verification(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("sample"))
    summary = json.loads((copy / "landuse" / "summary.json").read_text())
    summary["sites"] = str(copy / "sites" / "sites.parquet")
    (copy / "landuse" / "summary.json").write_text(json.dumps(summary))
    write_results_catalog(copy)
    with pytest.raises(MtgError, match=r"land-use/summary: .*holds absolute local paths.*sites\.parquet"):
        verify_results_catalog(copy / "stac")
    catalog = json.loads((copy / "stac" / "report" / "report.json").read_text())
    catalog["assets"]["report"]["href"] = str(copy / "report.html")
    (copy / "stac" / "report" / "report.json").write_text(json.dumps(catalog))
    with pytest.raises(MtgError, match="report/report: href .* is not relative"):
        verify_results_catalog(copy / "stac")
