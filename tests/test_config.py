"""Run-config loading: YAML and TOML, validation errors that name the key and the allowed values."""

import pytest

from mtg.pipeline.config import RunConfig, load_config, with_overrides
from mtg.pipeline.errors import MtgError


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == RunConfig()
    assert cfg.out == "mtg-run" and cfg.ingest.loader == "odc-stac" and cfg.dask.scheduler == "threads"


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "out: runs/a\nsample: {seed: 3, size_km: 5}\ningest:\n  loader: stackstac\n  chunks: {time: 4, space: 256}\n"
        "dask: {scheduler: local, workers: 2}\n"
    )
    (tmp_path / "run.toml").write_text(
        'out = "runs/a"\n[sample]\nseed = 3\nsize_km = 5\n[ingest]\nloader = "stackstac"\n'
        "[ingest.chunks]\ntime = 4\nspace = 256\n[dask]\nscheduler = \"local\"\nworkers = 2\n"
    )
    a, b = load_config(tmp_path / "run.yaml"), load_config(tmp_path / "run.toml")
    assert a == b
    assert a.ingest.chunks.space == 256 and a.sample.seed == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("ingest: {loader: gdal}", r"ingest\.loader: Input should be 'odc-stac' or 'stackstac' \(got 'gdal'\)"),
        ("dask: {scheduler: slurm}", r"dask\.scheduler: .*allowed values are 'threads', 'local', 'local-cuda', 'gateway'"),
        ("sample: {n_dates: 2}", r"sample\.n_dates: .*greater than or equal to 6"),
        ("ingest: {colour: red}", r"ingest\.colour: unknown key"),
        ("out: [1, 2", r"not valid YAML"),
    ],
)
def test_errors_name_the_key_and_the_allowed_values(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MtgError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MtgError, match="cannot read the config file .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_command_line_overrides_win_and_none_keeps_the_file_value():
    cfg = with_overrides(RunConfig(), {"ingest.loader": "stackstac", "sample.seed": None, "ingest.chunks.time": 2})
    assert cfg.ingest.loader == "stackstac" and cfg.sample.seed == 0 and cfg.ingest.chunks.time == 2
    with pytest.raises(MtgError, match="dask.workers"):
        with_overrides(RunConfig(), {"dask.workers": 0})


def test_documented_example_is_valid_and_shows_the_defaults():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "config-example.yaml"
    assert load_config(example) == RunConfig()
