"""Simulation settings files: format, validation, TrainConfig, and the explorer -> file -> trainer round trip."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # no display in tests

import cv2
import numpy as np
import pytest
import torch

from memseg_lite.core.transforms import image_to_tensor
from memseg_lite.simulation.foreground import ForegroundSettings
from memseg_lite.simulation.settings import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SimulationSettings,
    load_simulation_settings,
    save_simulation_settings,
)
from memseg_lite.simulation.textures import TextureSource
from memseg_lite.training.config import TrainConfig


def custom_settings() -> SimulationSettings:
    return SimulationSettings(
        foreground=ForegroundSettings(mode="threshold", threshold=60, invert=False, kernel_size=3, fill_holes=False),
        p_normal=0.25, p_texture=0.75, delta_range=(0.3, 0.9), perlin_scale_range=(1, 4),
        perlin_threshold=0.4, structure_grid=(2, 4), max_tries=20, notes={"by": "test"},
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_round_trip(tmp_path, suffix):
    settings = custom_settings()
    path = save_simulation_settings(settings, tmp_path / f"sim{suffix}")
    assert load_simulation_settings(path) == settings
    if suffix == ".json":
        data = json.loads(path.read_text())
        assert data["format"] == FORMAT_NAME and data["version"] == FORMAT_VERSION
        assert data["foreground"]["threshold"] == 60 and data["delta_range"] == [0.3, 0.9]


def test_missing_keys_take_the_defaults(tmp_path):
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"format": FORMAT_NAME, "version": 1, "perlin_threshold": 0.3}))
    settings = load_simulation_settings(path)
    assert settings.perlin_threshold == 0.3 and settings == SimulationSettings(perlin_threshold=0.3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something else"}, "not a simulation settings file"),
        ({"version": 99}, "newer than this memseg-lite reads"),
        ({"version": "1"}, "version"),
        ({"colour": "red"}, "unknown key"),
        ({"foreground": {"mode": "magic"}}, "foreground: ForegroundSettings.mode"),
        ({"foreground": {"thresh": 3}}, "unknown foreground key"),
        ({"delta_range": [0.0, 1.0]}, "delta_range"),
        ({"delta_range": 0.5}, "delta_range"),
        ({"p_normal": 1.5}, "p_normal"),
        ({"perlin_scale_range": [3, 1]}, "perlin_scale_range"),
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, change, message):
    data = {**custom_settings().to_dict(), **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as error:
        load_simulation_settings(path)
    assert str(path) in str(error.value)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_simulation_settings(tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_simulation_settings(broken)
    with pytest.raises(ValueError, match=r"\.json, \.yaml or \.yml"):
        save_simulation_settings(custom_settings(), tmp_path / "sim.txt")


def test_train_config_reads_the_file(tmp_path):
    path = save_simulation_settings(custom_settings(), tmp_path / "sim.json")
    config = TrainConfig(simulation_file=str(path), out_dir=str(tmp_path / "run"))
    assert config.perlin_threshold == 0.4 and config.delta_range == (0.3, 0.9) and config.structure_grid == (2, 4)
    assert config.p_normal == 0.25 and config.max_tries == 20
    assert config.foreground_settings["threshold"] == 60 and config.foreground is None
    # config.json round trip (what --resume reads) gives the same config
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict() == config.to_dict() and not config.changes_blocking_resume(again)
    # a value set in both places must agree
    assert TrainConfig(simulation_file=str(path), perlin_threshold=0.4).perlin_threshold == 0.4
    with pytest.raises(ValueError, match="perlin_threshold=0.3 contradicts the simulation file"):
        TrainConfig(simulation_file=str(path), perlin_threshold=0.3)
    with pytest.raises(ValueError, match="both set the foreground"):
        TrainConfig(simulation_file=str(path), foreground="otsu")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        TrainConfig(simulation_file=str(tmp_path / "missing.json"))
    # the saved config of a run notices a changed file
    changed = custom_settings().to_dict() | {"perlin_threshold": 0.2}
    path.write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="changed since the run started"):
        TrainConfig.from_dict(config.to_dict())


def test_texture_root_is_relative_to_the_file(tmp_path):
    (tmp_path / "textures").mkdir()
    settings = SimulationSettings(texture_root="textures")
    path = save_simulation_settings(settings, tmp_path / "sim.json")
    config = TrainConfig(simulation_file=str(path))
    assert config.texture_root == str((tmp_path / "textures").resolve())


def test_cli_train_has_the_option(tmp_path):
    from memseg_lite.cli import build_parser

    args = build_parser().parse_args(["train", "--simulation", str(tmp_path / "sim.json")])
    assert args.simulation_file == str(tmp_path / "sim.json")


def _equal(a, b) -> None:
    assert a.kind == b.kind and a.delta == b.delta
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.slow
def test_explorer_settings_reproduce_in_the_trainer(tmp_path):
    """Widget controls -> Save settings -> TrainConfig(simulation_file) -> Trainer's simulator: same samples."""
    from memseg_lite.datasets.demo.writer import write_demo_dataset
    from memseg_lite.teaching.widgets import anomaly_explorer
    from memseg_lite.training.trainer import Trainer, make_synthesizer

    write_demo_dataset(tmp_path / "data", categories="button", size=64, n_train=14, n_test_good=1, n_per_defect=1)
    textures = tmp_path / "textures"  # a small texture folder, in place of DTD
    textures.mkdir()
    rng = np.random.default_rng(0)
    for number in range(3):
        cv2.imwrite(str(textures / f"t{number}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    config_args = {
        "data_root": str(tmp_path / "data"), "category": "button", "out_dir": str(tmp_path / "run"),
        "image_size": 64, "memory_size": 2, "val_images": 2, "steps": 1, "texture_root": str(textures),
        "backbone_weights": "none", "device": "cpu",
    }
    probe = Trainer(TrainConfig(**config_args), progress=False)  # the training images, as the trainer sees them
    picture = probe.train_pixels[0]

    explorer = anomaly_explorer({"my part": picture}, texture_source=TextureSource(textures), draw=False)
    c = explorer.controls
    c["fg_mode"].value = "threshold"
    c["fg_threshold"].value = 90
    c["fg_invert"].value = "auto"
    c["fg_kernel"].value = 3
    c["scale_range"].value = (1, 4)
    c["threshold"].value = 0.45
    c["delta_range"].value = (0.3, 0.8)
    c["grid_rows"].value, c["grid_cols"].value = 2, 4
    c["kind"].value = "random"
    previews = {}
    for seed in range(8):
        c["seed"].value = seed
        previews[seed] = explorer.result
    assert {p.kind for p in previews.values()} >= {"normal", "texture", "structure"}
    path = explorer.save_settings(tmp_path / "simulation.json")
    assert load_simulation_settings(path).texture_root == str(textures.resolve())

    config = TrainConfig(**config_args, simulation_file=str(path))
    assert config.perlin_threshold == 0.45 and config.foreground_settings["threshold"] == 90
    trainer = Trainer(config, progress=False)
    for seed, preview in previews.items():
        _equal(trainer.synthesizer.sample(picture, np.random.default_rng(seed)), preview)
        image, mask = trainer.dataset[(0, seed)]  # what a training batch holds for this image and sample seed
        torch.testing.assert_close(image, image_to_tensor(preview.image))
        np.testing.assert_array_equal(mask.numpy(), preview.mask)
    # a forced kind and delta in the preview is the simulator with that kind and delta
    c["kind"].value, c["delta"].value, c["seed"].value = "texture", 0.7, 3
    _equal(
        make_synthesizer(config).sample(picture, np.random.default_rng(3), kind="texture", delta=0.7), explorer.result
    )
    # and without the file, the trainer's default simulation differs
    default = make_synthesizer(TrainConfig(**config_args))
    assert any(
        not np.array_equal(default.sample(picture, np.random.default_rng(s)).mask, previews[s].mask)
        for s in previews if previews[s].kind != "normal"
    )
