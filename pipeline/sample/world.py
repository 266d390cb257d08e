"""The sample world: several sample districts over the globe in one static STAC catalog, the test bed of global runs.

Each district of :data:`~mtg.pipeline.sample.districts.DISTRICTS` is a sample region drawn around its own centre
on its own UTM grid (the district across the zone 35/36 boundary is drawn on the grid of zone 36, as a Sentinel-2
tile of one zone overlaps the next), with its own mine styles and sky. All items share the sample's collections
(``sentinel-2-l2a`` and ``cop-dem-glo-30``), so every command that reads the sample reads the world.

Layout of ``DIR``::

    catalog.json, sentinel-2-l2a/..., cop-dem-glo-30/...   the static STAC catalog
    truth/<KEY>/...                                        each district's truth, as for the sample region
    truth/mine_points.parquet                              all mine property points (EPSG:4326), with countries
    truth/mine_polygons.parquet                            all true mine features (EPSG:4326), with districts
    truth/world_sites.parquet                              one row per true site: district, country, zone, area,
                                                           volumes
    truth/districts.parquet                                districts (EPSG:4326 outlines), zones, UTM boundaries
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import Point, box

from mtg.pipeline.errors import MtgError
from mtg.pipeline.sample import render_scene
from mtg.pipeline.sample.districts import DISTRICTS, District
from mtg.pipeline.sample.region import RegionGrid
from mtg.pipeline.sample.scene import Scene, build_scene
from mtg.pipeline.sample.stac import DEM_COLLECTION, S2_COLLECTION, write_catalog
from mtg.pipeline.sample.truth import mine_polygons, point_table, volume_table
from mtg.pipeline.table_io import atomic_folder

__all__ = ["SampleWorld", "ensure_sample_world", "write_sample_world"]

log = logging.getLogger(__name__)

#: File recording the parameters of a complete sample world in its folder.
WORLD_MARKER = "world.json"

WORLD_TEXT = ("mine-the-gap sample world",
              "Deterministic synthetic mining districts over the globe (several UTM zones, both hemispheres, one "
              "district across a UTM zone boundary, one above the Arctic circle): Sentinel-2 L2A time series and two "
              "DEM epochs per district, with ground truth under truth/.")


@dataclass(frozen=True)
class SampleWorld:
    """Where a written sample world lies.

    Attributes
    ----------
    root, catalog, truth : pathlib.Path
        The folder, its ``catalog.json`` and its ``truth`` folder.
    districts : tuple of str
        Keys of the districts, in order.
    time_range : tuple of str
        ISO dates of the first and last Sentinel-2 acquisition.
    """

    root: Path
    catalog: Path
    truth: Path
    districts: tuple[str, ...]
    time_range: tuple[str, str]


def zones_crossed(grid: RegionGrid) -> list[int]:
    """UTM zone numbers that the region's lon/lat box reaches."""
    west, _, east, _ = grid.bbox_lonlat
    return list(range(int((west + 180) // 6) + 1, int((east + 180) // 6) + 2))


def write_sample_world(out: Path, n: int = 6, seed: int = 0, size_km: float = 8.0, n_dates: int = 6,
                       progress: bool = False) -> SampleWorld:
    """Write the first ``n`` districts of the sample world to ``out`` (same arguments, same bytes).

    Parameters
    ----------
    out : pathlib.Path
        Output folder; created if missing; the world's own subfolders are replaced.
    n : int
        Number of districts, 1 to ``len(DISTRICTS)``; 4 or more cover three UTM zones, both hemispheres, a zone
        boundary and a district above 60 degrees.
    seed : int
        Random seed.
    size_km : float
        Side of each district in km.
    n_dates : int
        Sentinel-2 acquisitions per district (at least 6).
    progress : bool
        Log progress at INFO level.

    Returns
    -------
    SampleWorld
    """
    if not 1 <= n <= len(DISTRICTS):
        raise ValueError(f"the sample world has 1 to {len(DISTRICTS)} districts, got {n}")
    out = Path(out).resolve()
    level = logging.INFO if progress else logging.DEBUG
    for sub in (S2_COLLECTION, DEM_COLLECTION, "truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    s2_items, dem_items, grids, scenes = [], [], [], []
    for k, district in enumerate(DISTRICTS[:n]):
        scene = build_scene(seed=seed, size_km=size_km, n_dates=n_dates, district=district)
        log.log(level, "district %d of %d: %s (%s), %d mine sites, EPSG:%d", k + 1, n, district.name,
                district.country, len(scene.sites), scene.grid.epsg)
        s2, dem = render_scene(scene, out, out / "truth" / district.key, logging.DEBUG)
        s2_items += s2
        dem_items += dem
        grids.append(scene.grid)
        scenes.append(scene)
    catalog = write_catalog(out, grids, s2_items, dem_items, WORLD_TEXT)
    _write_world_truth(out / "truth", scenes)
    log.log(level, "wrote the sample world's STAC catalog %s (%d districts)", catalog, n)
    dates = [a.date for scene in scenes for a in scene.acquisitions]
    return SampleWorld(root=out, catalog=catalog, truth=out / "truth", districts=tuple(d.key for d in DISTRICTS[:n]),
                       time_range=(min(dates).isoformat(), max(dates).isoformat()))


def ensure_sample_world(out: Path, n: int = 6, seed: int = 0, size_km: float = 8.0, n_dates: int = 6,
                        progress: bool = False) -> SampleWorld:
    """Write the sample world into ``out`` (a temporary folder moved into place when complete), or reuse it when
    ``out`` already holds the same complete world (marker ``out/world.json`` with the parameters).

    Raises
    ------
    MtgError
        For a district count outside 1 to ``len(DISTRICTS)``.
    """
    out = Path(out).resolve()
    if not 1 <= n <= len(DISTRICTS):
        raise MtgError(f"--world {n}: the sample world has 1 to {len(DISTRICTS)} districts")
    params = {"n": n, "seed": seed, "size_km": size_km, "n_dates": n_dates}
    marker = out / WORLD_MARKER
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("parameters") == params:
            log.info("reusing the sample world in %s", out)
            return SampleWorld(root=out, catalog=out / "catalog.json", truth=out / "truth",
                               districts=tuple(recorded["districts"]), time_range=tuple(recorded["time_range"]))
    with atomic_folder(out) as tmp:
        world = write_sample_world(tmp, n=n, seed=seed, size_km=size_km, n_dates=n_dates, progress=progress)
        (tmp / WORLD_MARKER).write_text(json.dumps({"parameters": params, "districts": list(world.districts),
                                                    "time_range": list(world.time_range)}, indent=2) + "\n")
    return SampleWorld(root=out, catalog=out / "catalog.json", truth=out / "truth", districts=world.districts,
                       time_range=world.time_range)


def _write_world_truth(folder: Path, scenes: list[Scene]) -> None:
    points, polygons, sites, districts = [], [], [], []
    for scene in scenes:
        district: District = scene.district
        epsg = scene.grid.epsg
        pts = point_table(scene)
        pts.insert(0, "district", district.key)
        points.append(pts)
        poly = mine_polygons(scene)
        poly.insert(0, "district", district.key)
        polygons.append(poly.to_crs("EPSG:4326"))
        outlines = gpd.GeoSeries([s.outline() for s in scene.sites], crs=f"EPSG:{epsg}")
        lonlat = gpd.GeoSeries([Point(s.cx, s.cy) for s in scene.sites], crs=f"EPSG:{epsg}").to_crs("EPSG:4326")
        volumes = volume_table(scene).set_index("site_id")
        table = pd.DataFrame({
            "site_id": [s.site_id for s in scene.sites], "district": district.key, "district_name": district.name,
            "country": district.country, "kind": [s.kind for s in scene.sites], "grid_epsg": epsg,
            "utm_zone": [int((lon + 180) // 6) + 1 for lon in lonlat.x],
            "area_m2": outlines.area.to_numpy(),
        })
        table = table.join(volumes, on="site_id")
        sites.append(gpd.GeoDataFrame(table, geometry=lonlat.to_numpy(), crs="EPSG:4326"))
        outline = gpd.GeoSeries([box(*scene.grid.bounds)], crs=f"EPSG:{epsg}").to_crs("EPSG:4326")
        zones = zones_crossed(scene.grid)
        districts.append(gpd.GeoDataFrame({
            "district": [district.key], "name": [district.name], "country": [district.country],
            "grid_epsg": [epsg], "utm_zones": [zones], "crosses_zone_boundary": [len(zones) > 1],
            "n_sites": [len(scene.sites)], "cloudiness": [district.cloudiness],
        }, geometry=outline.to_numpy(), crs="EPSG:4326"))
    pd.concat(points, ignore_index=True).to_parquet(folder / "mine_points.parquet", index=False)
    pd.concat(polygons, ignore_index=True).to_parquet(folder / "mine_polygons.parquet", index=False)
    pd.concat(sites, ignore_index=True).to_parquet(folder / "world_sites.parquet", index=False)
    pd.concat(districts, ignore_index=True).to_parquet(folder / "districts.parquet", index=False)

