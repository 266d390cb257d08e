"""Surface reflectance of each land-cover class in the ten Sentinel-2 L2A bands, and seasonal vegetation greenness.

Values are bottom-of-atmosphere reflectances typical of the Pilbara: iron-rich red soils and ironstone (rising
through the red into the SWIR), spinifex and eucalypt vegetation (red edge and NIR plateau, greener after the
summer wet season), dark, varied pit walls, paler waste dumps and bright, smooth tailings.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np

from mtg.pipeline.sample.landcover import Cover

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
BANDS_10M = ("B02", "B03", "B04", "B08")

#: Reflectance of the non-vegetated surface of each class, per band in :data:`BANDS` order.
SURFACE = {
    Cover.BARE_SOIL: (0.075, 0.115, 0.195, 0.235, 0.255, 0.275, 0.295, 0.31, 0.40, 0.33),
    Cover.ROCK: (0.06, 0.08, 0.12, 0.15, 0.165, 0.175, 0.185, 0.195, 0.25, 0.215),
    Cover.WATER: (0.055, 0.07, 0.06, 0.05, 0.03, 0.025, 0.02, 0.018, 0.01, 0.008),
    Cover.BUILT_UP: (0.10, 0.12, 0.14, 0.165, 0.185, 0.195, 0.215, 0.225, 0.28, 0.25),
    Cover.ROAD: (0.07, 0.08, 0.09, 0.10, 0.11, 0.115, 0.12, 0.125, 0.15, 0.14),
    Cover.PIT: (0.05, 0.07, 0.10, 0.12, 0.13, 0.14, 0.15, 0.16, 0.20, 0.18),
    Cover.DUMP: (0.10, 0.14, 0.21, 0.25, 0.27, 0.285, 0.30, 0.31, 0.38, 0.33),
    Cover.TAILINGS: (0.20, 0.23, 0.26, 0.28, 0.29, 0.30, 0.31, 0.32, 0.36, 0.32),
    Cover.TAILINGS_POND: (0.12, 0.14, 0.15, 0.13, 0.11, 0.10, 0.08, 0.07, 0.035, 0.025),
    Cover.MINE_OTHER: (0.10, 0.12, 0.15, 0.17, 0.185, 0.195, 0.205, 0.21, 0.25, 0.22),
}
#: Green (wet-season) and senescent (dry-season) vegetation canopies.
GREEN_VEG = (0.03, 0.065, 0.04, 0.10, 0.25, 0.32, 0.36, 0.37, 0.20, 0.10)
DRY_VEG = (0.05, 0.075, 0.095, 0.135, 0.185, 0.215, 0.245, 0.265, 0.33, 0.24)
#: Opaque cloud top, and the spectral shape of thin cirrus (multiplies its optical thickness).
CLOUD = (0.46, 0.465, 0.47, 0.475, 0.48, 0.485, 0.49, 0.49, 0.42, 0.32)
CIRRUS = (1.0, 1.0, 1.0, 1.0, 0.97, 0.95, 0.93, 0.92, 0.7, 0.5)
#: Fraction of direct light left in a cloud shadow.
SHADOW_LIGHT = 0.35
#: Relative texture (standard deviation of brightness) of each class.
TEXTURE = {
    Cover.BARE_SOIL: 0.08, Cover.ROCK: 0.12, Cover.WATER: 0.03, Cover.BUILT_UP: 0.2, Cover.ROAD: 0.05,
    Cover.PIT: 0.15, Cover.DUMP: 0.07, Cover.TAILINGS: 0.015, Cover.TAILINGS_POND: 0.02, Cover.MINE_OTHER: 0.18,
}


def lookup(table: dict[Cover, tuple[float, ...]] | dict[Cover, float], band: int | None = None) -> np.ndarray:
    """A 256-entry lookup array from class code to a per-class value (0 for unknown codes).

    Parameters
    ----------
    table : dict
        Per-class tuples (one value per band) or scalars.
    band : int, optional
        Index into :data:`BANDS` when the table holds tuples.
    """
    lut = np.zeros(256, dtype=np.float32)
    for code, value in table.items():
        lut[int(code)] = value[band] if band is not None else value
    return lut


def greenness(day: date) -> float:
    """Vegetation greenness in [0, 1] on ``day``: highest in the Pilbara autumn after the summer rains (late March)."""
    doy = day.timetuple().tm_yday
    wet_year = 0.06 * math.sin(2 * math.pi * (day.year - 2021) / 3.0)
    return float(np.clip(0.5 + 0.38 * math.cos(2 * math.pi * (doy - 85) / 365.25) + wet_year, 0.05, 0.95))


def vegetation(day: date) -> np.ndarray:
    """Canopy reflectance per band on ``day``: green and dry canopies mixed by :func:`greenness`."""
    g = greenness(day)
    return g * np.asarray(GREEN_VEG, dtype=np.float32) + (1 - g) * np.asarray(DRY_VEG, dtype=np.float32)


def illumination(slope_deg: np.ndarray, aspect: np.ndarray, zenith_deg: float, azimuth_deg: float) -> np.ndarray:
    """Relative direct illumination of sloping ground (cosine of incidence over cosine of zenith, damped).

    Parameters
    ----------
    slope_deg, aspect : numpy.ndarray
        Slope in degrees and downslope direction in radians clockwise from north.
    zenith_deg, azimuth_deg : float
        Sun angles in degrees.
    """
    zen, az = math.radians(zenith_deg), math.radians(azimuth_deg)
    slope = np.radians(slope_deg)
    cos_i = math.cos(zen) * np.cos(slope) + math.sin(zen) * np.sin(slope) * np.cos(az - aspect)
    ratio = np.clip(cos_i, 0.0, None) / math.cos(zen)
    return (0.25 + 0.75 * ratio).astype(np.float32)
