"""Hidden tests for notebook 01: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch01

DATA_ROOT = "../data/demo"
TITLES = {1: 'fade derivatives', 2: 'fractal noise', 3: 'threshold for a target coverage'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(fade_derivatives):
    """fade derivatives."""
    ch01.exercise_1(fade_derivatives)


def exercise_2(fractal_noise):
    """fractal noise."""
    ch01.exercise_2(fractal_noise)


def exercise_3(threshold_for_coverage):
    """threshold for a target coverage."""
    ch01.exercise_3(threshold_for_coverage)


# The assignment track: the core pieces the student writes (assignments/01_perlin_noise_assignment.ipynb).
CORE_TITLES = {1: "the quintic fade", 2: "Perlin noise at lattice coordinates"}
CORE_POINTS = {1: 1, 2: 2}


def core_1(my_fade):
    """The quintic fade, against the polynomial evaluated term by term (and its end conditions)."""
    import numpy as np

    t = np.r_[0.0, 1.0, np.random.default_rng(11).random(200)]
    expected = 6 * t**5 - 15 * t**4 + 10 * t**3
    got = np.asarray(my_fade(t), dtype=np.float64)
    assert got.shape == t.shape, f"my_fade(t) has shape {got.shape}, expected {t.shape}"
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12), "my_fade is not 6t^5 - 15t^4 + 10t^3"


def _perlin_point(u, v, gradients):
    """Perlin noise at one point, written out corner by corner (the independent computation)."""
    import math

    ny, nx = gradients.shape[:2]
    i, j = min(int(math.floor(u)), ny - 2), min(int(math.floor(v)), nx - 2)
    tu, tv = u - i, v - j

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    def ramp(a, b):
        gy, gx = gradients[i + a, j + b]
        return gy * (tu - a) + gx * (tv - b)

    top = ramp(0, 0) * (1 - fade(tv)) + ramp(0, 1) * fade(tv)
    bottom = ramp(1, 0) * (1 - fade(tv)) + ramp(1, 1) * fade(tv)
    return top * (1 - fade(tu)) + bottom * fade(tu)


def core_2(my_perlin_at):
    """Perlin noise at arbitrary (also broadcast, also the last lattice line) coordinates, point by point."""
    import numpy as np

    rng = np.random.default_rng(12)
    angles = 2 * np.pi * rng.random((6, 9))
    gradients = np.stack([np.sin(angles), np.cos(angles)], axis=-1)
    u = np.r_[0.0, 5.0, rng.uniform(0, 5, 30)][:, None]  # 5.0: the last lattice line
    v = np.r_[0.0, 8.0, rng.uniform(0, 8, 20)][None, :]
    got = np.asarray(my_perlin_at(u, v, gradients), dtype=np.float64)
    wanted = (u.shape[0], v.shape[1])
    assert got.shape == wanted, f"my_perlin_at gives shape {got.shape} for (u, v) broadcast to {wanted}"
    expected = np.array([[_perlin_point(a, b, gradients) for b in v[0]] for a in u[:, 0]])
    error = np.abs(got - expected).max()
    assert np.allclose(got, expected, atol=1e-9), f"wrong noise values (largest error {error:.3g})"
