"""The mining districts of the sample world: where each lies, what it mines and how its mines look.

The single sample region is the first district (:data:`PILBARA`, no id prefix); the sample world
(:func:`mtg.pipeline.sample.world.write_sample_world`) holds the first ``N`` of :data:`DISTRICTS`, chosen so that any
four of them already cover three UTM zones, both hemispheres, a district across a UTM zone boundary and one above
60 degrees latitude.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class District:
    """One synthetic mining district.

    Attributes
    ----------
    key : str
        Short id; prefixes the ids of its sites (``"ERM-S01"``), points and items. Empty for the single region.
    name : str
        Human-readable name.
    country : str
        Country of its mine points, spelt as ICMM's ``Country`` column spells it.
    lon, lat : float
        Centre of the district (degrees).
    lead_kinds : tuple of str
        Kinds (keys of :data:`mtg.pipeline.sample.sites.SITE_KINDS`) of the first sites, in order.
    kinds : tuple of str
        Kinds the other sites are drawn from.
    commodities : tuple of tuple of str
        Commodities of the mine points, cycled over the sites.
    names : tuple of str
        Names of the mine points, cycled.
    cloudiness : float
        0 for the single region's sky; up to 1 for a district under frequent cloud (fewer clear dates, larger
        cloud fractions; the first and last dates stay clear).
    centre_site : bool
        Put the first site at the centre of the district (the district across a UTM boundary thereby has a mine on
        the boundary).
    """

    key: str
    name: str
    country: str
    lon: float
    lat: float
    lead_kinds: tuple[str, ...]
    kinds: tuple[str, ...]
    commodities: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]
    cloudiness: float = 0.0
    centre_site: bool = False

    def prefixed(self, ident: str) -> str:
        """``ident`` with the district prefix (``"ERM-S01"``), unchanged for the single region."""
        return f"{self.key}-{ident}" if self.key else ident


PILBARA = District(
    key="", name="Pilbara iron ore (Newman)", country="Australia", lon=119.73, lat=-23.36,
    lead_kinds=("complex", "pit_only", "pit_dump"),
    kinds=("complex", "pit_dump", "pit_dump_tailings", "pit_only", "twin_pit"),
    commodities=(("iron ore",), ("iron ore",), ("manganese",), ("copper", "gold"), ("iron ore",), ("gold",)),
    names=("Kanjara", "Wirrilla", "Red Gully", "Bindi Creek", "Coondarra", "Yarrie Ridge", "Mulga Flat",
           "Spinifex Hill", "Karri Downs", "Ironstone Bluff", "Ngarla Range", "Mirrin Well", "Jindabyne Rocks",
           "Tallering Gap"),
)

#: The districts of the sample world, in the order ``mtg sample --world N`` takes them.
DISTRICTS: tuple[District, ...] = (
    District(key="PIL", name=PILBARA.name, country=PILBARA.country, lon=PILBARA.lon, lat=PILBARA.lat,
             lead_kinds=PILBARA.lead_kinds, kinds=PILBARA.kinds, commodities=PILBARA.commodities, names=PILBARA.names),
    # Centred on the UTM zone 35/36 boundary (30 deg E): strip coal of the Mpumalanga highveld.
    District(key="ERM", name="Ermelo strip coal", country="South Africa", lon=30.0, lat=-26.45,
             lead_kinds=("strip", "strip", "strip_pit_only"), kinds=("strip", "strip_pit_only"),
             commodities=(("coal",),), names=("Usutu", "Witkrans", "Vaalbank", "Driefontein", "Klipfontein"),
             centre_site=True),
    # Above the Arctic circle: an open-pit copper mine with large tailings ponds.
    District(key="AIT", name="Gällivare copper and tailings", country="Sweden", lon=20.95, lat=67.1,
             lead_kinds=("tailings_ponds", "pit_dump", "tailings_ponds"), kinds=("tailings_ponds", "pit_dump"),
             commodities=(("copper", "gold", "silver"), ("copper",), ("iron ore",)),
             names=("Aitik", "Liikavaara", "Salmijärvi", "Leveäniemi", "Vassara")),
    # Alluvial gold along rivers of the Amazon lowlands, under frequent cloud.
    District(key="MDD", name="Madre de Dios alluvial gold", country="Peru", lon=-70.35, lat=-12.9,
             lead_kinds=("alluvial", "alluvial", "alluvial"), kinds=("alluvial",),
             commodities=(("gold",),), names=("Huepetuhe", "Delta 1", "La Pampa", "Laberinto", "Mazuko"),
             cloudiness=0.7),
    # Dimension-stone and aggregate quarries.
    District(key="CAR", name="Apuan Alps quarries", country="Italy", lon=10.15, lat=44.08,
             lead_kinds=("quarry", "quarry", "quarry_plant"), kinds=("quarry", "quarry_plant"),
             commodities=(("marble",), ("limestone",)), names=("Colonnata", "Fantiscritti", "Torano", "Gioia")),
    # The Zambian Copperbelt: pits with dumps and tailings dams.
    District(key="ZCB", name="Copperbelt copper and cobalt", country="Zambia", lon=27.85, lat=-12.55,
             lead_kinds=("pit_dump_tailings", "complex", "pit_dump"), kinds=("pit_dump_tailings", "complex"),
             commodities=(("copper", "cobalt"), ("copper",)), names=("Nchanga", "Chingola", "Konkola", "Kansanshi"),
             cloudiness=0.3),
)
