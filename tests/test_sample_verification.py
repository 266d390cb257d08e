"""The sample's reported figures (its truth, as a company would report them) verify the sample run, as `make run`
does: `mtg run` on the sample writes ``verification/`` without ``verify.reported``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mtg.pipeline.config import RunConfig
from mtg.pipeline.run import _reported_figures
from mtg.pipeline.sample import SampleRegion
from mtg.pipeline.sample.truth import REPORTED_FIGURES
from mtg.pipeline.verify import write_verification
from run_folder import write_run_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("sample-verification") / "run")


def test_the_sample_run_is_verified_against_the_sample_reported_figures(run_dir, tmp_path):
    truth = run_dir / "sample" / "truth"
    region = SampleRegion(**{**{f: None for f in SampleRegion.__dataclass_fields__}, "truth": truth})
    assert _reported_figures(RunConfig(), region) == str(truth / REPORTED_FIGURES)
    assert _reported_figures(RunConfig(), None) is None
    reported = pd.read_csv(truth / REPORTED_FIGURES)
    assert set(reported["field"]) == {"area_km2", "excavated_m3"} and reported["lon"].notna().all()
    result = write_verification(truth / REPORTED_FIGURES, run_dir / "indicators" / "site_indicators.parquet",
                                tmp_path / "verification")
    table = pd.read_csv(tmp_path / "verification" / "verification.csv")
    assert len(table) == len(reported)
    # the fixture's sites are the truth polygons: their areas agree with what the sample reports
    area = table[table["field"] == "area_km2"]
    assert (area["flag"] == "agrees").mean() >= 0.5, area[["flag", "evidence"]].to_string()
    assert sum(result.counts.values()) == len(reported)
