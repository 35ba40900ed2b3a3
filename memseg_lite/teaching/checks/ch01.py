"""Self-checks for notebook 01 (Perlin noise): fade derivatives, fractal noise, a threshold for a coverage.

Worked solutions: ``solutions/01_perlin_noise_solutions.ipynb``.
"""

from __future__ import annotations

import numpy as np

from memseg_lite.simulation import perlin
from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import assert_matches, call_candidate

# summarise(fractal_noise((64, 48), (2, 3), 3, 0.5, np.random.default_rng(1))) with the worked
# solution of solutions/01_perlin_noise_solutions.ipynb.
EXPECTED = {
    "fractal": {"shape": [64, 48], "mean": 0.0263745, "std": 0.245284, "min": -0.599346, "max": 0.558337,
                "probes": [[0, 0.0], [768, -0.249922], [1536, 0.0], [2303, 0.131113], [3071, 0.157508]]},
}


@robust
def exercise_1(candidate) -> None:
    """``candidate(t)``: (f'(t), f''(t)) of the quintic fade, checked against finite differences."""
    t = np.linspace(0.05, 0.95, 19)
    step = 1e-5
    result = call_candidate(candidate, t)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise AssertionError("return the pair (f'(t), f''(t))")
    first, second = (np.asarray(value, dtype=np.float64) for value in result)
    if first.shape != t.shape or second.shape != t.shape:
        raise AssertionError(f"both derivatives must have the shape of t, {t.shape}")
    numeric_first = (perlin.fade(t + step) - perlin.fade(t - step)) / (2 * step)
    numeric_second = (perlin.fade(t + step) - 2 * perlin.fade(t) + perlin.fade(t - step)) / step**2
    if not np.allclose(first, numeric_first, atol=1e-5):
        raise AssertionError("f'(t) does not match a finite difference of the fade")
    if not np.allclose(second, numeric_second, atol=1e-3):
        raise AssertionError("f''(t) does not match a second finite difference of the fade")
    ends_first, ends_second = (
        np.asarray(value, dtype=np.float64) for value in call_candidate(candidate, np.array([0.0, 1.0]))
    )
    if not (np.allclose(ends_first, 0) and np.allclose(ends_second, 0)):
        raise AssertionError("both derivatives must be 0 at t = 0 and t = 1")


@robust
def exercise_2(candidate) -> None:
    """``candidate(shape, res, octaves, persistence, rng)``: fractal (multi-octave) Perlin noise."""
    test_shape, test_res = (64, 48), (2, 3)
    out = np.asarray(
        call_candidate(candidate, test_shape, test_res, 3, 0.5, np.random.default_rng(1)), dtype=np.float64
    )
    assert_matches(out, EXPECTED["fractal"], what="fractal_noise((64, 48), (2, 3), 3, 0.5, rng seed 1)",
                   rtol=1e-4, atol=1e-6)
    # With a fixed seed the sum is a polynomial in the persistence p: f(p) = o_0 + p o_1 + p^2 o_2.
    f = {
        p: np.asarray(call_candidate(candidate, test_shape, test_res, 3, p, np.random.default_rng(3)), np.float64)
        for p in (0.0, 1.0, -1.0, 0.5)
    }
    octave_images = [f[0.0], (f[1.0] - f[-1.0]) / 2, (f[1.0] + f[-1.0]) / 2 - f[0.0]]
    if not np.allclose(f[0.5], octave_images[0] + 0.5 * octave_images[1] + 0.25 * octave_images[2], atol=1e-5):
        raise AssertionError(
            "octave o must have amplitude persistence**o (and the same seed must give the same result)"
        )
    for o, octave_image in enumerate(octave_images):
        if np.abs(octave_image).max() <= 0.05:
            raise AssertionError(f"no octave {o} with amplitude persistence**{o} found in the sum")
        cell_y, cell_x = test_shape[0] // (test_res[0] * 2**o), test_shape[1] // (test_res[1] * 2**o)
        # Perlin noise is 0 on its own lattice points and (almost always) not 0 at the cell centres.
        if np.abs(octave_image[::cell_y, ::cell_x]).max() >= 1e-5:
            raise AssertionError(f"octave {o} does not have resolution 2**{o} * res")
        if np.abs(octave_image[cell_y // 2 :: cell_y, cell_x // 2 :: cell_x]).max() <= 0.05:
            raise AssertionError(f"octave {o} is 0 at its cell centres: its resolution is too fine")


@robust
def exercise_3(candidate) -> None:
    """``candidate(target, n, size, seed)``: a mask threshold with mean coverage ``target``, on fresh masks."""
    for target in (0.10, 0.25):
        t = float(call_candidate(lambda target=target: candidate(target, n=100, size=32, seed=0)))
        if not -1.0 <= t < 1.0:
            raise AssertionError(f"threshold {t} is outside [-1, 1), where perlin_mask accepts thresholds")
        rng = np.random.default_rng(123)  # fresh masks: the threshold must generalise
        coverage = np.mean([perlin.perlin_mask((32, 32), rng, threshold=t).mean() for _ in range(300)])
        if abs(coverage - target) >= 0.2 * target:
            raise AssertionError(
                f"threshold {t:.3f} gives {coverage:.1%} coverage on fresh masks, not about {target:.0%}"
            )
