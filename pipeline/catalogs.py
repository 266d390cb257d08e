"""Data sources: the STAC catalogs and collection definitions in ``catalogs/``, item search and href signing.

A *source* (``catalogs/sources/*.yaml``) says where items come from (a STAC API or a static catalog, a local path or
any fsspec URL) and how their hrefs are signed. A *collection* (``catalogs/collections/*.yaml``) says how to read one
STAC collection: asset keys, band map, nodata, scaling and (Sentinel-2) the processing-baseline offset and the SCL mask.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import fsspec
import pystac
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mtg.pipeline.errors import MtgError, exception_chain, one_line

log = logging.getLogger(__name__)

Signing = Literal["none", "planetary-computer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BandDef(_Strict):
    """One spectral band: its STAC asset key is the key of :attr:`ReflectanceCollection.bands`."""

    common_name: str
    resolution: float


class MaskDef(_Strict):
    """The scene-classification asset and the class codes that are masked out."""

    asset: str
    resolution: float
    invalid_classes: tuple[int, ...]


class ReflectanceCollection(_Strict):
    """How to read a surface-reflectance collection (Sentinel-2 L2A) into reflectance."""

    id: str
    kind: Literal["reflectance"]
    platform_property: str
    scale: float
    nodata: int
    baseline_property: str
    offset_from_baseline: str
    offset_dn: float
    bands: dict[str, BandDef]
    mask: MaskDef

    def offset_for(self, item: pystac.Item) -> float:
        """Digital-number offset of one item: ``offset_dn`` from the offset baseline on, else 0.

        Raises
        ------
        MtgError
            When the item lacks the processing-baseline property.
        """
        baseline = item.properties.get(self.baseline_property)
        if baseline is None:
            raise MtgError(
                f"item {item.id!r} of collection {self.id!r} has no {self.baseline_property!r} property, "
                "so its reflectance offset cannot be decided"
            )
        return self.offset_dn if _baseline_tuple(baseline) >= _baseline_tuple(self.offset_from_baseline) else 0.0


class DemCollection(_Strict):
    """How to read a DEM collection: one asset of heights in metres.

    ``vertical_datum`` is the vertical CRS the heights refer to, as PROJ names it (``"EPSG:5773"`` EGM96 height,
    ``"EPSG:3855"`` EGM2008 height, ``"EPSG:4979"`` WGS 84 ellipsoidal); ``epoch`` is the span of the acquisitions
    the heights come from, ``START/END`` in ISO dates (not the item datetime, which may be the production date).
    """

    id: str
    kind: Literal["dem"]
    asset: str
    resolution: float
    nodata: float
    vertical_datum: str
    epoch: str


class CatalogSource(_Strict):
    """Where items come from and how their hrefs are signed."""

    name: str
    kind: Literal["stac-api", "static"]
    url: str
    signing: Signing = "none"
    collections: dict[Literal["reflectance", "dem"], str]

    @property
    def reflectance(self) -> ReflectanceCollection:
        """The reflectance collection definition of this source."""
        return load_collection(self.collections["reflectance"])  # type: ignore[return-value]

    @property
    def dem(self) -> DemCollection:
        """The DEM collection definition of this source."""
        return load_collection(self.collections["dem"])  # type: ignore[return-value]


def _baseline_tuple(baseline: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(baseline).split("."))
    except ValueError:
        raise MtgError(f"processing baseline {baseline!r} is not of the form NN.NN") from None


def _definitions(kind: str) -> dict[str, Path]:
    folder = resources.files("mtg.catalogs") / kind
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def _validated(model: type[BaseModel], path: Path) -> BaseModel:
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        raise MtgError(f"{path}: {format_validation_error(err)}") from None


def format_validation_error(err: ValidationError) -> str:
    """Render a pydantic error as ``key: problem`` lines that name the key path and the allowed values."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg} (got {e.get('input')!r})")
    return "; ".join(lines)


@lru_cache
def load_collection(collection_id: str) -> ReflectanceCollection | DemCollection:
    """Load the definition of a STAC collection from ``catalogs/collections``.

    Raises
    ------
    MtgError
        When no definition exists; the message lists the known collections.
    """
    known = _definitions("collections")
    if collection_id not in known:
        raise MtgError(f"unknown collection {collection_id!r}: known collections are {sorted(known)}")
    raw = yaml.safe_load(known[collection_id].read_text())
    model = ReflectanceCollection if raw.get("kind") == "reflectance" else DemCollection
    return _validated(model, known[collection_id])  # type: ignore[return-value]


def known_collections() -> list[str]:
    """Ids of the collections defined in ``catalogs/collections``."""
    return sorted(_definitions("collections"))


def known_sources() -> list[str]:
    """Names of the sources defined in ``catalogs/sources``."""
    return sorted(_definitions("sources"))


def resolve_source(name_or_url: str) -> CatalogSource:
    """Turn ``--catalog NAME|URL`` into a source.

    A name from ``catalogs/sources`` gives that source. Anything else is taken as a catalog location: an
    ``http(s)`` URL not ending in ``.json`` is a STAC API, everything else (a local path, an ``s3://`` or
    ``https://`` URL of a ``catalog.json`` or a folder holding one) is a static catalog. Both use the
    Sentinel-2 L2A and Copernicus DEM definitions.
    """
    known = _definitions("sources")
    if name_or_url in known:
        return _validated(CatalogSource, known[name_or_url])  # type: ignore[return-value]
    collections = {"reflectance": "sentinel-2-l2a", "dem": "cop-dem-glo-30"}
    is_url = "://" in name_or_url
    if name_or_url.startswith(("http://", "https://")) and not name_or_url.endswith(".json"):
        return CatalogSource(name=name_or_url, kind="stac-api", url=name_or_url, collections=collections)
    if not is_url and not name_or_url.endswith(".json") and not Path(name_or_url).exists():
        raise MtgError(
            f"catalog {name_or_url!r} is neither a known source {known_sources()} nor an existing path or URL"
        )
    url = name_or_url
    if not url.endswith(".json"):
        url = url.rstrip("/") + "/catalog.json"
    return CatalogSource(name=name_or_url, kind="static", url=url, collections=collections)


# ---------------------------------------------------------------------------------------------- signing
def sign_href(href: str, signing: Signing) -> str:
    """Sign one asset href for reading now.

    Called by the readers on the worker that opens the file, each time it opens it, so tokens that expire
    (Planetary Computer SAS tokens last about 45 minutes) are fresh when used; ``planetary_computer`` caches a
    token per storage container until shortly before it expires.
    """
    if signing == "none":
        return href
    if signing == "planetary-computer":
        import planetary_computer

        return planetary_computer.sign_url(href)
    raise MtgError(f"unknown signing {signing!r}: allowed values are 'none', 'planetary-computer'")


# ---------------------------------------------------------------------------------------------- search
class _FsspecStacIO(pystac.StacIO):
    """pystac I/O over fsspec, so static catalogs can live on local disk, http(s) or object storage."""

    def __init__(self, storage_options: dict | None = None) -> None:
        super().__init__()
        self.storage_options = storage_options or {}

    def read_text(self, source, *args, **kwargs) -> str:  # noqa: ANN001 - pystac's signature
        href = str(source)
        try:
            with fsspec.open(href, "r", **self._options_for(href)) as f:
                return f.read()
        except FileNotFoundError:
            raise MtgError(f"STAC document not found: {href}") from None
        except OSError as err:
            raise MtgError(f"cannot read STAC document {href}: {err}") from None

    def write_text(self, dest, txt: str, *args, **kwargs) -> None:  # noqa: ANN001 - pystac's signature
        href = str(dest)
        fs, path = fsspec.core.url_to_fs(href, **self._options_for(href))
        fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "w") as f:
            f.write(txt)

    def _options_for(self, href: str) -> dict:
        return self.storage_options if "://" in href and not href.startswith("file://") else {}


def parse_time_range(time: str | None) -> tuple[datetime | None, datetime | None]:
    """Parse ``START/END`` (ISO dates or datetimes, either side may be ``..`` or empty) into UTC datetimes."""
    if not time:
        return None, None
    parts = time.split("/")
    if len(parts) != 2:
        raise MtgError(f"time {time!r} must be START/END, for example 2021-01-01/2022-12-31")

    def parse(text: str, end: bool) -> datetime | None:
        if text in ("", ".."):
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise MtgError(f"time {time!r}: {text!r} is not an ISO date such as 2021-06-30") from None
        if len(text) == 10 and end:
            value = value.replace(hour=23, minute=59, second=59, microsecond=999999)
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    start, stop = parse(parts[0], False), parse(parts[1], True)
    if start and stop and start > stop:
        raise MtgError(f"time {time!r}: start is after end")
    return start, stop


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def search_items(
    source: CatalogSource,
    collection_id: str,
    bbox: tuple[float, float, float, float],
    time: str | None = None,
    storage_options: dict | None = None,
) -> list[pystac.Item]:
    """Items of one collection that intersect a lon/lat bbox within a time range, in time order.

    Raises
    ------
    MtgError
        When the catalog cannot be read, the collection does not exist in it, or nothing matches.
    """
    start, stop = parse_time_range(time)
    if source.kind == "stac-api":
        items = _search_api(source, collection_id, bbox, start, stop)
    else:
        items = _search_static(source, collection_id, bbox, start, stop, storage_options)
    if not items:
        when = f" between {start:%Y-%m-%d} and {stop:%Y-%m-%d}" if start and stop else ""
        raise MtgError(
            f"no items of collection {collection_id!r} in catalog {source.url} intersect bbox "
            f"{list(bbox)}{when}: the area or time lies outside the data"
        )
    items.sort(key=lambda it: (it.datetime or datetime.min.replace(tzinfo=timezone.utc), it.id))
    log.info("found %d items of %s in %s", len(items), collection_id, source.url)
    return items


def _search_api(source, collection_id, bbox, start, stop) -> list[pystac.Item]:
    import pystac_client
    from pystac_client.exceptions import APIError

    try:
        client = pystac_client.Client.open(source.url)
        if client.get_collection(collection_id) is None:
            raise MtgError(f"unknown collection {collection_id!r} in STAC API {source.url}")
        search = client.search(collections=[collection_id], bbox=bbox, datetime=[start, stop])
        return list(search.items())
    except (APIError, OSError) as err:
        unreachable = unreachable_reason(err, source.url)
        if unreachable is not None:
            raise MtgError(f"cannot reach STAC API {source.url}: {unreachable}") from None
        raise MtgError(f"STAC API {source.url} refused the search of {collection_id!r}: {one_line(str(err))}") from None


def unreachable_reason(err: BaseException, url: str) -> str | None:
    """Why a server could not be reached at all, from the exceptions under ``err``; None when it answered.

    Tells a name that does not resolve (DNS) apart from a refused connection and a timeout, so that neither is
    reported as the server refusing a request.

    Parameters
    ----------
    err : BaseException
        The exception of the client (pystac-client wraps the requests/urllib3 exceptions in ``APIError``).
    url : str
        The URL asked for, whose host and port the reason names.
    """
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    chain = exception_chain(err, limit=16)
    chain += [r for r in (getattr(e, "reason", None) for e in chain) if isinstance(r, BaseException)]
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, socket.gaierror) for e in chain) or "NameResolutionError" in names:
        return (f"the host name {host!r} does not resolve (DNS lookup failed): check the URL, the network and "
                "the DNS settings")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or any(
            "refused" in str(e).lower() for e in chain if type(e).__name__ == "NewConnectionError"):
        return f"the connection to {host}:{port} was refused: nothing listens there (is the server running?)"
    if any(isinstance(e, TimeoutError) for e in chain) or names & {"ConnectTimeoutError", "ConnectTimeout"}:
        return f"the connection to {host}:{port} timed out"
    if names & {"ConnectionError", "NewConnectionError", "MaxRetryError", "ProtocolError"} or any(
            isinstance(e, ConnectionError) for e in chain):
        return f"the connection to {host}:{port} failed: {one_line(str(chain[-1]))}"
    return None


def _search_static(source, collection_id, bbox, start, stop, storage_options) -> list[pystac.Item]:
    stac_io = _FsspecStacIO(storage_options)
    try:
        root = pystac.Catalog.from_file(source.url, stac_io=stac_io)
    except pystac.STACError as err:
        raise MtgError(f"{source.url} is not a STAC catalog: {err}") from None
    except json.JSONDecodeError as err:
        raise MtgError(f"{source.url} is not valid JSON: {err}") from None
    collections = {c.id: c for c in root.get_all_collections()}
    if collection_id not in collections:
        raise MtgError(
            f"unknown collection {collection_id!r} in catalog {source.url}: it holds {sorted(collections)}"
        )
    found = []
    for item in collections[collection_id].get_items(recursive=True):
        if item.bbox is None or not _overlaps(tuple(item.bbox), bbox):
            continue
        when = item.datetime or item.common_metadata.start_datetime
        if (start and when < start) or (stop and when > stop):
            continue
        item.make_asset_hrefs_absolute()
        found.append(item)
    return found
