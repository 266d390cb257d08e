"""Scoring a segmentation model on labelled imagery (``mtg evaluate``).

The model maps the imagery with the tiled inference of ``mtg segment``; its map is scored against labels burnt on
the imagery's grid, pixel by pixel (mining vs not, and per class), per site (the labels' ``site_id``, else each
connected labelled area), per mapped object (connected areas at the threshold of at least the minimum mapping
unit, those touching no label being false-positive objects) and as a calibration curve of the probability.

With ``cover="partial"`` the labels mark only some of the mine ground (real chips where only some mine parts are
drawn): unlabelled ground may be mine, so IoU, precision and calibration would be false; reported are the recall on
the labelled pixels (overall, per class, per site) and the area mapped outside the labels.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from scipy import ndimage

from mtg.kernels.pixel_scores import confusion_counts, scores
from mtg.pipeline.errors import MtgError
from mtg.pipeline.table_io import atomic_write_all, write_json

log = logging.getLogger(__name__)

Cover = Literal["full", "partial"]
#: Sentinel-2 band names that band descriptions of GeoTIFF imagery may carry.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
CALIBRATION_BINS = 10


def _mask_areas(mask: np.ndarray, pixel_area_m2: float, min_area_m2: float) -> tuple[np.ndarray, np.ndarray]:
    """Connected areas (4-connected) of ``mask`` of at least ``min_area_m2``: labels (0 = none) and their sizes."""
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes * pixel_area_m2 < min_area_m2
    small[0] = True
    labels[small[labels]] = 0
    return labels, sizes


def calibration_curve(probability: np.ndarray, truth: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability of the mining probability: per equal-width bin the pixels, mean probability and mine fraction.

    Parameters
    ----------
    probability : numpy.ndarray
        Mining probability of the scored pixels (1-D, finite).
    truth : numpy.ndarray
        bool, the same pixels: mining or not.
    bins : int
        Equal-width bins over [0, 1].

    Returns
    -------
    dict
        ``bins`` (``lower``, ``upper``, ``pixels``, ``mean_probability``, ``mine_fraction``; NaN for empty bins),
        ``ece`` (expected calibration error: pixel-weighted mean of ``|mean_probability - mine_fraction|``) and
        ``brier`` (mean squared difference of probability and truth).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    p_sum = np.bincount(which, weights=probability, minlength=bins)
    t_sum = np.bincount(which, weights=truth.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = p_sum / count, t_sum / count
    n = max(int(count.sum()), 1)
    ece = float(np.nansum(count / n * np.abs(mean_p - frac)))
    brier = float(np.mean((probability - truth) ** 2)) if probability.size else float("nan")
    rows = [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "pixels": int(count[i]),
             "mean_probability": float(mean_p[i]), "mine_fraction": float(frac[i])} for i in range(bins)]
    return {"bins": rows, "ece": ece, "brier": brier}


def score_maps(probability: np.ndarray, feature_class: np.ndarray, truth: np.ndarray, *, model_classes: list[str],
               truth_classes: list[str], sites: np.ndarray | None = None, site_names: list[str] | None = None,
               pixel_area_m2: float, threshold: float = 0.5, min_area_m2: float = 0.0,
               cover: Cover = "full") -> dict[str, Any]:
    """Scores of a probability map against class labels on the same grid.

    Parameters
    ----------
    probability : numpy.ndarray
        ``(y, x)`` mining probability; NaN (never clear) pixels are not scored.
    feature_class : numpy.ndarray
        ``(y, x)`` predicted class codes, indices into ``model_classes``.
    truth : numpy.ndarray
        ``(y, x)`` labelled class codes, indices into ``truth_classes`` (0 = not mining, or unlabelled when
        ``cover`` is ``partial``).
    model_classes, truth_classes : list of str
        Class names by code; classes of the same name are scored per class.
    sites : numpy.ndarray, optional
        ``(y, x)`` int site index per labelled pixel (0 = none, ``i`` names ``site_names[i - 1]``); default each
        connected labelled area (8-connected) is a site.
    site_names : list of str, optional
        Names of the sites of ``sites``.
    pixel_area_m2 : float
        Area of one pixel.
    threshold : float
        Probability from which a pixel counts as mining.
    min_area_m2 : float
        Minimum mapping unit: mapped areas below it are not counted as mapped objects.
    cover : {"full", "partial"}
        Whether the labels mark all mine ground or only some of it.

    Returns
    -------
    dict
        ``pixels`` (scored), ``cover``, ``threshold``, ``min_area_m2``; the overall scores (full: ``iou``, ``f1``,
        ``precision``, ``recall`` and counts; partial: ``recall`` and counts on labelled pixels),
        ``mapped_area_m2``, ``objects`` (mapped objects of at least the mapping unit, the area of those touching no
        label and its share of the mapped area: ``false_positive_area_share``), ``classes`` (per class),
        ``sites`` (per site) and, with full labels, ``calibration``.
    """
    valid = np.isfinite(probability)
    prob = np.where(valid, probability, 0.0)
    predicted = (prob >= threshold) & valid
    labelled = truth > 0
    tp, fp, fn, tn = confusion_counts(predicted, labelled, valid)
    result: dict[str, Any] = {"cover": cover, "threshold": threshold, "min_area_m2": min_area_m2,
                              "pixels": int(valid.sum()), "truth_pixels": tp + fn,
                              "mapped_area_m2": float(predicted.sum() * pixel_area_m2)}
    if cover == "full":
        result.update({**scores(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn, "tn": tn})
    else:
        result.update({"recall": scores(tp, fp, fn)["recall"], "tp": tp, "fn": fn,
                       "mapped_outside_labels_m2": float(fp * pixel_area_m2),
                       "mapped_outside_labels_share": fp / (tp + fp) if tp + fp else float("nan")})
    objects, _ = _mask_areas(predicted, pixel_area_m2, min_area_m2)
    ids = np.unique(objects[objects > 0])
    touching = np.unique(objects[(objects > 0) & labelled])
    object_px = int((objects > 0).sum())
    false_px = int(np.isin(objects, np.setdiff1d(ids, touching)).sum())
    result["objects"] = {"n": int(ids.size), "n_touching_no_label": int(ids.size - touching.size),
                         "area_m2": float(object_px * pixel_area_m2),
                         "false_positive_area_m2": float(false_px * pixel_area_m2),
                         "false_positive_area_share": false_px / object_px if object_px else 0.0}
    per_class = {}
    for code, name in enumerate(truth_classes):
        if code == 0 or name not in model_classes:
            continue
        mine = model_classes.index(name)
        a, b, c, _ = confusion_counts(predicted & (feature_class == mine), truth == code, valid)
        per_class[name] = ({**scores(a, b, c), "tp": a, "fp": b, "fn": c, "truth_pixels": a + c} if cover == "full"
                           else {"recall": scores(a, b, c)["recall"], "truth_pixels": a + c})
    result["classes"] = per_class
    if sites is None:
        sites, n = ndimage.label(labelled, structure=np.ones((3, 3), dtype=bool))
        site_names = [f"area {i}" for i in range(1, n + 1)]
    site_rows = []
    for i, name in enumerate(site_names or [], start=1):
        here = (sites == i) & valid
        truth_px = int(here.sum())
        if not truth_px:
            continue
        hit = int((here & predicted).sum())
        row: dict[str, Any] = {"site": name, "truth_pixels": truth_px, "recall": hit / truth_px}
        if cover == "full":  # the mapped objects that reach the site, against the site
            mapped = np.isin(objects, np.unique(objects[here & (objects > 0)])) & (objects > 0)
            union = int((mapped | here).sum())
            row["iou"] = int((mapped & here).sum()) / union
            row["mean_probability"] = float(prob[here].mean())
        site_rows.append(row)
    result["sites"] = site_rows
    if cover == "full":
        result["calibration"] = calibration_curve(prob[valid], labelled[valid])
    return result


def raster_imagery(paths: list[str], band_names: list[str] | None = None) -> xr.Dataset:
    """Reflectance bands from GeoTIFFs on the finest grid among them, as a one-date dataset.

    Parameters
    ----------
    paths : list of str
        GeoTIFFs in one projected CRS; a coarser file is resampled onto the finest one's grid (bilinear).
        Integer bands are Sentinel-2 L2A digital numbers (reflectance x 10,000), float bands reflectance.
    band_names : list of str, optional
        The bands of all files in order (e.g. B02,B03,B04,B08,B11,B12); default their band descriptions, which
        must then be Sentinel-2 band names (:data:`S2_BANDS`).

    Raises
    ------
    MtgError
        Naming the file and its bands when names are missing or do not add up.
    """
    import rasterio
    import rioxarray  # noqa: F401 - the .rio accessor
    from rasterio.warp import Resampling, reproject

    sources = []
    for path in paths:
        try:
            with rasterio.open(path) as src:
                data = src.read().astype(np.float32)
                if np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
                    data /= 1e4
                if src.nodata is not None:
                    data[src.read() == src.nodata] = np.nan
                sources.append((path, data, src.transform, src.crs, list(src.descriptions)))
        except rasterio.errors.RasterioIOError as err:
            raise MtgError(f"--imagery {path}: cannot read it as a raster ({err})") from None
    total = sum(s[1].shape[0] for s in sources)
    if band_names is None:
        band_names = [d or "" for s in sources for d in s[4]]
        if not set(band_names) <= set(S2_BANDS):
            raise MtgError(f"--imagery {','.join(paths)}: band descriptions {band_names} are not Sentinel-2 band "
                           f"names; name the {total} bands in order with --imagery-bands (e.g. B02,B03,B04,B08)")
    if len(band_names) != total or len(set(band_names)) != total:
        raise MtgError(f"--imagery-bands {','.join(band_names)}: expected {total} distinct names, one per band of "
                       f"{','.join(paths)}")
    crs = sources[0][3]
    if crs is None or any(s[3] != crs for s in sources):
        raise MtgError(f"--imagery {','.join(paths)}: the rasters need one CRS; they have "
                       f"{[str(s[3]) for s in sources]}")
    path, base, transform, _, _ = min(sources, key=lambda s: abs(s[2].a))
    height, width = base.shape[1:]
    layers = []
    for path, data, tr, _, _ in sources:
        if tr == transform and data.shape[1:] == (height, width):
            layers += list(data)
            continue
        out = np.full((data.shape[0], height, width), np.nan, dtype=np.float32)
        reproject(data, out, src_transform=tr, src_crs=crs, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
        layers += list(out)
    x = transform.c + (np.arange(width) + 0.5) * transform.a
    y = transform.f + (np.arange(height) + 0.5) * transform.e
    ds = xr.Dataset({b: (("y", "x"), v) for b, v in zip(band_names, layers)}, coords={"y": y, "x": x})
    return ds.rio.write_crs(crs)


def open_imagery(imagery: str, band_names: list[str] | None = None,
                 storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """A reflectance cube (``mtg ingest``, Zarr) or comma-separated GeoTIFFs (:func:`raster_imagery`)."""
    from mtg.pipeline.zarr_store import open_cube

    paths = [p for p in imagery.split(",") if p]
    if len(paths) == 1 and not paths[0].lower().endswith((".tif", ".tiff")):
        if band_names is not None:
            raise MtgError("--imagery-bands applies to GeoTIFF imagery; a cube names its bands")
        return open_cube(paths[0], storage_options)
    return raster_imagery(paths, band_names)


def rasterise_truth(labels: str | Path, grid: xr.DataArray, model_classes: list[str],
                    class_column: str | None = "feature_type") -> tuple[np.ndarray, list[str], np.ndarray | None,
                                                                         list[str] | None]:
    """Labels on the grid of ``grid``: class codes, class names, and site indices with their names.

    Parameters
    ----------
    labels : str or Path
        Polygons (any vector file, with ``class_column`` and optionally ``site_id``), or a GeoTIFF mask of class
        codes in the model's class order (0 = not mining / unlabelled), resampled (nearest) onto the grid.
    grid : xarray.DataArray
        ``(y, x)`` with a CRS (rioxarray).
    model_classes : list of str
        The model's classes, the codes of a mask.
    class_column : str or None
        Feature-type column of polygons.
    """
    from mtg.pipeline.labels import rasterise_labels, read_labels

    shape, transform, crs = grid.shape, grid.rio.transform(), grid.rio.crs
    path = str(labels)
    if path.lower().endswith((".tif", ".tiff")):
        import rasterio
        from rasterio.warp import Resampling, reproject

        with rasterio.open(path) as src:
            codes = src.read(1)
            truth = np.zeros(shape, dtype=np.uint8)
            reproject(codes, truth, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                      dst_crs=crs, resampling=Resampling.nearest)
        if codes.min() < 0 or codes.max() >= len(model_classes):
            raise MtgError(f"--labels {path}: mask codes {int(codes.min())}..{int(codes.max())} must be class codes "
                           f"0..{len(model_classes) - 1} of the model's classes {model_classes}")
        return truth, list(model_classes), None, None
    frame, classes = read_labels(labels, crs, class_column)
    truth = rasterise_labels(frame, shape, transform)
    if "site_id" not in frame.columns:
        return truth, classes, None, None
    names = sorted(frame["site_id"].dropna().astype(str).unique())
    index = {s: i + 1 for i, s in enumerate(names)}
    sites = frame.dropna(subset=["site_id"]).assign(class_code=lambda f: f["site_id"].astype(str).map(index))
    return truth, classes, rasterise_labels(sites, shape, transform).astype(np.int32), names


def _panel(rgb: np.ndarray, truth: np.ndarray, prediction: np.ndarray, classes: list[str], title: str,
           path: Path) -> None:
    """PNG of the image, the labels and the predicted classes side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["#f2f2f2", "#d62728", "#8c564b", "#1f77b4", "#7f7f7f", "#2ca02c"][:max(2, len(classes))])
    lo, hi = np.nanpercentile(rgb, 2), np.nanpercentile(rgb, 98)
    image = np.clip(np.nan_to_num((rgb - lo) / max(hi - lo, 1e-6)), 0, 1).transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title("image (B04, B03, B02)")
    for ax, data, name in ((axes[1], truth, "labels"), (axes[2], prediction, "prediction")):
        ax.imshow(data, cmap=colours, vmin=0, vmax=colours.N - 1, interpolation="nearest")
        ax.set_title(name)
    for ax in axes:
        ax.set_axis_off()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i)) for i in range(1, len(classes))]
    fig.legend(handles, classes[1:], loc="lower center", ncol=len(classes) - 1, frameon=False)
    fig.suptitle(title)
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def _json_ready(value: Any) -> Any:
    """``value`` with NaN floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def _html(result: dict[str, Any], png: str) -> str:
    """A small HTML page: the panel and the main numbers."""
    keys = [k for k in ("iou", "f1", "precision", "recall", "mapped_area_m2", "mapped_outside_labels_m2",
                        "mapped_outside_labels_share") if k in result]
    rows = [(k, result[k]) for k in keys] + [("false-positive area share of mapped objects",
                                              result["objects"]["false_positive_area_share"])]
    rows += [(f"{name} {m}", v) for name, c in result["classes"].items() for m, v in c.items()
             if m in ("iou", "recall")]
    cells = "".join(f"<tr><td>{k}</td><td>{v:.4g}</td></tr>" for k, v in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mtg evaluate: {result['model']}</title></head>"
            f"<body><h1>Model {result['model']} on {result['imagery']}</h1><p>labels {result['labels']} "
            f"(cover {result['cover']}), threshold {result['threshold']}</p><img src='{png}' width='960'>"
            f"<table border='1'>{cells}</table></body></html>\n")


def evaluate_model(model: str | None, imagery: str, labels: str | Path, out: str | Path | None = None, *,
                   cover: Cover = "full", band_names: list[str] | None = None, threshold: float = 0.5,
                   min_area_m2: float = 5_000.0, class_column: str | None = "feature_type", tile: int = 256,
                   overlap: int = 64, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Map ``imagery`` with ``model`` and score the map against ``labels``; write JSON, PNG and HTML to ``out``.

    Parameters
    ----------
    model : str or None
        Model folder (None: the shipped model).
    imagery : str
        Reflectance cube (Zarr) or comma-separated GeoTIFFs (:func:`open_imagery`).
    labels : str or Path
        Mine polygons or a class-code mask (:func:`rasterise_truth`).
    out : str or Path, optional
        Folder for ``evaluation.json``, ``evaluation.png`` and ``evaluation.html``; nothing written when None.
    cover : {"full", "partial"}
        Whether the labels mark all mine ground of the imagery or only some (:func:`score_maps`).
    band_names : list of str, optional
        Names of GeoTIFF bands without Sentinel-2 band descriptions.
    threshold, min_area_m2 : float
        Mining probability threshold and minimum mapping unit.
    class_column : str or None
        Feature-type column of label polygons.
    tile, overlap : int
        Tiling of the inference.
    storage_options : dict, optional
        fsspec options for a remote cube.

    Returns
    -------
    dict
        :func:`score_maps` with ``model``, ``imagery``, ``labels`` and ``seconds``.

    Raises
    ------
    MtgError
        For unreadable imagery or labels, imagery lacking the model's bands, or labels that miss the imagery.
    """
    from mtg.pipeline.model_store import read_card
    from mtg.pipeline.segment import segment

    start = time.perf_counter()
    card = read_card(model)
    ds = open_imagery(imagery, band_names, storage_options)
    mapped = segment(ds, name=imagery, model=model, threshold=threshold, tile=tile, overlap=overlap).compute()
    probability = mapped["probability"].values
    truth, truth_classes, sites, names = rasterise_truth(labels, mapped["probability"], card.classes, class_column)
    if cover == "partial" and not (truth > 0).any():  # with full cover, no label means a scene without mines
        raise MtgError(f"--labels {labels}: no label covers a pixel of {imagery}")
    transform = mapped.rio.transform()
    result = {"model": card.name, "imagery": imagery, "labels": str(labels),
              **score_maps(probability, mapped["feature_class"].values, truth, model_classes=card.classes,
                           truth_classes=truth_classes, sites=sites, site_names=names,
                           pixel_area_m2=abs(transform.a * transform.e), threshold=threshold,
                           min_area_m2=min_area_m2, cover=cover)}
    result["seconds"] = time.perf_counter() - start
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        rgb = np.stack([ds[b].values if "time" not in ds[b].dims else ds[b].isel(time=-1).values
                        for b in ("B04", "B03", "B02")]) if {"B02", "B03", "B04"} <= set(ds.data_vars) else \
            np.repeat(probability[None], 3, axis=0)
        truth_shown = truth if truth_classes == card.classes else (truth > 0).astype(np.uint8)
        title = (f"{card.name}: IoU {result['iou']:.3f}" if cover == "full"
                 else f"{card.name}: recall on labels {result['recall']:.3f}")
        atomic_write_all({
            out / "evaluation.json": lambda tmp: write_json(_json_ready(result), tmp),
            out / "evaluation.png": lambda tmp: _panel(rgb, truth_shown, mapped["feature_class"].values,
                                                       card.classes, title, tmp),
            out / "evaluation.html": lambda tmp: tmp.write_text(_html(result, "evaluation.png")),
        })
    log.info("evaluated %s on %s in %.1f s", card.name, imagery, result["seconds"])
    return result
