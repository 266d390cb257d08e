"""mine-the-gap pipeline: stages, I/O, CLI and dask orchestration."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mine-the-gap")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
