"""A real dask-gateway server (local-process backend, 127.0.0.1) started by the tests, with the cluster options of
deploy/jupyterhub: a client computes on it, `mtg link`, `mtg landuse` and a small `mtg run` with `--scheduler gateway`
match the threaded run, and a wrong address, a refused password, refused options and a cluster that cannot start each
give one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import GATEWAY_PASSWORD as PASSWORD
from conftest import SMALL_RUN, SMALL_RUN_TABLES, start_gateway, stop_gateway

pytest.importorskip("dask_gateway_server", reason="dask-gateway-server is not installed (pip install "
                                                   "'dask-gateway-server[local]')")
pytest.importorskip("sqlalchemy", reason="the gateway's local backend needs sqlalchemy (dask-gateway-server[local])")

from dask_gateway import BasicAuth, Gateway  # noqa: E402

from mtg.pipeline.deploy import _close_gateway, gateway_cluster  # noqa: E402
from mtg.pipeline.errors import MtgError  # noqa: E402

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(90)  # a gateway that hangs fails the test instead of the suite


@pytest.fixture
def gateway_env(gateway_server, monkeypatch):
    """dask's config (as environment variables) that points `Gateway()` and `mtg --scheduler gateway` at it."""
    env = {"DASK_GATEWAY__ADDRESS": gateway_server, "DASK_GATEWAY__AUTH__TYPE": "basic",
           "DASK_GATEWAY__AUTH__KWARGS__USERNAME": "mtg", "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": PASSWORD,
           "DASK_GATEWAY__CLUSTER__OPTIONS__WORKER_MEMORY": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import dask

    dask.config.refresh()
    yield env
    for key in env:
        monkeypatch.delenv(key)
    dask.config.refresh()


def test_gateway_cluster_computes_and_shuts_down(gateway_server):
    gateway, cluster = Gateway(gateway_server, auth=BasicAuth("mtg", PASSWORD)), None
    try:
        options = gateway.cluster_options()
        assert {"worker_cores", "worker_memory", "worker_gpus"} <= set(options)
        options.worker_cores, options.worker_memory = 1, 1.0
        cluster = gateway.new_cluster(options)
        try:
            cluster.scale(1)
            with cluster.get_client() as client:
                client.wait_for_workers(1, timeout=60)
                info = client.scheduler_info()["workers"]
                (worker,) = info.values()
                assert worker["nthreads"] == 1 and worker["memory_limit"] == 2**30  # the options reached the worker
                import dask.array as da

                assert float(da.ones((2000, 2000), chunks=500).sum().compute()) == 4e6
        finally:
            cluster.shutdown()
        assert gateway.list_clusters() == []
    finally:
        if cluster is not None:
            _close_gateway(cluster.gateway)
        _close_gateway(gateway)


def _points(path: Path) -> Path:
    rng = np.random.default_rng(3)
    centres = rng.uniform([-70, -30], [-60, -20], size=(40, 2))
    pts = np.concatenate([c + rng.normal(scale=0.03, size=(25, 2)) for c in centres])
    pd.DataFrame({"lon": pts[:, 0], "lat": pts[:, 1]}).to_csv(path, index=False)
    return path


def test_mtg_link_on_gateway_matches_threads(gateway_env, tmp_path):
    points = _points(tmp_path / "points.csv")
    args = ["link", "--points", str(points), "--h-max", "10km", "--cut", "2km", "--cut", "5km", "--linkage", "average",
            "--quiet"]
    env = dict(os.environ, **gateway_env)
    threads = subprocess.run([str(BIN / "mtg"), *args, "-o", str(tmp_path / "threads.parquet")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert threads.returncode == 0, threads.stderr
    gateway = subprocess.run([str(BIN / "mtg"), *args, "--scheduler", "gateway", "--workers", "1", "-o",
                              str(tmp_path / "gateway.parquet")], env=env, capture_output=True, text=True, timeout=120)
    assert gateway.returncode == 0, gateway.stderr
    a, b = pd.read_parquet(tmp_path / "threads.parquet"), pd.read_parquet(tmp_path / "gateway.parquet")
    pd.testing.assert_frame_equal(a, b)
    gateway = Gateway(gateway_env["DASK_GATEWAY__ADDRESS"], auth=BasicAuth("mtg", PASSWORD))
    try:
        assert gateway.list_clusters() == []  # shut down after
    finally:
        _close_gateway(gateway)


@pytest.mark.timeout(240)
def test_mtg_run_on_gateway_matches_threads(small_run, gateway_env, tmp_path):
    """Every stage of `mtg run` (ingest, segmentation, volumes, land use) on one gateway cluster: the tables of the
    threaded run, and the cluster shut down after."""
    env = {**os.environ, **gateway_env, "DASK_GATEWAY__CLUSTER__OPTIONS__WORKER_MEMORY": "2"}  # the model's worker
    config = tmp_path / "run.toml"
    config.write_text(SMALL_RUN)
    proc = subprocess.run([str(BIN / "mtg"), "run", "--out", str(tmp_path / "gateway"), "--seed", "7", "--config",
                           str(config), "--quiet", "--scheduler", "gateway", "--workers", "1"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    for table in SMALL_RUN_TABLES:
        a, b = pd.read_parquet(small_run / table), pd.read_parquet(tmp_path / "gateway" / table)
        assert len(a), table
        pd.testing.assert_frame_equal(a, b, obj=table)
    gateway = Gateway(gateway_env["DASK_GATEWAY__ADDRESS"], auth=BasicAuth("mtg", PASSWORD))
    try:
        assert gateway.list_clusters() == []  # shut down after
    finally:
        _close_gateway(gateway)


def test_mtg_landuse_on_gateway_matches_the_run(small_run, gateway_env, tmp_path):
    """`mtg landuse --sensitivity --scheduler gateway`: the re-formed sites' unions and areas as tasks on a gateway
    cluster give the sensitivity the threaded run wrote."""
    proc = subprocess.run([str(BIN / "mtg"), "landuse", str(small_run / "sites" / "sites.parquet"), "-o",
                           str(tmp_path / "landuse"), "--sensitivity", "500m,1km", "--scheduler", "gateway",
                           "--workers", "1", "--quiet"], env={**os.environ, **gateway_env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for table in ("landuse_sensitivity.parquet", "landuse_sensitivity_by_commodity.parquet",
                  "landuse_by_site.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(small_run / "landuse" / table),
                                      pd.read_parquet(tmp_path / "landuse" / table), obj=table)


def test_wrong_address_refused_password_and_refused_options_are_one_line(gateway_env, monkeypatch):
    with pytest.raises(MtgError, match=r"cannot reach the dask-gateway server at http://127.0.0.1:9") as err:
        with gateway_cluster(1, address="http://127.0.0.1:9"):
            pass
    assert "\n" not in str(err.value)
    monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", "wrong")
    import dask

    dask.config.refresh()
    with pytest.raises(MtgError, match="refused the authentication") as err:
        with gateway_cluster(1):
            pass
    assert "\n" not in str(err.value)
    monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", PASSWORD)
    dask.config.refresh()
    with pytest.raises(MtgError, match="refused the request.*no GPUs"):
        with gateway_cluster(1, worker_gpus=1):
            pass


def test_cluster_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    # the server's default before distributed 2026: a dask-scheduler binary that no longer exists
    proc, address = start_gateway(tmp_path / "broken", ["dask-scheduler-not-installed"])
    try:
        monkeypatch.setenv("DASK_GATEWAY__AUTH__TYPE", "basic")
        monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__USERNAME", "mtg")
        monkeypatch.setenv("DASK_GATEWAY__AUTH__KWARGS__PASSWORD", PASSWORD)
        import dask

        dask.config.refresh()
        with pytest.raises(MtgError, match="could not start a cluster") as err:
            with gateway_cluster(1, address=address, worker_memory=1):
                pass
        assert "\n" not in str(err.value)
    finally:
        stop_gateway(proc)
        dask.config.refresh()


def test_cli_gateway_errors_are_one_line(gateway_env, tmp_path):
    """Through `mtg link`, which opens gateway clusters with deploy.gateway_cluster."""
    env = {**os.environ, **gateway_env, "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": "wrong"}
    proc = subprocess.run([str(BIN / "mtg"), "link", "--points", str(_points(tmp_path / "p.csv")), "--h-max", "5km",
                           "--scheduler", "gateway", "-o", str(tmp_path / "x.parquet")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "refused the authentication" in proc.stderr and "Traceback" not in proc.stderr
