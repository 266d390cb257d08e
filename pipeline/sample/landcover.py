"""Land cover: the class codes, the town and roads, and the cover on each date as the mines grow."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from rasterio.features import rasterize
from shapely.affinity import rotate
from shapely.geometry import LineString, MultiLineString, Point, Polygon, box
from shapely.ops import nearest_points, unary_union

from mtg.pipeline.sample.region import RegionGrid
from mtg.pipeline.sample.sites import DISTURBED_SCALE, Feature, Site
from mtg.pipeline.sample.terrain import FINE_RES, Terrain


class Cover(IntEnum):
    """Land-cover class codes of ``truth/landcover.tif`` (0 is nodata)."""

    BARE_SOIL = 1
    ROCK = 2
    SPARSE_VEGETATION = 3
    DENSE_VEGETATION = 4
    WATER = 5
    BUILT_UP = 6
    ROAD = 7
    PIT = 10
    DUMP = 11
    TAILINGS = 12
    TAILINGS_POND = 13
    MINE_OTHER = 14


#: Fractional vegetation cover above which a natural pixel counts as sparse / dense vegetation.
SPARSE_VEG_MIN = 0.2
DENSE_VEG_MIN = 0.45
_MATERIAL_OF_FEATURE = {"pit": Cover.PIT, "dump": Cover.DUMP, "tailings": Cover.TAILINGS, "other": Cover.MINE_OTHER}


@dataclass(frozen=True)
class Town:
    """A small mining town: a block of streets on a sealed highway that crosses the region."""

    outline: Polygon
    streets: MultiLineString
    highway: LineString


@dataclass(frozen=True)
class FeatureRaster:
    """A feature's normalised-radius field on the 10 m grid, within a window around it."""

    feature: Feature
    rows: slice
    cols: slice
    r: np.ndarray


@dataclass(frozen=True)
class DateCover:
    """What covers the ground on one date, on the 10 m grid.

    Attributes
    ----------
    classes : numpy.ndarray
        uint8 :class:`Cover` codes.
    veg : numpy.ndarray
        Fractional vegetation cover (0 on mine, water and roads).
    background : numpy.ndarray
        uint8 :class:`Cover` code of the non-vegetated surface that shows between plants (bare soil or rock for
        natural pixels; the class itself otherwise).
    benches : numpy.ndarray
        Brightness modulation of pit benches (1 off pits).
    """

    classes: np.ndarray
    veg: np.ndarray
    background: np.ndarray
    benches: np.ndarray


def place_town(rng: np.random.Generator, grid: RegionGrid, terrain: Terrain) -> Town:
    """Place a town away from the drainage, with a street grid, on a highway crossing the region."""
    left, bottom, right, top = grid.bounds
    side = float(np.clip(0.07 * grid.size_m, 300.0, 1400.0))
    for _ in range(500):
        cx = rng.uniform(left + 0.2 * grid.size_m, right - 0.2 * grid.size_m)
        cy = rng.uniform(bottom + 0.2 * grid.size_m, top - 0.2 * grid.size_m)
        square = box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        if square.distance(terrain.drainage) > 0.5 * side and square.distance(terrain.lake) > 0.5 * side:
            break
    angle = float(rng.uniform(-20, 20))
    outline = rotate(square, angle, origin=(cx, cy))
    spacing = 100.0
    ticks = np.arange(-side / 2 + spacing / 2, side / 2, spacing)
    lines = [LineString([(cx + t, cy - side / 2), (cx + t, cy + side / 2)]) for t in ticks]
    lines += [LineString([(cx - side / 2, cy + t), (cx + side / 2, cy + t)]) for t in ticks]
    streets = rotate(MultiLineString(lines), angle, origin=(cx, cy))
    heading = rng.uniform(0, np.pi)
    reach = 2 * grid.size_m
    highway = LineString([(cx - reach * np.cos(heading), cy - reach * np.sin(heading)),
                          (cx + reach * np.cos(heading), cy + reach * np.sin(heading))])
    return Town(outline=outline, streets=streets, highway=highway)


def keep_out_zone(terrain: Terrain, town: Town) -> Polygon:
    """Where mine sites must not be: around the town, the waterhole and the creek."""
    return unary_union([town.outline.buffer(150.0), terrain.lake.buffer(150.0), terrain.drainage.buffer(120.0)])


def static_cover(grid: RegionGrid, terrain: Terrain, town: Town, sites: tuple[Site, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The cover that does not change: natural surfaces, water, town, highway and site access roads.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        uint8 background :class:`Cover` codes (soil, rock, water, built-up, road) and fractional vegetation.
    """
    shape = grid.shape(FINE_RES)
    transform = grid.transform(FINE_RES)
    background = np.where(terrain.rock10, Cover.ROCK, Cover.BARE_SOIL).astype(np.uint8)
    veg = terrain.veg10.copy()
    town_mask = rasterize([(town.outline, 1)], out_shape=shape, transform=transform, dtype="uint8") > 0
    background[town_mask] = Cover.BUILT_UP
    veg[town_mask] = np.minimum(veg[town_mask], 0.25)
    access = [LineString(nearest_points(town.highway, Point(s.cx, s.cy))) for s in sites]
    roads = [town.highway, town.streets.intersection(town.outline)] + access
    road_mask = rasterize([(g, 1) for g in roads if not g.is_empty], out_shape=shape, transform=transform,
                          all_touched=True, dtype="uint8") > 0
    background[road_mask] = Cover.ROAD
    background[terrain.water10] = Cover.WATER
    veg[road_mask | terrain.water10] = 0.0
    return background, veg


def feature_rasters(grid: RegionGrid, sites: tuple[Site, ...]) -> tuple[FeatureRaster, ...]:
    """Normalised-radius fields of all star-shaped features on the 10 m grid, each within its window (wide enough
    for the disturbed area of an abandoned site)."""
    x, y = grid.coords(FINE_RES)
    rasters = []
    for site in sites:
        for feat in site.features:
            spread = (DISTURBED_SCALE - 1.0) * feat.max_radius if site.abandoned is not None else 0.0
            window = feat.window(x, y, 2 * FINE_RES + spread)
            if window is not None:
                rasters.append(FeatureRaster(feat, *window))
    return tuple(rasters)


def date_cover(
    grid: RegionGrid,
    background: np.ndarray,
    veg: np.ndarray,
    sites: tuple[Site, ...],
    rasters: tuple[FeatureRaster, ...],
    scales: dict[str, float],
    pond_fraction: float,
) -> DateCover:
    """The cover on one date: the static cover overlaid by mine features at their growth scale.

    Parameters
    ----------
    grid : RegionGrid
        The region.
    background, veg : numpy.ndarray
        From :func:`static_cover`.
    sites : tuple of Site
        The mine sites.
    rasters : tuple of FeatureRaster
        From :func:`feature_rasters`.
    scales : dict
        Scale of the ground each site's pits and dumps cover on the date, by ``site_id``; a site at 0 is not open
        yet and has no features on the ground.
    pond_fraction : float
        Normalised radius within which tailings are ponded (wet) on the date.

    Returns
    -------
    DateCover
    """
    shape = grid.shape(FINE_RES)
    bg = background.copy()
    fv = veg.copy()
    bench = np.ones(shape, dtype=np.float32)
    road_polys = [road.polygon for site in sites if scales[site.site_id] > 0 for road in site.roads]
    if road_polys:
        on_road = rasterize([(p, 1) for p in road_polys], out_shape=shape, transform=grid.transform(FINE_RES), dtype="uint8") > 0
        bg[on_road] = Cover.MINE_OTHER
        fv[on_road] = 0.0
    site_of = {f.feature_id: s.site_id for s in sites for f in s.features}
    for fr in rasters:
        feat = fr.feature
        site_scale = scales[site_of[feat.feature_id]]
        if site_scale <= 0:
            continue
        scale = site_scale if feat.grows() else 1.0
        inside = fr.r <= scale
        win_bg = bg[fr.rows, fr.cols]
        win_bg[inside] = _MATERIAL_OF_FEATURE[feat.feature_type]
        fv[fr.rows, fr.cols][inside] = 0.0
        if feat.feature_type == "tailings":
            win_bg[fr.r <= pond_fraction] = Cover.TAILINGS_POND
        elif feat.feature_type == "pit":
            rings = max(2, round(feat.relief_m * scale / 12.0))  # benches of a fixed height: fewer in a young pit
            pattern = 1.0 + 0.22 * np.cos(2 * np.pi * rings * fr.r / scale)
            bench[fr.rows, fr.cols][inside] = pattern[inside]
    natural = (bg == Cover.BARE_SOIL) | (bg == Cover.ROCK)
    classes = bg.copy()
    classes[natural & (fv >= SPARSE_VEG_MIN)] = Cover.SPARSE_VEGETATION
    classes[natural & (fv >= DENSE_VEG_MIN)] = Cover.DENSE_VEGETATION
    return DateCover(classes=classes, veg=fv, background=bg, benches=bench)


def cover_code_table() -> dict[str, str]:
    """The class-code table as GeoTIFF tags: ``{"CLASS_1": "bare_soil", ...}``."""
    return {f"CLASS_{c.value}": c.name.lower() for c in Cover}
