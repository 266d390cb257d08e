"""Per-site cut and fill: the array-API reference, the numba kernel, the CUDA kernel (simulator) and exactextract."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from test_coverage import swiss_grid

from mtg.kernels.coverage import polygon_coverage
from mtg.kernels.cut_fill import CUDA_MAX_BINS, CutFill, cut_fill, cut_fill_cuda, cut_fill_reference

POLICIES = ("none", "local-mean", "hypsometric")
CELL = 10.0
TRANSFORM = Affine(CELL, 0.0, 1000.0, 0.0, -CELL, 2000.0)


def random_case(seed: int, shape: tuple[int, int] = (60, 70), n_sites: int = 14, dtype=np.float64):
    """Smooth terrain, dh of a few metres with NaN voids in either epoch, and sites of every kind.

    Sites: random stars (some with holes, some crossing the grid's edge), a tiny one, one inside a fully void
    block, one outside the grid and an empty one.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    early = 500 + 40 * np.sin(rows / 9.0 + seed) * np.cos(cols / 13.0) + rng.normal(0, 0.5, shape)
    late = early + 3 * np.sin(cols / 7.0 - seed) + rng.normal(0, 1.0, shape)
    early[rng.random(shape) < 0.03] = np.nan
    late[rng.random(shape) < 0.03] = np.nan
    late[5:12, 40:50] = np.nan
    height, width = shape[0] * CELL, shape[1] * CELL
    sites = []
    for _ in range(n_sites):
        x, y = 1000 + rng.uniform(0, width), 2000 - rng.uniform(0, height)
        site = shapely.Point(x, y).buffer(rng.uniform(15, 200), quad_segs=int(rng.integers(1, 6)))
        if rng.random() < 0.3:
            site = site.difference(shapely.Point(x, y).buffer(rng.uniform(5, 40)))
        sites.append(site)
    sites += [shapely.Point(1123.0, 1877.0).buffer(2.0), shapely.box(1410, 1890, 1480, 1940),
              shapely.box(-1e4, -1e4, -9e3, -9e3), shapely.Polygon()]
    return early.astype(dtype), late.astype(dtype), polygon_coverage(sites, TRANSFORM, shape)


def assert_same(actual: CutFill, expected: CutFill, rtol: float = 1e-9) -> None:
    """Equal NaNs and, per field, values within ``rtol`` of the field's largest magnitude."""
    for field in fields(CutFill):
        a, b = getattr(actual, field.name), getattr(expected, field.name)
        assert a.dtype == np.float64 and a.shape == b.shape, field.name
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=field.name)
        scale = max(np.nanmax(np.abs(b), initial=0.0), 1.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=field.name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.75])
@pytest.mark.parametrize("policy", POLICIES)
def test_numba_kernel_equals_reference(policy, threshold, dtype):
    early, late, coverage = random_case(7, dtype=dtype)
    expected = cut_fill_reference(early, late, coverage, threshold, CELL * CELL, policy, n_bins=6)
    assert_same(cut_fill(early, late, coverage, threshold, CELL * CELL, policy, n_bins=6), expected)
    # The fixture has every kind of site: voids filled or not, a fully void site, one off the grid.
    assert np.isnan(expected.excavated_m3).sum() == 3
    assert (expected.filled_area_m2 > 0).any() == (policy != "none")


def test_mixed_dtypes_strided_and_memory_mapped_epochs(tmp_path):
    early, late, coverage = random_case(3, shape=(40, 50))
    mapped = np.lib.format.open_memmap(tmp_path / "early.npy", mode="w+", dtype=np.float32, shape=early.shape)
    mapped[:] = early
    strided = np.empty((80, 150))[::2, 1::3]  # a non-contiguous float64 view
    strided[:] = late
    for policy in POLICIES:
        expected = cut_fill_reference(mapped, strided, coverage, 0.5, 100.0, policy)
        assert_same(cut_fill(mapped, strided, coverage, 0.5, 100.0, policy), expected)


def test_half_a_cell():
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 30.0)  # 3 x 3 grid over (0, 0)-(30, 30)
    coverage = polygon_coverage([shapely.box(10, 10, 15, 20)], transform, (3, 3))  # half the centre cell
    early = np.zeros((3, 3))
    late = np.zeros((3, 3))
    late[1, 1] = -2.0
    result = cut_fill(early, late, coverage, 0.0, 100.0)
    assert (result.excavated_m3[0], result.excavated_area_m2[0], result.deposited_m3[0]) == (100.0, 50.0, 0.0)
    assert (result.net_m3[0], result.area_m2[0], result.mean_dh[0], result.void_fraction[0]) == (-100.0, 50.0, -2, 0)
    assert cut_fill(early, late, coverage, 2.0, 100.0).excavated_m3[0] == 0.0  # |dh| = t is no change
    assert cut_fill(early, late, coverage, 1.5, 100.0).excavated_m3[0] == 100.0
    late[1, 1] = np.nan
    void = cut_fill(early, late, coverage, 0.0, 100.0, "local-mean")
    assert np.isnan(void.excavated_m3[0]) and np.isnan(void.mean_dh[0])
    assert (void.void_fraction[0], void.filled_area_m2[0], void.area_m2[0]) == (1.0, 0.0, 50.0)


def test_infinite_dh_is_a_void():
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 20.0)
    coverage = polygon_coverage([shapely.box(0, 0, 20, 20)], transform, (2, 2))
    early = np.array([[0.0, np.inf], [0.0, 0.0]])
    late = np.array([[1.0, 1.0], [-np.inf, 3.0]])
    for run in (cut_fill, cut_fill_reference):
        result = run(early, late, coverage, 0.0, 100.0, "local-mean")
        assert (result.deposited_m3[0], result.void_fraction[0], result.filled_area_m2[0]) == (800.0, 0.5, 200.0)
        assert (result.mean_dh[0], result.excavated_m3[0]) == (2.0, 0.0)


def test_void_policies_by_hand():
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 30.0)
    coverage = polygon_coverage([shapely.box(0, 0, 30, 30)], transform, (3, 3))
    early = np.array([[0.0, np.nan, 0.0], [10.0, 10.0, 10.0], [20.0, 20.0, 20.0]])
    dh = np.array([[2.0, 0.0, 2.0], [-2.0, np.nan, -4.0], [5.0, 5.0, np.nan]])
    late = early + dh
    # Valid dh: 2, 2, -2, -4, 5, 5 (mean 4/3); voids: (0, 1) with no early elevation, (1, 1) and (2, 2).
    # Three bins of early elevation over [0, 20]: 0 -> bin 0, 10 -> bin 1 (mean -3), 20 -> bin 2 (mean 5).
    expected = {
        "none": (600.0, 1400.0, 0.0),
        "local-mean": (600.0, 1400.0 + 3 * 400 / 3, 300.0),
        "hypsometric": (600.0 + 300.0, 1400.0 + 400 / 3 + 500.0, 300.0),
    }
    for policy, (excavated, deposited, filled) in expected.items():
        for run in (cut_fill, cut_fill_reference):
            result = run(early, late, coverage, 0.0, 100.0, policy, n_bins=3)
            np.testing.assert_allclose([result.excavated_m3[0], result.deposited_m3[0], result.filled_area_m2[0]],
                                       [excavated, deposited, filled], rtol=1e-12, err_msg=f"{run.__name__} {policy}")
            np.testing.assert_allclose([result.mean_dh[0], result.void_fraction[0], result.area_m2[0]],
                                       [4 / 3, 1 / 3, 900.0], rtol=1e-12)
            assert result.net_m3[0] == result.deposited_m3[0] - result.excavated_m3[0]


def test_excavated_volume_equals_exactextract_on_swiss_sites():
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    sites, transform, shape = swiss_grid()
    rng = np.random.default_rng(0)
    # A smooth dh field over the 527-million-cell grid without materialising it: late varies along rows only,
    # early along columns only (zero-stride float32 views; a copy would need 4 GB), voids in both.
    late_rows = (3 * np.sin(np.arange(shape[0]) / 37.0) + rng.normal(0, 0.3, shape[0])).astype(np.float32)
    early_cols = (2 * np.cos(np.arange(shape[1]) / 23.0) + rng.normal(0, 0.3, shape[1])).astype(np.float32)
    late_rows[rng.random(shape[0]) < 0.01] = np.nan
    early_cols[rng.random(shape[1]) < 0.01] = np.nan
    early = np.broadcast_to(early_cols[None, :], shape)
    late = np.broadcast_to(late_rows[:, None], shape)
    coverage = polygon_coverage(sites.geometry.to_numpy(), transform, shape)
    threshold = 0.5
    ours = cut_fill(early, late, coverage, threshold, 100.0)

    class ExcavationSource(NumPyRasterSource):
        """``where(dh < -t, -dh, 0) * A``, computed window by window."""

        def read_window(self, x0, y0, nx, ny):
            dh = late_rows[y0:y0 + ny, None].astype(np.float64) - early_cols[None, x0:x0 + nx].astype(np.float64)
            return np.where(dh < -threshold, -dh, 0.0) * 100.0

    source = ExcavationSource(np.broadcast_to(np.float64(0.0), shape), transform.c,
                              transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a,
                              transform.f, srs_wkt=sites.crs.to_wkt())
    theirs = exact_extract(source, sites, ["sum"], output="pandas")["sum"].to_numpy()
    np.testing.assert_allclose(ours.excavated_m3, theirs, rtol=1e-6, atol=1e-9)  # exactextract: 1e-14 for 0
    assert (ours.excavated_m3 > 0).sum() > len(sites) // 2


CUDA_SIMULATOR = """
import numpy as np
from numba import cuda
from test_cut_fill import POLICIES, assert_same, random_case
from mtg.kernels.cut_fill import coverage_to_device, cut_fill, cut_fill_cuda

for dtype, threshold in ((np.float32, 0.5), (np.float64, 0.0)):
    early, late, coverage = random_case(11, shape=(40, 50), n_sites=4, dtype=dtype)
    device = coverage_to_device(coverage)
    for policy in POLICIES:
        gpu = cut_fill_cuda(cuda.to_device(early), cuda.to_device(late), device, threshold, 100.0, policy,
                            n_bins=5, threads_per_block=32)
        assert_same(gpu, cut_fill(early, late, coverage, threshold, 100.0, policy, n_bins=5))
print("cuda simulator ok")
"""


def test_cuda_kernel_equals_numba_kernel_under_the_simulator():
    # NUMBA_ENABLE_CUDASIM must be set before numba is imported, so the kernel runs in a fresh interpreter.
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run([sys.executable, "-c", CUDA_SIMULATOR], cwd=Path(__file__).parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cuda simulator ok" in done.stdout


def test_concurrent_calls_from_threads():
    cases = [random_case(seed, shape=(600, 640), n_sites=150) for seed in range(4)]
    jobs = [(case, policy) for case in cases for policy in POLICIES] * 2

    def run(job):
        (early, late, coverage), policy = job
        return cut_fill(early, late, coverage, 0.25, 100.0, policy)

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, jobs))
    for a, b in zip(concurrent, sequential):
        for field in fields(CutFill):
            np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))


@pytest.mark.parametrize(("change", "message"), [
    ({"early": np.zeros((3, 4))}, "same shape"),
    ({"late": np.zeros((3, 3), dtype=np.int32)}, "late must be float32 or float64"),
    ({"early": np.zeros(9)}, "early must be a 2-D raster"),
    ({"threshold": -1.0}, "threshold"),
    ({"threshold": np.nan}, "threshold"),
    ({"cell_area": 0.0}, "cell_area"),
    ({"void_policy": "nearest"}, "void_policy must be one of none, local-mean, hypsometric"),
    ({"n_bins": 0}, "n_bins"),
])
def test_bad_arguments_are_named(change, message):
    coverage = polygon_coverage([shapely.box(0, 0, 10, 10)], Affine(10, 0, 0, 0, -10, 30), (3, 3))
    arguments = {"early": np.zeros((3, 3)), "late": np.zeros((3, 3)), "coverage": coverage, "threshold": 0.0,
                 "cell_area": 100.0, "void_policy": "none", "n_bins": 10} | change
    for run in (cut_fill, cut_fill_reference):
        with pytest.raises(ValueError, match=message):
            run(**arguments)


def test_cuda_limits_are_checked_before_any_gpu_work():
    coverage = polygon_coverage([shapely.box(0, 0, 10, 10)], Affine(10, 0, 0, 0, -10, 30), (3, 3))
    with pytest.raises(ValueError, match="n_bins must be at most"):
        cut_fill_cuda(np.zeros((3, 3)), np.zeros((3, 3)), coverage, 0.0, 100.0, "hypsometric", CUDA_MAX_BINS + 1)
    with pytest.raises(ValueError, match="threads_per_block"):
        cut_fill_cuda(np.zeros((3, 3)), np.zeros((3, 3)), coverage, 0.0, 100.0, threads_per_block=100)
