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
        "reproduce(sys.argv[1], json.loads(sys.argv[4]), sys.argv[2], progress=False, jobs=2, **json.loads(sys.argv[3]))"
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
        {"category": "bottle", "image_auroc": 90.0, "pixel_auroc": 80.0, "aupro": 70.0, "backbone": "imagenet", "textures": "dtd"},
        {"category": "cable", "image_auroc": 70.0, "pixel_auroc": 60.0, "aupro": 50.0, "backbone": "random", "textures": "procedural"},
    ]
    md_path, csv_path = write_results(tmp_path, rows)
    with csv_path.open() as stream:
        table = list(csv.DictReader(stream))
    assert [(r["category"], r["backbone"], r["textures"]) for r in table[:2]] == [
        ("bottle", "imagenet", "dtd"), ("cable", "random", "procedural")]
    assert table[2]["image_auroc"] == "80.00" and table[2]["backbone"] == "imagenet/random"
    text = md_path.read_text()
    assert "| cable | 70.00 | 60.00 | 50.00 | random | procedural |" in text
    assert "Fallbacks were used" in text
    rows[1].update(backbone="imagenet", textures="dtd")
    assert "Fallbacks were used" not in write_results(tmp_path, rows)[0].read_text()
