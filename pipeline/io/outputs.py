"""Writers of the stages' results: each stage's tables (and rasters) into its folder, atomically and together."""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtg.pipeline.io.vectors import members_path
from mtg.pipeline.table_io import atomic_folder, atomic_write_all, to_geoparquet, write_json, write_table

if TYPE_CHECKING:
    import numpy as np

    from mtg.pipeline.landuse import LandUseTables
    from mtg.pipeline.link import LinkedSites
    from mtg.pipeline.volume import Volumes


def write_sites(linked: LinkedSites, out: str | Path) -> tuple[Path, Path]:
    """Write the sites GeoParquet ``out`` (with the link parameters in its metadata) and its members file
    (``<stem>_members.parquet``, GeoParquet) beside it, both or neither.

    Returns
    -------
    (Path, Path)
        The sites and members files.
    """
    out = Path(out)
    members = members_path(out)
    atomic_write_all({out: lambda p: to_geoparquet(linked.sites, p, linked.metadata),
                      members: lambda p: linked.members.to_parquet(p, index=False)})
    return out, members


def write_land_use_tables(tables: LandUseTables, out: str | Path,
                          sites_metadata: dict[str, Any] | None = None) -> list[Path]:
    """Write the land-use tables into the folder ``out``: ``landuse_by_commodity``, ``landuse_by_country``,
    ``landuse_by_commodity_country`` and ``landuse_by_site`` (each ``.parquet`` and ``.csv``), ``summary.json``,
    and when present ``cut_objective``, ``sites_chosen.parquet`` (with the countries used) and its members file,
    ``landuse_sensitivity`` and ``landuse_sensitivity_by_commodity``.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    files: list[Path] = []
    if tables.objective is not None:
        files += write_table(tables.objective, out, "cut_objective")
    if tables.chosen_sites is not None:
        meta = {**(sites_metadata or {}), "choose_cut": True, "cut_m": tables.summary["choose_cut"]["h_max_m"]}
        chosen, members = tables.chosen_sites, tables.chosen_members
        files += atomic_write_all({out / "sites_chosen.parquet": lambda p: to_geoparquet(chosen, p, meta),
                                   out / "sites_chosen_members.parquet": lambda p: members.to_parquet(p, index=False)})
    landuse = tables.landuse
    for name, table in (("landuse_by_commodity", landuse.by_commodity), ("landuse_by_country", landuse.by_country),
                        ("landuse_by_commodity_country", landuse.by_commodity_country),
                        ("landuse_by_site", landuse.by_site)):
        files += write_table(table, out, name)
    if tables.sensitivity is not None:
        files += write_table(tables.sensitivity, out, "landuse_sensitivity")
        files += write_table(tables.sensitivity_by_commodity, out, "landuse_sensitivity_by_commodity")
    files.append(write_json(tables.summary, out / "summary.json"))
    return files


def write_volumes(result: Volumes, out: str | Path) -> Path:
    """Write ``site_volumes.parquet``, ``waste_deposits.parquet``, ``coregistration.json`` and ``dh.zarr`` (one band
    of block rows at a time: from ``result.dh_bands`` when given, else from the lazy dh) into the folder ``out``;
    each file is complete or absent."""
    out = Path(out)
    _write_dh(result.dh, out / "dh.zarr", result.dh_bands)
    atomic_write_all({out / "site_volumes.parquet": result.site_volumes.to_parquet,
                      out / "waste_deposits.parquet": result.deposits.to_parquet,
                      out / "coregistration.json": lambda tmp: tmp.write_text(json.dumps(
                          json_numbers(result.report), indent=2, default=float, allow_nan=False))})
    return out


def json_numbers(value: Any) -> Any:
    """``value`` with every float that is not finite (an unknown statistic, e.g. the stable-terrain NMAD of DEMs
    without stable terrain) made None, so the JSON written is valid (``null``, not ``NaN``)."""
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_numbers(v) for v in value]
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        return None
    return value


#: Attributes of the dh array that the store keeps at its root.
DH_STORE_ATTRS = ("mtg:coregistration", "mtg:threshold_m")
#: Zstandard level of dh.zarr: level 1 encodes float32 elevation changes about 4x faster than the default level 3
#: (410-630 against 110-160 MB/s on one core, benchmarks/RESULTS.md) for stores about 5 % larger.
DH_ZSTD_LEVEL = 1


def _write_dh(dh, out: Path, bands: Callable[[], Iterator[tuple[int, np.ndarray]]] | None = None) -> None:
    """Write the lazy ``dh`` into the Zarr store ``out``, its values from ``bands()`` (``(first row, rows)``, top
    to bottom) when given, else computed band by band."""
    import zarr
    from zarr.codecs import ZstdCodec

    from mtg.pipeline.zarr_store import crs_coordinate

    rows = dh.shape[0]
    ds = crs_coordinate(dh.assign_attrs({k: v for k, v in dh.attrs.items() if k not in DH_STORE_ATTRS}).to_dataset())
    ds.attrs.update({k: dh.attrs[k] for k in DH_STORE_ATTRS if k in dh.attrs})
    band = dh.data.chunksize[0]
    # one Zarr chunk per DEM block (regularised: Zarr needs equal chunks)
    ds = ds.chunk({"y": band, "x": dh.data.chunksize[1]})
    ds["dh"].encoding["compressors"] = (ZstdCodec(level=DH_ZSTD_LEVEL),)  # beside the CRS and nodata encoding
    with atomic_folder(out) as tmp, warnings.catch_warnings():
        # consolidated metadata are deliberate: lazy readers open the store in one read
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3, compute=False)
        if bands is not None:
            store = zarr.open_array(tmp, path="dh", mode="r+")
            for r0, values in bands():
                store[r0:r0 + len(values)] = values
        else:
            # one band of block rows at a time: the halos of the block-wise correction then never hold more than
            # two bands in memory, however large the grid
            for r0 in range(0, rows, band):
                ds[["dh"]].drop_vars(["x", "spatial_ref"]).isel(y=slice(r0, r0 + band)).to_zarr(
                    tmp, region={"y": slice(r0, min(r0 + band, rows))})
