"""Atomic writes of files and folders: a reader never sees half an output, a failure leaves the old one."""

from __future__ import annotations

import pytest

from mtg.pipeline.table_io import atomic_folder, atomic_write_all


def test_atomic_folder_replaces_the_old_folder_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "store.zarr"
    with atomic_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("first")
        assert not out.exists()  # nothing is visible while writing
    assert (out / "a").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("half")
        raise RuntimeError("the writer failed")
    assert (out / "a").read_text() == "first"
    with atomic_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]  # no temporary or old folder left


def test_atomic_write_all_replaces_no_file_when_one_writer_fails(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    atomic_write_all({a: lambda p: p.write_text("a1"), b: lambda p: p.write_text("b1")})

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_all({a: lambda p: p.write_text("a2"), b: fail})
    assert (a.read_text(), b.read_text()) == ("a1", "b1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_the_leftovers_of_a_killed_write_are_cleared_and_a_folder_set_aside_is_put_back(tmp_path):
    out, sites = tmp_path / "segment", tmp_path / "sites.parquet"
    for leftover in (".segment-0badc0de-tmp", ".segment-feedf00d-old"):  # killed between the two renames
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "a").write_text(leftover)
    (tmp_path / ".sites.parquet.0badc0de.tmp").write_text("half")  # killed before its rename
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        raise RuntimeError("the writer failed")
    assert (out / "a").read_text() == ".segment-feedf00d-old"  # the complete older folder, back in place
    atomic_write_all({sites: lambda p: p.write_text("whole")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segment", "sites.parquet"]
