"""Random lon/lat point sets for the graph and clustering tests."""

from __future__ import annotations

import numpy as np
from pyproj import Geod

GEOD = Geod(ellps="WGS84")


def clustered_lonlat(
    seed: int, n: int, spread_m: float, regime: str, per_cluster: int = 12, centre_span: float = 180.0
) -> tuple[np.ndarray, np.ndarray]:
    """Points in clusters of geodesic radius ``spread_m``, about a fifth of them duplicated.

    ``regime`` puts the cluster centres anywhere (within ``centre_span`` degrees of longitude and, up to 85,
    of latitude from 0), on the antimeridian, or near a pole (some points exactly on it). ``per_cluster`` is
    the mean number of points per cluster.
    """
    rng = np.random.default_rng(seed)
    k = max(1, n // per_cluster)
    if regime == "antimeridian":
        c_lon, c_lat = rng.choice([-180.0, 180.0], k) + rng.normal(0, 0.02, k), rng.uniform(-80, 80, k)
    elif regime == "pole":
        c_lon, c_lat = rng.uniform(-180, 180, k), rng.choice([-1.0, 1.0], k) * rng.uniform(89.7, 90.0, k)
    else:
        c_lon, c_lat = rng.uniform(-centre_span, centre_span, k), rng.uniform(-min(85, centre_span),
                                                                              min(85, centre_span), k)
    c = rng.integers(0, k, n)
    lon, lat, _ = GEOD.fwd(c_lon[c], c_lat[c], rng.uniform(0, 360, n), rng.uniform(0, spread_m, n))
    lon, lat = np.asarray(lon), np.asarray(lat)
    if regime == "pole":  # points exactly on a pole, with arbitrary longitudes
        on_pole = rng.random(n) < 0.1
        lat[on_pole] = np.sign(c_lat[c][on_pole]) * 90.0
    dup = rng.random(n) < 0.2
    src = rng.integers(0, n, n)
    lon[dup], lat[dup] = lon[src[dup]], lat[src[dup]]
    return lon, lat
