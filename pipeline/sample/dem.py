"""Two DEM epochs on the 30 m grid: the true surfaces before and after mining, and the observed, error-laden DEMs.

The true change (late minus early, noise-free and co-registered) is what ``truth/site_volumes.parquet`` sums. The
observed DEMs add spatially correlated error, white noise and voids; the late one is also resampled at shifted
coordinates and biased (see :class:`~mtg.pipeline.sample.scene.Registration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from scipy import ndimage

from mtg.pipeline.sample.noise import correlated_noise
from mtg.pipeline.sample.scene import EARLY_DEM_DATE, LATE_DEM_DATE, Scene
from mtg.pipeline.sample.terrain import DEM_RES

DEM_NODATA = -32767.0
#: Standard deviations (m) of the correlated and white parts of the DEM error, and the correlation range (m).
CORRELATED_ERROR_M = 1.5
WHITE_ERROR_M = 0.4
ERROR_RANGE_M = 300.0


@dataclass(frozen=True)
class DemEpoch:
    """One observed DEM epoch.

    Attributes
    ----------
    label : str
        ``"2021"`` or ``"2023"``.
    day : date
        Nominal acquisition date.
    elevation : numpy.ndarray
        float32 elevations (m) with :data:`DEM_NODATA` in voids.
    """

    label: str
    day: date
    elevation: np.ndarray


def site_relief(scene: Scene, day: date) -> dict[str, np.ndarray]:
    """Elevation change (m) caused by each site's features on ``day``, on the 30 m grid, by ``site_id``."""
    x, y = scene.grid.coords(DEM_RES)
    shape = scene.grid.shape(DEM_RES)
    scales = scene.scales(day)
    out = {}
    for site in scene.sites:
        dz = np.zeros(shape, dtype=np.float64)
        for feat in site.features:
            window = feat.window(x, y, 2 * DEM_RES)
            if window is None:
                continue
            rs, cs, r = window
            dz[rs, cs] += feat.relief(r, scales[site.site_id])
        out[site.site_id] = dz
    return out


def true_surface(scene: Scene, day: date) -> np.ndarray:
    """Noise-free, co-registered elevation (m, float64) on ``day`` on the 30 m grid."""
    return scene.terrain.elevation30 + sum(site_relief(scene, day).values())


def true_site_change(scene: Scene) -> dict[str, np.ndarray]:
    """Noise-free, co-registered elevation change (late minus early DEM epoch, m) of each site, by ``site_id``."""
    early = site_relief(scene, EARLY_DEM_DATE)
    late = site_relief(scene, LATE_DEM_DATE)
    return {sid: late[sid] - early[sid] for sid in early}


def site_volumes(scene: Scene) -> dict[str, tuple[float, float]]:
    """``(excavated_m3, deposited_m3)`` of each site: the negative and positive true change times the pixel area."""
    area = DEM_RES * DEM_RES
    return {
        sid: (float(-np.minimum(dh, 0.0).sum() * area), float(np.maximum(dh, 0.0).sum() * area))
        for sid, dh in true_site_change(scene).items()
    }


def _dem_error(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Correlated plus white DEM error (m), ``scale`` times the standard deviations above."""
    correlated = CORRELATED_ERROR_M * correlated_noise(rng, shape, range_px=ERROR_RANGE_M / DEM_RES)
    return scale * (correlated + WHITE_ERROR_M * rng.standard_normal(shape))


def _voids(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A few small blobs of missing data (radar shadow / layover / water), as a boolean mask."""
    rows, cols = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(3, 7))):
        r0, c0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        radius = rng.uniform(0.8, 2.5)
        mask |= (rows - r0) ** 2 + ((cols - c0) / rng.uniform(0.6, 1.6)) ** 2 <= radius**2
    return mask


def observed_dems(scene: Scene, error_scale: float = 1.0) -> tuple[DemEpoch, DemEpoch]:
    """The early and late DEM epochs as a DEM provider would deliver them.

    Parameters
    ----------
    scene : Scene
        The synthetic world.
    error_scale : float
        Multiplies the standard deviations of the DEM error (1: the TanDEM-X-like error of the sample; smaller
        values give the same world with quieter DEMs, for checks that need the noise out of the way).

    Returns
    -------
    (DemEpoch, DemEpoch)
        Early (2021) epoch: true surface plus error and voids. Late (2023) epoch: the true surface resampled
        (cubic spline) at coordinates shifted by the registration, plus the vertical bias, error and voids.
    """
    shape = scene.grid.shape(DEM_RES)
    reg = scene.registration
    early_true = true_surface(scene, EARLY_DEM_DATE)
    late_true = true_surface(scene, LATE_DEM_DATE)
    rows, cols = np.indices(shape, dtype=np.float64)
    # Content moves by (+dx east, +dy north): sample the truth dx west and dy south (rows grow southwards).
    late_shifted = ndimage.map_coordinates(late_true, [rows + reg.shift_y_m / DEM_RES, cols - reg.shift_x_m / DEM_RES],
                                           order=3, mode="nearest")
    epochs = []
    for label, day, surface in (("2021", EARLY_DEM_DATE, early_true), ("2023", LATE_DEM_DATE, late_shifted + reg.bias_m)):
        rng = scene.stream("dem", label)
        elevation = (surface + _dem_error(rng, shape, error_scale)).astype(np.float32)
        elevation[_voids(rng, shape)] = DEM_NODATA
        epochs.append(DemEpoch(label=label, day=day, elevation=elevation))
    return epochs[0], epochs[1]
