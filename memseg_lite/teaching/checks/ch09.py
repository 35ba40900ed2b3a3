"""Self-checks for notebook 09 (evaluation): mid-ranks, the partial pixel AUROC, the threshold for an FPR.

Each ``exercise_N(candidate)`` builds its own seeded scores, maps and masks, calls the learner's
function and compares with properties and with stored values of the worked solution's output (made
by :func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/09_evaluation_solutions.ipynb``). No check computes the answer: exercise 1 uses
``image_auroc`` only to test the rank-sum formula on the learner's ranks, exercise 2 uses
``pixel_auroc`` only for the special case limit = 1, and exercise 3 verifies the learner's
threshold (it occurs in the maps, it keeps the FPR, no lower score does) without searching for it.
"""

from __future__ import annotations

import numpy as np

from memseg_lite.evaluation.metrics import image_auroc, pixel_auroc
from memseg_lite.teaching.checks.support import Sealed, assert_sealed, robust
from memseg_lite.teaching.exercises import assert_matches, call_candidate


def _number(value, what) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be one number, got {type(value).__name__}") from error


# --------------------------------------------------------------------------------------------------
# Exercise 1 · mid-ranks and the rank-sum AUROC
# --------------------------------------------------------------------------------------------------
def exercise_1_inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (scores float64 [n], labels int [n]): the notebook's small example and a case full of ties."""
    good = [0.12, 0.18, 0.21, 0.25, 0.31, 0.34, 0.40, 0.47, 0.55]
    defective = [0.29, 0.47, 0.58, 0.63, 0.71, 0.80, 0.88]
    tie_rng = np.random.default_rng(7)
    return {
        "the 16 example scores": (np.array(good + defective), np.array([0] * len(good) + [1] * len(defective))),
        "40 scores with many ties": (tie_rng.integers(0, 5, 40).astype(float), tie_rng.integers(0, 2, 40)),
    }


@robust
def exercise_1(candidate) -> None:
    """``candidate(scores)``: float [n] -> float64 [n], ranks 1..n from the lowest, ties share their mean rank."""
    for name, (scores, labels) in exercise_1_inputs().items():
        ranks = np.asarray(call_candidate(candidate, scores.copy()), dtype=np.float64)
        assert ranks.shape == scores.shape, (
            f"{name}: one rank per score, expected shape {scores.shape}, got {ranks.shape}"
        )
        n = scores.size
        assert abs(ranks.sum() - n * (n + 1) / 2) < 1e-9, \
            f"{name}: ranks 1..{n} sum to {n * (n + 1) // 2}, yours to {ranks.sum():g} (ranks start at 1?)"
        for value in np.unique(scores):
            assert np.ptp(ranks[scores == value]) == 0, f"{name}: equal scores ({value:g}) must share one rank"
        higher = scores[:, None] > scores[None, :]
        assert bool((ranks[:, None] > ranks[None, :])[higher].all()), f"{name}: a higher score must get a higher rank"
        assert_matches(ranks, EXPECTED[f"exercise_1 {name}"], what=f"{name}: the ranks")
        positive = labels.astype(bool)
        n_positive, n_negative = positive.sum(), (~positive).sum()
        auroc = (ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
        assert abs(auroc - image_auroc(scores, labels)) < 1e-12, (
            f"{name}: the rank-sum AUROC {auroc:.6f} != image_auroc"
        )


# --------------------------------------------------------------------------------------------------
# Exercises 2 and 3 · seeded anomaly maps and masks
# --------------------------------------------------------------------------------------------------
def _smooth(field: np.ndarray, passes: int = 3) -> np.ndarray:
    """A cheap blur: repeated 3 x 3 box averages with edge padding (numpy only)."""
    for _ in range(passes):
        padded = np.pad(field, 1, mode="edge")
        field = sum(padded[r : r + field.shape[0], c : c + field.shape[1]] for r in range(3) for c in range(3)) / 9
    return field


def maps_and_masks(seed: int = 11, count: int = 4, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Maps float32 [count, size, size] on a 0.05 grid (many ties) that follow blob masks uint8 [count, size, size]."""
    rng = np.random.default_rng(seed)
    masks = np.stack([(_smooth(rng.random((size, size))) > 0.56).astype(np.uint8) for _ in range(count)])
    masks[0] = 0  # one good image
    maps = 0.55 * rng.random(masks.shape) + 0.35 * np.stack([_smooth(mask.astype(float), 1) for mask in masks])
    return (np.round(np.clip(maps, 0, 1) / 0.05) * 0.05).astype(np.float32), masks


@robust
def exercise_2(candidate) -> None:
    """``candidate(maps, masks, limit)`` -> the area under the pixel ROC up to FPR = limit, divided by limit."""
    maps, masks = maps_and_masks()
    assert masks.any() and (masks == 0).any()
    for limit in (0.1, 0.3):
        value = _number(call_candidate(candidate, maps.copy(), masks.copy(), limit), f"limit {limit}: the area")
        assert 0.0 <= value <= 1.0, f"limit {limit}: a normalised area lies in [0, 1], got {value:.4f}"
        assert_sealed(value, EXPECTED[f"exercise_2 limit {limit}"], what=f"limit {limit}: the normalised area")
    whole = _number(call_candidate(candidate, maps.copy(), masks.copy(), 1.0), "limit 1: the area")
    assert abs(whole - pixel_auroc(maps, masks)) < 1e-9, f"at limit 1 it is the pixel AUROC; got {whole:.6f}"
    constant = np.full_like(maps, 0.5)
    chance = _number(call_candidate(candidate, constant, masks.copy(), 0.3), "a constant map: the area")
    assert abs(chance - 0.15) < 1e-9, (
        "a constant map flags everything at once: its ROC is the diagonal from (0, 0) to (1, 1), so the area up to "
        f"the limit is a triangle; your normalised value {chance:.6f} is too {'high' if chance > 0.15 else 'low'} "
        "(is the crossing segment cut at the limit, and the area divided by the limit?)")


@robust
def exercise_3(candidate) -> None:
    """``candidate(maps, masks, max_fpr)`` -> the lowest score in the maps with FPR(t) <= max_fpr."""
    maps, masks = maps_and_masks(seed=12)
    normal = maps[masks == 0]
    for max_fpr in (0.01, 0.05, 0.2):
        t = _number(call_candidate(candidate, maps.copy(), masks.copy(), max_fpr), f"max_fpr {max_fpr}: the threshold")
        assert np.any(maps == np.float32(t)), f"max_fpr {max_fpr}: t = {t} is not a score that occurs in the maps"
        t = np.float32(t)
        fpr = float((normal >= t).mean())
        assert fpr <= max_fpr, f"max_fpr {max_fpr}: the FPR at t = {t:g} is {fpr:.4f} > {max_fpr} (flag scores >= t)"
        lower = maps[maps < t]
        if lower.size:
            assert (normal >= lower.max()).mean() > max_fpr, \
                f"max_fpr {max_fpr}: a lower score than t = {t:g} also keeps the FPR <= {max_fpr}: take the lowest"
        assert_sealed(float(t), EXPECTED[f"exercise_3 max_fpr {max_fpr}"], what=f"max_fpr {max_fpr}: the threshold")


EXPECTED: dict = {'exercise_1 the 16 example scores': {'shape': [16],
                                      'mean': 8.5,
                                      'std': 4.60638,
                                      'min': 1.0,
                                      'max': 16.0,
                                      'probes': [[0, 1.0], [4, 6.0], [8, 11.0], [11, 12.0], [15, 16.0]]},
 'exercise_1 40 scores with many ties': {'shape': [40],
                                         'mean': 20.5,
                                         'std': 11.2594,
                                         'min': 2.5,
                                         'max': 35.0,
                                         'probes': [[0, 35.0], [10, 8.5], [20, 35.0], [29, 17.0], [39, 35.0]]},
 'exercise_2 limit 0.1': Sealed(step=1e-05, digest='b8bc9d7ede0edaad6ea3', exact=False),
 'exercise_2 limit 0.3': Sealed(step=1e-05, digest='384ddd2201f1a1594ddd', exact=False),
 'exercise_3 max_fpr 0.01': Sealed(step=1e-05, digest='543355906500c7044e35', exact=False),
 'exercise_3 max_fpr 0.05': Sealed(step=1e-05, digest='d268fb031878a61e9851', exact=False),
 'exercise_3 max_fpr 0.2': Sealed(step=1e-05, digest='20eb0b05f28505d140ca', exact=False)}
