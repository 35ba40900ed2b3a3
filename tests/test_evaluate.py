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
    assert sorted(p.name for p in (tmp_path / "pred" / "overlays").iterdir()) == [
        "000_2_overlay.png",
        "000_overlay.png",
    ]
    torch.testing.assert_close(torch.tensor(written.results[1].score), torch.tensor(report.results[1].score))
    with pytest.raises(ValueError, match="no images given"):
        predict_images([], random_checkpoint)


def test_write_results_table(tmp_path):
    rows = [{"category": "bottle", "image_auroc": 99.0, "pixel_auroc": 97.0, "aupro": 90.0},
            {"category": "cable", "image_auroc": 95.0, "pixel_auroc": 93.0, "aupro": 80.0}]
    md, csv_path = write_results(tmp_path, rows)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("category,image_auroc,pixel_auroc,aupro,last_image_auroc,last_pixel_auroc,last_aupro,"
                        "best_step,last_step,backbone,textures")
    # Rows without the last checkpoint's numbers, the steps or the sources: empty cells and "unknown".
    assert lines[-1] == "mean (2 categories),97.00,95.00,85.00,,,,,,unknown,unknown"
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


# --------------------------------------------------------------------------------------------
# Backends (the seam of memseg_lite.deployment.fast)
# --------------------------------------------------------------------------------------------
QUALITY_KEYS = ("image_auroc", "pixel_auroc", "aupro")


def test_eager_backend_gives_the_metrics_of_no_backend(tiny_demo, random_checkpoint, tmp_path):
    from memseg_lite.deployment.fast import EagerBackend

    plain = evaluate_checkpoint(random_checkpoint, tiny_demo, "button", device="cpu", progress=False)
    eager = evaluate_checkpoint(random_checkpoint, tiny_demo, "button", tmp_path / "eval", device="cpu",
                                progress=False, figures=False, backend=EagerBackend)
    assert plain["backend"] == "eager" and eager["backend"] == "EagerBackend"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["backend"] == "EagerBackend"
    for key in QUALITY_KEYS:
        assert eager[key] == pytest.approx(plain[key], abs=1e-6), key
    for defect, value in plain["image_auroc_per_defect"].items():
        assert eager["image_auroc_per_defect"][defect] == pytest.approx(value, abs=1e-6)


def test_folded_backend_maps_match_the_eager_model(tiny_demo, random_checkpoint):
    from memseg_lite.deployment.fast import FoldedTorchBackend, fast_backend
    from memseg_lite.evaluation.evaluate import predict_test_files
    from memseg_lite.network.model import load_model

    model, payload = load_model(random_checkpoint, "cpu")
    files = scan_category(tiny_demo, "button")
    eager, _ = predict_test_files(model, payload, files, batch_size=5, progress=False)
    folded, _ = predict_test_files(model, payload, files, batch_size=5, progress=False, backend=FoldedTorchBackend,
                                   checkpoint=random_checkpoint)
    assert folded.backend == "FoldedTorchBackend" and eager.backend == "eager"
    assert folded.maps.shape == eager.maps.shape == (12, 64, 64)
    assert np.abs(folded.maps - eager.maps).max() < 1e-4
    assert np.abs(folded.scores - eager.scores).max() < 1e-4
    assert np.array_equal(folded.masks, eager.masks) and folded.paths == eager.paths
    # The "fast" factory (a function) records the class it picked on the CPU.
    fast, _ = predict_test_files(
        model, payload, files, progress=False, backend=fast_backend, checkpoint=random_checkpoint
    )
    assert fast.backend in {"FoldedTorchBackend", "OnnxBackend"}
    assert np.abs(fast.maps - eager.maps).max() < 1e-4


def test_a_bad_backend_is_refused_clearly(tiny_demo, random_checkpoint):
    def wrong_shape(model, payload, device, checkpoint=None):
        return lambda batch: (torch.zeros(batch.shape[0], 8, 8), torch.zeros(batch.shape[0]))

    with pytest.raises(ValueError, match=r"backend wrong_shape returned maps \(.*expected"):
        evaluate_checkpoint(random_checkpoint, tiny_demo, "button", device="cpu", progress=False, backend=wrong_shape)
    with pytest.raises(TypeError, match="backend must be None or a factory"):
        evaluate_checkpoint(random_checkpoint, tiny_demo, "button", device="cpu", progress=False, backend="folded")


# --------------------------------------------------------------------------------------------
# Letterboxed, non-square images: the padding is not counted
# --------------------------------------------------------------------------------------------
PAD = 12  # 64 x 40 images letterboxed into 64 x 64: 12 padding columns either side


@pytest.fixture(scope="module")
def narrow_data(tiny_demo, tmp_path_factory):
    """The tiny button category cut to 64 x 40 pixels (masks too), so letterboxing pads it."""
    import cv2

    root = tmp_path_factory.mktemp("narrow") / "data"
    for source in (tiny_demo / "button").rglob("*.png"):
        target = root / "button" / source.relative_to(tiny_demo / "button")
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(target), pixels[:, PAD : PAD + 40])
    # Cutting may remove a small defect: keep every test mask non-empty.
    for mask_path in (root / "button" / "ground_truth").rglob("*.png"):
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if not mask.any():
            mask[30:34, 18:22] = 255
            cv2.imwrite(str(mask_path), mask)
    return root


@pytest.fixture(scope="module")
def letterbox_checkpoint(narrow_data, tmp_path_factory):
    files = scan_category(narrow_data, "button")
    memory = images_to_tensor(load_images(files.train_good[:4], 64, resize="letterbox"))
    model = build_memseg(memory, backbone_weights="none", top_k=5)
    path = tmp_path_factory.mktemp("letterbox") / "model.pt"
    save_checkpoint({"model_config": model.config(), "model": model.state_dict(), "backbone": "random",
                     "train_config": {"image_size": 64, "resize": "letterbox", "amp": "off"}, "step": 0,
                     "thresholds": {"image": 0.5, "pixel": 0.5, "source": "validation", "rule": "test"}}, path)
    return path


def test_letterbox_padding_is_left_out_of_the_pixel_metrics(narrow_data, letterbox_checkpoint, tmp_path):
    from memseg_lite.evaluation.evaluate import predict_test_files
    from memseg_lite.evaluation.metrics import aupro, pixel_auroc
    from memseg_lite.evaluation.thresholds import precision_recall_f1
    from memseg_lite.network.model import load_model

    metrics = evaluate_checkpoint(letterbox_checkpoint, narrow_data, "button", tmp_path / "eval", device="cpu",
                                  progress=False)
    model, payload = load_model(letterbox_checkpoint, "cpu")
    predictions, dataset = predict_test_files(model, payload, scan_category(narrow_data, "button"), progress=False)
    own = (slice(None), slice(None), slice(PAD, PAD + 40))
    assert np.array_equal(predictions.valid, np.pad(np.ones((12, 64, 40), np.uint8), ((0, 0), (0, 0), (PAD, PAD))))
    assert dataset[0]["valid"].shape == (64, 64)
    maps, masks = predictions.maps[own], predictions.masks[own]
    assert masks.sum() == predictions.masks.sum()  # no defect pixel lies in the padding
    # The metrics are those of the cropped maps (the image's own pixels) ...
    assert metrics["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks), abs=1e-12)
    assert metrics["aupro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
    at = precision_recall_f1(maps.ravel(), masks.ravel(), 0.5)
    assert (metrics["pixel_precision"], metrics["pixel_recall"], metrics["pixel_f1"]) == pytest.approx(
        (at.precision, at.recall, at.f1))
    assert metrics["padding_pixels_left_out"] == 12 * 64 * 2 * PAD
    # ... and not those of all pixels, padding included.
    assert metrics["pixel_auroc"] != pytest.approx(pixel_auroc(predictions.maps, predictions.masks), abs=1e-9)
    assert (tmp_path / "eval" / "pro.png").is_file() and (tmp_path / "eval" / "roc.png").is_file()


def test_square_images_count_every_pixel_as_before(tiny_demo, random_checkpoint):
    from memseg_lite.evaluation.evaluate import compute_metrics, predict_test_files
    from memseg_lite.evaluation.metrics import aupro, pixel_auroc
    from memseg_lite.network.model import load_model

    model, payload = load_model(random_checkpoint, "cpu")
    predictions, _ = predict_test_files(model, payload, scan_category(tiny_demo, "button"), progress=False)
    assert predictions.valid.all() and predictions.pixel_valid() is None
    quality = compute_metrics(predictions)
    assert quality["padding_pixels_left_out"] == 0
    assert quality["pixel_auroc"] == pixel_auroc(predictions.maps, predictions.masks)
    assert quality["aupro"] == aupro(predictions.maps, predictions.masks)
