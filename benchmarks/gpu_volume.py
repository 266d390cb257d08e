"""Per-site cut/fill on the GPU (numba.cuda kernel on CuPy arrays) against the CPU kernel and the device's bandwidth.

Usage::

    python benchmarks/gpu_volume.py                            # 20000 x 20000 epochs, 10,000 sites
    python benchmarks/gpu_volume.py --size 8000 --sites 2000

Needs a CUDA GPU and CuPy (``pip install -e ".[gpu]"``); without them it says so and exits with status 0.
The data are those of ``volume_throughput.py`` (same generator and seed). Rows (an untimed call, which compiles
the kernels, then the median of ``--repeats`` timed calls):

1. the device-memory floor: a device-to-device copy of both epochs (CuPy), bandwidth = bytes read + written / s;
2. ``cut_fill_cuda`` with epochs and coverage already on the device (the kernel and the copy of the per-site
   sums back to the host); bandwidth = bytes of both epochs inside the site windows / s, and its share of the
   floor's bandwidth;
3. ``coverage_to_device`` (the host-to-device copy of the coverage fractions);
4. ``cut_fill`` on the CPU (numba, one thread), whose results the GPU's must equal (1e-9 relative).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import numpy as np
from volume_throughput import THRESHOLD, grid, random_sites, synthetic_epochs, timed, window_bytes


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


def largest_difference(gpu, cpu) -> float:
    """Largest difference between two CutFill results, relative to each field's largest magnitude."""
    worst = 0.0
    for field in fields(cpu):
        a, b = getattr(gpu, field.name), getattr(cpu, field.name)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        scale = max(np.nanmax(np.abs(b), initial=0.0), 1.0)
        worst = max(worst, float(np.nanmax(np.abs(a - b), initial=0.0)) / scale)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="rows and columns of each epoch")
    parser.add_argument("--sites", type=int, default=10_000, help="number of site polygons")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy", default="none", choices=["none", "local-mean", "hypsometric"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not gpu_available():
        print("gpu_volume.py needs a CUDA GPU and CuPy (cupy.cuda.is_available() is not true here): nothing "
              "measured.")
        return 0
    import cupy

    from mtg.kernels.coverage import polygon_coverage
    from mtg.kernels.cut_fill import coverage_to_device, cut_fill, cut_fill_cuda

    early, late = synthetic_epochs(args.size, args.seed)
    coverage = polygon_coverage(random_sites(args.size, args.sites, args.seed), grid(), early.shape)
    area = 100.0
    read = window_bytes(coverage, early, late)
    cpu_s, cpu = timed(lambda: cut_fill(early, late, coverage, THRESHOLD, area, args.policy), args.repeats)

    d_early, d_late = cupy.asarray(early), cupy.asarray(late)
    copies = (cupy.empty_like(d_early), cupy.empty_like(d_late))

    def copy_both():
        copies[0][...] = d_early
        copies[1][...] = d_late
        cupy.cuda.Device().synchronize()

    floor_s, _ = timed(copy_both, args.repeats)
    floor_bw = 2 * (d_early.nbytes + d_late.nbytes) / floor_s

    def upload():
        on_device = coverage_to_device(coverage)
        cupy.cuda.Device().synchronize()
        return on_device

    transfer_s, device = timed(upload, args.repeats)
    gpu_s, gpu = timed(lambda: cut_fill_cuda(d_early, d_late, device, THRESHOLD, area, args.policy), args.repeats)

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"{name}; epochs {args.size} x {args.size} float32, {args.sites} sites, {read / 1e9:.2f} GB of both "
          f"epochs in the site windows, threshold {THRESHOLD} m, void policy {args.policy}; medians of "
          f"{args.repeats} repeats\n")
    print("| row | seconds | GB/s | share of floor | vs CPU |")
    print("|---|---:|---:|---:|---:|")
    print(f"| 1. floor: device-to-device copy of both epochs | {floor_s:.4f} | {floor_bw / 1e9:.0f} | 1.00 |  |")
    print(f"| 2. `cut_fill_cuda` (one block per site) | {gpu_s:.4f} | {read / gpu_s / 1e9:.0f} | "
          f"{read / gpu_s / floor_bw:.2f} | {cpu_s / gpu_s:.1f}x |")
    print(f"| 3. `coverage_to_device` ({coverage.fractions.nbytes / 1e9:.2f} GB) | {transfer_s:.4f} | "
          f"{coverage.fractions.nbytes / transfer_s / 1e9:.0f} |  |  |")
    print(f"| 4. `cut_fill` on the CPU (numba, 1 thread) | {cpu_s:.4f} | {read / cpu_s / 1e9:.1f} |  | 1.0x |")
    difference = largest_difference(gpu, cpu)
    print(f"\nGPU against CPU: largest difference {difference:.1e} of each field's largest magnitude "
          f"({'equal' if difference <= 1e-9 else 'NOT EQUAL'} at 1e-9)")
    return 0 if difference <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
