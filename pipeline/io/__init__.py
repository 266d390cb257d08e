"""Readers and writers of the stages' inputs and outputs: files and URLs in, frames and datasets out.

The stage functions (:mod:`mtg.api`) know no files; ``mtg`` commands and :func:`mtg.pipeline.run.run_pipeline`
read with this package, call a stage, and write its result with this package.
"""

from mtg.pipeline.io.outputs import write_land_use_tables, write_sites, write_volumes
from mtg.pipeline.io.vectors import (members_path, read_link_metadata, read_members, read_points, read_polygons,
                                     read_sites, read_table, read_vector)

__all__ = ["members_path", "read_link_metadata", "read_members", "read_points", "read_polygons", "read_sites",
           "read_table", "read_vector", "write_land_use_tables", "write_sites", "write_volumes"]
