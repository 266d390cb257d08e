"""Commodity harmonisation: the real Maus et al. tables on ICMM's commodity columns, and a tiny table."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from conftest import shared_file
from mtg.pipeline.commodities import CommodityHarmoniser, load_commodity_table, split_commodities
from mtg.pipeline.errors import MtgError

ICMM_COMMODITIES = ["Primary Commodity", "Secondary Commodity", "Other Commodities"]


def test_split_commodities():
    assert split_commodities("lead;silver; zinc") == ["lead", "silver", "zinc"]
    assert split_commodities(" gold | copper,, ") == ["gold", "copper"]
    assert split_commodities(None) == [] and split_commodities(float("nan")) == [] and split_commodities("") == []


def test_tiny_table(tmp_path, caplog):
    table = tmp_path / "t.csv"
    table.write_text('material,material_harmonized\nThermal coal,Coal\nZinc-Lead,"Zinc,Lead"\nSteel,\n'
                     'Sand,Not relevant\nGold,Gold\n')
    h = CommodityHarmoniser.from_path(table)
    assert len(h.table) == 5
    assert h.harmonise(["THERMAL  coal", "zinc-lead;gold"]) == ["Coal", "Zinc", "Lead", "Gold"]
    assert h.harmonise(["steel", "sand"]) == []
    assert set(h.dropped) == {"steel", "sand"}
    frame = pd.DataFrame({"a": ["Unobtainium", "gold", None], "b": ["unobtainium;Kryptonite", None, None]})
    with caplog.at_level(logging.WARNING):
        rows = h.harmonise_rows(frame, ["a", "b"])
        h.harmonise_rows(frame, ["a", "b"])  # the same unknown names again: not logged again
    assert rows == [["unobtainium", "kryptonite"], ["Gold"], []]
    assert h.unknown == {"unobtainium": 4, "kryptonite": 2}
    warnings = [r for r in caplog.records if "not in" in r.getMessage()]
    assert len(warnings) == 1 and "kryptonite" in warnings[0].getMessage()


def test_without_table_names_are_lower_cased_and_stripped():
    h = CommodityHarmoniser()
    assert h.harmonise([" Thermal Coal ;Gold", "gold"]) == ["thermal coal", "gold"]
    assert not h.unknown


@pytest.mark.parametrize("text, message", [
    ("raw,harmonised\na,b\n", "lacks the column"),
    ("material,material_harmonized\nGold,Gold\ngold,Silver\n", "line 3 maps to"),
])
def test_bad_tables(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MtgError, match=message):
        load_commodity_table(path)
    with pytest.raises(MtgError, match="does not exist"):
        load_commodity_table(tmp_path / "none.csv")


@pytest.mark.parametrize("name", ["harmonisation_all_materials.csv", "harmonisation_metals_coal.csv",
                                  "harmonisation_dcrm.csv"])
def test_real_tables_load(name):
    table = load_commodity_table(shared_file("maus_commodity_harmonisation", name))
    assert 190 < len(table) <= 203
    assert table.mapping["thermal coal"] == ("Coal",) and table.mapping["bauxite"] == ("Aluminium",)


def test_real_table_on_icmm_commodities():
    path = shared_file("maus_commodity_harmonisation", "harmonisation_all_materials.csv")
    icmm = pd.read_csv(shared_file("icmm_global_mining_dataset", "icmm_global_mining_dataset_external.csv"),
                       dtype=str)
    h = CommodityHarmoniser.from_path(path)
    table = load_commodity_table(path)
    assert table.mapping["zinc-lead"] == ("Zinc", "Lead") and table.mapping["steel"] == ()
    rows = h.harmonise_rows(icmm, ICMM_COMMODITIES)
    assert len(rows) == len(icmm)
    first = icmm.iloc[0]  # Pato: gold, silver
    assert (first["Primary Commodity"], first["Secondary Commodity"]) == ("gold", "silver")
    assert rows[0] == ["Gold", "Silver"]
    names = {n for r in rows for n in r}
    assert {"Coal", "Iron", "Copper", "Platinum Group Element"} <= names
    assert "thermal coal" not in names and "iron ore" not in names
    # names the table lacks (e.g. "barium") are kept, lower-cased, and counted
    assert "barium" in h.unknown and "barium" in names
    assert all(n in names for n in h.unknown)


def test_list_cells_are_split_element_by_element():
    import numpy as np

    from mtg.pipeline.commodities import split_commodities

    assert split_commodities(["copper", "gold; silver"]) == ["copper", "gold", "silver"]
    assert split_commodities(np.array(["iron ore"], dtype=object)) == ["iron ore"]
    assert split_commodities([]) == []
