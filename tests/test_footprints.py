"""Footprint polygons from a probability raster: threshold, connected areas, minimum area, class and statistics."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from mtg.pipeline.footprints import FOOTPRINT_COLUMNS, footprint_polygons

CLASSES = ["background", "pit", "dump", "tailings", "other"]
GRID = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)


def _rasters():
    prob = np.zeros((40, 50), dtype=np.float32)
    cls = np.zeros((40, 50), dtype=np.uint8)
    prob[5:15, 5:25] = 0.9  # 200 pixels, 20,000 m^2: a pit with a dump corner
    cls[5:15, 5:25] = 1
    cls[5:8, 20:25] = 2
    prob[30:35, 30:40] = 0.7  # 50 pixels, 5,000 m^2: tailings
    cls[30:35, 30:40] = 3
    prob[20:22, 45:47] = 0.95  # 4 pixels: below the minimum area
    cls[20:22, 45:47] = 4
    prob[0, 0] = np.nan
    return prob, cls


def test_polygons_have_the_area_type_and_mean_probability_of_their_pixels():
    prob, cls = _rasters()
    frame = footprint_polygons(prob, cls, CLASSES, GRID, "EPSG:32750", threshold=0.5, min_area_m2=5_000.0,
                               simplify_m=0.0)
    assert list(frame.columns) == FOOTPRINT_COLUMNS and frame.crs.to_epsg() == 32750
    assert frame["polygon_id"].tolist() == [1, 2]
    assert frame["feature_type"].tolist() == ["pit", "tailings"]
    assert frame["n_pixels"].tolist() == [200, 50]
    np.testing.assert_allclose(frame["area_m2"], [20_000.0, 5_000.0])
    np.testing.assert_allclose(frame["mean_probability"], [0.9, 0.7], rtol=1e-6)
    first = frame.geometry.iloc[0]
    assert first.bounds == pytest.approx((500_050.0, 6_999_850.0, 500_250.0, 6_999_950.0))


def test_threshold_simplification_and_empty_results():
    prob, cls = _rasters()
    high = footprint_polygons(prob, cls, CLASSES, GRID, "EPSG:32750", threshold=0.8, min_area_m2=0.0,
                              simplify_m=5.0)
    assert high["feature_type"].tolist() == ["pit", "other"] and high.geometry.is_valid.all()
    none = footprint_polygons(np.zeros((5, 5), np.float32), np.zeros((5, 5), np.uint8), CLASSES, GRID,
                              "EPSG:32750", threshold=0.5, min_area_m2=0.0, simplify_m=5.0)
    assert none.empty and none.crs.to_epsg() == 32750 and "mean_probability" in none.columns
