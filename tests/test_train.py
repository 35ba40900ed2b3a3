"""The trainer: learning, exact resume, checkpoints, failure handling, the CLI."""

from __future__ import annotations

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
from memseg_lite.training.trainer import NonFiniteLossError, Trainer, read_log, train, warmup_cosine


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
    from memseg_lite.evaluation.evaluate import load_model

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
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run", steps=6, checkpoint_every=2, val_every=10), progress=False)
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
    assert all(a < b for a, b in zip(factors[:9], factors[1:10]))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_cli_train_evaluate_predict(tiny_demo, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli(["train", "--data-root", str(tiny_demo), "--category", "button", "--out", str(run), "--steps", "2",
                "--batch-size", "2", "--image-size", "64", "--memory-size", "4", "--val-images", "2", "--val-every", "1",
                "--backbone-weights", "none", "--no-progress"])
    assert code == 0 and (run / "best.pt").is_file()
    code = cli(["evaluate", "--checkpoint", str(run / "best.pt"), "--data-root", str(tiny_demo), "--category", "button"])
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
