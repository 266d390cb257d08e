"""An advisory lock on an output folder, so that two commands never write the same outputs at once.

The lock is a small JSON file, ``.mtg-lock``, in the output folder: the pid, host, process start time and command
of its holder. It is created atomically (written under a temporary name, then hard-linked to ``.mtg-lock``, which
fails when a lock is there), so a reader never sees half a lock. A second command that finds a live holder is
refused with one line naming it. A lock left by a process of this host that is gone (killed, crashed) is stale:
it is taken over with a warning. Locks held on another host are never taken over (their pid cannot be checked
from here): the message says which file to delete once that run is known to be over.

A folder is also refused while a folder above it is locked (``mtg ingest --out RUN/cubes`` during ``mtg run
--out RUN``), or a folder below it (``mtg run --out RUN`` during ``mtg ingest --out RUN/cubes``). Folders above are
all checked; folders below up to ``NESTED_DEPTH`` levels down, not inside Zarr stores (``*.zarr``) or hidden
folders (temporaries), so the check lists a few folders however large the outputs are. The nesting is checked
after the lock is taken, so of two nested commands started at once at least one sees the other (both may be
refused; neither writes). Object-store URLs are not locked: only local folders.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mtg.pipeline.errors import MtgError
from mtg.pipeline.storage import is_remote

log = logging.getLogger(__name__)

LOCK_NAME = ".mtg-lock"
NESTED_DEPTH = 2


def _process_start(pid: int) -> str | None:
    """The start time of a process of this host (clock ticks since boot, from ``/proc``); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder of a lock of this host still runs (the same process, not a reuse of its pid)."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def read_lock(folder: str | Path) -> dict[str, Any] | None:
    """The holder of the lock of ``folder`` (pid, host, process_start, command, since, token), or None.

    A lock file that is not JSON (written by something else) reads as a holder of pid -1: stale.
    """
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": -1, "host": socket.gethostname()}
    return holder if isinstance(holder, dict) else {"pid": -1, "host": socket.gethostname()}


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, `{holder.get('command', '?')}` since "
            f"{holder.get('since', '?')}")


def _held(holder: dict[str, Any] | None) -> bool:
    """Whether a lock's holder counts as running: a live process of this host, or any process of another host."""
    return holder is not None and (holder.get("host") != socket.gethostname() or _alive(holder))


def _folders_below(folder: Path, depth: int) -> Iterator[Path]:
    """The folders up to ``depth`` levels below ``folder``, except Zarr stores, hidden folders and their insides."""
    if depth == 0:
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") and not entry.name.endswith(".zarr"):
            yield Path(entry.path)
            yield from _folders_below(Path(entry.path), depth - 1)


def _check_nesting(folder: Path) -> None:
    """Refuse ``folder`` when a folder above it, or up to ``NESTED_DEPTH`` levels below it, is locked by a running
    command."""
    for parent in folder.parents:
        holder = read_lock(parent)
        if _held(holder):
            raise MtgError(f"{folder} lies in {parent}, which another mtg command is writing ({_describe(holder)}): "
                           "wait for it to end, or write elsewhere")
    for child in _folders_below(folder, NESTED_DEPTH):
        holder = read_lock(child)
        if _held(holder):
            raise MtgError(f"{folder} holds {child}, which another mtg command is writing ({_describe(holder)}): "
                           "wait for it to end, or write elsewhere")


def acquire(folder: str | Path, command: str) -> dict[str, Any]:
    """Lock ``folder`` (created when missing) for this process.

    Parameters
    ----------
    folder : str or Path
        The output folder.
    command : str
        The command line, shown to a second command that is refused.

    Returns
    -------
    dict
        The lock written (pass it to :func:`release`).

    Raises
    ------
    MtgError
        When a live process (or a process of another host) holds the lock of ``folder``, of a folder above it or
        of a folder below it (see the module's description), or the folder cannot be written.
    """
    folder = Path(folder).absolute()
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "process_start": _process_start(os.getpid()), "command": command,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": uuid.uuid4().hex}
    lock = folder / LOCK_NAME
    tmp = folder / f"{LOCK_NAME}.{mine['token']}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(mine))
        for _ in range(3):
            try:
                os.link(tmp, lock)
            except FileExistsError:
                holder = read_lock(folder)
                if holder is None:
                    continue  # released meanwhile
                if holder.get("host") != host:
                    raise MtgError(
                        f"{folder} is being written by another mtg command ({_describe(holder)}): wait for it to end, "
                        f"or write elsewhere; if that run is over, delete {lock}") from None
                if _alive(holder):
                    raise MtgError(f"{folder} is being written by another mtg command ({_describe(holder)}): wait for "
                                   "it to end, or write elsewhere") from None
                log.warning("taking over the stale lock %s of a process that is gone (%s)", lock, _describe(holder))
                _remove_if(lock, holder)
                continue
            try:
                _check_nesting(folder)
            except MtgError:
                _remove_if(lock, mine)
                raise
            return mine
        raise MtgError(f"cannot lock {folder}: other mtg commands keep taking its lock {lock}")
    except OSError as err:
        raise MtgError(f"cannot lock the output folder {folder}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _remove_if(lock: Path, holder: dict[str, Any]) -> None:
    """Delete ``lock`` when it still holds ``holder`` (another process may have taken it over meanwhile)."""
    if read_lock(lock.parent) == holder:
        lock.unlink(missing_ok=True)


def release(folder: str | Path, lock: dict[str, Any]) -> None:
    """Delete the lock of ``folder`` if it is still ``lock`` (the one :func:`acquire` returned)."""
    _remove_if(Path(folder).absolute() / LOCK_NAME, lock)


@contextmanager
def output_lock(folder: str | Path | None, command: str | None = None) -> Iterator[None]:
    """Hold the lock of a local output folder while the block runs; URLs and None lock nothing.

    Parameters
    ----------
    folder : str or Path, optional
        The output folder or URL.
    command : str, optional
        The command line to record (default: this process's arguments).
    """
    if folder is None or is_remote(str(folder)):
        yield
        return
    path = Path(str(folder).removeprefix("file://"))
    created = not path.exists()
    try:
        lock = acquire(path, command or " ".join(["mtg", *sys.argv[1:]]))
        try:
            yield
        finally:
            release(path, lock)
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # a command refused, or failed before writing, leaves no empty folder behind
