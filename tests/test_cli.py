"""The real `mtg` command on real files: sample, ingest (local and S3) and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtg.pipeline.zarr_store import open_cube, store_state

MTG = str(Path(sys.executable).parent / "mtg")


def mtg(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], capture_output=True, text=True, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_run_writes_sample_catalog_and_cubes(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[sample]\nsize_km = 3\nn_dates = 6\n[ingest.chunks]\nspace = 128\n")
    proc = mtg("run", "--out", "run", "--seed", "7", "--config", str(config), cwd=tmp_path)  # a relative --out
    out = tmp_path / "run"
    for path in ("sample/catalog.json", "sample/truth/mine_polygons.parquet", "cubes/reflectance.zarr",
                 "cubes/dem.zarr", "cubes/ingest.json", "segment/probability.zarr", "segment/mine_polygons.parquet"):
        assert (out / path).exists(), path
        assert str(out / path.split("/")[0]) in proc.stdout
    assert json.loads((out / "sample" / "sample.json").read_text())["parameters"]["seed"] == 7
    refl = open_cube(str(out / "cubes" / "reflectance.zarr"))
    assert refl.sizes["time"] == 6 and refl.odc.geobox.resolution.x == 10
    # the linking stage (single linkage at 1 km) groups the segmentation's polygons as planar distances in UTM say
    import geopandas as gpd
    import pandas as pd
    from scipy.sparse.csgraph import connected_components

    footprints = gpd.read_parquet(out / "segment" / "mine_polygons.parquet")
    assert len(footprints) > 0
    points = gpd.read_parquet(out / "sample" / "truth" / "mine_points.parquet").to_crs(footprints.crs)
    geoms = np.concatenate([footprints.geometry.to_numpy(), points.geometry.to_numpy()])  # points link sites too
    near = np.array([[a.distance(b) <= 1000.0 for b in geoms] for a in geoms])
    expected = connected_components(near, directed=False)[1]
    members = pd.read_parquet(out / "sites" / "sites_members.parquet")
    # the 1 km partition (sites themselves are cut per site at 250 m-1 km for land use: landuse.choose_cut)
    linked = members["cluster_1000"].to_numpy()  # polygons, then points, in input order
    assert len(set(zip(expected, linked))) == len(set(expected)) == len(set(linked))
    assert str(out / "sites" / "sites.parquet") in proc.stdout
    for path in ("landuse/summary.json", "landuse/landuse_by_commodity.csv", "indicators/site_indicators.parquet",
                 "indicators/site_indicators.csv", "report.html", "stac/catalog.json"):
        assert (out / path).is_file(), path
    assert proc.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    # every output of the real run names its inputs relative to the run folder, timeline included
    verified = mtg("publish", str(out), "--verify")
    assert "assets match their files" in verified.stdout
    # a second run reuses the sample and finds the cubes complete
    again = mtg("run", "--out", str(out), "--seed", "7", "--config", str(config))
    summary = json.loads((out / "cubes" / "ingest.json").read_text())
    assert summary["result"]["reflectance_status"] == "skipped", again.stderr


@pytest.mark.slow
@pytest.mark.s3
def test_sample_then_ingest_to_s3_from_the_command_line(tmp_path, s3_server):
    options, bucket = s3_server
    mtg("sample", "--out", str(tmp_path / "s"), "--size-km", "3", "--n-dates", "6", "--seed", "1")
    region = json.loads((tmp_path / "s" / "sample.json").read_text())["region"]
    bbox = ",".join(f"{v:.6f}" for v in region["bbox_lonlat"])
    url = f"s3://{bucket}/cli"
    proc = mtg("ingest", "--catalog", str(tmp_path / "s"), "--bbox", bbox, "--time", "/".join(region["time_range"]),
               "--out", url, "--storage-options", json.dumps(options), "--loader", "stackstac",
               "--space-chunk", "128")
    assert f"{url}/reflectance.zarr" in proc.stdout
    assert store_state(f"{url}/reflectance.zarr", options)[0] == "complete"
    assert open_cube(f"{url}/dem.zarr", options).sizes["time"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["ingest", "--catalog", "no-such-catalog", "--bbox", "1,2,3,4", "--out", "x"], "no-such-catalog"),
        (["ingest", "--catalog", "sample", "--bbox", "780000,7410000,790000,7420000", "--out", "x"],
         "not in longitude/latitude"),
        (["ingest", "--catalog", "sample", "--out", "x"], "exactly one of --bbox"),
        (["ingest", "--loader", "gdal", "--out", "x"], "ingest.loader"),
        (["run", "--scheduler", "slurm"], "dask.scheduler"),
    ],
)
def test_bad_input_gives_one_clear_line_and_status_2(tmp_path, args, message):
    proc = mtg(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
