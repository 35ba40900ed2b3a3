"""Papermill runs of the parameterised notebooks (training, evaluation, ablations) and of the workbook runner.

nbval (``make test-notebooks``) runs every notebook with its defaults; here papermill injects
other parameters (another category, another run folder), as ``make run`` and users do.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture
def smoke_profile(monkeypatch):
    monkeypatch.setenv("MEMSEG_PROFILE", "smoke")


def execute(name: str, output: Path, **parameters) -> None:
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(output), parameters=parameters, kernel_name="python3", cwd=str(NOTEBOOKS),
        progress_bar=False,
    )


def test_training_then_evaluation_notebooks_on_another_category(tmp_path, smoke_profile):
    runs = tmp_path / "runs"
    data_root = str(ROOT / "data" / "demo")
    execute("08_training.ipynb", tmp_path / "08.ipynb", category="wood", run_dir=str(runs), data_root=data_root)
    run = runs / "wood"
    assert (run / "best.pt").is_file() and (run / "checkpoint.pt").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["category"] == "wood" and config["image_size"] == 64

    execute("09_evaluation.ipynb", tmp_path / "09.ipynb", category="wood", run_dir=str(runs), data_root=data_root,
            checkpoint=str(run / "best.pt"))
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["category"] == "wood"
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("image_auroc", "pixel_auroc", "aupro"))
    assert (run / "evaluation" / "anomaly_maps.png").is_file()


def test_your_own_product_notebook_on_a_plain_folder(tmp_path, smoke_profile):
    work = tmp_path / "product"
    execute(
        "10_your_own_product.ipynb", tmp_path / "10.ipynb", work_dir=str(work), data_root=str(ROOT / "data" / "demo")
    )
    assert (work / "run" / "thresholds.json").is_file()
    records = [json.loads(line) for line in (work / "predictions" / "predictions.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in records].count("error") == 1  # the broken file the notebook adds
    assert all((work / "predictions" / r["mask"]).is_file() for r in records if r["verdict"] != "error")


def _stream_text(notebook: Path) -> str:
    """Everything an executed notebook printed (its stdout streams), in order."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "".join("".join(output.get("text", "")) for cell in cells if cell["cell_type"] == "code"
                   for output in cell.get("outputs", []) if output.get("name") == "stdout")


def test_ablation_notebook_trains_the_study_then_reuses_it(tmp_path, smoke_profile):
    runs, figures = tmp_path / "runs", tmp_path / "figures"
    parameters = {"category": "mesh", "run_dir": str(runs), "data_root": str(ROOT / "data" / "demo"),
                  "figures_dir": str(figures)}
    execute("11_ablations.ipynb", tmp_path / "11_first.ipynb", **parameters)
    study = runs / "ablation" / "mesh"  # inside run_dir, so make run keeps the study with its output
    with (study / "results.csv").open(newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [row["variant"] for row in table] == ["full", "no_memory"]  # the smoke profile's variants
    for row in table:
        assert row["seeds"] == "0 1"
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            low, mean, high = (float(row[f"{key}_{stat}"]) for stat in ("min", "mean", "max"))
            assert 0.0 <= low <= mean <= high <= 100.0 and float(row[f"{key}_std"]) >= 0.0
    assert "| full | 2 |" in (study / "results.md").read_text()
    for name in ("11_ablation_metrics", "11_ablation_maps"):
        for extension in ("png", "svg"):
            assert (figures / f"{name}.{extension}").stat().st_size > 1000
    first_output = _stream_text(tmp_path / "11_first.ipynb")
    assert "4 runs trained, 0 reused" in first_output and "checked 2 variants x 2 seeds x 3 metrics" in first_output

    written = sorted(study.rglob("*.pt")) + sorted(study.rglob("metrics.json"))
    assert len(list(study.glob("*/seed*/best.pt"))) == 4
    before = {path: path.stat().st_mtime_ns for path in written}
    execute("11_ablations.ipynb", tmp_path / "11_again.ipynb", **parameters)
    assert {path: path.stat().st_mtime_ns for path in written} == before  # nothing retrained or re-evaluated
    assert "0 runs trained, 4 reused" in _stream_text(tmp_path / "11_again.ipynb")


def test_workbook_runner_writes_executed_notebooks_and_summary(tmp_path):
    out = tmp_path / "workbook"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_workbook.py"), "--profile", "smoke", "--out", str(out),
         "--only", "00"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (out / "00_overview.ipynb").is_file()
    summary = (out / "summary.md").read_text()
    assert "| 00_overview.ipynb | ok |" in summary
    assert str(out) in completed.stdout


def test_every_parameters_cell_parses(caplog):
    """papermill must see every name of each `parameters` cell (a line it cannot parse is silently
    dropped, and the parameter can then no longer be overridden)."""
    import logging

    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            parameters = papermill.inspect_notebook(str(path))
        assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()], path.name
        assert {"profile", "seed"} <= set(parameters), f"{path.name}: profile and seed are parameters"
