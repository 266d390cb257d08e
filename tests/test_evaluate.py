"""``mtg evaluate``: scores with a known answer on hand-made maps and rasters, partial labels, band mismatch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from shapely.geometry import box

from mtg.pipeline.evaluate import calibration_curve, evaluate_model, score_maps
from mtg.pipeline.features import indices_for
from mtg.pipeline.model_store import Architecture, Inputs, ModelCard, save_model
from mtg.pipeline.unet import UNet

MTG = str(Path(sys.executable).parent / "mtg")
CLASSES = ["background", "pit", "dump", "tailings", "other"]
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7400000.0)


def _maps():
    """10 x 10 pixels: a 4 x 4 pit and a 3 x 3 dump; the map finds 12 of the pit (plus 4 pixels beside it), 6 of the
    dump, a 2-pixel false alarm, and one pixel is never clear."""
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[1:5, 1:5] = 1
    truth[6:9, 6:9] = 2
    prob = np.full((10, 10), 0.15)
    cls = np.zeros((10, 10), dtype=np.uint8)
    prob[1:5, 2:6], cls[1:5, 2:6] = 0.95, 1
    prob[6:9, 6:8], cls[6:9, 6:8] = 0.75, 2
    prob[0, 8:10], cls[0, 8:10] = 0.65, 1
    prob[9, 0] = np.nan
    return prob, cls, truth


def test_scores_of_a_hand_made_map_are_exact():
    prob, cls, truth = _maps()
    r = score_maps(prob, cls, truth, model_classes=CLASSES, truth_classes=CLASSES, pixel_area_m2=100.0)
    assert (r["tp"], r["fp"], r["fn"], r["tn"], r["pixels"]) == (18, 6, 7, 68, 99)
    assert r["iou"] == pytest.approx(18 / 31) and r["f1"] == pytest.approx(36 / 49)
    assert r["precision"] == pytest.approx(18 / 24) and r["recall"] == pytest.approx(18 / 25)
    assert r["classes"]["pit"]["iou"] == pytest.approx(12 / 22) and r["classes"]["dump"]["iou"] == pytest.approx(6 / 9)
    assert r["classes"]["tailings"]["truth_pixels"] == 0
    assert r["objects"] == {"n": 3, "n_touching_no_label": 1, "area_m2": 2400.0, "false_positive_area_m2": 200.0,
                            "false_positive_area_share": pytest.approx(2 / 24)}
    pit, dump = r["sites"]
    assert pit["recall"] == pytest.approx(12 / 16) and pit["iou"] == pytest.approx(12 / 20)
    assert dump["recall"] == pytest.approx(6 / 9) and dump["iou"] == pytest.approx(6 / 9)
    bins = r["calibration"]["bins"]
    assert [b["pixels"] for b in bins] == [0, 75, 0, 0, 0, 0, 2, 6, 0, 16]
    assert bins[1]["mine_fraction"] == pytest.approx(7 / 75) and bins[9]["mine_fraction"] == pytest.approx(0.75)
    ece = (75 * abs(0.15 - 7 / 75) + 2 * 0.65 + 6 * 0.25 + 16 * 0.2) / 99
    assert r["calibration"]["ece"] == pytest.approx(ece)
    # the minimum mapping unit drops the 2-pixel false alarm from the mapped objects, not from the pixel scores
    r = score_maps(prob, cls, truth, model_classes=CLASSES, truth_classes=CLASSES, pixel_area_m2=100.0,
                   min_area_m2=300.0)
    assert r["objects"]["n"] == 2 and r["objects"]["false_positive_area_share"] == 0.0 and r["fp"] == 6


def test_partial_labels_give_recall_and_area_outside_not_iou():
    prob, cls, truth = _maps()
    r = score_maps(prob, cls, truth, model_classes=CLASSES, truth_classes=CLASSES, pixel_area_m2=100.0,
                   cover="partial")
    assert "iou" not in r and "precision" not in r and "calibration" not in r
    assert r["recall"] == pytest.approx(18 / 25) and r["mapped_outside_labels_m2"] == 600.0
    assert r["mapped_outside_labels_share"] == pytest.approx(6 / 24)
    assert r["classes"]["pit"] == {"recall": pytest.approx(12 / 16), "truth_pixels": 16}
    assert [s["recall"] for s in r["sites"]] == [pytest.approx(12 / 16), pytest.approx(6 / 9)]


def test_calibration_of_a_perfectly_calibrated_map_has_no_error():
    prob = np.array([0.25] * 4 + [0.75] * 4)
    truth = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    curve = calibration_curve(prob, truth, bins=4)
    assert curve["ece"] == pytest.approx(0.0) and curve["brier"] == pytest.approx(0.1875)


def _constant_model(folder: Path, bands: tuple[str, ...]) -> Path:
    """A model that calls every pixel a pit (zero head weights, a pit bias): its scores are known exactly."""
    indices = indices_for(bands)
    n = len(bands) + len(indices)
    net = UNet(n, len(CLASSES), (4, 8))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0]))
    card = ModelCard(name="constant", architecture=Architecture(in_channels=n, n_classes=5, widths=[4, 8],
                                                                parameters=sum(p.numel() for p in net.parameters())),
                     inputs=Inputs(bands=list(bands), indices=list(indices), composite="latest", resolution_m=10.0,
                                   mean=[0.0] * n, std=[1.0] * n),
                     classes=CLASSES, training={}, metrics={})
    return save_model(net, card, folder)


def _raster(path: Path, bands: tuple[str, ...], size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=len(bands), dtype="float32",
                       crs="EPSG:32750", transform=TRANSFORM) as dst:
        dst.write(rng.uniform(0.05, 0.3, size=(len(bands), size, size)).astype(np.float32))
        dst.descriptions = bands
    return path


def _labels(path: Path) -> Path:
    """A 10 x 10 pixel pit of site A and a 5 x 4 pixel dump of site B."""
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    frame = gpd.GeoDataFrame({"site_id": ["A", "B"], "feature_type": ["pit", "dump"]},
                             geometry=[box(x0 + 100, y0 - 200, x0 + 200, y0 - 100),
                                       box(x0 + 300, y0 - 340, x0 + 350, y0 - 300)], crs="EPSG:32750")
    frame.to_parquet(path)
    return path


def run_mtg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MTG, *args, "--quiet"], check=False, capture_output=True, text=True, timeout=300)


def test_mtg_evaluate_on_a_hand_made_raster_with_a_known_answer(tmp_path):
    bands = ("B02", "B03", "B04", "B08", "B11", "B12")
    model = _constant_model(tmp_path / "model", bands)
    image = _raster(tmp_path / "image.tif", bands)
    labels = _labels(tmp_path / "labels.parquet")
    proc = run_mtg("evaluate", "--model", str(model), "--imagery", str(image), "--labels", str(labels),
                   "--out", str(tmp_path / "eval"), "--min-area-m2", "0")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert (r["tp"], r["fp"], r["fn"]) == (120, 4096 - 120, 0)  # everything mapped as pit
    assert r["iou"] == pytest.approx(120 / 4096) and r["recall"] == 1.0
    assert r["classes"]["pit"]["iou"] == pytest.approx(100 / 4096) and r["classes"]["dump"]["iou"] == 0.0
    assert [(s["site"], s["truth_pixels"], s["recall"]) for s in r["sites"]] == [("A", 100, 1.0), ("B", 20, 1.0)]
    assert r["objects"]["n"] == 1 and r["objects"]["false_positive_area_share"] == 0.0
    assert (tmp_path / "eval" / "evaluation.png").stat().st_size > 1000
    assert "evaluation.png" in (tmp_path / "eval" / "evaluation.html").read_text()
    r = evaluate_model(str(model), str(image), labels, cover="partial")
    assert "iou" not in r and r["recall"] == 1.0
    assert r["mapped_outside_labels_m2"] == pytest.approx((4096 - 120) * 100.0)


def test_imagery_lacking_the_models_bands_is_refused_in_one_line(tmp_path):
    model = _constant_model(tmp_path / "model", ("B02", "B03", "B04", "B08", "B11", "B12"))
    image = _raster(tmp_path / "rgbn.tif", ("B02", "B03", "B04", "B08"))
    proc = run_mtg("evaluate", "--model", str(model), "--imagery", str(image), "--labels",
                   str(_labels(tmp_path / "labels.parquet")), "--out", str(tmp_path / "eval"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "lacks the band(s) ['B11', 'B12']" in proc.stderr and "constant" in proc.stderr
    rgb_model = _constant_model(tmp_path / "rgb", ("B02", "B03", "B04"))  # an RGB model reads the same raster
    r = evaluate_model(str(rgb_model), str(image), tmp_path / "labels.parquet", min_area_m2=0.0)
    assert r["iou"] == pytest.approx(120 / 4096)


def test_the_world_model_is_packaged_by_name_with_its_unseen_seed_scores():
    """``mine_unet_world`` ships beside the default by name; it is better than the default on the unseen seeds,
    whose scores both cards record."""
    from mtg.pipeline.model_store import read_card, resolve_model_dir, shipped_model_dir

    assert resolve_model_dir("mine_unet_world") == shipped_model_dir().parent / "mine_unet_world"
    card, default = read_card("mine_unet_world"), read_card(None)
    assert card.inputs.bands == ["B02", "B03", "B04", "B08", "B11", "B12"] and len(card.training["regions"]) == 25
    assert card.architecture.norm == "group" and default.architecture.norm == "batch"
    unseen = card.metrics["unseen_seeds"]
    assert unseen["seeds"] == [11, 12, 13, 14, 15] and unseen["iou_min"] <= unseen["iou_mean"]
    assert unseen["iou_mean"] > default.metrics["unseen_seeds"]["iou_mean"]  # shipped only if better
    assert unseen["false_positive_area_share"] < 0.05 and card.metrics["real_patagonia"]["pixels_mapped"] == 0


def test_train_bands_are_parsed_and_bad_ones_named():
    from mtg.pipeline.errors import MtgError
    from mtg.pipeline.features import parse_bands

    assert parse_bands("b02, B03,B04") == ("B02", "B03", "B04") and indices_for(("B02", "B03", "B04")) == ()
    with pytest.raises(MtgError, match=r"unknown \['B99'\]"):
        parse_bands("B02,B99")
    with pytest.raises(MtgError, match="distinct"):
        parse_bands("B02,B02")
