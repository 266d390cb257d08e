"""fsspec storage: URLs with storage options, reachability checks and atomic small-file writes."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec

from mtg.pipeline.errors import MtgError


def parse_storage_options(text: str | dict | None) -> dict[str, Any]:
    """Storage options from a JSON object string (as given on the command line) or a dict.

    Options are passed to fsspec (for ``s3://``: s3fs, for example ``endpoint_url``, ``key``, ``secret``,
    ``region_name``); without them s3fs reads the usual AWS variables (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``).
    """
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise MtgError(f"storage options {text!r} are not a JSON object: {err}") from None
    except RecursionError:
        raise MtgError(f"storage options {text[:40]!r}... nest too deeply to be storage options") from None
    if not isinstance(value, dict):
        raise MtgError(f"storage options {text!r} must be a JSON object such as {{\"endpoint_url\": \"...\"}}")
    return value


def options_for(url: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    """The storage options that apply to ``url``: None for local paths (zarr refuses options there)."""
    return storage_options if is_remote(url) else None


def is_remote(url: str) -> bool:
    """True for URLs with a scheme other than ``file``."""
    return "://" in url and not url.startswith("file://")


def filesystem(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of ``url``."""
    try:
        return fsspec.core.url_to_fs(url, **(options_for(url, storage_options) or {}))
    except (ImportError, ValueError) as err:
        raise MtgError(f"cannot open storage for {url}: {err}") from None


def check_writable(url: str, storage_options: dict[str, Any]) -> None:
    """Fail early, with a clear message, when the parent of ``url`` cannot be reached or written.

    Writes and deletes a small probe object next to ``url``.
    """
    fs, path = filesystem(url, storage_options)
    parent = fs._parent(path.rstrip("/")) or path
    probe = f"{parent}/.mtg-probe-{uuid.uuid4().hex}"
    try:
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:  # botocore, aiohttp and OS errors all mean the same to the user here
        where = storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "default endpoint"
        hint = f" (endpoint: {where})" if is_remote(url) else ""
        raise MtgError(f"cannot write to {url}{hint}: {type(err).__name__}: {err}") from None


def write_text_atomic(url: str, text: str, storage_options: dict[str, Any]) -> None:
    """Write a small text file so that readers see either the old or the whole new content.

    Local files are written to a temporary name in the same folder and renamed; on object stores a
    single PUT is already atomic.
    """
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        fs.pipe_file(path, text.encode())
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL or path with ``/``."""
    return "/".join([url.rstrip("/"), *parts])
