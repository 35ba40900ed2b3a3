"""Ablation switches of the network and the simulation, the authors' code's variant, and ``memseg-lite ablate``."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

import memseg_lite.network.model as model_module
from memseg_lite.cli import main
from memseg_lite.experiments import ablate as ablate_module
from memseg_lite.experiments.ablate import ablate, parse_list, summarise
from memseg_lite.experiments.variants import variant_options
from memseg_lite.network.attention import CoordinateAttention
from memseg_lite.network.model import (
    MemSeg,
    build_memseg,
    memseg_from_state,
    parameter_counts,
)
from memseg_lite.network.msff import MSFF, PlainSkips
from memseg_lite.simulation.synthesis import AnomalySynthesizer, TorchAnomalySynthesizer
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.presets import authors_code_options


def images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def build(**switches) -> MemSeg:
    return build_memseg(images(3), backbone_weights="none", **switches).eval()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def round_trip(model: MemSeg) -> MemSeg:
    buffer = io.BytesIO()
    torch.save({"model_config": model.config(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    payload = torch.load(buffer, weights_only=True)
    json.dumps(payload["model_config"])  # the config is plain JSON
    return memseg_from_state(payload["model_config"], payload["model"]).eval()


@pytest.fixture(scope="module")
def full() -> MemSeg:
    return build()


# ---- network switches ------------------------------------------------------------------------------
def test_defaults_are_the_paper_network(full):
    config = full.config()
    assert {k: config[k] for k in model_module.ABLATION_DEFAULTS} == model_module.ABLATION_DEFAULTS
    assert isinstance(full.msff, MSFF)
    # a checkpoint written before the switches existed (no such keys) rebuilds the same network
    old = {k: v for k, v in config.items() if k not in model_module.ABLATION_DEFAULTS}
    restored = memseg_from_state(old, full.state_dict()).eval()
    x = images(2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), full(x))


def test_no_memory_has_no_di_and_attention_of_ones(monkeypatch):
    model = build(use_memory=False)
    assert len(model.memory) == 0 and parameter_counts(model)["memory_bank_values"] == 0

    def no_memory_comparison(*args, **kwargs):
        raise AssertionError("the memory comparison ran in a model without memory")

    monkeypatch.setattr(model_module, "difference_information", no_memory_comparison)
    with torch.no_grad():
        out = model.forward_intermediates(images(2, seed=1))
    assert out.logits.shape == (2, 2, 64, 64)
    assert [t.shape[1] for t in out.di_star] == [0, 0, 0] and out.indices.numel() == 0
    assert [tuple(t.shape[1:]) for t in out.concatenated] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    torch.testing.assert_close(out.concatenated[2], out.features.level3)  # CI = II
    assert all(torch.equal(m, torch.ones_like(m)) for m in out.attention_maps)
    assert [tuple(t.shape[1:]) for t in out.fused] == [(32, 16, 16), (64, 8, 8), (128, 4, 4)]
    # MSFF sees half the channels: exactly the parameters of an MSFF for (64, 128, 256)
    assert n_params(model.msff) == n_params(MSFF(in_channels=(64, 128, 256)))


def test_no_attention_leaves_the_fused_features_unweighted(full, monkeypatch):
    model = build(use_attention=False)
    assert n_params(model) == n_params(full)  # same parameters: it can load the full model's weights
    model.load_state_dict(full.state_dict())
    monkeypatch.setattr(model_module, "spatial_attention_maps",
                        lambda di: (_ for _ in ()).throw(AssertionError("attention computed")))
    x = images(2, seed=2)
    with torch.no_grad():
        out = model.forward_intermediates(x)
        expected = full.msff(out.concatenated, None)
    assert all(torch.equal(m, torch.ones_like(m)) for m in out.attention_maps)
    for got, want in zip(out.fused, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert out.di_star[0].shape[1] == 64  # the memory is still there


def test_no_msff_uses_one_1x1_conv_per_level(full):
    model = build(fusion="plain")
    assert isinstance(model.msff, PlainSkips)
    assert not any(isinstance(m, CoordinateAttention) for m in model.modules())
    # by hand: conv 1x1 C -> C/2 without bias, then batch norm (weight + bias) of C/2
    expected = sum(c * (c // 2) + 2 * (c // 2) for c in (128, 256, 512))
    assert n_params(model.msff) == expected
    assert n_params(model.decoder) == n_params(full.decoder)  # same channel counts for the decoder
    with torch.no_grad():
        out = model.forward_intermediates(images(2, seed=3))
    assert [tuple(t.shape[1:]) for t in out.fused] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]


def box_mean(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 mean over the pixels inside the image (an independent count of the window)."""
    channels = x.shape[1]
    kernel = torch.ones(channels, 1, 3, 3, dtype=x.dtype)
    total = F.conv2d(x, kernel, padding=1, groups=channels)
    count = F.conv2d(torch.ones_like(x[:, :1]), torch.ones(1, 1, 3, 3, dtype=x.dtype), padding=1)
    return total / count


def test_avgpool3_smooths_input_and_memory(full):
    model = build(feature_smoothing="avgpool3")
    model.load_state_dict(full.state_dict())
    x = images(2, seed=4)
    with torch.no_grad():
        out = model.forward_intermediates(x)
    torch.testing.assert_close(out.concatenated[0][:, :64], box_mean(out.features.level1), rtol=1e-5, atol=1e-5)
    memory = box_mean(model.memory.level2)
    chosen = memory[out.indices]
    torch.testing.assert_close(out.di_star[1], (chosen - box_mean(out.features.level2)).abs(), rtol=1e-4, atol=1e-5)
    # a memory image is still its own closest sample, with zero difference
    with torch.no_grad():
        same = model.forward_intermediates(images(3)[:1])
    assert all(float(d.abs().max()) < 1e-4 for d in same.di_star)


def test_scaling_multiplies_ci_not_the_attention(full):
    model = build(di_scale=100.0, feature_scale=10.0)
    model.load_state_dict(full.state_dict())
    x = images(2, seed=6)
    with torch.no_grad():
        scaled, plain = model.forward_intermediates(x), full.forward_intermediates(x)
    torch.testing.assert_close(scaled.concatenated[0][:, :64], 10.0 * plain.features.level1)
    torch.testing.assert_close(scaled.concatenated[0][:, 64:], 100.0 * plain.di_star[0])
    for a, b in zip(scaled.attention_maps, plain.attention_maps, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(scaled.logits, plain.logits)


@pytest.mark.parametrize("switches", [
    {"use_memory": False}, {"use_attention": False}, {"fusion": "plain"},
    {"feature_smoothing": "avgpool3", "di_scale": 100.0, "feature_scale": 100.0, "selection_rule": "official"},
])
def test_each_switch_round_trips_through_a_checkpoint(switches):
    model = build(**switches)
    restored = round_trip(model)
    assert restored.config() == model.config()
    for name, value in switches.items():
        assert getattr(restored, name) == value
    x = images(2, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))


@pytest.mark.parametrize("bad, match", [
    ({"fusion": "fpn"}, "fusion must be one of"),
    ({"feature_smoothing": "avgpool5"}, "feature_smoothing must be one of"),
    ({"di_scale": 0.0}, "di_scale must be a finite number > 0"),
    ({"feature_scale": -1.0}, "feature_scale must be"),
])
def test_bad_switches_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        MemSeg(**bad)
    with pytest.raises(TypeError, match="use_memory must be True or False"):
        MemSeg(use_memory="no")
    with pytest.raises(ValueError, match="TrainConfig: fusion"):
        TrainConfig(fusion="fpn")


# ---- simulation kinds ----------------------------------------------------------------------------
@pytest.mark.parametrize("p_texture, absent", [(1.0, "structure"), (0.0, "texture")])
def test_texture_only_and_structure_only(p_texture, absent):
    synthesizer = AnomalySynthesizer(foreground="none", p_texture=p_texture, p_normal=0.0)
    rng = np.random.default_rng(0)
    kinds = {synthesizer.draw_kind(rng) for _ in range(300)}
    assert kinds == {"texture", "structure"} - {absent}
    bank = None if p_texture == 0 else np.zeros((2, 32, 32, 3), np.uint8)
    batched = TorchAnomalySynthesizer(foreground="none", texture_bank=bank, p_texture=p_texture, p_normal=0.0)
    result = batched.sample(torch.zeros(64, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert set(result.kinds.tolist()) == {1 if p_texture == 1 else 2}


def test_no_foreground_lets_anomalies_land_on_the_background():
    image = np.zeros((64, 64, 3), np.uint8)
    image[24:40, 24:40] = 200  # a small bright object on black
    rng = np.random.default_rng(1)
    outside = 0
    for _ in range(20):
        result = AnomalySynthesizer(foreground="none", p_normal=0.0, p_texture=0.0).sample(image, rng)
        assert result.foreground_mask.all()
        outside += int(result.mask[:24].sum())
    assert outside > 0
    masked = AnomalySynthesizer(foreground="hazelnut", p_normal=0.0, p_texture=0.0).sample(image, rng)
    assert masked.mask[:20].sum() == 0  # with the mask, nothing lands outside the object


# ---- the authors' code's variant -----------------------------------------------------------------
def test_authors_code_per_category_settings():
    assert authors_code_options("screw")["memory_size"] == 120
    assert authors_code_options("toothbrush")["memory_size"] == 10
    assert authors_code_options("bottle") == {"memory_size": 30, "feature_smoothing": "avgpool3",
                                              "selection_rule": "official", "di_scale": 100.0, "feature_scale": 100.0}
    assert authors_code_options("transistor")["di_scale"] == 1000.0
    assert authors_code_options("transistor")["feature_scale"] == 1.0 == authors_code_options("cable")["feature_scale"]
    assert authors_code_options("cable")["di_scale"] == 100.0
    TrainConfig(category="screw", **authors_code_options("screw"))  # valid options
    assert variant_options("no_msff", "button") == {"fusion": "plain"}
    with pytest.raises(ValueError, match="unknown variant 'no_decoder'; known variants: full"):
        variant_options("no_decoder", "button")


def test_train_variant_authors_code_keeps_explicit_options(tmp_path, monkeypatch):
    seen = {}

    def fake_train(config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr("memseg_lite.training.trainer.train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", "--category", "screw", "--out", str(tmp_path / "run"), "--variant", "authors_code",
              "--di-scale", "7", "--no-attention"])
    config = seen["config"]
    assert (config.memory_size, config.feature_smoothing, config.selection_rule) == (120, "avgpool3", "official")
    assert config.di_scale == 7.0 and config.feature_scale == 100.0 and config.use_attention is False


def test_parse_list_and_summary():
    assert parse_list("0, 1", "seeds", int) == [0, 1]
    for bad in ("0,,1", "0,0", "a"):
        with pytest.raises(ValueError, match="seeds"):
            parse_list(bad, "seeds", int)
    rows = summarise({"full": {0: {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": None},
                               1: {"image_auroc": 0.7, "pixel_auroc": 0.6, "aupro": None}}})
    spread = rows[0]["image_auroc"]
    assert spread["mean"] == pytest.approx(80.0) and spread["std"] == pytest.approx(np.std([90, 70], ddof=1))
    assert (spread["min"], spread["max"]) == (pytest.approx(70.0), pytest.approx(90.0))
    assert rows[0]["aupro"]["mean"] is None
    assert rows[0]["last_image_auroc"] == {"mean": None, "std": None, "min": None, "max": None}, "no last runs given"
    with_last = summarise({"full": {0: {"image_auroc": 0.9}, 1: {"image_auroc": 0.7}}},
                          {"full": {0: {"image_auroc": 0.6}, 1: {"image_auroc": 0.8}}})
    assert with_last[0]["last_image_auroc"]["mean"] == pytest.approx(70.0)
    assert with_last[0]["last_image_auroc"]["std"] == pytest.approx(np.std([60, 80], ddof=1))


# ---- memseg-lite ablate end to end ---------------------------------------------------------------
def test_ablate_end_to_end_and_rerun_skips(tiny_demo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    common = {k: v for k, v in tiny_config(tiny_demo, tmp_path / "unused", steps=2, val_every=1).to_dict().items()
              if k not in ("data_root", "category", "out_dir", "seed")}
    rows = ablate(tiny_demo, "button", out, variants="full,no_memory", seeds="0", progress=False, **common)
    assert [r["variant"] for r in rows] == ["full", "no_memory"]
    for variant, use_memory in (("full", True), ("no_memory", False)):
        run = out / variant / "seed0"
        metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
        payload = torch.load(run / "best.pt", weights_only=True)
        assert payload["model_config"]["use_memory"] is use_memory
        assert TrainConfig.load(run / "config.json").use_memory is use_memory
        row = rows[[r["variant"] for r in rows].index(variant)]
        assert row["image_auroc"]["mean"] == pytest.approx(100 * metrics["image_auroc"])
        assert row["image_auroc"]["std"] is None  # one seed: no spread
        last = json.loads((run / "evaluation" / "last" / "metrics.json").read_text())
        assert last["training_steps"] == 2
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            assert row[f"last_{key}"]["mean"] == pytest.approx(100 * last[key])
            assert set(row[f"last_{key}"]) == {"mean", "std", "min", "max"}
    with (out / "results.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert [r["variant"] for r in table] == ["full", "no_memory"]
    assert all(0.0 <= float(r["image_auroc_mean"]) <= 100.0 for r in table)
    assert all(0.0 <= float(r["last_aupro_mean"]) <= 100.0 for r in table)
    text = (out / "results.md").read_text()
    assert "| no_memory | 1 | best |" in text and "| no_memory | 1 | last |" in text

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("memseg_lite.training.trainer.train", no_training)
    monkeypatch.setattr("memseg_lite.evaluation.evaluate.evaluate_checkpoint", no_training)
    again = ablate(tiny_demo, "button", out, variants=["full", "no_memory"], seeds=[0], progress=True, **common)
    assert again == rows
    assert capsys.readouterr().out.count("finished before, skipped") == 2
    # the same folder with other settings is refused, naming what differs
    with pytest.raises(ValueError, match="made with other settings \\(steps"):
        ablate(tiny_demo, "button", out, variants="full", seeds="0", progress=False, **{**common, "steps": 3})


def test_ablate_cli_refuses_bad_input_before_training(tiny_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablate_module, "run_variant", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    code = main(["ablate", "--data-root", str(tiny_demo), "--category", "button", "--variants", "full,no_decoder",
                 "--out", str(tmp_path / "study")])
    assert code == 1
    assert "unknown variant 'no_decoder'" in capsys.readouterr().err
    code = main(["ablate", "--data-root", str(tiny_demo), "--category", "button", "--seeds", "0,x",
                 "--out", str(tmp_path / "study")])
    assert code == 1 and "seeds" in capsys.readouterr().err


def test_ablate_cli_passes_the_study_options_to_every_run(tiny_demo, tmp_path, monkeypatch):
    seen = {}

    def record(data_root, category, out_dir, variants=None, seeds=(0,), progress=True, figures=False, **overrides):
        seen.update(overrides, variants=variants, seeds=seeds)
        return []

    monkeypatch.setattr(ablate_module, "ablate", record)
    code = main(["ablate", "--data-root", str(tiny_demo), "--category", "button", "--out", str(tmp_path / "study"),
                 "--variants", "full,authors_code", "--seeds", "0,1", "--memory-size", "12", "--val-images", "4",
                 "--val-anomalies", "3", "--val-every", "50", "--checkpoint-every", "25", "--top-k", "20",
                 "--lr", "0.001", "--amp", "off", "--steps", "7", "--no-progress"])
    assert code == 0
    assert seen == {"memory_size": 12, "val_images": 4, "val_anomalies_per_image": 3, "val_every": 50,
                    "checkpoint_every": 25, "top_k": 20, "lr": 0.001, "amp": "off", "steps": 7,
                    "variants": "full,authors_code", "seeds": "0,1"}


@pytest.mark.parametrize("name", ["results.md", "results.csv"])
def test_ablate_never_overwrites_a_results_file_it_did_not_write(tiny_demo, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(ablate_module, "run_variant", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    study = tmp_path / "study"
    study.mkdir()
    (study / name).write_text("my own notes on the study\n")
    code = main(["ablate", "--data-root", str(tiny_demo), "--category", "button", "--variants", "full",
                 "--out", str(study)])
    assert code == 1
    err = capsys.readouterr().err
    assert str(study / name) in err and "not written by memseg-lite ablate" in err
    assert (study / name).read_text() == "my own notes on the study\n"
    assert sorted(p.name for p in study.iterdir()) == [name], "nothing was trained"


def test_ablate_replaces_its_own_results(tmp_path):
    rows = [{"variant": "full", "seeds": [0], **{key: None for key in ablate_module.COLUMNS}}]
    md, table = ablate_module.write_results(tmp_path, rows, "button")
    assert md.read_text().startswith(ablate_module.RESULTS_MARKER)
    md.write_text(md.read_text().replace("button", "edited"))
    ablate_module.write_results(tmp_path, rows, "button")  # its own file (marker kept): replaced
    assert "# Ablation on button" in md.read_text()
