"""Verification: reported figures per site or company against the satellite-derived site indicators.

The reported table is a CSV (or Parquet) with one figure per row (``docs/reported-figures-example.csv``)::

    record_id, company, site_name, site_id, lon, lat, year, field, value, unit, source

Only ``field`` and ``value`` are required, plus ``site_id`` or ``lon``/``lat`` to find the site. Fields:

=====================  ==========================  ===============================================
field                  units                       compared with
=====================  ==========================  ===============================================
``area_km2``           km2 (default), ha, m2       ``area_km2`` (geodesic footprint area)
``excavated_m3``       m3 (default), Mm3           ``excavated_m3`` +/- ``excavated_sigma_m3``
``deposited_m3``,      m3 (default), Mm3           ``deposited_m3`` +/- ``deposited_sigma_m3``
``waste_m3``
``production_t``,      t, kt, Mt                   nothing: tonnes are not comparable with an area or
``waste_t``                                        a volume without a density or grade, and none is
                                                   assumed (flag ``not comparable``)
=====================  ==========================  ===============================================

Matching: by ``site_id`` when the indicators have it, else the site nearest to ``lon``/``lat`` (minimum geodesic
distance to its footprint, or to the ``lon``/``lat`` of a site of points only, :mod:`mtg.kernels.geometry_graph`)
within ``max_distance_m``; otherwise ``no match``. A figure *disagrees* when its relative difference
``(reported - derived) / derived`` exceeds ``tolerance`` and, for volumes, the difference also exceeds ``sigma``
times the derived 1-sigma error (both must hold: a large disagreement beyond the measurement error). Flags:
``agrees``, ``disagrees``, ``no match``, ``no estimate`` (matched, but the indicator is null) and ``not comparable``;
``evidence`` says why in words.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError
from mtg.pipeline.io.vectors import read_table
from mtg.pipeline.table_io import write_table

log = logging.getLogger(__name__)

#: field -> (indicator column, its 1-sigma column or None, SI unit, {unit: factor to the SI unit})
FIELDS: dict[str, tuple[str | None, str | None, str, dict[str, float]]] = {
    "area_km2": ("area_km2", None, "km2", {"km2": 1.0, "ha": 0.01, "m2": 1e-6}),
    "excavated_m3": ("excavated_m3", "excavated_sigma_m3", "m3", {"m3": 1.0, "mm3": 1e6}),
    "deposited_m3": ("deposited_m3", "deposited_sigma_m3", "m3", {"m3": 1.0, "mm3": 1e6}),
    "waste_m3": ("deposited_m3", "deposited_sigma_m3", "m3", {"m3": 1.0, "mm3": 1e6}),
    "production_t": (None, None, "t", {"t": 1.0, "kt": 1e3, "mt": 1e6}),
    "waste_t": (None, None, "t", {"t": 1.0, "kt": 1e3, "mt": 1e6}),
}
OUTPUT_COLUMNS = ["record", "record_id", "company", "site_name", "year", "field", "reported_value", "reported_unit",
                  "reported_si", "si_unit", "site_id", "match", "distance_m", "derived_value", "derived_sigma",
                  "difference", "relative_difference", "n_sigma", "flag", "evidence"]
_UNIT_ALIASES = {"km²": "km2", "km^2": "km2", "m²": "m2", "m^2": "m2", "m³": "m3", "m^3": "m3", "hectare": "ha",
                 "hectares": "ha", "million m3": "mm3", "mm³": "mm3", "tonnes": "t", "tons": "t", "tonne": "t",
                 "million t": "mt", "million tonnes": "mt", "thousand t": "kt"}


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or pd.isna(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a year read as 2023.0
    text = str(value).strip()
    return text or None


def read_reported(path: str | Path) -> pd.DataFrame:
    """The reported figures (CSV or Parquet), checked: known fields and units, numeric values, a way to match.

    Raises
    ------
    MtgError
        Naming the file, the line and the bad column or value.
    """
    path = Path(path)
    if not path.is_file():
        raise MtgError(f"reported table {path} does not exist")
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else \
            pd.read_csv(path, dtype={"site_id": str, "record_id": str}, encoding="utf-8-sig")
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise MtgError(f"reported table {path} is not readable: {err}") from None
    missing = [c for c in ("field", "value") if c not in table.columns]
    if missing:
        raise MtgError(f"reported table {path} lacks the column(s) {missing}; its columns are {list(table.columns)} "
                       f"(see docs/reported-figures-example.csv)")
    if "site_id" not in table.columns and not {"lon", "lat"} <= set(table.columns):
        raise MtgError(f"reported table {path} needs a site_id column or lon and lat columns to find the sites")
    table = table.reset_index(drop=True)
    line = (lambda k: f"line {k + 2}") if path.suffix.lower() != ".parquet" else (lambda k: f"row {k}")
    values = pd.to_numeric(table["value"], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=np.float64)))
    if bad.size:
        raise MtgError(f"reported table {path}: {line(bad[0])} has value {table['value'].iloc[bad[0]]!r}, not a "
                       f"number")
    table["value"] = values.astype(np.float64)
    for k, field in enumerate(table["field"]):
        name = (_text(field) or "").lower()
        if name not in FIELDS:
            raise MtgError(f"reported table {path}: {line(k)} has field {field!r}; known fields are {list(FIELDS)}")
        unit = _unit(table["unit"].iloc[k] if "unit" in table.columns else None, name)
        if unit not in FIELDS[name][3]:
            raise MtgError(f"reported table {path}: {line(k)} gives {name} in {table['unit'].iloc[k]!r}; use one of "
                           f"{list(FIELDS[name][3])}")
    for column, limit in (("lon", 180.0), ("lat", 90.0)):
        if column in table.columns:
            table[column] = _coordinates(table[column], limit, path, column, line)
    return table


def _coordinates(raw: pd.Series, limit: float, path: Path, column: str, line) -> pd.Series:  # noqa: ANN001
    """Degrees of a lon or lat column: blank cells are NaN (no location), anything else must be a number in range."""
    text = raw.map(_text)
    values = pd.to_numeric(text, errors="coerce").astype(np.float64)
    bad = np.flatnonzero(text.notna().to_numpy() & ~(np.abs(values.to_numpy()) <= limit))
    if bad.size:
        raise MtgError(f"reported table {path}: {line(bad[0])} has {column} {text.iloc[bad[0]]!r}, not a number of "
                       f"degrees in [-{limit:g}, {limit:g}]")
    return values


def _unit(value, field: str) -> str:
    unit = (_text(value) or FIELDS[field][2]).lower()
    return _UNIT_ALIASES.get(unit, unit)


_DISPLAY = {"mm3": "Mm3", "mt": "Mt"}


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3g} {_DISPLAY.get(unit, unit)}"


def _site_words(site: pd.Series) -> str:
    sources = site.get("sources")
    sources = ", ".join(map(str, sources)) if sources is not None and len(sources) else "no source"
    parts = [f"site {site['site_id']}"]
    if "n_polygons" in site.index:
        parts.append(f"{int(site['n_polygons'])} polygon(s), {int(site['n_points'])} point(s) from {sources}")
    else:
        parts.append(f"from {sources}")
    commodities = site.get("primary_commodities")
    if commodities is not None and len(commodities):
        parts.append("; ".join(map(str, commodities)))
    return f"{parts[0]}: " + "; ".join(parts[1:])


def _nearest_sites(indicators, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest site to each point (its footprint, or the ``lon``/``lat`` of a site of points only), and
    its minimum geodesic distance (m)."""
    import shapely

    from mtg.kernels.geometry_graph import geometry_pair_distances
    from mtg.pipeline.site_assembly import site_shapes

    geoms = list(site_shapes(indicators))
    n = len(geoms)
    best = np.full(lon.size, -1, dtype=np.int64)
    dist = np.full(lon.size, np.inf)
    if n == 0:
        return best, dist
    for k, (x, y) in enumerate(zip(lon, lat)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        d = geometry_pair_distances(geoms + [shapely.Point(x, y)], np.full(n, n), np.arange(n))
        best[k] = int(np.argmin(d))
        dist[k] = float(d[best[k]])
    return best, dist


def _no_match(site_id: str | None, n_sites: int, nearest: str | None, distance_m: float,
              max_distance_m: float) -> str:
    """Why a reported row matched no site, in words."""
    if n_sites == 0:
        return "there are no sites"
    unknown = f"site_id {site_id!r} is not among the {n_sites} sites" if site_id is not None else None
    if nearest is not None:
        far = (f"the nearest site ({nearest}) to its lon/lat lies {distance_m / 1000:.3g} km away, beyond "
               f"{max_distance_m / 1000:g} km")
        return f"{unknown} and {far}" if unknown else far
    if unknown:
        return f"{unknown} and no complete lon/lat is given"
    return "no site_id or complete lon/lat to match it by"


def verify_reported(reported: str | Path | pd.DataFrame, indicators, *, tolerance: float = 0.25,
                    sigma: float = 2.0, max_distance_m: float = 5_000.0) -> pd.DataFrame:
    """Compare reported figures with site indicators, one output row per reported row.

    Parameters
    ----------
    reported : path or pandas.DataFrame
        The reported table (:func:`read_reported`).
    indicators : path or geopandas.GeoDataFrame
        Site indicators (:func:`mtg.pipeline.indicators.site_indicators`; GeoParquet).
    tolerance : float
        Relative difference from which a figure disagrees (0.25: 25 %).
    sigma : float
        For volumes, the difference must also exceed this many derived 1-sigma errors.
    max_distance_m : float
        Farthest a reported location may lie from the site it is matched to.

    Returns
    -------
    pandas.DataFrame
        :data:`OUTPUT_COLUMNS`.
    """
    import geopandas as gpd

    if tolerance <= 0 or sigma <= 0 or max_distance_m < 0:
        raise MtgError("tolerance and sigma must be > 0 and the match distance >= 0")
    table = reported if isinstance(reported, pd.DataFrame) else read_reported(reported)
    if not isinstance(indicators, gpd.GeoDataFrame):
        indicators = read_table(indicators, "indicators")
    if "site_id" not in indicators.columns:
        raise MtgError("the indicators have no site_id column")
    indicators = indicators.assign(site_id=indicators["site_id"].astype(str)).reset_index(drop=True)
    position = {sid: k for k, sid in enumerate(indicators["site_id"])}
    lon = table["lon"].to_numpy(dtype=np.float64) if "lon" in table.columns else np.full(len(table), np.nan)
    lat = table["lat"].to_numpy(dtype=np.float64) if "lat" in table.columns else np.full(len(table), np.nan)
    ids = [_text(v) for v in table["site_id"]] if "site_id" in table.columns else [None] * len(table)
    by_id = [position.get(v) if v is not None else None for v in ids]
    need_location = np.array([b is None for b in by_id]) & np.isfinite(lon) & np.isfinite(lat)
    nearest, distance = np.full(len(table), -1), np.full(len(table), np.inf)
    if need_location.any():
        found, d = _nearest_sites(indicators, lon[need_location], lat[need_location])
        nearest[need_location], distance[need_location] = found, d

    rows = []
    for k in range(len(table)):
        record = table.iloc[k]
        field = str(record["field"]).strip().lower()
        column, sigma_column, si_unit, factors = FIELDS[field]
        unit = _unit(record.get("unit"), field)
        value = float(record["value"])
        si = value * factors[unit]
        who = ", ".join(t for t in (_text(record.get("company")), _text(record.get("site_name")),
                                    _text(record.get("year")), _text(record.get("source"))) if t)
        reported_words = f"reported {_fmt(value, unit)}" + (f" ({who})" if who else "")
        row = {"record": k, "record_id": _text(record.get("record_id")), "company": _text(record.get("company")),
               "site_name": _text(record.get("site_name")), "year": _text(record.get("year")), "field": field,
               "reported_value": value, "reported_unit": _DISPLAY.get(unit, unit), "reported_si": si,
               "si_unit": si_unit,
               "site_id": None, "match": "none", "distance_m": np.nan, "derived_value": np.nan,
               "derived_sigma": np.nan, "difference": np.nan, "relative_difference": np.nan, "n_sigma": np.nan}
        if by_id[k] is not None:
            site_index, how = by_id[k], "id"
        elif nearest[k] >= 0 and distance[k] <= max_distance_m:
            site_index, how = int(nearest[k]), "location"
        else:
            nearest_site = indicators["site_id"].iloc[nearest[k]] if nearest[k] >= 0 else None
            why = _no_match(ids[k], len(indicators), nearest_site, float(distance[k]), max_distance_m)
            rows.append({**row, "flag": "no match", "evidence": f"{reported_words}; no site matched: {why}"})
            continue
        site = indicators.iloc[site_index]
        row.update(site_id=site["site_id"], match=how, distance_m=0.0 if how == "id" else float(distance[k]))
        where = "matched by id" if how == "id" else f"matched by location, {row['distance_m']:.0f} m away"
        if column is None:
            rows.append({**row, "flag": "not comparable", "evidence": (
                f"{reported_words}; {_site_words(site)} ({where}): tonnes cannot be compared with the satellite "
                f"area or volume without a density or grade, and none is assumed")})
            continue
        derived = float(site[column]) if column in site.index and pd.notna(site[column]) else np.nan
        spread = float(site[sigma_column]) if sigma_column and sigma_column in site.index and \
            pd.notna(site[sigma_column]) else np.nan
        row.update(derived_value=derived, derived_sigma=spread)
        if not np.isfinite(derived):
            rows.append({**row, "flag": "no estimate", "evidence": (
                f"{reported_words}; {_site_words(site)} ({where}) has no {column} estimate")})
            continue
        difference = si - derived
        relative = difference / derived if derived != 0 else (0.0 if difference == 0 else np.inf)
        n_sigma = abs(difference) / spread if np.isfinite(spread) and spread > 0 else np.nan
        row.update(difference=difference, relative_difference=relative, n_sigma=n_sigma)
        beyond_tolerance = abs(relative) > tolerance
        beyond_error = (not np.isfinite(spread)) or spread == 0 or abs(difference) > sigma * spread
        disagrees = beyond_tolerance and (sigma_column is None or beyond_error)
        satellite = f"satellite {column} {_fmt(derived, si_unit)}" + (f" +/- {spread:.2g} (1 sigma)"
                                                                      if np.isfinite(spread) else "")
        if np.isfinite(relative):
            direction = f"reported is {abs(relative):.0%} {'above' if relative > 0 else 'below'}"
        else:
            direction = "the satellite estimate is 0"
        if disagrees:
            test = f"beyond the {tolerance:.0%} tolerance"
            if np.isfinite(n_sigma):
                test += f" and {sigma:g} sigma ({n_sigma:.1f} sigma)"
            elif sigma_column:
                test += " (the satellite estimate has no 1-sigma error to compare with)"
        else:
            test = f"within the {tolerance:.0%} tolerance" if not beyond_tolerance else \
                f"within {sigma:g} sigma of the satellite estimate ({n_sigma:.1f} sigma)"
        rows.append({**row, "flag": "disagrees" if disagrees else "agrees", "evidence": (
            f"{reported_words}; {satellite} for {_site_words(site)} ({where}): {direction}, {test}")})
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


@dataclass
class VerifyResult:
    """What :func:`write_verification` wrote."""

    parquet: Path
    csv: Path
    counts: dict[str, int]
    seconds: float


def write_verification(reported: str | Path, indicators: str | Path, out: str | Path, *, tolerance: float = 0.25,
                       sigma: float = 2.0, max_distance_m: float = 5_000.0) -> VerifyResult:
    """Write ``verification.parquet`` and ``verification.csv`` into the folder ``out`` (atomically)."""
    start = time.perf_counter()
    table = verify_reported(reported, indicators, tolerance=tolerance, sigma=sigma, max_distance_m=max_distance_m)
    parquet, csv = write_table(table, Path(out), "verification")
    counts = {str(k): int(v) for k, v in table["flag"].value_counts().items()}
    return VerifyResult(parquet=parquet, csv=csv, counts=counts, seconds=time.perf_counter() - start)
