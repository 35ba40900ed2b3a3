"""``reproduce`` over several processes: categories in parallel (--jobs), under torchrun (a share per
rank), killed and restarted without redoing finished categories, one merged table."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_config

from memseg_lite.experiments.reproduce import _worker_devices, reproduce
from memseg_lite.experiments.runs import train_and_evaluate

CATEGORIES = ["button", "mesh", "wood"]


@pytest.fixture(autouse=True)
def _no_host_name_lookup(monkeypatch):
    """torch's elastic agent records this machine's fully qualified name in its events
    (``socket.getfqdn``: a resolver look-up, refused by the offline guard); the bare host name does."""
    import socket

    monkeypatch.setattr(socket, "getfqdn", lambda name="": name or socket.gethostname())


def _overrides(root, tmp_path) -> dict:
    config = tiny_config(root, tmp_path / "unused", steps=4, val_every=2, checkpoint_every=1, device="cpu")
    return {k: v for k, v in config.to_dict().items() if k not in ("data_root", "category", "out_dir")}


def _table(out) -> list[str]:
    with (out / "results.csv").open() as stream:
        return [row["category"] for row in csv.DictReader(stream)]


@pytest.fixture(scope="module")
def three_categories(tmp_path_factory):
    from memseg_lite.datasets.demo.writer import write_demo_dataset

    root = tmp_path_factory.mktemp("demo3") / "data"
    write_demo_dataset(root, categories=CATEGORIES, size=64, n_train=12, n_test_good=2, n_per_defect=1, seed=0)
    return root


def test_jobs_are_checked():
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        reproduce("data", jobs=0)
    assert _worker_devices(2, "cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="--jobs with device='cuda:1'"):
        _worker_devices(2, "cuda:1")


@pytest.mark.slow
def test_jobs_2_killed_midway_then_restarted_finishes_without_redoing(three_categories, tmp_path):
    out = tmp_path / "reproduce"
    script = (
        "import json, sys; from memseg_lite.experiments.reproduce import reproduce; "
        "reproduce(sys.argv[1], json.loads(sys.argv[4]), sys.argv[2], progress=False, jobs=2, "
        "**json.loads(sys.argv[3]))"
    )
    command = [sys.executable, "-c", script, str(three_categories), str(out),
               json.dumps(_overrides(three_categories, tmp_path)), json.dumps(CATEGORIES)]
    env = {**os.environ, "MEMSEG_OFFLINE": "1"}
    # Its own session, so the kill reaches the pool's worker processes too (as a killed job would).
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    metrics = {c: out / c / "evaluation" / "metrics.json" for c in CATEGORIES}
    deadline = time.monotonic() + 600
    try:
        while not any(path.is_file() for path in metrics.values()):
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "no category finished in 10 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done = [c for c, path in metrics.items() if path.is_file()]
    assert 1 <= len(done) < len(CATEGORIES), "killed while at least one category was unfinished"
    stamps = {c: (metrics[c].stat().st_mtime_ns, (out / c / "checkpoint.pt").stat().st_mtime_ns) for c in done}
    assert not (out / "results.csv").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    for category in done:
        assert f"[{category}] already evaluated, skipping" in second.stdout
        assert (metrics[category].stat().st_mtime_ns, (out / category / "checkpoint.pt").stat().st_mtime_ns) \
            == stamps[category], f"{category} was redone"
    assert all(path.is_file() for path in metrics.values())
    assert _table(out) == [*CATEGORIES, "mean (3 categories)"]
    assert "| wood |" in (out / "results.md").read_text()


def _share_worker(root: str, out: str, overrides: dict) -> list:
    import torch

    torch.set_num_threads(1)
    return reproduce(root, ["button", "mesh"], out, progress=False, **overrides)


@pytest.mark.slow
def test_under_torchrun_each_rank_takes_its_share_and_rank_0_writes_the_table(three_categories, tmp_path, capfd):
    from memseg_lite.training.distributed import launch

    out = tmp_path / "shared"
    rows = launch(_share_worker, 2, str(three_categories), str(out), _overrides(three_categories, tmp_path))
    assert [r["category"] for r in rows[0]] == ["button", "mesh"] and rows[1] == []
    assert _table(out) == ["button", "mesh", "mean (2 categories)"]
    printed = capfd.readouterr()
    text = printed.out + printed.err
    assert "[rank 0/2] categories button on cpu" in text and "[rank 1/2] categories mesh on cpu" in text


def test_results_table_records_the_fallbacks(tmp_path):
    from memseg_lite.experiments.reproduce import write_results

    rows = [
        {
            "category": "bottle",
            "image_auroc": 90.0,
            "pixel_auroc": 80.0,
            "aupro": 70.0,
            "backbone": "imagenet",
            "textures": "dtd",
        },
        {
            "category": "cable",
            "image_auroc": 70.0,
            "pixel_auroc": 60.0,
            "aupro": 50.0,
            "backbone": "random",
            "textures": "procedural",
        },
    ]
    md_path, csv_path = write_results(tmp_path, rows)
    with csv_path.open() as stream:
        table = list(csv.DictReader(stream))
    assert [(r["category"], r["backbone"], r["textures"]) for r in table[:2]] == [
        ("bottle", "imagenet", "dtd"), ("cable", "random", "procedural")]
    assert table[2]["image_auroc"] == "80.00" and table[2]["backbone"] == "imagenet/random"
    text = md_path.read_text()
    assert "| cable | 70.00 | 60.00 | 50.00 | - | - | - | - | random | procedural |" in text, "no last numbers: '-'"
    assert table[1]["last_image_auroc"] == "" and table[2]["last_aupro"] == ""
    assert "Fallbacks were used" in text
    rows[1].update(backbone="imagenet", textures="dtd")
    assert "Fallbacks were used" not in write_results(tmp_path, rows)[0].read_text()


def test_results_table_has_the_last_checkpoint_beside_the_best(tmp_path):
    from memseg_lite.experiments.reproduce import result_row, write_results

    rows = []
    for category, (best, last) in {"bottle": (0.9, 0.8), "cable": (0.7, 0.75)}.items():
        run = tmp_path / "runs" / category / "evaluation"
        (run / "last").mkdir(parents=True)
        common = {"pixel_auroc": 0.5, "aupro": 0.4, "backbone": "imagenet", "textures": "dtd"}
        (run / "metrics.json").write_text(json.dumps({"image_auroc": best, "training_steps": 300, **common}))
        (run / "last" / "metrics.json").write_text(json.dumps({"image_auroc": last, "training_steps": 500, **common}))
        rows.append(result_row(category, tmp_path / "runs" / category))
    assert rows[0]["image_auroc"] == pytest.approx(90.0) and rows[0]["last_image_auroc"] == pytest.approx(80.0)
    assert (rows[0]["best_step"], rows[0]["last_step"]) == (300, 500)
    md_path, csv_path = write_results(tmp_path, rows)
    with csv_path.open() as stream:
        table = list(csv.DictReader(stream))
    assert [r["last_image_auroc"] for r in table] == ["80.00", "75.00", "77.50"]
    assert [r["image_auroc"] for r in table] == ["90.00", "70.00", "80.00"]
    assert table[0]["best_step"] == "300" and table[0]["last_step"] == "500"
    assert (
        "| bottle | 90.00 | 50.00 | 40.00 | 80.00 | 50.00 | 40.00 | 300 / 500 | imagenet | dtd |" in md_path.read_text()
    )


def test_train_and_evaluate_resumes_skips_and_adds_the_last_evaluation(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.core.checkpoint import load_checkpoint
    from memseg_lite.training.trainer import train

    config = tiny_config(tiny_demo, tmp_path / "run", steps=4, val_every=2, checkpoint_every=1, device="cpu")
    run = tmp_path / "run"
    train(config, progress=False, stop_after=2)  # an interrupted run: train_and_evaluate resumes it
    status, metrics = train_and_evaluate(config, progress=False)
    assert status == "done" and load_checkpoint(run / "checkpoint.pt")["step"] == 4
    best, last = metrics["best"], metrics["last"]
    assert json.loads((run / "evaluation" / "metrics.json").read_text()) == best
    assert json.loads((run / "evaluation" / "last" / "metrics.json").read_text()) == last
    assert last["training_steps"] == 4 and last["checkpoint"].endswith("checkpoint.pt")
    assert best["training_steps"] == load_checkpoint(run / "best.pt")["step"]
    assert last["same_as_best"] == (best["training_steps"] == 4)

    def forbidden(*args, **kwargs):
        raise AssertionError("finished work was done again")

    monkeypatch.setattr("memseg_lite.training.trainer.train", forbidden)
    monkeypatch.setattr("memseg_lite.evaluation.evaluate.evaluate_checkpoint", forbidden)
    assert train_and_evaluate(config, progress=False) == ("skipped", {"best": best, "last": last})

    # A run evaluated before the last checkpoint was: only the last one is added, nothing retrained.
    (run / "evaluation" / "last" / "metrics.json").unlink()
    calls = []
    monkeypatch.setattr("memseg_lite.evaluation.evaluate.evaluate_checkpoint",
                        lambda checkpoint, *a, **k: calls.append(str(checkpoint)) or {"image_auroc": 0.5})
    status, again = train_and_evaluate(config, progress=False)
    assert status == "done" and again["best"] == best
    assert calls == ([] if last["same_as_best"] else [str(run / "checkpoint.pt")])

    # Other training settings are refused; the selection options of an existing run are its own.
    with pytest.raises(ValueError, match=r"other settings \(steps differ\)"):
        train_and_evaluate(tiny_config(tiny_demo, run, steps=5, val_every=2, checkpoint_every=1), progress=False)
    kept = tiny_config(tiny_demo, run, steps=4, val_every=2, checkpoint_every=1, device="cpu", selection_metric="aupro")
    assert train_and_evaluate(kept, progress=False)[0] == "skipped"
