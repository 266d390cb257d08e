"""Replacing a complete Zarr store (``write_cube(..., overwrite=True)``) never loses it: a write that fails or is
interrupted at any step leaves a complete store (the old one, or the new one once complete), and a rerun of the
request resumes, on a local folder and on object storage (moto). benchmarks/RESULTS.md tabulates them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from mtg.pipeline.storage import filesystem
from mtg.pipeline.zarr_store import fingerprint_of, open_cube, store_state, write_cube

ENCODING = {"v": {"dtype": "float32", "chunks": (1, 8, 8)}}
OLD, NEW = fingerprint_of({"cube": "old"}), fingerprint_of({"cube": "new"})


def _cube(value: float) -> xr.Dataset:
    """A (2, 32, 16) cube of ``value``: four regions of 8 rows."""
    data = da.full((2, 32, 16), value, dtype="float32", chunks=(1, 8, 8))
    return xr.Dataset({"v": (("time", "y", "x"), data)},
                      coords={"time": [0, 1], "y": np.arange(32.0), "x": np.arange(16.0)})


def _dies_after_one_region() -> Callable[[Any, str], None]:
    calls = []

    def compute(delayed: Any, label: str) -> None:
        if calls:
            raise OSError("simulated failure (disk full)")
        calls.append(label)
        dask.compute(delayed)

    return compute


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, tmp_path) -> tuple[str, dict]:
    """The URL of a store in a fresh folder (local) or prefix (moto S3), and its storage options."""
    if request.param == "local":
        return str(tmp_path / "cube.zarr"), {}
    options, bucket = request.getfixturevalue("s3_server")
    return f"s3://{bucket}/{tmp_path.name}/cube.zarr", options


def _objects(url: str, options: dict) -> dict[str, str]:
    """sha256 of every file or object of the folder holding ``url``, by path relative to that folder."""
    fs, path = filesystem(url, options)
    fs.invalidate_cache()
    parent = path.rsplit("/", 1)[0]
    return {key[len(parent) + 1:]: hashlib.sha256(fs.cat_file(key)).hexdigest() for key in fs.find(parent)}


def test_an_overwrite_that_fails_midway_keeps_the_old_store_and_a_rerun_resumes(where):
    url, options = where
    assert write_cube(_cube(1.0), url, encoding=ENCODING, fingerprint=OLD, storage_options=options) == "written"
    before = _objects(url, options)
    with pytest.raises(OSError, match="simulated"):
        write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options=options, overwrite=True,
                   compute=_dies_after_one_region())
    after = _objects(url, options)
    assert {k: v for k, v in after.items() if k.startswith("cube.zarr/")} == before  # byte-identical old store
    assert store_state(url, options) == ("complete", OLD)
    assert float(open_cube(url, options)["v"].max()) == 1.0
    assert store_state(f"{url}.mtg-new-{NEW[:16]}", options) == ("partial", NEW)

    status = write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options=options, overwrite=True)
    assert status == "resumed"
    assert store_state(url, options) == ("complete", NEW)
    assert float(open_cube(url, options)["v"].min()) == 2.0
    assert {k.split("/")[0] for k in _objects(url, options)} == {"cube.zarr"}  # no staging or progress left


def test_a_dead_attempt_of_another_request_is_cleaned_up(where):
    url, options = where
    write_cube(_cube(1.0), url, encoding=ENCODING, fingerprint=OLD, storage_options=options)
    with pytest.raises(OSError):
        write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options=options, overwrite=True,
                   compute=_dies_after_one_region())
    other = fingerprint_of({"cube": "other"})
    assert write_cube(_cube(3.0), url, encoding=ENCODING, fingerprint=other, storage_options=options,
                      overwrite=True) == "written"
    assert float(open_cube(url, options)["v"].max()) == 3.0
    assert {k.split("/")[0] for k in _objects(url, options)} == {"cube.zarr"}


def test_a_local_swap_killed_between_its_renames_puts_the_old_store_back(tmp_path, monkeypatch):
    import mtg.pipeline.zarr_store as zarr_store

    url = str(tmp_path / "cube.zarr")
    write_cube(_cube(1.0), url, encoding=ENCODING, fingerprint=OLD, storage_options={})
    before = _objects(url, {})
    renames = []

    class DiesAtTheSecondRename:
        """The ``os`` module as the store module sees it, but killed at its second rename (zarr's own renames,
        of its chunk files, are not touched)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def replace(src: str, dst: str) -> None:
            renames.append(src)
            if len(renames) == 2:
                raise KeyboardInterrupt("killed between the renames")
            os.replace(src, dst)

    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        patch.setattr(zarr_store, "os", DiesAtTheSecondRename())
        write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options={}, overwrite=True)
    assert store_state(url, {})[0] == "absent"  # the old store is set aside, the new one complete beside it
    assert write_cube(_cube(1.0), url, encoding=ENCODING, fingerprint=OLD, storage_options={}) == "skipped"
    assert _objects(url, {}) == before  # the old store put back as it was; the new one deleted

    write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options={}, overwrite=True)
    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        renames.clear()
        patch.setattr(zarr_store, "os", DiesAtTheSecondRename())
        write_cube(_cube(3.0), url, encoding=ENCODING, fingerprint=OLD, storage_options={}, overwrite=True)
    assert write_cube(_cube(3.0), url, encoding=ENCODING, fingerprint=OLD, storage_options={},
                      overwrite=True) == "resumed"  # the complete staging store is swapped in, not rewritten
    assert float(open_cube(url, {})["v"].max()) == 3.0
    assert {k.split("/")[0] for k in _objects(url, {})} == {"cube.zarr"}


@pytest.mark.s3
def test_an_s3_swap_killed_while_copying_is_finished_by_a_rerun(s3_server, tmp_path, monkeypatch):
    options, bucket = s3_server
    url = f"s3://{bucket}/{tmp_path.name}/cube.zarr"
    write_cube(_cube(1.0), url, encoding=ENCODING, fingerprint=OLD, storage_options=options)

    def dies(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise KeyboardInterrupt("killed while copying")

    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        patch.setattr(filesystem(url, options)[0], "copy", dies)  # fsspec's cached instance, which the store uses
        write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options=options, overwrite=True)
    assert store_state(url, options)[0] == "absent"  # the window: no store at the URL ...
    assert store_state(f"{url}.mtg-new-{NEW[:16]}", options) == ("complete", NEW)  # ... the new one complete
    assert write_cube(_cube(2.0), url, encoding=ENCODING, fingerprint=NEW, storage_options=options) == "resumed"
    assert float(open_cube(url, options)["v"].min()) == 2.0
    assert {k.split("/")[0] for k in _objects(url, options)} == {"cube.zarr"}
