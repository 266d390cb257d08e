"""The shipped segmentation model: held-out scores on the sample region, and real Sentinel-2 without mines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from odc.geo.geom import box
from rasterio.warp import Resampling, reproject

from conftest import shared_file

from mtg.pipeline.catalogs import resolve_source
from mtg.pipeline.config import RunConfig
from mtg.pipeline.labels import rasterise_labels, read_labels
from mtg.pipeline.model_store import read_card
from mtg.pipeline.run import ensure_sample, run_ingest
from mtg.pipeline.train import region_scores

MTG = str(Path(sys.executable).parent / "mtg")


def mtg(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([MTG, *args, "--quiet"], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mtg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _scores(run: Path, segment: Path, box: list[float] | None) -> dict:
    """Pixel scores of the segmentation of a run folder against its truth polygons, in ``box`` or everywhere."""
    ds = xr.open_zarr(segment / "probability.zarr", consolidated=True, decode_coords="all")
    prob = ds["probability"].values
    frame, classes = read_labels(run / "sample" / "truth" / "mine_polygons.parquet", ds.rio.crs)
    truth = rasterise_labels(frame, prob.shape, ds.rio.transform())
    region = np.ones(prob.shape, dtype=bool)
    if box is not None:
        xmin, ymin, xmax, ymax = box
        ys, xs = ds["y"].values, ds["x"].values
        region = ((ys >= ymin) & (ys <= ymax))[:, None] & ((xs >= xmin) & (xs <= xmax))[None, :]
    return region_scores(prob, ds["feature_class"].values, truth, region, classes)


@pytest.mark.slow
def test_shipped_model_on_the_held_out_part_of_the_sample_region(tmp_path_factory):
    """The default sample region (seed 0, 20 km, 8 dates, as `mtg run` makes it), scored on the box that the
    shipped model never saw in training. The synthetic sample is much easier than real imagery."""
    run = tmp_path_factory.mktemp("heldout") / "run"
    cfg = RunConfig()
    region = ensure_sample(run / "sample", cfg.sample, progress=False)
    source = resolve_source("sample").model_copy(update={"url": str(region.catalog)})
    ingest = cfg.ingest.model_copy(update={"out": str(run / "cubes"), "time": "/".join(region.time_range)})
    result = run_ingest(ingest, None, source=source, aoi=box(*region.bounds, f"EPSG:{region.epsg}"),
                        progress=False)
    mtg("segment", "--cube", result.reflectance_url, "-o", str(run / "segment"))
    card = read_card(None)
    held = card.training["holdout_bbox"]
    scores = _scores(run, run / "segment", held)
    print(f"held-out box {held}: {scores}")
    assert scores["truth_pixels"] > 5000  # at least two sites' worth of mine pixels
    assert scores["iou"] >= 0.85 and scores["f1"] >= 0.9, scores
    assert scores["iou"] == pytest.approx(card.metrics["holdout"]["iou"], abs=1e-3)  # the card tells the truth


def _patagonia_cube(folder: Path, out: Path) -> Path:
    """The real Patagonia subset as a one-date reflectance cube on its 10 m grid.

    The SWIR bands lie on a 20 m grid with the same origin but twice the extent: they are resampled onto the
    10 m grid (bilinear), honouring both transforms. Digital numbers are reflectance x 10^4; the file's "NIR" band
    stands in for B08.
    """
    with rasterio.open(folder / "s2_patagonia_10m_B2_B3_B4_NIR.tif") as src:
        fine = src.read().astype(np.float32) / 1e4
        transform, crs, (height, width) = src.transform, src.crs, src.shape
    with rasterio.open(folder / "s2_patagonia_20m_B11_B12.tif") as src:
        swir = np.zeros((2, height, width), dtype=np.float32)
        reproject(src.read().astype(np.float32) / 1e4, swir, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear)
    x = transform.c + (np.arange(width) + 0.5) * transform.a
    y = transform.f + (np.arange(height) + 0.5) * transform.e
    bands = dict(zip(("B02", "B03", "B04", "B08", "B11", "B12"), [*fine, *swir]))
    ds = xr.Dataset({k: (("y", "x"), v) for k, v in bands.items()}, coords={"y": y, "x": x})
    ds = ds.rio.write_crs(crs)
    ds.attrs["mtg:complete"] = True
    ds.to_zarr(out, mode="w", consolidated=True, zarr_format=3)
    return out


def test_real_sentinel2_without_mines_gives_little_false_positive_area(tmp_path):
    folder = shared_file("sentinel2_patagonia_xrspatial", "s2_patagonia_10m_B2_B3_B4_NIR.tif").parent
    cube = _patagonia_cube(folder, tmp_path / "patagonia.zarr")
    mtg("segment", "--cube", str(cube), "-o", str(tmp_path / "out"))
    ds = xr.open_zarr(tmp_path / "out" / "probability.zarr", consolidated=True, decode_coords="all")
    prob = ds["probability"].values
    assert prob.shape == (200, 300) and np.isfinite(prob).all() and ds.rio.crs.to_epsg() == 32719
    frame = gpd.read_parquet(tmp_path / "out" / "mine_polygons.parquet")
    assert frame.crs.to_epsg() == 32719 and frame.geometry.is_valid.all()
    fp_pixels_m2 = float((prob >= 0.5).sum()) * 100.0
    print(f"Patagonia (6 km^2, no mines): {fp_pixels_m2 / 1e6:.4f} km^2 of pixels and "
          f"{frame['area_m2'].sum() / 1e6:.4f} km^2 of polygons above probability 0.5")
    assert fp_pixels_m2 <= 0.01 * 6e6  # under 1 % of the scene
