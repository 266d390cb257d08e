"""The whole synthetic world behind the sample: terrain, town, mines, points, acquisitions and DEM misregistration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from mtg.pipeline.sample.acquisitions import Acquisition, acquisition_series
from mtg.pipeline.sample.districts import PILBARA, District
from mtg.pipeline.sample.landcover import (
    DateCover,
    FeatureRaster,
    Town,
    date_cover,
    feature_rasters,
    keep_out_zone,
    place_town,
    static_cover,
)
from mtg.pipeline.sample.noise import fractal_noise, stream
from mtg.pipeline.sample.points import MinePoint, mine_points
from mtg.pipeline.sample.region import RegionGrid, region_grid
from mtg.pipeline.sample.sites import Site, layout_sites
from mtg.pipeline.sample.spectra import greenness
from mtg.pipeline.sample.terrain import FINE_RES, Terrain, make_terrain

#: Dates of the two DEM epochs (as Copernicus DEM item datetimes); mining grows between the first and the last S2 date.
EARLY_DEM_DATE = date(2021, 4, 22)
LATE_DEM_DATE = date(2023, 7, 14)
#: Ponded share of a tailings storage on the first date, relative to the last date's (the ponds fill).
POND_START = 0.5


@dataclass(frozen=True)
class Registration:
    """The misregistration applied to the late DEM epoch.

    ``late_observed(x, y) = late_true(x - shift_x_m, y - shift_y_m) + bias_m`` (+ noise): the late DEM's content
    is displaced by ``(shift_x_m, shift_y_m)`` metres (x east, y north) and raised by ``bias_m``.
    """

    shift_x_m: float
    shift_y_m: float
    bias_m: float


@dataclass(frozen=True)
class Scene:
    """Everything the sample's files are rendered from; rebuilt identically by :func:`build_scene`.

    Attributes
    ----------
    seed : int
    district : District
        Where the scene lies and how its mines look (:data:`~mtg.pipeline.sample.districts.PILBARA` for the
        single region).
    grid : RegionGrid
    terrain : Terrain
    town : Town
    sites : tuple of Site
    points : tuple of MinePoint
    acquisitions : tuple of Acquisition
    background, veg : numpy.ndarray
        Static cover on the 10 m grid (see :func:`~mtg.pipeline.sample.landcover.static_cover`).
    texture : numpy.ndarray
        Unit-variance surface texture on the 10 m grid.
    rasters : tuple of FeatureRaster
        Normalised-radius fields of the mine features on the 10 m grid.
    registration : Registration
    """

    seed: int
    district: District
    grid: RegionGrid
    terrain: Terrain
    town: Town
    sites: tuple[Site, ...]
    points: tuple[MinePoint, ...]
    acquisitions: tuple[Acquisition, ...]
    background: np.ndarray
    veg: np.ndarray
    texture: np.ndarray
    rasters: tuple[FeatureRaster, ...]
    registration: Registration

    def stream(self, *keys: str | int) -> np.random.Generator:
        """The scene's random stream for a component (:func:`~mtg.pipeline.sample.noise.stream`), distinct per
        district."""
        return district_stream(self.seed, self.district, *keys)

    @property
    def growth_period(self) -> tuple[date, date]:
        """Mining grows linearly from the early DEM date to the last S2 date (final footprints)."""
        return EARLY_DEM_DATE, self.acquisitions[-1].date

    def scales(self, day: date) -> dict[str, float]:
        """Growth scale of each site's pits and dumps (their relief) on ``day``, by ``site_id``."""
        start, end = self.growth_period
        return {s.site_id: s.scale_at(day, start, end) for s in self.sites}

    def cover_scales(self, day: date) -> dict[str, float]:
        """Scale of the ground each site's pits and dumps cover on ``day``, by ``site_id`` (0: not yet open)."""
        start, end = self.growth_period
        return {s.site_id: s.cover_scale_at(day, start, end) for s in self.sites}

    def cover(self, day: date) -> DateCover:
        """Land cover on ``day`` (10 m): tailings ponds are fuller after the wet season, and fill over the series
        (the ponded share of a tailings storage grows from :data:`POND_START` of its last-date extent to all of it
        on the last date)."""
        first, last = self.acquisitions[0].date, self.acquisitions[-1].date
        filled = min(1.0, max(0.0, (day - first).days / max(1, (last - first).days)))
        pond = (0.3 + 0.3 * greenness(day)) * ((1.0 - filled) * POND_START + filled)
        return date_cover(self.grid, self.background, self.veg, self.sites, self.rasters, self.cover_scales(day), pond)


def district_stream(seed: int, district: District, *keys: str | int) -> np.random.Generator:
    """The random stream of one component of a district's scene; the single region's streams have no district
    key, so its scenes stay those of earlier versions."""
    return stream(seed, *((district.key,) if district.key else ()), *keys)


def build_scene(seed: int = 0, size_km: float = 20.0, n_dates: int = 8, district: District = PILBARA) -> Scene:
    """Draw the synthetic world for ``(seed, size_km, n_dates, district)``; the same arguments always give the
    same scene.

    Parameters
    ----------
    seed : int
        Random seed.
    size_km : float
        Side of the square region in km.
    n_dates : int
        Number of Sentinel-2 acquisitions (at least 6).
    district : District
        Where the region lies, its mine styles and its sky.

    Returns
    -------
    Scene
    """
    def rng(key: str) -> np.random.Generator:
        return district_stream(seed, district, key)

    grid: RegionGrid = region_grid(size_km, (district.lon, district.lat))
    terrain = make_terrain(rng("terrain"), grid)
    town = place_town(rng("town"), grid, terrain)
    keep_out = keep_out_zone(terrain, town)
    sites = layout_sites(rng("sites"), grid, keep_out, district)
    points = mine_points(rng("points"), grid, sites, keep_out, district)
    acquisitions = acquisition_series(n_dates, rng("sky-roles"), district.lon, district.lat, district.cloudiness)
    background, veg = static_cover(grid, terrain, town, sites)
    texture = fractal_noise(rng("texture"), grid.shape(FINE_RES), beta=2.0)
    reg_rng = rng("registration")
    sx, sy = reg_rng.uniform(0.15, 0.45, size=2) * reg_rng.choice([-1.0, 1.0], size=2)
    registration = Registration(
        shift_x_m=round(float(sx) * 30.0, 2), shift_y_m=round(float(sy) * 30.0, 2), bias_m=round(float(reg_rng.uniform(1.0, 2.0)), 2)
    )
    return Scene(
        seed=seed,
        district=district,
        grid=grid,
        terrain=terrain,
        town=town,
        sites=sites,
        points=points,
        acquisitions=acquisitions,
        background=background,
        veg=veg,
        texture=texture,
        rasters=feature_rasters(grid, sites),
        registration=registration,
    )
