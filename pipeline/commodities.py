"""Harmonised commodity names: raw commodity strings of point data sets mapped through a lookup table.

The table has the layout of Maus et al.'s harmonisation tables (``harmonisation_all_materials.csv``,
``harmonisation_metals_coal.csv``, ``harmonisation_dcrm.csv`` of vwmaus/mining-spatial-data-integration, staged in
``shared/data/maus_commodity_harmonisation``): a CSV with at least the columns ``material`` (a raw name) and
``material_harmonized`` (its canonical name). Rules:

* Raw names match case-insensitively, with runs of whitespace collapsed ("thermal coal" matches "Thermal coal").
* A harmonised value holding commas names several commodities ("Zinc-Lead" -> "Zinc", "Lead").
* An empty harmonised value, or "Not relevant", means the material is deliberately left out of the grouping: it maps
  to no commodity (counted in :attr:`CommodityHarmoniser.dropped`).
* A raw name missing from the table is *kept*, lower-cased and stripped, and reported: logged once per name.

Without a table (``table=None``) every raw name is kept lower-cased and stripped and nothing is reported: the
shared table is not part of the package, so a user without it still gets consistent (if unharmonised) names.

Raw cells are split on ``;``, ``,`` and ``|`` (ICMM writes ``lead;silver;zinc``).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtg.pipeline.errors import MtgError

log = logging.getLogger(__name__)

RAW_COLUMN = "material"
HARMONISED_COLUMN = "material_harmonized"
EXCLUDED = "not relevant"
SEPARATORS = re.compile(r"[;,|]")


def normalise(name: str) -> str:
    """The matching key of a raw name: stripped, inner whitespace collapsed, case-folded."""
    return " ".join(str(name).split()).casefold()


def split_commodities(value) -> list[str]:
    """The stripped, non-empty names in one raw cell (``None``/NaN give none), split on ``;``, ``,`` and ``|``.

    A cell may also hold a list of names (a Parquet list column); each element is split the same way.
    """
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [name for element in value for name in split_commodities(element)]
    return [part.strip() for part in SEPARATORS.split(str(value)) if part.strip()]


def name_list(value) -> list[str]:
    """The distinct names of one table cell, in order: a list cell's elements, a text cell's parts
    (:func:`split_commodities`: ``"gold;copper"`` and a CSV's ``;``-joined lists), none for a null cell."""
    if not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value):
        return []
    return list(dict.fromkeys(split_commodities(value)))


@dataclass(frozen=True)
class CommodityTable:
    """A loaded harmonisation table: normalised raw name -> harmonised names (empty tuple: left out)."""

    path: Path
    mapping: dict[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.mapping)


def load_commodity_table(path: str | Path) -> CommodityTable:
    """Read a harmonisation table (CSV with ``material`` and ``material_harmonized`` columns).

    Raises
    ------
    MtgError
        If the file is missing or unreadable, lacks a column, or maps one raw name (after normalisation) to two
        different harmonised names.
    """
    path = Path(path)
    if not path.is_file():
        raise MtgError(f"commodity table {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise MtgError(f"commodity table {path} is not a readable CSV: {err}") from None
    missing = [c for c in (RAW_COLUMN, HARMONISED_COLUMN) if c not in frame.columns]
    if missing:
        raise MtgError(f"commodity table {path} lacks the column(s) {missing}; it has {list(frame.columns)} "
                       f"(expected the layout of the Maus et al. harmonisation tables)")
    mapping: dict[str, tuple[str, ...]] = {}
    first_line: dict[str, int] = {}
    for line, (raw, harmonised) in enumerate(zip(frame[RAW_COLUMN], frame[HARMONISED_COLUMN]), start=2):
        key = normalise(raw)
        if not key:
            continue
        names = tuple(n.strip() for n in harmonised.split(",") if n.strip())
        if len(names) == 1 and names[0].casefold() == EXCLUDED:
            names = ()
        if key in mapping and mapping[key] != names:
            raise MtgError(f"commodity table {path}: {raw!r} on line {line} maps to {list(names)} but line "
                           f"{first_line[key]} maps the same name to {list(mapping[key])}")
        mapping.setdefault(key, names)
        first_line.setdefault(key, line)
    return CommodityTable(path=path, mapping=mapping)


@dataclass
class CommodityHarmoniser:
    """Maps raw commodity names to harmonised ones; ``table=None`` keeps raw names lower-cased and stripped.

    Attributes
    ----------
    unknown : collections.Counter
        Raw names (lower-cased) missing from the table, with how often they were met.
    dropped : collections.Counter
        Raw names the table leaves out (empty or "Not relevant"), with counts.
    """

    table: CommodityTable | None = None
    unknown: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    _logged: set = field(default_factory=set, repr=False)

    @classmethod
    def from_path(cls, path: str | Path | None) -> CommodityHarmoniser:
        return cls(load_commodity_table(path) if path is not None else None)

    def harmonise_name(self, raw: str) -> list[str]:
        """The harmonised names of one raw name (several, one, or none)."""
        key = normalise(raw)
        if not key:
            return []
        if self.table is None:
            return [" ".join(str(raw).split()).lower()]
        if key in self.table.mapping:
            names = list(self.table.mapping[key])
            if not names:
                self.dropped[key] += 1
            return names
        self.unknown[key] += 1
        return [" ".join(str(raw).split()).lower()]

    def harmonise(self, values: Iterable) -> list[str]:
        """The distinct harmonised names of some raw cells (each split on separators), in order of appearance."""
        out: dict[str, None] = {}
        for value in values:
            for raw in split_commodities(value):
                for name in self.harmonise_name(raw):
                    out.setdefault(name, None)
        return list(out)

    def harmonise_rows(self, frame: pd.DataFrame, columns: Iterable[str]) -> list[list[str]]:
        """Harmonised names per row of ``frame`` from the given raw columns; logs new unknown names once."""
        columns = list(columns)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise MtgError(f"commodity column(s) {missing} not found; the columns are {list(frame.columns)}")
        rows = [self.harmonise(cells) for cells in frame[columns].itertuples(index=False, name=None)] if columns \
            else [[] for _ in range(len(frame))]
        self.report_unknown()
        return rows

    def report_unknown(self) -> None:
        """Log the unknown names not logged before (one message; each name is logged once)."""
        if self.table is None:
            return
        new = sorted(set(self.unknown) - self._logged)
        if new:
            self._logged.update(new)
            log.warning("%d commodity name(s) not in %s kept as given (lower-cased): %s", len(new),
                        self.table.path, ", ".join(f"{n} ({self.unknown[n]})" for n in new))
