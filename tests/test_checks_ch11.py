"""Notebook 11's self-checks: the worked solutions pass, plausible wrong answers are rejected.

The solutions are the code cells tagged ``solution`` in ``solutions/11_ablations_solutions.ipynb``
(run on their own, in order, in a fresh namespace), so the tests use exactly the published code,
and they are compared with scipy's t-tests as an independent computation. The editions are also
checked against each other: the student's notebook holds stubs and non-strict checks only, the
solutions notebook defines every stub and checks it strictly.
"""

from __future__ import annotations

import ast
import json
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from memseg_lite.teaching.checks import ch11
from memseg_lite.teaching.exercises import check

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "notebooks" / "11_ablations.ipynb"
SOLUTIONS = ROOT / "solutions" / "11_ablations_solutions.ipynb"
STUBS = {"welch_t", "paired_difference"}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.fixture(scope="module")
def solved() -> types.SimpleNamespace:
    namespace: dict = {"__name__": "solutions_11"}
    sources = [_source(c) for c in _cells(SOLUTIONS)
               if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])]
    assert len(sources) == 2, "one solution cell per exercise"
    for index, source in enumerate(sources):
        code = compile(source, f"{SOLUTIONS.name}[solution cell {index}]", "exec")
        exec(code, namespace)  # the published solution cells, run as the solutions notebook runs them
    return types.SimpleNamespace(**{k: v for k, v in namespace.items() if not k.startswith("__")})


def rejects(exercise, candidate) -> str:
    with pytest.raises(AssertionError) as info:
        exercise(candidate)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# The two editions
# ----------------------------------------------------------------------------------------------
def test_student_edition_has_stubs_and_no_answers():
    cells = _cells(STUDENT)
    text = "\n".join(_source(c) for c in cells)
    assert "strict=True" not in text and "**Answers (instructor edition).**" not in text
    assert "from memseg_lite.teaching.checks import ch11" in text
    assert sorted(int(n) for n in re.findall(r"ch11\.exercise_(\d+)\(", text)) == [1, 2]
    stubs = set()
    for cell in cells:
        if cell["cell_type"] != "code" or "ch11.exercise_" not in _source(cell):
            continue
        for node in ast.parse(_source(cell)).body:
            if isinstance(node, ast.FunctionDef):
                body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{node.name} must be a stub"
                stubs.add(node.name)
    assert stubs == STUBS
    assert "[< 10 · Your own product](10_your_own_product.ipynb)" in _source(cells[0])  # the navigation header


def test_solutions_edition_checks_every_exercise_strictly(solved):
    cells = _cells(SOLUTIONS)
    text = "\n".join(_source(c) for c in cells)
    assert sorted(int(n) for n in re.findall(r"ch11\.exercise_(\d+)\([^\n]*strict=True", text)) == [1, 2]
    assert "raise NotImplementedError" not in text and "**Answers (instructor edition).**" in text
    for name in STUBS:
        assert callable(getattr(solved, name))
    parameters = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(parameters) == 1 and 'os.environ.get("MEMSEG_PROFILE", "demo")' in _source(parameters[0])
    # Its links point into notebooks/ (it lives in solutions/).
    assert "](../notebooks/10_your_own_product.ipynb)" in _source(cells[0])
    assert "](10_your_own_product.ipynb)" not in text


def test_both_editions_share_the_parameters_and_the_study_folder():
    student, solutions = (next(c for c in _cells(path) if "parameters" in c["metadata"].get("tags", []))
                          for path in (STUDENT, SOLUTIONS))
    assert _source(student) == _source(solutions)  # same run_dir and sizes: the instructor edition reuses the runs
    assert 'run_dir = f"../runs/{profile}"' in _source(student)


def test_a_stub_reports_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    for number, exercise in enumerate((ch11.exercise_1, ch11.exercise_2), start=1):
        assert check(f"Exercise {number}", lambda exercise=exercise: exercise(stub)) is False
    assert capsys.readouterr().out.count("not attempted") == 2


# ----------------------------------------------------------------------------------------------
# Exercise 1 · Welch's t
# ----------------------------------------------------------------------------------------------
def test_exercise_1_solution_passes_and_agrees_with_scipy(solved):
    ch11.exercise_1(solved.welch_t)
    for reference, variant in ch11.exercise_1_inputs().values():
        t, df = solved.welch_t(reference, variant)
        result = stats.ttest_ind(variant, reference, equal_var=False)
        assert t == pytest.approx(result.statistic, rel=1e-12)
        assert df == pytest.approx(result.df, rel=1e-12)
    with pytest.raises(ValueError):
        solved.welch_t([90.0], [80.0, 81.0])


def _welch_parts(reference, variant, ddof=1):
    a, b = np.asarray(reference, float), np.asarray(variant, float)
    va, vb = a.var(ddof=ddof) / a.size, b.var(ddof=ddof) / b.size
    return a, b, va, vb


def test_exercise_1_rejects_wrong_answers(solved):
    def population_variance(reference, variant):  # ddof = 0
        a, b, va, vb = _welch_parts(reference, variant, ddof=0)
        if a.size < 2 or b.size < 2:
            raise ValueError("too few")
        degrees_of_freedom = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        return (b.mean() - a.mean()) / math.sqrt(va + vb), degrees_of_freedom

    def student_pooled(reference, variant):  # equal variances assumed, df = n_a + n_b - 2
        if len(reference) < 2 or len(variant) < 2:
            raise ValueError("too few")
        result = stats.ttest_ind(variant, reference, equal_var=True)
        return float(result.statistic), float(len(reference) + len(variant) - 2)

    def welch_t_student_df(reference, variant):  # Welch's t with the pooled test's degrees of freedom
        return solved.welch_t(reference, variant)[0], float(len(reference) + len(variant) - 2)

    def reversed_sign(reference, variant):  # mean(reference) - mean(variant)
        t, df = solved.welch_t(reference, variant)
        return -t, df

    def no_error(reference, variant):  # returns nan for one seed instead of raising
        if len(reference) < 2 or len(variant) < 2:
            return float("nan"), float("nan")
        return solved.welch_t(reference, variant)

    def without_n(reference, variant):  # v = s^2 instead of s^2 / n
        a, b = np.asarray(reference, float), np.asarray(variant, float)
        if a.size < 2 or b.size < 2:
            raise ValueError("too few")
        va, vb = a.var(ddof=1), b.var(ddof=1)
        degrees_of_freedom = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        return (b.mean() - a.mean()) / math.sqrt(va + vb), degrees_of_freedom

    assert "not the expected value" in rejects(ch11.exercise_1, population_variance)
    assert rejects(ch11.exercise_1, student_pooled)
    assert "Welch-Satterthwaite" in rejects(ch11.exercise_1, welch_t_student_df)
    assert "sign" in rejects(ch11.exercise_1, reversed_sign)
    assert "ValueError" in rejects(ch11.exercise_1, no_error)
    assert rejects(ch11.exercise_1, without_n)
    assert "pair of two numbers" in rejects(ch11.exercise_1, lambda reference, variant: 1.0)
    assert "raised ZeroDivisionError" in rejects(ch11.exercise_1, lambda reference, variant: 1 / 0)


def test_exercise_1_inputs_separate_welch_from_the_pooled_test():
    """The cases include unequal seed counts and variances, where Welch and Student differ."""
    differ = 0
    for reference, variant in ch11.exercise_1_inputs().values():
        welch = stats.ttest_ind(variant, reference, equal_var=False).statistic
        student = stats.ttest_ind(variant, reference, equal_var=True).statistic
        differ += abs(welch - student) > 1e-3 * abs(welch)
    assert differ >= 2


# ----------------------------------------------------------------------------------------------
# Exercise 2 · the paired difference
# ----------------------------------------------------------------------------------------------
def test_exercise_2_solution_passes_and_agrees_with_scipy(solved):
    ch11.exercise_2(solved.paired_difference)
    for reference, variant in ch11.exercise_2_inputs().values():
        mean, error = solved.paired_difference(reference, variant)
        assert mean == pytest.approx(np.mean(variant - reference), abs=1e-12)
        assert mean / error == pytest.approx(stats.ttest_rel(variant, reference).statistic, rel=1e-10)
    with pytest.raises(ValueError):
        solved.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def test_exercise_2_rejects_wrong_answers(solved):
    def unpaired(reference, variant):  # the standard error of exercise 1, ignoring the pairing
        a, b = np.asarray(reference, float), np.asarray(variant, float)
        if a.shape != b.shape or a.size < 2:
            raise ValueError("bad")
        return b.mean() - a.mean(), math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)

    def population_std(reference, variant):  # ddof = 0
        d = np.asarray(variant, float) - np.asarray(reference, float)
        if d.size < 2:
            raise ValueError("bad")
        return d.mean(), d.std() / math.sqrt(d.size)

    def standard_deviation(reference, variant):  # s_d, not divided by sqrt(n)
        d = np.asarray(variant, float) - np.asarray(reference, float)
        if d.size < 2:
            raise ValueError("bad")
        return d.mean(), d.std(ddof=1)

    def reversed_difference(reference, variant):
        mean, error = solved.paired_difference(reference, variant)
        return -mean, error

    def truncates(reference, variant):  # zip() silently drops the unpaired seeds
        n = min(len(reference), len(variant))
        return solved.paired_difference(np.asarray(reference)[:n], np.asarray(variant)[:n])

    assert "paired" in rejects(ch11.exercise_2, unpaired)
    assert "standard error" in rejects(ch11.exercise_2, population_std)
    assert "standard error" in rejects(ch11.exercise_2, standard_deviation)
    assert rejects(ch11.exercise_2, reversed_difference)
    assert "same seeds on both sides" in rejects(ch11.exercise_2, truncates)
    assert "pair of two numbers" in rejects(ch11.exercise_2, lambda reference, variant: (1.0, 2.0, 3.0))


def test_exercise_2_inputs_are_where_pairing_pays(solved):
    """The seeded cases share most of their spread between the two sides: the paired error is smaller."""
    for reference, variant in ch11.exercise_2_inputs().values():
        _, paired = solved.paired_difference(reference, variant)
        unpaired = math.sqrt(reference.var(ddof=1) / reference.size + variant.var(ddof=1) / variant.size)
        assert paired < unpaired
