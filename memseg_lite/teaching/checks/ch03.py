"""Self-checks for notebook 03 (anomaly simulation): undo a shuffle, read delta back, a delta for a target change.

Worked solutions: ``solutions/03_anomaly_simulation_solutions.ipynb``.
"""

from __future__ import annotations

import cv2
import numpy as np

from memseg_lite.simulation import synthesis
from memseg_lite.simulation.textures import TextureSource
from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import call_candidate


@robust
def exercise_1(candidate) -> None:
    """``candidate(image, shuffled, grid)``: the permutation with ``shuffle_grid(image, grid, perm) == shuffled``."""
    rng = np.random.default_rng(6)
    for grid, size in [((4, 8), (32, 48)), ((8, 8), (48, 48)), ((3, 5), (30, 40))]:
        image = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
        true_perm = rng.permutation(grid[0] * grid[1])
        noisy = synthesis.shuffle_grid(image, grid, true_perm) + rng.integers(-3, 4, (*size, 3))
        shuffled = np.clip(noisy, 0, 255).astype(np.uint8)
        perm = np.asarray(call_candidate(candidate, image, shuffled, grid))
        if perm.shape != true_perm.shape or sorted(perm.tolist()) != list(range(true_perm.size)):
            raise AssertionError(f"grid {grid}: perm must hold each of 0..{true_perm.size - 1} exactly once")
        rebuilt = synthesis.shuffle_grid(image, grid, perm).astype(np.int16)
        if np.abs(rebuilt - shuffled).max() > 3:
            raise AssertionError(f"grid {grid}: shuffle_grid(image, grid, perm) does not rebuild the shuffled copy "
                                 "(the inverse permutation?)")


def _smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _squared_error(image, sample, noise, mask, d: float) -> float:
    """sum over the mask (and channels) of ((I_A - I) - d (I_n - I))^2, the error a least-squares fit minimises."""
    inside = np.asarray(mask) > 0
    change = sample[inside].astype(np.float64) - image[inside]
    reach = noise[inside].astype(np.float64) - image[inside]
    return float(np.square(change - d * reach).sum())


def _off_blend_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, sample, noise, mask) where the change inside the mask is not proportional to I_n - I.

    The change is 0.5 (I_n - I) plus a term that grows with |I_n - I|, so the ratio of the sums, the
    mean or median of the per-pixel ratios and the least-squares fit all give different values.
    """
    image = rng.integers(40, 201, (24, 24, 3)).astype(np.int64)
    reach = rng.integers(-40, 41, image.shape)
    noise = image + reach
    mask = (rng.random((24, 24)) < 0.5).astype(np.float32)
    change = np.rint(0.5 * reach + 0.01 * reach * np.abs(reach)).astype(np.int64)
    sample = np.where(mask[..., None] > 0, image + change, image)
    return image.astype(np.uint8), sample.astype(np.uint8), noise.astype(np.uint8), mask


#: the step of the least-squares test: E(d +- STEP) >= E(d) holds only within STEP / 2 of the minimum
LEAST_SQUARES_STEP = 1e-4


def _assert_least_squares(estimate: float, case: str, image, sample, noise, mask) -> None:
    here = _squared_error(image, sample, noise, mask, estimate)
    for direction, word in ((1, "larger"), (-1, "smaller")):
        if _squared_error(image, sample, noise, mask, estimate + direction * LEAST_SQUARES_STEP) < here:
            raise AssertionError(
                f"{case}: your estimate {estimate:.5f} is not the least-squares fit: a slightly {word} d gives a "
                "smaller sum of ((I_A - I) - d (I_n - I))^2 over the mask")


@robust
def exercise_2(candidate, image: np.ndarray | None = None, source: TextureSource | None = None) -> None:
    """``candidate(image, sample, noise, mask)``: the least-squares delta of a simulated sample.

    Checked on package samples (within 0.01 of the true delta, and at the minimum of the squared
    error) and on a sample that does not follow the blend exactly, where only the least-squares
    fit is at the minimum (ratios of sums or means of per-pixel ratios are not). ``image`` (uint8
    RGB) and ``source`` default to a smooth random image and a small procedural texture bank, with
    no foreground mask.
    """
    rng = np.random.default_rng(31)
    image = _smooth_image(rng) if image is None else image
    source = TextureSource(None, seed=0, n_procedural=4, procedural_size=64) if source is None else source
    simulator = synthesis.AnomalySynthesizer(None, source, p_normal=0.0)
    for n in range(6):
        result = simulator.sample(image, np.random.default_rng([31, n]), kind=("texture", "structure")[n % 2])
        arrays = (image, result.image, result.noise_image, result.mask)
        estimate = float(call_candidate(candidate, *(np.copy(a) for a in arrays)))
        if abs(estimate - result.delta) >= 0.01:
            side = "high" if estimate > result.delta else "low"
            raise AssertionError(f"{result.kind} sample: your estimate {estimate:.3f} is too {side} "
                                 "(more than 0.01 from the delta the sample was made with)")
        _assert_least_squares(estimate, f"{result.kind} sample", *arrays)
    arrays = _off_blend_sample(np.random.default_rng(32))
    estimate = float(call_candidate(candidate, *(np.copy(a) for a in arrays)))
    _assert_least_squares(estimate, "a sample whose change is not exactly proportional to I_n - I", *arrays)


@robust
def exercise_3(candidate) -> None:
    """``candidate(image, noise, mask, target)``: the delta in [0, 1] whose mean change in the mask is ``target``."""
    rng = np.random.default_rng(4)
    image, noise = (rng.integers(0, 256, (20, 20, 3)).astype(np.uint8) for _ in range(2))
    mask = rng.random((20, 20)) < 0.5
    for target in (5.0, 20.0):
        delta = float(call_candidate(candidate, image, noise, mask, target))
        change = np.abs(synthesis.blend(image, noise, mask, delta) - image)[mask].mean()
        if abs(change - target) >= 1e-3:
            raise AssertionError(
                f"target {target}: delta {delta:.3f} gives a mean change of {change:.2f} inside the mask"
            )
    if float(call_candidate(candidate, image, noise, mask, 1e6)) != 1.0:
        raise AssertionError("an unreachable target must give delta = 1 (clip to [0, 1])")
