"""Papermill runs of the parameterised notebooks (training, evaluation) and of the workbook runner.

nbval (``make test-notebooks``) runs every notebook with its defaults; here papermill injects
other parameters (another category, another run folder), as ``make run`` and users do.
"""

from __future__ import annotations

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
    execute("10_your_own_product.ipynb", tmp_path / "10.ipynb", work_dir=str(work), data_root=str(ROOT / "data" / "demo"))
    assert (work / "run" / "thresholds.json").is_file()
    records = [json.loads(line) for line in (work / "predictions" / "predictions.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in records].count("error") == 1  # the broken file the notebook adds
    assert all((work / "predictions" / r["mask"]).is_file() for r in records if r["verdict"] != "error")


def test_workbook_runner_writes_executed_notebooks_and_summary(tmp_path):
    out = tmp_path / "workbook"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_workbook.py"), "--profile", "smoke", "--out", str(out),
         "--only", "00"],
        capture_output=True, text=True, timeout=600,
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
