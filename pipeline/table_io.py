"""Reading and writing the run's tables: atomic writes, GeoParquet reads that fail with a clear error, CSV copies.

Every file is written under a temporary name in its own folder (``.<name>.<random>.tmp``) and renamed into place
with :func:`os.replace`, so a reader never sees half a file. Files that belong together (a sites file and its
members file, a table's Parquet and CSV) are all written before any is renamed.

What a killed write left (temporary files and folders, a folder set aside) is cleared by the next write of the same
file or folder: the commands that write them hold the output lock of their folder (``run_lock``), so no other
process is writing it meanwhile.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


#: Schema-metadata key of the parameters mine-the-gap records in a GeoParquet file.
METADATA_KEY = b"mtg"


def atomic_write_all(writers: Mapping[Path, Callable[[Path], object]]) -> list[Path]:
    """Write several files together: each ``writer(tmp)`` on a temporary name beside its file, then all renames.

    Parameters
    ----------
    writers : mapping of Path to callable
        Output file -> function writing that file's content to the path it is given.

    Returns
    -------
    list of Path
        The output files, in the mapping's order. When a writer fails no file is replaced and every temporary
        file is removed.
    """
    tmps: dict[Path, Path] = {}
    try:
        for out, writer in writers.items():
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            for stale in out.parent.glob(f".{glob.escape(out.name)}.{'?' * 8}.tmp"):  # of a killed write
                stale.unlink(missing_ok=True)
            tmps[out] = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
            writer(tmps[out])
        for out, tmp in tmps.items():
            os.replace(tmp, out)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return list(tmps)


@contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """A temporary folder path beside ``out`` (not yet created) that replaces ``out`` when the block succeeds.

    The older ``out``, if any, is moved aside and removed only after the new folder is in place; when the block
    raises, the temporary folder is removed and ``out`` is left as it was. The name carries no suffix (pystac
    would take ``name.ext`` for a file). The leftovers of a killed write of ``out`` are removed first; an older
    ``out`` it had set aside (killed between the two renames) is put back.

    Parameters
    ----------
    out : str or Path
        The folder to write (a Zarr store, a model folder, a catalog, ...).

    Yields
    ------
    Path
        Where to write the folder's content.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = glob.escape(out.name)
    set_aside = sorted(out.parent.glob(f".{name}-{'?' * 8}-old"))
    if set_aside and not out.exists():
        os.replace(set_aside[0], out)
    for stale in [*out.parent.glob(f".{name}-{'?' * 8}-tmp"), *out.parent.glob(f".{name}-{'?' * 8}-old")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}-{uuid.uuid4().hex[:8]}-tmp")
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}-{uuid.uuid4().hex[:8]}-old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(out: Path, writer: Callable[[Path], object]) -> Path:
    """Write one file atomically (:func:`atomic_write_all`); returns ``out``."""
    return atomic_write_all({Path(out): writer})[0]


def to_geoparquet(frame, path: Path, metadata: dict[str, Any] | None = None) -> None:  # noqa: ANN001
    """Write a GeoDataFrame to ``path`` (call through :func:`atomic_write`), with ``metadata`` as JSON under the
    schema key ``mtg``."""
    import pyarrow.parquet as pq

    frame.to_parquet(path, index=False)
    if metadata is not None:
        table = pq.read_table(path)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: json.dumps(metadata).encode()})
        pq.write_table(table, path)


def csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """A plain copy of ``frame`` for CSV: list cells ``;``-joined, a GeoDataFrame's geometry as WKT."""
    import geopandas as gpd

    csv = pd.DataFrame(frame).copy()
    if isinstance(frame, gpd.GeoDataFrame):
        csv[frame.geometry.name] = frame.geometry.to_wkt().to_numpy()
    for column in csv.columns:
        if csv[column].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            csv[column] = csv[column].map(lambda v: ";".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray))
                                          else v)
    return csv


def write_table(frame: pd.DataFrame, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``folder/name.parquet`` (GeoParquet for a GeoDataFrame) and ``folder/name.csv`` (:func:`csv_ready`)
    together, atomically."""
    csv = csv_ready(frame)
    parquet, text = atomic_write_all({Path(folder) / f"{name}.parquet": lambda p: frame.to_parquet(p, index=False),
                                      Path(folder) / f"{name}.csv": lambda p: csv.to_csv(p, index=False)})
    return parquet, text


def write_json(data: dict[str, Any], out: Path) -> Path:
    """Write ``data`` as indented JSON to ``out`` atomically (numpy scalars unwrapped, other objects as text)."""
    text = json.dumps(data, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return atomic_write(out, lambda p: p.write_text(text, encoding="utf-8"))
