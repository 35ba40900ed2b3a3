"""Self-checks for notebook 11 (ablations): Welch's t over seeds, the paired difference over seeds.

Each ``exercise_N(candidate)`` builds its own seeded per-seed metric values (in %, as in the
ablation table), calls the learner's function and compares with invariants of the statistic and
with stored digests of the worked solution's results (made by
:func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/11_ablations_solutions.ipynb``). No check computes the answer: exercise 1 tests the
symmetries of Welch's t (swap, shift, scale) and the bounds of the Welch-Satterthwaite degrees of
freedom, exercise 2 tests that a constant per-seed gap has no spread and that shifting one variant
moves only the mean; the values themselves are compared with the digests.
"""

from __future__ import annotations

import numpy as np

from memseg_lite.teaching.exercises import assert_matches, call_candidate


def _pair(answer, what: str) -> tuple[float, float]:
    """Two finite numbers from the learner's answer, or a failed check saying what was expected."""
    if isinstance(answer, np.ndarray):
        answer = answer.tolist()
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise AssertionError(f"{what}: return a pair of two numbers, got {type(answer).__name__}")
    numbers = []
    for value in answer:
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise AssertionError(f"{what}: both entries must be numbers, got {type(value).__name__}") from error
        if not np.isfinite(number):
            raise AssertionError(f"{what}: got {number}, not a finite number")
        numbers.append(number)
    return numbers[0], numbers[1]


def _raises_value_error(candidate, *args) -> bool:
    try:
        candidate(*args)
    except ValueError:
        return True
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 - any other error type is not the clear ValueError the docstring asks for
        return False
    return False


def seed_values(rng: np.random.Generator, count: int, centre: float, spread: float) -> np.ndarray:
    """``count`` per-seed metric values in % (float64), rounded to 2 decimals like the table."""
    return np.round(np.clip(rng.normal(centre, spread, count), 0.0, 100.0), 2)


# --------------------------------------------------------------------------------------------------
# Exercise 1 · Welch's t over seeds
# --------------------------------------------------------------------------------------------------
def exercise_1_inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (reference values, variant values), float64 per seed: equal and unequal seed counts."""
    rng = np.random.default_rng(11)
    return {
        "2 seeds each": (seed_values(rng, 2, 91.0, 1.5), seed_values(rng, 2, 88.0, 2.5)),
        "3 and 5 seeds": (seed_values(rng, 3, 80.0, 0.8), seed_values(rng, 5, 82.0, 3.0)),
        "4 seeds each, a small gap": (seed_values(rng, 4, 95.0, 1.0), seed_values(rng, 4, 95.4, 1.2)),
        "6 and 2 seeds": (seed_values(rng, 6, 60.0, 4.0), seed_values(rng, 2, 52.0, 0.5)),
    }


def exercise_1(candidate) -> None:
    """``candidate(reference, variant)`` -> ``(t, df)``: Welch's t of mean(variant) - mean(reference), its degrees of freedom."""
    for name, (reference, variant) in exercise_1_inputs().items():
        t, df = _pair(call_candidate(candidate, reference.copy(), variant.copy()), name)
        gap = variant.mean() - reference.mean()
        assert np.sign(t) == np.sign(gap), (
            f"{name}: t must have the sign of mean(variant) - mean(reference) ({gap:+.3f}), got t = {t:.4g}")
        low, high = min(reference.size, variant.size) - 1, reference.size + variant.size - 2
        assert low - 1e-9 <= df <= high + 1e-9, (
            f"{name}: Welch's degrees of freedom lie between min(n_a, n_b) - 1 = {low} and n_a + n_b - 2 = {high}, "
            f"got {df:.4g}")
        t_swapped, df_swapped = _pair(call_candidate(candidate, variant.copy(), reference.copy()), f"{name}, swapped")
        assert abs(t_swapped + t) < 1e-9 * max(1.0, abs(t)) and abs(df_swapped - df) < 1e-9 * max(1.0, df), (
            f"{name}: swapping the two variants must flip the sign of t and keep df")
        t_moved, df_moved = _pair(call_candidate(candidate, reference + 7.5, variant + 7.5), f"{name}, shifted")
        assert abs(t_moved - t) < 1e-7 * max(1.0, abs(t)) and abs(df_moved - df) < 1e-7 * max(1.0, df), (
            f"{name}: adding the same constant to every value must change neither t nor df")
        t_scaled, df_scaled = _pair(call_candidate(candidate, reference / 100, variant / 100), f"{name}, as fractions")
        assert abs(t_scaled - t) < 1e-7 * max(1.0, abs(t)) and abs(df_scaled - df) < 1e-7 * max(1.0, df), (
            f"{name}: the same values as fractions instead of % must give the same t and df (t has no unit)")
        try:
            assert_matches(t, EXPECTED[f"exercise_1 {name} t"], what=f"{name}: t", rtol=1e-5, atol=1e-9)
        except AssertionError as error:
            raise AssertionError(f"{error} (the standard error of the gap is sqrt(s_a^2 / n_a + s_b^2 / n_b), with "
                                 "the sample variances s^2, ddof = 1)") from None
        try:
            assert_matches(df, EXPECTED[f"exercise_1 {name} df"], what=f"{name}: df", rtol=1e-5, atol=1e-9)
        except AssertionError as error:
            raise AssertionError(f"{error} (Welch-Satterthwaite: (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 / (n_b - 1)), "
                                 "v = s^2 / n)") from None
    reference, variant = exercise_1_inputs()["2 seeds each"]
    assert _raises_value_error(candidate, reference[:1].copy(), variant.copy()), (
        "one seed has no spread: raise ValueError when a variant has fewer than two values")


# --------------------------------------------------------------------------------------------------
# Exercise 2 · the paired difference over seeds
# --------------------------------------------------------------------------------------------------
def exercise_2_inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (reference values, variant values), float64, seed k of both at index k.

    Each seed moves both variants the same way (a shared data split and simulation draw), plus a
    smaller part of its own: the situation where pairing by seed pays.
    """
    rng = np.random.default_rng(12)
    cases = {}
    for name, count, gap in (("2 seeds", 2, -3.0), ("3 seeds", 3, 1.2), ("5 seeds", 5, -0.6)):
        shared = rng.normal(0.0, 2.5, count)
        reference = np.round(90.0 + shared + rng.normal(0.0, 0.4, count), 2)
        variant = np.round(90.0 + gap + shared + rng.normal(0.0, 0.4, count), 2)
        cases[name] = (reference, variant)
    return cases


def exercise_2(candidate) -> None:
    """``candidate(reference, variant)`` -> ``(mean, standard error)`` of the per-seed differences variant - reference."""
    for name, (reference, variant) in exercise_2_inputs().items():
        mean, error = _pair(call_candidate(candidate, reference.copy(), variant.copy()), name)
        assert error >= 0, f"{name}: a standard error is never negative, got {error:.4g}"
        moved_mean, moved_error = _pair(call_candidate(candidate, reference.copy(), variant + 2.0), f"{name}, moved")
        assert abs(moved_mean - mean - 2.0) < 1e-7 and abs(moved_error - error) < 1e-7, (
            f"{name}: adding 2 to every seed of the variant must add 2 to the mean difference and leave its "
            "standard error unchanged")
        constant_mean, constant_error = _pair(call_candidate(candidate, reference.copy(), reference + 1.5),
                                              f"{name}, a constant gap")
        assert abs(constant_error) < 1e-9, (
            f"{name}: when the variant is the reference plus 1.5 at every seed, the differences do not vary and their "
            f"standard error is 0; got {constant_error:.4g} (are the seeds paired, seed k with seed k?)")
        assert abs(constant_mean - 1.5) < 1e-9, f"{name}: a constant gap of 1.5 must give a mean difference of 1.5"
        assert_matches(mean, EXPECTED[f"exercise_2 {name} mean"], what=f"{name}: the mean difference", rtol=1e-5,
                       atol=1e-9)
        try:
            assert_matches(error, EXPECTED[f"exercise_2 {name} standard error"], what=f"{name}: the standard error",
                           rtol=1e-5, atol=1e-9)
        except AssertionError as failure:
            raise AssertionError(f"{failure} (the sample standard deviation of the n differences, ddof = 1, divided "
                                 "by sqrt(n))") from None
    reference, variant = exercise_2_inputs()["3 seeds"]
    assert _raises_value_error(candidate, reference.copy(), variant[:2].copy()), (
        "pairs need the same seeds on both sides: raise ValueError when the two lists differ in length")
    assert _raises_value_error(candidate, reference[:1].copy(), variant[:1].copy()), (
        "one pair has no spread: raise ValueError for fewer than two seeds")


EXPECTED: dict = {'exercise_1 2 seeds each t': -1.32161,
 'exercise_1 2 seeds each df': 1.40269,
 'exercise_1 3 and 5 seeds t': 1.31076,
 'exercise_1 3 and 5 seeds df': 4.19692,
 'exercise_1 4 seeds each, a small gap t': 1.45082,
 'exercise_1 4 seeds each, a small gap df': 5.62388,
 'exercise_1 6 and 2 seeds t': -3.67632,
 'exercise_1 6 and 2 seeds df': 5.19462,
 'exercise_2 2 seeds mean': -3.21,
 'exercise_2 2 seeds standard error': 0.56,
 'exercise_2 3 seeds mean': 0.65,
 'exercise_2 3 seeds standard error': 0.355106,
 'exercise_2 5 seeds mean': -0.724,
 'exercise_2 5 seeds standard error': 0.152335}
