"""The worked example of docs/landuse-worked-example.md: its first command block, run as written, gives its tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, SHARED_DATA, shared_file

DOC = ROOT / "docs" / "landuse-worked-example.md"


def block(text: str, name: str) -> str:
    """The fenced bash block after the marker ``<!-- block: NAME -->``."""
    match = re.search(rf"<!-- block: {name} -->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"no command block {name!r} in {DOC}"
    return match.group(1)


def table(text: str, name: str) -> pd.DataFrame:
    """The markdown table after the marker ``<!-- table: NAME -->``, as text cells."""
    match = re.search(rf"<!-- table: {name} -->\s*\n((?:\|.*\|\n)+)", text)
    assert match, f"no table {name!r} in {DOC}"
    lines = [line.strip().strip("|").split("|") for line in match.group(1).strip().splitlines()]
    header, body = [c.strip() for c in lines[0]], lines[2:]
    return pd.DataFrame([[c.strip() for c in row] for row in body], columns=header)


def km2(cell: str) -> float:
    return float(cell.replace(",", ""))


def percent(cell: str) -> float:
    return float(cell.replace("%", "").strip()) / 100


@pytest.mark.slow
def test_documented_commands_reproduce_the_documented_tables(tmp_path):
    for folder in ("icmm_global_mining_dataset", "maus_tang_combined_demo", "amazon_mining_watch",
                   "stdl_mineral_extraction_sites", "maus_commodity_harmonisation"):
        shared_file(folder)
    text = DOC.read_text()
    env = {**os.environ, "D": str(SHARED_DATA), "OUT": str(tmp_path / "example"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-e", "-c", block(text, "main")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = tmp_path / "example" / "landuse"

    documented = table(text, "by-commodity")
    measured = pd.read_csv(out / "landuse_by_commodity.csv")
    assert documented["commodity"].tolist() == measured["commodity"].tolist()
    for doc, (_, row) in zip(documented.itertuples(index=False), measured.iterrows()):
        assert km2(doc[1]) == pytest.approx(round(row["area_km2"], 1), abs=1e-9), doc
        assert percent(doc[2]) == pytest.approx(round(100 * row["share"], 2) / 100, abs=1e-12), doc
        assert int(doc[3]) == row["n_sites"], doc

    summary = json.loads((out / "summary.json").read_text())
    assert f"**{summary['linked_km2']:,.1f} km² ({100 * summary['linked_share']:.2f} %)**" in text
    assert f"**{summary['unlinked_km2']:,.1f} km² ({100 * summary['unlinked_share']:.2f} %)**" in text
    assert f"{summary['multi_commodity_km2']:,.1f} km² ({100 * summary['multi_commodity_share']:.2f} %)" in text

    documented = table(text, "sensitivity").set_index("cut")
    measured = pd.read_csv(out / "landuse_sensitivity.csv").set_index("cut")
    shares = pd.read_csv(out / "landuse_sensitivity_by_commodity.csv")
    assert list(measured.index) == ["1 km", "2 km", "5 km", "10 km", "chosen per site"]
    for cut, row in measured.iterrows():  # the 15 and 20 km rows come from the second block (not rerun here)
        doc = documented.loc[cut]
        assert int(doc["sites"]) == row["n_sites"]
        assert km2(doc["linked (km²)"]) == pytest.approx(round(row["linked_km2"], 1), abs=1e-9)
        for column, value in (("linked", row["linked_share"]), ("Unknown", row["unlinked_share"]),
                              ("several commodities", row["multi_commodity_share"])):
            assert percent(doc[column]) == pytest.approx(round(100 * value, 2) / 100, abs=1e-12), (cut, column)
        by = shares[shares["cut"] == cut].set_index("commodity")["share"]
        for commodity in ("Gold", "Tin", "Coal"):
            assert percent(doc[commodity]) == pytest.approx(round(100 * by.get(commodity, 0.0), 2) / 100,
                                                            abs=1e-12), (cut, commodity)
