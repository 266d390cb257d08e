"""Dask schedulers, and signing of hrefs on the workers at read time."""

from __future__ import annotations

import os

import planetary_computer
import pytest
from distributed import WorkerPlugin
from odc.geo.geom import box

from mtg.pipeline.catalogs import resolve_source
from mtg.pipeline.config import DaskConfig, IngestConfig
from mtg.pipeline.dask_cluster import dask_scheduler
from mtg.pipeline.errors import MtgError
from mtg.pipeline.run import run_ingest


class RecordSigning(WorkerPlugin):
    """Replaces Planetary Computer signing on a worker by a recorder that logs each href it signs."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def setup(self, worker) -> None:  # noqa: ANN001 - distributed's interface
        path = os.path.join(self.log_dir, f"worker-{os.getpid()}.log")

        def sign_url(url: str, *args, **kwargs) -> str:
            with open(path, "a") as f:
                f.write(url + "\n")
            return url

        planetary_computer.sign_url = sign_url


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["odc-stac", "stackstac"])
def test_hrefs_are_signed_by_the_workers_when_they_read(sample_region, tmp_path, monkeypatch, loader):
    def never_here(url, *args, **kwargs):
        raise AssertionError(f"{url} was signed in the client process, at graph-build time")

    monkeypatch.setattr(planetary_computer, "sign_url", never_here)
    source = resolve_source(str(sample_region.catalog)).model_copy(update={"signing": "planetary-computer"})
    cfg = IngestConfig(out=str(tmp_path / "out"), loader=loader, time="/".join(sample_region.time_range),
                       chunks={"time": 4, "space": 128})
    logs = tmp_path / "signed"
    logs.mkdir()
    dask_cfg = DaskConfig(scheduler="local", workers=2, memory_limit="1GiB")
    with dask_scheduler(dask_cfg.scheduler, dask_cfg.workers, dask_cfg.memory_limit) as client:
        client.register_plugin(RecordSigning(str(logs)))
        result = run_ingest(cfg, client, source=source,
                            aoi=box(*sample_region.bounds, f"EPSG:{sample_region.epsg}"), progress=False)
    assert result.reflectance_status == "written"
    signed = [line for f in logs.iterdir() for line in f.read_text().splitlines()]
    assert len(list(logs.iterdir())) >= 1
    assert any(s.endswith("_B02_10m.tif") for s in signed) and any(s.endswith("_SCL_20m.tif") for s in signed)
    assert any("cop-dem-glo-30" in s for s in signed)


def test_unknown_scheduler_and_unreachable_cluster_are_named():
    with pytest.raises(MtgError, match="scheduler 'slurm' is not one of"):
        with dask_scheduler("slurm"):
            pass
    with pytest.raises(MtgError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        with dask_scheduler("tcp://127.0.0.1:9"):
            pass


def test_gateway_without_a_server_is_explained(monkeypatch):
    monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    with pytest.raises(MtgError, match="dask-gateway server"):
        with dask_scheduler("gateway"):
            pass
