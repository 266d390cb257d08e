"""The Python API of mine-the-gap: every stage as a function on in-memory, lazily loaded data.

Installed as ``mtg.api``. The stages take and return xarray objects (dask-backed, nothing read until asked) and
GeoDataFrames, and know no files; readers and writers live in :mod:`mtg.pipeline.io`. ``mtg run`` and the
``mtg`` commands are thin layers over these same functions, with the same options (:mod:`mtg.pipeline.config`).

Stages
    :func:`segment` (reflectance cube -> lazy mine probabilities), :func:`footprints` (probabilities -> mine
    polygons), :func:`link` (polygons + mine points -> sites and members), :func:`volumes` (two DEM epochs +
    sites -> lazy dh, site volumes, waste deposits), :func:`land_use` (sites -> area by commodity and country),
    :func:`indicators` (everything -> one row per site), :func:`timeline` (a cube's time axis -> footprints
    per year and per-site area series, onset, expansion and revegetation).
Inputs
    :func:`open_cube` (a Zarr cube, local or ``s3://``), :func:`read_dem` (GeoTIFF/COG, Zarr ``#EPOCH``, STAC
    item, kerchunk references), :func:`read_points`, :func:`read_polygons`, :func:`read_sites`.
Options
    :class:`SegmentOptions`, :class:`LinkOptions`, :class:`VolumeOptions`, :class:`LandUseOptions`,
    :class:`TimelineOptions`: each stage
    takes ``options=`` or the same names as keyword arguments.

Example
-------
>>> import geopandas as gpd, pandas as pd, shapely
>>> from mtg.api import land_use, link
>>> pits = gpd.GeoDataFrame({"feature_type": ["pit", "dump"]}, crs="EPSG:4326",
...                         geometry=[shapely.box(118.0, -22.0, 118.01, -21.99),
...                                   shapely.box(118.011, -22.0, 118.02, -21.99)])
>>> mines = pd.DataFrame({"lon": [118.03], "lat": [-21.995], "Primary Commodity": ["Iron ore"]})
>>> linked = link(pits, mines, cut="2km")
>>> len(linked.sites), linked.sites["n_points"].tolist()
(1, [1])
>>> land_use(linked).summary["linked_share"]
1.0
"""

from mtg.pipeline.config import LandUseOptions, LinkOptions, SegmentOptions, TimelineOptions, VolumeOptions
from mtg.pipeline.dem_inputs import Dem, read_dem
from mtg.pipeline.indicators import indicators
from mtg.pipeline.io import read_points, read_polygons, read_sites
from mtg.pipeline.landuse import LandUseTables, land_use
from mtg.pipeline.link import LinkedSites, link, point_clusters
from mtg.pipeline.segment import footprints, segment
from mtg.pipeline.timeline import SiteTimeline, Timeline, timeline
from mtg.pipeline.volume import Volumes, volumes
from mtg.pipeline.zarr_store import open_cube

__all__ = ["Dem", "LandUseOptions", "LandUseTables", "LinkOptions", "LinkedSites", "SegmentOptions", "SiteTimeline",
           "Timeline", "TimelineOptions", "VolumeOptions", "Volumes", "footprints", "indicators", "land_use", "link",
           "open_cube", "point_clusters", "read_dem", "read_points", "read_polygons", "read_sites", "segment",
           "timeline", "volumes"]
