"""Where dask runs: local threads, a LocalCluster, an existing cluster by address, or dask-gateway."""

from __future__ import annotations

import logging
from collections.abc import Iterator
import sys
from contextlib import contextmanager, nullcontext
from typing import Any

import dask
from dask.utils import parse_bytes

from mtg.pipeline.errors import MtgError

log = logging.getLogger(__name__)

SCHEDULERS = "threads, local, tcp://HOST:PORT, gateway or kubernetes"


@contextmanager
def dask_scheduler(
    scheduler: str = "threads", workers: int | None = None, memory_limit: str | None = None
) -> Iterator[Any]:
    """Run the enclosed dask computations on the chosen scheduler.

    Parameters
    ----------
    scheduler : str
        ``threads`` (the threaded scheduler of this process), ``local`` (a LocalCluster of worker processes),
        ``tcp://HOST:PORT`` (an existing cluster), ``gateway`` (a new cluster from the dask-gateway server set
        in dask's config, ``gateway.address``) or ``kubernetes`` (a dask-kubernetes ``KubeCluster`` from the spec
        in ``DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC``, see docs/deploy.md).
    workers : int, optional
        Worker count for ``local`` (default 2) and ``gateway`` (default 2).
    memory_limit : str, optional
        Memory limit per worker for ``local``, for example ``"2GiB"``.

    Yields
    ------
    distributed.Client or None
        The client, or None for ``threads``.
    """
    if scheduler == "threads":
        with dask.config.set(scheduler="threads"):
            yield None
        return
    from distributed import Client, LocalCluster

    # importing distributed sets its loggers to INFO (dask's logging config): its start-up chatter would bury the
    # run's own lines and progress; its warnings and errors still show
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if scheduler == "local":
        n = workers or 2
        log.info("starting a LocalCluster of %d worker processes (memory limit %s each)", n, memory_limit or "auto")
        # GDAL's block cache defaults to 5% of the machine's memory per process; under a worker memory limit
        # it gets a tenth of that limit instead, so reads cannot push a worker over it.
        env = {"GDAL_CACHEMAX": str(max(16, parse_bytes(memory_limit) // 10 // 2**20))} if memory_limit else {}
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=memory_limit or "auto",
                          dashboard_address=None, env=env) as cluster, Client(cluster) as client:
            yield client
        return
    if scheduler.startswith("tcp://"):
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise MtgError(f"cannot reach the dask scheduler at {scheduler}: {err}") from None
        with client:
            log.info("connected to the dask cluster at %s (%d workers)", scheduler,
                     len(client.scheduler_info()["workers"]))
            yield client
        return
    if scheduler == "gateway":
        from mtg.pipeline.deploy import gateway_cluster  # one-line errors: address, auth, options, failed start

        with gateway_cluster(workers) as client:
            yield client
        return
    if scheduler == "kubernetes":
        from mtg.pipeline.deploy import kubernetes_cluster  # KubeCluster from DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC

        with kubernetes_cluster(workers) as client:
            yield client
        return
    raise MtgError(f"scheduler {scheduler!r} is not one of {SCHEDULERS}")


class DaskProgress:
    """Computes delayed dask work with dask's own progress bar of tasks, on whichever scheduler is active."""

    def __init__(self, client: Any = None, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled

    def __call__(self, delayed: Any, label: str) -> None:
        """Compute ``delayed``, announcing ``label`` and showing the share of finished tasks."""
        if self.enabled:
            print(label, file=sys.stderr, flush=True)
        if self.client is not None:
            from distributed import progress

            future = self.client.compute(delayed)
            if self.enabled:
                progress(future, notebook=False)
            future.result()
            return
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr) if self.enabled else nullcontext():
            dask.compute(delayed)
