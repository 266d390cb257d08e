"""Procedural terrain: fractal hills and ridges, a sinuous drainage valley with pools, and the natural vegetation cover."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.features import rasterize
from scipy import ndimage
from shapely.affinity import rotate, scale
from shapely.geometry import LineString, Point, Polygon

from mtg.pipeline.sample.noise import correlated_noise, fractal_noise
from mtg.pipeline.sample.region import RegionGrid

#: Pixel sizes (m) of the DEM grid and of the fine (10 m) land-cover grid.
DEM_RES = 30.0
FINE_RES = 10.0


@dataclass(frozen=True)
class Terrain:
    """The land before mining.

    Attributes
    ----------
    elevation30 : numpy.ndarray
        Bare terrain elevation (m) on the 30 m grid, float64.
    slope10 : numpy.ndarray
        Terrain slope (degrees) on the 10 m grid (from the 30 m elevation, bilinearly refined).
    aspect10 : numpy.ndarray
        Downslope direction (radians clockwise from north) on the 10 m grid.
    drainage : shapely.LineString
        Axis of the main drainage line (UTM metres).
    water10 : numpy.ndarray
        Boolean mask of standing water (a waterhole and creek pools) on the 10 m grid.
    lake : shapely.Polygon
        Outline of the waterhole.
    rock10 : numpy.ndarray
        Boolean mask of exposed rock (ridge crests and steep slopes) on the 10 m grid.
    veg10 : numpy.ndarray
        Fractional vegetation cover in [0, 1] on the 10 m grid: sparse spinifex savanna, denser along the drainage.
    """

    elevation30: np.ndarray
    slope10: np.ndarray
    aspect10: np.ndarray
    drainage: LineString
    water10: np.ndarray
    lake: Polygon
    rock10: np.ndarray
    veg10: np.ndarray


def drainage_axis(rng: np.random.Generator, grid: RegionGrid) -> LineString:
    """A meandering line crossing the region near its centre, in UTM metres."""
    left, bottom, right, top = grid.bounds
    size = grid.size_m
    cx = left + size * rng.uniform(0.4, 0.6)
    cy = bottom + size * rng.uniform(0.4, 0.6)
    angle = rng.uniform(0, np.pi)
    u = np.linspace(-0.8 * size, 0.8 * size, 801)
    lateral = (0.07 * size * np.sin(2 * np.pi * u / (0.6 * size) + rng.uniform(0, 2 * np.pi))
               + 0.02 * size * np.sin(2 * np.pi * u / (0.13 * size) + rng.uniform(0, 2 * np.pi)))
    x = cx + u * np.cos(angle) - lateral * np.sin(angle)
    y = cy + u * np.sin(angle) + lateral * np.cos(angle)
    return LineString(np.column_stack([x, y]))


def distance_to(geom: LineString | Polygon, grid: RegionGrid, res: float) -> np.ndarray:
    """Distance (m) from each pixel centre of the grid at ``res`` to a line or polygon, via a distance transform."""
    shape = grid.shape(res)
    burnt = rasterize([(geom, 1)], out_shape=shape, transform=grid.transform(res), all_touched=True, dtype="uint8")
    if not burnt.any():
        return np.full(shape, np.inf, dtype=np.float32)
    return (ndimage.distance_transform_edt(burnt == 0) * res).astype(np.float32)


def make_terrain(rng: np.random.Generator, grid: RegionGrid) -> Terrain:
    """Draw the bare terrain, drainage, water and natural cover of the region.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    grid : RegionGrid
        The region.

    Returns
    -------
    Terrain
    """
    size_km = grid.size_m / 1000
    shape30 = grid.shape(DEM_RES)
    shape10 = grid.shape(FINE_RES)

    # Hills (smooth fractal) plus sharp ridges (folded fractal), like the Hamersley ranges, on a gentle regional tilt.
    relief = 12.0 + 48.0 * min(1.0, size_km / 20.0)
    hills = fractal_noise(rng, shape30, beta=3.6, min_wavelength_px=4)
    folded = 1.0 - np.abs(fractal_noise(rng, shape30, beta=3.0, min_wavelength_px=4))
    ridges = (folded - folded.mean()) / folded.std()
    rows, cols = np.indices(shape30)
    tilt = 0.004 * DEM_RES * (rows * rng.uniform(-1, 1) + cols * rng.uniform(-1, 1))
    elevation30 = 540.0 + relief * (0.7 * hills + 0.5 * ridges) + tilt

    # The drainage valley: carved with a Gaussian cross-section, floored where it is widest.
    drainage = drainage_axis(rng, grid)
    dist10 = distance_to(drainage, grid, FINE_RES)
    dist30 = dist10[1::3, 1::3]
    width = 120.0 + 180.0 * min(1.0, size_km / 20.0)
    elevation30 = elevation30 - (15.0 + 0.5 * relief) * np.exp(-((dist30 / width) ** 2))
    elevation30 = elevation30.astype(np.float64)

    elevation10 = ndimage.zoom(elevation30, 3, order=1, mode="nearest", grid_mode=True).astype(np.float32)
    dzdy, dzdx = np.gradient(elevation10, FINE_RES)
    slope10 = np.degrees(np.arctan(np.hypot(dzdx, dzdy))).astype(np.float32)
    # rows run south, so the northward gradient is -dzdy; downslope points against the gradient.
    aspect10 = np.arctan2(-dzdx, dzdy).astype(np.float32)

    # A waterhole on the drainage plus creek pools where a noise along the channel is high.
    at = drainage.interpolate(rng.uniform(0.35, 0.65), normalized=True)
    ahead = drainage.interpolate(drainage.project(at) + 10.0)
    heading = np.degrees(np.arctan2(ahead.y - at.y, ahead.x - at.x))
    semi = 40.0 + 0.012 * grid.size_m
    lake = rotate(scale(Point(at.x, at.y).buffer(1.0, 32), semi, semi * 0.45), heading, origin=(at.x, at.y))
    lake_mask = rasterize([(lake, 1)], out_shape=shape10, transform=grid.transform(FINE_RES), dtype="uint8") > 0
    pools = (dist10 < 12.0) & (correlated_noise(rng, shape10, range_px=30) > 0.6)
    water10 = lake_mask | pools

    ridge10 = ndimage.zoom(ridges, 3, order=1, mode="nearest", grid_mode=True)
    rock10 = ((ridge10 > 1.2) | (slope10 > 14.0)) & ~water10

    texture = fractal_noise(rng, shape10, beta=2.2)
    riparian = np.exp(-dist10 / (60.0 + 0.004 * grid.size_m))
    veg10 = 0.14 + 0.05 * texture + 0.55 * riparian - 0.08 * rock10
    veg10 = np.clip(veg10, 0.02, 0.85).astype(np.float32)
    veg10[water10] = 0.0
    return Terrain(
        elevation30=elevation30,
        slope10=slope10,
        aspect10=aspect10,
        drainage=drainage,
        water10=water10,
        lake=lake,
        rock10=rock10,
        veg10=veg10,
    )
