"""Shared fixtures: the small sample region, the real data folder, a moto S3 server process, a small `mtg run` and a
real dask-gateway server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTG_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARTIFACTS = ROOT / "test-artifacts"


def shared_file(*parts: str) -> Path:
    """A file of the real reference data in ``../shared/data``; the test skips when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real reference data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def sample_region(tmp_path_factory):
    """A small (3 km) sample region written once per test session."""
    from mtg.pipeline.sample import write_sample_region

    return write_sample_region(tmp_path_factory.mktemp("sample") / "sample", seed=0, size_km=3.0, n_dates=6)


@pytest.fixture(scope="session")
def sample_cubes(sample_region, tmp_path_factory):
    """The session's sample region ingested into reflectance.zarr and dem.zarr with 128-pixel chunks (read only)."""
    from odc.geo.geom import box

    from mtg.pipeline.catalogs import resolve_source
    from mtg.pipeline.ingest import Chunking, build_cubes, write_cubes

    chunking = Chunking(time=6, space=128)
    built = build_cubes(resolve_source(str(sample_region.catalog)),
                        box(*sample_region.bounds, f"EPSG:{sample_region.epsg}"),
                        "/".join(sample_region.time_range), chunking=chunking)
    return write_cubes(built, str(tmp_path_factory.mktemp("cubes") / "cubes"), chunking=chunking)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server in its own process on 127.0.0.1, with a fresh bucket.

    CI starts one and names it in ``MTG_TEST_S3_ENDPOINT``; otherwise the fixture starts its own.
    Yields the storage options a user would pass (``endpoint_url``, ``key``, ``secret``) and the bucket.
    """
    import s3fs

    endpoint = os.environ.get("MTG_TEST_S3_ENDPOINT")
    if endpoint:
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        bucket = f"mtg-test-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem(**options).mkdir(bucket)
        yield options, bucket
        return
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if moto is None:
        pytest.fail("moto_server is not installed: install the project's dev extra (moto[server])")
    port = _free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto S3 server did not start on {endpoint}")
            time.sleep(0.1)
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).mkdir("mtg-test")
    yield options, "mtg-test"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for files a test leaves for people to look at (screenshots, tables)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def sample_run(sample_region, tmp_path_factory):
    """Sites, volumes and indicators of the small sample region, as `mtg run` makes them (truth polygons as the
    footprints). Sites are linked with the cut chosen per site (H = 750 m, levels 250 m and 500 m), the setting
    under which the 3 km sample's linking recovers its truth sites (its sites lie 679 m apart, prospects 332 m and
    896 m from the nearest site)."""
    from mtg.pipeline.indicators import run_indicators
    from mtg.pipeline.link import link_sites
    from mtg.pipeline.volume import measure_volumes

    run = tmp_path_factory.mktemp("sample-run")
    truth = sample_region.truth
    sites = link_sites([truth / "mine_polygons.parquet"], truth / "mine_points.parquet", run / "sites" / "sites.parquet",
                       cut=750.0, levels=[250.0, 500.0], choose_cut=True)
    early, late = sorted(sample_region.root.glob("cop-dem-glo-30/*/*.json"))
    measure_volumes(early, late, sites.out, run / "volumes")
    run_indicators(run)
    return run


#: The smallest `mtg run` whose sites, volumes and land use all exist: a 2 km sample region (seed 7), a 500 m level
#: recorded for the land-use sensitivity (whose unions and areas are dask tasks too).
SMALL_RUN = """[sample]
size_km = 2
n_dates = 6
[ingest.chunks]
space = 128
[link]
levels = ["500m"]
[landuse]
sensitivity = ["500m", "1km"]
"""
#: Tables of the small run that other schedulers must reproduce.
SMALL_RUN_TABLES = ("sites/sites.parquet", "sites/sites_members.parquet", "volumes/site_volumes.parquet",
                    "landuse/landuse_by_site.parquet", "landuse/landuse_by_commodity.parquet",
                    "landuse/landuse_sensitivity.parquet", "indicators/site_indicators.parquet")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """The run folder of `mtg run` on the threaded scheduler with :data:`SMALL_RUN`."""
    folder = tmp_path_factory.mktemp("small-run")
    (folder / "run.toml").write_text(SMALL_RUN)
    proc = subprocess.run([str(Path(sys.executable).parent / "mtg"), "run", "--out", str(folder / "run"), "--seed",
                           "7", "--config", str(folder / "run.toml"), "--quiet"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder / "run"


GATEWAY_OPTIONS = ROOT / "deploy" / "jupyterhub" / "gateway_options.py"
GATEWAY_PASSWORD = "mtg-test-password"
GATEWAY_START_TIMEOUT_S = 30


def start_gateway(folder: Path, scheduler_cmd: list[str]) -> tuple[subprocess.Popen, str]:
    """A dask-gateway-server process on 127.0.0.1 (UnsafeLocalBackend: clusters are processes of this user) with
    deploy/jupyterhub's cluster options and a password (:data:`GATEWAY_PASSWORD`); returns it and its public address
    once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    public, private = _free_port(), _free_port()
    config = folder / "dask_gateway_config.py"
    config.write_text("\n".join([
        'c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"',
        f'c.DaskGateway.address = "127.0.0.1:{private}"',
        f'c.Proxy.address = "127.0.0.1:{public}"',
        'c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"',
        f'c.SimpleAuthenticator.password = "{GATEWAY_PASSWORD}"',
        f"c.ClusterConfig.scheduler_cmd = {scheduler_cmd!r}",
        'c.ClusterConfig.worker_cmd = ["dask", "worker"]',
        "c.ClusterConfig.idle_timeout = 120",
        f'c.LocalBackend.clusters_directory = "{folder / "clusters"}"',
        f'exec(open("{GATEWAY_OPTIONS}").read())',
    ]) + "\n")
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    log = open(folder / "gateway.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(bin_dir / "dask-gateway-server"), "-f", str(config)], cwd=folder, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{public}"
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask-gateway-server exited: {(folder / 'gateway.log').read_text()[-2000:]}")
        try:  # the proxy answers before it routes to the API: wait for the API's health check
            with urllib.request.urlopen(f"{address}/api/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, address
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("dask-gateway-server did not start in time")


def stop_gateway(proc: subprocess.Popen) -> None:
    """Stop a server of :func:`start_gateway` (it stops its clusters on SIGTERM)."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def gateway_server(tmp_path_factory):
    """The address of a real dask-gateway server (:func:`start_gateway`) for the session; skips without
    dask-gateway-server[local]."""
    pytest.importorskip("dask_gateway_server", reason="dask-gateway-server is not installed (pip install "
                                                       "'dask-gateway-server[local]')")
    pytest.importorskip("sqlalchemy", reason="the gateway's local backend needs sqlalchemy "
                                             "(dask-gateway-server[local])")
    proc, address = start_gateway(tmp_path_factory.mktemp("gateway"), ["dask", "scheduler"])
    yield address
    stop_gateway(proc)
