"""mine-the-gap pipeline: stages, I/O, CLI and dask orchestration.

The public Python API is :mod:`mtg.api` (every stage on in-memory datasets); readers and writers are in
:mod:`mtg.pipeline.io`, the options of each stage in :mod:`mtg.pipeline.config`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mine-the-gap")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
