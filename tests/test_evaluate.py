"""Evaluation, prediction and the MVTec results table on tiny data the tests make."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from memseg_lite.core.checkpoint import save_checkpoint
from memseg_lite.datasets.mvtec import images_to_tensor, load_images, scan_category
from memseg_lite.deployment.predict import predict_images
from memseg_lite.evaluation.evaluate import evaluate_checkpoint
from memseg_lite.evaluation.metrics import image_auroc
from memseg_lite.experiments.reference_numbers import REPORTED
from memseg_lite.experiments.reproduce import reproduce, write_results
from memseg_lite.network.model import build_memseg


@pytest.fixture(scope="module")
def random_checkpoint(tiny_demo, tmp_path_factory):
    """An untrained model saved like the trainer does (image size 64, center crop 64 of 96)."""
    files = scan_category(tiny_demo, "button")
    memory = images_to_tensor(load_images(files.train_good[:4], 96, center_crop=64))
    model = build_memseg(memory, backbone_weights="none", top_k=5)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint({"model_config": model.config(), "model": model.state_dict(), "backbone": "random",
                     "textures": {"kind": "procedural", "count": 4},
                     "train_config": {"image_size": 96, "center_crop": 64, "amp": "off"}, "step": 0}, path)
    return path


def test_evaluate_with_center_crop_writes_consistent_files(tiny_demo, random_checkpoint, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate_checkpoint(random_checkpoint, tiny_demo, "button", out, device="cpu", progress=False)
    assert metrics["image_size"] == 64 and metrics["backbone"] == "random" and metrics["textures"] == "procedural"
    assert metrics["n_good"] == 4 and metrics["n_defective"] == 8
    assert set(metrics["image_auroc_per_defect"]) == {"scratch", "dent", "stain", "chip"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    rows = [line.split(",") for line in (out / "scores.csv").read_text().splitlines()[1:]]
    scores = np.array([float(r[3]) for r in rows])
    labels = np.array([int(r[2]) for r in rows])
    assert image_auroc(scores, labels) == pytest.approx(metrics["image_auroc"], abs=1e-6)
    assert not list(out.glob(".*.tmp")), "no temporary files left"


def test_evaluate_needs_good_and_defective_test_images(tiny_demo, random_checkpoint, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_demo / "button", data / "button")
    for defect in ("scratch", "dent", "stain", "chip"):
        shutil.rmtree(data / "button" / "test" / defect)
    with pytest.raises(ValueError, match="a test/<defect> folder"):
        evaluate_checkpoint(random_checkpoint, data, "button", progress=False)


def test_evaluate_an_mvtec_run_on_plain_folders(tiny_demo, random_checkpoint, tmp_path):
    """Test images given as folders work for a run trained on the MVTec AD layout; the same numbers."""
    category = tiny_demo / "button"
    folders = {"test_good_dir": category / "test" / "good", "test_defect_dir": tmp_path / "defects",
               "mask_dir": tmp_path / "masks"}
    for defect in ("scratch", "dent", "stain", "chip"):
        shutil.copytree(category / "test" / defect, tmp_path / "defects" / defect)
        shutil.copytree(category / "ground_truth" / defect, tmp_path / "masks" / defect)
    from_folders = evaluate_checkpoint(random_checkpoint, device="cpu", progress=False, folders=folders)
    from_layout = evaluate_checkpoint(random_checkpoint, tiny_demo, "button", device="cpu", progress=False)
    for key in ("image_auroc", "pixel_auroc", "aupro", "n_good", "n_defective"):
        assert from_folders[key] == pytest.approx(from_layout[key]), key
    assert from_layout["threshold_source"] is None  # a checkpoint from before thresholds


def test_predict_without_output_folder_and_with_duplicate_names(tiny_demo, random_checkpoint, tmp_path):
    first = tiny_demo / "button" / "test" / "dent" / "000.png"
    second = tiny_demo / "button" / "test" / "stain" / "000.png"  # the same file name
    report = predict_images([first, second], random_checkpoint, out_dir=None, device="cpu")
    assert report.out_dir is None and not report.failed
    assert report.results[0].anomaly_map.shape == (64, 64) and 0 <= report.results[0].score <= 1
    assert report.results[0].verdict is None  # a checkpoint without thresholds: scores only
    written = predict_images([first, second], random_checkpoint, out_dir=tmp_path / "pred", device="cpu")
    assert sorted(p.name for p in (tmp_path / "pred" / "overlays").iterdir()) == ["000_2_overlay.png", "000_overlay.png"]
    torch.testing.assert_close(torch.tensor(written.results[1].score), torch.tensor(report.results[1].score))
    with pytest.raises(ValueError, match="no images given"):
        predict_images([], random_checkpoint)


def test_write_results_table(tmp_path):
    rows = [{"category": "bottle", "image_auroc": 99.0, "pixel_auroc": 97.0, "aupro": 90.0},
            {"category": "cable", "image_auroc": 95.0, "pixel_auroc": 93.0, "aupro": 80.0}]
    md, csv_path = write_results(tmp_path, rows)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "category,image_auroc,pixel_auroc,aupro,backbone,textures"
    assert lines[-1] == "mean (2 categories),97.00,95.00,85.00,unknown,unknown"  # rows without the sources
    text = md.read_text()
    assert "| bottle | 99.00 | 97.00 | 90.00 |" in text
    for reported in REPORTED:
        assert reported["source"] in text


def test_reproduce_trains_evaluates_and_skips_finished_categories(tiny_demo, tmp_path, capsys):
    out = tmp_path / "reproduce"
    overrides = {k: v for k, v in tiny_config(tiny_demo, tmp_path / "unused", steps=2, val_every=1).to_dict().items()
                 if k not in ("data_root", "category", "out_dir")}
    rows = reproduce(tiny_demo, ["button"], out, progress=False, **overrides)
    assert [r["category"] for r in rows] == ["button"]
    assert (out / "button" / "evaluation" / "metrics.json").is_file()
    assert "mean (1 categories)" in (out / "results.csv").read_text()
    capsys.readouterr()
    again = reproduce(tiny_demo, ["button"], out, progress=False, **overrides)
    assert again == rows and "already evaluated, skipping" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="not in"):
        reproduce(tiny_demo, ["bottle"], out, progress=False, **overrides)
