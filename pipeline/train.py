"""Training the mine-footprint U-Net on a reflectance cube and mine polygons (``mtg train``).

Chips come from the latest-clear-view composite of the cube (:mod:`mtg.pipeline.features`), half of them around
mine pixels and a quarter the windows where the model last made the most false positives, with random symmetries,
radiometry and noise (:mod:`mtg.pipeline.chips`). Training and validation ground
are split by spatial blocks, and a held-out box is never sampled; after training, the saved model maps the whole
cube with the seam-free tiled inference of ``mtg segment`` and is scored on the held-out box. Seeds, the torch
thread count and deterministic algorithms are fixed, so the same command gives the same weights.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtg.kernels.pixel_scores import confusion_counts, scores
from mtg.pipeline.chips import (HOLDOUT, SPLIT_NAMES, TRAIN, VALIDATION, augment, grid_windows, haze_weights,
                                sample_windows, split_map)
from mtg.pipeline.errors import MtgError
from mtg.pipeline.features import COMPOSITE, MODEL_BANDS, composite, indices_for, input_channels
from mtg.pipeline.labels import rasterise_labels, read_labels
from mtg.pipeline.model_store import Architecture, Inputs, ModelCard, read_card, resolve_model_dir, save_model

log = logging.getLogger(__name__)

BN_BATCHES = 24  # training batches whose statistics become the batch-norm running statistics of an epoch
LIMITATIONS = ("Trained on synthetic sample data of mine-the-gap (districts rendered with textbook spectra and crisp "
               "feature edges): held-out scores measure generalisation within that synthetic world, which is much "
               "easier than real Sentinel-2 scenes across the world's mining regions. Retrain on real labels (e.g. "
               "Maus et al. 2022) before use on real data.")


@dataclass
class TrainResult:
    """What ``mtg train`` wrote."""

    out: Path
    card: ModelCard
    seconds: float


def region_scores(probability: np.ndarray, feature_class: np.ndarray, truth: np.ndarray, region: np.ndarray,
                  classes: list[str], threshold: float = 0.5) -> dict[str, Any]:
    """Pixel-wise scores of mining vs not (IoU, F1, precision, recall) in ``region``, and IoU per class.

    Parameters
    ----------
    probability : numpy.ndarray
        Mining probability ``(y, x)``, NaN where unknown (counted as not mining).
    feature_class : numpy.ndarray
        Predicted class codes ``(y, x)``.
    truth : numpy.ndarray
        True class codes ``(y, x)`` (0 = not mining).
    region : numpy.ndarray
        bool ``(y, x)``: the pixels scored.
    classes : list of str
        Class names by code.
    threshold : float
        Probability from which a pixel counts as mining.
    """
    predicted = np.nan_to_num(probability, nan=0.0) >= threshold
    tp, fp, fn, tn = confusion_counts(predicted, truth > 0, region)
    result: dict[str, Any] = {**scores(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                              "pixels": int(region.sum()), "truth_pixels": tp + fn}
    if len(classes) > 2:
        result["class_iou"] = {name: scores(*confusion_counts(predicted & (feature_class == code), truth == code,
                                                              region)[:3])["iou"]
                               for code, name in enumerate(classes) if code}
    return result


def _set_determinism(seed: int, threads: int) -> None:
    import os

    import torch

    # cuBLAS is deterministic only with a fixed workspace (read when CUDA starts; harmless on the CPU)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def training_device(device: str) -> Any:
    """The torch device of ``device`` (``cpu``, ``cuda`` or ``auto``).

    Raises
    ------
    MtgError
        On another name, or ``cuda`` where torch sees no GPU.
    """
    import torch

    from mtg.pipeline.model_store import default_device

    if device not in ("auto", "cpu", "cuda"):
        raise MtgError(f"train --device {device!r} must be auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MtgError("train --device cuda: torch sees no GPU on this machine (use --device cpu or auto)")
    return torch.device(default_device() if device == "auto" else device)


def _loss(logits, target):
    import torch
    from torch.nn import functional as F

    ce = F.cross_entropy(logits, target)
    mining = 1.0 - torch.softmax(logits, dim=1)[:, 0]
    truth = (target > 0).float()
    dice = 1.0 - (2.0 * (mining * truth).sum() + 1.0) / (mining.sum() + truth.sum() + 1.0)
    return ce + dice


def _tensor(channels: np.ndarray, mean: np.ndarray, std: np.ndarray, device: Any):
    import torch

    x = np.nan_to_num((channels - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)


def _recalibrate_batch_norm(net, batches: list) -> None:
    """Set the batch-norm running statistics to their averages over ``batches`` under the current weights.

    The default running averages (momentum 0.1) follow the last few steps, whose chips vary a lot under this
    augmentation, each seen with older weights; averaging over the epoch's last batches with its final weights
    ("precise BN") gives the statistics that validation, the saved model and inference use.
    """
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    for m in norms:
        m.momentum = 0.1


def _central_logits(net, context, windows: list[tuple[int, int]], chip: int, margin: int):
    """Class logits of the chips at ``windows``, each predicted with ``margin`` pixels of context around it.

    ``context`` is the normalised channel image padded by ``margin`` on every side (a torch tensor), so window
    ``(r, c)`` of the image is ``context[:, r:r + chip + 2 * margin, c:c + chip + 2 * margin]``.
    """
    import torch

    side = chip + 2 * margin
    x = torch.stack([context[:, r:r + side, c:c + side] for r, c in windows])
    return net(x.contiguous(memory_format=torch.channels_last))[:, :, margin:margin + chip, margin:margin + chip]


@dataclass
class _Region:
    """One training cube in memory: composite bands, class raster, held-out pixels, and what the card records."""

    cube: str
    labels: str | Path
    bands: np.ndarray
    truth: np.ndarray
    held: np.ndarray
    classes: list[str]
    n_polygons: int
    crs: str
    transform: list[float]
    resolution_m: float


def _load_region(cube: str, labels: str | Path, bands: tuple[str, ...], holdout: tuple[float, ...] | None,
                 class_column: str | None, storage_options: dict[str, Any] | None) -> _Region:
    """The composite of ``bands`` of ``cube`` and its labels burnt on its grid (:class:`_Region`)."""
    from mtg.pipeline.zarr_store import open_cube

    ds = open_cube(cube, storage_options)
    crs = ds.rio.crs
    if crs is None or not crs.is_projected:
        raise MtgError(f"{cube} needs a projected CRS for training; it has {crs}")
    transform = ds.rio.transform()
    log.info("building the latest-clear-view composite of %s (%d x %d pixels)", cube, ds.sizes["y"], ds.sizes["x"])
    image = composite(ds, bands=bands, source=cube).compute().values
    shape = image.shape[1:]
    frame, classes = read_labels(labels, crs, class_column)
    truth = rasterise_labels(frame, shape, transform)
    if not (truth > 0).any():
        raise MtgError(f"no polygon of {labels} covers a pixel centre of {cube}")
    held = np.zeros(shape, dtype=bool)
    if holdout is not None:
        xmin, ymin, xmax, ymax = holdout
        xs, ys = ds["x"].values, ds["y"].values
        held = ((ys >= ymin) & (ys <= ymax))[:, None] & ((xs >= xmin) & (xs <= xmax))[None, :]
        if not held.any() or held.all():
            raise MtgError(f"--holdout {list(holdout)} must cover part, not none or all, of the cube "
                           f"(bounds {[round(v, 1) for v in ds.rio.bounds()]} in {crs})")
    return _Region(cube=cube, labels=labels, bands=image, truth=truth, held=held, classes=classes,
                   n_polygons=len(frame), crs=str(crs), transform=list(transform)[:6],
                   resolution_m=abs(transform.a))


def _side_by_side(arrays: list[np.ndarray], gap: int, fill: Any) -> np.ndarray:
    """Arrays ``(..., y, x)`` laid out left to right, ``gap`` columns of ``fill`` between them, bottoms padded with it.

    Several training cubes become one canvas; the gaps and pads are held out (never sampled) and at least as wide as
    the context of a validation chip, so no chip or context mixes two cubes.
    """
    if len(arrays) == 1:
        return arrays[0]
    height = max(a.shape[-2] for a in arrays)
    parts = []
    for i, a in enumerate(arrays):
        pad = [(0, 0)] * (a.ndim - 2) + [(0, height - a.shape[-2]), (0, gap if i < len(arrays) - 1 else 0)]
        parts.append(np.pad(a, pad, constant_values=fill))
    return np.concatenate(parts, axis=-1)


def train_model(
    cube: str | list[str],
    labels: str | Path | list[str | Path],
    out: str | Path,
    *,
    bands: tuple[str, ...] | list[str] = MODEL_BANDS,
    init: str | Path | None = None,
    holdout: tuple[float, float, float, float] | None = None,
    epochs: int = 40,
    patience: int = 6,
    chip: int = 128,
    chips_per_epoch: int = 512,
    batch: int = 16,
    positive_fraction: float = 0.5,
    val_fraction: float = 0.2,
    block: int = 256,
    learning_rate: float = 2e-3,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    norm: str = "group",
    seed: int = 0,
    threads: int = 2,
    device: str = "cpu",
    class_column: str | None = "feature_type",
    threshold: float = 0.5,
    tile: int = 256,
    overlap: int = 64,
    storage_options: dict[str, Any] | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train a U-Net on ``cube`` and the polygons in ``labels``; write weights and model card to ``out``.

    Parameters
    ----------
    cube : str or list of str
        Reflectance cube(s) (``mtg ingest``) with ``bands``; their composites are held in memory (4 bytes per band
        and pixel), side by side.
    labels : str, Path or list of them
        Mine polygons (any CRS) with a ``class_column`` of feature types, or without it for one class; one file per
        cube.
    out : str or Path
        Model folder to write.
    bands : sequence of str
        Input bands the model declares (:data:`mtg.pipeline.features.KNOWN_BANDS`); the indices computable from
        them (:func:`mtg.pipeline.features.indices_for`) are added as channels.
    init : str or Path, optional
        Model folder to start from (fine-tuning): its weights and its input normalisation are kept; its bands,
        classes and widths must match.
    holdout : (xmin, ymin, xmax, ymax), optional
        Box in the cube's CRS (one cube only) never sampled for training or validation; the model is scored on it
        at the end.
    epochs, patience : int
        Most epochs; stop when the validation IoU has not improved for ``patience`` epochs (the best epoch's
        weights are kept).
    chip, chips_per_epoch, batch : int
        Chip side (pixels, a multiple of the model's multiple), chips drawn per epoch, chips per step.
    positive_fraction : float
        Share of chips placed around mine pixels.
    val_fraction : float
        Share of the spatial blocks used for validation.
    block : int
        Side of the spatial blocks of the split (pixels).
    learning_rate : float
        Initial AdamW learning rate, decayed to 0 over ``epochs`` on a cosine.
    widths : tuple of int
        U-Net channels per level.
    norm : {"group", "batch"}
        Group normalisation (per chip; the default) or batch normalisation (statistics re-estimated at the end of
        every epoch, "precise BN").
    seed, threads : int
        Random seed and torch threads (both fixed for reproducible weights).
    device : str
        ``cpu``, ``cuda`` or ``auto`` (CUDA where torch sees a GPU). The same command on the same device gives the
        same weights; a CPU and a GPU run give different ones.
    class_column : str or None
        Feature-type column of ``labels``.
    threshold, tile, overlap : float, int, int
        Mining threshold of the metrics, and the tiling of the held-out inference.
    storage_options : dict, optional
        fsspec options for a remote cube.
    command : str, optional
        The command line, recorded in the model card.
    """
    import torch
    from mtg.pipeline.unet import UNet

    start = time.perf_counter()
    on = training_device(device)
    _set_determinism(seed, threads)
    rng = np.random.default_rng(seed)
    if len(widths) < 2:
        raise MtgError(f"train.widths {list(widths)} must have two or more levels")
    multiple = 2 ** (len(widths) - 1)
    if chip % multiple:
        raise MtgError(f"train.chip {chip} must be a multiple of {multiple} (the poolings of widths {list(widths)})")
    cubes, labels = [cube] if isinstance(cube, str) else list(cube), (
        [labels] if isinstance(labels, (str, Path)) else list(labels))
    if len(cubes) != len(labels) or not cubes:
        raise MtgError(f"give one --labels file per --cube: {len(cubes)} cube(s), {len(labels)} labels file(s)")
    if holdout is not None and len(cubes) > 1:
        raise MtgError("--holdout is a box of one cube; with several cubes hold out whole cubes instead (score them "
                       "with mtg evaluate)")
    bands = tuple(bands)
    indices = indices_for(bands)
    regions = [_load_region(c, lab, bands, holdout, class_column, storage_options) for c, lab in zip(cubes, labels)]
    classes = regions[0].classes
    for region in regions[1:]:
        if region.classes != classes:
            raise MtgError(f"labels {region.labels} have classes {region.classes}; {regions[0].labels} has {classes}")
    margin = chip // 2  # validation and hard-negative chips are predicted with this much context around them
    splits = [split_map(r.held, r.truth > 0, block, val_fraction, rng) for r in regions]
    image = _side_by_side([r.bands for r in regions], margin, np.nan)
    truth = _side_by_side([r.truth for r in regions], margin, 0)
    split = _side_by_side(splits, margin, HOLDOUT)
    held = _side_by_side([r.held for r in regions], margin, False)
    mining = truth > 0
    counts = {SPLIT_NAMES[s]: {"pixels": int((split == s).sum()), "mine_pixels": int((mining & (split == s)).sum())}
              for s in (TRAIN, VALIDATION, HOLDOUT)}
    log.info("split by %d-pixel blocks: %s", block,
             ", ".join(f"{k} {v['pixels']} pixels ({v['mine_pixels']} mine)" for k, v in counts.items()))
    haze = haze_weights(bands)

    channels = input_channels(image, bands, indices)
    start_card = read_card(init) if init is not None else None
    if start_card is not None:
        given = (list(bands), list(indices), classes, list(widths), norm)
        have = (start_card.inputs.bands, start_card.inputs.indices, start_card.classes, start_card.architecture.widths,
                start_card.architecture.norm)
        if given != have:
            raise MtgError(f"--init {init}: its bands, indices, classes, widths and norm {have} differ from this "
                           f"training's {given}")
        mean = np.asarray(start_card.inputs.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(start_card.inputs.std, dtype=np.float32)[:, None, None]
    else:
        train_px = channels[:, split == TRAIN]
        mean = np.nanmean(train_px, axis=1).astype(np.float32)[:, None, None]
        std = np.maximum(np.nanstd(train_px, axis=1), 1e-6).astype(np.float32)[:, None, None]
        del train_px
    val_windows = grid_windows(split, VALIDATION, chip)
    if not val_windows:
        raise MtgError(f"no {chip}-pixel validation chip fits in the validation blocks; lower --chip or raise "
                       "train.block / train.val_fraction")
    context = _tensor(np.pad(channels, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")[None], mean,
                      std, on)[0]
    val_y = torch.from_numpy(np.stack([truth[r:r + chip, c:c + chip] for r, c in val_windows]).astype(np.int64))

    if norm not in ("group", "batch"):
        raise MtgError(f"train.norm {norm!r} must be group or batch")
    net = UNet(channels.shape[0], len(classes), widths, norm).to(on, memory_format=torch.channels_last)
    if start_card is not None:
        net.load_state_dict(torch.load(resolve_model_dir(init) / start_card.weights, map_location="cpu",
                                       weights_only=True))
    else:
        with torch.no_grad():  # start from the prior "not mining" (about 1 % of a region is mine), not 1/classes
            net.head.bias[0] = float(np.log(99.0 * (len(classes) - 1)))
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, {})
    train_grid = grid_windows(split, TRAIN, chip)
    false_positives: dict[tuple[int, int], int] = {}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        windows = sample_windows(split, mining, TRAIN, chip, chips_per_epoch, positive_fraction, rng)
        hard = sorted(false_positives, key=false_positives.get, reverse=True)[:chips_per_epoch // 4]
        if hard:  # the last chips drawn are negatives: a quarter become the hardest ones seen so far
            windows[len(windows) - len(hard):] = hard
        net.train()
        losses, recent = [], []
        for first in range(0, len(windows), batch):
            pairs = [augment(image[:, r:r + chip, c:c + chip], truth[r:r + chip, c:c + chip], rng, haze)
                     for r, c in windows[first:first + batch]]
            x = _tensor(np.stack([input_channels(b, bands, indices) for b, _ in pairs]), mean, std, on)
            y = torch.from_numpy(np.stack([lab for _, lab in pairs]).astype(np.int64)).to(on)
            optimiser.zero_grad(set_to_none=True)
            loss = _loss(net(x), y)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if norm == "batch":
                recent = [*recent[-(BN_BATCHES - 1):], x]
        schedule.step()
        if norm == "batch":
            _recalibrate_batch_norm(net, recent)
        net.eval()
        tp = fp = fn = 0
        val_losses = []
        with torch.inference_mode():
            for first in range(0, len(val_windows), batch):
                logits = _central_logits(net, context, val_windows[first:first + batch], chip, margin)
                target = val_y[first:first + batch]
                val_losses.append(float(_loss(logits, target.to(on))) * len(target))
                predicted = (1.0 - torch.softmax(logits, dim=1)[:, 0]).cpu().numpy() >= threshold
                a, b, c, _ = confusion_counts(predicted, target.numpy() > 0)
                tp, fp, fn = tp + a, fp + b, fn + c
            picks = rng.choice(len(train_grid), size=min(len(train_grid), chips_per_epoch // 4), replace=False)
            for first in range(0, len(picks), batch):
                group = [train_grid[i] for i in picks[first:first + batch]]
                logits = _central_logits(net, context, group, chip, margin)
                wrong = (1.0 - torch.softmax(logits, dim=1)[:, 0]).cpu().numpy() >= threshold
                wrong &= np.stack([truth[r:r + chip, c:c + chip] == 0 for r, c in group])
                false_positives.update(zip(group, wrong.sum(axis=(1, 2)).tolist()))
            false_positives = {w: n for w, n in false_positives.items() if n}
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_loss": sum(val_losses) / len(val_windows),
                  **{f"val_{k}": v for k, v in scores(tp, fp, fn).items()}, "seconds": time.perf_counter() - t0}
        history.append(record)
        log.info("epoch %d/%d: loss %.3f, validation loss %.3f, IoU %.3f, F1 %.3f, precision %.3f, recall %.3f "
                 "(%.1f s)", epoch, epochs, record["loss"], record["val_loss"], record["val_iou"], record["val_f1"],
                 record["val_precision"], record["val_recall"], record["seconds"])
        if record["val_iou"] > best[0] + 1e-4:
            best = (record["val_iou"], epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= patience:
            log.info("stopping early: validation IoU has not improved for %d epochs (best %.3f at epoch %d)",
                     patience, best[0], best[1])
            break
    net.load_state_dict(best[2])
    seconds = time.perf_counter() - start
    training = {
        **({"cube": cubes[0], "labels": str(labels[0]), "n_polygons": regions[0].n_polygons,
            "crs": regions[0].crs, "shape": list(regions[0].truth.shape), "transform": regions[0].transform}
           if len(regions) == 1 else
           {"regions": [{"cube": r.cube, "labels": str(r.labels), "n_polygons": r.n_polygons, "crs": r.crs,
                         "shape": list(r.truth.shape)} for r in regions]}),
        "class_column": class_column, "init": str(init) if init is not None else None,
        "holdout_bbox": list(holdout) if holdout is not None else None,
        "split": {"block_px": block, "val_fraction": val_fraction, **counts},
        "chip": chip, "chips_per_epoch": chips_per_epoch, "positive_fraction": positive_fraction, "batch": batch,
        "learning_rate": learning_rate, "optimizer": "AdamW (weight decay 1e-4), cosine decay over max_epochs",
        "loss": "cross-entropy of the classes + soft Dice of the mining probability",
        "hard_negatives": "a quarter of each epoch's chips: the training windows (a random quarter of "
                          "chips_per_epoch scored after each epoch) with the most false-positive pixels so far",
        "validation": "grid chips wholly in the validation blocks, predicted with chip/2 pixels of context",
        "augmentation": "random flips and quarter turns; on 80 % of chips a gain of 0.8-1.2 x 0.9-1.1 per band "
                        "and a haze-like offset of 0-0.04 (strongest in blue); a third of the mine-free chips "
                        "recoloured (level 0.05-0.35 x 0.7-1.3 per band, contrast 0.3-1.2); noise sd 0.005",
        "max_epochs": epochs, "patience": patience, "epochs_run": len(history), "best_epoch": best[1],
        "seed": seed, "threads": threads, "device": str(on), "torch": torch.__version__, "seconds": round(seconds, 1),
        "command": command,
    }
    card = ModelCard(
        name=Path(out).name,
        architecture=Architecture(in_channels=channels.shape[0], n_classes=len(classes), widths=list(widths),
                                  norm=norm, parameters=sum(p.numel() for p in net.parameters())),
        inputs=Inputs(bands=list(bands), indices=list(indices), composite=COMPOSITE,
                      resolution_m=regions[0].resolution_m, mean=mean.ravel().tolist(), std=std.ravel().tolist()),
        classes=classes, training=training,
        metrics={"threshold": threshold, "epochs": history, "validation": history[best[1] - 1]},
        limitations=LIMITATIONS,
    )
    out = save_model(net, card, out)
    if holdout is not None:
        card.metrics["holdout"] = _holdout_scores(channels, truth, held, card, out, threshold, tile, overlap)
        log.info("held-out box: IoU %.3f, F1 %.3f, precision %.3f, recall %.3f",
                 *(card.metrics["holdout"][k] for k in ("iou", "f1", "precision", "recall")))
        save_model(net, card, out)
    log.info("trained in %.0f s (%d epochs, best %d); model written to %s", seconds, len(history), best[1], out)
    return TrainResult(out=out, card=card, seconds=seconds)


def _holdout_scores(channels: np.ndarray, truth: np.ndarray, held: np.ndarray, card: ModelCard, model: Path,
                    threshold: float, tile: int, overlap: int) -> dict[str, Any]:
    """Scores on the held-out box of the saved model, mapping the whole cube as ``mtg segment`` does."""
    import dask.array as da
    from mtg.pipeline.segment import class_probabilities

    probs = class_probabilities(da.from_array(channels, chunks=(-1, 1024, 1024)), card, model=str(model),
                                tile=tile, overlap=overlap).compute()
    valid = np.isfinite(channels).all(axis=0)
    probability = np.where(valid, 1.0 - probs[0], np.nan)
    feature_class = np.where(probability >= threshold, probs[1:].argmax(axis=0) + 1, 0)
    return region_scores(probability, feature_class, truth, held, card.classes, threshold)
