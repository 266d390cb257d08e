"""A tiny model trained on two sample seeds and scored on a third it never saw, with the code of ``mtg evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtg.pipeline.evaluate import evaluate_model, raster_imagery
from mtg.pipeline.model_store import read_card
from mtg.pipeline.sample import write_sample_region
from mtg.pipeline.train import train_model

BANDS = ("B02", "B03", "B04", "B08")  # the 10 m bands: a model without SWIR


def _latest_scene(root: Path) -> list[str]:
    """The 10 m band files of the latest acquisition of a sample region, in :data:`BANDS` order."""
    item = max((p for p in (root / "sentinel-2-l2a").iterdir() if p.is_dir()), key=lambda p: p.name.split("_")[2])
    return [str(next(item.glob(f"*_{band}_10m.tif"))) for band in BANDS]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    scenes = {}
    for seed in (5, 6, 7):
        region = write_sample_region(root / f"seed{seed}", seed=seed, size_km=3.0, n_dates=6)
        files = _latest_scene(region.root)
        cube = root / f"seed{seed}.zarr"
        ds = raster_imagery(files, list(BANDS))
        ds.attrs["mtg:complete"] = True
        ds.to_zarr(cube, mode="w", consolidated=True, zarr_format=3)
        scenes[seed] = (str(cube), files, region.truth / "mine_polygons.parquet")
    return scenes


def test_a_model_trained_on_two_seeds_maps_mines_of_a_third(seeds, tmp_path):
    (cube5, _, labels5), (cube6, _, labels6), (_, files7, labels7) = seeds[5], seeds[6], seeds[7]
    result = train_model([cube5, cube6], [labels5, labels6], tmp_path / "tiny", bands=BANDS, widths=(8, 16),
                         chip=64, chips_per_epoch=48, batch=8, block=100, epochs=4, patience=4,
                         learning_rate=1e-2)
    card = read_card(tmp_path / "tiny")
    assert card.inputs.bands == list(BANDS) and card.inputs.indices == ["NDVI", "NDWI"]  # BSI needs B11
    assert [r["cube"] for r in card.training["regions"]] == [cube5, cube6] and result.card.training["init"] is None
    scores = evaluate_model(str(tmp_path / "tiny"), ",".join(files7), labels7, tmp_path / "eval", min_area_m2=0.0,
                            band_names=list(BANDS))
    print({k: scores[k] for k in ("iou", "precision", "recall", "truth_pixels")}, scores["classes"])
    truth_share = scores["truth_pixels"] / scores["pixels"]
    # after 4 short epochs the tiny model is under-confident (it starts at the prior "not mining"), but what it maps
    # on the unseen seed is mostly mine: ten times the mine share of the scene, on tens of pixels
    assert scores["tp"] >= 50 and scores["precision"] > 10 * truth_share
    assert np.isfinite(scores["calibration"]["ece"]) and (tmp_path / "eval" / "evaluation.png").exists()
