"""Exact polygon coverage against shapely's cell-by-cell intersections and exactextract's coverage fractions."""

import numpy as np
import pytest
import shapely
from affine import Affine
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st

from mtg.kernels.coverage import Coverage, polygon_coverage

SWISS_SITES = ("stdl_mineral_extraction_sites", "swisstlm3d", "mes_swisstlm3d_swissimage2020.shp")


def shapely_fractions(geom, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Area of ``geom`` in every cell of the grid, divided by the cell area (the oracle)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x, y = transform * (cols, rows)  # top-left corners
    boxes = shapely.box(x, y + transform.e, x + transform.a, y)
    return shapely.area(shapely.intersection(geom, boxes)) / (transform.a * -transform.e)


def full_grid(coverage: Coverage, k: int) -> np.ndarray:
    """Polygon ``k``'s fractions placed on the whole grid."""
    out = np.zeros((coverage.n_rows, coverage.n_cols))
    rows, cols, cells = coverage.window(k)
    out[rows, cols] = cells
    return out


def _star(rng: np.random.Generator, cx: float, cy: float, radius: float) -> shapely.Polygon:
    n = int(rng.integers(5, 12))  # jittered angles: gaps under pi keep the polygon simple
    angles = (np.arange(n) + rng.uniform(0, 1, n)) * (2 * np.pi / n)
    radii = radius * rng.uniform(0.3, 1.0, n)
    return shapely.Polygon(np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))


@st.composite
def grids(draw):
    """A small north-up grid: (transform, shape), with exactly representable cell corners."""
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    cell = draw(st.sampled_from([1.0, 0.5, 10.0]))
    x0, y0 = draw(st.sampled_from([(0.0, 0.0), (2_600_000.0, 1_200_000.0), (-37.5, 12.25)]))
    return Affine(cell, 0.0, x0, 0.0, -cell, y0), shape


@st.composite
def geometries(draw, shape):
    """A polygon or multipolygon in cell units (column, row up to the grid's size, some beyond its edges)."""
    rows, cols = shape
    kind = draw(st.sampled_from(["star", "hole", "multi", "tiny", "lattice", "same-way hole"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cx, cy = rng.uniform(-1.5, cols + 1.5), rng.uniform(-1.5, rows + 1.5)
    radius = rng.uniform(0.3, 1.0) * max(rows, cols)
    if kind == "star":
        return _star(rng, cx, cy, radius)
    if kind == "hole":
        return shapely.difference(_star(rng, cx, cy, radius), _star(rng, cx, cy, 0.5 * radius))
    if kind == "multi":
        return shapely.union_all([_star(rng, *rng.uniform(-1, [cols + 1, rows + 1]), 0.4 * radius) for _ in range(3)])
    if kind == "tiny":  # often inside a single cell
        return _star(rng, rng.uniform(0, cols), rng.uniform(0, rows), rng.uniform(0.01, 0.4))
    if kind == "lattice":  # every vertex on a cell corner or edge
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            x = np.sort(rng.integers(-2, 2 * cols + 3, 2)) / 2
            y = np.sort(rng.integers(-2, 2 * rows + 3, 2)) / 2
            boxes.append(shapely.box(x[0], y[0], x[1] + 0.5, y[1] + 0.5))
        return shapely.union_all(boxes)
    shell = _star(rng, cx, cy, radius)  # a hole wound the same way as its shell
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    hole = shapely.Polygon(np.column_stack([cx + 0.2 * radius * np.cos(angles), cy + 0.2 * radius * np.sin(angles)]))
    return shapely.Polygon(shell.exterior.coords, [hole.exterior.coords]) if shell.contains(hole) else shell


def to_world(geom, transform: Affine):
    """Map a geometry from cell units (column, row) to the grid's coordinates."""
    return shapely.transform(geom, lambda xy: np.column_stack(transform * (xy[:, 0], xy[:, 1])))


@st.composite
def cases(draw):
    transform, shape = draw(grids())
    n = draw(st.integers(1, 4))
    return transform, shape, [to_world(draw(geometries(shape)), transform) for _ in range(n)]


@settings(max_examples=200, deadline=None)
@given(cases())
def test_coverage_matches_shapely_cell_by_cell(case):
    transform, shape, geoms = case
    coverage = polygon_coverage(geoms, transform, shape)
    cell_area = transform.a * -transform.e
    grid_box = shapely.box(*(transform * (0, shape[0])), *(transform * (shape[1], 0)))
    for k, geom in enumerate(geoms):
        expected = shapely_fractions(geom, transform, shape)
        np.testing.assert_allclose(full_grid(coverage, k), expected, rtol=0, atol=1e-9)
        _, _, cells = coverage.window(k)
        assert cells.min(initial=0) >= 0 and cells.max(initial=0) <= 1
        clipped = shapely.area(shapely.intersection(geom, grid_box))
        assert abs(cells.sum() * cell_area - clipped) <= 1e-9 * max(clipped, cell_area)


def test_known_fractions_and_windows():
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 30.0)  # 3 x 3 grid over (0, 0)-(30, 30)
    geoms = [shapely.box(10, 10, 15, 20),  # the left half of the centre cell
             shapely.box(5, 5, 22.5, 15),
             shapely.box(-100, -100, 100, 100),  # the whole grid
             shapely.box(0, 0, 30, 30).difference(shapely.box(10, 10, 20, 20))]  # a ring of 8 cells
    coverage = polygon_coverage(geoms, transform, (3, 3))
    assert (coverage.row0.tolist(), coverage.col0.tolist()) == ([1, 1, 0, 0], [1, 0, 0, 0])
    assert (coverage.height.tolist(), coverage.width.tolist()) == ([1, 2, 3, 3], [1, 3, 3, 3])
    np.testing.assert_array_equal(coverage.window(0)[2], [[0.5]])
    np.testing.assert_array_equal(coverage.window(1)[2], [[0.25, 0.5, 0.125], [0.25, 0.5, 0.125]])
    np.testing.assert_array_equal(coverage.window(2)[2], np.ones((3, 3)))
    np.testing.assert_array_equal(coverage.window(3)[2], [[1, 1, 1], [1, 0, 1], [1, 1, 1]])
    assert coverage.offsets.tolist() == [0, 1, 7, 16, 25] and coverage.fractions.dtype == np.float64


def test_ring_orientation_does_not_matter():
    shell = [(1, 1), (8, 2), (7, 9), (2, 7)]
    hole = [(3, 3), (5, 3), (5, 5), (3, 5)]
    transform = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 10.0)
    variants = [shapely.Polygon(s, [h]) for s in (shell, shell[::-1]) for h in (hole, hole[::-1])]
    coverage = polygon_coverage(variants, transform, (10, 10))
    for k in range(1, len(variants)):
        np.testing.assert_allclose(full_grid(coverage, k), full_grid(coverage, 0), atol=1e-15)
    np.testing.assert_allclose(full_grid(coverage, 0), shapely_fractions(variants[0], transform, (10, 10)), atol=1e-12)


def test_empty_missing_and_outside_polygons_have_empty_windows():
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 30.0)
    geoms = [shapely.Polygon(), None, shapely.box(100, 100, 200, 200), shapely.box(30, 0, 40, 30),
             shapely.MultiPolygon(), shapely.box(0, 0, 10, 10)]
    coverage = polygon_coverage(geoms, transform, (3, 3))
    assert len(coverage) == 6
    assert coverage.height.tolist() == [0, 0, 0, 0, 0, 1] and coverage.width.tolist() == [0, 0, 0, 0, 0, 1]
    assert coverage.offsets.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert polygon_coverage([], transform, (3, 3)).fractions.size == 0


def test_geoseries_input():
    geopandas = pytest.importorskip("geopandas")
    transform = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 4.0)
    series = geopandas.GeoSeries([shapely.box(0.5, 0.5, 2.5, 3.5), None])
    np.testing.assert_array_equal(polygon_coverage(series, transform, (4, 4)).fractions,
                                  polygon_coverage(list(series), transform, (4, 4)).fractions)


@pytest.mark.parametrize(("transform", "shape", "polygons", "message"), [
    (Affine(10, 1, 0, 0, -10, 0), (3, 3), [shapely.box(0, 0, 1, 1)], "north-up"),
    (Affine(10, 0, 0, 0, 10, 0), (3, 3), [shapely.box(0, 0, 1, 1)], "north-up"),
    (Affine(10, 0, 0, 0, -10, 0), (3, -1), [shapely.box(0, 0, 1, 1)], "shape"),
    (Affine(10, 0, 0, 0, -10, 0), (3, 3), [shapely.Point(0, 0)], r"polygons\[0\] is a Point"),
    (Affine(10, 0, 0, 0, -10, 0), (3, 3), shapely.box(0, 0, 1, 1), "one-dimensional"),
    (Affine(10, 0, 0, 0, -10, 0), (3, 3), [None, shapely.box(0, 0, 1, 1),
                                           shapely.set_coordinates(shapely.box(0, 0, 1, 1), np.full((5, 2), np.inf))],
     r"polygons\[2\] has a coordinate that is not finite"),
])
def test_bad_arguments_are_named(transform, shape, polygons, message):
    with pytest.raises(ValueError, match=message):
        polygon_coverage(polygons, transform, shape)


def swiss_grid():
    """The Swiss mineral extraction sites and a 10 m grid over their bounds."""
    import geopandas

    sites = geopandas.read_file(shared_file(*SWISS_SITES))
    xmin, ymin, xmax, ymax = sites.total_bounds
    x0, y0 = np.floor(xmin / 10) * 10, np.ceil(ymax / 10) * 10
    shape = (int(np.ceil((y0 - ymin) / 10)), int(np.ceil((xmax - x0) / 10)))
    return sites, Affine(10.0, 0.0, x0, 0.0, -10.0, y0), shape


def test_coverage_equals_exactextract_on_swiss_sites():
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    sites, transform, shape = swiss_grid()
    coverage = polygon_coverage(sites.geometry.to_numpy(), transform, shape)
    # exactextract only needs the grid here: a zero-stride array stands for its 527 million cells.
    grid = np.broadcast_to(np.float64(0.0), shape)
    source = NumPyRasterSource(grid, transform.c, transform.f + shape[0] * transform.e,
                               transform.c + shape[1] * transform.a, transform.f, srs_wkt=sites.crs.to_wkt())
    theirs = exact_extract(source, sites, ["cell_id", "coverage"], output="pandas")
    for k in range(len(sites)):
        rows, cols = np.divmod(theirs["cell_id"][k], shape[1])
        window_rows, window_cols, cells = coverage.window(k)
        inside = ((rows >= window_rows.start) & (rows < window_rows.stop)
                  & (cols >= window_cols.start) & (cols < window_cols.stop))
        assert inside.all(), f"site {k}: exactextract covers cells outside mtg's window"
        local = (rows - window_rows.start, cols - window_cols.start)
        # exactextract keeps fractions in float32: 1e-7 absolute is its rounding, 1e-6 relative the criterion.
        np.testing.assert_allclose(cells[local], theirs["coverage"][k], rtol=1e-6, atol=1e-7)
        rest = np.ones(cells.shape, dtype=bool)
        rest[local] = False
        assert cells[rest].max(initial=0.0) < 1e-12
        area = sites.geometry.iloc[k].area
        assert abs(cells.sum() * 100.0 - area) <= 1e-9 * area
