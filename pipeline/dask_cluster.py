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

SCHEDULERS = "threads, local, local-cuda, tcp://HOST:PORT, gateway or kubernetes"


@contextmanager
def dask_scheduler(
    scheduler: str = "threads", workers: int | None = None, memory_limit: str | None = None
) -> Iterator[Any]:
    """Run the enclosed dask computations on the chosen scheduler.

    Parameters
    ----------
    scheduler : str
        ``threads`` (the threaded scheduler of this process), ``local`` (a LocalCluster of worker processes),
        ``local-cuda`` (dask-cuda's ``LocalCUDACluster``: one worker per GPU of this machine, each declaring the
        ``GPU`` resource that GPU work asks for, :func:`gpu_annotations`),
        ``tcp://HOST:PORT`` (an existing cluster), ``gateway`` (a new cluster from the dask-gateway server set
        in dask's config, ``gateway.address``) or ``kubernetes`` (a dask-kubernetes ``KubeCluster`` from the spec
        in ``DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC``, see docs/deploy.md).
    workers : int, optional
        Worker count for ``local`` (default 2) and ``gateway`` (default 2); for ``local-cuda``, the GPUs used
        (default all).
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
    if scheduler == "local-cuda":
        with local_cuda_cluster(workers, memory_limit) as cluster, Client(cluster) as client:
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


@contextmanager
def local_cuda_cluster(gpus: int | None = None, memory_limit: str | None = None) -> Iterator[Any]:
    """dask-cuda's ``LocalCUDACluster`` on this machine's GPUs, each worker declaring ``resources={"GPU": 1}``.

    Raises
    ------
    MtgError
        When dask-cuda is not installed (the ``gpu`` extra) or the machine has no usable GPU.
    """
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise MtgError("--scheduler local-cuda needs dask-cuda and CuPy: install mine-the-gap[gpu] on a machine "
                       "with an NVIDIA GPU") from None
    from numba import cuda

    if not cuda.is_available():
        raise MtgError("--scheduler local-cuda found no CUDA GPU on this machine (numba finds no CUDA driver)")
    visible = ",".join(str(k) for k in range(gpus)) if gpus else None
    log.info("starting a LocalCUDACluster on %s GPU(s)", gpus or "all")
    try:
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, memory_limit=memory_limit or "auto",
                                   dashboard_address=None, resources={"GPU": 1})
    except Exception as err:  # dask-cuda reports a failed start (driver, NVML) in many exception types
        raise MtgError(f"the LocalCUDACluster did not start: {err}") from None
    with cluster:
        yield cluster


def gpu_annotations(device: str = "auto") -> dict[str, Any]:
    """``dask.annotate`` keywords that send GPU work to the GPU workers of the active distributed cluster.

    On a cluster where some workers declare a ``GPU`` resource (``dask-cuda-worker --resources GPU=1``, the GPU
    worker group of ``mtg deploy kubernetes``, ``--scheduler local-cuda``), tasks annotated ``resources={"GPU": 1}``
    run only there, one at a time per GPU, while the tasks that read the data stay on any worker. Nothing when the
    work is for the CPU (``device="cpu"``), with the threaded scheduler, or when no worker has a GPU (annotated
    tasks would then never run).

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        Where the work was asked to run.

    Returns
    -------
    dict
        ``{"resources": {"GPU": 1}}`` or ``{}``.
    """
    if device == "cpu":
        return {}
    try:
        from distributed import default_client

        workers = default_client().scheduler_info(n_workers=-1)["workers"].values()
    except (ImportError, ValueError):  # no distributed client: the threaded scheduler
        return {}
    if any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers):
        return {"resources": {"GPU": 1}}
    return {}


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
