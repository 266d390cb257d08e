"""When the sample's Sentinel-2 scenes were taken: dates, platforms, processing baselines, sun angles and sky roles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np

#: First and last acquisition dates; the series spans the 2022-01-25 processing-baseline change.
FIRST_DATE = date(2021, 6, 15)
LAST_DATE = date(2023, 5, 26)
#: Overpass time (UTC) of relative orbit 3 over Newman, about 10:14 local time.
SENSING_TIME = time(2, 13, 41, 24000)
RELATIVE_ORBIT = 3
#: Processing baselines by start date; from 04.00 on, L2A DNs carry BOA_ADD_OFFSET = -1000.
BASELINES = ((date(2022, 12, 6), "05.09"), (date(2022, 1, 25), "04.00"), (date.min, "03.01"))
OFFSET_BASELINE = "04.00"
BOA_ADD_OFFSET = -1000


@dataclass(frozen=True)
class Acquisition:
    """One Sentinel-2 acquisition of the sample tile.

    Attributes
    ----------
    index : int
        Position in the series, from 0.
    sensing : datetime
        Sensing time (UTC).
    platform : str
        ``"Sentinel-2A"`` or ``"Sentinel-2B"``.
    baseline : str
        Processing baseline, e.g. ``"03.01"``.
    sky : str
        What the sky does on this date: ``"clear"``, ``"cloudy"``, ``"cirrus"``, ``"scattered"`` or ``"edge"``
        (scattered clouds plus a swath edge with no data).
    cloud_fraction : float
        Target fraction of the scene under opaque cloud.
    solar_zenith, solar_azimuth : float
        Sun angles in degrees (azimuth clockwise from north).
    """

    index: int
    sensing: datetime
    platform: str
    baseline: str
    sky: str
    cloud_fraction: float
    solar_zenith: float
    solar_azimuth: float

    @property
    def date(self) -> date:
        """Calendar date of sensing."""
        return self.sensing.date()

    @property
    def boa_offset(self) -> int:
        """The DN offset added on encoding: 1000 from baseline 04.00 on, else 0."""
        return -BOA_ADD_OFFSET if self.baseline >= OFFSET_BASELINE else 0


def processing_baseline(day: date) -> str:
    """The Sentinel-2 L2A processing baseline in force on ``day``."""
    return next(name for start, name in BASELINES if day >= start)


def solar_angles(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar zenith and azimuth (degrees, azimuth clockwise from north) by the NOAA low-precision formulas.

    Parameters
    ----------
    when : datetime
        Time, timezone-aware UTC.
    lon, lat : float
        Position in degrees.

    Returns
    -------
    (float, float)
        Zenith and azimuth in degrees.
    """
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g) - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g))
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    true_solar_min = hours * 60 + eqtime + 4 * lon
    hour_angle = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = math.degrees(math.atan2(math.sin(hour_angle), math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi))) + 180
    return math.degrees(zen), az % 360


def earth_sun_factor(day: date) -> float:
    """``s2:reflectance_conversion_factor``: the inverse squared Earth-Sun distance (AU) on ``day``."""
    doy = day.timetuple().tm_yday
    return 1.0 / (1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))) ** 2


def sky_roles(n_dates: int, rng: np.random.Generator, cloudiness: float = 0.0) -> list[tuple[str, float]]:
    """The sky on each date as ``(role, opaque cloud fraction)``.

    The first and last dates are clear (clean pre- and post-baseline references); date 1 is cloudy with shadows,
    date 2 has thin cirrus, the middle date has a swath edge, and the rest draw scattered clouds or clear sky.
    With ``cloudiness`` c > 0 (0..1) the other dates are scattered-cloud dates with probability 0.6 + 0.4 c and
    their cloud fractions reach 0.35 + 0.4 c.
    """
    if not 0.0 <= cloudiness <= 1.0:
        raise ValueError(f"cloudiness must be between 0 and 1, got {cloudiness}")
    roles: list[tuple[str, float]] = []
    clear_below, top = 0.4 * (1.0 - cloudiness), 0.3 + 0.4 * cloudiness
    for i in range(n_dates):
        draw = float(rng.uniform(0.0, 1.0))
        if i in (0, n_dates - 1):
            roles.append(("clear", 0.0))
        elif i == 1:
            roles.append(("cloudy", round(0.25 + 0.15 * draw, 3)))
        elif i == 2:
            roles.append(("cirrus", round(0.02 + 0.03 * draw, 3)))
        elif i == n_dates // 2:
            roles.append(("edge", round(0.03 + 0.05 * draw, 3)))
        elif draw < clear_below:
            roles.append(("clear", 0.0))
        else:
            roles.append(("scattered", round(0.05 + top * (draw - clear_below) / (1.0 - clear_below), 3)))
    return roles


def acquisition_series(n_dates: int, rng: np.random.Generator, lon: float, lat: float,
                       cloudiness: float = 0.0) -> tuple[Acquisition, ...]:
    """``n_dates`` acquisitions spread evenly over :data:`FIRST_DATE` .. :data:`LAST_DATE` on the 5-day revisit.

    Parameters
    ----------
    n_dates : int
        Number of acquisitions, at least 6.
    rng : numpy.random.Generator
        Source of randomness for the sky.
    lon, lat : float
        Scene centre, for the sun angles.
    cloudiness : float
        How cloudy the district is (:func:`sky_roles`).

    Returns
    -------
    tuple of Acquisition
        In time order; Sentinel-2B on the first date, the platforms alternating every 5 days as on orbit.
    """
    if n_dates < 6:
        raise ValueError(f"n_dates must be at least 6, got {n_dates}")
    cycles = (LAST_DATE - FIRST_DATE).days // 5
    series = []
    for i, (sky, frac) in enumerate(sky_roles(n_dates, rng, cloudiness)):
        step = round(i * cycles / (n_dates - 1))
        day = FIRST_DATE + timedelta(days=5 * step)
        sensing = datetime.combine(day, SENSING_TIME, tzinfo=timezone.utc)
        zen, az = solar_angles(sensing, lon, lat)
        series.append(Acquisition(
            index=i,
            sensing=sensing,
            platform="Sentinel-2B" if step % 2 == 0 else "Sentinel-2A",
            baseline=processing_baseline(day),
            sky=sky,
            cloud_fraction=frac,
            solar_zenith=zen,
            solar_azimuth=az,
        ))
    return tuple(series)
