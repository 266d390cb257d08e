"""A deterministic, physically plausible sample region embedded in the package.

:func:`write_sample_region` writes a synthetic mining district near Newman, Western Australia, as a static STAC
catalog that mirrors Planetary Computer: a Sentinel-2 L2A time series (``sentinel-2-l2a``: uint16 DN COGs with the
processing-baseline offset, SCL with clouds, shadows, cirrus and a swath edge) and two DEM epochs
(``cop-dem-glo-30``: float32 COGs on the UTM grid, the later one misregistered), plus ground truth under ``truth/``.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from mtg.pipeline.sample.cog import write_cog
from mtg.pipeline.sample.dem import DEM_NODATA, observed_dems
from mtg.pipeline.sample.scene import Scene, build_scene
from mtg.pipeline.sample.sentinel2 import write_scene
from mtg.pipeline.sample.stac import DEM_COLLECTION, S2_COLLECTION, dem_item, dem_item_id, sentinel2_item, write_catalog
from mtg.pipeline.sample.terrain import DEM_RES
from mtg.pipeline.sample.truth import write_truth

__all__ = ["SampleRegion", "render_scene", "write_sample_region"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRegion:
    """Where a written sample region lies and what it covers.

    Attributes
    ----------
    root : pathlib.Path
        The output folder.
    catalog : pathlib.Path
        ``root/catalog.json``, the static STAC root catalog.
    truth : pathlib.Path
        ``root/truth``, the ground truth.
    epsg : int
        EPSG code of the UTM CRS of all rasters.
    bounds : tuple of float
        ``(left, bottom, right, top)`` in the UTM CRS.
    bbox_lonlat : tuple of float
        ``(west, south, east, north)`` in degrees.
    time_range : tuple of str
        ISO dates of the first and last Sentinel-2 acquisition.
    """

    root: Path
    catalog: Path
    truth: Path
    epsg: int
    bounds: tuple[float, float, float, float]
    bbox_lonlat: tuple[float, float, float, float]
    time_range: tuple[str, str]


def render_scene(scene: Scene, out: Path, truth: Path, level: int) -> tuple[list[pystac.Item], list[pystac.Item]]:
    """Write one scene's Sentinel-2 COGs, DEM epochs and truth under ``out`` (truth into ``truth``); returns its
    Sentinel-2 and DEM STAC items (hrefs to the written files)."""
    grid = scene.grid
    futures: list[Future[Any]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(fn: Any, *args: Any, **kwargs: Any) -> None:
            futures.append(pool.submit(fn, *args, **kwargs))

        written = []
        for acq in scene.acquisitions:
            written.append(write_scene(scene, acq, out / S2_COLLECTION, submit))
            log.log(level, "rendered Sentinel-2 scene %d of %d (%s)", acq.index + 1, len(scene.acquisitions),
                    acq.date.isoformat())
        epochs = observed_dems(scene)
        dem_paths = []
        for epoch in epochs:
            item_id = dem_item_id(grid, epoch.label)
            dem_paths.append(out / DEM_COLLECTION / item_id / f"{item_id}.tif")
            submit(write_cog, dem_paths[-1], epoch.elevation, grid.transform(DEM_RES), grid.epsg, DEM_NODATA)
        write_truth(scene, truth, written)
        for future in futures:
            future.result()
    log.log(level, "wrote %d Sentinel-2 scenes, %d DEM epochs and the truth files", len(written), len(epochs))
    return [sentinel2_item(grid, w) for w in written], [dem_item(grid, e, p) for e, p in zip(epochs, dem_paths)]


def write_sample_region(out: Path, seed: int = 0, size_km: float = 20.0, n_dates: int = 8, progress: bool = False) -> SampleRegion:
    """Write the sample region to ``out``; the same ``(seed, size_km, n_dates)`` always gives the same data.

    Parameters
    ----------
    out : pathlib.Path
        Output folder; created if missing. The sample's own subfolders in it are replaced.
    seed : int
        Random seed of the synthetic world.
    size_km : float
        Side of the square region in km (rounded up to a multiple of 60 m).
    n_dates : int
        Number of Sentinel-2 acquisitions between 2021-06 and 2023-05; at least 6.
    progress : bool
        Log progress lines at INFO level (otherwise at DEBUG).

    Returns
    -------
    SampleRegion
    """
    out = Path(out).resolve()  # absolute, so asset hrefs become correct relative links in the catalog
    level = logging.INFO if progress else logging.DEBUG
    for sub in (S2_COLLECTION, DEM_COLLECTION, "truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    scene = build_scene(seed=seed, size_km=size_km, n_dates=n_dates)
    grid = scene.grid
    log.log(level, "drew a %.2f km region with %d mine sites and %d acquisitions", grid.size_m / 1000, len(scene.sites), n_dates)
    s2_items, dem_items = render_scene(scene, out, out / "truth", level)
    catalog = write_catalog(out, [grid], s2_items, dem_items)
    log.log(level, "wrote the STAC catalog %s", catalog)
    return SampleRegion(
        root=out,
        catalog=catalog,
        truth=out / "truth",
        epsg=grid.epsg,
        bounds=grid.bounds,
        bbox_lonlat=grid.bbox_lonlat,
        time_range=(scene.acquisitions[0].date.isoformat(), scene.acquisitions[-1].date.isoformat()),
    )
