"""Mine layout: sites made of open pits, waste dumps, tailings storage and plant/haul-road areas, and how they grow.

Pits, dumps, tailings and plant pads are star-shaped around their centre: the boundary radius is a rotated
super-ellipse perturbed by a few low harmonics. A pixel's *normalised radius* ``r`` (distance from the centre over
the boundary radius in that direction) is below 1 inside the final footprint, and the footprint at growth scale
``s`` is ``r <= s``, so polygons, rasters and relief all follow from the same function.

Sites have a life over the series (:meth:`Site.scale_at`, :meth:`Site.cover_scale_at`): most grow from their start
scale to their final footprint; the second site of a region opens mid-series (:data:`OPENING_DATE`), nothing before,
a box cut of :data:`OPENING_SCALE` then; the third is abandoned (:data:`ABANDONED_DATE`): it was worked before the
series over a disturbed area :data:`DISTURBED_SCALE` times its final footprint, whose margin is rehabilitated and
revegetates back to the final footprint by the last date. On the last date every site covers its final footprint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union

from mtg.pipeline.sample.districts import PILBARA, District
from mtg.pipeline.sample.region import RegionGrid

#: Layouts of the kinds of site (the roles of their features; the first is the main excavation).
SITE_KINDS = {
    "complex": ("pit", "dump", "dump", "tailings", "plant"),
    "pit_only": ("pit",),
    "pit_dump": ("pit", "dump"),
    "pit_dump_tailings": ("pit", "dump", "tailings", "plant"),
    "twin_pit": ("pit", "pit", "dump"),
    "strip": ("strip", "spoil", "spoil"),
    "strip_pit_only": ("strip",),
    "tailings_ponds": ("pit", "pond", "pond", "plant"),
    "alluvial": ("alluvial", "alluvial", "alluvial", "alluvial", "pond"),
    "quarry": ("quarry",),
    "quarry_plant": ("quarry", "plant"),
}
#: Feature type of each role (pits, dumps and tailings of other mine styles are pits, dumps and tailings too).
ROLE_TYPES = {"pit": "pit", "strip": "pit", "alluvial": "pit", "quarry": "pit", "dump": "dump", "spoil": "dump",
              "tailings": "tailings", "pond": "tailings", "plant": "other"}
HAUL_ROAD_WIDTH_M = 24.0
#: When the region's second site opens, and its pits' and dumps' scale then (a box cut).
OPENING_DATE = date(2022, 1, 15)
OPENING_SCALE = 0.35
#: When the region's third site stops working, and the scale of the area it had disturbed until then; the margin
#: beyond its final footprint revegetates linearly from then to the last date.
ABANDONED_DATE = date(2021, 12, 1)
DISTURBED_SCALE = 1.35
_BENCH_HEIGHT_M = 12.0


@dataclass(frozen=True)
class Feature:
    """One star-shaped mine feature.

    Attributes
    ----------
    feature_id : str
        Unique id, e.g. ``"S01-pit1"``.
    feature_type : str
        ``"pit"``, ``"dump"``, ``"tailings"`` or ``"other"`` (a plant pad and stockpiles).
    cx, cy : float
        Centre in UTM metres.
    a, b : float
        Semi-axes (m) of the final footprint before harmonics.
    rotation : float
        Rotation of the ``a`` axis, radians anticlockwise from east.
    exponent : float
        Super-ellipse exponent: 2 is an ellipse, larger is boxier.
    harmonics : tuple of (int, float, float)
        ``(order, relative amplitude, phase)`` perturbations of the boundary radius.
    relief_m : float
        Final depth of a pit, height of a dump, or fill thickness of tailings; 0 for plant pads.
    """

    feature_id: str
    feature_type: str
    cx: float
    cy: float
    a: float
    b: float
    rotation: float
    exponent: float
    harmonics: tuple[tuple[int, float, float], ...]
    relief_m: float

    @property
    def max_radius(self) -> float:
        """An upper bound of the boundary radius (m)."""
        return max(self.a, self.b) * (1.0 + sum(abs(amp) for _, amp, _ in self.harmonics))

    def boundary_radius(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius (m) of the final footprint in the directions ``theta`` (radians from east)."""
        t = theta - self.rotation
        p = self.exponent
        base = (np.abs(np.cos(t) / self.a) ** p + np.abs(np.sin(t) / self.b) ** p) ** (-1.0 / p)
        wobble = 1.0 + sum(amp * np.cos(k * theta + phase) for k, amp, phase in self.harmonics)
        return base * wobble

    def normalised_radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised radius at points ``(x, y)`` (broadcast): below 1 inside the final footprint."""
        dx = x - self.cx
        dy = y - self.cy
        return (np.hypot(dx, dy) / self.boundary_radius(np.arctan2(dy, dx))).astype(np.float32)

    def window(self, x: np.ndarray, y: np.ndarray, margin: float) -> tuple[slice, slice, np.ndarray] | None:
        """Row and column slices of the grid with pixel-centre coordinates ``x`` (columns) and ``y`` (rows) that
        hold the feature plus ``margin`` metres, and the normalised radius there; None when it lies outside."""
        reach = self.max_radius + margin
        cols = np.flatnonzero(np.abs(x - self.cx) <= reach)
        rows = np.flatnonzero(np.abs(y - self.cy) <= reach)
        if cols.size == 0 or rows.size == 0:
            return None
        rs, cs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        return rs, cs, self.normalised_radius(x[cs][None, :], y[rs][:, None])

    def polygon(self, scale: float = 1.0, n: int = 180) -> Polygon:
        """Footprint polygon at growth ``scale`` (1 = final)."""
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        radius = self.boundary_radius(theta) * scale
        return Polygon(np.column_stack([self.cx + radius * np.cos(theta), self.cy + radius * np.sin(theta)]))

    def relief(self, r: np.ndarray, scale: float) -> np.ndarray:
        """Elevation change (m) caused by the feature at growth ``scale``, given normalised radii ``r``.

        Pits are benched cones with a flat floor, deepening as they widen; dumps are benched, flat-topped mesas
        rising as they spread; tailings are flat fills within a fixed outline, thickening over time.
        """
        if scale <= 0:
            return np.zeros_like(r)
        if self.feature_type == "pit":
            u = np.clip((1.0 - r / scale) / 0.65, 0.0, 1.0)
            return -self.relief_m * scale * benches(u, max(2, round(self.relief_m / _BENCH_HEIGHT_M)))
        if self.feature_type == "dump":
            u = np.clip((1.0 - r / scale) / 0.45, 0.0, 1.0)
            return self.relief_m * scale * benches(u, max(1, round(self.relief_m / (1.5 * _BENCH_HEIGHT_M))))
        if self.feature_type == "tailings":
            return self.relief_m * (0.4 + 0.6 * scale) * np.clip((1.0 - r) / 0.1, 0.0, 1.0)
        return np.zeros_like(r)

    def grows(self) -> bool:
        """Whether the footprint grows over time (pits and dumps) or is fixed (tailings, plant)."""
        return self.feature_type in ("pit", "dump")


def benches(u: np.ndarray, n: int) -> np.ndarray:
    """A staircase from 0 (u = 0) to 1 (u = 1) with ``n`` flat benches joined by steeper faces."""
    v = u * n
    step = np.floor(v)
    face = np.clip((v - step - 0.55) / 0.45, 0.0, 1.0)
    return np.minimum((step + face) / n, 1.0)


@dataclass(frozen=True)
class HaulRoad:
    """A haul road between two features of a site, a feature of type ``"other"``."""

    feature_id: str
    polygon: Polygon

    feature_type = "other"


@dataclass(frozen=True)
class Site:
    """A mine site.

    Attributes
    ----------
    site_id : str
        ``"S01"``, ``"S02"``, ...
    kind : str
        A key of :data:`SITE_KINDS`.
    cx, cy : float
        Centre (the main pit) in UTM metres.
    radius : float
        Radius (m) of the circle that holds the site.
    start_scale : float
        Footprint scale of pits and dumps at the start of the record (the early DEM epoch).
    features : tuple of Feature
    roads : tuple of HaulRoad
    opens : datetime.date or None
        When a site that opens mid-series starts; None for a site already worked at the start.
    abandoned : datetime.date or None
        When a site stops working (its disturbed margin then revegetates); None for a working site.
    """

    site_id: str
    kind: str
    cx: float
    cy: float
    radius: float
    start_scale: float
    features: tuple[Feature, ...]
    roads: tuple[HaulRoad, ...]
    opens: date | None = None
    abandoned: date | None = None

    def scale_at(self, when: date, start: date, end: date) -> float:
        """Growth scale of the pits and dumps (their relief) on ``when``: ``start_scale`` up to ``start``, 1 from
        ``end`` (from :attr:`abandoned` for an abandoned site), linear between; for a site that :attr:`opens`
        mid-series 0 before it opens, then from :data:`OPENING_SCALE` to 1 at ``end``."""
        if self.opens is not None:
            return 0.0 if when < self.opens else _between(OPENING_SCALE, 1.0, _fraction(when, self.opens, end))
        stop = self.abandoned if self.abandoned is not None else end
        return self.start_scale + (1.0 - self.start_scale) * _fraction(when, start, stop)

    def cover_scale_at(self, when: date, start: date, end: date) -> float:
        """Scale of the ground the pits and dumps cover on ``when``: their growth scale (:meth:`scale_at`), except
        on an abandoned site, which covers :data:`DISTURBED_SCALE` times its final footprint until
        :attr:`abandoned`, revegetating linearly to its final footprint at ``end``. 0 before a site opens (none of
        its features, roads included, is on the ground then)."""
        if self.abandoned is None:
            return self.scale_at(when, start, end)
        return _between(DISTURBED_SCALE, 1.0, _fraction(when, self.abandoned, end))

    def outline(self) -> Polygon:
        """Union of the final footprints of all features."""
        return unary_union([f.polygon() for f in self.features] + [r.polygon for r in self.roads])


def _fraction(when: date, start: date, end: date) -> float:
    """How far ``when`` lies from ``start`` (0) to ``end`` (1), clipped to 0..1."""
    return min(1.0, max(0.0, (when - start).days / max(1, (end - start).days)))


def _between(a: float, b: float, f: float) -> float:
    """Linear interpolation from ``a`` (f = 0) to ``b`` (f = 1), exact at both ends."""
    return (1.0 - f) * a + f * b


def _feature(rng: np.random.Generator, fid: str, role: str, cx: float, cy: float, site_radius: float, shrink: float) -> Feature:
    """Draw the shape and relief of one feature of ``role`` (``pit``, ``dump``, ``tailings`` or ``plant``)."""
    sizes = {"pit": (0.26, 0.36), "dump": (0.18, 0.27), "tailings": (0.18, 0.25), "plant": (0.07, 0.1),
             "strip": (0.38, 0.48), "spoil": (0.3, 0.38), "pond": (0.22, 0.3), "alluvial": (0.12, 0.18),
             "quarry": (0.16, 0.24)}
    aspects = {"strip": (0.12, 0.2), "spoil": (0.14, 0.22)}  # long, narrow strip cuts and their spoil rows
    a = site_radius * rng.uniform(*sizes[role]) * shrink
    b = a * rng.uniform(*aspects.get(role, (0.55, 0.9)))
    harmonics = tuple((k, float(rng.uniform(-0.05, 0.05)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5))
    if role == "pit":
        relief = float(np.clip(0.45 * b, 25.0, 100.0))
    elif role == "dump":
        relief = float(np.clip(0.3 * b, 15.0, 60.0))
    elif role == "tailings":
        relief = float(rng.uniform(5.0, 15.0))
    elif role in ("strip", "spoil", "pond", "alluvial"):
        relief = float(rng.uniform(*{"strip": (25.0, 45.0), "spoil": (12.0, 25.0), "pond": (4.0, 10.0),
                                     "alluvial": (3.0, 8.0)}[role]))
    elif role == "quarry":
        relief = float(np.clip(0.4 * b, 20.0, 60.0))
    else:
        relief = 0.0
    return Feature(
        feature_id=fid,
        feature_type=ROLE_TYPES[role],
        cx=float(cx),
        cy=float(cy),
        a=float(a),
        b=float(b),
        rotation=float(rng.uniform(0, np.pi)),
        exponent={"pit": 2.0, "dump": 2.5, "tailings": 4.0, "plant": 6.0, "strip": 4.0, "spoil": 3.0, "pond": 4.0,
                  "alluvial": 2.0, "quarry": 6.0}[role],
        harmonics=harmonics if role != "plant" else (),
        relief_m=relief,
    )


def _site(rng: np.random.Generator, site_id: str, kind: str, cx: float, cy: float, radius: float) -> Site:
    """Lay out the features of one site inside its circle without overlaps, and link them by haul roads."""
    gap = max(40.0, 0.06 * radius)
    features: list[Feature] = []
    counts: dict[str, int] = {}
    for i, role in enumerate(SITE_KINDS[kind]):
        counts[role] = counts.get(role, 0) + 1
        fid = f"{site_id}-{role}{counts[role]}"
        shrink = 1.0
        for attempt in range(400):
            feat = _feature(rng, fid, role, cx, cy, radius, shrink)
            if i > 0:
                angle = rng.uniform(0, 2 * np.pi)
                dist = (features[0].max_radius + feat.max_radius + gap) * rng.uniform(1.0, 1.3)
                feat = replace(feat, cx=cx + dist * np.cos(angle), cy=cy + dist * np.sin(angle))
            inside = np.hypot(feat.cx - cx, feat.cy - cy) + feat.max_radius <= radius
            apart = all(np.hypot(feat.cx - o.cx, feat.cy - o.cy) >= feat.max_radius + o.max_radius + gap for o in features)
            if inside and apart:
                features.append(feat)
                break
            if attempt % 40 == 39:
                shrink *= 0.85
        else:
            raise RuntimeError(f"could not fit a {role} into site {site_id}")
    solids = unary_union([f.polygon() for f in features])
    roads = []
    for feat in features[1:]:
        pit = features[0]
        path = LineString([(pit.cx, pit.cy), (feat.cx, feat.cy)]).buffer(HAUL_ROAD_WIDTH_M / 2, cap_style="flat")
        road = path.difference(solids)
        if not road.is_empty and road.area > 0:
            road = max(getattr(road, "geoms", [road]), key=lambda g: g.area)
            roads.append(HaulRoad(feature_id=f"{site_id}-road{len(roads) + 1}", polygon=road))
    return Site(
        site_id=site_id,
        kind=kind,
        cx=float(cx),
        cy=float(cy),
        radius=float(radius),
        start_scale=float(rng.uniform(0.55, 0.8)),
        features=tuple(features),
        roads=tuple(roads),
    )


def site_count(grid: RegionGrid) -> int:
    """How many sites the region holds: about one per 55 km², from 3 to 10."""
    return int(np.clip(round((grid.size_m / 1000) ** 2 / 55.0), 3, 10))


def layout_sites(rng: np.random.Generator, grid: RegionGrid, keep_out: Polygon | None,
                 district: District = PILBARA) -> tuple[Site, ...]:
    """Place :func:`site_count` sites in the region, apart from each other and outside ``keep_out``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    grid : RegionGrid
        The region.
    keep_out : shapely.Polygon or None
        Where no site may lie (town, waterhole, creek).
    district : District
        The district's site kinds and id prefix; with ``centre_site`` its first site lies at the region centre.

    Returns
    -------
    tuple of Site
        Sites ``S01``... (with the district prefix); the first are of the district's ``lead_kinds`` (for the
        single region: a full complex, a pit-only site and a pit with a dump), the rest drawn from its ``kinds``.
        The second site opens on :data:`OPENING_DATE`, the third is abandoned on :data:`ABANDONED_DATE`.
    """
    n = site_count(grid)
    left, bottom, right, top = grid.bounds
    radius = min(1100.0, grid.size_m / 6.5)
    lead = list(district.lead_kinds[:n])
    kinds = lead + list(rng.choice(sorted(district.kinds), size=max(0, n - len(lead))))
    for _ in range(8):
        centres: list[tuple[float, float]] = [((left + right) / 2, (bottom + top) / 2)] if district.centre_site else []
        for _ in range(4000):
            if len(centres) == n:
                break
            margin = radius * 1.02
            x = rng.uniform(left + margin, right - margin)
            y = rng.uniform(bottom + margin, top - margin)
            if keep_out is not None and keep_out.intersects(Point(x, y).buffer(radius, 16)):
                continue
            if all(np.hypot(x - px, y - py) >= 2.05 * radius for px, py in centres):
                centres.append((x, y))
        if len(centres) == n:
            break
        radius *= 0.9
    else:
        raise RuntimeError(f"could not place {n} mine sites in a {grid.size_m:.0f} m region")
    sites = [_site(rng, district.prefixed(f"S{i + 1:02d}"), str(kind), x, y, radius)
             for i, (kind, (x, y)) in enumerate(zip(kinds, centres))]
    sites[1] = replace(sites[1], opens=OPENING_DATE)
    sites[2] = replace(sites[2], abandoned=ABANDONED_DATE)
    return tuple(sites)
