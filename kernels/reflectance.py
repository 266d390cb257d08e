"""Sentinel-2 L2A digital numbers to surface reflectance, and scene-classification (SCL) cloud masks.

Written once against the array API: the same code runs on numpy and CuPy arrays.
"""

from collections.abc import Sequence

from array_api_compat import array_namespace, device


def dn_to_reflectance(dn, offset: float, scale: float = 1e-4, nodata: int = 0):
    """Convert L2A digital numbers to float32 surface reflectance.

    Parameters
    ----------
    dn : array
        Integer digital numbers (uint16 for Sentinel-2 L2A), any shape.
    offset : float
        Additive offset in digital numbers, applied before scaling: 0 before processing baseline 04.00,
        -1000 (``BOA_ADD_OFFSET``) from baseline 04.00 on.
    scale : float
        Quantification factor: 1e-4 for Sentinel-2 L2A.
    nodata : int
        Digital number that marks missing data; it becomes NaN.

    Returns
    -------
    array
        float32 reflectance ``(dn + offset) * scale``, NaN where ``dn == nodata``.
    """
    xp = array_namespace(dn)
    # Divide by the quantification value (10000) rather than multiply by 1e-4: exact for whole reflectance steps.
    quantification = xp.asarray(1.0 / scale, dtype=xp.float32)
    refl = (xp.astype(dn, xp.float32) + xp.asarray(offset, dtype=xp.float32)) / quantification
    return xp.where(dn == nodata, xp.asarray(xp.nan, dtype=xp.float32), refl)


def class_mask(classes, selected: Sequence[int], n_classes: int = 256):
    """Boolean mask of the pixels whose class code is in ``selected``.

    Parameters
    ----------
    classes : array
        Integer class codes in ``[0, n_classes)``, for example the Sentinel-2 SCL band (uint8).
    selected : sequence of int
        The class codes to mark True.
    n_classes : int
        Size of the lookup table; codes outside ``[0, n_classes)`` raise ``ValueError``.

    Returns
    -------
    array
        bool array of the shape of ``classes``.
    """
    xp = array_namespace(classes)
    if any(not 0 <= int(c) < n_classes for c in selected):
        raise ValueError(f"class codes must lie in [0, {n_classes}); got {list(selected)}")
    dev = device(classes)
    codes = xp.arange(n_classes, dtype=xp.int64, device=dev)
    lut = xp.any(codes[:, None] == xp.asarray(list(selected), dtype=xp.int64, device=dev)[None, :], axis=1)
    flat = xp.reshape(xp.astype(classes, xp.int64), (-1,))
    return xp.reshape(xp.take(lut, flat), classes.shape)


def masked_reflectance(dn, scl, offset: float, invalid_classes: Sequence[int], scale: float = 1e-4, nodata: int = 0):
    """Reflectance with nodata and invalid scene classes (clouds, shadows, ...) set to NaN.

    Parameters
    ----------
    dn : array
        Digital numbers of one band.
    scl : array
        Scene classification codes on the same grid as ``dn``.
    offset, scale, nodata
        As in :func:`dn_to_reflectance`.
    invalid_classes : sequence of int
        SCL codes to mask out.

    Returns
    -------
    array
        float32 reflectance, NaN where masked.
    """
    xp = array_namespace(dn, scl)
    refl = dn_to_reflectance(dn, offset, scale=scale, nodata=nodata)
    return xp.where(class_mask(scl, invalid_classes), xp.asarray(xp.nan, dtype=xp.float32), refl)
