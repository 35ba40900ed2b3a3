"""Perlin noise and masks: values against a scalar reference, invariants, statistics, torch parity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from memseg_lite.simulation.perlin import (
    NOISE_BOUND,
    draw_mask_parameters,
    fade,
    lattice_coordinates,
    lattice_coordinates_torch,
    perlin_at,
    perlin_at_torch,
    perlin_mask,
    perlin_mask_torch,
    perlin_noise,
    perlin_noise_from_gradients,
    perlin_noise_torch,
    random_gradients,
    rotated_perlin_noise,
)


def scalar_perlin(y: float, x: float, gradients: np.ndarray) -> float:
    """Textbook Perlin noise at one point (lattice units), written independently of the module."""
    i, j = min(int(math.floor(y)), gradients.shape[0] - 2), min(int(math.floor(x)), gradients.shape[1] - 2)
    dy, dx = y - i, x - j

    def s(t: float) -> float:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    def dot(ci: int, cj: int) -> float:
        gy, gx = gradients[i + ci, j + cj]
        return gy * (dy - ci) + gx * (dx - cj)

    def lerp(a: float, b: float, t: float) -> float:
        return a + t * (b - a)

    return lerp(lerp(dot(0, 0), dot(0, 1), s(dx)), lerp(dot(1, 0), dot(1, 1), s(dx)), s(dy))


def correlation_at_lag(noise: np.ndarray, lag: int) -> float:
    a, b = noise[:, :-lag].ravel(), noise[:, lag:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------- the fade curve
def test_fade_endpoints_and_flat_derivatives():
    t = np.array([0.0, 1.0])
    np.testing.assert_allclose(fade(t), [0.0, 1.0])
    h = 1e-4
    for end in (0.0, 1.0):  # first and second derivatives vanish at both ends (C2 continuity)
        first = (fade(end + h) - fade(end - h)) / (2 * h)
        second = (fade(end + h) - 2 * fade(end) + fade(end - h)) / h**2
        assert abs(first) < 1e-6 and abs(second) < 1e-3
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(fade(grid)) >= 0)


# ---------------------------------------------------------------- noise values
@pytest.mark.parametrize("shape,res", [((13, 17), (3, 5)), ((16, 16), (4, 4)), ((10, 23), (1, 7))])
def test_noise_equals_scalar_reference(shape, res):
    rng = np.random.default_rng(1)
    gradients = random_gradients((res[0] + 1, res[1] + 1), rng)
    noise = perlin_noise_from_gradients(shape, res, gradients)
    assert noise.dtype == np.float32 and noise.shape == shape
    expected = np.array(
        [
            [scalar_perlin(y * res[0] / shape[0], x * res[1] / shape[1], gradients) for x in range(shape[1])]
            for y in range(shape[0])
        ]
    )
    np.testing.assert_allclose(noise, expected, atol=1e-6)


def test_gradients_are_unit_vectors():
    gradients = random_gradients((6, 9), np.random.default_rng(0))
    assert gradients.shape == (6, 9, 2)
    np.testing.assert_allclose(np.linalg.norm(gradients, axis=-1), 1.0)


def test_zero_at_lattice_points():
    noise = perlin_noise((64, 96), (4, 6), np.random.default_rng(3))
    np.testing.assert_allclose(noise[::16, ::16], 0.0, atol=1e-7)
    assert np.abs(noise).max() > 0.1  # and not zero everywhere


def test_non_divisible_shape_is_continuous():
    # 50 x 70 pixels with 3 x 4 cells: cells are 16.7 x 17.5 px; the field has no jumps.
    noise = perlin_noise((50, 70), (3, 4), np.random.default_rng(4))
    assert noise.shape == (50, 70)
    steps = max(np.abs(np.diff(noise, axis=0)).max(), np.abs(np.diff(noise, axis=1)).max())
    assert steps < 0.2


def test_value_range_and_mean():
    rng = np.random.default_rng(5)
    fields = np.stack([perlin_noise((32, 32), (4, 4), rng) for _ in range(200)])
    assert np.abs(fields).max() <= NOISE_BOUND + 1e-6
    assert np.abs(fields).max() > 0.5  # the bound is approached
    assert abs(fields.mean()) < 0.01


def test_seeded_determinism():
    a = perlin_noise((20, 30), (2, 3), np.random.default_rng(7))
    b = perlin_noise((20, 30), (2, 3), np.random.default_rng(7))
    c = perlin_noise((20, 30), (2, 3), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_correlation_length_grows_as_res_shrinks():
    rng = np.random.default_rng(6)
    coarse = np.mean([correlation_at_lag(perlin_noise((64, 64), 2, rng), 8) for _ in range(20)])
    fine = np.mean([correlation_at_lag(perlin_noise((64, 64), 16, rng), 8) for _ in range(20)])
    assert coarse > 0.7 and fine < 0.3


def test_rotated_noise_has_no_empty_corners():
    rng = np.random.default_rng(9)
    fields = np.stack([rotated_perlin_noise((48, 48), 4, rng.uniform(-90, 90), rng) for _ in range(100)])
    corner, centre = fields[:, :6, :6].std(), fields[:, 21:27, 21:27].std()
    assert 0.7 < corner / centre < 1.3


def test_rotation_by_zero_degrees_matches_shifted_lattice():
    # angle=0 samples the same function on a shifted lattice: interior structure identical up to the shift.
    u, v, lattice = lattice_coordinates((32, 32), (4, 4), angle=0.0)
    u0, v0, _ = lattice_coordinates((32, 32), (4, 4))
    np.testing.assert_allclose(u - u0, (u - u0)[0, 0])
    np.testing.assert_allclose(v - v0, (v - v0)[0, 0])
    assert u.min() >= 0 and u.max() <= lattice[0] - 1 and v.min() >= 0 and v.max() <= lattice[1] - 1


@pytest.mark.parametrize("angle", [-90.0, -33.0, 45.0, 90.0])
def test_rotated_coordinates_stay_inside_lattice(angle):
    u, v, lattice = lattice_coordinates((37, 53), (8, 2), angle)
    assert u.shape == (37, 53) and v.shape == (37, 53)
    assert u.min() >= 0 and u.max() <= lattice[0] - 1 and v.min() >= 0 and v.max() <= lattice[1] - 1


# ---------------------------------------------------------------- masks
def test_mask_is_thresholded_scaled_noise():
    # Rebuild the mask from the same random stream: noise / NOISE_BOUND (range [-1, 1]) > threshold.
    mask = perlin_mask((40, 40), np.random.default_rng(11), (1, 3), threshold=0.3)
    rng = np.random.default_rng(11)
    res, angle = draw_mask_parameters(rng, (1, 3), rotate=True)
    u, v, lattice = lattice_coordinates((40, 40), res, angle)
    noise = perlin_at(u, v, random_gradients(lattice, rng))
    assert mask.dtype == bool and mask.shape == (40, 40)
    np.testing.assert_array_equal(mask, noise / NOISE_BOUND > 0.3)


def test_coverage_falls_as_threshold_rises():
    coverages = []
    for threshold in (-0.5, 0.0, 0.3, 0.5, 0.7):
        rng = np.random.default_rng(12)  # the same fields for every threshold
        coverages.append(np.mean([perlin_mask((32, 32), rng, threshold=threshold).mean() for _ in range(60)]))
    assert all(a > b for a, b in itertools.pairwise(coverages))
    assert 0.4 < coverages[1] < 0.6  # symmetric noise: about half above 0


def test_scale_exponents_drawn_per_axis_over_the_inclusive_range():
    rng = np.random.default_rng(13)
    draws = np.array([draw_mask_parameters(rng, (0, 5), rotate=False)[0] for _ in range(3000)])
    exponents = np.log2(draws).round().astype(int)
    for axis in (0, 1):
        counts = np.bincount(exponents[:, axis], minlength=6)
        assert len(counts) == 6 and counts.min() > 400  # uniform over 0..5: 500 each
    same = np.mean(exponents[:, 0] == exponents[:, 1])
    assert abs(same - 1 / 6) < 0.04  # independent axes


def test_finer_scales_make_more_blobs():
    import cv2

    def blobs(scale: int) -> float:
        rng = np.random.default_rng(14)
        counts = []
        for _ in range(40):
            mask = perlin_mask((64, 64), rng, (scale, scale), threshold=0.3, rotate=False)
            counts.append(cv2.connectedComponents(mask.astype(np.uint8))[0] - 1)
        return float(np.mean(counts))

    assert blobs(4) > 3 * blobs(1)


def test_rotation_keeps_coverage_statistics():
    rng = np.random.default_rng(15)
    straight = [perlin_mask((48, 48), rng, rotate=False).mean() for _ in range(300)]
    rotated = [perlin_mask((48, 48), rng, rotate=True).mean() for _ in range(300)]
    assert abs(np.mean(straight) - np.mean(rotated)) < 0.012
    assert abs(np.std(straight) - np.std(rotated)) < 0.015


# ---------------------------------------------------------------- torch parity
@pytest.mark.parametrize("shape,res", [((24, 40), (3, 5)), ((50, 70), (4, 8))])
def test_torch_noise_equals_numpy_for_same_gradients(shape, res):
    rng = np.random.default_rng(16)
    gradients = np.stack([random_gradients((res[0] + 1, res[1] + 1), rng) for _ in range(3)])
    batch = perlin_noise_torch(3, shape, res, gradients=torch.from_numpy(gradients), device="cpu")
    assert batch.shape == (3, *shape) and batch.dtype == torch.float32
    for index in range(3):
        np.testing.assert_allclose(
            batch[index].numpy(), perlin_noise_from_gradients(shape, res, gradients[index]), atol=1e-5
        )
    shared = perlin_noise_torch(2, shape, res, gradients=gradients[0])  # one lattice for the batch
    np.testing.assert_allclose(shared[1].numpy(), perlin_noise_from_gradients(shape, res, gradients[0]), atol=1e-5)


def test_torch_rotated_sampling_equals_numpy():
    rng = np.random.default_rng(17)
    res = torch.tensor([[4, 16], [2, 1]])
    angles = torch.tensor([37.0, -80.0])
    u, v, lattice = lattice_coordinates_torch((30, 44), res, angles)
    gradients = np.stack([random_gradients(lattice, rng) for _ in range(2)])
    noise = perlin_at_torch(u, v, torch.from_numpy(gradients).float())
    for index in range(2):
        u_np, v_np, lattice_np = lattice_coordinates((30, 44), tuple(res[index].tolist()), float(angles[index]))
        assert lattice_np[0] <= lattice[0] and lattice_np[1] <= lattice[1]
        np.testing.assert_allclose(u[index].numpy(), u_np, atol=1e-4)
        np.testing.assert_allclose(v[index].numpy(), v_np, atol=1e-4)
        np.testing.assert_allclose(noise[index].numpy(), perlin_at(u_np, v_np, gradients[index]), atol=1e-4)


def test_torch_masks_match_numpy_in_distribution():
    rng = np.random.default_rng(18)
    numpy_cov = np.array([perlin_mask((32, 32), rng).mean() for _ in range(600)])
    torch_cov = perlin_mask_torch(600, (32, 32), torch.Generator().manual_seed(18)).float().mean((1, 2)).numpy()
    assert abs(numpy_cov.mean() - torch_cov.mean()) < 0.1 * numpy_cov.mean()
    assert abs(numpy_cov.std() - torch_cov.std()) < 0.2 * numpy_cov.std()
    assert abs((numpy_cov == 0).mean() - (torch_cov == 0).mean()) < 0.04


def test_torch_noise_statistics():
    noise = perlin_noise_torch(64, (32, 32), 4, torch.Generator().manual_seed(0))
    assert abs(noise.mean().item()) < 0.02 and noise.abs().max().item() <= NOISE_BOUND + 1e-5


def test_torch_masks_are_seeded_and_boolean():
    a = perlin_mask_torch(4, (20, 28), torch.Generator().manual_seed(5), device="cpu", rotate=False)
    b = perlin_mask_torch(4, (20, 28), torch.Generator().manual_seed(5), device="cpu", rotate=False)
    assert a.dtype == torch.bool and a.shape == (4, 20, 28)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call,error",
    [
        (lambda: perlin_noise((16, 16), 0, np.random.default_rng()), ValueError),
        (lambda: perlin_noise((16, 0), 2, np.random.default_rng()), ValueError),
        (lambda: perlin_noise((16, 16), 2.5, np.random.default_rng()), TypeError),
        (lambda: perlin_noise((16, 16), 2, 123), TypeError),
        (lambda: perlin_noise_from_gradients((16, 16), (2, 2), np.zeros((2, 2, 2))), ValueError),
        (lambda: perlin_mask((16, 16), np.random.default_rng(), scale_range=(3, 1)), ValueError),
        (lambda: perlin_mask((16, 16), np.random.default_rng(), threshold=1.5), ValueError),
        (lambda: perlin_mask((16, 16), np.random.default_rng(), threshold="high"), TypeError),
        (lambda: perlin_mask_torch(0, (16, 16)), ValueError),
        (lambda: perlin_mask_torch(2, (16, 16), generator="seed"), TypeError),
        (lambda: perlin_noise_torch(2, (16, 16), 2, gradients=torch.zeros(2, 4, 4, 2)), ValueError),
    ],
)
def test_bad_input_raises(call, error):
    with pytest.raises(error):
        call()
