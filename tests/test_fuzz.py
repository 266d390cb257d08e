"""Hypothesis fuzzing of every parser a user feeds: any input parses to a valid value or raises MtgError.

Distances, bounding boxes, time ranges, years, run-config files (YAML and TOML), storage options (JSON) and the
columns of CSV point files. Another exception type escaping a parser is a traceback for the user.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtg.pipeline.catalogs import parse_time_range
from mtg.pipeline.cli import _bbox
from mtg.pipeline.config import RunConfig, load_config
from mtg.pipeline.errors import MtgError
from mtg.pipeline.io.vectors import read_points
from mtg.pipeline.linker import parse_distance
from mtg.pipeline.plan import years_range
from mtg.pipeline.storage import parse_storage_options

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6).map(float))
number_text = st.one_of(numbers.map(repr), numbers.map(str), st.text(alphabet="0123456789.eE+-−", max_size=8))


@FUZZ
@given(st.one_of(st.text(max_size=20), st.builds(lambda n, u, sp: f"{n}{sp}{u}", number_text,
                                                 st.sampled_from(["", "m", "km", "KM", "M", "mi", "kms"]),
                                                 st.sampled_from(["", " ", "  "])), numbers))
@example("2.5 km")
@example("1e999km")
@example("nan")
def test_distance_parses_or_says_why(text):
    try:
        value = parse_distance(text, "--h-max")
    except MtgError as err:
        assert "--h-max" in str(err)
        return
    assert isinstance(value, float) and math.isfinite(value) and value >= 0


@FUZZ
@given(st.one_of(st.text(max_size=40), st.lists(number_text, min_size=0, max_size=6).map(",".join),
                 st.tuples(st.floats(-200, 200), st.floats(-100, 100), st.floats(-200, 200),
                           st.floats(-100, 100)).map(lambda b: ",".join(map(str, b)))))
@example("1,2,3")
@example("nan,0,1,1")
@example("0,0,1,inf")
@example("500000,4000000,501000,4001000")
def test_bbox_parses_or_says_why(text):
    try:
        box = _bbox(text)
    except MtgError as err:
        assert "bbox" in str(err)
        return
    assert len(box) == 4 and all(math.isfinite(v) for v in box)
    assert -180 <= box[0] < box[2] <= 180 and -90 <= box[1] < box[3] <= 90


dates = st.one_of(st.dates().map(str), st.datetimes().map(datetime.isoformat), st.just(".."), st.just(""),
                  st.text(alphabet="0123456789-:TZ+.W ", max_size=25))


@FUZZ
@given(st.one_of(st.text(max_size=40), st.builds(lambda a, b, sep: f"{a}{sep}{b}", dates, dates,
                                                 st.sampled_from(["/", "//", "-", " / "]))))
@example("2021-01-01/2020-01-01")
@example("2021-01-01T00:00:00+05:00/2021-01-01")
@example("0001-01-01/9999-12-31")
def test_time_range_parses_or_says_why(text):
    try:
        start, stop = parse_time_range(text)
    except MtgError as err:
        assert "time" in str(err)
        return
    for value in (start, stop):
        assert value is None or (isinstance(value, datetime) and value.tzinfo is not None)
    if start is not None and stop is not None:
        assert start <= stop


@FUZZ
@given(st.one_of(st.text(max_size=12), st.builds(lambda a, b: f"{a}-{b}", st.integers(-10, 12000),
                                                 st.integers(-10, 12000)), st.integers(-10, 12000).map(str)))
@example("2019-2025")
@example("2025")
@example("0")
@example("10000")
def test_years_parse_or_say_why(text):
    """A years range is a time range the catalogs accept (plan.years_range feeds parse_time_range)."""
    try:
        time_range = years_range(text)
    except MtgError as err:
        assert "--years" in str(err)
        return
    first, last = (int(y) for y in time_range.replace("/", "-").split("-")[::3])
    if not (1000 <= first and last <= 9999):  # test_years_outside_dates_are_refused: an MtgError, but later
        with pytest.raises(MtgError):
            parse_time_range(time_range)
        return
    start, stop = parse_time_range(time_range)
    assert start is not None and stop is not None and start <= stop


@pytest.mark.parametrize("text", ["0", "999", "10000", "2019-10000"])
def test_years_outside_dates_are_refused(text):
    with pytest.raises(MtgError, match="--years"):
        years_range(text)


json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=10)


@FUZZ
@given(st.one_of(st.text(max_size=40), json_values.map(json.dumps)))
@example('{"endpoint_url": "http://127.0.0.1:9000"}')
@example("[" * 100_000)
@example("")
def test_storage_options_parse_or_say_why(text):
    try:
        options = parse_storage_options(text)
    except MtgError as err:
        assert "storage options" in str(err)
        return
    assert isinstance(options, dict)


def _config_sections() -> st.SearchStrategy[dict]:
    """Run-config documents: the real section and key names (and some wrong ones) with any simple values."""
    fields = {name: sorted(model.annotation.model_fields) for name, model in RunConfig.model_fields.items()
              if hasattr(model.annotation, "model_fields")}
    scalars = (st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False)
               | st.text(max_size=12) | st.lists(st.integers(-5, 5) | st.text(max_size=4), max_size=5))
    section = st.sampled_from(sorted(fields) + ["nosuch"]).flatmap(
        lambda name: st.tuples(st.just(name), st.dictionaries(
            st.sampled_from(fields.get(name, []) + ["typo"]), scalars, max_size=4)))
    return st.lists(section, max_size=4).map(dict)


def _toml(document: dict) -> str:
    """A TOML rendering of a two-level document (None values left out; TOML has no null)."""
    lines = []
    for name, values in document.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(st.one_of(_config_sections().map(lambda d: ("yaml", json.dumps(d))),  # JSON is YAML
                 _config_sections().map(lambda d: ("toml", _toml(d))),
                 st.tuples(st.sampled_from(["yaml", "toml"]), st.text(max_size=60)),
                 st.tuples(st.sampled_from(["yaml", "toml"]), st.binary(max_size=30).map(
                     lambda b: b.decode("latin-1")))))
@example(("yaml", "a: [1\n"))
@example(("yaml", "- 1\n- 2\n"))
@example(("yaml", "dask:\n  memory_limit: lots\n"))
@example(("toml", "x = \n"))
def test_config_file_loads_or_says_why(tmp_path_factory, doc):
    suffix, text = doc
    path = tmp_path_factory.mktemp("cfg") / f"run.{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if suffix else b"")
    try:
        config = load_config(path)
    except MtgError as err:
        assert str(path) in str(err)
        return
    assert isinstance(config, RunConfig)


def test_config_file_not_utf8_says_so(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"sample:\n  seed: \xff\xfe\n")
    with pytest.raises(MtgError, match="not UTF-8"):
        load_config(path)


cell = st.one_of(numbers.map(str), st.text(max_size=8), st.sampled_from(["", "NA", "−12.5", "1,5", "  3 "]))


@FUZZ
@given(columns=st.lists(st.sampled_from(["lon", "lat", "x", "Lon", "", " lat", "lat.1"]) | st.text(max_size=6),
                        min_size=1, max_size=4),
       rows=st.lists(st.lists(cell, min_size=4, max_size=4), max_size=4))
def test_csv_points_read_or_say_why(tmp_path_factory, columns, rows):
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    frame = pd.DataFrame([r[: len(columns)] for r in rows], columns=range(len(columns)))
    frame.columns = columns
    frame.to_csv(path, index=False)
    try:
        table, lon, lat = read_points(path)
    except MtgError as err:
        assert str(path) in str(err)
        return
    assert len(table) == len(lon) == len(lat)
    assert np.isfinite(lon).all() and np.isfinite(lat).all()
    assert (np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()
