"""The assembled MemSeg: shapes, what trains and what stays frozen, checkpoints, scores."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from memseg_lite.network.losses import MemSegLoss
from memseg_lite.network.model import MemSeg, build_memseg, memseg_from_state, parameter_counts, top_k_mean


def images(count: int, size: int | tuple[int, int] = 64, seed: int = 0) -> torch.Tensor:
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(count, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache: the backbone is random in these tests."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")


def build(memory: torch.Tensor, **kwargs) -> MemSeg:
    return build_memseg(memory, backbone_weights="none", **kwargs)


@pytest.fixture(scope="module")
def model() -> MemSeg:
    return build_memseg(images(4), backbone_weights="none").eval()


def test_output_shapes_and_intermediates(model):
    out = model.forward_intermediates(images(2, seed=1))
    assert out.logits.shape == (2, 2, 64, 64)
    assert [tuple(t.shape[1:]) for t in out.concatenated] == [(128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert [tuple(t.shape[1:]) for t in out.fused] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert [tuple(t.shape[1:]) for t in out.attention_maps] == [(1, 16, 16), (1, 8, 8), (1, 4, 4)]
    assert out.indices.shape == (2,) and out.distances.shape == (2, 4, 3)
    # CI_l = concat(II_l, DI*_l)
    torch.testing.assert_close(out.concatenated[0][:, :64], out.features.level1)
    torch.testing.assert_close(out.concatenated[0][:, 64:], out.di_star[0])


@pytest.mark.parametrize("size", [256, (224, 320)])
def test_paper_sizes(size):
    memory = images(1, size)
    model = build(memory).eval()
    height, width = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        assert model(memory).shape == (1, 2, height, width)
    assert model.memory.image_size == (height, width)


def test_size_not_divisible_by_32_is_rejected(model):
    with pytest.raises(ValueError, match="multiples of 32.*250 x 250"):
        model(torch.zeros(1, 3, 250, 250))
    with pytest.raises(ValueError, match="multiples of 32"):
        build(torch.zeros(1, 3, 250, 256))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_input_size_must_match_the_memory_bank(model):
    with pytest.raises(ValueError, match="same size"):
        model(images(1, 96))


def test_memory_sample_as_input_has_zero_difference(model):
    memory = images(4)
    out = model.forward_intermediates(memory[[2]])
    assert out.indices.tolist() == [2]
    # (not exactly 0: the convolutions may round differently for a batch of 1 and a batch of 4)
    assert all(float(d.abs().max()) < 1e-4 for d in out.di_star)
    assert all(float(m.abs().max()) < 1e-4 for m in out.attention_maps)


@pytest.mark.parametrize("rule", ["official", "tootouch"])
def test_other_selection_rules(rule):
    model = build(images(3), selection_rule=rule).eval()
    out = model.forward_intermediates(images(2, seed=5))
    assert out.indices.shape == ((2, 3) if rule == "official" else (2,))
    assert model.config()["selection_rule"] == rule


def test_training_step_updates_only_trainable_parts():
    model = build(images(4)).train()
    frozen_before = {
        k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("encoder.layer4", "msff", "decoder"))
    }
    trainable_before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    target = torch.zeros(2, 64, 64)
    target[:, 20:40, 20:40] = 1
    MemSegLoss()(model(images(2, seed=3)), target).total.backward()
    optimiser.step()
    state = model.state_dict()
    # frozen encoder parameters, their BN running statistics and the memory bank are unchanged
    assert any(k.endswith("running_mean") for k in frozen_before)
    assert any(k.startswith("memory.") for k in frozen_before)
    for key, value in frozen_before.items():
        assert torch.equal(state[key], value), f"{key} changed"
    assert all(name.startswith(("encoder.layer4.", "msff.", "decoder.")) for name in trainable_before)
    parameters = dict(model.named_parameters())
    for prefix in ("encoder.layer4.", "msff.", "decoder."):
        names = [name for name in trainable_before if name.startswith(prefix)]
        unchanged = [name for name in names if torch.equal(parameters[name], trainable_before[name])]
        assert names and not unchanged, f"{prefix} parameters not updated: {unchanged[:3]}"


def test_checkpoint_round_trip_reproduces_outputs(model):
    buffer = io.BytesIO()
    torch.save({"model_config": model.config(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert json.loads(json.dumps(checkpoint["model_config"])) == model.config()
    restored = memseg_from_state(checkpoint["model_config"], checkpoint["model"]).eval()
    assert len(restored.memory) == 4
    for a, b in zip(restored.memory.features, model.memory.features, strict=True):
        assert torch.equal(a, b)
    x = images(2, seed=9)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_memseg_from_state_rejects_bad_config(model):
    with pytest.raises(ValueError, match="unknown keys"):
        memseg_from_state({**model.config(), "depth": 50}, model.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        memseg_from_state({**model.config(), "decoder_channels": [8, 8, 8, 8, 8]}, model.state_dict())


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first = build(images(2), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = build(images(2), seed=1)
    third = build(images(2), seed=2)
    keys = list(first.state_dict())
    assert all(torch.equal(first.state_dict()[k], second.state_dict()[k]) for k in keys)
    assert not torch.equal(first.state_dict()["decoder.head.weight"], third.state_dict()["decoder.head.weight"])


def test_calibration_option():
    memory = images(2)
    calibrated = build(memory)  # "auto" + random backbone: calibrated
    raw = build(memory, calibrate_bn=False)
    assert not torch.equal(calibrated.encoder.stem[1].running_mean, raw.encoder.stem[1].running_mean)
    assert torch.equal(raw.encoder.stem[1].running_mean, torch.zeros(64))
    with pytest.raises(ValueError, match="calibrate_bn"):
        build(memory, calibrate_bn="yes")


def test_build_with_auto_weights_warns_offline():
    with pytest.warns(UserWarning, match="RANDOMLY"):
        model = build_memseg(images(1), backbone_weights="auto")
    assert model.encoder.weights_source == "random"


def test_anomaly_map_and_mode(model):
    model.train()
    maps = model.anomaly_map(images(2, seed=4))
    assert model.training and model.encoder.layer4.training
    assert not any(m.training for m in model.encoder.layer3.modules())
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(images(2, seed=4)), dim=1)[:, 1]
    torch.testing.assert_close(maps, expected)


def test_image_score_top_k(model):
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 8, 8, generator=generator)
    flat = np.sort(maps.reshape(3, -1).numpy(), axis=1)[:, ::-1]
    np.testing.assert_allclose(model.image_score(maps, top_k=5).numpy(), flat[:, :5].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(model.image_score(maps, top_k=1).numpy(), flat[:, 0])
    np.testing.assert_allclose(model.image_score(maps, top_k=1000).numpy(), flat.mean(axis=1), rtol=1e-6)
    assert model.top_k == 100
    # 64 < 100 pixels: the mean of them all
    np.testing.assert_allclose(model.image_score(maps[:, None]).numpy(), flat.mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        top_k_mean(maps, 0)


def test_parameter_counts(model):
    counts = parameter_counts(model)
    encoder = model.encoder
    frozen = sum(
        p.numel() for m in (encoder.stem, encoder.layer1, encoder.layer2, encoder.layer3) for p in m.parameters()
    )
    assert counts["encoder"] == {"trainable": sum(p.numel() for p in encoder.layer4.parameters()), "frozen": frozen}
    assert counts["total"]["trainable"] + counts["total"]["frozen"] == sum(p.numel() for p in model.parameters())
    assert counts["msff"]["frozen"] == counts["decoder"]["frozen"] == 0
    assert counts["memory_bank_values"] == 4 * (64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4)


def test_autocast_bfloat16_on_cpu(model):
    x = images(2, seed=6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_intermediates(x)
    assert out.logits.shape == (2, 2, 64, 64)
    assert out.distances.dtype == torch.float32 and out.di_star[0].dtype == torch.float32


def test_a_memory_image_has_zero_difference_even_under_autocast():
    memory = images(3, seed=8)
    model = build(memory).eval()
    for context in (torch.autocast("cpu", dtype=torch.bfloat16), torch.autocast("cpu", enabled=False)):
        with torch.no_grad(), context:
            out = model.forward_intermediates(memory[1:2])
        assert out.indices.tolist() == [1], "an input identical to memory sample 1 picks sample 1"
        for level in out.di_star:
            # float32 rounding only (batch size changes the convolution order); bf16 would give ~1e-2
            assert level.abs().max() < 1e-4, "the frozen features run in float32, as the bank"


def test_channels_last_gives_the_same_output():
    model = build(images(3))
    x = images(2, seed=7)
    with torch.no_grad():
        expected = model.eval()(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_bad_options():
    with pytest.raises(ValueError, match="selection_rule"):
        MemSeg(selection_rule="closest")
    with pytest.raises(ValueError, match="top_k"):
        MemSeg(top_k=0)
    with pytest.raises(TypeError, match="unknown options"):
        build(images(1), depth=50)
