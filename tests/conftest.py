"""Shared fixtures: the small sample region, the real data folder and a moto S3 server process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
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
