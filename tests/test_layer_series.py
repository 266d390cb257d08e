"""Per-site series of published footprint layers with and without a coverage: a site outside a period's coverage
has a missing area there, not 0; one partly outside has the uncovered share of its footprint as missing_share."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from mtg.pipeline.errors import MtgError
from mtg.pipeline.layer_series import coverage_shares, layer_series, parse_periods

DEG = 0.01  # about 1.1 km at the equator


def _sites() -> gpd.GeoDataFrame:
    """A, B and C: footprints side by side along the equator; D: a site of points only, at 118.05 E."""
    geoms = [shapely.MultiPolygon([shapely.box(118.0 + 2 * k * DEG, 0.0, 118.0 + (2 * k + 1) * DEG, DEG)])
             for k in range(3)] + [None]
    frame = gpd.GeoDataFrame({"site_id": ["A", "B", "C", "D"]}, geometry=geoms, crs="EPSG:4326")
    frame["lon"] = [g.centroid.x if g is not None else 118.05 for g in geoms]
    frame["lat"] = [g.centroid.y if g is not None else 0.5 * DEG for g in geoms]
    return frame


def _layer(*boxes: tuple[float, float]) -> gpd.GeoDataFrame:
    """Polygons from (x0, x1) spans in units of DEG east of 118 E, the full height of the sites."""
    return gpd.GeoDataFrame(geometry=[shapely.box(118.0 + a * DEG, 0.0, 118.0 + b * DEG, DEG) for a, b in boxes],
                            crs="EPSG:4326")


def test_a_site_outside_the_coverage_is_missing_not_zero():
    sites = _sites()
    # 2021: A half mined, C mined; 2023: A and C wholly, B half
    periods = {"2021": {"l21": _layer((0.0, 0.5), (4.0, 5.0))},
               "2023": {"l23": _layer((0.0, 1.0), (2.0, 2.5), (4.0, 5.0))}}
    plain, _, _ = layer_series(sites, None, periods, cumulative=False)
    plain = plain.set_index(["site_id", "period"])
    assert plain.loc[("B", "2021"), "area_m2"] == 0.0 and np.isnan(plain["missing_share"]).all()
    # the 2021 layer's makers looked at A and half of B only, in 2023 at everything
    coverage = {"2021": _layer((-1.0, 2.5)), "2023": _layer((-1.0, 6.0))}
    series, summary, _ = layer_series(sites, None, periods, cumulative=False, coverage=coverage)
    series = series.set_index(["site_id", "period"])
    np.testing.assert_allclose(series.loc[("A", "2021"), "area_m2"], plain.loc[("A", "2021"), "area_m2"])
    assert series.loc[("A", "2021"), "missing_share"] == pytest.approx(0.0, abs=1e-9)
    assert series.loc[("B", "2021"), "area_m2"] == 0.0  # half of it was looked at: nothing found there
    assert series.loc[("B", "2021"), "missing_share"] == pytest.approx(0.5, abs=1e-3)
    assert np.isnan(series.loc[("C", "2021"), "area_m2"]) and series.loc[("C", "2021"), "missing_share"] == 1.0
    assert (series.xs("2023", level="period")["missing_share"].abs() < 1e-9).all()
    summary = summary.set_index("site_id")
    # C's first period was not seen: its onset in 2023 is censored, mining may be older
    assert summary.loc["C", "onset"] == "2023" and summary.loc["C", "onset_censored"]
    assert summary.loc["B", "onset"] == "2023" and not summary.loc["B", "onset_censored"]
    with pytest.raises(MtgError, match=r"coverage given for period\(s\) \['2022'\] without footprint layers"):
        layer_series(sites, None, periods, cumulative=False, coverage={"2022": _layer((0.0, 1.0))})


def test_coverage_shares_of_footprints_and_point_sites():
    sites = _sites()
    shares = coverage_shares(sites, _layer((0.5, 5.5)).union_all())
    np.testing.assert_allclose(shares[["A", "B", "C"]], [0.5, 1.0, 1.0], atol=1e-3)
    assert shares["D"] == 1.0
    assert coverage_shares(sites, _layer((0.0, 1.0)).union_all())["D"] == 0.0


def test_bad_period_specs_name_their_option():
    with pytest.raises(MtgError, match="--coverage-period '2021': give PERIOD=FILE"):
        parse_periods(["2021"], "--coverage-period")
    assert list(parse_periods(["2023=b.parquet", "2021=a.parquet"])) == ["2021", "2023"]
