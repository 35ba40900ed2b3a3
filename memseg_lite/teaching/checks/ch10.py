"""Self-checks for notebook 10 (your own product): normalised scores, an F1-optimal threshold, a map back to the photo.

Each ``exercise_N(candidate)`` builds its own inputs, calls the learner's function and compares
with properties, with inputs whose answer is known by design, and with stored digests of the
worked solution's results (made by :func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/10_your_own_product_solutions.ipynb``). No check computes the answer: exercise 1 tests
the anchor points and the straight pieces of the normalisation, exercise 2 evaluates the learner's
threshold with :func:`~memseg_lite.evaluation.thresholds.precision_recall_f1` (it never searches for
the best one), and exercise 3 letterboxes known maps with
:func:`~memseg_lite.core.transforms.fit_image` (the forward direction) and asks for them back.
Exercises 1 and 3 fail a function that runs the package's version of the answer
(``normalise_scores``, ``unfit_map``); they only watch for those calls, never make them.
"""

from __future__ import annotations

import cv2
import numpy as np

from memseg_lite.core.transforms import fit_image, unfit_map
from memseg_lite.evaluation.thresholds import normalise_scores, precision_recall_f1
from memseg_lite.teaching.checks.support import Sealed, assert_sealed, call_avoiding, matches_sealed, robust
from memseg_lite.teaching.exercises import assert_matches, call_candidate


def _number(value, what) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be one number, got {type(value).__name__}") from error
    if not np.isfinite(number):
        raise AssertionError(f"{what} is {number}, not a finite number")
    return number


# --------------------------------------------------------------------------------------------------
# Exercise 1 · normalised scores
# --------------------------------------------------------------------------------------------------
def exercise_1_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(scores, thresholds), float64 [12] each: seeded pairs in general position."""
    rng = np.random.default_rng(10)
    return rng.random(12), rng.uniform(0.05, 0.95, 12)


@robust
def exercise_1(candidate) -> None:
    """``candidate(score, threshold)`` -> the normalised score of one image (one number)."""

    def normalised(score: float, threshold: float) -> float:
        return _number(call_avoiding(candidate, float(score), float(threshold), functions=(normalise_scores,),
                                     why="write the two straight pieces yourself"),
                       f"my_normalised({score:g}, {threshold:g})")

    for threshold in (0.4, 0.25, 0.8):
        for score, want, meaning in ((0.0, 0.0, "a score of 0 stays 0"),
                                     (threshold, 0.5, "the threshold itself goes to 0.5"),
                                     (1.0, 1.0, "a score of 1 stays 1")):
            got = normalised(score, threshold)
            assert abs(got - want) < 1e-9, f"threshold {threshold}: {meaning}, got {got:.6g} for score {score:g}"
        below = [normalised(threshold * k / 8, threshold) for k in range(9)]
        above = [normalised(threshold + (1 - threshold) * k / 8, threshold) for k in range(9)]
        for name, values in (("below", below), ("above", above)):
            steps = np.diff(values)
            assert np.all(steps > 0), f"threshold {threshold}: the normalised score must grow with the score ({name} t)"
            assert np.ptp(steps) < 1e-9, (f"threshold {threshold}: {name} the threshold the map must be a straight "
                                          "line (equal steps for equal score steps)")
    scores, thresholds = exercise_1_inputs()
    values = np.array([normalised(s, t) for s, t in zip(scores, thresholds, strict=True)])
    assert_matches(values, EXPECTED["exercise_1 seeded pairs"], what="the normalised scores of 12 seeded pairs")


# --------------------------------------------------------------------------------------------------
# Exercise 2 · an F1-optimal image threshold
# --------------------------------------------------------------------------------------------------
def exercise_2_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(scores float64 [44] on a 0.02 grid, so with ties; labels int [44], 1 = defective), shuffled."""
    rng = np.random.default_rng(20)
    good, defective = rng.beta(2.0, 5.0, 30), rng.beta(4.0, 2.5, 14)
    scores = np.round(np.concatenate([good, defective]) / 0.02) * 0.02
    labels = np.array([0] * good.size + [1] * defective.size)
    order = rng.permutation(scores.size)
    return scores[order], labels[order]


def _threshold(candidate, scores, labels, what) -> float:
    t = _number(call_candidate(candidate, scores.copy(), labels.copy()), f"{what}: the threshold")
    assert np.any(np.isclose(scores, t, rtol=0, atol=1e-9)), f"{what}: t = {t:g} must be one of the scores"
    return t


@robust
def exercise_2(candidate) -> None:
    """``candidate(scores, labels)`` -> the score t whose rule ``score >= t`` has the largest F1.

    Ties: the higher t."""
    # By design: every defective image scores above every good one, so only the lowest defective score gives F1 = 1.
    good, defective = np.array([0.05, 0.12, 0.3, 0.41, 0.45]), np.array([0.55, 0.62, 0.9])
    scores, labels = np.concatenate([defective, good]), np.array([1] * 3 + [0] * 5)
    t = _threshold(candidate, scores, labels, "separable scores")
    assert abs(t - 0.55) < 1e-9, (f"separable scores: every defective image scores above every good one, so the "
                                  f"threshold should flag exactly the defective ones; t = {t:g} does not (score >= t?)")
    # By design: t = 0.8 and t = 0.2 both give F1 = 2/3; the higher one raises fewer false alarms.
    scores, labels = np.array([0.8, 0.6, 0.4, 0.2]), np.array([1, 0, 0, 1])
    t = _threshold(candidate, scores, labels, "a tie in F1")
    assert abs(t - 0.8) < 1e-9, (f"a tie in F1: t = 0.8 and t = 0.2 both give F1 = 2/3 here; take the higher one "
                                 f"(fewer false alarms), got t = {t:g}")
    scores, labels = exercise_2_inputs()
    t = _threshold(candidate, scores, labels, "44 seeded scores")
    f1 = precision_recall_f1(scores, labels, t).f1
    assert matches_sealed(f1, EXPECTED["exercise_2 best F1"]), (
        f"44 seeded scores: F1 at your t = {t:g} is {f1:.4f}, but another score gives a higher F1 "
        "(flag score >= t, and F1 = 2 TP / (flagged + defective))")
    assert_sealed(t, EXPECTED["exercise_2 threshold"], what="44 seeded scores: the threshold")


# --------------------------------------------------------------------------------------------------
# Exercise 3 · a letterboxed map back onto the photo's pixels
# --------------------------------------------------------------------------------------------------
#: (original height, width) -> network (H, W): padding left/right, top/bottom, an odd margin, none
EXERCISE_3_CASES = (((176, 256), (96, 128)), ((300, 200), (128, 128)), ((210, 300), (96, 128)),
                    ((90, 90), (64, 96)), ((120, 160), (96, 128)))


def _smooth_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    coarse = rng.random((5, 7)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _mapped_back(candidate, values: np.ndarray, original_shape: tuple[int, int], what: str) -> np.ndarray:
    result = call_avoiding(candidate, values.copy(), original_shape, functions=(unfit_map,),
                           why="the exercise is to write the package's unfit_map yourself (crop, then cv2.resize)")
    result = np.asarray(result, dtype=np.float64)
    assert result.shape == tuple(original_shape), (
        f"{what}: the map must come back at the photo's size {tuple(original_shape)}, got {result.shape}")
    assert np.all(np.isfinite(result)), f"{what}: the map contains NaN or infinite values"
    return result


@robust
def exercise_3(candidate) -> None:
    """``candidate(values, original_shape)`` -> the ``H x W`` letterboxed map on the original ``h x w`` pixels."""
    rng = np.random.default_rng(30)
    for original_shape, size in EXERCISE_3_CASES:
        what = f"{original_shape[0]} x {original_shape[1]} photo in a {size[0]} x {size[1]} input"
        ones = _mapped_back(candidate, fit_image(np.ones(original_shape, np.float32), size), original_shape, what)
        assert ones.min() > 0.999, (f"{what}: a map that is 1 on the photo and 0 on the padding came back with values "
                                    f"down to {ones.min():.3f}: the padding was not (all) cut away")
        photo = _smooth_map(rng, original_shape)
        error = np.abs(_mapped_back(candidate, fit_image(photo, size), original_shape, what) - photo)
        assert error.mean() < 0.01, (f"{what}: a smooth map letterboxed and mapped back differs from itself by "
                                     f"{error.mean():.3f} on average: the crop or the resize is off")
        random_map = _mapped_back(candidate, rng.random(size).astype(np.float32), original_shape, what)
        assert_matches(random_map, EXPECTED[f"exercise_3 {original_shape} {size}"],
                       what=f"{what}: a random map mapped back (bilinear, cv2.INTER_LINEAR)")


# Digests of the worked solutions' results (solutions/10_your_own_product_solutions.ipynb: my_normalised,
# best_f1_threshold, map_back) on the inputs above; regenerate with summarise(solution(...)).
EXPECTED: dict = {
    "exercise_1 seeded pairs": {
        "shape": [12],
        "mean": 0.533628,
        "std": 0.31561,
        "min": 0.0838574,
        "max": 0.949054,
        "probes": [[0, 0.949054], [3, 0.0838574], [6, 0.811442], [8, 0.615209], [11, 0.183246]],
    },
    "exercise_2 threshold": Sealed(step=1e-05, digest="20eb0b05f28505d140ca", exact=False),
    "exercise_2 best F1": Sealed(step=1e-05, digest="6c1112be882299237b42", exact=False),
    "exercise_3 (176, 256) (96, 128)": {
        "shape": [176, 256],
        "mean": 0.506368,
        "std": 0.18128,
        "min": 0.00920919,
        "max": 0.991014,
        "probes": [[0, 0.416121], [11264, 0.511126], [22528, 0.745555], [33791, 0.823534], [45055, 0.504876]],
    },
    "exercise_3 (300, 200) (128, 128)": {
        "shape": [300, 200],
        "mean": 0.499917,
        "std": 0.192932,
        "min": 0.00734294,
        "max": 0.997011,
        "probes": [[0, 0.481808], [15000, 0.744119], [30000, 0.448605], [44999, 0.593896], [59999, 0.170918]],
    },
    "exercise_3 (210, 300) (96, 128)": {
        "shape": [210, 300],
        "mean": 0.500886,
        "std": 0.193189,
        "min": 0.00246236,
        "max": 0.996419,
        "probes": [[0, 0.995884], [15750, 0.568361], [31500, 0.312723], [47249, 0.138542], [62999, 0.559036]],
    },
    "exercise_3 (90, 90) (64, 96)": {
        "shape": [90, 90],
        "mean": 0.501558,
        "std": 0.194437,
        "min": 0.0142067,
        "max": 0.982287,
        "probes": [[0, 0.3154], [2025, 0.474814], [4050, 0.0706076], [6074, 0.735934], [8099, 0.0236513]],
    },
    "exercise_3 (120, 160) (96, 128)": {
        "shape": [120, 160],
        "mean": 0.504447,
        "std": 0.190699,
        "min": 0.00526178,
        "max": 0.992187,
        "probes": [[0, 0.838967], [4800, 0.570763], [9600, 0.160392], [14399, 0.025403], [19199, 0.309676]],
    },
}
