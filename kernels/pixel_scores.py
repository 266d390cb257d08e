"""Pixel-wise scores of a binary map against the truth: IoU, F1, precision and recall.

Written once against the array API: the same code runs on numpy and CuPy arrays.
"""

from array_api_compat import array_namespace


def confusion_counts(predicted, truth, valid=None) -> tuple[int, int, int, int]:
    """True positives, false positives, false negatives and true negatives.

    Parameters
    ----------
    predicted, truth : array
        Boolean maps of the same shape.
    valid : array, optional
        Boolean map of the pixels to count; default all.

    Returns
    -------
    (int, int, int, int)
        ``(tp, fp, fn, tn)``.
    """
    xp = array_namespace(predicted, truth)
    if valid is None:
        valid = xp.ones(predicted.shape, dtype=xp.bool)

    def count(mask) -> int:
        return int(xp.sum(xp.astype(mask & valid, xp.int64)))

    return count(predicted & truth), count(predicted & ~truth), count(~predicted & truth), count(~predicted & ~truth)


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """IoU, F1, precision and recall from confusion counts; NaN where a ratio has no denominator."""

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"iou": ratio(tp, tp + fp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}
