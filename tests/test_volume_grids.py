"""`mtg volume` on grids not in ground metres, sites off the DEMs, DEMs without stable terrain, corrupt GeoTIFFs,
and the pixels each volume and its error are taken over (issue 13), on the Mount St. Helens series."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from conftest import shared_file
from test_volume import crater, msh, mtg  # noqa: F401 - crater is a fixture

WEBMERC = "msh_epoch1_base2000_webmerc.tif"


def base2000():
    return shared_file("mount_st_helens_dem_series", WEBMERC)


def test_ground_metres_tells_web_mercator_from_utm():
    from mtg.pipeline.dem_inputs import ground_metres, read_dem

    assert ground_metres(read_dem(msh(27)))
    assert not ground_metres(read_dem(base2000()))  # 1/cos(46.2 deg) = 1.44 CRS metres per ground metre


def test_web_mercator_epoch_is_measured_in_ground_metres_in_either_order(crater, tmp_path):
    # The 2000 base DEM is only in Web Mercator; the 2007 epoch in UTM 10N. Before the fix, the Web Mercator
    # epoch's grid was kept and every cell counted 1/cos^2(lat) = 2.09 times its area.
    sites, _ = crater
    rows = []
    for before, after in ((base2000(), msh(27)), (msh(27), base2000())):
        out = tmp_path / before.stem
        mtg("--before", str(before), "--after", str(after), "--sites", str(sites), "-o", str(out),
            "--no-coregister", "--threshold-m", "0")
        rows.append(gpd.read_parquet(out / "site_volumes.parquet").iloc[0])
        assert json.loads((out / "coregistration.json").read_text())["crs"] == "EPSG:26910"
    forward, backward = rows
    site_area = gpd.read_file(sites).area.iloc[0]  # in UTM 10N: ground metres
    assert forward["area_m2"] == pytest.approx(site_area, rel=1e-9)
    assert backward["area_m2"] == pytest.approx(site_area, rel=1e-9)
    # both on the UTM grid, dh exactly negated: the same volumes with the signs swapped
    assert forward["net_m3"] == pytest.approx(-backward["net_m3"], rel=1e-9)
    assert forward["deposited_m3"] == pytest.approx(backward["excavated_m3"], rel=1e-9)
    assert forward["net_m3"] == pytest.approx(9.9e7, rel=0.02)  # the dome and the 2004 crater changes since 2000


def test_sites_off_the_dems_are_reported_and_all_off_is_an_error(crater, tmp_path, caplog):
    from mtg.pipeline.errors import MtgError
    from mtg.pipeline.volume import measure_volumes

    sites, _ = crater
    frame = gpd.read_file(sites)
    far = box(*(np.array(frame.total_bounds) + [20_000, 0, 20_000, 0]))
    both = gpd.GeoDataFrame({"site_id": ["crater", "far"]}, geometry=[frame.geometry.iloc[0], far], crs=frame.crs)
    both.to_file(tmp_path / "both.gpkg")
    measure_volumes(msh(2), msh(27), tmp_path / "both.gpkg", tmp_path / "out", coregister=False, threshold_m=0.0)
    table = gpd.read_parquet(tmp_path / "out" / "site_volumes.parquet").set_index("site_id")
    assert table.loc["crater", "dem_coverage"] == pytest.approx(1.0)
    assert table.loc["far", "dem_coverage"] == 0.0 and math.isnan(table.loc["far", "net_m3"])
    assert "1 of 2 sites have no valid elevations" in caplog.text

    both.iloc[[1]].to_file(tmp_path / "far.gpkg")
    with pytest.raises(MtgError, match="none of the 1 sites"):
        measure_volumes(msh(2), msh(27), tmp_path / "far.gpkg", tmp_path / "none", coregister=False, threshold_m=0.0)
    proc = mtg("--before", str(msh(2)), "--after", str(msh(27)), "--sites", str(tmp_path / "far.gpkg"), "-o",
               str(tmp_path / "cli"), check=False)
    assert proc.returncode == 2 and "lies on the DEMs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def whole_grid(tmp_path_factory):
    """A site covering the whole Mount St. Helens grid but a 50 m rim: no stable terrain 200 m beyond it."""
    with rasterio.open(msh(2)) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    path = tmp_path_factory.mktemp("whole") / "whole.gpkg"
    gpd.GeoDataFrame({"site_id": ["all"]}, geometry=[box(left + 50, bottom + 50, right - 50, top - 50)],
                     crs=crs).to_file(path)
    return path


def test_no_stable_terrain_gives_volumes_with_unknown_errors(whole_grid, tmp_path):
    out = tmp_path / "out"
    proc = mtg("--before", str(msh(2)), "--after", str(msh(27)), "--sites", str(whole_grid), "-o", str(out),
               "--no-coregister", "--threshold-m", "0")
    row = gpd.read_parquet(out / "site_volumes.parquet").iloc[0]
    with rasterio.open(msh(2)) as a, rasterio.open(msh(27)) as b:
        dh = b.read(1).astype(np.float64) - a.read(1)
    assert row["net_m3"] == pytest.approx(dh[5:-5, 5:-5].sum() * 100.0, rel=1e-9)
    assert all(math.isnan(row[f"{k}_sigma_m3"]) for k in ("excavated", "deposited", "net"))
    report = json.loads((out / "coregistration.json").read_text())  # valid JSON: null, not NaN
    assert report["stable_nmad_m"] is None and report["variogram"]["range_m"] is None
    # stable terrain is still needed to co-register, or to set the threshold in NMAD units
    for extra in ([], ["--no-coregister"]):
        proc = mtg("--before", str(msh(2)), "--after", str(msh(27)), "--sites", str(whole_grid), "-o",
                   str(tmp_path / "x"), *extra, check=False)
        assert proc.returncode == 2 and "stable cells" in proc.stderr and "Traceback" not in proc.stderr


def test_net_volume_and_its_error_cover_the_same_cells(crater, tmp_path):
    # net_m3 = deposited_m3 - excavated_m3 sums the cells beyond the threshold; net_sigma_m3 is over their area
    from mtg.kernels.dh_statistics import volume_sigma

    sites, _ = crater
    out = tmp_path / "out"
    # the 2000 base resampled from Web Mercator: stable dh is not exactly 0, so the errors are not 0
    mtg("--before", str(base2000()), "--after", str(msh(27)), "--sites", str(sites), "-o", str(out),
        "--threshold-m", "2")
    row = gpd.read_parquet(out / "site_volumes.parquet").iloc[0]
    report = json.loads((out / "coregistration.json").read_text())
    vario = report["variogram"]
    assert row["net_m3"] == pytest.approx(row["deposited_m3"] - row["excavated_m3"], rel=1e-12)
    changed = row["excavated_area_m2"] + row["deposited_area_m2"]
    assert changed < row["area_m2"] and row["net_sigma_m3"] > 0
    expected = volume_sigma(changed, report["stable_nmad_m"], vario["range_m"],
                            nugget_fraction=min(max(vario["nugget_m2"] / vario["sill_m2"], 0.0), 1.0),
                            cell_area_m2=100.0)
    assert row["net_sigma_m3"] == pytest.approx(expected, rel=1e-12)


def test_corrupt_geotiff_is_one_line_naming_the_file(crater, tmp_path):
    # a real GeoTIFF cut short: its header reads, its pixels do not (the failure comes when the blocks are read)
    sites, _ = crater
    data = msh(27).read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 2])
    proc = mtg("--before", str(msh(2)), "--after", str(bad), "--sites", str(sites), "-o", str(tmp_path / "x"),
               check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert "truncated.tif" in proc.stderr and "cannot read the DEM" in proc.stderr
    assert not any((tmp_path / "x").glob("*"))  # nothing written
