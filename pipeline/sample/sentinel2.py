"""Rendering and writing the Sentinel-2 L2A-like scenes: bands as uint16 DNs with the baseline offset, and SCL.

For each date the surface reflectance is mixed from the land cover and vegetation of that date, lit by the sun
over the terrain, textured, then seen through the sky (cloud shadow, cloud, cirrus), given sensor noise and encoded
as L2A digital numbers: ``DN = round(10000 * reflectance) + 1000`` from processing baseline 04.00 on,
``round(10000 * reflectance)`` before; valid DNs are clipped to [1, 65535] and 0 is nodata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from shapely.geometry import Polygon, box

from mtg.pipeline.sample.acquisitions import RELATIVE_ORBIT, Acquisition
from mtg.pipeline.sample.clouds import CIRRUS_FLAG, HIGH_CLOUD, MEDIUM_CLOUD, SHADOW_FLAG, SKY_RES, Sky, draw_sky
from mtg.pipeline.sample.cog import write_cog
from mtg.pipeline.sample.landcover import Cover
from mtg.pipeline.sample.scene import Scene
from mtg.pipeline.sample.spectra import (
    BANDS,
    BANDS_10M,
    CIRRUS,
    CLOUD,
    SHADOW_LIGHT,
    SURFACE,
    TEXTURE,
    illumination,
    lookup,
    vegetation,
)

log = logging.getLogger(__name__)

SCL_NODATA, SCL_DARK, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 2, 3, 4, 5, 6
SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 7, 8, 9, 10
#: Surface NDVI above which a clear pixel is classed as vegetation in the SCL.
SCL_NDVI_VEGETATION = 0.3
_WATER_CLASSES = (Cover.WATER, Cover.TAILINGS_POND)
#: Surfaces that are level whatever the ground beneath (water, tailings), so not shaded by the terrain.
_LEVEL_CLASSES = (Cover.WATER, Cover.TAILINGS_POND, Cover.TAILINGS)


@dataclass(frozen=True)
class RenderedScene:
    """One date's rasters.

    Attributes
    ----------
    dn : dict
        uint16 DN arrays by band name (10 m or 20 m grid by band).
    scl : numpy.ndarray
        uint8 scene classification on the 20 m grid.
    sky : Sky
        The atmosphere drawn for the date.
    """

    dn: dict[str, np.ndarray]
    scl: np.ndarray
    sky: Sky


@dataclass(frozen=True)
class SceneNames:
    """PC-style names of one acquisition's product."""

    item_id: str
    product_uri: str
    file_stem: str
    generation_time: str


def scene_names(acq: Acquisition, mgrs_tile: str) -> SceneNames:
    """Item id, SAFE product name, asset file stem and generation time of an acquisition, as Planetary Computer names them."""
    mission = "S2A" if acq.platform.endswith("A") else "S2B"
    sensed = acq.sensing.strftime("%Y%m%dT%H%M%S")
    generated = acq.sensing.replace(microsecond=0) + timedelta(hours=2, minutes=36, seconds=19)
    gen = generated.strftime("%Y%m%dT%H%M%S")
    return SceneNames(
        item_id=f"{mission}_MSIL2A_{sensed}_R{RELATIVE_ORBIT:03d}_T{mgrs_tile}_{gen}",
        product_uri=f"{mission}_MSIL2A_{sensed}_N{acq.baseline.replace('.', '')}_R{RELATIVE_ORBIT:03d}_T{mgrs_tile}_{gen}.SAFE",
        file_stem=f"T{mgrs_tile}_{sensed}",
        generation_time=generated.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )


def band_resolution(band: str) -> int:
    """Native pixel size (m) of a band; SCL is 20 m."""
    return 10 if band in BANDS_10M else 20


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping ``k`` x ``k`` blocks."""
    rows, cols = a.shape
    return a.reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))


def encode_dn(reflectance: np.ndarray, offset: int, valid: np.ndarray) -> np.ndarray:
    """L2A digital numbers: ``round(10000 * reflectance) + offset`` clipped to [1, 65535], 0 where not ``valid``."""
    dn = np.clip(np.rint(reflectance * 10000.0) + offset, 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def render_scene(scene: Scene, acq: Acquisition) -> RenderedScene:
    """Render the ten bands and the SCL of one acquisition.

    Parameters
    ----------
    scene : Scene
        The synthetic world.
    acq : Acquisition
        The date to render.

    Returns
    -------
    RenderedScene
    """
    cover = scene.cover(acq.date)
    sky = draw_sky(scene.stream("sky", acq.index), scene.grid.shape(SKY_RES), acq)
    rng = scene.stream("sensor", acq.index)
    terrain = scene.terrain

    light = illumination(terrain.slope10, terrain.aspect10, acq.solar_zenith, acq.solar_azimuth)
    light[np.isin(cover.background, _LEVEL_CLASSES)] = 1.0
    brightness = light * (1.0 + lookup(TEXTURE)[cover.background] * scene.texture) * cover.benches
    canopy = vegetation(acq.date)
    fv = cover.veg

    def fine(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)

    dn: dict[str, np.ndarray] = {}
    surface20: dict[str, np.ndarray] = {}
    for i, band in enumerate(BANDS):
        surface = (lookup(SURFACE, i)[cover.background] * (1.0 - fv) + canopy[i] * fv) * brightness
        if band in BANDS_10M:
            cloud, shadow, cirrus, valid = fine(sky.cloud), fine(sky.shadow), fine(sky.cirrus), fine(sky.valid)
        else:
            surface = block_mean(surface, 2)
            cloud, shadow, cirrus, valid = sky.cloud, sky.shadow, sky.cirrus, sky.valid
        if band in ("B04", "B8A"):
            surface20[band] = surface if band == "B8A" else block_mean(surface, 2)
        seen = surface * (1.0 - (1.0 - SHADOW_LIGHT) * shadow)
        seen = seen * (1.0 - cloud) + CLOUD[i] * cloud + CIRRUS[i] * cirrus
        seen = seen + rng.standard_normal(seen.shape, dtype=np.float32) * (0.003 + 0.01 * seen)
        dn[band] = encode_dn(seen, acq.boa_offset, valid)

    red, nir = surface20["B04"], surface20["B8A"]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.full(sky.cloud.shape, SCL_NOT_VEGETATED, dtype=np.uint8)
    scl[ndvi > SCL_NDVI_VEGETATION] = SCL_VEGETATION
    water20 = np.isin(cover.background[::2, ::2], _WATER_CLASSES)
    scl[(nir < 0.07) & ~water20] = SCL_DARK
    scl[water20] = SCL_WATER
    scl[rng.random(scl.shape) < 0.002] = SCL_UNCLASSIFIED
    scl[sky.shadow >= SHADOW_FLAG] = SCL_SHADOW
    scl[sky.cirrus >= CIRRUS_FLAG] = SCL_CIRRUS
    scl[sky.cloud >= MEDIUM_CLOUD] = SCL_CLOUD_MEDIUM
    scl[sky.cloud >= HIGH_CLOUD] = SCL_CLOUD_HIGH
    scl[~sky.valid] = SCL_NODATA
    return RenderedScene(dn=dn, scl=scl, sky=sky)


def scl_statistics(scl: np.ndarray) -> dict[str, float]:
    """Sen2Cor-style percentages: nodata over all pixels, the classes over valid pixels (as in PC item properties)."""
    total = scl.size
    valid = int((scl != SCL_NODATA).sum())

    def pct(*codes: int) -> float:
        return round(100.0 * float(np.isin(scl, codes).sum()) / max(valid, 1), 6)

    return {
        "eo:cloud_cover": pct(SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS),
        "s2:water_percentage": pct(SCL_WATER),
        "s2:snow_ice_percentage": 0.0,
        "s2:vegetation_percentage": pct(SCL_VEGETATION),
        "s2:thin_cirrus_percentage": pct(SCL_CIRRUS),
        "s2:cloud_shadow_percentage": pct(SCL_SHADOW),
        "s2:nodata_pixel_percentage": round(100.0 * (total - valid) / total, 6),
        "s2:unclassified_percentage": pct(SCL_UNCLASSIFIED),
        "s2:dark_features_percentage": pct(SCL_DARK),
        "s2:not_vegetated_percentage": pct(SCL_NOT_VEGETATED),
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:high_proba_clouds_percentage": pct(SCL_CLOUD_HIGH),
        "s2:medium_proba_clouds_percentage": pct(SCL_CLOUD_MEDIUM),
        "s2:saturated_defective_pixel_percentage": 0.0,
    }


def valid_footprint(scene: Scene, valid: np.ndarray) -> Polygon:
    """UTM outline of the valid data: the region, cut by the swath edge where there is one."""
    left, bottom, right, top = scene.grid.bounds
    if valid.all():
        return box(left, bottom, right, top)
    last = np.array([np.flatnonzero(row)[-1] + 1 if row.any() else 0 for row in valid])
    x_top = left + last[0] * SKY_RES
    x_bottom = left + last[-1] * SKY_RES
    return Polygon([(left, bottom), (x_bottom, bottom), (x_top, top), (left, top)])


@dataclass(frozen=True)
class WrittenScene:
    """What :func:`write_scene` wrote for one acquisition.

    Attributes
    ----------
    acquisition : Acquisition
    names : SceneNames
    assets : dict
        COG path by asset key (``B02`` ... ``SCL``).
    statistics : dict
        SCL percentages for the item properties.
    footprint : shapely.Polygon
        Valid-data outline in UTM metres.
    """

    acquisition: Acquisition
    names: SceneNames
    assets: dict[str, Path]
    statistics: dict[str, float]
    footprint: Polygon


def write_scene(scene: Scene, acq: Acquisition, folder: Path, submit: Callable[..., object]) -> WrittenScene:
    """Render one acquisition and hand its COG writes to ``submit``.

    Parameters
    ----------
    scene : Scene
        The synthetic world.
    acq : Acquisition
        The date.
    folder : pathlib.Path
        The collection folder; files go to ``folder/<item id>/``.
    submit : callable
        ``submit(fn, *args, **kwargs)``, e.g. a thread pool's ``submit``, that runs
        :func:`~mtg.pipeline.sample.cog.write_cog`.

    Returns
    -------
    WrittenScene
    """
    names = scene_names(acq, scene.grid.mgrs_tile)
    rendered = render_scene(scene, acq)
    item_dir = folder / names.item_id
    assets: dict[str, Path] = {}
    for key, array in [*rendered.dn.items(), ("SCL", rendered.scl)]:
        res = band_resolution(key)
        path = item_dir / f"{names.file_stem}_{key}_{res}m.tif"
        submit(write_cog, path, array, scene.grid.transform(res), scene.grid.epsg, 0,
               resampling="nearest" if key == "SCL" else "average")
        assets[key] = path
    stats = scl_statistics(rendered.scl)
    log.debug("rendered %s: %.1f%% cloud, %.1f%% nodata", names.item_id, stats["eo:cloud_cover"], stats["s2:nodata_pixel_percentage"])
    return WrittenScene(acq, names, dict(sorted(assets.items())), stats, valid_footprint(scene, rendered.sky.valid))
