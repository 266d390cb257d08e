"""Mine-footprint segmentation of a reflectance cube of any size: seam-free tiled inference and polygons.

The composite's channels (:mod:`mtg.pipeline.features`) are padded by reflection at the true image border and cut
into overlapping tiles on one lattice anchored at the image origin (:mod:`mtg.kernels.blending`). Dask's
``map_overlap`` hands every block a halo of one tile, so each block predicts exactly the tiles that touch it and
blends them with a smooth window in lattice order: every pixel gets the same value whatever the chunking, equal to
a whole-image run. Blocks run on the threads of this process or on dask workers (CPU, or GPU workers from
dask-cuda), each process loading the model once.

Writes ``OUT/probability.zarr`` (``probability`` of mining, float32, NaN where never clear; ``feature_class``,
uint8 codes of the model's classes where the probability reaches the threshold) and
``OUT/mine_polygons.parquet`` (:func:`mtg.pipeline.footprints.footprint_polygons`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from mtg.kernels.blending import Lattice, accumulate, blended, tile_window
from mtg.pipeline.config import SegmentOptions, stage_options
from mtg.pipeline.dask_cluster import DaskProgress, gpu_annotations
from mtg.pipeline.errors import MtgError
from mtg.pipeline.features import model_channels
from mtg.pipeline.footprints import footprint_polygons
from mtg.pipeline.model_store import ModelCard, default_device, load_model, read_card
from mtg.pipeline.run_paths import portable_path
from mtg.pipeline.table_io import atomic_folder, atomic_write
from mtg.pipeline.zarr_store import consolidated_on_purpose, crs_coordinate

log = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    """What ``mtg segment`` wrote."""

    out: Path
    probability: Path
    polygons: Path
    n_polygons: int
    mining_area_m2: float
    n_pixels: int
    seconds: float
    device: str
    model: str


def reflect_pad(x: da.Array, axis: int, before: int, after: int) -> da.Array:
    """Pad ``x`` along ``axis`` by mirror reflection about its first and last element, as numpy's ``reflect``.

    Pads longer than the axis continue the reflection periodically (``dask.array.pad`` does not), and a
    single pixel is repeated.
    """
    n = x.shape[axis]
    period = max(1, 2 * (n - 1))

    def mirrored(positions: np.ndarray) -> da.Array:
        m = np.mod(positions, period)
        return da.take(x, np.where(m < n, m, period - m) if n > 1 else np.zeros_like(positions), axis=axis)

    parts = [mirrored(np.arange(-before, 0))] if before else []
    parts.append(x)
    if after:
        parts.append(mirrored(np.arange(n, n + after)))
    return da.concatenate(parts, axis=axis) if len(parts) > 1 else x


def _block_sizes(n: int, chunk: int, depth: int) -> tuple[int, ...]:
    """Chunk sizes of an axis of ``n``: ``chunk`` each, the last one merged into its neighbour if below ``depth``."""
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    if len(sizes) > 1 and sizes[-1] < depth:
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes)


def _predict_block(block: np.ndarray, block_id: tuple[int, ...] | None = None, *, model: str | None, device: str,
                   batch: int, threads: int, lattices: tuple[Lattice, Lattice], starts: tuple[tuple[int, ...], ...],
                   depth: int) -> np.ndarray:
    """Class probabilities of one block (with its halo) of the padded channels: the blended tiles touching it."""
    import torch

    torch.set_num_threads(threads)
    loaded = load_model(model, default_device() if device == "auto" else device)
    origin, core = [], []
    for axis, (lattice, bounds) in enumerate(zip(lattices, starts)):
        start, stop = bounds[block_id[axis + 1]], bounds[block_id[axis + 1] + 1]
        origin.append(start - min(depth, start))
        core.append((start, stop))
        expected = stop + min(depth, lattice.padded - stop) - origin[-1]
        if block.shape[axis + 1] != expected:
            raise RuntimeError(f"block {block_id} has {block.shape[axis + 1]} pixels along axis {axis + 1}, "
                               f"expected {expected}: dask changed the chunks")
    (ly, lx), stride = lattices, lattices[0].stride
    tiles = [(ky * stride - origin[0], kx * stride - origin[1])
             for ky in ly.touching(*core[0]) for kx in lx.touching(*core[1])]
    k = len(loaded.card.classes)
    acc = np.zeros((k, *block.shape[1:]), dtype=np.float32)
    weight = np.zeros(block.shape[1:], dtype=np.float32)
    window = tile_window(ly.tile, ly.overlap, np)
    t = ly.tile
    batch = loaded.batch_size(batch, t)
    for first in range(0, len(tiles), batch):
        group = tiles[first:first + batch]
        inputs = np.stack([block[:, r:r + t, c:c + t] for r, c in group])
        accumulate(acc, weight, loaded.predict(inputs, batch), group, window)
    return blended(acc, weight)


def class_probabilities(channels: da.Array, card: ModelCard, *, model: str | None = None, tile: int = 256,
                        overlap: int = 64, batch: int = 8, chunk: int = 1024, device: str = "auto",
                        threads: int = 1) -> da.Array:
    """Seam-free class probabilities of a channel image, lazily.

    Parameters
    ----------
    channels : dask.array.Array
        ``(channel, y, x)`` unnormalised model inputs (:func:`mtg.pipeline.features.model_channels`).
    card : ModelCard
        The model's card (:func:`mtg.pipeline.model_store.read_card` of ``model``).
    model : str, optional
        Model folder; None for the shipped model.
    tile : int
        Tile side in pixels, a multiple of the model's multiple (8 for four levels).
    overlap : int
        Pixels shared by neighbouring tiles, at most ``tile / 2``.
    batch : int
        Tiles per forward pass.
    chunk : int
        Side of the dask blocks that run inference (raised to ``tile``; blocks get a one-tile halo).
    device : str
        ``auto`` (CUDA where the worker has it, else CPU), ``cpu`` or ``cuda``.
    threads : int
        Torch threads per block on CPU. Dask runs blocks in parallel, one per dask thread or worker, so the
        default is 1; more suit a scheduler that runs one block at a time.

    Returns
    -------
    dask.array.Array
        ``(class, y, x)`` float32 softmax probabilities blended over tiles; the same for any chunking of
        ``channels`` and any ``chunk`` (bit for bit on CPU up to the batch composition of the forward passes).
    """
    multiple = 2 ** (len(card.architecture.widths) - 1)
    if tile % multiple or tile < multiple:
        raise MtgError(f"segment.tile {tile} must be a positive multiple of {multiple} (the model's poolings)")
    if not 0 <= 2 * overlap <= tile:
        raise MtgError(f"segment.overlap {overlap} must lie between 0 and half the tile ({tile // 2})")
    if device not in ("auto", "cpu", "cuda"):
        raise MtgError(f"segment.device {device!r} must be auto, cpu or cuda")
    _, height, width = channels.shape
    lattices = (Lattice(height, tile, overlap), Lattice(width, tile, overlap))
    x = channels.rechunk({0: -1})
    for axis, lattice in zip((1, 2), lattices):
        x = reflect_pad(x, axis, lattice.lead, lattice.trail)
    depth = tile
    block = max(chunk, tile)
    sizes = tuple(_block_sizes(lat.padded, block, depth) for lat in lattices)
    x = x.rechunk(((x.shape[0],), *sizes))
    starts = tuple(tuple(int(v) for v in np.concatenate([[0], np.cumsum(s)])) for s in sizes)
    n_classes = len(card.classes)
    halo = tuple(tuple(s + (depth if i else 0) + (depth if i < len(ss) - 1 else 0) for i, s in enumerate(ss))
                 for ss in sizes)
    predict = functools.partial(_predict_block, model=model, device=device, batch=batch, threads=threads,
                                lattices=lattices, starts=starts, depth=depth)
    with dask.annotate(**gpu_annotations(device)):  # inference on the GPU workers of a mixed cluster
        out = da.map_overlap(predict, x, depth={0: 0, 1: depth, 2: depth}, boundary="none", trim=True,
                             allow_rechunk=False, chunks=((n_classes,), *halo), dtype=np.float32,
                             meta=np.empty((0, 0, 0), dtype=np.float32))
    (ly, lx) = lattices
    return out[:, ly.lead:ly.lead + height, lx.lead:lx.lead + width]


def _write_atomic_zarr(ds: xr.Dataset, path: Path, compute: DaskProgress) -> None:
    with atomic_folder(path) as tmp, consolidated_on_purpose():
        delayed = crs_coordinate(ds).to_zarr(tmp, mode="w", consolidated=True, zarr_format=3, compute=False)
        compute(delayed, f"segmenting and writing {path.name}")


def segment(cube: xr.Dataset, *, name: str = "the cube", options: SegmentOptions | None = None,
            **overrides: Any) -> xr.Dataset:
    """Mine probabilities of a reflectance cube, lazily: seam-free tiled inference (module docstring).

    Parameters
    ----------
    cube : xarray.Dataset
        Reflectance (``mtg.pipeline.zarr_store.open_cube``, or any dataset with the model's bands as float
        reflectance) with dims ``(time, y, x)`` or ``(y, x)``, on a projected grid (rioxarray/odc CRS) at the
        model's resolution.
    name : str
        What to call the cube in errors.
    options : SegmentOptions, optional
        ``model`` (folder from ``mtg train``; None: the shipped model), ``threshold``, ``tile``, ``overlap``,
        ``batch``, ``chunk``, ``device``, ``time`` (``START/END``: composite only those acquisitions); keyword
        arguments override them.

    Returns
    -------
    xarray.Dataset
        ``probability`` of mining (float32, NaN where never clear) and ``feature_class`` (uint8 codes of the
        model's classes where the probability reaches the threshold), dask-backed, with the cube's CRS; nothing is
        computed until asked.

    Raises
    ------
    MtgError
        On missing bands, no CRS, a resolution other than the model's, an empty time range or invalid options.

    Examples
    --------
    >>> from mtg.api import open_cube, segment, footprints  # doctest: +SKIP
    >>> probabilities = segment(open_cube("mtg-run/cubes/reflectance.zarr"))  # doctest: +SKIP
    >>> mines = footprints(probabilities, min_area_m2=10_000)  # doctest: +SKIP
    """
    opts = stage_options(SegmentOptions, options, **overrides)
    card = read_card(opts.model)
    ds = cube
    if opts.time:
        if "time" not in ds.dims:
            raise MtgError(f"--time {opts.time} given but {name} has no time dimension")
        first, _, last = opts.time.partition("/")
        ds = ds.sel(time=slice(first or None, last or None))
        if ds.sizes["time"] == 0:
            raise MtgError(f"{name} has no acquisitions in --time {opts.time}")
    crs = ds.rio.crs
    if crs is None or not crs.is_projected:
        raise MtgError(f"{name} has {'no CRS' if crs is None else f'a geographic CRS ({crs})'}; segmentation "
                       "needs a projected grid (metres)")
    transform = ds.rio.transform()
    if not np.isclose(abs(transform.a), card.inputs.resolution_m, rtol=1e-3):
        raise MtgError(f"{name} has {abs(transform.a):g} m pixels; model {card.name} expects "
                       f"{card.inputs.resolution_m:g} m")
    channels = model_channels(ds, source=name, bands=card.inputs.bands, indices=card.inputs.indices,
                              model=f"model {card.name}")
    probs = class_probabilities(channels.data, card, model=opts.model, tile=opts.tile, overlap=opts.overlap,
                                batch=opts.batch, chunk=opts.chunk, device=opts.device)
    valid = da.isfinite(channels.data).all(axis=0)
    mining = da.where(valid, 1.0 - probs[0], np.nan).astype(np.float32)
    kind = (da.argmax(probs[1:], axis=0) + 1).astype(np.uint8)
    feature_class = da.where(mining >= opts.threshold, kind, 0).astype(np.uint8)
    space = {"y": ds.chunksizes["y"][0] if ds.chunksizes else 512, "x": ds.chunksizes["x"][0] if ds.chunksizes else 512}
    coords = {k: v for k, v in channels.coords.items() if k != "channel"}
    codes = list(range(len(card.classes)))
    result = xr.Dataset(
        {"probability": (("y", "x"), mining, {"long_name": "probability of mining land use", "units": "1"}),
         "feature_class": (("y", "x"), feature_class,
                           {"long_name": "mine feature class where probability >= threshold",
                            "flag_values": codes, "flag_meanings": " ".join(card.classes)})},
        coords=coords,
        attrs={"model": card.name, "classes": list(card.classes), "threshold": opts.threshold, "tile": opts.tile,
               "overlap": opts.overlap, "composite": card.inputs.composite, "source_cube": name},
    ).chunk(space)
    for variable in ("probability", "feature_class"):
        result[variable].encoding["grid_mapping"] = "spatial_ref"
    log.info("segmenting %s (%d x %d pixels, %d dates) with model %s: tiles of %d px overlapping by %d, blocks "
             "of %d px", name, ds.sizes["y"], ds.sizes["x"], ds.sizes.get("time", 1), card.name, opts.tile,
             opts.overlap, max(opts.chunk, opts.tile))
    return result.rio.write_crs(crs)


def footprints(probabilities: xr.Dataset, *, options: SegmentOptions | None = None, **overrides: Any):
    """Mine-footprint polygons of :func:`segment`'s probabilities (computes them).

    Parameters
    ----------
    probabilities : xarray.Dataset
        ``probability`` and ``feature_class`` with a CRS and the ``classes`` attribute, as :func:`segment`
        returns them (or as ``probability.zarr`` opens).
    options : SegmentOptions, optional
        ``threshold``, ``min_area_m2``, ``simplify_m``; keyword arguments override them.

    Returns
    -------
    geopandas.GeoDataFrame
        :func:`mtg.pipeline.footprints.footprint_polygons`: feature type, mean and max probability, pixels, area.
    """
    opts = stage_options(SegmentOptions, options, **overrides)
    classes = probabilities.attrs.get("classes") or probabilities["feature_class"].attrs["flag_meanings"].split()
    return footprint_polygons(np.asarray(probabilities["probability"].values),
                              np.asarray(probabilities["feature_class"].values), list(classes),
                              probabilities.rio.transform(), probabilities.rio.crs, threshold=opts.threshold,
                              min_area_m2=opts.min_area_m2, simplify_m=opts.simplify_m)


def segment_cube(cube: str, out: str | Path, *, storage_options: dict[str, Any] | None = None, client: Any = None,
                 progress: bool = True, source_name: str | None = None, options: SegmentOptions | None = None,
                 **overrides: Any) -> SegmentResult:
    """Map mine footprints in a reflectance cube; write ``out/probability.zarr`` and ``out/mine_polygons.parquet``.

    Parameters
    ----------
    cube : str
        Path or URL of a complete reflectance cube (``mtg ingest``): bands B02, B03, B04, B08, B11, B12 on a
        projected grid at the model's resolution.
    out : str or Path
        Output folder.
    storage_options : dict, optional
        fsspec options for a remote cube.
    client : distributed.Client, optional
        Run the blocks on this cluster's workers; default the threads of this process.
    progress : bool
        Show dask's progress bar.
    source_name : str, optional
        How the probability store and ``segment.json`` name the source cube; default ``cube`` relative to the folder
        above ``out`` (a tile of a global rerun names its tile, not the temporary cube it read).
    options, **overrides
        As for :func:`segment` and :func:`footprints`.

    Raises
    ------
    MtgError
        On a missing or incomplete cube, and as :func:`segment`.
    """
    from mtg.pipeline.zarr_store import open_cube

    start = time.perf_counter()
    opts = stage_options(SegmentOptions, options, **overrides)
    ds = open_cube(cube, storage_options)
    out = Path(out)
    # the cube relative to the folder above the output (the run folder of `mtg run`): a copied run stays valid
    source_name = source_name or portable_path(cube, out.parent)
    probabilities = segment(ds, name=source_name, options=opts)
    out.mkdir(parents=True, exist_ok=True)
    zarr_path = out / "probability.zarr"
    _write_atomic_zarr(probabilities, zarr_path, DaskProgress(client, enabled=progress))
    frame = footprints(xr.open_zarr(zarr_path, consolidated=True, decode_coords="all").rio.write_crs(
        probabilities.rio.crs), options=opts)
    polygons = atomic_write(out / "mine_polygons.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    device = opts.device
    used = device if device != "auto" else (
        ",".join(sorted(set(client.run(default_device).values()))) if client is not None else default_device())
    seconds = time.perf_counter() - start
    summary = {"cube": source_name, "model": probabilities.attrs["model"], "device": used, "threshold": opts.threshold,
               "min_area_m2": opts.min_area_m2, "simplify_m": opts.simplify_m, "tile": opts.tile,
               "overlap": opts.overlap, "n_polygons": len(frame), "mining_area_m2": float(frame["area_m2"].sum()),
               "seconds": seconds}
    (out / "segment.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%d mine polygons (%.2f km^2) above probability %.2f in %.1f s", len(frame),
             summary["mining_area_m2"] / 1e6, opts.threshold, seconds)
    return SegmentResult(out=out, probability=zarr_path, polygons=polygons, n_polygons=len(frame),
                         mining_area_m2=summary["mining_area_m2"], n_pixels=int(ds.sizes["y"] * ds.sizes["x"]),
                         seconds=seconds, device=used, model=probabilities.attrs["model"])
