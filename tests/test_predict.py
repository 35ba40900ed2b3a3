"""The practitioner's path end to end (plain folder -> train -> thresholds -> predict a folder), and
the pieces of predict: inputs, the Inferencer, output files, failures, exit codes, re-runs."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from memseg_lite.cli import main as cli
from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.deployment.inferencer import Inferencer, preprocess
from memseg_lite.deployment.predict import EXIT_SOME_FAILED, expand_inputs, predict_images
from memseg_lite.evaluation.thresholds import Thresholds, load_thresholds, normalise_scores

EXTENSIONS = (".png", ".JPG", ".bmp")


def _crop_copy(source_images, folder, rows, prefix):
    """Non-square crops of demo images saved with mixed extensions (.png / .JPG / .bmp)."""
    folder.mkdir(parents=True)
    written = []
    for i, path in enumerate(source_images):
        image = cv2.imread(str(path))[rows[0] : rows[1]]
        target = folder / f"{prefix}{i}{EXTENSIONS[i % 3]}"
        assert cv2.imwrite(str(target), image)
        written.append(target)
    return written


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """A demo button category copied out as plain folders of 64 x 128 (h x w) crops, and a trained run."""
    from memseg_lite.datasets.demo.writer import write_demo_dataset

    root = tmp_path_factory.mktemp("product")
    demo = root / "demo"
    write_demo_dataset(demo, categories=["button"], size=128, n_train=10, n_test_good=2, n_per_defect=1, seed=0)
    good = _crop_copy(sorted((demo / "button" / "train" / "good").iterdir()), root / "bolt" / "good", (32, 96), "g")
    new = _crop_copy(sorted((demo / "button" / "test").rglob("*.png")), root / "incoming", (20, 100), "n")  # 80 x 128
    (root / "incoming" / "broken.png").write_bytes(b"\x89PNG\r\n not really")
    run = root / "run"
    code = cli(["train", "--good", str(root / "bolt" / "good"), "--out", str(run), "--steps", "2", "--batch-size", "2",
                "--image-size", "64x128", "--memory-size", "4", "--val-images", "2", "--val-every", "1",
                "--backbone-weights", "none", "--no-progress"])
    assert code == 0
    return {"root": root, "good": good, "new": new, "run": run}


def test_training_from_a_plain_folder_stores_thresholds(product):
    run = product["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == [64, 128] and config["resize"] == "letterbox" and config["category"] == "bolt"
    assert config["good_dir"] == str(product["root"] / "bolt" / "good")
    thresholds = load_thresholds(run / "thresholds.json")
    assert thresholds.source == "validation" and 0 < thresholds.image < 1 and 0 < thresholds.pixel < 1
    for name in ("best.pt", "checkpoint.pt"):
        assert load_checkpoint(run / name)["thresholds"] == thresholds.to_dict(), name
    # The rule: the lower of the 0.99 quantile of the held-out good images' scores and the
    # class-balanced F1 cut on the synthetic anomalies, with the best model.
    inferencer = Inferencer(run / "best.pt", device="cpu")
    split = json.loads((run / "split.json").read_text())
    held_out = [product["root"] / "bolt" / "good" / name for name in split["validation"]]
    scores = [r.score for r in inferencer.predict(held_out)]
    assert thresholds.details["good_quantile_threshold"] == pytest.approx(np.quantile(scores, 0.99), abs=1e-5)
    assert thresholds.image == pytest.approx(
        min(np.quantile(scores, 0.99), thresholds.details["synthetic_f1_threshold"]), abs=1e-5
    )


def test_predict_a_folder_end_to_end(product, tmp_path, capsys):
    out = tmp_path / "predictions"
    code = cli(["predict", str(product["root"] / "incoming"), "--checkpoint", str(product["run"] / "best.pt"),
                "--out", str(out), "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == EXIT_SOME_FAILED == 3
    assert "skipped" in captured.err and "broken.png" in captured.err
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(product["new"]) + 1
    broken = [r for r in records if r["path"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["verdict"] == "error" and "cannot decode" in broken[0]["error"]
    thresholds = load_thresholds(product["run"] / "thresholds.json")
    good = [r for r in records if r["verdict"] != "error"]
    for record in good:
        assert record["verdict"] == ("defective" if record["score"] >= thresholds.image else "normal")
        assert record["normalised_score"] == pytest.approx(float(normalise_scores(record["score"], thresholds.image)),
                                                           abs=1e-6)
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (80, 128) == (record["height"], record["width"])  # the image's own size
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).mean() == pytest.approx(record["defect_fraction"], abs=1e-6)
        overlay = cv2.imread(str(out / record["overlay"]))
        assert overlay.shape == (80, 3 * 128, 3)
    with (out / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    assert [r["verdict"] for r in rows] == [r["verdict"] for r in records]

    # A re-run into the same folder with fewer images leaves only the new run's files.
    code = cli(["predict", str(product["new"][0]), "--checkpoint", str(product["run"] / "best.pt"), "--out", str(out)])
    assert code == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1
    assert len(list((out / "masks").iterdir())) == 1 and len(list((out / "overlays").iterdir())) == 1
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging folders left"


def test_predict_refuses_folders_it_did_not_write_and_all_failures(product, tmp_path, capsys):
    checkpoint = str(product["run"] / "best.pt")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli(["predict", str(product["new"][0]), "--checkpoint", checkpoint, "--out", str(foreign)]) == 1
    assert "did not write" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep me"
    broken = product["root"] / "incoming" / "broken.png"
    assert cli(["predict", str(broken), "--checkpoint", checkpoint, "--out", str(tmp_path / "none")]) == 1
    assert "none of the 1 image" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert cli(["predict", str(tmp_path / "nothing_here"), "--checkpoint", checkpoint]) == 1
    assert "no such image file or folder" in capsys.readouterr().err


def test_expand_inputs_files_folders_and_globs(tmp_path):
    for name in ("a.png", "b.JPG", "c.txt", "sub/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    def names(paths):
        return [p.relative_to(tmp_path).as_posix() for p in paths]

    assert names(expand_inputs([tmp_path])) == ["a.png", "b.JPG"]
    assert names(expand_inputs([tmp_path], recursive=True)) == ["a.png", "b.JPG", "sub/d.bmp"]
    assert names(expand_inputs([str(tmp_path / "*.JPG"), tmp_path / "a.png", tmp_path / "a.png"])) == ["b.JPG", "a.png"]
    assert names(expand_inputs([str(tmp_path / "**" / "*.bmp")])) == ["sub/d.bmp"]
    assert names(expand_inputs([tmp_path / "c.txt"])) == ["c.txt"]  # named explicitly: kept, reported if unreadable
    with pytest.raises(FileNotFoundError, match="matches no image"):
        expand_inputs([str(tmp_path / "*.tif")])
    with pytest.raises(FileNotFoundError, match="holds no images"):
        expand_inputs([_empty(tmp_path)])
    with pytest.raises(ValueError, match="no images given"):
        expand_inputs([])


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_inferencer_arrays_and_paths_agree(product):
    inferencer = Inferencer(product["run"] / "best.pt", device="cpu", batch_size=2)
    path = product["new"][1]
    from_path = inferencer.predict(path)
    pixels = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    from_array = inferencer.predict(pixels)
    assert from_path.score == pytest.approx(from_array.score, abs=1e-6) and from_array.path is None
    np.testing.assert_allclose(from_path.anomaly_map, from_array.anomaly_map, atol=1e-6)
    assert from_array.anomaly_map.shape == pixels.shape[:2]
    # A batch gives the same as one at a time; grey input is expanded to RGB.
    batch = inferencer.predict([path, product["new"][2], product["new"][3]])
    assert batch[0].score == pytest.approx(from_path.score, abs=1e-5)
    grey = inferencer.predict(pixels[:, :, 0])
    assert grey.image.shape == (*pixels.shape[:2], 3)
    # preprocess: the one function every backend uses.
    tensor = preprocess([pixels, pixels[:50]], (64, 128))
    assert tensor.shape == (2, 3, 64, 128) and tensor.dtype == torch.float32
    with pytest.raises(TypeError, match="uint8"):
        preprocess(pixels.astype(np.float32), (64, 128))
    # Thresholds given explicitly win over the stored ones.
    strict = Inferencer(product["run"] / "best.pt", device="cpu",
                        thresholds=Thresholds(image=0.999, pixel=0.999, source="test", rule="test"))
    assert strict.predict(path).verdict == "normal"
    with pytest.raises(ValueError, match="unknown backend"):
        Inferencer(product["run"] / "best.pt", backend="nope")


def test_predict_defaults_to_the_fast_backend_with_the_eager_results(product):
    from memseg_lite.deployment.fast import FoldedTorchBackend

    images = product["new"]  # 80 x 128 crops of good and defective buttons, letterboxed to 64 x 128
    fast = predict_images(images, product["run"] / "best.pt", device="cpu", batch_size=3)
    reference = predict_images(images, product["run"] / "best.pt", device="cpu", batch_size=3, backend="eager")
    inferencer = Inferencer(product["run"] / "best.pt", device="cpu")
    assert inferencer.backend_name == "fast" and isinstance(inferencer.backend, FoldedTorchBackend)
    verdicts = [result.verdict for result in fast.results]
    assert verdicts == [result.verdict for result in reference.results] and None not in verdicts
    for mine, theirs in zip(fast.results, reference.results, strict=True):
        assert abs(mine.score - theirs.score) < 1e-4
        assert np.abs(mine.anomaly_map - theirs.anomaly_map).max() < 1e-4
        # only pixels within 1e-4 of the threshold may differ
        assert np.mean((mine.mask > 0) != (theirs.mask > 0)) < 1e-3


def test_predict_images_python_api_without_output(product):
    report = predict_images([product["new"][0], product["root"] / "incoming" / "broken.png"],
                            product["run"] / "best.pt", device="cpu", report_errors=False)
    assert len(report.results) == 1 and len(report.failed) == 1 and report.exit_code == EXIT_SOME_FAILED
    assert report.results[0].mask.shape == (80, 128)


def test_old_checkpoints_without_thresholds_still_predict(product, tmp_path):
    from memseg_lite.core.checkpoint import save_checkpoint

    payload = load_checkpoint(product["run"] / "best.pt")
    payload.pop("thresholds")
    payload["train_config"] = {**payload["train_config"]}
    payload["train_config"].pop("resize")  # before the option: images were stretched
    old = tmp_path / "old" / "best.pt"
    save_checkpoint(payload, old)
    inferencer = Inferencer(old, device="cpu")
    assert inferencer.thresholds is None and inferencer.resize == "stretch"
    result = inferencer.predict(product["new"][0])
    assert result.verdict is None and result.mask is None and 0 <= result.score <= 1
    shutil.copy(product["run"] / "thresholds.json", old.parent / "thresholds.json")
    assert Inferencer(old, device="cpu").thresholds == load_thresholds(product["run"] / "thresholds.json")


@pytest.fixture(scope="module")
def labelled(product):
    """Labelled 64 x 128 crops: good test images, defective ones in one sub-folder per type, their masks."""
    demo, root = product["root"] / "demo" / "button", product["root"] / "labelled"
    _crop_copy(sorted((demo / "test" / "good").iterdir()), root / "good", (32, 96), "t")
    for defect in ("scratch", "dent", "stain", "chip"):
        (root / "defect" / defect).mkdir(parents=True)
        (root / "masks" / defect).mkdir(parents=True)
        for path in sorted((demo / "test" / defect).iterdir()):
            cv2.imwrite(str(root / "defect" / defect / f"{path.stem}.JPG"), cv2.imread(str(path))[32:96])
            mask = cv2.imread(str(demo / "ground_truth" / defect / f"{path.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(root / "masks" / defect / f"{path.stem}_mask.png"), mask[32:96])
    return root


def no_masks_of(folders: dict) -> dict:
    return {**folders, "mask_dir": None}


def test_evaluate_and_calibrate_on_plain_folders_at_64x128(product, labelled, tmp_path):
    from memseg_lite.evaluation.evaluate import calibrate_checkpoint, evaluate_checkpoint
    from memseg_lite.evaluation.thresholds import f1_optimal_threshold, precision_recall_f1

    run = tmp_path / "run"
    shutil.copytree(product["run"], run)
    folders = {
        "test_good_dir": labelled / "good",
        "test_defect_dir": labelled / "defect",
        "mask_dir": labelled / "masks",
    }
    metrics = evaluate_checkpoint(run / "best.pt", out_dir=tmp_path / "eval", device="cpu", progress=False,
                                  folders=folders)
    assert metrics["n_good"] == 2 and metrics["n_defective"] == 4 and metrics["image_size"] == [64, 128]
    assert 0 <= metrics["pixel_auroc"] <= 1 and 0 <= metrics["aupro"] <= 1
    assert metrics["threshold_source"] == "validation"
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    scores, labels = np.array([float(r["score"]) for r in rows]), np.array([int(r["label"]) for r in rows])
    at = precision_recall_f1(scores, labels, metrics["image_threshold"])
    assert (metrics["image_precision"], metrics["image_recall"], metrics["image_f1"]) == pytest.approx(
        (at.precision, at.recall, at.f1), abs=1e-5)

    thresholds = calibrate_checkpoint(run / "best.pt", device="cpu", progress=False, folders=folders)
    assert thresholds.source == "calibration"
    assert thresholds.details["image_f1"] == pytest.approx(f1_optimal_threshold(scores, labels).f1, abs=1e-6)
    assert load_checkpoint(run / "best.pt")["thresholds"] == thresholds.to_dict()
    # The last model (checkpoint.pt) keeps its own thresholds; thresholds.json is the deployed best.pt's.
    assert (
        load_checkpoint(run / "checkpoint.pt")["thresholds"]
        == load_checkpoint(product["run"] / "checkpoint.pt")["thresholds"]
    )
    assert load_thresholds(run / "thresholds.json") == thresholds
    best_thresholds = thresholds.to_dict()
    last = calibrate_checkpoint(run / "checkpoint.pt", device="cpu", progress=False, folders=no_masks_of(folders))
    assert load_checkpoint(run / "checkpoint.pt")["thresholds"] == last.to_dict()
    assert load_checkpoint(run / "best.pt")["thresholds"] == best_thresholds
    assert load_thresholds(run / "thresholds.json").to_dict() == best_thresholds
    again = evaluate_checkpoint(run / "best.pt", device="cpu", progress=False, folders=folders)
    assert again["threshold_source"] == "calibration" and again["image_f1"] == pytest.approx(
        thresholds.details["image_f1"]
    )
    # Calibration moves thresholds only: the threshold-free pixel AUROC and AUPRO are unchanged.
    assert (again["pixel_auroc"], again["aupro"]) == pytest.approx((metrics["pixel_auroc"], metrics["aupro"]), abs=1e-9)

    # Without masks: image-level numbers only, and the pixel threshold is kept.
    no_masks = {**folders, "mask_dir": None}
    image_only = evaluate_checkpoint(run / "best.pt", device="cpu", progress=False, folders=no_masks)
    assert image_only["pixel_auroc"] is None and "pixel_f1" not in image_only
    assert image_only["image_auroc"] == pytest.approx(metrics["image_auroc"])
    kept = calibrate_checkpoint(run / "best.pt", device="cpu", progress=False, folders=no_masks, write=False)
    assert kept.pixel == thresholds.pixel


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_rerun_replaces_only_predicts_own_files(product, tmp_path, capsys):
    """Notes a user adds to a prediction folder survive re-runs; the earlier run's own outputs are replaced."""
    checkpoint, out = str(product["run"] / "best.pt"), tmp_path / "predictions"
    first, second = product["new"][:3], product["new"][3:4]
    assert cli(["predict", *map(str, first), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("line 3 looks odd")
    (out / "masks" / "my_annotation.png").write_bytes(b"mine")
    (out / "review").mkdir()
    (out / "review" / "ok.txt").write_text("checked")
    assert cli(["predict", *map(str, second), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    tree = _tree(out)
    assert tree["notes.txt"] == b"line 3 looks odd" and tree["masks/my_annotation.png"] == b"mine"
    assert tree["review/ok.txt"] == b"checked"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in records] == [str(second[0])]
    outputs = {name for name in tree if name.startswith(("masks/", "overlays/"))} - {"masks/my_annotation.png"}
    assert outputs == {records[0]["mask"], records[0]["overlay"]}, "the first run's pictures are gone"
    manifest = json.loads((out / ".predict-manifest.json").read_text())
    assert set(manifest["files"]) == outputs | {"predictions.jsonl", "predictions.csv", "provenance.json"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging folders left"


@pytest.mark.slow
def test_a_folder_written_before_the_manifest_keeps_the_users_files(product, tmp_path):
    checkpoint, out = str(product["run"] / "best.pt"), tmp_path / "predictions"
    assert cli(["predict", *map(str, product["new"][:2]), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    (out / ".predict-manifest.json").unlink()  # as an older memseg-lite left it
    (out / "notes.txt").write_text("keep")
    assert cli(["predict", str(product["new"][2]), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "keep"
    assert len(list((out / "masks").iterdir())) == 1 and len(list((out / "overlays").iterdir())) == 1


@pytest.mark.slow
def test_predict_refuses_inputs_inside_the_output_folder(product, tmp_path, capsys):
    """`predict P --out P` would replace (before: delete) its own input images."""
    checkpoint, photos = str(product["run"] / "best.pt"), tmp_path / "photos"
    photos.mkdir()
    for path in product["new"][:2]:
        shutil.copy(path, photos / path.name)
    assert cli(["predict", str(photos), "--checkpoint", checkpoint, "--out", str(tmp_path / "out")]) == 0
    shutil.copytree(tmp_path / "out", photos, dirs_exist_ok=True)  # a prediction folder holding the images
    before = _tree(photos)
    assert cli(["predict", str(photos), "--checkpoint", checkpoint, "--out", str(photos)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "inside --out" in line and str(photos) in line and product["new"][0].name in line
    assert _tree(photos) == before, "nothing was changed"
    # A single file inside the output folder is refused the same way.
    assert cli(["predict", str(photos / product["new"][0].name), "--checkpoint", checkpoint,
                "--out", str(photos)]) == 1
    assert "inside --out" in capsys.readouterr().err and _tree(photos) == before


@pytest.mark.slow
def test_an_output_name_taken_by_a_users_file_is_refused(product, tmp_path, capsys):
    checkpoint, out = str(product["run"] / "best.pt"), tmp_path / "predictions"
    image = product["new"][0]
    assert cli(["predict", str(product["new"][1]), "--checkpoint", checkpoint, "--out", str(out)]) == 0
    (out / "overlays" / f"{image.stem}_overlay.png").write_bytes(b"my own overlay")
    assert cli(["predict", str(image), "--checkpoint", checkpoint, "--out", str(out)]) == 1
    assert "predict did not write" in capsys.readouterr().err
    assert (out / "overlays" / f"{image.stem}_overlay.png").read_bytes() == b"my own overlay"
