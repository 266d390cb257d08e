"""Fault injection with real processes: `mtg ingest` killed mid-write (local folder and moto S3) and mid-overwrite,
`mtg run` killed mid-write, object storage that fails some requests (a fault-injecting proxy in front of moto), two
commands writing one folder or nested folders, a full disk.

Each test checks that nothing is lost: a rerun resumes and its stores are byte-identical to a clean run's, a
failed write never looks complete, a previous complete output stays intact. benchmarks/RESULTS.md tabulates them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtg.pipeline.run_lock import LOCK_NAME, output_lock, read_lock
from mtg.pipeline.zarr_store import store_state

MTG = str(Path(sys.executable).parent / "mtg")
STORES = ("reflectance.zarr", "dem.zarr")


@pytest.fixture(scope="module")
def ingest_args(sample_region) -> list[str]:
    """`mtg ingest` of the south-west quarter of the small sample region, in many small regions (64 px chunks)."""
    x0, y0, x1, y1 = sample_region.bbox_lonlat
    bbox = f"{x0},{y0},{(x0 + x1) / 2},{(y0 + y1) / 2}"
    return ["ingest", "--catalog", str(sample_region.catalog), "--bbox", bbox, "--space-chunk", "64",
            "--time-chunk", "1", "--quiet"]


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file of the cubes under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for store in STORES for p in sorted((root / store).rglob("*")) if p.is_file()}


def _s3_files(fs, root: str) -> dict[str, str]:  # noqa: ANN001 - an s3fs filesystem
    """sha256 of every object of the cubes under the S3 prefix ``root``, by relative key."""
    out = {}
    for store in STORES:
        for key in fs.find(f"{root}/{store}"):
            out[key[len(root) + 1:]] = hashlib.sha256(fs.cat_file(key)).hexdigest()
    return out


@pytest.fixture(scope="module")
def clean(ingest_args, tmp_path_factory) -> dict[str, str]:
    """The cubes of an uninterrupted ingest, and (as a second real process started meanwhile) a refused writer."""
    out = tmp_path_factory.mktemp("clean") / "cubes"
    first = subprocess.Popen([MTG, *ingest_args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while read_lock(out) is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run([MTG, *ingest_args, "--out", str(out)], capture_output=True, text=True, timeout=120)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being written by another mtg command" in lines[0]
    assert f"pid {first.pid}" in lines[0]
    assert not (out / LOCK_NAME).exists()  # released on exit
    return _files(out)


def _kill_when(proc: subprocess.Popen, written, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``written()`` is true (some regions written, the store not complete)."""
    deadline = time.monotonic() + timeout
    while not written():
        assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "ingest wrote no region in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_mid_write_local_then_rerun_resumes_byte_identical(ingest_args, clean, tmp_path):
    out = tmp_path / "cubes"
    proc = subprocess.Popen([MTG, *ingest_args, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    progress = out / ".reflectance.zarr.progress"
    _kill_when(proc, lambda: progress.is_dir() and len(list(progress.iterdir())) >= 1)
    assert store_state(str(out / "reflectance.zarr"), {})[0] == "partial"
    assert read_lock(out)["pid"] == proc.pid  # the killed run's lock is left behind ...
    rerun = subprocess.run([MTG, *ingest_args, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "taking over the stale lock" in rerun.stderr  # ... and taken over with a warning
    assert "reflectance.zarr (resumed" in rerun.stdout
    assert _files(out) == clean


def test_sigkill_mid_write_s3_then_rerun_resumes_byte_identical(ingest_args, clean, s3_server):
    import s3fs

    options, bucket = s3_server
    fs = s3fs.S3FileSystem(**options)
    root = f"{bucket}/faults-kill"
    url = f"s3://{root}"
    args = [MTG, *ingest_args, "--out", url, "--storage-options", json.dumps(options)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)

    def written() -> bool:
        fs.invalidate_cache()
        return len(fs.ls(f"{root}/.reflectance.zarr.progress")) >= 1 if fs.exists(
            f"{root}/.reflectance.zarr.progress") else False

    _kill_when(proc, written)
    assert store_state(f"{url}/reflectance.zarr", options)[0] == "partial"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "reflectance.zarr (resumed" in rerun.stdout
    assert _s3_files(fs, root) == clean


def test_sigkill_of_an_overwrite_keeps_the_old_cubes_whole_then_a_rerun_resumes(ingest_args, clean, tmp_path):
    out = tmp_path / "cubes"
    first = subprocess.run([MTG, *ingest_args, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    args = [MTG, *ingest_args, "--out", str(out), "--overwrite"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: any(out.glob(".reflectance.zarr.mtg-new-*.progress/*")))  # the new store half written
    assert _files(out) == clean  # the old stores byte-identical, and complete
    assert all(store_state(str(out / store), {})[0] == "complete" for store in STORES)
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "reflectance.zarr (resumed" in rerun.stdout  # the staging store resumed, then swapped in
    assert _files(out) == clean
    assert not list(out.glob("*mtg-new*")) and not list(out.glob("*mtg-old*"))


class FaultyProxy:
    """An HTTP proxy in front of the moto server that fails some requests the way S3 does under load.

    Of every ``every`` requests, the ``every // 4``-th is answered ``503 SlowDown``, the ``every // 2``-th
    ``500 InternalError`` and the ``3 * every // 4``-th has its connection dropped without an answer; the others are
    forwarded, and so is every request after ``max_faults`` injected faults. With ``fail_puts_after`` set, every
    PUT after that many is answered 503: storage that stays down.
    """

    def __init__(self, endpoint: str, every: int = 20, max_faults: int = 9,
                 fail_puts_after: int | None = None) -> None:
        host, port = endpoint.removeprefix("http://").split(":")
        self.faults = {"503": 0, "500": 0, "dropped": 0}
        self.requests = 0
        self.puts = 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _fail(self, status: int, code: str) -> None:
                body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                with lock:
                    proxy.requests += 1
                    n = proxy.requests
                    proxy.puts += self.command == "PUT"
                    down = fail_puts_after is not None and self.command == "PUT" and proxy.puts > fail_puts_after
                    if sum(proxy.faults.values()) >= max_faults and not down:
                        n = 1  # no more faults: forwarded
                if down or n % every == every // 4:
                    proxy.faults["503"] += 1
                    return self._fail(503, "SlowDown")
                if n % every == every // 2:
                    proxy.faults["500"] += 1
                    return self._fail(500, "InternalError")
                if n % every == 3 * every // 4:
                    proxy.faults["dropped"] += 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()
                return None

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_flaky_s3_is_retried_and_the_cubes_are_whole(ingest_args, clean, s3_server):
    import s3fs

    options, bucket = s3_server
    proxy = FaultyProxy(options["endpoint_url"])
    try:
        flaky = {**options, "endpoint_url": proxy.endpoint}
        root = f"{bucket}/faults-flaky"
        proc = subprocess.run([MTG, *ingest_args, "--out", f"s3://{root}", "--storage-options", json.dumps(flaky)],
                              capture_output=True, text=True, timeout=300)
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr
    assert min(proxy.faults.values()) > 0, proxy.faults
    assert _s3_files(s3fs.S3FileSystem(**options), root) == clean


def test_s3_that_stays_down_fails_in_one_line_and_nothing_looks_complete(ingest_args, s3_server):
    options, bucket = s3_server
    proxy = FaultyProxy(options["endpoint_url"], fail_puts_after=40)
    try:  # fewer botocore retries than its default (4), to fail sooner
        flaky = {**options, "endpoint_url": proxy.endpoint,
                 "config_kwargs": {"retries": {"max_attempts": 2}}}
        url = f"s3://{bucket}/faults-down"
        proc = subprocess.run([MTG, *ingest_args, "--out", url, "--storage-options", json.dumps(flaky)],
                              capture_output=True, text=True, timeout=300)
    finally:
        proxy.close()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "SlowDown" in lines[0], proc.stderr
    for store in STORES:
        assert store_state(f"{url}/{store}", options)[0] != "complete"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs root and mount); skips with the reason where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip() or proc.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_in_one_line_and_keeps_the_previous_output(ingest_args, clean, small_disk):
    previous = small_disk / "previous"
    first = subprocess.run([MTG, *ingest_args, "--out", str(previous)], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = _files(previous)
    assert before == clean
    proc = subprocess.run([MTG, *ingest_args, "--out", str(small_disk / "next")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "No space left on device" in lines[0], proc.stderr
    assert _files(previous) == before
    assert store_state(str(small_disk / "next" / "reflectance.zarr"), {})[0] != "complete"


def test_stale_lock_of_a_dead_process_is_taken_over_and_a_live_one_refused(tmp_path):
    from mtg.pipeline.errors import MtgError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "command": "x"}))
    with output_lock(tmp_path, "mtg test"):
        assert read_lock(tmp_path)["pid"] == os.getpid()
        with pytest.raises(MtgError, match=f"pid {os.getpid()}"), output_lock(tmp_path / "inner", "mtg other"):
            pass
    assert read_lock(tmp_path) is None
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "command": "x"}))
    with pytest.raises(MtgError, match="delete"), output_lock(tmp_path, "mtg test"):
        pass


def _holding(folder: Path) -> subprocess.Popen:
    """A real process holding the output lock of ``folder`` until it is killed."""
    code = ("import sys, time\nfrom mtg.pipeline.run_lock import output_lock\n"
            "with output_lock(sys.argv[1], 'mtg holder'):\n    print('locked', flush=True)\n    time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_is_refused_while_a_folder_above_or_below_its_output_is_locked(tmp_path):
    from mtg.pipeline.errors import MtgError

    for i, (locked, out) in enumerate((("cubes", "."), ("tiles/t1", "."), (".", "cubes"))):
        locked, out = tmp_path / f"run{i}" / locked, tmp_path / f"run{i}" / out
        holder = _holding(locked)
        try:
            proc = subprocess.run([MTG, "ingest", "--out", str(out), "--bbox", "0,0,1,1", "--quiet"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(locked) in lines[0] and f"pid {holder.pid} on" in lines[0], proc.stderr
            assert read_lock(out) is None
            assert read_lock(locked)["pid"] == holder.pid  # the holder's lock untouched
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
    run = tmp_path / "run0"
    with output_lock(run, "mtg test"):  # the killed holder's lock is stale: it refuses nothing
        assert read_lock(run)["pid"] == os.getpid()
    (run / "a" / "b" / "c").mkdir(parents=True)  # below NESTED_DEPTH, and inside a Zarr store: not looked at
    (run / "store.zarr" / "x").mkdir(parents=True)
    for deep in (run / "a" / "b" / "c", run / "store.zarr" / "x"):
        with output_lock(deep, "mtg deep"), output_lock(run, "mtg test"):
            pass
    with output_lock(run / "a" / "b", "mtg nested"), pytest.raises(MtgError, match=f"holds {run / 'a' / 'b'}"):
        with output_lock(run, "mtg test"):
            pass


def _outputs(run: Path) -> dict[str, str]:
    """sha256 of every file of a run folder, by relative path, except the files that record when or how fast the
    run went: the summaries ``ingest.json``, ``segment.json`` and ``timeline.json`` (seconds, MB/s, and whether the
    cubes were written or skipped), the STAC catalog of the results (``created`` times, and checksums of those summaries) and
    the report (it shows the run's time)."""
    timed = ("cubes/ingest.json", "segment/segment.json", "timeline/timeline.json", "report.html")
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file() and str(p.relative_to(run)) not in timed and p.relative_to(run).parts[0] != "stac"}


def test_sigkill_of_mtg_run_mid_write_then_rerun_gives_the_outputs_of_an_uninterrupted_run(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[sample]\nsize_km = 3\nn_dates = 6\n[ingest.chunks]\nspace = 128\n")
    run = tmp_path / "run"
    args = [MTG, "run", "--out", str(run), "--config", str(config), "--quiet"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: any(run.glob("segment/.probability.zarr-*-tmp/zarr.json")))  # segmentation writing
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = _outputs(run)
    run.rename(tmp_path / "resumed")  # the clean run writes the same paths (recorded in its outputs)
    clean = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert resumed == _outputs(run)
