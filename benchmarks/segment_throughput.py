"""Throughput of the shipped mine-footprint model on this machine, and what mapping the world's mines would cost.

Prints one table, every row measured in this run (medians of ``--repeats`` runs after one warm-up):

1. the U-Net's forward pass alone, batch 4 x 512 x 512, channels-last, inference mode, 2 torch threads: the
   setting of the peer in ../shared/NOTES.md (segmentation-models-pytorch U-Net with a ResNet-18 encoder,
   1.0 Mpx/s on 2 threads, measured on a machine like this one), so the ratio column compares like with like;
2. seam-free tiled inference of the whole sample cube's channels held in memory, in one process: one block at a
   time with 2 torch threads, and blocks of 1024 pixels on 2 dask threads with 1 torch thread each;
3. ``mtg segment`` end to end (read the Zarr cube, composite, infer, write ``probability.zarr``, polygons) in one
   process (2 dask threads) and on a LocalCluster of 2 worker processes with 1 thread each.

From the best end-to-end rate it derives the node-hours (one node = this 2-core machine) to map the world's mining
regions once, for two stated areas. No GPU is used (the GPU path, CUDA + autocast on dask-cuda workers, exists
but has not been measured here).

Usage: ``python benchmarks/segment_throughput.py [--cube URL] [--workdir DIR] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da

PEER_MPX_S = 1.0  # smp U-Net resnet18, 13 bands, batch 4 x 512 x 512, 2 threads (../shared/NOTES.md)
PIXEL_KM2 = 1e-4  # a 10 m pixel
AREAS_KM2 = {
    "mine polygons of Maus et al. 2022 (101,583 km^2)": 101_583.0,
    "assumed mining regions: polygons with ~10 km of context (1,000,000 km^2)": 1_000_000.0,
}


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run`` after one untimed warm-up call."""
    run()  # warm-up: model loads, thread pools, page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sample_cube(workdir: Path) -> str:
    from mtg.pipeline.catalogs import resolve_source
    from mtg.pipeline.config import DaskConfig, IngestConfig, SampleConfig
    from mtg.pipeline.run import ensure_sample, run_ingest
    from odc.geo.geom import box

    region = ensure_sample(workdir / "sample", SampleConfig(), progress=False)
    cfg = IngestConfig(out=str(workdir / "cubes"), time="/".join(region.time_range))
    result = run_ingest(cfg, DaskConfig(), source=resolve_source(str(region.catalog)),
                        aoi=box(*region.bounds, f"EPSG:{region.epsg}"), progress=False)
    return result.reflectance_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cube", help="reflectance cube (default: the sample region, ingested into --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mtg-segment-bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the network runs (cuda: the GPU rows of issue 16)")
    args = parser.parse_args()

    import torch
    from distributed import Client, LocalCluster
    from mtg.pipeline.features import model_channels
    from mtg.pipeline.model_store import load_model, read_card
    from mtg.pipeline.segment import class_probabilities, segment_cube
    from mtg.pipeline.zarr_store import open_cube

    cube = args.cube or _sample_cube(args.workdir)
    card = read_card(None)
    channels = model_channels(open_cube(cube)).values
    n_px = channels.shape[1] * channels.shape[2]
    rows = []

    torch.set_num_threads(2)
    net = load_model(None, args.device).net
    x = torch.randn(4, channels.shape[0], 512, 512, device=args.device).contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=args.device == "cuda"):
            net(x)
        if args.device == "cuda":
            torch.cuda.synchronize()

    rows.append(("1. U-Net forward pass, batch 4 x 512^2, 2 torch threads", 4 * 512 * 512,
                 median_seconds(forward, args.repeats)))

    whole = da.from_array(channels, chunks=-1)
    tiled = da.from_array(channels, chunks=(-1, 1024, 1024))

    def one_block() -> None:
        class_probabilities(whole, card, chunk=100_000, threads=2, device=args.device).compute(scheduler="sync")

    def dask_threads() -> None:
        class_probabilities(tiled, card, chunk=1024, device=args.device).compute(scheduler="threads", num_workers=2)

    rows.append(("2a. tiled inference, in memory, 1 block, 2 torch threads", n_px,
                 median_seconds(one_block, args.repeats)))
    rows.append(("2b. tiled inference, in memory, 1024-px blocks, 2 dask threads x 1 torch thread", n_px,
                 median_seconds(dask_threads, args.repeats)))

    out = args.workdir / "segment-bench"

    def end_to_end(client=None) -> None:
        segment_cube(cube, out, client=client, progress=False, device=args.device)

    with dask.config.set(scheduler="threads", num_workers=2):
        rows.append(("3a. mtg segment end to end, one process, 2 dask threads", n_px,
                     median_seconds(end_to_end, args.repeats)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows.append(("3b. mtg segment end to end, LocalCluster 2 workers x 1 thread", n_px,
                     median_seconds(lambda: end_to_end(client), args.repeats)))

    print(f"model {card.name} ({card.architecture.parameters:,} parameters, widths {card.architecture.widths}); "
          f"cube {channels.shape[1]} x {channels.shape[2]} px at 10 m ({n_px * PIXEL_KM2:.1f} km^2); tiles 256 px, "
          f"overlap 64; torch {torch.__version__}, CPU only; medians of {args.repeats} runs\n")
    print("| row | seconds | Mpx/s | km^2/s | vs smp U-Net resnet18 (1.0 Mpx/s, NOTES) |")
    print("|---|---:|---:|---:|---:|")
    for name, px, s in rows:
        mpx = px / s / 1e6
        print(f"| {name} | {s:.3f} | {mpx:.2f} | {px * PIXEL_KM2 / s:.1f} | {mpx / PEER_MPX_S:.1f}x |")
    best_name, best_px, best_s = max(rows[3:], key=lambda r: r[1] / r[2])
    km2_s = best_px * PIXEL_KM2 / best_s
    print(f"\nnode-hours to map once at the best end-to-end rate ({km2_s:.1f} km^2/s, row {best_name.split('.')[0]}; "
          "one node = 2 CPU cores):")
    for area, km2 in AREAS_KM2.items():
        print(f"* {area}: {km2 / km2_s / 3600:.2f} node-hours")


if __name__ == "__main__":
    main()
