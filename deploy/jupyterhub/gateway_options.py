# Cluster options of the mine-the-gap dask-gateway (worker cores, memory, GPU). This file is the
# `dask-gateway.gateway.extraConfig.mtgOptions` block of daskhub-values.yaml, verbatim (tests/test_deploy.py checks),
# and the test gateway of tests/test_gateway.py loads it into a real dask-gateway-server. It runs in the gateway's
# traitlets config, where `c` is the config: on the Helm chart's KubeBackend the options also set the image, the GPU
# limit, node selector and tolerations; on a local-process backend (tests) there are no GPUs to give.
from dask_gateway_server.options import Float, Integer, Options

MTG_IMAGE = "ghcr.io/mine-the-gap/mtg:0.1.0"
MTG_GPU_IMAGE = "ghcr.io/mine-the-gap/mtg-gpu:0.1.0"
MTG_ON_KUBERNETES = "kubernetes" in str(c.DaskGateway.backend_class).lower()  # noqa: F821 - `c` of traitlets


def mtg_cluster_options(options):
    """Gateway cluster configuration of the options a user picked (`Gateway().new_cluster(worker_cores=...)`)."""
    config = {
        "worker_cores": options.worker_cores,
        "worker_threads": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "environment": {"GDAL_CACHEMAX": str(max(64, int(options.worker_memory * 1024) // 10)),
                        "OMP_NUM_THREADS": "1"},
    }
    if options.worker_gpus and not MTG_ON_KUBERNETES:
        raise ValueError("this gateway's backend has no GPUs: worker_gpus must be 0")
    if MTG_ON_KUBERNETES:
        config["image"] = MTG_GPU_IMAGE if options.worker_gpus else MTG_IMAGE
        # pods request a little less than the worker's limits so that they fit on nodes of that size
        config["worker_cores_limit"] = options.worker_cores
        config["worker_cores"] = max(0.5, options.worker_cores * 0.9)
        config["worker_memory_limit"] = config["worker_memory"]
        if options.worker_gpus:
            config["worker_cmd"] = ["dask-cuda-worker"]
            config["worker_extra_container_config"] = {
                "resources": {"limits": {"nvidia.com/gpu": options.worker_gpus}}}
            config["worker_extra_pod_config"] = {
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    return config


c.Backend.cluster_options = Options(  # noqa: F821 - `c` of traitlets
    Integer("worker_cores", default=2, min=1, max=16, label="Worker cores"),
    Float("worker_memory", default=8, min=1, max=64, label="Worker memory (GiB)"),
    Integer("worker_gpus", default=0, min=0, max=1, label="GPUs per worker (dask-cuda)"),
    handler=mtg_cluster_options,
)
