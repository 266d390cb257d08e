"""`mtg segment` and `mtg train` on a real (small) sample cube: seams, outputs, dask workers, errors, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401 - the .rio accessor
import torch
import xarray as xr

from mtg.pipeline.errors import MtgError
from mtg.pipeline.features import model_channels
from mtg.pipeline.model_store import read_card, resolve_model_dir
from mtg.pipeline.segment import class_probabilities
from mtg.pipeline.zarr_store import open_cube

MTG = str(Path(sys.executable).parent / "mtg")


def mtg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], check=False, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cube(sample_cubes) -> str:
    """The 3 km sample region's reflectance cube (seed 0, 6 dates, 128-pixel chunks)."""
    return sample_cubes.reflectance_url


def test_probabilities_do_not_depend_on_the_chunking(cube):
    channels = model_channels(open_cube(cube))
    card = read_card(None)
    whole = np.asarray(channels.values)  # the in-memory reference: one block holding the whole image
    kw = {"card": card, "tile": 128, "overlap": 32, "batch": 4}
    reference = class_probabilities(da.from_array(whole, chunks=-1), chunk=100_000, **kw).compute()
    assert reference.shape == (len(card.classes), *whole.shape[1:]) and np.isfinite(reference).all()
    np.testing.assert_allclose(reference.sum(axis=0), 1.0, atol=1e-5)
    for in_chunks, chunk in [((9, 100, 100), 100), ((9, 300, 77), 200), ((9, 64, 150), 160)]:
        # input chunks smaller than a tile; inference blocks of one tile, of 200 and of 160 pixels
        probs = class_probabilities(da.from_array(whole, chunks=in_chunks), chunk=chunk, **kw).compute()
        np.testing.assert_allclose(probs, reference, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_segment_command_writes_probability_and_polygons(cube, sample_region, tmp_path):
    proc = mtg("segment", "--cube", cube, "-o", str(tmp_path / "out"), "--chunk", "128")
    zarr_path, polygons = tmp_path / "out" / "probability.zarr", tmp_path / "out" / "mine_polygons.parquet"
    assert str(zarr_path) in proc.stdout and str(polygons) in proc.stdout
    ds = xr.open_zarr(zarr_path, consolidated=True, decode_coords="all")
    refl = open_cube(cube)
    assert ds["probability"].dtype == np.float32 and ds["feature_class"].dtype == np.uint8
    assert ds.rio.crs.to_epsg() == sample_region.epsg and ds.rio.transform() == refl.rio.transform()
    p = ds["probability"].values
    assert p.shape == (refl.sizes["y"], refl.sizes["x"]) and np.nanmin(p) >= 0 and np.nanmax(p) <= 1
    classes = read_card(None).classes
    assert ds["feature_class"].attrs["flag_meanings"].split() == classes
    assert ((ds["feature_class"].values > 0) == (p >= 0.5)).all()
    frame = gpd.read_parquet(polygons)
    assert list(frame.columns[:6]) == ["polygon_id", "feature_type", "mean_probability", "max_probability",
                                       "n_pixels", "area_m2"]
    assert frame.crs.to_epsg() == sample_region.epsg and len(frame) > 0
    assert frame.geometry.is_valid.all() and (frame["n_pixels"] * 100.0 >= 5000).all()
    assert (frame["mean_probability"] >= 0.5).all() and set(frame["feature_type"]) <= set(classes[1:])
    truth = gpd.read_parquet(sample_region.truth / "mine_polygons.parquet").union_all()
    found = frame.union_all()
    iou = found.intersection(truth).area / found.union(truth).area
    assert iou > 0.6, f"polygon IoU against the truth of the 3 km sample: {iou:.3f}"
    summary = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert summary["n_polygons"] == len(frame) and summary["device"] == "cpu"
    # two dask worker processes give the same probabilities
    mtg("segment", "--cube", cube, "-o", str(tmp_path / "workers"), "--scheduler", "local", "--workers", "2",
        "--chunk", "128")
    other = xr.open_zarr(tmp_path / "workers" / "probability.zarr", consolidated=True)["probability"].values
    np.testing.assert_allclose(other, p, rtol=0, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--tile", "100"], "segment.tile 100 must be a positive multiple of 8"),
    (["--overlap", "200"], "segment.overlap 200 must lie between 0 and half the tile"),
    (["--threshold", "1.5"], "segment.threshold"),
    (["--model", "/nonexistent/model"], "model folder /nonexistent/model has no model_card.json"),
    (["--device", "tpu"], "segment.device"),
    (["--time", "1990-01-01/1990-12-31"], "has no acquisitions in --time 1990-01-01/1990-12-31"),
])
def test_bad_options_exit_2_naming_the_value(cube, tmp_path, args, message):
    proc = mtg("segment", "--cube", cube, "-o", str(tmp_path / "x"), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_missing_cube_bands_and_bad_model_card_are_named(cube, tmp_path):
    from mtg.pipeline.segment import segment_cube

    proc = mtg("segment", "--cube", str(tmp_path / "none.zarr"), "-o", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "none.zarr is missing" in proc.stderr
    ds = open_cube(cube).drop_vars("B11").compute()
    ds.attrs["mtg:complete"] = True
    ds.to_zarr(tmp_path / "no-b11.zarr", consolidated=True, zarr_format=3)
    with pytest.raises(MtgError, match=r"no-b11.zarr lacks the band\(s\) \['B11'\]"):
        segment_cube(str(tmp_path / "no-b11.zarr"), tmp_path / "x")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_card.json").write_text(json.dumps({"name": "m"}))
    with pytest.raises(MtgError, match=r"model_card.json: architecture: Field required"):
        read_card(model)


def _holdout(region) -> str:
    _, bottom, right, top = region.bounds
    return f"{right - 1000},{bottom},{right},{top}"


@pytest.mark.slow
def test_train_command_writes_weights_and_a_model_card_with_metrics_per_epoch(cube, sample_region, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("train: {block: 100, chip: 48, batch: 8, chips_per_epoch: 24}\n")  # 3 x 3 blocks
    proc = mtg("train", "--cube", cube, "--labels", str(sample_region.truth / "mine_polygons.parquet"),
               "--out", str(tmp_path / "model"), "--epochs", "2", "--holdout", _holdout(sample_region),
               "--config", str(config))
    assert "held-out" in proc.stdout and "validation" in proc.stdout
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert (tmp_path / "model" / "weights.pt").stat().st_size > 1e5
    assert card["inputs"]["bands"] == ["B02", "B03", "B04", "B08", "B11", "B12"]
    assert card["inputs"]["indices"] == ["NDVI", "NDWI", "BSI"] and len(card["inputs"]["mean"]) == 9
    assert card["classes"] == ["background", "pit", "dump", "tailings", "other"]
    assert card["architecture"]["norm"] == "group"  # the default of new models
    epochs = card["metrics"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all({"loss", "val_iou", "val_f1", "val_precision", "val_recall"} <= set(e) for e in epochs)
    holdout = card["metrics"]["holdout"]
    assert {"iou", "f1", "precision", "recall", "class_iou"} <= set(holdout) and holdout["truth_pixels"] > 0
    training = card["training"]
    assert training["holdout_bbox"] == [float(v) for v in _holdout(sample_region).split(",")]
    assert training["split"]["held out"]["pixels"] > 0 and training["command"].startswith("mtg train")
    assert training["seed"] == 0 and training["threads"] == 2 and training["device"] == "cpu"
    # the trained model maps the cube
    mtg("segment", "--cube", cube, "-o", str(tmp_path / "out"), "--model", str(tmp_path / "model"))
    assert (tmp_path / "out" / "mine_polygons.parquet").exists()


@pytest.mark.slow
def test_training_is_reproducible(cube, sample_region, tmp_path):
    """The same call gives the same weights: on the CPU here, on the GPU where one is present (``auto``)."""
    from mtg.pipeline.train import train_model

    kw = {"epochs": 1, "chip": 48, "batch": 8, "chips_per_epoch": 16, "block": 100, "holdout": None,
          "device": "auto"}
    labels = sample_region.truth / "mine_polygons.parquet"
    a = train_model(cube, labels, tmp_path / "a", **kw)
    b = train_model(cube, labels, tmp_path / "b", **kw)
    wa = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.card.metrics["epochs"][0]["loss"] == b.card.metrics["epochs"][0]["loss"]
    assert a.card.training["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_training_input_errors_are_named(cube, sample_region, tmp_path):
    from mtg.pipeline.train import train_model

    labels = sample_region.truth / "mine_polygons.parquet"
    with pytest.raises(MtgError, match=r"--holdout \[0.0, 0.0, 1.0, 1.0\] must cover part"):
        train_model(cube, labels, tmp_path / "m", holdout=(0.0, 0.0, 1.0, 1.0), epochs=1)
    with pytest.raises(MtgError, match="train.chip 60 must be a multiple of 8"):
        train_model(cube, labels, tmp_path / "m", chip=60)
    with pytest.raises(MtgError, match=r"--init .*mine_unet_sample: its bands, indices, classes, widths and norm "
                                        r"\(.*'batch'\) differ from this training's \(.*'group'\)"):
        train_model(cube, labels, tmp_path / "m", init=resolve_model_dir("mine_unet_sample"), epochs=1)
    with pytest.raises(MtgError, match="--device 'gpu' must be auto, cpu or cuda"):
        train_model(cube, labels, tmp_path / "m", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(MtgError, match="--device cuda: torch sees no GPU"):
            train_model(cube, labels, tmp_path / "m", device="cuda")
    bad = gpd.read_parquet(labels)
    bad.loc[0, "feature_type"] = "quarry"
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(MtgError, match=r"bad.parquet: column 'feature_type' has value\(s\) \['quarry'\]"):
        train_model(cube, tmp_path / "bad.parquet", tmp_path / "m", epochs=1)
    proc = mtg("train", "--cube", cube, "--labels", str(labels), "--out", str(tmp_path / "m"), "--holdout", "1,2,3",
               check=False)
    assert proc.returncode == 2 and "--holdout '1,2,3' must be four numbers" in proc.stderr
