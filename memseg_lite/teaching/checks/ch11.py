"""Self-checks for notebook 11 (ablations): Welch's t over seeds, the paired difference over seeds.

Each ``exercise_N(candidate)`` builds its own seeded per-seed metric values (in %, as in the
ablation table), calls the learner's function and compares with invariants of the statistic and
with stored digests of the worked solution's results (made by
:func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/11_ablations_solutions.ipynb``). No check computes the answer: exercise 1 tests the
symmetries of Welch's t (swap, shift, scale) and the bounds of the Welch-Satterthwaite degrees of
freedom, exercise 2 tests that a constant per-seed gap has no spread and that shifting one variant
moves only the mean; the values themselves are compared with sealed values of the worked
solution. Both fail a function that runs ``scipy.stats`` (``ttest_ind``, ``sem``): numpy only.
"""

from __future__ import annotations

import numpy as np

from memseg_lite.teaching.checks.support import Sealed, assert_sealed, call_avoiding, robust


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


def _numpy_only(candidate, *args):
    """The learner's answer; a failed check when it runs scipy.stats or statsmodels (the exercises say numpy only)."""
    return call_avoiding(candidate, *args, modules=("scipy.stats", "statsmodels"),
                         why="the exercise asks for numpy only: write the formula of the exercise yourself")


def _raises_value_error(candidate, *args) -> bool:
    try:
        candidate(*args)
    except ValueError:
        return True
    except NotImplementedError:
        raise
    except Exception:
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


@robust
def exercise_1(candidate) -> None:
    """``candidate(reference, variant)`` -> ``(t, df)``: Welch's t of mean(variant) - mean(reference) and
    its degrees of freedom."""
    for name, (reference, variant) in exercise_1_inputs().items():
        t, df = _pair(_numpy_only(candidate, reference.copy(), variant.copy()), name)
        gap = variant.mean() - reference.mean()
        assert np.sign(t) == np.sign(gap), (
            f"{name}: t must have the sign of mean(variant) - mean(reference) ({gap:+.3f}), got t = {t:.4g}")
        low, high = min(reference.size, variant.size) - 1, reference.size + variant.size - 2
        assert low - 1e-9 <= df <= high + 1e-9, (
            f"{name}: Welch's degrees of freedom lie between min(n_a, n_b) - 1 = {low} and n_a + n_b - 2 = {high}, "
            f"got {df:.4g}")
        t_swapped, df_swapped = _pair(_numpy_only(candidate, variant.copy(), reference.copy()), f"{name}, swapped")
        assert abs(t_swapped + t) < 1e-9 * max(1.0, abs(t)) and abs(df_swapped - df) < 1e-9 * max(1.0, df), (
            f"{name}: swapping the two variants must flip the sign of t and keep df")
        t_moved, df_moved = _pair(_numpy_only(candidate, reference + 7.5, variant + 7.5), f"{name}, shifted")
        assert abs(t_moved - t) < 1e-7 * max(1.0, abs(t)) and abs(df_moved - df) < 1e-7 * max(1.0, df), (
            f"{name}: adding the same constant to every value must change neither t nor df")
        t_scaled, df_scaled = _pair(_numpy_only(candidate, reference / 100, variant / 100), f"{name}, as fractions")
        assert abs(t_scaled - t) < 1e-7 * max(1.0, abs(t)) and abs(df_scaled - df) < 1e-7 * max(1.0, df), (
            f"{name}: the same values as fractions instead of % must give the same t and df (t has no unit)")
        try:
            assert_sealed(t, EXPECTED[f"exercise_1 {name} t"], what=f"{name}: t")
        except AssertionError as error:
            raise AssertionError(f"{error} (the standard error of the gap is sqrt(s_a^2 / n_a + s_b^2 / n_b), with "
                                 "the sample variances s^2, ddof = 1)") from None
        try:
            assert_sealed(df, EXPECTED[f"exercise_1 {name} df"], what=f"{name}: df")
        except AssertionError as error:
            raise AssertionError(
                f"{error} (Welch-Satterthwaite: (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 / (n_b - 1)), v = s^2 / n)"
            ) from None
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


@robust
def exercise_2(candidate) -> None:
    """``candidate(reference, variant)`` -> ``(mean, standard error)`` of the per-seed differences
    variant - reference."""
    for name, (reference, variant) in exercise_2_inputs().items():
        mean, error = _pair(_numpy_only(candidate, reference.copy(), variant.copy()), name)
        assert error >= 0, f"{name}: a standard error is never negative, got {error:.4g}"
        moved_mean, moved_error = _pair(_numpy_only(candidate, reference.copy(), variant + 2.0), f"{name}, moved")
        assert abs(moved_mean - mean - 2.0) < 1e-7 and abs(moved_error - error) < 1e-7, (
            f"{name}: adding 2 to every seed of the variant must add 2 to the mean difference and leave its "
            "standard error unchanged")
        constant_mean, constant_error = _pair(_numpy_only(candidate, reference.copy(), reference + 1.5),
                                              f"{name}, a constant gap")
        assert abs(constant_error) < 1e-9, (
            f"{name}: when the variant is the reference plus 1.5 at every seed, the differences do not vary and their "
            f"standard error is 0; got {constant_error:.4g} (are the seeds paired, seed k with seed k?)")
        assert abs(constant_mean - 1.5) < 1e-9, f"{name}: a constant gap of 1.5 must give a mean difference of 1.5"
        assert_sealed(mean, EXPECTED[f"exercise_2 {name} mean"], what=f"{name}: the mean difference")
        try:
            assert_sealed(error, EXPECTED[f"exercise_2 {name} standard error"], what=f"{name}: the standard error")
        except AssertionError as failure:
            raise AssertionError(f"{failure} (the sample standard deviation of the n differences, ddof = 1, divided "
                                 "by sqrt(n))") from None
    reference, variant = exercise_2_inputs()["3 seeds"]
    assert _raises_value_error(candidate, reference.copy(), variant[:2].copy()), (
        "pairs need the same seeds on both sides: raise ValueError when the two lists differ in length")
    assert _raises_value_error(candidate, reference[:1].copy(), variant[:1].copy()), (
        "one pair has no spread: raise ValueError for fewer than two seeds")


EXPECTED: dict = {'exercise_1 2 seeds each t': Sealed(step=0.0001, digest='752c4f30cff3707b8b9a', exact=False),
 'exercise_1 2 seeds each df': Sealed(step=0.0001, digest='cb36c2bf3a80addc8128', exact=False),
 'exercise_1 3 and 5 seeds t': Sealed(step=0.0001, digest='e8db9798bae3d7d26e58', exact=False),
 'exercise_1 3 and 5 seeds df': Sealed(step=0.0001, digest='38999f497b5017e21d76', exact=False),
 'exercise_1 4 seeds each, a small gap t': Sealed(step=0.0001, digest='5e48b89af6edeef5f55e', exact=False),
 'exercise_1 4 seeds each, a small gap df': Sealed(step=0.0001, digest='7b1a70d351c0c60cf365', exact=False),
 'exercise_1 6 and 2 seeds t': Sealed(step=0.0001, digest='281d2a7ed318eb799d36', exact=False),
 'exercise_1 6 and 2 seeds df': Sealed(step=0.0001, digest='99d2d1c19326d8d60736', exact=False),
 'exercise_2 2 seeds mean': Sealed(step=0.0001, digest='e0ba393509d61dc1a00a', exact=False),
 'exercise_2 2 seeds standard error': Sealed(step=1e-05, digest='25a4e412c3f781842dd6', exact=False),
 'exercise_2 3 seeds mean': Sealed(step=1e-05, digest='55759298bd4c61df1245', exact=False),
 'exercise_2 3 seeds standard error': Sealed(step=1e-05, digest='3ee390d9c9f5e95f0677', exact=False),
 'exercise_2 5 seeds mean': Sealed(step=1e-05, digest='3c5197b2401b240cf625', exact=False),
 'exercise_2 5 seeds standard error': Sealed(step=1e-05, digest='02c5d8177e5132dc7f25', exact=False)}
