"""Where a global rerun runs on Kubernetes: dask-kubernetes operator resources sized from a plan, and the clusters
that ``--scheduler kubernetes`` and ``--scheduler gateway`` open, with one-line errors.

:func:`render_kubernetes` turns a plan of ``mtg plan`` and a run config into the manifests of one rerun
(``mtg deploy kubernetes``):

* ``run-config.yaml``: a ConfigMap with the run config (``config.yaml``) and, when small enough, the plan itself;
* ``shared-volume.yaml``: the ReadWriteMany PersistentVolumeClaim that the job and the workers share as ``--out``
  (planned runs write tiles from the workers into one folder), sized from the plan's estimated outputs;
* ``daskjob.yaml``: a ``DaskJob`` whose runner pod runs ``mtg run --plan ... --out ... --scheduler
  $(DASK_SCHEDULER_ADDRESS)`` against the ``DaskCluster`` the operator creates with it (scheduler and the CPU
  worker group), object-storage credentials from a Secret (``envFrom``; never in a manifest);
* ``gpu-workers.yaml``: a ``DaskWorkerGroup`` of ``dask-cuda-worker`` pods with ``nvidia.com/gpu`` limits, node
  selector and tolerations (only with GPUs);
* ``autoscaler.yaml``: a ``DaskAutoscaler`` of the CPU worker group between 1 and the sized maximum;
* ``interactive/daskcluster.yaml``: the same cluster as a standing ``DaskCluster`` (``--scheduler kubernetes``
  opens it with dask-kubernetes' ``KubeCluster``);
* ``sizing.json``: how the cluster was sized.

Sizing: the plan's CPU-seconds (segmentation excluded when GPU workers run it) over the target wall time give the
worker cores, never more than one core per tile (a tile is one task on one core) nor fewer than needed for the
longest tile; GPU-seconds over the target give the GPU workers, up to ``gpus``.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from mtg.pipeline.config import RunConfig
from mtg.pipeline.errors import MtgError, describe, one_line
from mtg.pipeline.plan import segmentation_seconds

#: Images built from ``deploy/docker`` (tags follow the package version).
DEFAULT_IMAGE = "ghcr.io/mine-the-gap/mtg:0.1.0"
DEFAULT_GPU_IMAGE = "ghcr.io/mine-the-gap/mtg-gpu:0.1.0"
OPERATOR_API = "kubernetes.dask.org/v1"
#: Kubernetes keeps ConfigMaps under 1 MiB; a plan above this goes through object storage (``plan_url``).
CONFIGMAP_PLAN_LIMIT = 900 * 1024
CONFIG_MOUNT = "/etc/mtg"
SHARED_MOUNT = "/shared"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class ClusterSize:
    """The cluster a plan needs to finish in about its target wall time.

    Attributes
    ----------
    tiles : int
        Tiles with scenes (the tasks).
    cpu_core_hours, gpu_hours : float
        Work on the CPU workers (segmentation left out when GPU workers take it) and on the GPUs.
    longest_tile_s : float
        Estimated CPU-seconds of the longest tile: no cluster finishes faster.
    target_hours : float
        The wall time asked for.
    worker_cores : int
        Cores (and threads) per CPU worker.
    worker_memory_gib : float
        Memory request and limit per CPU worker.
    cpu_workers : int
        CPU workers (the autoscaler's maximum and the initial replicas).
    gpu_workers : int
        GPU workers (one GPU each).
    predicted_hours : float
        Wall time on that cluster (the plan's estimates; the larger of the CPU and GPU shares and the longest tile).
    shared_gib : int
        Size of the shared volume: 1.5 x the estimated outputs plus 10 GiB.
    """

    tiles: int
    cpu_core_hours: float
    gpu_hours: float
    longest_tile_s: float
    target_hours: float
    worker_cores: int
    worker_memory_gib: float
    cpu_workers: int
    gpu_workers: int
    predicted_hours: float
    shared_gib: int


def size_cluster(plan: Any, *, target_hours: float = 6.0, worker_cores: int = 4, memory_per_core_gib: float = 4.0,
                 gpus: int = 0, max_workers: int = 500) -> ClusterSize:
    """Size the CPU and GPU worker groups of a plan's rerun (see the module's docstring).

    Raises
    ------
    MtgError
        When a parameter is out of range or the plan has no tile with scenes.
    """
    if target_hours <= 0 or worker_cores < 1 or memory_per_core_gib <= 0 or gpus < 0 or max_workers < 1:
        raise MtgError(f"target hours {target_hours}, worker cores {worker_cores}, memory per core "
                       f"{memory_per_core_gib} GiB and max workers {max_workers} must be positive, GPUs {gpus} at "
                       "least 0")
    active = plan[plan["scenes"] > 0]
    if not len(active):
        raise MtgError("the plan has no tile with scenes: nothing to run")
    segment_s = segmentation_seconds(active)
    cpu_s = float(active["est_cpu_s"].sum()) - (segment_s if gpus else 0.0)
    gpu_s = float(active["est_gpu_s"].sum()) if gpus else 0.0
    longest = float(active["est_cpu_s"].max())
    target_s = target_hours * 3600.0
    cores = math.ceil(cpu_s / max(target_s, longest))
    cpu_workers = max(1, min(math.ceil(cores / worker_cores), math.ceil(len(active) / worker_cores), max_workers))
    gpu_workers = max(1, min(math.ceil(gpu_s / target_s), gpus)) if gpus else 0
    wall_s = max(cpu_s / (cpu_workers * worker_cores), gpu_s / gpu_workers if gpu_workers else 0.0, longest)
    outputs_gib = float(active["est_output_bytes"].sum()) / 2**30
    return ClusterSize(
        tiles=len(active), cpu_core_hours=cpu_s / 3600, gpu_hours=gpu_s / 3600, longest_tile_s=longest,
        target_hours=target_hours, worker_cores=worker_cores, worker_memory_gib=worker_cores * memory_per_core_gib,
        cpu_workers=cpu_workers, gpu_workers=gpu_workers, predicted_hours=wall_s / 3600,
        shared_gib=math.ceil(outputs_gib * 1.5) + 10)


def _quantity_gib(gib: float) -> str:
    """A Kubernetes memory quantity in Mi (exact for fractional GiB)."""
    return f"{int(round(gib * 1024))}Mi"


def _scheduler_pod(image: str, secret: str, memory_gib: float) -> dict[str, Any]:
    probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    return {"containers": [{
        "name": "scheduler", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["dask", "scheduler"], "args": ["--dashboard-address", ":8787"],
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "1", "memory": _quantity_gib(memory_gib)},
                      "limits": {"memory": _quantity_gib(memory_gib)}},
        "readinessProbe": probe | {"initialDelaySeconds": 5, "periodSeconds": 10},
        "livenessProbe": probe | {"initialDelaySeconds": 15, "periodSeconds": 20},
        "envFrom": [{"secretRef": {"name": secret, "optional": True}}],
    }]}


def _scheduler_service(cluster: str) -> dict[str, Any]:
    return {"type": "ClusterIP",
            "selector": {"dask.org/cluster-name": cluster, "dask.org/component": "scheduler"},
            "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786, "targetPort": "tcp-comm"},
                      {"name": "http-dashboard", "protocol": "TCP", "port": 8787, "targetPort": "http-dashboard"}]}


def _shared_volume(claim: str | None) -> tuple[list[dict], list[dict]]:
    if claim is None:
        return [], []
    return ([{"name": "shared", "persistentVolumeClaim": {"claimName": claim}}],
            [{"name": "shared", "mountPath": SHARED_MOUNT}])


def _worker_pod(image: str, secret: str, size: ClusterSize, claim: str | None, *, gpu: bool,
                node_selector: dict[str, str] | None, tolerations: list[dict] | None) -> dict[str, Any]:
    volumes, mounts = _shared_volume(claim)
    memory = _quantity_gib(size.worker_memory_gib)
    memory_arg = f"{int(round(size.worker_memory_gib * 1024))}MiB"  # dask's spelling of the same bytes
    if gpu:
        # one GPU per worker; dask-cuda sizes threads and memory from the device and the pod's limits
        command = ["dask-cuda-worker"]
        args = ["--name", "$(DASK_WORKER_NAME)", "--nthreads", "1", "--memory-limit", memory_arg,
                "--resources", "GPU=1", "--dashboard-address", "8788"]
        resources = {"requests": {"cpu": str(size.worker_cores), "memory": memory},
                     "limits": {"memory": memory, "nvidia.com/gpu": "1"}}  # quantities are strings in the CRD
    else:
        command = ["dask", "worker"]
        args = ["--name", "$(DASK_WORKER_NAME)", "--nthreads", str(size.worker_cores), "--nworkers", "1",
                "--memory-limit", memory_arg, "--dashboard", "--dashboard-address", "8788"]
        resources = {"requests": {"cpu": str(size.worker_cores), "memory": memory}, "limits": {"memory": memory}}
    container = {
        "name": "worker", "image": image, "imagePullPolicy": "IfNotPresent", "command": command, "args": args,
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
        "resources": resources,
        # GDAL's block cache: a tenth of the worker's memory instead of 5% of the node's
        "env": [{"name": "GDAL_CACHEMAX", "value": str(max(64, int(size.worker_memory_gib * 1024) // 10))},
                {"name": "OMP_NUM_THREADS", "value": "1"}],
        "envFrom": [{"secretRef": {"name": secret, "optional": True}}],
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    if gpu:
        pod["nodeSelector"] = dict(GPU_NODE_SELECTOR if node_selector is None else node_selector)
        pod["tolerations"] = list(GPU_TOLERATIONS if tolerations is None else tolerations)
    return pod


def _meta(name: str, namespace: str | None, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "mine-the-gap",
                                                      "app.kubernetes.io/component": component}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _load_plan(plan: Any) -> tuple[Any, dict[str, Any], bytes]:
    """The plan frame, its metadata and its GeoParquet bytes, from a path or a ``(frame, metadata)`` pair."""
    from mtg.pipeline.plan import read_plan, write_plan

    if isinstance(plan, (str, Path)):
        frame, meta = read_plan(plan)
        return frame, meta, Path(plan).read_bytes()
    frame, meta = plan
    with tempfile.TemporaryDirectory() as tmp:
        path = write_plan(frame, Path(tmp) / "plan.parquet", meta)
        return frame, meta, Path(path).read_bytes()


def _dump(path: Path, docs: list[dict[str, Any]], header: str) -> Path:
    text = "".join("---\n" + yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}\n# Generated by `mtg deploy kubernetes` (mtg.pipeline.deploy.render_kubernetes).\n"
                    + text, encoding="utf-8")
    return path


def render_kubernetes(plan: Any, config: RunConfig, out_dir: str | Path, *, name: str = "mtg-world",
                      namespace: str | None = None, image: str = DEFAULT_IMAGE, gpu_image: str = DEFAULT_GPU_IMAGE,
                      out: str | None = None, plan_url: str | None = None, points: str | None = None,
                      run_args: list[str] | None = None, secret: str = "mtg-object-storage",
                      volume_claim: str = "mtg-shared", storage_class: str | None = None,
                      target_hours: float = 6.0, worker_cores: int = 4, memory_per_core_gib: float = 4.0,
                      gpus: int = 0, max_workers: int = 500, gpu_node_selector: dict[str, str] | None = None,
                      gpu_tolerations: list[dict] | None = None) -> list[Path]:
    """Write the dask-kubernetes operator manifests of one planned rerun into ``out_dir``.

    Parameters
    ----------
    plan : str, Path or (GeoDataFrame, dict)
        A plan file of ``mtg plan``, or a plan and its metadata (:func:`mtg.pipeline.plan.read_plan`).
    config : RunConfig
        The run config, shipped in the ConfigMap (its ``dask`` section is ignored: the job runs on the cluster).
    out_dir : str or Path
        Folder of the manifests (created).
    name : str
        Name of the DaskJob and of the DaskCluster the operator creates for it.
    namespace : str, optional
        Namespace of every object (default: kubectl's current one).
    image, gpu_image : str
        Images of ``deploy/docker`` (CPU: scheduler, job, CPU workers; GPU: GPU workers).
    out : str, optional
        ``--out`` of the run; default ``/shared/<name>`` on the shared volume.
    plan_url : str, optional
        Where the job's init container fetches the plan from (``s3://...``, with the Secret's credentials). Without
        it the plan travels in the ConfigMap, which holds at most about 1 MiB.
    points : str, optional
        ``--points`` of the run (a path on the shared volume or an object-storage URL).
    run_args : list of str, optional
        More ``mtg run`` options (``--lon-col Longitude``, ...).
    secret : str
        Name of the Secret whose keys become environment variables (``AWS_ACCESS_KEY_ID``, ...) of the job and
        the workers. It is referenced, never written.
    volume_claim, storage_class : str
        The shared ReadWriteMany volume claim and its storage class (default: the cluster's).
    target_hours, worker_cores, memory_per_core_gib, gpus, max_workers
        Sizing (:func:`size_cluster`).
    gpu_node_selector, gpu_tolerations : optional
        Scheduling of the GPU workers (default: ``nvidia.com/gpu.present=true`` and the ``nvidia.com/gpu`` taint).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    MtgError
        On a bad name, sizing, or a plan too large for a ConfigMap without ``plan_url``.
    """
    from dask_kubernetes.operator.validation import validate_cluster_name

    try:
        validate_cluster_name(name)
    except Exception as err:  # noqa: BLE001 - dask_kubernetes' ValidationError
        raise MtgError(f"cluster name {name!r}: {one_line(str(err))}") from None
    frame, meta, plan_bytes = _load_plan(plan)
    if plan_url is None and len(plan_bytes) > CONFIGMAP_PLAN_LIMIT:
        raise MtgError(f"the plan ({len(plan_bytes) / 2**20:.1f} MiB) is too large for a ConfigMap (1 MiB): copy it to "
                       "object storage and pass its URL (--plan-url s3://bucket/plan.parquet)")
    size = size_cluster(frame, target_hours=target_hours, worker_cores=worker_cores,
                        memory_per_core_gib=memory_per_core_gib, gpus=gpus, max_workers=max_workers)
    out_dir = Path(out_dir)
    url_out = out is not None and "://" in out
    claim = None if url_out else volume_claim
    run_out = out or f"{SHARED_MOUNT}/{name}"
    scheduler_memory = 4.0 if size.tiles <= 5000 else 8.0
    written: list[Path] = []

    # the run config, and the plan when it fits
    run_config = config.model_dump(mode="json", exclude={"dask"})
    configmap: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-run", namespace,
                                                                                             "run-config"),
                                 "data": {"config.yaml": yaml.safe_dump(run_config, sort_keys=False)}}
    if plan_url is None:
        import base64

        configmap["binaryData"] = {"plan.parquet": base64.b64encode(plan_bytes).decode("ascii")}
    written.append(_dump(out_dir / "run-config.yaml", [configmap], f"Run config of {name} ({meta.get('catalog')}, "
                                                                   f"{meta.get('time')})"))
    if claim is not None:
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(claim, namespace, "shared"),
               "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{size.shared_gib}Gi"}}}}
        if storage_class:
            pvc["spec"]["storageClassName"] = storage_class
        written.append(_dump(out_dir / "shared-volume.yaml", [pvc], "Shared run folder of the job and the workers"))

    cpu_pod = _worker_pod(image, secret, size, claim, gpu=False, node_selector=None, tolerations=None)
    cluster_spec = {"worker": {"replicas": size.cpu_workers, "spec": cpu_pod},
                    "scheduler": {"spec": _scheduler_pod(image, secret, scheduler_memory),
                                  "service": _scheduler_service(name)}}

    # the job runner: mtg run --plan on the cluster
    volumes, mounts = _shared_volume(claim)
    volumes = [{"name": "run-config", "configMap": {"name": f"{name}-run"}}] + volumes
    mounts = [{"name": "run-config", "mountPath": CONFIG_MOUNT, "readOnly": True}] + mounts
    plan_path = f"{CONFIG_MOUNT}/plan.parquet"
    init: list[dict[str, Any]] = []
    if plan_url is not None:
        volumes.append({"name": "plan", "emptyDir": {}})
        mounts.append({"name": "plan", "mountPath": "/var/run/mtg-plan"})
        plan_path = "/var/run/mtg-plan/plan.parquet"
        init.append({"name": "fetch-plan", "image": image, "imagePullPolicy": "IfNotPresent",
                     "command": ["python", "-c", "import sys, fsspec\nwith fsspec.open(sys.argv[1], 'rb') as src, "
                                 "open(sys.argv[2], 'wb') as dst: dst.write(src.read())"],
                     "args": [plan_url, plan_path],
                     "envFrom": [{"secretRef": {"name": secret}}],
                     "volumeMounts": [{"name": "plan", "mountPath": "/var/run/mtg-plan"}]})
    args = ["run", "--plan", plan_path, "--config", f"{CONFIG_MOUNT}/config.yaml", "--out", run_out,
            "--scheduler", "$(DASK_SCHEDULER_ADDRESS)", "--quiet"]
    if points:
        args += ["--points", points]
    args += list(run_args or [])
    job_pod: dict[str, Any] = {
        "restartPolicy": "Never",  # a failed run is resumed by applying the job again, not by a restart loop
        "containers": [{
            "name": "job", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["mtg"], "args": args,
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
            "envFrom": [{"secretRef": {"name": secret}}],
            "volumeMounts": mounts}],
        "volumes": volumes}
    if init:
        job_pod["initContainers"] = init
    job = {"apiVersion": OPERATOR_API, "kind": "DaskJob", "metadata": _meta(name, namespace, "job"),
           "spec": {"job": {"spec": job_pod}, "cluster": {"spec": cluster_spec}}}
    written.append(_dump(out_dir / "daskjob.yaml", [job], f"mtg run --plan of {name}: {size.tiles} tiles, "
                                                         f"{size.cpu_core_hours:.1f} CPU core-hours, "
                                                         f"{size.cpu_workers} x {size.worker_cores}-core workers"))
    if size.gpu_workers:
        group = {"apiVersion": OPERATOR_API, "kind": "DaskWorkerGroup", "metadata": _meta(f"{name}-gpu", namespace,
                                                                                          "gpu-workers"),
                 "spec": {"cluster": name, "worker": {
                     "replicas": size.gpu_workers,
                     "spec": _worker_pod(gpu_image, secret, size, claim, gpu=True, node_selector=gpu_node_selector,
                                         tolerations=gpu_tolerations)}}}
        written.append(_dump(out_dir / "gpu-workers.yaml", [group], f"GPU workers of {name} ({size.gpu_hours:.3g} "
                                                                    "GPU-hours)"))
    scaler = {"apiVersion": OPERATOR_API, "kind": "DaskAutoscaler", "metadata": _meta(name, namespace, "autoscaler"),
              "spec": {"cluster": name, "minimum": 1, "maximum": size.cpu_workers}}
    written.append(_dump(out_dir / "autoscaler.yaml", [scaler], f"CPU workers of {name} between 1 and "
                                                                f"{size.cpu_workers}"))
    interactive = f"{name}-interactive"
    standing = {"apiVersion": OPERATOR_API, "kind": "DaskCluster", "metadata": _meta(interactive, namespace, "cluster"),
                "spec": {"worker": cluster_spec["worker"],
                         "scheduler": {"spec": cluster_spec["scheduler"]["spec"],
                                       "service": _scheduler_service(interactive)}}}
    written.append(_dump(out_dir / "interactive" / "daskcluster.yaml", [standing],
                         f"A standing cluster like {name}'s, for --scheduler kubernetes (KubeCluster)"))
    sizing = out_dir / "sizing.json"
    sizing.write_text(json.dumps({"name": name, "catalog": meta.get("catalog"), "time": meta.get("time"),
                                  "image": image, "gpu_image": gpu_image, "out": run_out, **asdict(size)}, indent=2)
                      + "\n", encoding="utf-8")
    written.append(sizing)
    return written


# ----------------------------------------------------------------------------------------------- opening clusters

@contextmanager
def gateway_cluster(workers: int | None = None, address: str | None = None, **options: Any) -> Iterator[Any]:
    """A new cluster of the dask-gateway server (``gateway.address`` of dask's config, or ``address``), scaled to
    ``workers`` (default 2), with its client; shut down on exit.

    ``options`` are the server's cluster options (``worker_cores``, ``worker_memory``, ``worker_gpus`` of
    ``deploy/jupyterhub``).

    Raises
    ------
    MtgError
        In one line: no address set, the server unreachable, authentication refused, options refused, or a cluster
        that failed to start (the server's reason, e.g. a scheduler command it cannot find).
    """
    import dask
    from aiohttp import ClientResponseError
    from dask_gateway import Gateway
    from dask_gateway.client import GatewayClusterError

    address = address or dask.config.get("gateway.address", None)
    if not address:
        raise MtgError("scheduler 'gateway' needs a dask-gateway server: set DASK_GATEWAY__ADDRESS "
                       "(or gateway.address in the dask config)")
    gateway = Gateway(address)
    failure = None
    try:
        cluster = gateway.new_cluster(**options) if options else gateway.new_cluster()
    except GatewayClusterError as err:
        failure = f"the dask-gateway server at {address} could not start a cluster: {one_line(str(err))[:500]}"
    except ClientResponseError as err:  # HTTP 401/403 of the server (or a proxy in front of it)
        if err.status in (401, 403):
            failure = (f"the dask-gateway server at {address} refused the authentication "
                       f"({dask.config.get('gateway.auth.type', 'default')}): HTTP {err.status} {err.message}")
        else:
            failure = f"the dask-gateway server at {address} answered HTTP {err.status} {err.message}"
    except (OSError, TimeoutError) as err:
        failure = f"cannot reach the dask-gateway server at {address}: {describe(err)}"
    except ValueError as err:  # dask_gateway: HTTP 404/422, refused options
        failure = f"the dask-gateway server at {address} refused the request: {one_line(str(err))[:300]}"
    if failure is not None:
        # a cluster that failed to start leaves its own Gateway behind: collect it now, while no lock is held,
        # not in a later __del__ (which can run inside distributed's loop-runner lock and deadlock)
        gc.collect()
        _close_gateway(gateway)
        raise MtgError(failure)
    try:
        with cluster:
            cluster.scale(workers or 2)
            with cluster.get_client() as client:
                yield client
    finally:
        _close_gateway(cluster.gateway)
        _close_gateway(gateway)


def _close_gateway(gateway: Any) -> None:
    """Close a dask-gateway client once: dask-gateway 2026.3 closes again in ``__del__``, which fails on distributed
    2026's stopped loop runner ("Exception ignored in Gateway.__del__") or can deadlock on its lock."""
    if "_loop_runner" in gateway.__dict__:
        try:
            gateway.close()
        finally:
            gateway.__dict__.pop("_loop_runner", None)


@contextmanager
def kubernetes_cluster(workers: int | None = None, spec: str | Path | None = None) -> Iterator[Any]:
    """A dask-kubernetes ``KubeCluster`` from a rendered ``DaskCluster`` (``interactive/daskcluster.yaml`` of
    :func:`render_kubernetes`; ``spec``, else ``kubernetes.custom-cluster-spec`` of dask's config), scaled to
    ``workers`` when given, with its client; deleted on exit.

    Raises
    ------
    MtgError
        In one line: dask-kubernetes not installed, no spec, no Kubernetes configuration, the operator's CRDs
        absent, or a cluster that does not start.
    """
    import dask

    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        raise MtgError("scheduler 'kubernetes' needs dask-kubernetes: pip install dask-kubernetes") from None
    spec = spec or dask.config.get("kubernetes.custom-cluster-spec", None)
    if not spec:
        raise MtgError("scheduler 'kubernetes' needs a DaskCluster spec: set DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC to "
                       "the interactive/daskcluster.yaml of `mtg deploy kubernetes`")
    if isinstance(spec, (str, Path)) and not Path(spec).is_file():
        raise MtgError(f"DaskCluster spec {spec} does not exist")
    try:
        cluster = KubeCluster(custom_cluster_spec=str(spec) if isinstance(spec, Path) else spec, shutdown_on_close=True)
    except Exception as err:  # noqa: BLE001 - kr8s, kubernetes_asyncio and the operator raise many types
        text = describe(err)
        if "404" in text or "not found" in text.lower() and "daskcluster" in text.lower():
            raise MtgError("the dask-kubernetes operator is not installed in this Kubernetes cluster (no DaskCluster "
                           f"resource): helm install the dask-kubernetes-operator chart ({text[:200]})") from None
        raise MtgError(f"cannot start a DaskCluster on Kubernetes: {text[:400]}") from None
    with cluster:
        if workers:
            cluster.scale(workers)
        with cluster.get_client() as client:
            yield client
