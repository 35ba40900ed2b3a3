"""The ResNet18 encoder: shapes, freezing, weight loading (never over the network) and BN calibration."""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torchvision

from memseg_lite.network import encoder as encoder_module
from memseg_lite.network.encoder import IMAGENET_FILE, IMAGENET_URL, ResNet18Encoder, calibrate_batchnorm, load_resnet18


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """An empty torch hub folder, and a download function that fails the test if it is called."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def forbidden(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    monkeypatch.delenv("MEMSEG_OFFLINE", raising=False)
    return hub


def _same_weights(module_a: torch.nn.Module, module_b: torch.nn.Module) -> bool:
    state_a, state_b = module_a.state_dict(), module_b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[key], state_b[key]) for key in state_a)


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_feature_shapes(size):
    height, width = size
    encoder = ResNet18Encoder(weights="none").eval()
    features = encoder(torch.randn(2, 3, height, width))
    expected = {
        "stem": (64, 2),
        "level1": (64, 4),
        "level2": (128, 8),
        "level3": (256, 16),
        "level4": (512, 32),
    }
    for name, (channels, stride) in expected.items():
        assert tuple(getattr(features, name).shape) == (2, channels, height // stride, width // stride), name


def test_frozen_part_matches_torchvision_layers():
    resnet = load_resnet18("none", seed=3).eval()
    encoder = ResNet18Encoder(weights="none", seed=3).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x = resnet.relu(resnet.bn1(resnet.conv1(images)))
        stem = x
        x = resnet.layer1(resnet.maxpool(x))
        level1 = x
        level4 = resnet.layer4(resnet.layer3(resnet.layer2(x)))
    features = encoder(images)
    torch.testing.assert_close(features.stem, stem)
    torch.testing.assert_close(features.level1, level1)
    torch.testing.assert_close(features.level4, level4)


def test_train_keeps_frozen_part_in_eval_mode():
    encoder = ResNet18Encoder(weights="none")
    encoder.train()
    for module in encoder.frozen_modules():
        assert all(not sub.training for sub in module.modules())
        assert all(not parameter.requires_grad for parameter in module.parameters())
    assert encoder.layer4.training
    assert all(parameter.requires_grad for parameter in encoder.layer4.parameters())
    encoder.eval()
    assert not encoder.layer4.training


def test_optimiser_step_changes_only_layer4():
    encoder = ResNet18Encoder(weights="none").train()
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    optimiser = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    features = encoder(torch.randn(2, 3, 64, 64))
    features.level4.square().mean().backward()
    optimiser.step()
    after = encoder.state_dict()
    for key, value in after.items():
        if key.startswith("layer4.") and key.endswith(("weight", "bias")):
            assert not torch.equal(value, before[key]), f"{key} should have been trained"
        elif not key.startswith("layer4."):
            # parameters AND batch-norm running statistics of the frozen part
            assert torch.equal(value, before[key]), f"{key} changed although frozen"
    assert features.level3.grad_fn is None  # no activations of the frozen part kept for backward


def test_frozen_features_do_not_track_gradients():
    encoder = ResNet18Encoder(weights="none")
    images = torch.randn(1, 3, 32, 32, requires_grad=True)
    frozen = encoder.frozen_features(images)
    assert all(not tensor.requires_grad for tensor in frozen)


def test_none_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first = load_resnet18("none", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_weights(first, load_resnet18("none", seed=5))
    assert not _same_weights(first, load_resnet18("none", seed=6))


def test_imagenet_offline_fails_with_clear_message(no_network):
    with pytest.raises(RuntimeError) as info:
        load_resnet18("imagenet", allow_download=False)
    message = str(info.value)
    assert "could not be loaded" in message
    assert IMAGENET_FILE in message
    assert str(no_network / "checkpoints") in message
    assert IMAGENET_URL in message
    assert "backbone_weights='none'" in message


def test_memseg_offline_variable_blocks_downloads(monkeypatch):
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not be loaded"):
        load_resnet18("imagenet", allow_download=True)  # the patched downloader would fail the test


def test_download_failure_is_reported_and_bounded_in_time(monkeypatch):
    timeouts = []

    def offline(*args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise OSError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError, match="no route to host"):
        load_resnet18("imagenet", allow_download=True)
    assert timeouts == [encoder_module.DOWNLOAD_TIMEOUT_S]  # a firewall cannot make it hang
    assert socket.getdefaulttimeout() == before  # restored


def test_imagenet_uses_cache_file(no_network):
    reference = torchvision.models.resnet18(weights=None)
    (no_network / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), no_network / "checkpoints" / IMAGENET_FILE)
    loaded = load_resnet18("imagenet", allow_download=False)
    assert _same_weights(loaded, reference)
    assert ResNet18Encoder("auto", allow_download=False).weights_source == "imagenet"


def test_auto_falls_back_to_random_with_warning():
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        encoder = ResNet18Encoder(weights="auto", allow_download=False)
    assert encoder.weights_source == "random"
    assert not encoder.pretrained


def test_local_state_dict_path(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "backbone.pth"
    torch.save(reference.state_dict(), path)
    assert _same_weights(load_resnet18(path), reference)
    encoder = ResNet18Encoder(weights=str(path))
    assert encoder.weights_source == f"file:{path}"
    torch.testing.assert_close(encoder.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_bad_weight_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_resnet18(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision ResNet18 state dict"):
        load_resnet18(wrong)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="not a ResNet18 state dict"):
        load_resnet18(not_a_dict)
    with pytest.raises(ValueError, match="imagnet"):
        load_resnet18("imagnet")
    with pytest.raises(TypeError, match="weights must be"):
        load_resnet18(3)


def test_calibrate_batchnorm_measures_the_statistics():
    encoder = ResNet18Encoder(weights="none").train()
    images = torch.randn(4, 3, 64, 64) * 2 + 0.5
    calibrate_batchnorm(encoder, images, batch_size=4)
    with torch.no_grad():
        conv = encoder.stem[0](images)
    norm = encoder.stem[1]
    torch.testing.assert_close(norm.running_mean, conv.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(norm.running_var, conv.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert norm.momentum == 0.1  # restored
    assert all(not module.training for module in encoder.stem.modules())
    assert encoder.layer4.training  # mode restored


def test_calibrate_batchnorm_averages_batches():
    encoder = ResNet18Encoder(weights="none")
    images = torch.randn(4, 3, 32, 32)
    calibrate_batchnorm(encoder, images, batch_size=2)
    with torch.no_grad():
        conv = encoder.stem[0](images)
    # equal batch sizes: the cumulative average of the batch means is the overall mean
    torch.testing.assert_close(encoder.stem[1].running_mean, conv.mean(dim=(0, 2, 3)))


def test_calibration_equals_batch_statistics_of_every_layer():
    """One calibration batch: each BN's running mean / variance equal the mean / unbiased variance
    of its input in a train-mode pass (computed here with hooks on an uncalibrated copy)."""
    encoder = ResNet18Encoder(weights="none")
    reference = copy.deepcopy(encoder)
    images = torch.randn(4, 3, 64, 64)
    seen = []

    def record_input_statistics(module, args, output):
        seen.append((args[0].mean(dim=(0, 2, 3)), args[0].var(dim=(0, 2, 3), unbiased=True)))

    norms = [module for module in reference.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.train()  # normalise with the batch statistics, as the calibration pass does
        norm.register_forward_hook(record_input_statistics)
    with torch.no_grad():
        reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.pool(reference.stem(images))))))
    calibrate_batchnorm(encoder, images, batch_size=4)
    calibrated = [module for module in encoder.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert len(seen) == len(calibrated) == 20
    for norm, (mean, variance) in zip(calibrated, seen, strict=True):
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.running_var, variance, rtol=1e-4, atol=1e-5)


def test_calibrate_rejects_bad_images():
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        calibrate_batchnorm(ResNet18Encoder(weights="none"), torch.zeros(3, 32, 32))


def test_module_constants_match_torchvision():
    assert IMAGENET_URL.endswith(IMAGENET_FILE)
    assert encoder_module.imagenet_cache_path().name == IMAGENET_FILE


def test_wrong_file_in_cache_is_reported(no_network):
    (no_network / "checkpoints").mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1)}, no_network / "checkpoints" / IMAGENET_FILE)
    with pytest.raises(RuntimeError, match="could not be loaded"):
        load_resnet18("imagenet", allow_download=False)
    with pytest.warns(UserWarning, match="RANDOMLY"):
        assert ResNet18Encoder("auto", allow_download=False).weights_source == "random"
