"""Spectral indices of surface reflectance: normalised differences (NDVI, NDWI) and the bare-soil index.

Written once against the array API: the same code runs on numpy and CuPy arrays. Where a denominator is 0 the
index is 0 (a black pixel is neither green, wet nor bare); NaN inputs give NaN.
"""

from array_api_compat import array_namespace


def normalized_difference(a, b):
    """``(a - b) / (a + b)``, 0 where ``a + b == 0``.

    NDVI is ``normalized_difference(nir, red)``; NDWI (McFeeters 1996) is ``normalized_difference(green, nir)``.

    Parameters
    ----------
    a, b : array
        Reflectances of the same shape and floating dtype.

    Returns
    -------
    array
        The index in [-1, 1] for non-negative inputs.
    """
    xp = array_namespace(a, b)
    total = a + b
    safe = xp.where(total == 0, xp.ones_like(total), total)
    return xp.where(total == 0, xp.zeros_like(total), (a - b) / safe)


def bare_soil_index(blue, red, nir, swir1):
    """Bare-soil index ``((swir1 + red) - (nir + blue)) / ((swir1 + red) + (nir + blue))`` (Rikimaru et al. 2002).

    Parameters
    ----------
    blue, red, nir, swir1 : array
        Reflectances of Sentinel-2 B02, B04, B08 and B11 on one grid.

    Returns
    -------
    array
        The index, 0 where the denominator is 0.
    """
    return normalized_difference(swir1 + red, nir + blue)
