"""The Pangeo walkthrough notebook (docs/notebooks/pangeo-walkthrough.ipynb) runs top to bottom on the sample."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA

NOTEBOOK = ROOT / "docs" / "notebooks" / "pangeo-walkthrough.ipynb"
ICMM_CSV = SHARED_DATA / "icmm_global_mining_dataset" / "icmm_global_mining_dataset_external.csv"
CELL_TIMEOUT_S = 240


def test_committed_notebook_has_no_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
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


@pytest.mark.slow
@pytest.mark.parametrize("points", ["icmm", "sample"])
def test_walkthrough_notebook_executes(points, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
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

    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    seconds = time.perf_counter() - started
    print(f"notebook executed in {seconds:.1f} s ({points} points)")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
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
