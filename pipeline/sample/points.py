"""Mine-occurrence points, as a mineral-deposit database would list them: names, commodities, and the site they
belong to (or none, for prospects). Points sit near, not exactly on, the pits, as database coordinates do."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely.geometry import Point, Polygon
from shapely.ops import unary_union

from mtg.pipeline.sample.districts import PILBARA, District
from mtg.pipeline.sample.region import RegionGrid
from mtg.pipeline.sample.sites import Site


@dataclass(frozen=True)
class MinePoint:
    """One mine or prospect in the point database.

    Attributes
    ----------
    point_id : str
        ``"P001"``, ...
    name : str
    commodities : tuple of str
    site_id : str or None
        The site the point belongs to, or None for a prospect with no workings.
    x, y : float
        Position in UTM metres.
    """

    point_id: str
    name: str
    commodities: tuple[str, ...]
    site_id: str | None
    x: float
    y: float


def mine_points(rng: np.random.Generator, grid: RegionGrid, sites: tuple[Site, ...], keep_out: Polygon,
                district: District = PILBARA) -> tuple[MinePoint, ...]:
    """The point database of the region.

    The first site has two points (its main pit and its feature farthest north or south of it; one when it has a
    single feature), the last site has none, every other site has one;
    two prospects with no site lie in open country.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    grid : RegionGrid
        The region.
    sites : tuple of Site
        The mine sites (at least 3).
    keep_out : shapely.Polygon
        Where prospects must not be (town, water), in addition to the sites.
    district : District
        Names, commodities and id prefix of the points (the country is the district's).

    Returns
    -------
    tuple of MinePoint
    """
    entries: list[tuple[str, tuple[str, ...], str | None, float, float]] = []
    for i, site in enumerate(sites[:-1]):
        name = district.names[i % len(district.names)]
        commodities = district.commodities[i % len(district.commodities)]
        pits = [f for f in site.features if f.feature_type == "pit"]
        jitter = 0.25 * pits[0].b
        if i == 0 and len(site.features) > 1:
            other = max(site.features[1:], key=lambda f: abs(f.cy - pits[0].cy))
            north, south = sorted([pits[0], other], key=lambda f: -f.cy)
            entries.append((f"{name} North", commodities, site.site_id, north.cx, north.cy))
            entries.append((f"{name} South", commodities, site.site_id, south.cx, south.cy))
        else:
            dx, dy = rng.uniform(-jitter, jitter, size=2)
            entries.append((name, commodities, site.site_id, pits[0].cx + dx, pits[0].cy + dy))
    left, bottom, right, top = grid.bounds
    blocked = unary_union([keep_out] + [s.outline().buffer(200.0) for s in sites])
    prospects = 0
    for _ in range(2000):
        if prospects == 2:
            break
        x = rng.uniform(left + 100, right - 100)
        y = rng.uniform(bottom + 100, top - 100)
        if not blocked.contains(Point(x, y)):
            prospects += 1
            name = district.names[(len(sites) + prospects) % len(district.names)]
            entries.append((f"{name} Prospect", ("lithium",) if prospects == 1 else ("gold",), None, x, y))
    return tuple(MinePoint(district.prefixed(f"P{k + 1:03d}"), n, c, s, float(x), float(y))
                 for k, (n, c, s, x, y) in enumerate(entries))
