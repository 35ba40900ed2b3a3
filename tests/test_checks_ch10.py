"""Notebook 10's self-checks: the worked solutions pass, plausible wrong answers are rejected.

The solutions are the code cells tagged ``solution`` in ``solutions/10_your_own_product_solutions.ipynb``
(run on their own, in order, in a fresh namespace), so the tests use exactly the published code.
The editions are also checked against each other: the student's notebook holds stubs and
non-strict checks only, the solutions notebook defines every stub and checks it strictly.
"""

from __future__ import annotations

import ast
import json
import re
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from memseg_lite.core.transforms import fit_image, unfit_map
from memseg_lite.evaluation.thresholds import normalise_scores, precision_recall_f1
from memseg_lite.teaching.checks import ch10
from memseg_lite.teaching.exercises import check

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "notebooks" / "10_your_own_product.ipynb"
SOLUTIONS = ROOT / "solutions" / "10_your_own_product_solutions.ipynb"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.fixture(scope="module")
def solved() -> types.SimpleNamespace:
    namespace: dict = {"__name__": "solutions_10"}
    sources = [_source(c) for c in _cells(SOLUTIONS)
               if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])]
    assert len(sources) == 3, "one solution cell per exercise"
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
    assert (
        "strict=True" not in text
        and "**Solution.**" not in text
        and "from memseg_lite.teaching.checks import ch10" in text
    )
    assert sorted(int(n) for n in re.findall(r"ch10\.exercise_(\d+)\(", text)) == [1, 2, 3]
    stubs = set()
    for cell in cells:
        if cell["cell_type"] != "code" or "ch10.exercise_" not in _source(cell):
            continue
        for node in ast.parse(_source(cell)).body:
            if isinstance(node, ast.FunctionDef):
                body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{node.name} must be a stub"
                stubs.add(node.name)
    assert stubs == {"my_normalised", "best_f1_threshold", "map_back"}
    assert "[< 09 · Evaluation](09_evaluation.ipynb)" in _source(cells[0])  # the navigation header is kept


def test_solutions_edition_checks_every_exercise_strictly(solved):
    text = "\n".join(_source(c) for c in _cells(SOLUTIONS))
    assert sorted(int(n) for n in re.findall(r"ch10\.exercise_(\d+)\([^\n]*strict=True", text)) == [1, 2, 3]
    assert "raise NotImplementedError" not in text and "**Answers (instructor edition).**" in text
    for name in ("my_normalised", "best_f1_threshold", "map_back"):
        assert callable(getattr(solved, name))
    parameters = [c for c in _cells(SOLUTIONS) if "parameters" in c["metadata"].get("tags", [])]
    assert len(parameters) == 1 and 'os.environ.get("MEMSEG_PROFILE", "demo")' in _source(parameters[0])


def test_a_stub_reports_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    for number, exercise in enumerate((ch10.exercise_1, ch10.exercise_2, ch10.exercise_3), start=1):
        assert check(f"Exercise {number}", lambda exercise=exercise: exercise(stub)) is False
    assert capsys.readouterr().out.count("not attempted") == 3


# ----------------------------------------------------------------------------------------------
# Exercise 1 · normalised scores
# ----------------------------------------------------------------------------------------------
def test_exercise_1_solution_passes_and_agrees_with_the_package(solved):
    ch10.exercise_1(solved.my_normalised)
    scores, thresholds = ch10.exercise_1_inputs()
    pairs = list(zip(scores, thresholds, strict=True))
    mine = [solved.my_normalised(s, t) for s, t in pairs]
    np.testing.assert_allclose(mine, [float(normalise_scores(s, t)) for s, t in pairs], atol=1e-12)
    assert solved.my_normalised(0.20, 0.40) == pytest.approx(0.25)
    assert solved.my_normalised(0.62, 0.40) == pytest.approx(0.5 + 0.5 * 0.22 / 0.6)


def test_exercise_1_rejects_wrong_answers():
    def wrong_denominator(s, t):  # the upper piece divided by t
        return 0.5 * s / t if s < t else 0.5 + 0.5 * (s - t) / t

    def no_offset(s, t):  # the upper piece without its 0.5
        return 0.5 * s / t if s < t else 0.5 * (s - t) / (1 - t)

    def one_line(s, t):  # a single straight line through the threshold, clipped
        return min(1.0, 0.5 * s / t)

    def unchanged(s, t):
        return s

    assert "stays 1" in rejects(ch10.exercise_1, wrong_denominator)
    assert "goes to 0.5" in rejects(ch10.exercise_1, no_offset)
    assert rejects(ch10.exercise_1, one_line)
    assert "0.5" in rejects(ch10.exercise_1, unchanged)
    assert "one number" in rejects(ch10.exercise_1, lambda s, t: [s, t])
    assert "raised ZeroDivisionError" in rejects(ch10.exercise_1, lambda s, t: s / 0)


def test_exercise_1_rejects_a_curve_through_the_anchors():
    def smooth(s, t):  # through (0, 0), (t, 0.5), (1, 1) but not straight in between
        return 0.5 * (s / t) ** 2 if s < t else 0.5 + 0.5 * ((s - t) / (1 - t)) ** 0.5

    assert "straight line" in rejects(ch10.exercise_1, smooth)


# ----------------------------------------------------------------------------------------------
# Exercise 2 · an F1-optimal threshold
# ----------------------------------------------------------------------------------------------
def _brute_force_f1(scores, labels) -> float:
    return max(precision_recall_f1(scores, labels, t).f1 for t in np.unique(scores))


def test_exercise_2_solution_passes_and_is_optimal(solved):
    ch10.exercise_2(solved.best_f1_threshold)
    scores, labels = ch10.exercise_2_inputs()
    assert len(np.unique(scores)) < scores.size  # the seeded scores do have ties
    t = solved.best_f1_threshold(scores, labels)
    assert precision_recall_f1(scores, labels, t).f1 == pytest.approx(_brute_force_f1(scores, labels))
    higher = np.unique(scores)[np.unique(scores) > t]
    assert all(precision_recall_f1(scores, labels, h).f1 < precision_recall_f1(scores, labels, t).f1 for h in higher)


def test_exercise_2_rejects_wrong_answers(solved):
    def strictly_above(scores, labels):  # flags s > t, so the best set is one score lower than it should be
        scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
        f1 = {t: 2 * np.sum((scores > t) & labels) / ((scores > t).sum() + labels.sum()) for t in np.unique(scores)}
        return max(sorted(f1, reverse=True), key=f1.get)

    def best_accuracy(scores, labels):
        scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
        return max(np.unique(scores)[::-1], key=lambda t: np.mean((scores >= t) == labels))

    def lower_on_ties(scores, labels):  # upwards with >=: the last maximum, i.e. the lower threshold
        scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
        best, best_f1 = None, -1.0
        for t in np.unique(scores)[::-1]:
            f1 = 2 * np.sum((scores >= t) & labels) / ((scores >= t).sum() + labels.sum())
            if f1 >= best_f1:
                best, best_f1 = t, f1
        return best

    def midpoint(scores, labels):  # the package's placement: not one of the scores
        t = solved.best_f1_threshold(scores, labels)
        lower = np.asarray(scores)[np.asarray(scores) < t]
        return 0.5 * (t + lower.max()) if lower.size else t

    assert rejects(ch10.exercise_2, strictly_above)
    assert rejects(ch10.exercise_2, best_accuracy)
    assert "higher one" in rejects(ch10.exercise_2, lower_on_ties)
    assert "one of the scores" in rejects(ch10.exercise_2, midpoint)
    assert "one of the scores" in rejects(ch10.exercise_2, lambda scores, labels: 0.5)


def test_exercise_2_wrong_accuracy_answer_fails_on_the_seeded_scores_too():
    """The accuracy-optimal threshold is not caught only by the designed cases."""
    scores, labels = ch10.exercise_2_inputs()
    by_accuracy = max(np.unique(scores)[::-1], key=lambda t: np.mean((scores >= t) == labels.astype(bool)))
    assert precision_recall_f1(scores, labels, by_accuracy).f1 < _brute_force_f1(scores, labels)


# ----------------------------------------------------------------------------------------------
# Exercise 3 · a letterboxed map back onto the photo
# ----------------------------------------------------------------------------------------------
def test_exercise_3_solution_passes_and_agrees_with_the_package(solved):
    ch10.exercise_3(solved.map_back)
    rng = np.random.default_rng(0)
    for original_shape, size in ch10.EXERCISE_3_CASES:
        values = rng.random(size).astype(np.float32)
        np.testing.assert_allclose(
            solved.map_back(values, original_shape), unfit_map(values, original_shape), atol=1e-6
        )
    # the cases cover padding above/below, left/right, an odd margin and none at all
    pads = [(fit_image(np.ones(shape, np.float32), size) == 0).any(axis=axis).any()
            for shape, size in ch10.EXERCISE_3_CASES for axis in (0, 1)]
    assert any(pads) and not all(pads)


def _geometry(values, original_shape, rounding=round):
    height, width = values.shape
    h, w = original_shape
    scale = min(height / h, width / w)
    content_height, content_width = rounding(h * scale), rounding(w * scale)
    return (height - content_height) // 2, (width - content_width) // 2, content_height, content_width


def test_exercise_3_rejects_wrong_answers():
    def no_crop(values, original_shape):  # stretches the padding into the photo
        return cv2.resize(np.asarray(values, np.float32), (original_shape[1], original_shape[0]))

    def truncated(values, original_shape):  # int() instead of round(): one content row lost
        top, left, ch, cw = _geometry(values, original_shape, rounding=int)
        content = np.asarray(values, np.float32)[top : top + ch, left : left + cw]
        return cv2.resize(content, (original_shape[1], original_shape[0]), interpolation=cv2.INTER_LINEAR)

    def swapped_size(values, original_shape):  # cv2.resize given (height, width)
        top, left, ch, cw = _geometry(values, original_shape)
        return cv2.resize(np.asarray(values, np.float32)[top : top + ch, left : left + cw], tuple(original_shape))

    def nearest(values, original_shape):
        top, left, ch, cw = _geometry(values, original_shape)
        content = np.asarray(values, np.float32)[top : top + ch, left : left + cw]
        return cv2.resize(content, (original_shape[1], original_shape[0]), interpolation=cv2.INTER_NEAREST)

    def top_left_crop(values, original_shape):  # forgets that the content is centred
        _, _, ch, cw = _geometry(values, original_shape)
        content = np.asarray(values, np.float32)[:ch, :cw]
        return cv2.resize(content, (original_shape[1], original_shape[0]), interpolation=cv2.INTER_LINEAR)

    assert "padding" in rejects(ch10.exercise_3, no_crop)
    assert rejects(ch10.exercise_3, truncated)
    assert "size" in rejects(ch10.exercise_3, swapped_size)
    assert rejects(ch10.exercise_3, nearest)
    assert "padding" in rejects(ch10.exercise_3, top_left_crop)
    assert "size" in rejects(ch10.exercise_3, lambda values, original_shape: values)
