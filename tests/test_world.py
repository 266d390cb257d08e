"""Global runs on the sample world: plans, seam-free tiles, the world stage, and runs that resume after kills.

The world here is small (4 districts of 4 km, 6 dates; three UTM zones, both hemispheres, the Ermelo district across
the zone 35/36 boundary, Gällivare above 60 degrees); the tests run the real `mtg` commands in real processes and a
real LocalCluster. The big world: `make world` (README).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import psutil
import pytest
import shapely

from mtg.kernels.dh_statistics import volume_sigma
from mtg.pipeline.config import RunConfig
from mtg.pipeline.plan import read_plan
from mtg.pipeline.tile_run import file_checksum, owned_parts
from mtg.pipeline.tiled_run import read_manifest, run_plan
from mtg.pipeline.tiling import buffered_aoi, merge_across_seams, work_tiles
from mtg.pipeline.world_stage import TileOutputs, site_volumes

MTG = str(Path(sys.executable).parent / "mtg")
#: Outputs compared byte for byte between an interrupted and an uninterrupted run.
WORLD_FILES = ("segment/mine_polygons.parquet", "sites/sites.parquet", "sites/sites_members.parquet",
               "volumes/site_volumes.parquet", "volumes/waste_deposits.parquet", "landuse/landuse_by_commodity.csv",
               "landuse/landuse_by_country.csv", "indicators/site_indicators.parquet", "world.json")
TILE_FILES = ("footprints.parquet", "part_volumes.parquet", "deposits.parquet", "tile.json", "probability.zarr")


def mtg(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], capture_output=True, text=True, timeout=900, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "world"
    mtg("sample", "--world", "4", "--size-km", "4", "--n-dates", "6", "--out", str(root))
    return root


def _plan(world: Path, out: Path, *districts: str, config: Path | None = None) -> Path:
    """A plan over the mine points (300 m buffers, 3 km tiles) of ``districts`` (default all)."""
    points = gpd.read_parquet(world / "truth" / "mine_points.parquet")
    if districts:
        points = points[points["district"].isin(districts)]
    aoi = out.parent / f"{out.stem}-aoi.parquet"
    points.to_parquet(aoi)
    first, last = json.loads((world / "world.json").read_text())["time_range"]
    mtg("plan", "--catalog", str(world / "catalog.json"), "--aoi", str(aoi), "--buffer", "300m", "--tile-km", "3",
        "--time", f"{first}/{last}", "-o", str(out), *(("--config", str(config)) if config else ()))
    return out


def _run_args(plan: Path, out: Path, world: Path) -> list[str]:
    return ["run", "--plan", str(plan), "--out", str(out), "--points", str(world / "truth" / "mine_points.parquet"),
            "--country-col", "country"]


def test_sample_world_covers_zones_hemispheres_a_boundary_and_the_arctic(world):
    districts = gpd.read_parquet(world / "truth" / "districts.parquet")
    zones = {z for zs in districts["utm_zones"] for z in zs}
    lat = districts.geometry.representative_point().y
    assert len(zones) >= 3 and (lat > 0).any() and (lat < 0).any() and (lat > 60).any()
    assert districts["crosses_zone_boundary"].sum() == 1
    points = gpd.read_parquet(world / "truth" / "mine_points.parquet")
    assert set(points["district"]) == set(districts["district"]) and points["country"].notna().all()
    again = mtg("sample", "--world", "4", "--size-km", "4", "--n-dates", "6", "--out", str(world))
    assert "4 districts" in again.stdout  # the same parameters reuse the complete world


def test_plan_tiles_are_the_same_on_every_rerun(world, tmp_path):
    first, second = _plan(world, tmp_path / "a.parquet"), _plan(world, tmp_path / "b.parquet")
    a, meta = read_plan(first)
    b, _ = read_plan(second)
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert all(x.equals_exact(y, 0) for x, y in zip(a.geometry, b.geometry))
    assert a["tile_id"].is_unique and (a["scenes"] > 0).all() and a["epsg"].nunique() >= 4
    assert meta["summary"]["tiles"] == len(a) and meta["catalog"].endswith("catalog.json")
    # each tile belongs to one zone: owned polygons of different tiles never overlap
    tree = shapely.STRtree(a.geometry.to_numpy())
    left, right = tree.query(a.geometry.to_numpy(), predicate="overlaps")
    assert not any(shapely.area(shapely.intersection(a.geometry[i], a.geometry[j])) > 1e-12
                   for i, j in zip(left, right) if i != j)


def test_zone_straddling_mines_are_one_polygon_counted_once(world):
    truth = gpd.read_parquet(world / "truth" / "mine_polygons.parquet")
    erm = truth[truth["district"] == "ERM"].reset_index(drop=True)
    tiles = work_tiles(buffered_aoi(erm, 200.0), 3000.0, 300.0)
    assert {32735, 32736} <= set(tiles["epsg"])  # the district lies on both sides of 30 deg E
    parts = pd.concat([owned_parts(erm, t.geometry, t.tile_id) for t in tiles.itertuples()], ignore_index=True)
    parts = gpd.GeoDataFrame(parts, geometry="geometry", crs="EPSG:4326")
    merged, labels = merge_across_seams(parts, by="feature_type")
    geod = merged.crs.get_geod()
    truth_area = sum(abs(geod.geometry_area_perimeter(g)[0])
                     for g in erm.dissolve("feature_type").geometry)
    # the union snaps vertices to a ~1 cm grid (MERGE_GRID_DEG): metre-square differences on 0.19 km^2
    assert merged["area_m2"].sum() == pytest.approx(truth_area, rel=2e-5)
    crossing = erm[erm.geometry.bounds["minx"].lt(30.0) & erm.geometry.bounds["maxx"].gt(30.0)]
    assert len(crossing) >= 1 and len(parts) > len(erm)  # some mines were cut by the zone boundary or tile edges
    for geom in crossing.geometry:
        hits = merged[merged.intersects(geom.representative_point())]
        assert len(hits) == 1 and hits["n_parts"].iloc[0] >= 2  # cut into parts, merged back into one


def test_site_volumes_sum_parts_and_add_tile_errors_in_quadrature():
    dh = {"nmad_m": 1.5, "cell_size_m": [30.0, 30.0],
          "variogram": {"sill_m2": 2.25, "range_m": 400.0, "nugget_m2": 0.25}}
    parts = gpd.GeoDataFrame({"part_id": ["A:1", "A:2", "B:1", "C:1"], "tile_id": ["A", "A", "B", "C"]},
                             geometry=[shapely.Point(0, 0)] * 4, crs="EPSG:4326")
    sums = {"excavated_m3": [100.0, 50.0, 20.0, 7.0], "deposited_m3": [0.0, 10.0, 5.0, 1.0],
            "net_m3": [-100.0, -40.0, -15.0, -6.0], "excavated_area_m2": [9e4, 4e4, 2e4, 1e4],
            "deposited_area_m2": [0.0, 1e4, 5e3, 1e3], "area_m2": [1e5, 5e4, 3e4, 2e4],
            "void_fraction": [0.0, 0.1, 0.0, 0.0]}
    volumes = pd.DataFrame({"part_id": ["A:1", "A:2", "B:1", "C:1"], "tile_id": ["A", "A", "B", "C"], **sums})
    tiles = TileOutputs(parts=parts, part_volumes=volumes, deposits=parts.iloc[:0], dh={"A": dh, "B": dh, "C": dh},
                        volumes={"A": "computed", "B": "computed", "C": "computed"})
    sites = gpd.GeoDataFrame({"site_id": ["s1", "s2"]}, geometry=[shapely.Point(0, 0)] * 2, crs="EPSG:4326")
    table = site_volumes(sites, np.array(["s1", "s1", "s1", "s2"], dtype=object), tiles).set_index("site_id")
    s1 = table.loc["s1"]
    assert s1["excavated_m3"] == 170.0 and s1["net_m3"] == -155.0 and s1["n_tiles"] == 2
    assert s1["void_fraction"] == pytest.approx(5e3 / 1.8e5)

    def sigma(area: float) -> float:
        return float(volume_sigma(area, 1.5, 400.0, nugget_fraction=0.25 / 2.25, cell_area_m2=900.0))

    # parts of one tile share its co-registration (one area), tiles are independent (quadrature)
    assert s1["excavated_sigma_m3"] == pytest.approx(np.hypot(sigma(1.3e5), sigma(2e4)), rel=1e-12)
    assert s1["net_sigma_m3"] == pytest.approx(np.hypot(sigma(1.5e5), sigma(3e4)), rel=1e-12)
    # a tile without stable terrain (measured with --no-coregister --threshold-m) has unknown errors
    unknown = {**dh, "nmad_m": float("nan"), "variogram": {**dh["variogram"], "range_m": float("nan")}}
    table = site_volumes(sites, np.array(["s1", "s1", "s1", "s2"], dtype=object),
                         TileOutputs(parts=parts, part_volumes=volumes, deposits=parts.iloc[:0],
                                     dh={"A": dh, "B": dh, "C": unknown}, volumes=tiles.volumes)).set_index("site_id")
    assert np.isnan(table.loc["s2", "excavated_sigma_m3"]) and table.loc["s2", "excavated_m3"] == 7.0
    assert np.isfinite(table.loc["s1", "excavated_sigma_m3"])
    # a part in a tile without volumes leaves its site without volumes, not with a partial sum
    partial = TileOutputs(parts=parts, part_volumes=volumes[volumes["tile_id"] != "B"], deposits=parts.iloc[:0],
                          dh={"A": dh, "C": dh}, volumes={"A": "computed", "B": "one DEM epoch", "C": "computed"})
    table = site_volumes(sites, np.array(["s1", "s1", "s1", "s2"], dtype=object), partial).set_index("site_id")
    assert np.isnan(table.loc["s1", "excavated_m3"]) and table.loc["s2", "excavated_m3"] == 7.0


def _digests(out: Path, tile_ids: list[str]) -> dict[str, str]:
    found = {f"tiles/{t}/{name}": file_checksum(out / "tiles" / t / name) for t in tile_ids for name in TILE_FILES}
    found.update({name: file_checksum(out / name) for name in WORLD_FILES if (out / name).exists()})
    return found


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the fault could be injected: {proc.stderr.read()}")
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.2)


def _states(out: Path) -> pd.Series:
    try:
        manifest, _ = read_manifest(out)
    except Exception:  # noqa: BLE001 - read while the run rewrites it; the next poll sees it
        return pd.Series([], dtype=object)
    return pd.Series([], dtype=object) if manifest is None else manifest["state"]


@pytest.mark.slow
def test_killed_client_and_worker_resume_to_identical_outputs(world, tmp_path):
    plan = _plan(world, tmp_path / "plan.parquet")
    tiles = read_plan(plan)[0]["tile_id"].tolist()
    # the uninterrupted reference run, in this process on the threaded scheduler
    cfg = RunConfig().model_copy(update={"out": str(tmp_path / "clean")})
    cfg = cfg.model_copy(update={"link": cfg.link.model_copy(update={
        "points": str(world / "truth" / "mine_points.parquet"), "country_col": "country"})})
    clean = run_plan(plan, cfg, progress=False)
    assert clean.done == len(tiles) and clean.failed == 0 and clean.world is not None
    reference = _digests(tmp_path / "clean", tiles)

    out = tmp_path / "killed"
    # 1. SIGKILL of the client after two tiles are done
    proc = subprocess.Popen([MTG, *_run_args(plan, out, world), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (_states(out) == "done").sum() >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _states(out)
    assert (before == "done").sum() >= 2 and (before != "done").any()
    done_first = read_manifest(out)[0].query("state == 'done'")["tile_id"].tolist()
    mtimes = {t: (out / "tiles" / t / "tile.json").stat().st_mtime_ns for t in done_first}

    # 2. the same command resumes on a LocalCluster; one worker process is killed while a tile runs on it
    proc = subprocess.Popen([MTG, *_run_args(plan, out, world), "--scheduler", "local", "--workers", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (_states(out) == "running").any() and len(_workers(proc.pid)) == 2, proc)
    time.sleep(1.0)
    os.kill(_workers(proc.pid)[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    manifest, _ = read_manifest(out)
    assert (manifest["state"] == "done").all()
    assert {t: (out / "tiles" / t / "tile.json").stat().st_mtime_ns for t in done_first} == mtimes  # not redone
    assert _digests(out, tiles) == reference

    # 3. plan --check compares the prediction with the seconds the run measured
    check = mtg("plan", "--check", str(out))
    assert "measured/predicted" in check.stdout


def _workers(pid: int) -> list[int]:
    """LocalCluster worker processes of the `mtg` process ``pid`` (its spawned children; nannies run in it)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "resource_tracker" not in " ".join(c.cmdline())]


@pytest.mark.slow
def test_a_tile_with_a_corrupt_scene_fails_with_its_reason_and_the_others_finish(world, tmp_path):
    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    plan = _plan(copy, tmp_path / "plan.parquet", "PIL", "MDD")
    plan_frame = read_plan(plan)[0]
    bad = sorted((copy / "sentinel-2-l2a").glob("*_T19L*/*_B04_*.tif"))[0]
    bad.write_bytes(bad.read_bytes()[:2000])  # a truncated COG, as a broken download leaves it
    proc = mtg(*_run_args(plan, tmp_path / "run", copy), "--retries", "1", check=False)
    assert proc.returncode == 1, proc.stderr
    manifest, _ = read_manifest(tmp_path / "run")
    failed = manifest[manifest["state"] == "failed"]
    mdd = plan_frame["epsg"].eq(32719).to_numpy()
    assert set(failed["tile_id"]) == set(plan_frame.loc[mdd, "tile_id"])
    assert (failed["attempts"] == 2).all() and failed["error"].str.contains(bad.name).all()
    assert (manifest.loc[manifest["state"] != "failed", "state"] == "done").all()
    assert "tiles failed" in proc.stderr and bad.name in proc.stdout
    sites = gpd.read_parquet(tmp_path / "run" / "sites" / "sites.parquet")
    in_failed = shapely.intersects_xy(shapely.box(-71, -14, -69, -12), sites["lon"], sites["lat"])
    assert in_failed.any() and (sites.loc[in_failed, "n_polygons"] == 0).all()  # only the points are left there
    assert (sites.loc[~in_failed, "n_polygons"] > 0).any()
    world_summary = json.loads((tmp_path / "run" / "world.json").read_text())
    assert set(world_summary["tiles_failed"]) == set(failed["tile_id"])


def test_a_run_folder_belongs_to_one_plan(world, tmp_path):
    from mtg.pipeline.tiled_run import plan_digest, reconcile, write_manifest

    plan = _plan(world, tmp_path / "plan.parquet", "PIL")
    other = _plan(world, tmp_path / "other.parquet", "AIT")
    out = tmp_path / "run"
    out.mkdir()
    frame, meta = read_plan(plan)
    write_manifest(out, reconcile(frame, None, out), {"plan": str(plan), "plan_digest": plan_digest(frame, meta)})
    proc = mtg("run", "--plan", str(other), "--out", str(out), check=False)
    assert proc.returncode == 2 and "holds a run of another plan" in proc.stderr


@pytest.mark.slow
def test_a_lost_scheduler_stops_the_run_with_one_line_and_a_new_one_resumes_it(world, tmp_path):
    plan = _plan(world, tmp_path / "plan.parquet", "PIL", "AIT")
    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"

    def cluster() -> list[subprocess.Popen]:
        scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                      "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "2", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return [scheduler, worker]

    out = tmp_path / "run"
    procs = cluster()
    try:
        run = subprocess.Popen([MTG, *_run_args(plan, out, world), "--scheduler", address, "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: (_states(out) == "done").sum() >= 1, run)
        procs[0].kill()
        _, stderr = run.communicate(timeout=300)
        # distributed logs its failed reconnection; the run ends with its own line
        assert run.returncode == 2 and "error: lost the Dask scheduler" in stderr.split("[")[-1]
        assert not (_states(out) == "failed").any()  # the scheduler's loss is no tile's failure
    finally:
        for p in procs:
            p.kill()
            p.wait()
    procs = cluster()
    try:
        mtg(*_run_args(plan, out, world), "--scheduler", address)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    manifest, _ = read_manifest(out)
    assert (manifest["state"] == "done").all() and (manifest["attempts"] == 1).all()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_planned_run_with_tile_timelines_gives_per_site_series(world, tmp_path):
    """``timeline.tiles``: every tile maps its periods, the world stage turns them into per-site series, and the
    indicators take their onset and area before and after from them. The last period's areas agree with the
    footprints segmented from the whole series (both use the latest clear views; they differ by the Markov rule
    and by areas outside the sites' footprints); a done tile without period layers is redone."""
    from mtg.pipeline.tiled_run import reconcile

    config = tmp_path / "run.yaml"
    config.write_text("timeline: {tiles: true}\n")
    plan = _plan(world, tmp_path / "plan.parquet", "PIL", config=config)
    frame, meta = read_plan(plan)
    years = [int(y[:4]) for y in meta["time"].split("/")]
    # the plan counts one more segmentation per year of the time range in every tile
    np.testing.assert_allclose(frame["est_timeline_s"], (years[1] - years[0] + 1) * frame["est_segment_s"])
    out = tmp_path / "run"
    mtg(*_run_args(plan, out, world), "--config", str(config))
    manifest, _ = read_manifest(out)
    done = manifest[manifest["state"] == "done"]
    assert len(done) >= 2 and (done["timeline_s"] > 0).all()
    assert all("periods.parquet" in json.loads(c) for c in done["checksums"])
    acquired = sorted({a["datetime"][:4] for a in json.loads(
        (world / "truth" / "PIL" / "acquisitions.json").read_text())})
    series = pd.read_parquet(out / "timeline" / "site_series.parquet")
    assert sorted(series["period"].unique()) == acquired
    assert series["missing_share"].between(0.0, 1.0).all()
    table = gpd.read_parquet(out / "indicators" / "site_indicators.parquet").set_index("site_id")
    mapped = table[table["area_km2"] > 0.01]
    assert mapped["onset"].notna().all() and mapped["area_after_km2"].notna().all()
    last = series[series["period"] == acquired[-1]].set_index("site_id")["area_m2"]
    segmented = gpd.read_parquet(out / "segment" / "mine_polygons.parquet")["area_m2"].sum()
    print({"last_period_m2": last.sum(), "segmented_m2": segmented,
           "series": series.groupby("period")["area_m2"].sum().round().to_dict()})
    assert 0.9 * segmented <= last.sum() <= 1.05 * segmented, (last.sum(), segmented)  # measured 0.991
    np.testing.assert_allclose(table.loc[last.index, "area_after_km2"], last / 1e6, rtol=1e-9)
    check = mtg("plan", "--check", str(out)).stdout
    assert "timeline" in check and "measured/predicted" in check
    # a rerun with the timeline on redoes a done tile whose folder lacks its period layers
    first = done["tile_id"].iloc[0]
    (out / "tiles" / first / "periods.parquet").unlink()
    again = reconcile(frame, manifest, out, periods=True).set_index("tile_id")
    assert again.loc[first, "state"] == "pending"
    assert (again.drop(index=first).loc[done["tile_id"].iloc[1:], "state"] == "done").all()
    assert reconcile(frame, manifest, out).set_index("tile_id").loc[first, "state"] == "done"
