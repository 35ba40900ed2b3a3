"""The trainer: learning, exact resume, checkpoints, failure handling, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import tiny_config

from memseg_lite.cli import main as cli
from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.trainer import (
    NonFiniteLossError,
    Trainer,
    read_log,
    train,
    warmup_cosine,
)


def test_one_step_lowers_the_loss_on_a_fixed_batch(tiny_demo, tmp_path):
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run"), progress=False)
    model = trainer._build_model()
    optimizer, _ = trainer._make_optimizer(model)
    batch = [trainer.dataset[(index, 1000 + index)] for index in range(4)]
    images = torch.stack([image for image, _ in batch])
    masks = torch.stack([mask for _, mask in batch])
    assert masks.sum() > 0, "the fixed batch holds simulated anomalies"
    model.train()
    before = trainer.criterion(model(images), masks).total
    optimizer.zero_grad()
    before.backward()
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    optimizer.step()
    after = trainer.criterion(model(images), masks).total
    assert after.item() < before.item()


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny_demo, tmp_path):
    whole = train(tiny_config(tiny_demo, tmp_path / "whole"), progress=False)
    first = train(tiny_config(tiny_demo, tmp_path / "split"), progress=False, stop_after=3)
    assert first.interrupted and first.step == 3
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 3
    second = train(tiny_config(tiny_demo, tmp_path / "split"), resume=True, progress=False)
    assert not second.interrupted and second.step == 6
    losses_whole = [record["loss"] for record in whole.history]
    losses_split = [record["loss"] for record in read_log(tmp_path / "split")[0]]
    assert len(losses_whole) == 6 and losses_split == losses_whole, "CPU resume must repeat the same losses"
    state_whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    state_split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    for name, tensor in state_whole.items():
        torch.testing.assert_close(state_split[name], tensor, rtol=0, atol=0, msg=name)


def test_run_folder_contents_and_checkpoint_round_trip(tiny_demo, tmp_path):
    from memseg_lite.network.model import load_model

    result = train(tiny_config(tiny_demo, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "split.json", "log.jsonl", "checkpoint.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == tiny_config(tiny_demo, run)
    steps, validations = read_log(run)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in validations] == [3, 6]
    assert all(set(r) >= {"loss", "l1", "focal", "lr"} for r in steps)
    assert result.best["step"] in (3, 6)
    logged = {"loss", "image_auroc", "pixel_auroc", "pixel_ap", "aupro", "score", "seconds"}
    assert all(set(r) >= logged for r in validations)
    assert all(r["score"] == pytest.approx((r["pixel_ap"] + r["aupro"]) / 2) for r in validations), \
        "the default selection score: the mean of pixel AP and AU-PRO"
    assert result.last["step"] == 6 and result.last["pixel_ap"] == validations[-1]["pixel_ap"]

    payload = load_checkpoint(run / "checkpoint.pt")  # weights_only=True inside
    assert set(payload) >= {"model", "model_config", "optimizer", "scheduler", "rng", "step", "train_config"}
    model, _ = load_model(run / "checkpoint.pt", device="cpu")
    for name, tensor in payload["model"].items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first, second = model(images), load_model(run / "checkpoint.pt", device="cpu")[0](images)
    torch.testing.assert_close(first, second)


def test_training_never_reads_the_test_split(tiny_demo, tmp_path):
    train(tiny_config(tiny_demo, tmp_path / "run", steps=1, val_every=1), progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    used = [name for part in split.values() for name in part]
    assert len(used) == 16 and len(set(used)) == 16, "memory, train and validation are disjoint"
    train_good = tiny_demo / "button" / "train" / "good"
    assert sorted(used) == sorted(path.name for path in train_good.iterdir())
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "again"), progress=False)
    for part in ("memory", "train", "validation"):
        assert all(path.parent == train_good for path in getattr(trainer.split, part))
    assert all(path.parent == train_good for path in trainer.validation.sources)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tiny_demo, tmp_path):
    trainer = Trainer(
        tiny_config(tiny_demo, tmp_path / "run", steps=6, checkpoint_every=2, val_every=10), progress=False
    )
    real = trainer.criterion
    calls = {"n": 0}

    def poisoned(logits, target):
        calls["n"] += 1
        parts = real(logits, target)
        if calls["n"] == 4:
            return parts._replace(total=parts.total * float("nan"))
        return parts

    trainer.criterion = poisoned
    with pytest.raises(NonFiniteLossError, match=r"nan at step 4.*step 2\) is kept"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


def test_refuses_to_overwrite_a_run_and_rejects_changed_settings_on_resume(tiny_demo, tmp_path):
    train(tiny_config(tiny_demo, tmp_path / "run", steps=2, val_every=1), progress=False)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(tiny_config(tiny_demo, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(ValueError, match=r"lr: 0.003 -> 0.1"):
        train(tiny_config(tiny_demo, tmp_path / "run", steps=2, lr=0.1), resume=True, progress=False)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="image_size must be a multiple of 32"):
        TrainConfig(image_size=100)
    with pytest.raises(ValueError, match="selection_rule must be one of"):
        TrainConfig(selection_rule="nearest")
    with pytest.raises(ValueError, match="unknown option"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_warmup_cosine_schedule():
    factors = [warmup_cosine(step, 100, 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(factors[:10]))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_cli_train_evaluate_predict(tiny_demo, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli(["train", "--data-root", str(tiny_demo), "--category", "button", "--out", str(run), "--steps", "2",
                "--batch-size", "2", "--image-size", "64", "--memory-size", "4", "--val-images", "2",
                "--val-every", "1", "--backbone-weights", "none", "--no-progress"])
    assert code == 0 and (run / "best.pt").is_file()
    code = cli(
        ["evaluate", "--checkpoint", str(run / "best.pt"), "--data-root", str(tiny_demo), "--category", "button"]
    )
    assert code == 0
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["n_images"] == 4 + 4 * 2 and 0 <= metrics["aupro"] <= 1
    for figure in ("roc.png", "pro.png", "anomaly_maps.png", "best_worst.png"):
        assert (run / "evaluation" / figure).is_file(), figure
    rows = (run / "evaluation" / "scores.csv").read_text().splitlines()
    assert rows[0] == "path,defect,label,score,verdict" and len(rows) == 13  # training stored thresholds

    images = sorted((tiny_demo / "button" / "test" / "dent").iterdir())
    code = cli(["predict", *map(str, images), "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "pred")])
    assert code == 0
    assert len(list((tmp_path / "pred" / "overlays").glob("*_overlay.png"))) == len(images)
    assert len(list((tmp_path / "pred" / "masks").glob("*_mask.png"))) == len(images)
    assert "score" in capsys.readouterr().out

    code = cli(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--category", "button"])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_ctrl_c_saves_and_resume_finishes(tiny_demo, tmp_path):
    """A real SIGINT to a training process: it saves at the step it reached; --resume finishes."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "memseg_lite.cli", "train", "--data-root", str(tiny_demo), "--category", "button",
               "--out", str(run), "--steps", "60", "--batch-size", "2", "--image-size", "64", "--memory-size", "4",
               "--val-images", "2", "--val-every", "1000", "--checkpoint-every", "1000", "--backbone-weights", "none",
               "--no-progress"]
    env = {**os.environ, "MEMSEG_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    saved = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= saved < 60 and "continue with --resume" in out
    assert len(read_log(run)[0]) == saved
    finished = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=900)
    assert finished.returncode == 0, finished.stderr
    assert [record["step"] for record in read_log(run)[0]] == list(range(1, 61))


def test_cli_resume_uses_the_saved_settings(tiny_demo, tmp_path):
    run = tmp_path / "run"
    base = ["train", "--data-root", str(tiny_demo), "--category", "button", "--out", str(run), "--image-size", "64",
            "--batch-size", "2", "--memory-size", "4", "--val-images", "2", "--backbone-weights", "none",
            "--no-progress", "--val-every", "1"]
    assert cli([*base, "--steps", "2"]) == 0
    # Resuming with only --out: every other setting comes from the run's config.json.
    assert cli(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert [record["step"] for record in read_log(run)[0]] == [1, 2]
    assert np.isfinite(read_log(run)[0][-1]["loss"])


def test_resume_without_a_checkpoint_is_an_error(tiny_demo, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no run at .* to resume.*without --resume"):
        train(tiny_config(tiny_demo, tmp_path / "run"), resume=True, progress=False)
    assert not (tmp_path / "run").exists(), "nothing is started"
    code = cli(["train", "--out", str(tmp_path / "typo"), "--resume", "--no-progress"])
    assert code == 1 and "there is no run at" in capsys.readouterr().err


def test_resume_detects_changed_training_images_and_textures(tiny_demo, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    run = tmp_path / "run"
    train(tiny_config(data, run, steps=2, val_every=1), progress=False, stop_after=1)
    (data / "button" / "train" / "good" / "015.png").unlink()
    with pytest.raises(ValueError, match="do not give the split recorded"):
        train(tiny_config(data, run, steps=2, val_every=1), resume=True, progress=False)
    shutil.copy(tiny_demo / "button" / "train" / "good" / "015.png", data / "button" / "train" / "good")
    textures = tmp_path / "textures"
    textures.mkdir()
    from memseg_lite.core.io import write_image

    write_image(textures / "t.png", np.full((16, 16, 3), 120, np.uint8))
    with pytest.raises(ValueError, match="procedural textures.*1 dtd textures"):
        train(tiny_config(data, run, steps=2, val_every=1, texture_root=str(textures)), resume=True, progress=False)
    result = train(tiny_config(data, run, steps=2, val_every=1), resume=True, progress=False)
    assert result.step == 2


def test_resume_keeps_a_best_checkpoint_newer_than_the_last_checkpoint(tiny_demo, tmp_path):
    """best.pt written after the last checkpoint.pt (validation more often than checkpoints)."""
    run = tmp_path / "run"
    config = tiny_config(tiny_demo, run, steps=4, val_every=1, checkpoint_every=4)
    train(config, progress=False, stop_after=2)  # stops at step 2: a checkpoint is written then
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    best = load_checkpoint(run / "best.pt")
    assert checkpoint["step"] == 2 and best["step"] <= 2
    # Simulate a crash between a later validation and the next checkpoint: best.pt from step 3.
    from memseg_lite.core.checkpoint import save_checkpoint

    newer = {**best, "step": 3, "validation": {**best["validation"], "score": 2.0}}
    save_checkpoint({k: v for k, v in newer.items() if k not in ("format", "format_version")}, run / "best.pt")
    result = train(config, resume=True, progress=False)
    assert result.best["step"] == 3 and result.best["score"] == 2.0, "the resumed run compares against best.pt"
    assert load_checkpoint(run / "best.pt")["step"] == 3, "no validation beats it, so it stays"


def test_anomalies_simulated_on_the_training_device(tiny_demo, tmp_path):
    """synthesis="device": the batched torch simulator runs where the model runs; resume stays exact."""
    from memseg_lite.training.trainer import make_device_synthesizer

    config = tiny_config(tiny_demo, tmp_path / "whole", synthesis="device")
    trainer = Trainer(config, progress=False)
    pixels = torch.stack([trainer.dataset[(i, 0)][0] for i in range(4)])
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 3, 64, 64)
    generator = torch.Generator().manual_seed(5)
    simulated, masks = make_device_synthesizer(config, torch.device("cpu"))(pixels, generator)
    anomalous = masks.flatten(1).amax(1) > 0
    assert anomalous.any(), "some samples carry simulated anomalies"
    assert torch.equal(simulated[~anomalous], pixels[~anomalous]), "normal samples are unchanged"

    whole = train(config, progress=False)
    split_config = tiny_config(tiny_demo, tmp_path / "split", synthesis="device")
    train(split_config, progress=False, stop_after=3)
    train(split_config, resume=True, progress=False)
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in read_log(tmp_path / "split")[0]]
    loader_losses = [r["loss"] for r in train(tiny_config(tiny_demo, tmp_path / "loader"), progress=False).history]
    assert loader_losses != [r["loss"] for r in whole.history], "the two simulators draw different anomalies"


# ---- checkpoint selection -------------------------------------------------------------------------------
def test_pixel_average_precision_matches_scikit_learn():
    from sklearn.metrics import average_precision_score

    from memseg_lite.evaluation.selection_metrics import pixel_average_precision

    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) < 0.08
    maps = np.round(rng.random((4, 16, 16)) * 0.6 + 0.5 * masks, 1).astype(np.float32)  # many ties
    expected = average_precision_score(masks.ravel(), maps.ravel())
    assert pixel_average_precision(maps, masks) == pytest.approx(expected, abs=1e-12)
    from_tensors = pixel_average_precision(torch.from_numpy(maps), torch.from_numpy(masks))
    assert from_tensors == pytest.approx(expected, abs=1e-12)
    assert pixel_average_precision(masks.astype(np.float32), masks) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no anomalous pixel"):
        pixel_average_precision(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_average_precision(maps[:2], masks)


def test_pixel_average_precision_counts_only_valid_pixels():
    from sklearn.metrics import average_precision_score

    from memseg_lite.evaluation.selection_metrics import pixel_average_precision

    rng = np.random.default_rng(5)
    masks = rng.random((3, 12, 16)) < 0.1
    maps = rng.random((3, 12, 16)).astype(np.float32) * 0.7 + 0.3 * masks
    valid = np.zeros(masks.shape, np.uint8)
    valid[:, :, 3:13] = 1
    maps[:, :, :3] = 5.0  # padding scored highest: counted, it would ruin the precision at the top
    expected = average_precision_score(masks[:, :, 3:13].ravel(), maps[:, :, 3:13].ravel())
    assert pixel_average_precision(maps, masks, valid=valid) == pytest.approx(expected, abs=1e-12)
    assert pixel_average_precision(maps, masks) < expected - 0.05
    with pytest.raises(ValueError, match="valid .* differ in shape"):
        pixel_average_precision(maps, masks, valid=valid[:2])


def _letterboxed_folder(tiny_demo, folder, rows=(12, 52)):
    """button's train/good cut to 40 x 64 crops: letterboxed to 64 x 64 they get 12 padding rows above and below."""
    import cv2

    folder.mkdir(parents=True)
    for path in sorted((tiny_demo / "button" / "train" / "good").iterdir()):
        image = cv2.resize(cv2.imread(str(path)), (64, 64), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(folder / path.name), image[rows[0] : rows[1]])
    return folder


def test_validation_leaves_letterbox_padding_out(tiny_demo, tmp_path):
    from memseg_lite.evaluation.selection_metrics import validation_metrics
    from memseg_lite.evaluation.thresholds import validation_thresholds

    good = _letterboxed_folder(tiny_demo, tmp_path / "good")
    config = tiny_config(None, tmp_path / "run", data_root=None, category="bolt", good_dir=str(good),
                         resize="letterbox", val_anomalies_per_image=2)
    trainer = Trainer(config, progress=False)
    validation = trainer.validation
    assert validation.valid is not None and validation.valid.shape == validation.masks.shape
    expected_valid = torch.zeros(64, 64, dtype=torch.uint8)
    expected_valid[12:52] = 1
    assert all(torch.equal(region, expected_valid) for region in validation.valid)
    assert validation.masks[:, :12].sum() == 0 and validation.masks[:, 52:].sum() == 0
    trainer.model = trainer._build_model()
    with torch.no_grad():
        maps = torch.softmax(trainer.model.eval()(validation.images), dim=1)[:, 1]
    scores = trainer.model.image_score(maps)
    # Independently: the same metrics and thresholds on the maps cropped to the image's own rows.
    inside = (maps[:, 12:52].numpy(), validation.masks[:, 12:52].numpy())
    metrics = trainer.validate()
    expected = validation_metrics(scores.numpy(), validation.labels.numpy(), *inside)
    for name in ("pixel_auroc", "pixel_ap", "aupro", "image_auroc"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-6), name
    thresholds = trainer._thresholds_for(trainer.model, 0)
    cropped = validation_thresholds(scores.numpy(), validation.labels.numpy(), *inside)
    assert thresholds.pixel == pytest.approx(cropped.pixel, abs=1e-6)
    assert thresholds.image == pytest.approx(cropped.image, abs=1e-6)


def test_a_square_validation_set_has_no_valid_region(tiny_demo, tmp_path):
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run"), progress=False)
    assert trainer.validation.valid is None


def test_validation_metrics_against_independent_computations():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from memseg_lite.evaluation.metrics import naive_aupro
    from memseg_lite.evaluation.selection_metrics import (
        SELECTION_METRICS,
        selection_score,
        validation_metrics,
    )

    rng = np.random.default_rng(4)
    masks = np.zeros((6, 20, 20), np.uint8)
    masks[1, 3:8, 4:9] = 1
    masks[2, 10:12, 10:18] = 1
    masks[4, 0:3, 0:3] = masks[4, 15:19, 12:16] = 1
    maps = (rng.random(masks.shape) * 0.7 + 0.3 * masks).astype(np.float32)
    labels = masks.reshape(6, -1).max(1)
    scores = maps.reshape(6, -1).max(1)
    metrics = validation_metrics(scores, labels, maps, masks)
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert metrics["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    assert metrics["aupro"] == pytest.approx(naive_aupro(maps, masks, 0.3))
    assert selection_score(metrics, "ap_aupro_mean") == pytest.approx((metrics["pixel_ap"] + metrics["aupro"]) / 2)
    auroc_mean = (metrics["image_auroc"] + metrics["pixel_auroc"]) / 2
    assert selection_score(metrics, "auroc_mean") == pytest.approx(auroc_mean)
    assert set(SELECTION_METRICS) == {"pixel_ap", "aupro", "ap_aupro_mean", "auroc_mean"}
    with pytest.raises(ValueError, match="unknown selection metric 'f1'"):
        selection_score(metrics, "f1")
    with pytest.raises(ValueError, match="selection_metric must be one of"):
        TrainConfig(selection_metric="f1")
    with pytest.raises(ValueError, match="val_recipe must be one of"):
        TrainConfig(val_recipe="harder")


def _scripted_validation(monkeypatch, pixel_aps, aurocs):
    """Validation metrics from a script (one entry per validation), so which step is best is known."""
    from memseg_lite.evaluation import selection_metrics

    calls = iter(range(len(pixel_aps)))

    def scripted(scores, labels, maps, masks, fpr_limit=0.3, valid=None):
        index = next(calls)
        return {"image_auroc": aurocs[index], "pixel_auroc": aurocs[index], "pixel_ap": pixel_aps[index], "aupro": 0.5}

    monkeypatch.setattr(selection_metrics, "validation_metrics", scripted)


@pytest.mark.parametrize("metric, best_step", [("pixel_ap", 2), ("auroc_mean", 3)])
def test_selection_picks_the_best_by_the_chosen_metric(tiny_demo, tmp_path, monkeypatch, metric, best_step):
    # The AUROCs saturate (0.990 -> 0.995 -> 0.999) while pixel AP peaks at step 2.
    _scripted_validation(monkeypatch, pixel_aps=[0.2, 0.5, 0.4], aurocs=[0.990, 0.995, 0.999])
    run = tmp_path / "run"
    result = train(tiny_config(tiny_demo, run, steps=3, val_every=1, selection_metric=metric), progress=False)
    assert result.best["step"] == best_step
    best = load_checkpoint(run / "best.pt")
    assert best["step"] == best_step and best["validation"]["score"] == result.best["score"]
    scores = [r["score"] for r in read_log(run)[1]]
    expected = [0.2, 0.5, 0.4] if metric == "pixel_ap" else [0.990, 0.995, 0.999]
    assert scores == pytest.approx(expected)


def test_last_and_best_checkpoints_carry_their_own_thresholds(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.evaluation.thresholds import load_thresholds, validation_thresholds
    from memseg_lite.network.model import load_model

    _scripted_validation(monkeypatch, pixel_aps=[0.2, 0.5, 0.4], aurocs=[0.9, 0.9, 0.9])
    run = tmp_path / "run"
    config = tiny_config(tiny_demo, run, steps=3, val_every=1)
    trainer = Trainer(config, progress=False)
    trainer.fit()
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "checkpoint.pt")
    assert (best["step"], last["step"]) == (2, 3)
    assert best["thresholds"]["details"]["step"] == 2 and last["thresholds"]["details"]["step"] == 3
    assert load_thresholds(run / "thresholds.json").to_dict() == best["thresholds"], "thresholds.json: the best's"
    # Independently: the rule applied to each model's own validation predictions.
    validation = trainer.validation
    for payload, path in ((best, run / "best.pt"), (last, run / "checkpoint.pt")):
        model, _ = load_model(path, device="cpu")
        with torch.no_grad():
            maps = torch.softmax(model(validation.images), dim=1)[:, 1]
        expected = validation_thresholds(model.image_score(maps).numpy(), validation.labels.numpy(), maps.numpy(),
                                         validation.masks.numpy())
        assert payload["thresholds"]["image"] == pytest.approx(expected.image, rel=1e-5)
        assert payload["thresholds"]["pixel"] == pytest.approx(expected.pixel, rel=1e-5)
    assert best["thresholds"] != last["thresholds"]


def test_a_saved_config_without_an_option_takes_its_default_and_other_rules_block_resume(tmp_path):
    """No legacy values: a missing option is today's default; resuming with other selection rules is refused."""
    saved = TrainConfig(steps=2, val_recipe="basic", selection_metric="auroc_mean").to_dict()
    old = {k: v for k, v in saved.items() if k not in ("val_recipe", "selection_metric")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = TrainConfig.load(tmp_path / "config.json")
    assert (loaded.val_recipe, loaded.selection_metric) == (TrainConfig.val_recipe, TrainConfig.selection_metric)
    assert TrainConfig.from_dict(saved).changes_blocking_resume(loaded) == ["val_recipe", "selection_metric"]


def test_cli_evaluate_best_and_last_side_by_side(tiny_demo, tmp_path, monkeypatch, capsys):
    _scripted_validation(monkeypatch, pixel_aps=[0.2, 0.5, 0.4], aurocs=[0.9, 0.9, 0.9])
    run = tmp_path / "run"
    train(tiny_config(tiny_demo, run, steps=3, val_every=1), progress=False)
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(run), "--no-figures", "--backend", "eager"]) == 0
    printed = capsys.readouterr().out
    best = json.loads((run / "evaluation" / "metrics.json").read_text())
    last = json.loads((run / "evaluation" / "last" / "metrics.json").read_text())
    assert (best["training_steps"], last["training_steps"]) == (2, 3)
    assert last["checkpoint"].endswith("checkpoint.pt") and last["same_as_best"] is False
    assert best["image_auroc"] != last["image_auroc"] or best["pixel_auroc"] != last["pixel_auroc"]
    table = (run / "evaluation" / "best_vs_last.md").read_text()
    assert "| button | best (step 2) | last (step 3) |" in table and table.strip() in printed
    assert f"| image AUROC | {best['image_auroc']:.4f} | {last['image_auroc']:.4f} |" in table
    # --also-last with the best checkpoint's file does the same
    out = tmp_path / "again"
    assert cli(["evaluate", "--checkpoint", str(run / "best.pt"), "--also-last", "--no-figures", "--out", str(out),
                "--backend", "eager"]) == 0
    assert json.loads((out / "last" / "metrics.json").read_text())["image_auroc"] == last["image_auroc"]
    assert cli(["evaluate", "--checkpoint", str(tmp_path)]) == 1
    assert "without best.pt or checkpoint.pt" in capsys.readouterr().err


def test_cli_evaluate_once_when_the_best_is_the_last_step(tiny_demo, tmp_path, monkeypatch, capsys):
    _scripted_validation(monkeypatch, pixel_aps=[0.2, 0.5], aurocs=[0.9, 0.9])
    run = tmp_path / "run"
    train(tiny_config(tiny_demo, run, steps=2, val_every=1), progress=False)
    import memseg_lite.evaluation.evaluate as evaluate_module
    from memseg_lite.deployment.fast import BACKENDS

    calls = []
    real = evaluate_module.evaluate_checkpoint
    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint",
                        lambda *a, **k: calls.append((a[0], k.get("backend"))) or real(*a, **k))
    assert cli(["evaluate", "--checkpoint", str(run)]) == 0
    assert "the same model" in capsys.readouterr().out and len(calls) == 1
    assert calls[0][1] is BACKENDS["fast"], "--backend defaults to fast"
    last = json.loads((run / "evaluation" / "last" / "metrics.json").read_text())
    assert last["same_as_best"] is True and last["training_steps"] == 2
    assert (run / "evaluation" / "roc.png").is_file() and not (run / "evaluation" / "last" / "roc.png").exists()


def test_cli_calibrate_passes_the_backend(tmp_path, monkeypatch):
    import memseg_lite.evaluation.evaluate as evaluate_module
    from memseg_lite.deployment.fast import BACKENDS

    seen = {}

    def fake_calibrate(checkpoint, *args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(evaluate_module, "calibrate_checkpoint", fake_calibrate)
    with pytest.raises(SystemExit):
        cli(["calibrate", "--checkpoint", str(tmp_path / "best.pt"), "--backend", "folded"])
    assert seen["backend"] is BACKENDS["folded"]


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_temporary_files_left_by_a_killed_write_are_removed_on_start_and_resume(tiny_demo, tmp_path, capsys, resume):
    """``kill -9`` during an atomic save leaves ``.best.pt.<random>.tmp``; the next start or resume deletes it."""
    run = tmp_path / "run"
    if resume:
        train(tiny_config(tiny_demo, run, steps=3), progress=False, stop_after=3)
    else:
        run.mkdir()
    leftovers = [run / ".best.pt.k3j9x2ab.tmp", run / ".checkpoint.pt.0q1w2e3r.tmp", run / ".log.jsonl.zz8.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 4096)
    kept = [run / ".notes.tmp", run / "best.pt.tmp", run / ".my.best.pt.tmp"]  # not temporaries of the run's files
    for path in kept:
        path.write_text("mine")
    train(tiny_config(tiny_demo, run, steps=3), resume=resume, progress=False)
    assert not [path for path in leftovers if path.exists()]
    assert all(path.read_text() == "mine" for path in kept)
    assert "temporary file(s) left by an interrupted write" in capsys.readouterr().out
