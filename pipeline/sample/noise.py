"""Random fields for texture, terrain, clouds and DEM error: fractal (power-law) and Gaussian-correlated noise."""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float, min_wavelength_px: float = 2.0) -> np.ndarray:
    """Zero-mean, unit-variance noise with a power spectrum falling as ``k**-beta``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : (int, int)
        Output shape.
    beta : float
        Spectral slope; about 2 gives rough texture, 3-4 smooth terrain or cloud fields.
    min_wavelength_px : float
        Wavelengths shorter than this (in pixels) are removed.

    Returns
    -------
    numpy.ndarray
        float32 field of ``shape``; periodic at its edges.
    """
    rows, cols = shape
    ky = np.fft.fftfreq(rows)[:, None]
    kx = np.fft.rfftfreq(cols)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0
    amp = k ** (-beta / 2.0)
    amp[0, 0] = 0.0
    amp[k > 1.0 / min_wavelength_px] = 0.0
    spec = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32)) * amp
    field = np.fft.irfft2(spec, s=shape)
    field -= field.mean()
    field /= field.std() or 1.0
    return field.astype(np.float32)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int], range_px: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a Gaussian correlation of about ``range_px`` pixels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : (int, int)
        Output shape.
    range_px : float
        Correlation range in pixels (the Gaussian kernel's sigma is half of it).

    Returns
    -------
    numpy.ndarray
        float32 field of ``shape``.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    field = ndimage.gaussian_filter(white, sigma=max(range_px / 2.0, 0.5), mode="wrap")
    field -= field.mean()
    field /= field.std() or 1.0
    return field.astype(np.float32)


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random generator for one component of the sample, fixed by ``seed`` and ``keys``.

    Components draw from their own streams, so adding draws to one never changes another.

    Parameters
    ----------
    seed : int
        The sample's seed.
    *keys : str or int
        Names of the component, e.g. ``("clouds", 3)``.

    Returns
    -------
    numpy.random.Generator
    """
    words = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(words)
