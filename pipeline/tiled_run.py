"""``mtg run --plan``: every tile of a plan as one unit of work on the Dask cluster, resumable, then the world stage.

The run folder holds ``tiles/<tile-id>/`` (each written atomically by :func:`mtg.pipeline.tile_run.run_tile`),
``manifest.parquet`` and the world outputs (:mod:`mtg.pipeline.world_stage`). The manifest is rewritten atomically
after every tile that ends; one row per plan tile:

* ``state``: ``pending``, ``running`` (handed to a worker), ``done``, ``failed`` (its tries of this run used up) or
  ``skipped`` (the plan found no Sentinel-2 scene over it);
* ``attempts`` (over all runs), ``error`` (the last failure in one line), ``ingest_s``, ``segment_s``,
  ``volumes_s`` (measured seconds of the try that finished), ``bytes_written``, ``n_footprints``, ``volumes``
  (``computed`` or why not), ``checksums`` (JSON: SHA-256 of every file of the tile folder), ``code_version``.

Its schema metadata names the plan (a digest of its tiles, catalog and time range): a run folder belongs to one
plan. Rerunning the same command after anything stopped it (SIGKILL of the client, a worker or the scheduler lost)
keeps the tiles that are done and whose folders are complete, and runs the others again; tile outputs are a function
of the inputs only, so the result is the same bytes as an uninterrupted run. A tile that raises is tried again up
to ``--retries`` times, the others go on, and the run ends with the world stage over the tiles that are done, its
summary saying which failed and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtg.pipeline.config import RunConfig
from mtg.pipeline.dask_cluster import dask_scheduler
from mtg.pipeline.errors import MtgError, describe
from mtg.pipeline.plan import read_plan
from mtg.pipeline.table_io import METADATA_KEY, atomic_write
from mtg.pipeline.tile_run import PERIODS_FILE, STAGES, TILE_FILES, run_tile, task_from_row
from mtg.pipeline.world_stage import WorldResult, run_world_stage

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
STATES = ("pending", "running", "done", "failed", "skipped")
#: Measured stages: the planned ones and the tiles' timeline (``timeline.tiles``).
MEASURED = (*STAGES, "timeline")
MANIFEST_COLUMNS = ("tile_id", "state", "attempts", "error", *(f"{s}_s" for s in MEASURED), "bytes_written",
                    "n_footprints", "volumes", "checksums", "code_version")


@dataclass(frozen=True)
class PlanRunResult:
    """What ``mtg run --plan`` did.

    Attributes
    ----------
    out : pathlib.Path
    tiles : int
        Tiles of the plan.
    done, failed, skipped : int
        Tiles in each end state (``done`` counts tiles finished by earlier runs too).
    ran : int
        Tiles this run processed to the end.
    failures : dict
        ``tile_id`` -> the error of each failed tile.
    world : WorldResult or None
        The world stage (None when no tile is done).
    seconds : float
    """

    out: Path
    tiles: int
    done: int
    failed: int
    skipped: int
    ran: int
    failures: dict[str, str]
    world: WorldResult | None
    seconds: float


def code_version() -> str:
    """``mine-the-gap <version>`` and, for a git checkout, ``git <commit>[+dirty]``."""
    from importlib.metadata import version

    text = f"mine-the-gap {version('mine-the-gap')}"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return text
    if commit.returncode != 0:
        return text
    return f"{text}, git {commit.stdout.strip()[:12]}{'+dirty' if dirty.stdout.strip() else ''}"


def plan_digest(plan: gpd.GeoDataFrame, meta: dict[str, Any]) -> str:
    """SHA-256 of what defines a plan's work: tile ids, zones, extents, halos, owned polygons, catalog, time."""
    digest = hashlib.sha256(json.dumps({"catalog": meta["catalog"], "time": meta["time"]}, sort_keys=True).encode())
    for row in plan.sort_values("tile_id").itertuples():
        digest.update(f"{row.tile_id}|{row.epsg}|{row.left!r}|{row.bottom!r}|{row.right!r}|{row.top!r}|"
                      f"{row.halo_m!r}|".encode())
        digest.update(shapely.to_wkb(row.geometry))
    return digest.hexdigest()


def read_manifest(out: Path) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The manifest of the run folder ``out`` and its metadata, or ``(None, {})`` when there is none."""
    import pyarrow.parquet as pq

    path = out / MANIFEST
    if not path.is_file():
        return None, {}
    try:
        meta = json.loads((pq.read_schema(path).metadata or {}).get(METADATA_KEY, b"{}"))
        return pd.read_parquet(path), meta
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types
        raise MtgError(f"the run manifest {path} is unreadable ({err}); move it away to start the run anew") from None


def write_manifest(out: Path, manifest: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Rewrite ``out/manifest.parquet`` atomically, with ``meta`` in its schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(path: Path) -> None:
        table = pa.Table.from_pandas(manifest[list(MANIFEST_COLUMNS)], preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: json.dumps(meta).encode()})
        pq.write_table(table, path)

    atomic_write(out / MANIFEST, write)


def _tile_complete(folder: Path, periods: bool) -> bool:
    return all((folder / name).exists() for name in (*TILE_FILES, *((PERIODS_FILE,) if periods else ())))


#: Values of a tile that has not run yet.
_FRESH = {"state": "pending", "attempts": 0, "error": "", **{f"{s}_s": float("nan") for s in MEASURED},
          "bytes_written": 0, "n_footprints": 0, "volumes": "", "checksums": "", "code_version": ""}


def reconcile(plan: gpd.GeoDataFrame, previous: pd.DataFrame | None, out: Path, periods: bool = False) -> pd.DataFrame:
    """The manifest this run starts from: done tiles whose folders are complete (with ``periods``, holding their
    period layers too) stay done, tiles without scenes are skipped, every other tile is pending (its attempts
    kept)."""
    manifest = pd.DataFrame({"tile_id": plan["tile_id"].astype(str).to_numpy()})
    if previous is not None:
        manifest = manifest.merge(previous[[c for c in MANIFEST_COLUMNS if c in previous]], on="tile_id",
                                  how="left")
    for column, fresh in _FRESH.items():
        manifest[column] = manifest[column].fillna(fresh) if column in manifest else fresh
    manifest["attempts"] = manifest["attempts"].astype(int)
    done = manifest["state"] == "done"
    complete = manifest["tile_id"].map(lambda t: _tile_complete(out / "tiles" / t, periods))
    if (done & ~complete).any():
        log.warning("%d tiles marked done have incomplete folders: running them again", int((done & ~complete).sum()))
    manifest.loc[~(done & complete), "state"] = "pending"
    manifest.loc[plan["scenes"].to_numpy() == 0, ["state", "error"]] = ["skipped", "no Sentinel-2 scene in the plan"]
    return manifest


def _clean_scratch(out: Path) -> Path:
    """Remove what killed runs left behind (temporary tile folders and cubes); return the scratch folder."""
    for pattern in (".*-tmp", ".*-old"):  # the temporary and replaced folders of table_io.atomic_folder
        for stale in (out / "tiles").glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    scratch = out / ".scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) if isinstance(err, MtgError) else describe(err)


class _TileProgress:
    """A live line: tiles done / failed / running, the rate and the estimated time left."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.progress = Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed, {task.fields[running]} running"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("left"),
                                 TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
        self.task = self.progress.add_task("tiles", total=total, completed=done, failed=0, running=0, rate="")
        self.start, self.finished = time.perf_counter(), 0

    def __enter__(self) -> _TileProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, *, finished: bool = False, failed: int, running: int) -> None:
        if finished:
            self.finished += 1
        minutes = (time.perf_counter() - self.start) / 60
        rate = f"{self.finished / minutes:.1f} tiles/min" if self.finished and minutes > 0 else ""
        self.progress.update(self.task, advance=1 if finished else 0, failed=failed, running=running, rate=rate)


def run_plan(plan_path: str | Path, config: RunConfig, progress: bool = True) -> PlanRunResult:
    """Run every tile of the plan ``plan_path`` into the run folder ``config.out``, then the world stage.

    Parameters
    ----------
    plan_path : str or Path
        A plan of ``mtg plan`` (its catalog and time range are in its metadata).
    config : RunConfig
        ``out``; ``plan.retries``; ``dask`` (where tiles run: each tile is one task on one worker core; with the
        threaded scheduler the tiles run one after another in this process); the stage options.
    progress : bool
        Show the live line of tiles.

    Returns
    -------
    PlanRunResult

    Raises
    ------
    MtgError
        When the run folder holds a run of another plan, or is an object-storage URL (tiles are written by the
        workers to a folder they share).
    """
    start = time.perf_counter()
    if "://" in str(config.out):
        raise MtgError(f"--out {config.out}: a planned run writes its tiles from the workers into a folder they "
                       "share (local or a network file system); object-storage URLs are not supported for it yet")
    plan, meta = read_plan(plan_path)
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    digest = plan_digest(plan, meta)
    previous, previous_meta = read_manifest(out)
    if previous is not None and previous_meta.get("plan_digest") != digest:
        raise MtgError(f"{out} holds a run of another plan ({previous_meta.get('plan', '?')}); give another --out, "
                       "or the plan it was run with")
    manifest = reconcile(plan, previous, out, config.timeline.tiles)
    run_meta = {"plan": str(Path(plan_path)), "plan_digest": digest, "catalog": meta["catalog"], "time": meta["time"]}
    write_manifest(out, manifest, run_meta)
    scratch = _clean_scratch(out)
    rows = {str(r["tile_id"]): r for _, r in plan.iterrows()}
    todo = deque(manifest.loc[manifest["state"] == "pending", "tile_id"])
    done_before = int((manifest["state"] == "done").sum())
    log.info("plan %s: %d tiles, %d done before, %d to run, %d without scenes", plan_path, len(plan), done_before,
             len(todo), int((manifest["state"] == "skipped").sum()))
    version = code_version()
    retries = config.plan.retries
    tries: dict[str, int] = {}
    ran = 0
    index = pd.Index(manifest["tile_id"])

    def finish(tile_id: str, record: dict[str, Any] | None, error: BaseException | None) -> bool:
        """Record one ended try; returns True when the tile should be tried again."""
        nonlocal ran
        k = index.get_loc(tile_id)
        manifest.loc[k, "attempts"] = int(manifest.loc[k, "attempts"]) + 1
        tries[tile_id] = tries.get(tile_id, 0) + 1
        again = False
        if record is not None:
            ran += 1
            manifest.loc[k, ["state", "error", "bytes_written", "n_footprints", "volumes", "checksums",
                             "code_version"]] = ["done", "", record["bytes_written"], record["n_footprints"],
                                                 record["volumes"], json.dumps(record["checksums"], sort_keys=True),
                                                 version]
            for stage, seconds in record["seconds"].items():
                manifest.loc[k, f"{stage}_s"] = seconds
        else:
            again = tries[tile_id] <= retries
            manifest.loc[k, ["state", "error"]] = ["pending" if again else "failed", _one_line(error)]
            log.warning("tile %s failed (try %d of %d): %s", tile_id, tries[tile_id], retries + 1,
                        _one_line(error))
        write_manifest(out, manifest, run_meta)
        return again

    def mark_running(tile_id: str) -> None:
        manifest.loc[index.get_loc(tile_id), "state"] = "running"
        write_manifest(out, manifest, run_meta)

    def task(tile_id: str):  # noqa: ANN202 - a TileTask
        return task_from_row(rows[tile_id], meta["catalog"], meta["time"])

    d = config.dask
    # the world stage (linking, land use) runs on the same scheduler as the tiles
    with dask_scheduler(d.scheduler, d.workers, d.memory_limit) as client:
        with _TileProgress(len(plan), done_before, progress) as bar:
            bar.update(failed=0, running=0)
            if client is None:
                while todo:
                    tile_id = todo.popleft()
                    mark_running(tile_id)
                    bar.update(failed=int((manifest["state"] == "failed").sum()), running=1)
                    try:
                        record, error = run_tile(task(tile_id), config, str(out), str(scratch)), None
                    except Exception as err:  # noqa: BLE001 - any failure of one tile is recorded, the run goes on
                        record, error = None, err
                    if finish(tile_id, record, error):
                        todo.append(tile_id)
                    bar.update(finished=record is not None or manifest.loc[index.get_loc(tile_id), "state"] == "failed",
                               failed=int((manifest["state"] == "failed").sum()), running=0)
            else:
                _run_on_cluster(client, todo, task, config, out, scratch, finish, mark_running, bar, manifest)
        failed = manifest[manifest["state"] == "failed"]
        done = manifest.loc[manifest["state"] == "done", "tile_id"].tolist()
        failures = dict(zip(failed["tile_id"], failed["error"]))
        world = run_world_stage(out, done, config, len(plan), failures) if done else None
    shutil.rmtree(scratch, ignore_errors=True)
    return PlanRunResult(out=out, tiles=len(plan), done=len(done), failed=len(failed),
                         skipped=int((manifest["state"] == "skipped").sum()), ran=ran, failures=failures, world=world,
                         seconds=time.perf_counter() - start)


def _run_on_cluster(client, todo, task, config, out, scratch, finish, mark_running, bar, manifest) -> None:  # noqa: ANN001
    """Tiles as tasks of a distributed cluster, at most two per worker thread in flight."""
    from distributed import as_completed
    from distributed.client import CancelledError

    threads = sum(client.nthreads().values()) or 1
    running: dict[Any, str] = {}
    lost = MtgError(f"lost the Dask scheduler {client.scheduler.address}: the tiles done so far are kept; rerun the "
                    "same command (with a scheduler) to resume")

    def submit(tile_id: str) -> None:
        try:
            future = client.submit(run_tile, task(tile_id), config, str(out), str(scratch), pure=False,
                                   key=f"tile-{tile_id}-{time.monotonic_ns()}")
        except (OSError, RuntimeError):  # a closed comm or client: the scheduler is gone
            raise lost from None
        running[future] = tile_id
        mark_running(tile_id)
        queue.add(future)

    queue = as_completed()
    while todo and len(running) < 2 * threads:
        submit(todo.popleft())
    bar.update(failed=0, running=len(running))
    for future in queue:
        tile_id = running.pop(future)
        try:
            record, error = future.result(), None
        except Exception as err:  # noqa: BLE001 - a failed tile (or a worker lost beyond dask's retries)
            if isinstance(err, CancelledError) or client.status not in ("running", "newly-created"):
                raise lost from None  # the scheduler is gone (its futures are cancelled): not the tile's failure
            record, error = None, err
        if finish(tile_id, record, error):
            todo.append(tile_id)
        while todo and len(running) < 2 * threads:
            submit(todo.popleft())
        ended = record is not None or manifest.loc[manifest["tile_id"] == tile_id, "state"].iloc[0] == "failed"
        bar.update(finished=ended, failed=int((manifest["state"] == "failed").sum()), running=len(running))
