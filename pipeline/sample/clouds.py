"""The sky over each acquisition: cumulus clouds, their shadows cast by the sun, thin cirrus and swath edges."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtg.pipeline.sample.acquisitions import Acquisition
from mtg.pipeline.sample.noise import fractal_noise

#: Pixel size (m) at which the sky is drawn (the 20 m band grid; 10 m bands repeat it).
SKY_RES = 20.0
#: Cloud opacity above which Sen2Cor-like classes call a pixel high / medium probability cloud.
HIGH_CLOUD = 0.65
MEDIUM_CLOUD = 0.3
#: Cirrus reflectance and shadow strength above which a pixel is flagged thin cirrus / cloud shadow.
CIRRUS_FLAG = 0.012
SHADOW_FLAG = 0.3


@dataclass(frozen=True)
class Sky:
    """Atmospheric effects on the 20 m grid for one date.

    Attributes
    ----------
    cloud : numpy.ndarray
        Opacity of cumulus cloud, 0..1.
    shadow : numpy.ndarray
        Strength of cloud shadow, 0..1 (the cloud opacity, displaced away from the sun).
    cirrus : numpy.ndarray
        Reflectance added by thin cirrus at 0.49 um.
    valid : numpy.ndarray
        False beyond the swath edge (no data).
    """

    cloud: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray
    valid: np.ndarray


def swath_edge(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Valid-data mask with the east ``fraction`` of the scene cut off by a swath edge tilted like the S2 ground track."""
    rows, cols = shape
    r, c = np.indices(shape)
    tilt = math.tan(math.radians(12.0))
    edge = cols * (1.0 - fraction) + (r - rows / 2) * tilt
    return c < edge


def draw_sky(rng: np.random.Generator, shape: tuple[int, int], acq: Acquisition) -> Sky:
    """Draw clouds, shadows, cirrus and data coverage for one acquisition.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness for this date.
    shape : (int, int)
        Shape of the 20 m grid.
    acq : Acquisition
        The acquisition; its ``sky`` role and ``cloud_fraction`` set what is drawn.

    Returns
    -------
    Sky
    """
    height_m = rng.uniform(800.0, 1600.0)
    reach = height_m * math.tan(math.radians(acq.solar_zenith))
    # Shadows fall on the side away from the sun.
    dx = -reach * math.sin(math.radians(acq.solar_azimuth))
    dy = -reach * math.cos(math.radians(acq.solar_azimuth))
    shift_c, shift_r = int(round(dx / SKY_RES)), int(round(-dy / SKY_RES))
    pad = max(abs(shift_c), abs(shift_r)) + 1
    rows, cols = shape
    full_shape = (rows + 2 * pad, cols + 2 * pad)

    cloud = np.zeros(shape, dtype=np.float32)
    shadow = np.zeros(shape, dtype=np.float32)
    if acq.cloud_fraction > 0:
        field = fractal_noise(rng, full_shape, beta=3.4, min_wavelength_px=3)
        inner = field[pad:pad + rows, pad:pad + cols]
        threshold = np.quantile(inner, 1.0 - acq.cloud_fraction)
        opacity = np.clip((field - threshold) / 0.5 + MEDIUM_CLOUD, 0.0, 1.0).astype(np.float32)
        cloud = opacity[pad:pad + rows, pad:pad + cols]
        shadow = opacity[pad - shift_r:pad - shift_r + rows, pad - shift_c:pad - shift_c + cols]

    cirrus = np.zeros(shape, dtype=np.float32)
    if acq.sky == "cirrus":
        veil = fractal_noise(rng, shape, beta=4.0, min_wavelength_px=8)
        cirrus = np.clip(0.03 * (veil - 0.2), 0.0, 0.06).astype(np.float32)

    valid = swath_edge(shape, rng.uniform(0.2, 0.35)) if acq.sky == "edge" else np.ones(shape, dtype=bool)
    return Sky(cloud=cloud, shadow=shadow, cirrus=cirrus, valid=valid)
