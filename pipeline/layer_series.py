"""Per-site area series from footprint layers of several periods: the vector form of :mod:`mtg.pipeline.timeline`,
for published yearly layers such as Amazon Mining Watch's.

Each period is one or more polygon files (``--footprints-period 2021=FILE``). With ``cumulative`` the layers hold
only what was new in their period (Amazon Mining Watch's yearly website layers: 2018 is the baseline, each later
layer the new detections), so a period's footprint is the union of its layers and all earlier ones; otherwise each
period's layers are its whole footprint. Polygons go to sites as the indicators assign ``--footprints-before`` and
``--footprints-after`` (:func:`mtg.pipeline.indicators.epoch_areas`: through the members where the layer was
linked, else to the site each overlaps most), and a site's area is the geodesic area of the union of its polygons.

The series has the timeline's columns (:data:`mtg.pipeline.timeline.SERIES_COLUMNS`): ``area_m2``; ``new_m2``
from the growth of a cumulative series (NaN for whole-footprint layers and the first period); ``area_sigma_m2``,
``missing_share`` and ``revegetated_m2`` are NaN, since published layers carry neither uncertainty nor coverage.
The summary is the timeline's (:func:`mtg.pipeline.timeline.summary_table`, onset at any area above 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError
from mtg.pipeline.timeline import SERIES_COLUMNS, Period, summary_table


def parse_periods(specs: list[str]) -> dict[str, list[Path]]:
    """``LABEL=FILE`` options into files by period label, periods in time order (a label may repeat).

    Raises
    ------
    MtgError
        Naming a spec without ``=`` or with a label that is not a year (``2021``) or quarter (``2025Q3``).
    """
    periods: dict[str, list[Path]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        try:
            pd.Period(label.strip())
        except ValueError:
            label = ""
        if not sep or not label.strip() or not path.strip():
            raise MtgError(f"--footprints-period {spec!r}: give PERIOD=FILE, PERIOD a year (2021) or quarter (2025Q3)")
        periods.setdefault(label.strip(), []).append(Path(path.strip()))
    return dict(sorted(periods.items(), key=lambda item: pd.Period(item[0]).start_time))


def period_of(label: str) -> Period:
    """The :class:`~mtg.pipeline.timeline.Period` of a label (no acquisitions)."""
    p = pd.Period(label)
    return Period(label, p.start_time.normalize(), p.end_time.normalize(), np.array([], dtype=np.int64))


def layer_series(sites: Any, members: Any, periods: dict[str, dict[str, Any]], *,
                 cumulative: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
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
    rows = []
    labels = list(periods)
    for site_id, row in frame.iterrows():
        for k, label in enumerate(labels):
            p = period_of(label)
            grown = row[label] - row[labels[k - 1]] if k and cumulative else np.nan
            rows.append({"site_id": str(site_id), "period": label, "start": p.start.date().isoformat(),
                         "end": p.end.date().isoformat(), "area_m2": float(row[label]), "area_sigma_m2": np.nan,
                         "missing_share": np.nan, "new_m2": grown, "revegetated_m2": np.nan})
    series = pd.DataFrame(rows, columns=SERIES_COLUMNS)
    if series.empty:
        raise MtgError(f"no polygon of the period layers ({', '.join(labels)}) overlaps a site")
    return series, summary_table(series, [period_of(label) for label in labels], 1e-9), measured
