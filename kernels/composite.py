"""Per-pixel composites of a cloud-masked time series.

Written once against the array API: the same code runs on numpy and CuPy arrays.
"""

from array_api_compat import array_namespace


def latest_valid(stack):
    """The most recent observation of every pixel in which all bands are valid (finite).

    Mine footprints grow, so the latest clear view is the one that matches the current footprint best; a
    median over several dates would blur a growing edge. All bands of a pixel come from the same date.

    Parameters
    ----------
    stack : array
        Reflectance ``(time, band, y, x)`` in time order, NaN where masked (clouds, shadows, no data).

    Returns
    -------
    array
        ``(band, y, x)`` of the dtype of ``stack``; NaN where no date had all bands valid.
    """
    xp = array_namespace(stack)
    out = xp.full(stack.shape[1:], xp.nan, dtype=stack.dtype)
    for t in range(stack.shape[0]):
        obs = stack[t, ...]
        valid = xp.all(xp.isfinite(obs), axis=0)
        out = xp.where(valid[None, ...], obs, out)
    return out
