"""Paths as the outputs of a run record them: relative to the run folder, so that a run folder copied to another
place (or uploaded whole) stays valid, and never an absolute path of the machine that wrote it.

A URL (``s3://...``, ``https://...``) is recorded as given. A local path is recorded relative to the run folder,
with ``/`` separators: ``segment/mine_polygons.parquet``, ``sample/truth/mine_points.parquet``, and
``../inventory.csv`` for an input beside the run folder. Only a path that has no relative form (another drive on
Windows) stays as given. A reader joins a recorded path to the run folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

#: A URL scheme of two or more letters (one letter is a Windows drive).
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: An absolute local path: POSIX (``/x/y``), a Windows drive (``C:\\x``, ``C:/x``) or a UNC path (``\\\\host\\x``).
ABSOLUTE = re.compile(r"^(/[^/\s]+/|[A-Za-z]:[\\/]|\\\\[^\\]+\\)")


def portable_path(path: str | Path, root: str | Path) -> str:
    """The form of ``path`` that an output of the run folder ``root`` records.

    Parameters
    ----------
    path : str or Path
        A local path (absolute, or relative to the working directory; ``#k`` after it names a part, as the epoch
        of a DEM store), a URL, or a name that is neither (a DEM collection): only a path that exists here is
        rewritten.
    root : str or Path
        The run folder (local).

    Returns
    -------
    str
        The URL as given, or the path relative to ``root`` with ``/`` separators.

    Examples
    --------
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> (run / "segment").mkdir(parents=True)
    >>> for path in (run / "segment" / "mine_polygons.parquet", run.parent / "inventory.csv"):
    ...     path.touch()
    >>> portable_path(run / "segment" / "mine_polygons.parquet", run)
    'segment/mine_polygons.parquet'
    >>> portable_path(run.parent / "inventory.csv", run)
    '../inventory.csv'
    >>> portable_path("s3://bucket/points.parquet", run)
    's3://bucket/points.parquet'
    """
    text = str(path)
    local, hash_, fragment = text.partition("#")  # a store's epoch: cubes/dem.zarr#0
    if URL.match(text) or not Path(local).exists():
        return text
    try:
        relative = os.path.relpath(os.path.abspath(local), os.path.abspath(str(root)))
    except ValueError:  # another drive (Windows): no relative form
        return text
    return PurePosixPath(*Path(relative).parts).as_posix() + hash_ + fragment


def is_absolute_local(text: str) -> bool:
    """Whether ``text`` starts with an absolute local path (see :data:`ABSOLUTE`)."""
    return bool(ABSOLUTE.match(text))
