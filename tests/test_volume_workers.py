"""The volume stage as dask tasks: the same numbers on threads, on worker processes, and on (simulated) GPU workers.

The GPU worker here is a real ``dask worker`` process declaring ``--resources GPU=1`` and running numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), so the CUDA kernel's path through the stage runs without a GPU; on a lent
device the same path runs the compiled kernel on CuPy arrays (benchmarks/RESULTS.md says what ran where).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401 - the .rio accessor
import shapely
import xarray as xr

from mtg.pipeline.volume import volumes

SPACING = 30.0
X0, Y0 = 500_000.0, 7_400_000.0


def _grid(values: np.ndarray, chunk: int) -> xr.DataArray:
    n_rows, n_cols = values.shape
    arr = xr.DataArray(values.astype(np.float32), dims=("y", "x"),
                       coords={"y": Y0 - SPACING * (np.arange(n_rows) + 0.5), "x": X0 + SPACING * (np.arange(n_cols) + 0.5)})
    return arr.rio.write_crs("EPSG:32750").chunk({"y": chunk, "x": chunk})


@pytest.fixture(scope="module")
def pair():
    """A 320 x 320 DEM pair in 64-cell blocks: rolling terrain, five pits and a dump (one on a block-row edge, two
    in one window), the later epoch raised by 1.2 m, and their site polygons."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:320, 0:320].astype(np.float64)
    terrain = 420 + 35 * np.sin(x / 19) + 28 * np.cos(y / 27) + rng.normal(0, 0.4, x.shape)
    change = np.zeros_like(terrain)
    centres = [(40, 50, -18.0), (64, 160, -12.0), (70, 178, 9.0), (150, 260, -20.0), (230, 90, -15.0),
               (290, 200, 11.0)]
    sites = []
    for k, (row, col, depth) in enumerate(centres):
        r = np.hypot(y - row, x - col)
        change += depth * np.clip(1 - r / 9, 0, None)
        sites.append((f"S{k + 1}", shapely.Point(X0 + SPACING * col, Y0 - SPACING * row).buffer(12 * SPACING)))
    after = terrain + change + 1.2
    after[100:104, 40:44] = np.nan  # a void away from the sites
    frame = gpd.GeoDataFrame({"site_id": [s for s, _ in sites]}, geometry=[g for _, g in sites], crs="EPSG:32750")
    return _grid(terrain, 64), _grid(after, 64), frame


def _measure(pair, **options):
    before, after, sites = pair
    return volumes(before, after, sites, min_deposit_m2=1_000.0, stable_buffer_m=120.0, **options)


def test_volumes_on_worker_processes_equal_the_threaded_run(pair):
    from distributed import Client, LocalCluster

    threaded = _measure(pair)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        on_workers = _measure(pair)
    pd.testing.assert_frame_equal(threaded.site_volumes, on_workers.site_volumes, check_exact=True)
    pd.testing.assert_frame_equal(threaded.deposits, on_workers.deposits, check_exact=True)
    assert threaded.report == on_workers.report
    tasks = threaded.report["integration_tasks"]
    assert set(tasks) == {"cpu"} and tasks["cpu"] >= 3  # batches of site groups, one task each
    pits = threaded.site_volumes.set_index("site_id").loc[["S1", "S2", "S4", "S5"], "excavated_m3"]
    assert (pits > 5e5).all() and len(threaded.deposits) >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_workers(address: str, n: int, procs: list[subprocess.Popen], timeout: float = 120.0):
    from distributed import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            client = Client(address, timeout="5s")
        except OSError:
            time.sleep(0.5)
            continue
        try:
            client.wait_for_workers(n, timeout=timeout)
        except Exception:
            client.close()
            raise
        return client
    raise TimeoutError(f"no scheduler at {address} after {timeout} s")


@pytest.mark.slow
def test_integration_goes_to_the_gpu_worker_of_a_mixed_cluster_and_matches_the_cpu(pair):
    """A scheduler, a CPU worker and a GPU worker (CUDA simulator): the integration tasks, annotated with the
    GPU resource, all run on the GPU worker's CUDA kernel, and give the CPU kernel's numbers to 1e-6."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    common = ["--nthreads", "1", "--no-dashboard"]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        time.sleep(1.0)
        procs.append(subprocess.Popen([dask, "worker", address, *common, "--name", "cpu"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        procs.append(subprocess.Popen([dask, "worker", address, *common, "--name", "gpu", "--resources", "GPU=1"],
                                      env={**env, "NUMBA_ENABLE_CUDASIM": "1"}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
        client = _wait_for_workers(address, 2, procs)
        with client:
            mixed = _measure(pair)
    finally:
        for proc in procs[::-1]:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    cpu = _measure(pair, device="cpu")
    assert set(mixed.report["integration_tasks"]) == {"cuda"}
    assert mixed.report["integration_tasks"]["cuda"] == cpu.report["integration_tasks"]["cpu"]
    numbers = ["excavated_m3", "deposited_m3", "net_m3", "excavated_area_m2", "deposited_area_m2", "area_m2",
               "void_fraction", "filled_area_m2", "mean_dh", "excavated_sigma_m3", "deposited_sigma_m3"]
    np.testing.assert_allclose(mixed.site_volumes[numbers].to_numpy(float), cpu.site_volumes[numbers].to_numpy(float),
                               rtol=1e-6, atol=1e-6)
    pd.testing.assert_frame_equal(mixed.deposits, cpu.deposits, check_exact=True)  # from the same dh on the host


def test_asking_for_cuda_without_a_gpu_is_one_clear_error(pair):
    from mtg.pipeline.errors import MtgError

    with pytest.raises(MtgError, match="no CUDA GPU"):
        _measure(pair, device="cuda")


def test_local_cuda_scheduler_without_dask_cuda_or_a_gpu_is_one_line(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "mtg"), "volume", "--before", "a.tif", "--after", "b.tif",
                           "--sites", "s.parquet", "-o", str(tmp_path / "out"), "--scheduler", "local-cuda"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "local-cuda" in lines[0] and ("dask-cuda" in lines[0] or "no CUDA GPU" in lines[0])


class _CountedReads:
    """An array that counts how often each of its cells is read (the DEM file under a lazy epoch)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.shape, self.dtype, self.ndim = values, values.shape, values.dtype, values.ndim
        self.reads = np.zeros(values.shape, dtype=np.int64)

    def __getitem__(self, key):
        self.reads[key] += 1
        return self.values[key]


def _counted(arr: xr.DataArray) -> tuple[xr.DataArray, _CountedReads]:
    import dask.array as da

    source = _CountedReads(arr.values)
    return arr.copy(data=da.from_array(source, chunks=arr.data.chunks, lock=False)), source


@pytest.mark.parametrize("calibration_size, fewest, most", [(2048, 1, 1), (64, 2, 3)])
def test_each_dem_cell_is_read_once_when_the_grid_is_the_calibration_window(pair, calibration_size, fewest, most,
                                                                           tmp_path):
    """Grids up to the calibration window's size (every planned tile) are read once, then measured from memory.
    Larger grids are streamed: every cell for the stable-terrain counts and for dh, and the calibration window's
    cells and the site windows' cells once more (the window avoids the sites, so no cell is read four times)."""
    from mtg.pipeline.io import write_volumes

    before, after, sites = pair
    (before, early), (after, late) = _counted(before), _counted(after)
    measured = volumes(before, after, sites, min_deposit_m2=1_000.0, stable_buffer_m=120.0,
                       calibration_size=calibration_size)
    write_volumes(measured, tmp_path / "volumes")
    for source in (early, late):
        assert source.reads.min() == fewest and source.reads.max() <= most
