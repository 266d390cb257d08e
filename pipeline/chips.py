"""Training chips: a spatial split of the region, chip windows with a positive/negative balance, augmentation.

The region is cut into square blocks. Pixels in the held-out box are never sampled; the other blocks are drawn
into training and validation (stratified: blocks with and without mine pixels alike), and a chip is only taken
where all its pixels lie in one split, so no chip straddles training and validation ground.
"""

from __future__ import annotations

import numpy as np

HOLDOUT, TRAIN, VALIDATION = 0, 1, 2
SPLIT_NAMES = {HOLDOUT: "held out", TRAIN: "training", VALIDATION: "validation"}


def split_map(holdout: np.ndarray, mining: np.ndarray, block: int, val_fraction: float,
              rng: np.random.Generator) -> np.ndarray:
    """Assign every pixel to :data:`HOLDOUT`, :data:`TRAIN` or :data:`VALIDATION`.

    Parameters
    ----------
    holdout : numpy.ndarray
        bool ``(y, x)``: pixels never sampled.
    mining : numpy.ndarray
        bool ``(y, x)``: mine pixels, to stratify the blocks.
    block : int
        Side of the blocks in pixels.
    val_fraction : float
        Share of the blocks with mine pixels, and of those without, that go to validation (at least one of the
        mine blocks when there are two or more).
    rng : numpy.random.Generator
        Source of the draw.

    Returns
    -------
    numpy.ndarray
        uint8 split codes ``(y, x)``.
    """
    rows, cols = holdout.shape
    split = np.full(holdout.shape, TRAIN, dtype=np.uint8)
    blocks = [(r, c) for r in range(0, rows, block) for c in range(0, cols, block)]
    usable = [(r, c) for r, c in blocks if not holdout[r:r + block, c:c + block].all()]
    with_mines = [b for b in usable if (mining[b[0]:b[0] + block, b[1]:b[1] + block]
                                       & ~holdout[b[0]:b[0] + block, b[1]:b[1] + block]).any()]
    mined = set(with_mines)
    without = [b for b in usable if b not in mined]
    for group, minimum in ((with_mines, 1 if len(with_mines) >= 2 else 0), (without, 0)):
        n = max(minimum, round(val_fraction * len(group)))
        for i in rng.permutation(len(group))[:n]:
            r, c = group[i]
            split[r:r + block, c:c + block] = VALIDATION
    split[holdout] = HOLDOUT
    return split


def _inside(split: np.ndarray, which: int) -> np.ndarray:
    """Summed-area table of ``split == which`` with a leading row and column of zeros."""
    table = np.zeros((split.shape[0] + 1, split.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(split == which, axis=0), axis=1)
    return table


def _window_inside(table: np.ndarray, r: int, c: int, chip: int) -> bool:
    total = table[r + chip, c + chip] - table[r, c + chip] - table[r + chip, c] + table[r, c]
    return bool(total == chip * chip)


def sample_windows(split: np.ndarray, mining: np.ndarray, which: int, chip: int, n: int, positive_fraction: float,
                   rng: np.random.Generator, max_tries: int = 200) -> list[tuple[int, int]]:
    """Origins of ``n`` chips lying wholly in split ``which``: ``positive_fraction`` of them around a mine pixel.

    A positive chip is placed so that a random mine pixel of the split lies in its central half; a negative chip
    is placed uniformly at random (it may still catch mine edges). Windows that leave the split are redrawn.
    """
    rows, cols = split.shape
    if rows < chip or cols < chip:
        raise ValueError(f"the region ({rows} x {cols} pixels) is smaller than one chip ({chip})")
    table = _inside(split, which)
    pos_r, pos_c = np.nonzero(mining & (split == which))
    n_pos = round(positive_fraction * n) if pos_r.size else 0
    windows: list[tuple[int, int]] = []
    for k in range(n):
        for _ in range(max_tries):
            if k < n_pos:
                i = rng.integers(pos_r.size)
                r = pos_r[i] - chip // 2 + rng.integers(-chip // 4, chip // 4 + 1)
                c = pos_c[i] - chip // 2 + rng.integers(-chip // 4, chip // 4 + 1)
                r, c = int(np.clip(r, 0, rows - chip)), int(np.clip(c, 0, cols - chip))
            else:
                r, c = int(rng.integers(rows - chip + 1)), int(rng.integers(cols - chip + 1))
            if _window_inside(table, r, c, chip):
                windows.append((r, c))
                break
    return windows


def grid_windows(split: np.ndarray, which: int, chip: int) -> list[tuple[int, int]]:
    """Origins of the non-overlapping chips of a regular grid that lie wholly in split ``which``."""
    table = _inside(split, which)
    rows, cols = split.shape
    return [(r, c) for r in range(0, rows - chip + 1, chip) for c in range(0, cols - chip + 1, chip)
            if _window_inside(table, r, c, chip)]


#: Relative strength of haze (path radiance) per band: strongest in blue, falling with wavelength.
HAZE = {"B02": 1.0, "B03": 0.75, "B04": 0.55, "B05": 0.48, "B06": 0.4, "B07": 0.35, "B08": 0.3, "B8A": 0.28,
        "B11": 0.1, "B12": 0.05}


def haze_weights(bands: tuple[str, ...] | list[str]) -> np.ndarray:
    """:data:`HAZE` of ``bands`` as a ``(band, 1, 1)`` float32 array, for :func:`augment`."""
    return np.array([HAZE[b] for b in bands], dtype=np.float32)[:, None, None]


def augment(bands: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            haze: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random symmetry of the square, a random radiometry, and sensor noise.

    Radiometry, the same for all pixels of a chip so that contrasts within it survive: on 80 % of the chips an
    overall gain of 0.8 to 1.2, a gain of 0.9 to 1.1 per band and a haze-like offset of 0 to 0.04 (times
    :data:`HAZE`). A third of the chips without any mine pixel are also *recoloured*: each band is rescaled to a
    random level (0.05 to 0.35, times 0.7 to 1.3 per band) and its contrast to 0.3 to 1.2 times the original.
    The sample's natural ground has few colours; recoloured ground teaches the model that land of any colour
    and smoothness is not a mine unless its texture, shape and context say so (real scenes, such as grey
    Patagonian steppe, look like none of the sample's natural classes).

    Parameters
    ----------
    bands : numpy.ndarray
        ``(band, chip, chip)`` reflectance.
    labels : numpy.ndarray
        ``(chip, chip)`` class codes.
    rng : numpy.random.Generator
    haze : numpy.ndarray
        ``(band, 1, 1)`` haze strength per band (:func:`haze_weights`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Augmented copies; the noise has a standard deviation of 0.005.
    """
    turns = int(rng.integers(4))
    bands = np.rot90(bands, turns, axes=(1, 2))
    labels = np.rot90(labels, turns)
    if rng.integers(2):
        bands, labels = bands[:, :, ::-1], labels[:, ::-1]
    n = bands.shape[0]
    if not labels.any() and rng.random() < 0.3:
        mean = np.nanmean(bands, axis=(1, 2), keepdims=True)
        level = rng.uniform(0.05, 0.35) * rng.uniform(0.7, 1.3, size=(n, 1, 1))
        bands = level * (1.0 + rng.uniform(0.3, 1.2) * (bands / np.maximum(mean, 1e-3) - 1.0))
    if rng.random() < 0.8:
        gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=(n, 1, 1))
        bands = bands * gain + rng.uniform(0.0, 0.04) * haze
    noise = rng.normal(0.0, 0.005, size=bands.shape)
    return (bands + noise).astype(np.float32), np.ascontiguousarray(labels)
