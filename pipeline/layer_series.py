"""Per-site area series from footprint layers of several periods: the vector form of :mod:`mtg.pipeline.timeline`,
for published yearly layers such as Amazon Mining Watch's.

Each period is one or more polygon files (``--footprints-period 2021=FILE``). With ``cumulative`` the layers hold
only what was new in their period (Amazon Mining Watch's yearly website layers: 2018 is the baseline, each later
layer the new detections), so a period's footprint is the union of its layers and all earlier ones; otherwise each
period's layers are its whole footprint. Polygons go to sites as the indicators assign ``--footprints-before`` and
``--footprints-after`` (:func:`mtg.pipeline.indicators.epoch_areas`: through the members where the layer was
linked, else to the site each overlaps most), and a site's area is the geodesic area of the union of its polygons.

The series has the timeline's columns (:data:`mtg.pipeline.timeline.SERIES_COLUMNS`): ``area_m2``; ``new_m2``
from the growth of a cumulative series (NaN for whole-footprint layers and the first period); ``area_sigma_m2``
and ``revegetated_m2`` are NaN, since published layers carry no uncertainty. A layer says where mines are, not
where its makers looked: without a coverage a site absent from a period's layer counts as 0 there and
``missing_share`` is NaN. With a coverage of the period (``--coverage-period 2021=FILE``: polygons of the ground
the layer's producer mapped, e.g. its monitoring area or cloud-free mosaic), ``missing_share`` is the share of
the site's footprint (geodesic area; a site of points only: its location) outside the coverage, and a site wholly
outside it has a missing area (NaN), not 0, as an unseen period of :mod:`mtg.pipeline.timeline`.
The summary is the timeline's (:func:`mtg.pipeline.timeline.summary_table`, onset at any area above 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError
from mtg.pipeline.timeline import SERIES_COLUMNS, Period, summary_table


def parse_periods(specs: list[str], option: str = "--footprints-period") -> dict[str, list[Path]]:
    """``LABEL=FILE`` options into files by period label, periods in time order (a label may repeat).

    Raises
    ------
    MtgError
        Naming the ``option`` and a spec without ``=`` or with a label that is not a year (``2021``) or quarter
        (``2025Q3``).
    """
    periods: dict[str, list[Path]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        try:
            pd.Period(label.strip())
        except ValueError:
            label = ""
        if not sep or not label.strip() or not path.strip():
            raise MtgError(f"{option} {spec!r}: give PERIOD=FILE, PERIOD a year (2021) or quarter (2025Q3)")
        periods.setdefault(label.strip(), []).append(Path(path.strip()))
    return dict(sorted(periods.items(), key=lambda item: pd.Period(item[0]).start_time))


def period_of(label: str) -> Period:
    """The :class:`~mtg.pipeline.timeline.Period` of a label (no acquisitions)."""
    p = pd.Period(label)
    return Period(label, p.start_time.normalize(), p.end_time.normalize(), np.array([], dtype=np.int64))


def coverage_shares(sites: Any, coverage: Any) -> pd.Series:
    """The share of each site inside ``coverage`` (by ``site_id``): the geodesic area of its footprint inside over
    its area; a site of points only (no footprint): 1 when its ``lon``/``lat`` lies inside, else 0.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        Sites in EPSG:4326 (footprint or null geometry, ``lon``, ``lat``).
    coverage : shapely geometry
        The covered ground, EPSG:4326.
    """
    import geopandas as gpd
    import shapely

    from mtg.pipeline.tiling import geodesic_areas

    has_footprint = (sites.geometry.notna() & ~sites.geometry.is_empty).to_numpy()
    points = shapely.points(sites["lon"].to_numpy(), sites["lat"].to_numpy())
    shares = coverage.covers(points).astype(np.float64)  # sites of points only: their location
    footprints = sites[has_footprint]
    whole = np.asarray(geodesic_areas(footprints))
    inside = np.asarray(geodesic_areas(gpd.GeoDataFrame(geometry=footprints.geometry.intersection(coverage),
                                                         crs=footprints.crs)))
    with np.errstate(divide="ignore", invalid="ignore"):  # a footprint of no area: where its point lies
        shares[has_footprint] = np.where(whole > 0, np.minimum(inside / whole, 1.0),
                                         coverage.covers(footprints.geometry.representative_point().to_numpy()))
    return pd.Series(shares, index=sites["site_id"].astype(str).to_numpy(), dtype=np.float64)


def layer_series(sites: Any, members: Any, periods: dict[str, dict[str, Any]], *, cumulative: bool,
                 coverage: dict[str, Any] | None = None,
                 min_area_m2: float = 1e-9) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Per-site areas of each period's footprint layers (module docstring).

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        The sites layer (``site_id`` and footprints in EPSG:4326).
    members : pandas.DataFrame, optional
        The members (footprint layers among their sources are assigned through them).
    periods : dict
        By period label in time order, the period's polygon layers by name.
    cumulative : bool
        The layers hold only what was new in their period.
    coverage : dict, optional
        By period label, the ground its layers cover (a GeoDataFrame of polygons, any CRS); periods left out have
        no known coverage.
    min_area_m2 : float
        The onset is the first period whose area reaches this (default: any area).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame, list of dict)
        The series (one row per site with a footprint in any period, and period), the summary
        (:func:`mtg.pipeline.timeline.summary_table`) and each period's layers as measured (accumulated when
        ``cumulative``).
    """
    from mtg.pipeline.indicators import epoch_areas

    measured, so_far = [], {}
    areas = {}
    for label, layers in periods.items():
        so_far = {**so_far, **layers} if cumulative else dict(layers)
        measured.append(dict(so_far))
        areas[label] = epoch_areas(sites, members, so_far) * 1e6
    frame = pd.DataFrame(areas)
    frame = frame[frame.notna().any(axis=1)].fillna(0.0)
    frame.index = frame.index.astype(str)
    labels = list(periods)
    missing = pd.DataFrame(np.nan, index=frame.index, columns=labels)
    unknown = sorted(set(coverage or {}) - set(labels))
    if unknown:
        raise MtgError(f"coverage given for period(s) {unknown} without footprint layers ({', '.join(labels)})")
    for label, covered in (coverage or {}).items():
        site_rows = sites[sites["site_id"].astype(str).isin(frame.index)]
        shares = coverage_shares(site_rows, covered.to_crs("EPSG:4326").union_all())
        missing[label] = 1.0 - shares.reindex(frame.index)
        frame.loc[missing[label] >= 1.0, label] = np.nan  # wholly outside: not seen, not 0
    rows = []
    for site_id, row in frame.iterrows():
        for k, label in enumerate(labels):
            p = period_of(label)
            grown = row[label] - row[labels[k - 1]] if k and cumulative else np.nan
            rows.append({"site_id": str(site_id), "period": label, "start": p.start.date().isoformat(),
                         "end": p.end.date().isoformat(), "area_m2": float(row[label]), "area_sigma_m2": np.nan,
                         "missing_share": float(missing.loc[site_id, label]), "new_m2": grown,
                         "revegetated_m2": np.nan})
    series = pd.DataFrame(rows, columns=SERIES_COLUMNS)
    if series.empty:
        raise MtgError(f"no polygon of the period layers ({', '.join(labels)}) overlaps a site")
    return series, summary_table(series, [period_of(label) for label in labels], min_area_m2), measured
