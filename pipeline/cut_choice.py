"""The cut chosen per site: balance the area without a commodity against the area with several.

Per-site cut (``choose_cut``). One hierarchy is cut at a grid of heights ``h_1 < ... < h_k = H`` (the members file
records the partitions). Each cluster ``c`` at ``H`` is split at every ``h`` into sub-sites ``s`` with area ``a_s``
and ``n_s`` primary commodities; with ``A = sum a_s``::

    u(h) = sum(a_s for n_s = 0) / A                  # share of the area without a commodity
    m(h) = sum(a_s * (n_s - 1) for n_s >= 1) / A     # extra commodity assignments, area-weighted
    d(h) = sqrt((u / max_h u)^2 + (m / max_h m)^2)   # a share whose maximum over the grid is 0 counts as 0

and ``c`` is cut at the ``h`` of least ``d`` (the smallest such ``h`` on ties): the point nearest the ideal
(nothing unassigned, nothing split) in the plane of the two normalised shares. These are Maus et al.'s local
optimisation's quantities (``perc_area_unknown`` and ``perc_area_multi_count`` of ``02-optimize-cluster-threshold.R``
in vwmaus/mining-spatial-data-integration, there with ``H`` = 10 km and a 1 km grid); that script writes the
distance as ``sqrt(m')^2 + u'^2``, which we read as the Euclidean distance intended. Clusters without polygons
keep ``H``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError
from mtg.pipeline.linker import cut_column
from mtg.pipeline.site_assembly import FootprintAreas

OBJECTIVE = ("per cluster at H, the cut h of least sqrt((u/max u)^2 + (m/max m)^2): u = area share without a "
             "primary commodity, m = area-weighted share of extra commodity assignments (n - 1); ties: smallest h")


def cut_objective(members: pd.DataFrame, levels: Sequence[float], footprints: FootprintAreas) -> pd.DataFrame:
    """Unassigned and multi-commodity shares of every cluster at ``H = max(levels)`` at every level.

    Parameters
    ----------
    members : pandas.DataFrame
        The members table of :func:`mtg.pipeline.link.link_sites`, with a ``cluster_<metres>`` column per level.
    levels : sequence of float
        Candidate cuts in metres; the largest is ``H``.
    footprints : FootprintAreas
        Polygon geometries by member index.

    Returns
    -------
    pandas.DataFrame
        ``cluster`` (label at ``H``), ``cut_m``, ``n_sites``, ``area_km2``, ``unknown_km2``, ``multi_km2``
        (``sum(a * (n - 1))``), ``unknown_share``, ``multi_share`` and ``distance`` (module docstring).
    """
    levels = sorted(float(v) for v in levels)
    if not levels:
        raise MtgError("choosing the cut per site needs at least one level")
    missing = [cut_column(v) for v in levels if cut_column(v) not in members.columns]
    if missing:
        recorded = sorted(c for c in members.columns if str(c).startswith("cluster_"))
        raise MtgError(f"the members file records no partition at {missing}; it has {recorded}: link again with "
                       f"mtg link --levels ...")
    kinds = members["kind"].to_numpy()
    primary = members["primary_commodities"].to_numpy()
    top = members[cut_column(levels[-1])].to_numpy()
    rows = []
    for level in levels:
        labels = members[cut_column(level)].to_numpy()
        order = np.argsort(labels, kind="stable")
        for index in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if labels.size else []:
            if np.unique(top[index]).size != 1:
                raise MtgError(f"the partition at {level:g} m is not nested in the one at {levels[-1]:g} m: the "
                               f"members file is inconsistent; link again")
            poly = index[kinds[index] == "polygon"]
            pts = index[kinds[index] == "point"]
            area = footprints.area(poly) if poly.size else 0.0
            n = len({name for k in pts for name in primary[k]})
            rows.append((int(top[index[0]]), level, area, area if n == 0 else 0.0, area * max(n - 1, 0)))
    frame = pd.DataFrame(rows, columns=["cluster", "cut_m", "area_km2", "unknown_km2", "multi_km2"])
    frame["n_sites"] = 1
    frame = frame.groupby(["cluster", "cut_m"], sort=True).sum().reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["unknown_share"] = np.where(frame["area_km2"] > 0, frame["unknown_km2"] / frame["area_km2"], 0.0)
        frame["multi_share"] = np.where(frame["area_km2"] > 0, frame["multi_km2"] / frame["area_km2"], 0.0)
    scale = frame.groupby("cluster")[["unknown_share", "multi_share"]].transform("max")
    u = np.where(scale["unknown_share"] > 0, frame["unknown_share"] / scale["unknown_share"].where(
        scale["unknown_share"] > 0, 1.0), 0.0)
    m = np.where(scale["multi_share"] > 0, frame["multi_share"] / scale["multi_share"].where(
        scale["multi_share"] > 0, 1.0), 0.0)
    frame["distance"] = np.hypot(u, m)
    return frame[["cluster", "cut_m", "n_sites", "area_km2", "unknown_km2", "multi_km2", "unknown_share",
                  "multi_share", "distance"]]


def choose_site_cuts(members: pd.DataFrame, levels: Sequence[float], footprints: FootprintAreas | None,
                     objective: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut each cluster at ``H = max(levels)`` at the level that balances unassigned and multi-commodity area.

    Parameters
    ----------
    members, levels, footprints
        As for :func:`cut_objective` (``footprints`` may be None with ``objective``).
    objective : pandas.DataFrame, optional
        Its result, when already computed.

    Returns
    -------
    labels : numpy.ndarray
        int64 site label of each member (sites numbered 0, 1, ... in order of their first member).
    cut_m : numpy.ndarray
        float64 chosen cut of each member's site. Clusters without polygons keep ``H``.
    """
    levels = sorted(float(v) for v in levels)
    frame = cut_objective(members, levels, footprints) if objective is None else objective
    has_area = frame.groupby("cluster")["area_km2"].transform("max") > 0
    best = frame[has_area].sort_values(["cluster", "distance", "cut_m"], kind="stable").groupby("cluster").head(1)
    chosen = dict(zip(best["cluster"].astype(int), best["cut_m"].astype(float)))
    top = members[cut_column(levels[-1])].to_numpy()
    cut_m = np.array([chosen.get(int(t), levels[-1]) for t in top], dtype=np.float64)
    keys = np.empty(len(members), dtype=np.int64)
    for level in levels:
        at = cut_m == level
        keys[at] = members[cut_column(level)].to_numpy()[at]
    pairs = pd.Series(list(zip(cut_m, keys)))
    labels = pd.factorize(pairs)[0].astype(np.int64)
    return labels, cut_m
