"""The example notebooks run top to bottom: the Pangeo walkthrough (docs/notebooks/pangeo-walkthrough.ipynb) on the
sample, and the gateway walkthrough (docs/notebooks/gateway-walkthrough.ipynb) on the small sample run in a moto S3
bucket, with a LocalCluster and with a real dask-gateway server."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

from conftest import GATEWAY_PASSWORD, ROOT, SHARED_DATA

NOTEBOOK = ROOT / "docs" / "notebooks" / "pangeo-walkthrough.ipynb"
GATEWAY_NOTEBOOK = ROOT / "docs" / "notebooks" / "gateway-walkthrough.ipynb"
ICMM_CSV = SHARED_DATA / "icmm_global_mining_dataset" / "icmm_global_mining_dataset_external.csv"
CELL_TIMEOUT_S = 240


@pytest.mark.parametrize("notebook", [NOTEBOOK, GATEWAY_NOTEBOOK], ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(notebook):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2  # explained, step by step
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _venv_kernelspec(folder: Path) -> Path:
    """A ``python3`` kernelspec that launches this interpreter's ipykernel, first on ``JUPYTER_PATH``.

    Jupyter looks up kernels on ``JUPYTER_PATH`` before the user's and the environment's folders, so a stray
    ``python3`` kernelspec elsewhere (e.g. in ~/.local/share/jupyter) cannot replace the venv's kernel.
    """
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mine-the-gap venv)", "language": "python"}))
    return folder


def _execute(notebook: Path, folder: Path) -> float:
    """Run ``notebook`` top to bottom in the venv's kernel, in ``folder``; assert no cell failed; the seconds."""
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(folder)}}).execute()
    seconds = time.perf_counter() - started
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return seconds


@pytest.mark.slow
@pytest.mark.parametrize("points", ["icmm", "sample"])
def test_walkthrough_notebook_executes(points, tmp_path, monkeypatch):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if points == "icmm" and not ICMM_CSV.is_file():
        pytest.skip(f"real reference data not available: {ICMM_CSV}")

    work = tmp_path / "work"
    monkeypatch.setenv("MTG_WALKTHROUGH_DIR", str(work))
    monkeypatch.setenv("MTG_ICMM_CSV", str(ICMM_CSV if points == "icmm" else tmp_path / "no-icmm.csv"))
    monkeypatch.setenv("JUPYTER_PATH", str(_venv_kernelspec(tmp_path / "jupyter")))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet debugpy under the frozen-modules check

    seconds = _execute(NOTEBOOK, tmp_path)
    print(f"notebook executed in {seconds:.1f} s ({points} points)")
    summary = json.loads((work / "walkthrough-summary.json").read_text())

    # the venv's kernel ran it
    assert Path(summary["kernel_prefix"]).resolve() == Path(sys.prefix).resolve()
    # lazily opened cube; footprints and sites found
    assert summary["cube_dask_backed"] and summary["cube_nbytes"] > 0
    assert summary["n_footprints"] >= 3 and summary["footprint_area_km2"] > 0.1
    assert summary["points_source"] == points
    assert summary["n_sites_with_footprints"] >= 1 and summary["n_indicator_rows"] == summary["n_sites"]
    if points == "icmm":
        assert summary["cut_m"] >= 5000 and "ICMM08561" in summary["linked_point_ids"]  # Mount Newman joins
    else:
        assert summary["cut_m"] == 1000 and set(summary["linked_point_ids"]) >= {"P001", "P002", "P003"}
    # volumes finite, with positive errors, near the sample's truth
    assert summary["volumes"]
    for row in summary["volumes"]:
        for key in ("excavated_m3", "excavated_sigma_m3", "deposited_m3", "deposited_sigma_m3", "net_m3",
                    "net_sigma_m3"):
            assert math.isfinite(row[key]), (key, row)
        assert row["excavated_m3"] > 0 and row["excavated_sigma_m3"] > 0
    excavated = sum(r["excavated_m3"] for r in summary["volumes"])
    assert 1.5e6 < excavated < 3.0e6  # the truth: 2.21e6 m3 over the three sites
    assert summary["nmad_m"] > 0
    # land-use shares sum to one and the figures were drawn
    shares = summary["land_use_shares"]
    assert shares and math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9)
    if points == "icmm":
        assert shares == {"iron ore": pytest.approx(1.0)}
    assert set(summary["figures"]) == {"probability.png", "dh.png", "land_use.png"}
    assert all((work / name).stat().st_size > 1000 for name in summary["figures"])
    assert (work / "site_indicators.parquet").is_file()
    assert seconds < 180


#: What the gateway walkthrough reads of a run folder.
RUN_PARTS = ("segment/probability.zarr", "cubes/dem.zarr", "sites", "volumes", "landuse")


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["local", "gateway"])
def test_gateway_walkthrough_notebook_executes(cluster, small_run, s3_server, tmp_path, monkeypatch, request):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    import s3fs

    options, bucket = s3_server
    prefix = f"run-{cluster}"
    fs = s3fs.S3FileSystem(**options)
    for part in RUN_PARTS:
        fs.put(str(small_run / part), f"{bucket}/{prefix}/{part}", recursive=True)
    work = tmp_path / "work"
    env = {"MTG_S3_ENDPOINT": options["endpoint_url"], "MTG_S3_BUCKET": bucket, "MTG_RUN_PREFIX": prefix,
           "AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"],
           "MTG_GATEWAY_WALKTHROUGH_DIR": str(work), "MTG_WORKERS": "2" if cluster == "local" else "1",
           "JUPYTER_PATH": str(_venv_kernelspec(tmp_path / "jupyter")), "MPLBACKEND": "Agg",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if cluster == "gateway":
        address = request.getfixturevalue("gateway_server")
        env |= {"DASK_GATEWAY__ADDRESS": address, "DASK_GATEWAY__AUTH__TYPE": "basic",
                "DASK_GATEWAY__AUTH__KWARGS__USERNAME": "mtg", "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": GATEWAY_PASSWORD,
                "DASK_GATEWAY__CLUSTER__OPTIONS__WORKER_MEMORY": "1", "DASK_GATEWAY__CLUSTER__OPTIONS__WORKER_CORES": "1"}
    else:
        monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    seconds = _execute(GATEWAY_NOTEBOOK, tmp_path)
    print(f"gateway walkthrough executed in {seconds:.1f} s ({cluster})")
    summary = json.loads((work / "gateway-walkthrough-summary.json").read_text())
    assert Path(summary["kernel_prefix"]).resolve() == Path(sys.prefix).resolve()
    assert summary["run"] == f"s3://{bucket}/{prefix}"
    assert summary["probability_dask_backed"] and summary["probability_nbytes"] > 0
    assert summary["cluster"] == {"local": "LocalCluster", "gateway": "dask-gateway"}[cluster]
    assert summary["n_workers"] == int(env["MTG_WORKERS"]) and summary["client_closed"]
    # the stages on the cluster give the run's numbers
    assert summary["n_sites"] >= 1 and summary["excavated_m3"] > 0
    assert summary["volume_difference_m3"] == 0 and summary["land_use_difference_km2"] == 0
    assert summary["land_use_cuts_m"] == [500.0, 1000.0]
    assert summary["figures"] == ["dh.png", "land_use.png", "probability.png"]
    assert all((work / name).stat().st_size > 1000 for name in summary["figures"])
    if cluster == "gateway":
        from dask_gateway import BasicAuth, Gateway

        from mtg.pipeline.deploy import _close_gateway

        gateway = Gateway(address, auth=BasicAuth("mtg", GATEWAY_PASSWORD))
        try:
            assert gateway.list_clusters() == []  # the notebook shut its cluster down
        finally:
            _close_gateway(gateway)
    assert seconds < 120
