"""Self-checks for notebook 03 (anomaly simulation): undo a shuffle, read delta back, a delta for a target change.

Worked solutions: ``solutions/03_anomaly_simulation_solutions.ipynb``.
"""

from __future__ import annotations

import cv2
import numpy as np

from memseg_lite.simulation import synthesis
from memseg_lite.simulation.textures import TextureSource


def exercise_1(candidate) -> None:
    """``candidate(image, shuffled, grid)``: the permutation with ``shuffle_grid(image, grid, perm) == shuffled``."""
    rng = np.random.default_rng(6)
    for grid, size in [((4, 8), (32, 48)), ((8, 8), (48, 48)), ((3, 5), (30, 40))]:
        image = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
        true_perm = rng.permutation(grid[0] * grid[1])
        noisy = synthesis.shuffle_grid(image, grid, true_perm) + rng.integers(-3, 4, (*size, 3))
        shuffled = np.clip(noisy, 0, 255).astype(np.uint8)
        perm = np.asarray(candidate(image, shuffled, grid))
        if perm.shape != true_perm.shape or sorted(perm.tolist()) != list(range(true_perm.size)):
            raise AssertionError(f"grid {grid}: perm must hold each of 0..{true_perm.size - 1} exactly once")
        rebuilt = synthesis.shuffle_grid(image, grid, perm).astype(np.int16)
        if np.abs(rebuilt - shuffled).max() > 3:
            raise AssertionError(f"grid {grid}: shuffle_grid(image, grid, perm) does not rebuild the shuffled copy "
                                 "(the inverse permutation?)")


def _smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def exercise_2(candidate, image: np.ndarray | None = None, source: TextureSource | None = None) -> None:
    """``candidate(image, sample, noise, mask)``: delta recovered from a simulated sample, within 0.01.

    ``image`` (uint8 RGB) and ``source`` default to a smooth random image and a small procedural
    texture bank, with no foreground mask.
    """
    rng = np.random.default_rng(31)
    image = _smooth_image(rng) if image is None else image
    source = TextureSource(None, seed=0, n_procedural=4, procedural_size=64) if source is None else source
    simulator = synthesis.AnomalySynthesizer(None, source, p_normal=0.0)
    for n in range(6):
        result = simulator.sample(image, np.random.default_rng([31, n]), kind=("texture", "structure")[n % 2])
        estimate = float(candidate(image, result.image, result.noise_image, result.mask))
        if abs(estimate - result.delta) >= 0.01:
            raise AssertionError(f"{result.kind} sample: estimate {estimate:.3f}, but the sample was made with delta {result.delta:.3f}")


def exercise_3(candidate) -> None:
    """``candidate(image, noise, mask, target)``: the delta in [0, 1] whose mean change in the mask is ``target``."""
    rng = np.random.default_rng(4)
    image, noise = (rng.integers(0, 256, (20, 20, 3)).astype(np.uint8) for _ in range(2))
    mask = rng.random((20, 20)) < 0.5
    for target in (5.0, 20.0):
        delta = float(candidate(image, noise, mask, target))
        change = np.abs(synthesis.blend(image, noise, mask, delta) - image)[mask].mean()
        if abs(change - target) >= 1e-3:
            raise AssertionError(f"target {target}: delta {delta:.3f} gives a mean change of {change:.2f} inside the mask")
    if float(candidate(image, noise, mask, 1e6)) != 1.0:
        raise AssertionError("an unreachable target must give delta = 1 (clip to [0, 1])")
