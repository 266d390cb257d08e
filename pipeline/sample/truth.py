"""Ground truth written under ``DIR/truth/``: mine polygons, site volumes, mine points, land cover, DEM
registration and an acquisition log."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import Point, box

from mtg.pipeline.sample.cog import write_cog
from mtg.pipeline.sample.dem import site_volumes
from mtg.pipeline.sample.landcover import cover_code_table
from mtg.pipeline.sample.scene import EARLY_DEM_DATE, LATE_DEM_DATE, Scene
from mtg.pipeline.sample.sentinel2 import WrittenScene
from mtg.pipeline.sample.terrain import DEM_RES, FINE_RES


def mine_polygons(scene: Scene) -> gpd.GeoDataFrame:
    """Final footprints of all mine features (pits, dumps, tailings, plant pads and haul roads) in the UTM CRS."""
    rows = []
    for site in scene.sites:
        for feat in site.features:
            rows.append((site.site_id, feat.feature_id, feat.feature_type, feat.polygon()))
        for road in site.roads:
            rows.append((site.site_id, road.feature_id, road.feature_type, road.polygon))
    frame = gpd.GeoDataFrame(rows, columns=["site_id", "feature_id", "feature_type", "geometry"], crs=f"EPSG:{scene.grid.epsg}")
    frame.insert(3, "area_m2", frame.geometry.area)
    return frame


def yearly_footprints(scene: Scene) -> gpd.GeoDataFrame:
    """Footprints of all mine features in each calendar year of the series, in the UTM CRS.

    A year's footprint is the ground covered on the year's last acquisition date (what a latest-clear-view
    composite of the year shows): pits and dumps at their cover scale, tailings, plant pads and haul roads whole
    once their site is open, clipped to the region. A site not yet open has no rows in that year; an abandoned
    site's rows shrink as its disturbed margin revegetates. The last year's footprints are
    :func:`mine_polygons`.

    Returns
    -------
    geopandas.GeoDataFrame
        ``site_id``, ``feature_id``, ``feature_type``, ``year``, ``date`` (ISO), ``area_m2``, ``geometry``.
    """
    region = box(*scene.grid.bounds)
    last_of_year = {a.date.year: a.date for a in scene.acquisitions}
    rows = []
    for year, day in sorted(last_of_year.items()):
        scales = scene.cover_scales(day)
        for site in scene.sites:
            scale = scales[site.site_id]
            if scale <= 0:
                continue
            shapes = [(f.feature_id, f.feature_type, f.polygon(scale if f.grows() else 1.0)) for f in site.features]
            shapes += [(r.feature_id, r.feature_type, r.polygon) for r in site.roads]
            for feature_id, feature_type, polygon in shapes:
                rows.append((site.site_id, feature_id, feature_type, year, day.isoformat(),
                             polygon.intersection(region)))
    frame = gpd.GeoDataFrame(rows, columns=["site_id", "feature_id", "feature_type", "year", "date", "geometry"],
                             crs=f"EPSG:{scene.grid.epsg}")
    frame.insert(5, "area_m2", frame.geometry.area)
    return frame


def volume_table(scene: Scene) -> pd.DataFrame:
    """Per-site true volumes (m3): excavated and deposited (both positive) and net = deposited - excavated."""
    volumes = site_volumes(scene)
    frame = pd.DataFrame(
        [(sid, exc, dep) for sid, (exc, dep) in volumes.items()], columns=["site_id", "excavated_m3", "deposited_m3"]
    )
    frame["net_m3"] = frame["deposited_m3"] - frame["excavated_m3"]
    return frame


def point_table(scene: Scene) -> gpd.GeoDataFrame:
    """The mine-point database in EPSG:4326; ``site_id`` is null for prospects; ``country`` is the points' country."""
    lon, lat = scene.grid.to_lonlat([p.x for p in scene.points], [p.y for p in scene.points])
    return gpd.GeoDataFrame(
        {
            "point_id": [p.point_id for p in scene.points],
            "name": [p.name for p in scene.points],
            "commodities": [list(p.commodities) for p in scene.points],
            "site_id": pd.array([p.site_id for p in scene.points], dtype="string"),
            "country": [scene.district.country] * len(scene.points),
        },
        geometry=[Point(round(float(x), 7), round(float(y), 7)) for x, y in zip(lon, lat)],
        crs="EPSG:4326",
    )


#: The sample's reported figures, as a company would publish them (:mod:`mtg.pipeline.verify`'s layout).
REPORTED_FIGURES = "reported_figures.csv"


def reported_figures(polygons: gpd.GeoDataFrame, volumes: pd.DataFrame) -> pd.DataFrame:
    """Reported figures of every sample site, from its truth: the footprint area (km2, the union of its mine
    polygons) and the volume excavated between the DEM epochs (Mm3), placed at a point inside the footprint."""
    rows = []
    excavated = volumes.set_index("site_id")["excavated_m3"]
    for site_id, group in polygons.groupby("site_id", sort=True):
        footprint = group.geometry.union_all()
        where = gpd.GeoSeries([footprint.representative_point()], crs=polygons.crs).to_crs(4326).iloc[0]
        common = {"company": "Sample Mining (synthetic)", "site_name": f"sample site {site_id}",
                  "lon": round(where.x, 6), "lat": round(where.y, 6), "year": LATE_DEM_DATE.year,
                  "source": "the sample's truth"}
        rows.append({"record_id": f"{site_id}-area", **common, "field": "area_km2",
                     "value": round(footprint.area / 1e6, 4), "unit": "km2"})
        if site_id in excavated.index:
            rows.append({"record_id": f"{site_id}-excavated", **common, "field": "excavated_m3",
                         "value": round(float(excavated[site_id]) / 1e6, 4), "unit": "Mm3"})
    return pd.DataFrame(rows, columns=["record_id", "company", "site_name", "lon", "lat", "year", "field", "value",
                                       "unit", "source"])


def registration_record(scene: Scene) -> dict[str, object]:
    """The true misregistration of the late DEM epoch relative to the early one."""
    reg = scene.registration
    return {
        "reference_epoch": "2021",
        "reference_date": EARLY_DEM_DATE.isoformat(),
        "shifted_epoch": "2023",
        "shifted_date": LATE_DEM_DATE.isoformat(),
        "pixel_size_m": DEM_RES,
        "shift_x_m": reg.shift_x_m,
        "shift_y_m": reg.shift_y_m,
        "shift_x_px": round(reg.shift_x_m / DEM_RES, 6),
        "shift_y_px": round(reg.shift_y_m / DEM_RES, 6),
        "vertical_bias_m": reg.bias_m,
        "convention": "late_observed(x, y) = late_true(x - shift_x_m, y - shift_y_m) + vertical_bias_m + noise; "
                      "x east, y north, in the UTM CRS; to co-register, move the late DEM by (-shift_x_m, -shift_y_m) "
                      "and subtract vertical_bias_m",
    }


def acquisition_log(written: list[WrittenScene]) -> list[dict[str, object]]:
    """One record per Sentinel-2 item: date, baseline, DN offset, sky role and SCL percentages."""
    return [
        {
            "index": w.acquisition.index,
            "item_id": w.names.item_id,
            "datetime": w.acquisition.sensing.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": w.acquisition.platform,
            "processing_baseline": w.acquisition.baseline,
            "dn_offset": w.acquisition.boa_offset,
            "sky": w.acquisition.sky,
            "cloud_cover_pct": w.statistics["eo:cloud_cover"],
            "cloud_shadow_pct": w.statistics["s2:cloud_shadow_percentage"],
            "thin_cirrus_pct": w.statistics["s2:thin_cirrus_percentage"],
            "nodata_pct": w.statistics["s2:nodata_pixel_percentage"],
        }
        for w in written
    ]


def write_truth(scene: Scene, folder: Path, written: list[WrittenScene]) -> Path:
    """Write all truth files into ``folder``; returns ``folder``.

    Files: ``mine_polygons.parquet``, ``yearly_footprints.parquet`` (:func:`yearly_footprints`),
    ``site_volumes.parquet``, ``mine_points.parquet``, ``landcover.tif`` (10 m
    classes on the last acquisition date; the code table is in its tags), ``dem_registration.json``,
    ``acquisitions.json`` and :data:`REPORTED_FIGURES` (:func:`reported_figures`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    polygons, volumes = mine_polygons(scene), volume_table(scene)
    polygons.to_parquet(folder / "mine_polygons.parquet", index=False)
    yearly_footprints(scene).to_parquet(folder / "yearly_footprints.parquet", index=False)
    volumes.to_parquet(folder / "site_volumes.parquet", index=False)
    reported_figures(polygons, volumes).to_csv(folder / REPORTED_FIGURES, index=False)
    point_table(scene).to_parquet(folder / "mine_points.parquet", index=False)
    final = scene.acquisitions[-1].date
    write_cog(folder / "landcover.tif", scene.cover(final).classes, scene.grid.transform(FINE_RES), scene.grid.epsg, 0,
              resampling="nearest", tags={**cover_code_table(), "DATE": final.isoformat(), "NODATA_CLASS": "0"})
    (folder / "dem_registration.json").write_text(json.dumps(registration_record(scene), indent=2) + "\n")
    (folder / "acquisitions.json").write_text(json.dumps(acquisition_log(written), indent=2) + "\n")
    return folder
