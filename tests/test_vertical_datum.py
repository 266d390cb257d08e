"""Vertical datums through the real PROJ path, on made-up geoid grids of known undulation.

The grids are tiny GeoTIFFs named like PROJ's EGM96 and EGM2008 grids (``us_nga_egm96_15.tif``,
``us_nga_egm08_25.tif``), written in PROJ's "Geodetic TIFF grids" form for geoid models: EPSG:4326, one float32
band described as ``geoid_undulation`` in metres, ``TYPE=VERTICAL_OFFSET_GEOGRAPHIC_TO_VERTICAL``. Their folder is
put on PROJ's search path for the test only. The undulations are linear in lon/lat, which PROJ's bilinear grid
interpolation reproduces exactly, so every offset has an analytic answer.
"""

from __future__ import annotations

import logging

import dask
import dask.array as da
import numpy as np
import pyproj
import pytest
import rasterio
from pyproj.transformer import TransformerGroup
from rasterio.crs import CRS
from rasterio.transform import from_origin

from mtg.pipeline.catalogs import load_collection, parse_time_range
from mtg.pipeline.dem_inputs import Dem, align
from mtg.pipeline.errors import MtgError
from mtg.pipeline.vertical_datum import (
    canonical_datum,
    harmonise_vertical_datums,
    to_vertical_datum,
    vertical_offset,
)

EGM96, EGM08 = "EPSG:5773", "EPSG:3855"
UTM32 = CRS.from_epsg(32632)
# grid nodes: lon 0..20, lat 40..50 every 0.25 degree
GRID_LON0, GRID_LAT1, GRID_RES, GRID_NX, GRID_NY = 0.0, 50.0, 0.25, 81, 41


def n96(lon, lat):
    """Made-up EGM96 undulation (m): steep (20 m per degree) so that offsets vary from cell to cell."""
    return 30.0 + 20.0 * (np.asarray(lon) - 10.0) + 0.0 * np.asarray(lat)


def n08(lon, lat):
    """Made-up EGM2008 undulation (m)."""
    return 25.0 - 30.0 * (np.asarray(lat) - 45.0) + 0.0 * np.asarray(lon)


def _write_grid(path, undulation) -> None:
    lons = GRID_LON0 + GRID_RES * np.arange(GRID_NX)
    lats = GRID_LAT1 - GRID_RES * np.arange(GRID_NY)
    lon, lat = np.meshgrid(lons, lats)
    # values at the nodes; GDAL's default PixelIsArea puts each node at a cell centre, so the corner is half a
    # cell out
    transform = from_origin(GRID_LON0 - GRID_RES / 2, GRID_LAT1 + GRID_RES / 2, GRID_RES, GRID_RES)
    with rasterio.open(path, "w", driver="GTiff", width=GRID_NX, height=GRID_NY, count=1, dtype="float32",
                       crs="EPSG:4326", transform=transform) as dst:
        dst.write(undulation(lon, lat).astype(np.float32), 1)
        dst.update_tags(TYPE="VERTICAL_OFFSET_GEOGRAPHIC_TO_VERTICAL")
        dst.set_band_description(1, "geoid_undulation")
        dst.set_band_unit(1, "metre")


def _grids_installed() -> bool:
    """Whether this machine has real EGM96 and EGM2008 grids (or PROJ's network) for the conversion."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerGroup("EPSG:4326+5773", "EPSG:4326+3855", always_xy=True).best_available


@pytest.fixture
def geoid_grids(tmp_path):
    """Made-up geoid grids on PROJ's search path (this thread's context and contexts made later)."""
    if _grids_installed():
        pytest.skip("real EGM96/EGM2008 grids are installed here; the made-up ones would not be used")
    folder = tmp_path / "proj"
    folder.mkdir()
    _write_grid(folder / "us_nga_egm96_15.tif", n96)
    _write_grid(folder / "us_nga_egm08_25.tif", n08)
    before = pyproj.datadir.get_data_dir()
    pyproj.datadir.append_data_dir(folder)
    try:
        # PROJ looks the grids up afresh for a new transformation on the same context
        assert _grids_installed()
        # dask computes in this thread, whose PROJ context has the new search path
        with dask.config.set(scheduler="synchronous"):
            yield folder
    finally:
        pyproj.datadir.set_data_dir(before)
    assert not _grids_installed()


def _dem(values, transform, crs=UTM32, datum=None, source="dem") -> Dem:
    return Dem(values=da.from_array(np.asarray(values, dtype=np.float32), chunks=37), transform=transform, crs=crs,
               source=source, vertical_datum=datum)


def _centres_lonlat(dem: Dem) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = dem.shape
    c, r = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    x, y = dem.transform * (c, r)
    to_ll = pyproj.Transformer.from_crs(dem.crs.to_wkt(), "EPSG:4326", always_xy=True)
    return to_ll.transform(x, y)


# ---------------------------------------------------------------------------------------------- offsets
def test_vertical_offset_equals_the_analytic_undulation_difference(geoid_grids):
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(1, 19, 200), rng.uniform(41, 49, 200)
    np.testing.assert_allclose(vertical_offset(lon, lat, EGM96, EGM08), n96(lon, lat) - n08(lon, lat), atol=1e-3)
    np.testing.assert_allclose(vertical_offset(lon, lat, EGM08, EGM96), n08(lon, lat) - n96(lon, lat), atol=1e-3)
    # to the ellipsoid: h = H + N
    np.testing.assert_allclose(vertical_offset(lon, lat, EGM96, "ellipsoid"), n96(lon, lat), atol=1e-3)
    np.testing.assert_allclose(vertical_offset(lon, lat, "EPSG:4979", EGM08), -n08(lon, lat), atol=1e-3)
    assert vertical_offset(10.0, 45.0, "EPSG:4326+5773", EGM08).shape == ()
    np.testing.assert_array_equal(vertical_offset(lon, lat, EGM96, "epsg:5773"), 0.0)
    with pytest.raises(MtgError, match="outside the geoid grids"):
        vertical_offset([10.0, 25.0], [45.0, 45.0], EGM96, EGM08)


def test_missing_grids_are_named_never_a_silent_no_op():
    if _grids_installed():
        pytest.skip("real EGM96/EGM2008 grids are installed here")
    with pytest.raises(MtgError) as err:
        vertical_offset(10.0, 45.0, EGM96, EGM08)
    text = str(err.value)
    assert "us_nga_egm96_15.tif" in text and "us_nga_egm08_25.tif" in text
    assert "projsync --file" in text and "PROJ_NETWORK=ON" in text
    assert pyproj.datadir.get_user_data_dir() in text
    with pytest.raises(MtgError, match="us_nga_egm96_15.tif"):
        vertical_offset(10.0, 45.0, EGM96, "ellipsoid")
    # the check is eager: to_vertical_datum fails at call time, before any graph is computed
    dem = _dem(np.zeros((4, 4)), from_origin(500_000, 5_000_000, 30, 30), datum=EGM08)
    with pytest.raises(MtgError, match="us_nga_egm08_25.tif"):
        to_vertical_datum(dem, EGM96)


def test_bad_datums_and_policies_are_refused():
    assert canonical_datum("epsg:5773") == "EPSG:5773" and canonical_datum("ellipsoid") == "EPSG:4979"
    assert canonical_datum("EPSG:4326+3855") == "EPSG:3855"
    with pytest.raises(MtgError, match="not a vertical CRS"):
        canonical_datum("EPSG:32632")
    with pytest.raises(MtgError, match="foot"):
        canonical_datum("EPSG:8228")  # NAVD88 height (ft)
    with pytest.raises(MtgError, match="not a CRS PROJ knows"):
        canonical_datum("EGM-42")
    a = _dem(np.zeros((2, 2)), from_origin(500_000, 5_000_000, 30, 30), datum=EGM96)
    with pytest.raises(MtgError, match="policy 'guess' is unknown"):
        harmonise_vertical_datums(a, a, policy="guess")
    with pytest.raises(MtgError, match="vertical datum is unknown"):
        to_vertical_datum(_dem(np.zeros((2, 2)), a.transform), EGM08)


def test_dem_collections_name_their_vertical_datum_and_epoch():
    expected = {"nasadem": ("EPSG:5773", "elevation", 2000), "cop-dem-glo-30": ("EPSG:3855", "data", 2010),
                "alos-dem": ("EPSG:5773", "data", 2006)}
    for cid, (datum, asset, year) in expected.items():
        coll = load_collection(cid)
        assert coll.kind == "dem" and coll.asset == asset and coll.resolution == 30
        assert canonical_datum(coll.vertical_datum) == datum
        start, stop = parse_time_range(coll.epoch)
        assert start.year == year and stop > start


# ---------------------------------------------------------------------------------------------- DEM epochs
def test_to_vertical_datum_adds_the_offset_per_cell_lazily(geoid_grids):
    # a 30 m UTM 32N grid near lon 9.5, lat 45: about 3 km x 2 km
    transform = from_origin(460_000.0, 4_985_000.0, 30.0, 30.0)
    heights = 200.0 + np.arange(70 * 100, dtype=np.float64).reshape(70, 100) % 17
    heights[3, 5] = np.nan
    dem = _dem(heights, transform, datum=EGM96, source="before.tif")
    out = to_vertical_datum(dem, EGM08)
    assert isinstance(out.values, da.Array) and out.values.dtype == np.float32
    assert out.vertical_datum == "EPSG:3855" and out.transform == dem.transform and out.source == dem.source
    lon, lat = _centres_lonlat(dem)
    expected = heights + (n96(lon, lat) - n08(lon, lat))
    assert np.ptp(expected[np.isfinite(expected)] - heights[np.isfinite(heights)]) > 0.5  # offsets vary
    got = out.values.compute()
    assert np.isnan(got[3, 5])
    # float32 heights of ~200 m: resolution 3e-5 m
    np.testing.assert_allclose(got, expected, atol=1e-3)
    np.testing.assert_allclose(to_vertical_datum(dem, EGM08, step=1).values.compute(), expected, atol=1e-3)
    # back again, and a no-op to its own datum
    np.testing.assert_allclose(to_vertical_datum(out, EGM96).values.compute(), heights, atol=1e-3)
    assert to_vertical_datum(dem, "epsg:5773") is dem
    # a geographic epoch (1 arcsecond, like the Copernicus DEM tiles)
    geo = _dem(np.zeros((40, 50)), from_origin(9.5, 45.2, 1 / 3600, 1 / 3600), crs=CRS.from_epsg(4326),
               datum=EGM08)
    lon, lat = _centres_lonlat(geo)
    np.testing.assert_allclose(to_vertical_datum(geo, "ellipsoid").values.compute(), n08(lon, lat), atol=1e-3)


def test_an_epoch_outside_the_grids_fails_at_call_time(geoid_grids):
    far = _dem(np.zeros((4, 4)), from_origin(500_000, 1_000_000, 30, 30), datum=EGM96, source="far.tif")
    with pytest.raises(MtgError, match="far.tif.*outside the geoid grids"):
        to_vertical_datum(far, EGM08)


def test_harmonise_policies_and_records(geoid_grids, caplog):
    transform = from_origin(460_000.0, 4_985_000.0, 30.0, 30.0)
    a = _dem(np.full((10, 10), 100.0), transform, datum=EGM96, source="a")
    b = _dem(np.full((10, 10), 100.0), transform, datum=EGM08, source="b")
    unknown = _dem(np.full((10, 10), 100.0), transform, source="u")

    ref, other, record = harmonise_vertical_datums(a, b)
    assert record == {"before": {"reference": EGM96, "other": EGM08}, "after": {"reference": EGM96, "other": EGM96},
                      "converted": True, "policy": "convert"}
    assert ref is a and other.vertical_datum == EGM96
    lon, lat = _centres_lonlat(b)
    np.testing.assert_allclose(other.values.compute(), 100.0 + n08(lon, lat) - n96(lon, lat), atol=1e-3)

    with caplog.at_level(logging.WARNING, logger="mtg.pipeline.vertical_datum"):
        _, other, record = harmonise_vertical_datums(a, b, policy="assume-same")
    assert other is b and record["converted"] is False and record["after"] == record["before"]
    assert "assume-same" in caplog.text and "EPSG:3855" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtg.pipeline.vertical_datum"):
        _, other, record = harmonise_vertical_datums(a, unknown)
    assert other is unknown and record["converted"] is False
    assert record["before"] == {"reference": EGM96, "other": None} and "assumed equal" in caplog.text
    _, _, record = harmonise_vertical_datums(a, a)
    assert record["converted"] is False


# ---------------------------------------------------------------------------------------------- a volume
def test_volume_of_a_known_pit_between_an_egm96_and_an_egm2008_epoch(geoid_grids):
    """30 m "before" in EGM96, 90 m "after" in EGM2008 with a paraboloid pit; aligned, harmonised, differenced.

    True surface (ellipsoidal heights): a plane, ``S = 400 + 0.02 x' - 0.01 y'``; the after epoch has a paraboloid
    pit of depth D = 30 m and radius R = 600 m cut into it. Each epoch stores ``S - N`` of its own geoid, so
    without harmonisation dh carries the N96 - N08 difference (about 5 m and varying here). Bilinear resampling
    of the 90 m epoch reproduces the plane and the linear undulations exactly; on the pit's curvature
    ``f'' = 2 D / R**2`` it errs by at most ``h**2 / 8 * f''`` per axis (0.17 m each, h = 90 m: 0.34 m at the
    centre), on average by ``h**2 / 12 * f''`` per axis, which makes the bowl shallower by about 2 * 0.11 m over
    its area (1.5 % of the volume); the rim kink (slope jump 2 D / R = 0.1, up to h / 4 * 0.1 = 2.3 m within 90 m
    of the rim) errs the other way and about cancels it (-0.15 % measured). Hence: 0.5 m at the pit centre,
    1e-2 m on stable ground 200 m outside the rim (float32 rounding only, 3e-5 m measured), 3 % on the volume.
    """
    x0, y1, size = 460_000.0, 4_985_000.0, 3000.0
    cx, cy, depth, radius = x0 + 1500.0, y1 - 1500.0, 30.0, 600.0

    def surface(x, y):
        return 400.0 + 0.02 * (x - x0) - 0.01 * (y1 - y)

    def pit(x, y):
        r2 = ((x - cx) ** 2 + (y - cy) ** 2) / radius**2
        return np.where(r2 < 1, depth * (1 - r2), 0.0)

    def epoch(res, origin_x, origin_y, n, with_pit, datum, source):
        cells = int(round((size + 2 * 150) / res)) if res > 30 else int(size / res)
        transform = from_origin(origin_x, origin_y, res, res)
        probe = _dem(np.zeros((cells, cells)), transform)
        lon, lat = _centres_lonlat(probe)
        c, r = np.meshgrid(np.arange(cells) + 0.5, np.arange(cells) + 0.5)
        x, y = transform * (c, r)
        h = surface(x, y) - (pit(x, y) if with_pit else 0.0)
        return _dem(h - n(lon, lat), transform, datum=datum, source=source)

    before = epoch(30.0, x0, y1, n96, False, EGM96, "nasadem")
    # the 90 m epoch is larger (150 m margin) and its cells are not aligned with the 30 m ones
    after = epoch(90.0, x0 - 150.0 + 20.0, y1 + 150.0 - 35.0, n08, True, EGM08, "copdem")

    reference, resampled = align(before, after)
    assert resampled.vertical_datum == EGM08 and resampled.shape == before.shape
    _, harmonised, record = harmonise_vertical_datums(reference, resampled)
    assert record["converted"] and record["after"]["other"] == EGM96

    c, r = np.meshgrid(np.arange(100) + 0.5, np.arange(100) + 0.5)
    x, y = before.transform * (c, r)
    truth = -pit(x, y)
    dh = (harmonised.values - reference.values).compute()
    assert np.isfinite(dh).all()
    dist = np.hypot(x - cx, y - cy)
    stable, centre = dist > radius + 200.0, dist < 100.0
    assert np.abs(dh[stable]).max() < 1e-2
    assert np.abs(dh[centre] - truth[centre]).max() < 0.5
    volume, true_volume = -dh.sum() * 30.0 * 30.0, np.pi * radius**2 * depth / 2
    assert volume == pytest.approx(true_volume, rel=0.03)

    # the same pair without harmonisation: stable ground shows the geoid difference, metres of false change
    _, kept, record = harmonise_vertical_datums(reference, resampled, policy="assume-same")
    lon, lat = _centres_lonlat(before)
    bias = (kept.values - reference.values).compute() - dh
    np.testing.assert_allclose(bias, n96(lon, lat) - n08(lon, lat), atol=1e-2)
    assert np.abs(bias).min() > 1.0
