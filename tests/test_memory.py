"""Memory bank and difference information, against a brute-force loop over memory samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memseg_lite.network.encoder import ResNet18Encoder
from memseg_lite.network.memory import MemoryBank, difference_information, memory_distances, select_indices

SHAPES = [(4, 8, 8), (8, 4, 4), (16, 2, 2)]  # small stand-ins for (64, H/4), (128, H/8), (256, H/16)


def random_levels(generator: torch.Generator, count: int) -> list[torch.Tensor]:
    return [torch.randn(count, *shape, generator=generator) for shape in SHAPES]


def brute_force(features: list[torch.Tensor], memory: list[torch.Tensor], rule: str):
    """Reference: one input and one memory sample at a time, in float64 numpy."""
    inputs = [f.double().numpy() for f in features]
    bank = [m.double().numpy() for m in memory]
    batch, samples = inputs[0].shape[0], bank[0].shape[0]
    distances = np.zeros((batch, samples, 3))
    for b in range(batch):
        for i in range(samples):
            for level in range(3):
                difference = bank[level][i] - inputs[level][b]
                if rule == "tootouch":
                    distances[b, i, level] = np.mean(difference**2)
                else:
                    distances[b, i, level] = np.sum(np.abs(difference))
    di_star = [np.zeros_like(x) for x in inputs]
    if rule == "official":
        indices = np.zeros((batch, 3), dtype=np.int64)
        for b in range(batch):
            for level in range(3):
                best = int(np.argmin(distances[b, :, level]))
                indices[b, level] = best
                di_star[level][b] = np.abs(bank[level][best] - inputs[level][b])
    else:
        indices = np.zeros(batch, dtype=np.int64)
        for b in range(batch):
            best = int(np.argmin(distances[b].sum(axis=1)))
            indices[b] = best
            for level in range(3):
                difference = bank[level][best] - inputs[level][b]
                di_star[level][b] = difference**2 if rule == "tootouch" else np.abs(difference)
    return di_star, indices, distances


@pytest.mark.parametrize("rule", ["paper", "official", "tootouch"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_selection_equals_brute_force(rule, seed):
    generator = torch.Generator().manual_seed(seed)
    memory = random_levels(generator, 7)
    features = random_levels(generator, 3)
    di_star, indices, distances = difference_information(features, memory, rule)
    expected_di, expected_indices, expected_distances = brute_force(features, memory, rule)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5, atol=1e-5)
    for got, expected in zip(di_star, expected_di, strict=True):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_rules_can_pick_different_samples():
    """Sample 0 matches level 1 exactly and is off by 1 on levels 2 and 3; sample 1 the reverse.

    Level sizes: 256, 128 and 64 elements. Sums of |d|: sample 0 has 128 + 64 = 192, sample 1
    has 256, so "paper" picks 0. Means of d^2: sample 0 has 1 + 1 = 2, sample 1 has 1, so
    "tootouch" picks 1. "official" picks per level: 0, 1, 1.
    """
    generator = torch.Generator().manual_seed(0)
    features = random_levels(generator, 1)
    memory = [torch.cat([f, f]) for f in features]
    memory[0][1] += 1.0
    memory[1][0] += 1.0
    memory[2][0] += 1.0
    assert difference_information(features, memory, "paper")[1].tolist() == [0]
    assert difference_information(features, memory, "official")[1].tolist() == [[0, 1, 1]]
    assert difference_information(features, memory, "tootouch")[1].tolist() == [1]


def test_input_equal_to_a_memory_sample_selects_it_with_zero_difference():
    generator = torch.Generator().manual_seed(4)
    memory = random_levels(generator, 5)
    features = [m[[3, 1]].clone() for m in memory]
    for rule in ("paper", "official", "tootouch"):
        di_star, indices, _ = difference_information(features, memory, rule)
        expected = [[3, 3, 3], [1, 1, 1]] if rule == "official" else [3, 1]
        assert indices.tolist() == expected
        assert all(float(d.abs().max()) == 0.0 for d in di_star)


def test_select_indices_shapes():
    distances = torch.rand(2, 5, 3)
    assert select_indices(distances, "paper").shape == (2,)
    assert select_indices(distances, "official").shape == (2, 3)
    torch.testing.assert_close(select_indices(distances, "tootouch"), distances.sum(-1).argmin(1))


def test_channels_last_memory_gives_the_same_result():
    generator = torch.Generator().manual_seed(5)
    memory = random_levels(generator, 6)
    features = random_levels(generator, 2)
    last = [m.contiguous(memory_format=torch.channels_last) for m in memory]
    for rule in ("paper", "official", "tootouch"):
        expected, expected_indices, expected_distances = difference_information(features, memory, rule)
        got, indices, distances = difference_information(features, last, rule)
        torch.testing.assert_close(indices, expected_indices)
        torch.testing.assert_close(distances, expected_distances)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


def test_distances_stay_float32_under_autocast():
    generator = torch.Generator().manual_seed(6)
    memory = random_levels(generator, 4)
    features = [f.bfloat16() for f in random_levels(generator, 2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distances = memory_distances(features, memory, "paper")
        di_star, _, _ = difference_information(features, memory, "paper")
    assert distances.dtype == torch.float32
    assert all(d.dtype == torch.float32 for d in di_star)


def test_bad_input():
    generator = torch.Generator().manual_seed(7)
    memory = random_levels(generator, 3)
    features = random_levels(generator, 1)
    with pytest.raises(ValueError, match="rule must be one of"):
        difference_information(features, memory, "nearest")
    with pytest.raises(ValueError, match="same size"):
        difference_information([features[0][..., :4], *features[1:]], memory)
    with pytest.raises(ValueError, match="3 feature levels"):
        difference_information(features[:2], memory)
    with pytest.raises(ValueError, match="empty"):
        MemoryBank().difference([torch.zeros(1, 64, 2, 2), torch.zeros(1, 128, 1, 1), torch.zeros(1, 256, 1, 1)])


@pytest.fixture(scope="module")
def encoder():
    return ResNet18Encoder(weights="none", seed=0).eval()


def test_build_stores_frozen_features(encoder):
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    bank = MemoryBank().build(encoder, images, batch_size=2)
    frozen = encoder.frozen_features(images)
    assert len(bank) == 5 and bank.image_size == (64, 64)
    for stored, feature in zip(bank.features, (frozen.level1, frozen.level2, frozen.level3), strict=True):
        torch.testing.assert_close(stored, feature)
    assert set(bank.state_dict()) == {"level1", "level2", "level3"}
    features = [f[[2]] for f in (frozen.level1, frozen.level2, frozen.level3)]
    assert bank.difference(features)[1].tolist() == [2]
    assert bank.distances(features).shape == (1, 5, 3)


def test_build_keeps_encoder_mode(encoder):
    encoder.train()
    MemoryBank().build(encoder, torch.randn(1, 3, 32, 32))
    assert encoder.layer4.training
    encoder.eval()


def test_state_dict_round_trip_with_another_bank_size(encoder):
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    bank = MemoryBank().build(encoder, images)
    other = MemoryBank().build(encoder, images[:1, :, :32, :32])  # other N and image size
    other.load_state_dict(bank.state_dict())
    assert len(other) == 4 and other.image_size == (64, 64)
    for a, b in zip(other.features, bank.features, strict=True):
        torch.testing.assert_close(a, b)
    rebuilt = MemoryBank.from_state_dict(bank.state_dict())
    for a, b in zip(rebuilt.features, bank.features, strict=True):
        torch.testing.assert_close(a, b)


def test_build_rejects_bad_images(encoder):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        MemoryBank().build(encoder, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="at least one"):
        MemoryBank().build(encoder, torch.zeros(0, 3, 64, 64))
